"""Bounded per-stream history of sensor samples, and fixed-rate windows cut from it.

:class:`RingBuffer` keeps the latest ``capacity`` samples of one stream with their host times.
:class:`StreamBuffers` keeps one ring per stream, fed with :class:`~firmware_bridge.types.SensorChunk`
records, and cuts :class:`Window` s on any grid with :func:`~firmware_bridge.resample.resample_to_grid`,
so that lost chunks and silences show up as invalid samples. A caller may ask for holes up to a
stated length to be bridged (``bridge_s``): they are interpolated and marked in
:attr:`Window.bridged`, never passed off as measured.

Both are safe for one producer thread (``append`` / ``push``) and one consumer thread
(``read`` / ``window``): each holds a lock while it touches its arrays, and resampling runs
outside the lock.
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.resample import DEFAULT_MAX_GAP_PERIODS, resample_to_grid
from firmware_bridge.types import SensorChunk

log = logging.getLogger(__name__)

__all__ = ["RingBuffer", "StreamBuffers", "Window"]

# Largest overlap between consecutive chunks that push() absorbs by moving the new chunk.
_MAX_SHIFT_NS = 5e6


class RingBuffer:
    """Fixed-capacity FIFO of samples with their host times; the oldest are overwritten.

    Appending a block is O(block length) (two slice copies at most), whatever the fill
    level; memory is fixed at construction.

    Args:
        capacity: most samples kept, >= 1.
        channels: values per sample, >= 1.
        dtype: sample dtype (float64 by default).

    Raises:
        ConfigError: ``capacity`` or ``channels`` < 1.
    """

    def __init__(self, capacity: int, channels: int = 1, dtype=np.float64):
        for name, value in (("capacity", capacity), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"RingBuffer {name} must be an integer >= 1, got {value!r}")
        self.capacity = int(capacity)
        self.channels = int(channels)
        self.dtype = np.dtype(dtype)
        self._x = np.zeros((self.capacity, self.channels), dtype=self.dtype)
        self._t = np.zeros(self.capacity, dtype=np.int64)
        self._brk = np.zeros(self.capacity, dtype=bool)
        self._head = 0  # next slot to write
        self._count = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    @property
    def latest_t_ns(self) -> int | None:
        """Host time of the newest sample, ns; None when empty."""
        with self._lock:
            return None if self._count == 0 else int(self._t[(self._head - 1) % self.capacity])

    @property
    def oldest_t_ns(self) -> int | None:
        """Host time of the oldest sample kept, ns; None when empty."""
        with self._lock:
            return None if self._count == 0 else int(self._t[self._start()])

    def clear(self) -> None:
        """Forget every sample (capacity and memory stay)."""
        with self._lock:
            self._head = 0
            self._count = 0

    def append(self, samples, t_ns, gap_before: bool = False) -> None:
        """Append a block of samples, oldest first.

        Args:
            samples: (M,) when ``channels == 1``, or (M, channels); cast to ``dtype``.
            t_ns: (M,) int64 host times, ns, strictly increasing and later than the newest
                sample already stored.
            gap_before: True when data is missing just before this block (lost packets):
                the block's first sample is flagged as a break (see :meth:`read`).

        Raises:
            BadInputError: wrong shapes, non-integer times, or times not increasing.
        """
        x = np.asarray(samples)
        if x.ndim == 1 and self.channels == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise BadInputError(
                f"samples must have shape (M, {self.channels})"
                + (" or (M,)" if self.channels == 1 else "") + f", got {np.shape(samples)}"
            )
        t = np.asarray(t_ns)
        if t.dtype.kind not in "iu" or t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise BadInputError(f"t_ns must be a 1-D integer array of {x.shape[0]} times, got "
                                f"{t.dtype} {t.shape}")
        m = x.shape[0]
        if m == 0:
            return
        t = t.astype(np.int64)
        if m > 1 and np.any(np.diff(t) <= 0):
            raise BadInputError("t_ns must be strictly increasing within a block")
        with self._lock:
            if self._count and t[0] <= self._t[(self._head - 1) % self.capacity]:
                raise BadInputError(
                    f"block starts at {int(t[0])} ns, not after the newest stored sample "
                    f"({int(self._t[(self._head - 1) % self.capacity])} ns)"
                )
            brk = np.zeros(m, dtype=bool)
            brk[0] = bool(gap_before)
            if m > self.capacity:  # only the newest capacity samples can survive anyway
                x, t, brk = x[-self.capacity:], t[-self.capacity:], brk[-self.capacity:]
                brk[0] = True
                m = self.capacity
            first = min(m, self.capacity - self._head)
            sl = slice(self._head, self._head + first)
            self._x[sl], self._t[sl], self._brk[sl] = x[:first], t[:first], brk[:first]
            rest = m - first
            if rest:
                self._x[:rest], self._t[:rest], self._brk[:rest] = x[first:], t[first:], brk[first:]
            self._head = (self._head + m) % self.capacity
            self._count = min(self.capacity, self._count + m)

    def read(self, t_from_ns: int | None = None, t_to_ns: int | None = None, pad: int = 0):
        """Copy out the samples with ``t_from_ns <= t <= t_to_ns``, oldest first.

        Args:
            t_from_ns: earliest host time, ns (None: from the oldest sample).
            t_to_ns: latest host time, ns (None: to the newest sample).
            pad: also include up to this many samples before and after the range (so an
                interpolator has neighbours on both sides of it).

        Returns:
            ``(t_ns, samples, breaks)``: int64 (K,), ``dtype`` (K, channels), bool (K,) where
            ``breaks[i]`` is True when data was missing just before sample i.
        """
        with self._lock:
            start, count, cap = self._start(), self._count, self.capacity
            # The logical (chronological) sequence is at most two contiguous slices.
            first = min(count, cap - start)
            t_a, t_b = self._t[start:start + first], self._t[:count - first]

            def locate(value, side):
                if value is None:
                    return 0 if side == "left" else count
                pos = np.searchsorted(t_a, value, side=side)
                if pos == t_a.size:
                    pos = t_a.size + np.searchsorted(t_b, value, side=side)
                return int(pos)

            lo = max(0, locate(t_from_ns, "left") - int(pad))
            hi = min(count, locate(t_to_ns, "right") + int(pad))
            if hi <= lo:
                return (np.zeros(0, np.int64), np.zeros((0, self.channels), self.dtype),
                        np.zeros(0, bool))
            phys = (start + np.arange(lo, hi)) % cap
            return self._t[phys].copy(), self._x[phys].copy(), self._brk[phys].copy()

    def _start(self) -> int:
        return (self._head - self._count) % self.capacity


@dataclass(frozen=True, eq=False)
class Window:
    """A fixed-rate window of one stream on the host clock.

    Attributes:
        t_start_ns: host time of sample 0, ns; sample k is at ``t_start_ns + k / rate_hz``.
        rate_hz: grid rate, Hz.
        samples: float64 (n,) or (n, C); NaN where not valid.
        valid: bool (n,), False outside the data and inside holes (bridged points are valid).
        stream: the stream's name.
        bridged: bool (n,), True where a point was interpolated across a hole that
            :meth:`StreamBuffers.window` bridged (``bridge_s``); None when nothing was asked
            to be bridged.
        gaps_bridged: number of holes bridged in the window.
    """

    t_start_ns: int
    rate_hz: float
    samples: np.ndarray
    valid: np.ndarray
    stream: str
    bridged: np.ndarray | None = None
    gaps_bridged: int = 0

    @property
    def n(self) -> int:
        """Number of grid points."""
        return int(self.valid.shape[0])

    @property
    def t_ns(self) -> np.ndarray:
        """int64 (n,) host times of the grid points, ns."""
        return self.t_start_ns + np.round(np.arange(self.n) * (1e9 / self.rate_hz)).astype(np.int64)

    @property
    def valid_fraction(self) -> float:
        """Share of valid grid points, 0..1 (0 for an empty window)."""
        return float(self.valid.mean()) if self.n else 0.0

    @property
    def measured_fraction(self) -> float:
        """Share of grid points that are valid and not bridged, 0..1 (0 for an empty window)."""
        if not self.n:
            return 0.0
        if self.bridged is None:
            return self.valid_fraction
        return float((self.valid & ~self.bridged).mean())

    @property
    def longest_bridged_s(self) -> float:
        """Longest run of bridged grid points, s (0 when none)."""
        return _longest_run(self.bridged) / self.rate_hz if self.bridged is not None else 0.0


def _longest_run(mask) -> int:
    """Length of the longest run of True in a bool (n,) array."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return int((edges[1::2] - edges[::2]).max()) if edges.size else 0


@dataclass
class _Stream:
    ring: RingBuffer
    fs_hz: float
    two_d: bool
    units: str
    last_seq: int = -1


class StreamBuffers:
    """One :class:`RingBuffer` per sensor stream, and windows cut from them.

    A ring is made on a stream's first chunk, sized for ``seconds`` at the chunk's rate.
    Chunk placement (:meth:`push`):

    * sample k of a chunk is at ``t0_ns + k / fs_hz`` (rounded to the ns);
    * a chunk with the same ``seq`` as the previous one is a duplicate and is dropped;
    * a chunk whose ``seq`` is not the previous one + 1 (lost chunks), or that starts more
      than ``gap_periods`` sample periods after the previous sample, starts a new run:
      windows never interpolate across the hole before it (a sequence counter that wraps
      costs one such break, harmless when no time is missing);
    * NaN samples are stored and count as missing in windows;
    * a chunk that starts less than half a period after the previous sample (clock-mapping
      noise makes consecutive chunks overlap slightly) is moved to start one period after
      it when the sequence is unbroken (or unknown) and the overlap is at most
      max(2 periods, 5 ms), since the sample count is then the truth; otherwise its
      samples up to the previous one are dropped;
    * a chunk that starts more than ``reset_s`` before the previous sample means the time
      base jumped back (a clock re-initialisation): the stream's history is cleared and a
      warning logged;
    * a change of rate or channel count re-creates the stream's ring (warning logged).

    Args:
        seconds: history kept per stream, s.
        gap_periods: inter-chunk step, in sample periods, above which a chunk starts a new
            run.
        reset_s: backwards step, s, treated as a time-base reset.

    Raises:
        ConfigError: a setting out of range.
    """

    def __init__(self, seconds: float = 60.0, gap_periods: float = 1.5, reset_s: float = 1.0):
        if not (np.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"seconds must be > 0, got {seconds!r}")
        if not (np.isfinite(gap_periods) and gap_periods > 1):
            raise ConfigError(f"gap_periods must be > 1, got {gap_periods!r}")
        if not (np.isfinite(reset_s) and reset_s > 0):
            raise ConfigError(f"reset_s must be > 0, got {reset_s!r}")
        self.seconds = float(seconds)
        self.gap_periods = float(gap_periods)
        self.reset_ns = int(reset_s * 1e9)
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self.n_dropped_chunks = 0

    def streams(self) -> list[str]:
        """Names of the streams seen so far, sorted."""
        with self._lock:
            return sorted(self._streams)

    def fs_hz(self, stream: str) -> float | None:
        """Nominal rate of a stream, Hz; None for a stream never pushed."""
        with self._lock:
            s = self._streams.get(stream)
            return None if s is None else s.fs_hz

    def latest_t_ns(self, stream: str) -> int | None:
        """Host time of the newest sample of a stream, ns; None if it has none."""
        with self._lock:
            s = self._streams.get(stream)
        return None if s is None else s.ring.latest_t_ns

    def clear(self, stream: str | None = None) -> None:
        """Forget one stream (or all of them)."""
        with self._lock:
            if stream is None:
                self._streams.clear()
            else:
                self._streams.pop(stream, None)

    def push(self, chunk: SensorChunk) -> None:
        """Store a chunk of samples (see the class docstring for the placement rules).

        Args:
            chunk: a :class:`~firmware_bridge.types.SensorChunk`; ``samples`` (N,) or (N, C)
                real values, ``fs_hz`` > 0, ``t0_ns`` host ns.

        Raises:
            BadInputError: samples of the wrong shape or dtype or holding inf, a bad rate or
                time.
        """
        x = np.asarray(chunk.samples)
        if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] < 1):
            raise BadInputError(f"chunk {chunk.stream!r}: samples must be (N,) or (N, C), got {x.shape}")
        if x.dtype.kind not in "biuf":
            raise BadInputError(f"chunk {chunk.stream!r}: samples must be real, got dtype {x.dtype}")
        if np.any(np.isinf(x)):
            raise BadInputError(f"chunk {chunk.stream!r}: samples hold inf (mark missing ones NaN)")
        fs = chunk.fs_hz
        if isinstance(fs, bool) or not np.isscalar(fs) or not np.isfinite(fs) or fs <= 0:
            raise BadInputError(f"chunk {chunk.stream!r}: fs_hz must be > 0, got {fs!r}")
        if isinstance(chunk.t0_ns, bool) or not isinstance(chunk.t0_ns, (int, np.integer)):
            raise BadInputError(f"chunk {chunk.stream!r}: t0_ns must be an int, got {chunk.t0_ns!r}")
        fs = float(fs)
        channels = 1 if x.ndim == 1 else x.shape[1]
        m = x.shape[0]
        if m == 0:
            return
        period_ns = 1e9 / fs
        seq = int(chunk.seq)
        with self._lock:
            st = self._streams.get(chunk.stream)
            if st is not None and (st.fs_hz != fs or st.ring.channels != channels
                                   or st.two_d != (x.ndim == 2)):
                log.warning("stream %r changed from %g Hz x %d to %g Hz x %d channels; its "
                            "history is dropped", chunk.stream, st.fs_hz, st.ring.channels,
                            fs, channels)
                st = None
            if st is None:
                capacity = max(1, math.ceil(self.seconds * fs) + 1)
                st = _Stream(RingBuffer(capacity, channels), fs, x.ndim == 2, chunk.units)
                self._streams[chunk.stream] = st
            known = seq >= 0 and st.last_seq >= 0
            if known and seq == st.last_seq:
                self.n_dropped_chunks += 1
                log.debug("stream %r: duplicate chunk seq %d dropped", chunk.stream, seq)
                return
            seq_break = known and seq != st.last_seq + 1
            t = int(chunk.t0_ns) + np.round(np.arange(m) * period_ns).astype(np.int64)
            last = st.ring.latest_t_ns
            gap_before = True
            if last is not None:
                step = int(t[0]) - last
                if step < -self.reset_ns:
                    log.warning("stream %r: chunk starts %.3f s before the previous sample; "
                                "time base reset, history dropped", chunk.stream, -step / 1e9)
                    st.ring.clear()
                elif step < 0.5 * period_ns:
                    if not seq_break and step > -self._max_shift_ns(period_ns):
                        t = t + (last + int(round(period_ns)) - int(t[0]))
                        gap_before = False
                    else:
                        keep = t > last
                        t, x = t[keep], x[keep]
                else:
                    gap_before = seq_break or step > self.gap_periods * period_ns
            if seq >= 0:
                st.last_seq = seq
            if t.size:
                st.ring.append(x.astype(np.float64, copy=False), t, gap_before=gap_before)

    @staticmethod
    def _max_shift_ns(period_ns: float) -> float:
        # Clock-mapping noise moves a chunk by well under a millisecond; an overlap beyond
        # this is not noise, and moving the chunk would shift real data in time.
        return max(2.0 * period_ns, _MAX_SHIFT_NS)

    def window(
        self,
        stream: str,
        t_end_ns: int,
        seconds: float,
        rate_hz: float,
        method: str = "linear",
        antialias: bool = False,
        max_gap_s: float | None = None,
        bridge_s: float = 0.0,
    ) -> Window:
        """A fixed-rate window of a stream ending at ``t_end_ns``.

        The grid has ``n = round(seconds * rate_hz)`` points at ``t_start_ns + k / rate_hz``
        with ``t_start_ns = t_end_ns - n / rate_hz``: it covers ``[t_start_ns, t_end_ns)``,
        so consecutive windows tile without overlap. Values come from
        :func:`~firmware_bridge.resample.resample_to_grid` over the stored samples, with
        holes (silences longer than ``max_gap_s``, lost chunks, time before the history
        or after the newest sample) invalid and NaN.

        A stream never pushed gives an all-invalid window of shape (n,) (its channel count
        is unknown): a sensor that has not connected yet is a hole, not an error; check
        :meth:`streams` to tell the two apart.

        Args:
            stream: stream name.
            t_end_ns: host time just after the last grid point, ns.
            seconds: window length, s, > 0.
            rate_hz: grid rate, Hz, > 0.
            method: interpolation method (see ``resample_to_grid``).
            antialias: box low-pass before sampling when ``rate_hz`` is below the stream's
                rate (see ``resample_to_grid``).
            max_gap_s: longest silence interpolated across, s; default
                ``DEFAULT_MAX_GAP_PERIODS`` (2.5) nominal periods of the stream.
            bridge_s: also interpolate across holes (lost chunks, silences) whose stored
                samples either side are at most this far apart, s; their grid points are valid
                and marked in :attr:`Window.bridged`, and :attr:`Window.gaps_bridged` counts
                them. 0 (default) bridges nothing beyond ``max_gap_s`` and leaves
                ``bridged`` None.

        Returns:
            A :class:`Window` with float64 samples (n,) or (n, C) and read-only arrays.

        Raises:
            ConfigError: ``seconds`` or ``rate_hz`` not > 0, ``bridge_s`` not >= 0, or ``n``
                would be 0.
            BadInputError: ``t_end_ns`` not an int.
        """
        if isinstance(rate_hz, bool) or not np.isscalar(rate_hz) or not np.isfinite(rate_hz) or rate_hz <= 0:
            raise ConfigError(f"rate_hz must be > 0, got {rate_hz!r}")
        if isinstance(seconds, bool) or not np.isscalar(seconds) or not np.isfinite(seconds) or seconds <= 0:
            raise ConfigError(f"seconds must be > 0, got {seconds!r}")
        if isinstance(t_end_ns, bool) or not isinstance(t_end_ns, (int, np.integer)):
            raise BadInputError(f"t_end_ns must be an int, got {t_end_ns!r}")
        if isinstance(bridge_s, bool) or not np.isscalar(bridge_s) or not np.isfinite(bridge_s) or bridge_s < 0:
            raise ConfigError(f"bridge_s must be >= 0, got {bridge_s!r}")
        n = int(round(seconds * rate_hz))
        if n < 1:
            raise ConfigError(f"a {seconds} s window at {rate_hz} Hz has no samples")
        t_start_ns = int(t_end_ns) - int(round(n * 1e9 / rate_hz))
        with self._lock:
            st = self._streams.get(stream)
        bridged, n_bridged = None, 0
        if st is None:
            y, valid = np.full(n, np.nan), np.zeros(n, dtype=bool)
        else:
            # One extra sample each side, and the box half-width when anti-aliasing, so the
            # edge grid points have neighbours to interpolate from; with bridging, the longest
            # bridged hole too, so a hole at the window's edge has its far neighbour.
            margin = int(0.5e9 / rate_hz) if antialias else 0
            t, x, brk = st.ring.read(t_start_ns - margin, int(t_end_ns) + margin, pad=1)
            gap = max_gap_s if max_gap_s is not None else DEFAULT_MAX_GAP_PERIODS / st.fs_hz
            t, x, brk = _drop_missing(t, x, brk)
            t_rel_s = (t - t_start_ns) / 1e9
            xs = x if st.two_d else x[:, 0]
            y, valid = resample_to_grid(t_rel_s, xs, rate_hz, 0.0, n, max_gap_s=gap, method=method,
                                        antialias=antialias, breaks=brk)
            if bridge_s > 0:
                bridged = np.zeros(n, dtype=bool)
                if t.size >= 2:
                    # Only the holes at most bridge_s long lose their break; longer ones stay holes.
                    short = np.concatenate([[False], np.diff(t) <= bridge_s * 1e9])
                    y2, valid2 = resample_to_grid(t_rel_s, xs, rate_hz, 0.0, n, max_gap_s=max(gap, bridge_s),
                                                  method=method, antialias=antialias, breaks=brk & ~short)
                    bridged = valid2 & ~valid
                    y, valid = y2, valid2
                    n_bridged = _count_runs(bridged)
                bridged.setflags(write=False)
        y.setflags(write=False)
        valid.setflags(write=False)
        return Window(t_start_ns, float(rate_hz), y, valid, stream, bridged, n_bridged)


def _drop_missing(t, x, brk):
    """Drop NaN samples before resampling, a break on a dropped sample moving to the next kept
    one (as :func:`~firmware_bridge.resample.resample_to_grid` does), so that the hole they leave
    is measured between the samples either side of it."""
    keep = ~np.any(np.isnan(x), axis=1)
    if keep.all():
        return t, x, brk
    run = np.cumsum(keep) - keep  # index among kept samples of the next kept one
    moved = np.zeros(int(keep.sum()) + 1, dtype=bool)
    np.logical_or.at(moved, run[brk], True)
    return t[keep], x[keep], moved[:-1]


def _count_runs(mask) -> int:
    """Number of runs of True in a bool (n,) array."""
    m = np.asarray(mask, bool)
    return int(np.count_nonzero(m[1:] & ~m[:-1]) + (1 if m.size and m[0] else 0))
