"""Window assembly and sensor sync: when a window ends, what it holds, and the one clock.

Three parts, each with one job:

- :class:`VideoWindows` cuts the face stage's frames into hop windows. A window ends every
  ``hop_s`` from the first frame; a frame at or past a window's end closes it (a camera gap
  closes one window per hop of the gap, each with no new frames in it), and in live mode the
  last frame of a window closes it at once. A closed window carries the frames
  :func:`edge.preprocess.face_plan` picks.
- :class:`HopClock` does the same without a camera: windows every hop from the sensors' first
  sample.
- :class:`SensorSync` owns the clock the sensors and the inference stage share. The inference
  stage says which window it is forming (:meth:`SensorSync.wait_for`); in replay a sensor may
  deliver up to ``lead`` past that window's end and no further, and the window is formed once
  every sensor has delivered (or announced) everything up to a little past its end. The rule
  depends only on the window being formed, never on how far the video has got, so a gap of any
  length in either clock cannot stall the other, and the sensor rings never need more than the
  window plus the lead.
- :class:`SensorStore` keeps the contact streams (ring buffers, names, units, counters) and
  answers which stream carries a signal (:attr:`edge.spec.ContactSpec.signals`).
"""
from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.preprocess import face_plan
from edge.spec import Preprocessing, StreamSpec
from firmware_bridge.buffers import StreamBuffers
from firmware_bridge.errors import BadInputError
from firmware_bridge.types import SensorChunk

__all__ = ["FaceRec", "HopClock", "SensorStore", "SensorSync", "VideoWindows", "WindowJob"]

log = logging.getLogger(__name__)

_POLL_S = 0.1
# A window is formed once every sensor has delivered this far past its end: the resampler's
# last interval and the anti-alias box reach beyond the last grid point.
_PAST_END_NS = int(0.1e9)


@dataclass
class FaceRec:
    """What the face stage kept of one frame.

    Attributes:
        t_ns: the frame's time, ns.
        fid: running frame number in the face stage (keys the face-feature cache).
        rgb: float64 (3,) skin colour of the ROI (NaN without a face).
        crop: uint8 (S, S, 3) face crop, or None without a face.
        box: (x, y, w, h) face box, px, or None.
        timings: per-frame stage times, ms (``read``, ``track``, ``roi``, ``crop``).
        crop_dropped: the crop was released because no window can take this frame
            (:meth:`VideoWindows.add`).
    """

    t_ns: int
    fid: int
    rgb: np.ndarray
    crop: np.ndarray | None
    box: tuple | None
    timings: dict = field(default_factory=dict)
    crop_dropped: bool = False


@dataclass
class WindowJob:
    """One window handed to the inference stage.

    Attributes:
        seq: window number from 0.
        t_end_ns: the window's end, ns (session clock).
        t_s: the end on the session clock, s (from the first frame or sample).
        frames: frames taken in during the window's hop.
        arrival_s: ``time.perf_counter()`` when the window's last frame was taken in (latency
            is counted from there), or None.
        plan, frame_t: the :class:`edge.preprocess.FacePlan` and the frame times (s) it indexes;
            None when the window holds no frame.
        pulse_rgb: float64 (K, 3) colours of the plan's pulse frames.
        clip_crops, seq_crops: per clip / sequence slot, the crop or None.
        seq_fids: per sequence slot, the frame number (-1 without one).
        box_last: the face box of the window's last frame, when that frame is recent enough
            (``face.max_frame_age_periods``) and holds a face; else None.
        latency: stage times, ms (per-frame means and ``assemble``).
    """

    seq: int
    t_end_ns: int
    t_s: float
    frames: int
    arrival_s: float | None = None
    plan: Any = None
    frame_t: np.ndarray | None = None
    pulse_rgb: np.ndarray | None = None
    clip_crops: list = field(default_factory=list)
    seq_crops: list = field(default_factory=list)
    seq_fids: list = field(default_factory=list)
    box_last: tuple | None = None
    latency: dict = field(default_factory=dict)


class VideoWindows:
    """Cuts the face stage's frames into hop windows (the video's clock).

    Args:
        p: the preprocessing record.
        hop_ns: time between window ends, ns.
        live: close a window on its last frame instead of on the first frame after it.
        keep_s: frame history kept behind the newest window end, s (>= the window).

    Memory: every frame's colour is kept for ``keep_s`` (the pulse windows take them all),
    but a frame's crop only while a window still to close may take it for a clip or sequence
    slot (:meth:`add`): at the default record 2 sequence crops a second and the clip's last
    two seconds, not every frame of the 60 s window.
    """

    STAGES = ("read", "track", "roi", "crop")

    def __init__(self, p: Preprocessing, hop_ns: int, live: bool, keep_s: float) -> None:
        self.p = p
        self.hop_ns = int(hop_ns)
        self.live = bool(live)
        self.keep_ns = int(keep_s * 1e9)
        self.origin_ns: int | None = None
        self.next_end: int | None = None
        self.seq = 0
        self.period_ns = int(round(1e9 / p.fps))  # refined from the frames as they come
        self.last_t_ns: int | None = None
        self.history: collections.deque[FaceRec] = collections.deque()
        self._sums = dict.fromkeys(self.STAGES, 0.0)
        self._frames = 0
        self._arrival: float | None = None
        # Offsets of the sequence and clip slots before a window's last grid point, s
        # (edge.preprocess.face_plan places them there, and computes them so).
        f = p.face
        self._seq_offsets = np.arange(f.seq_frames) / f.seq_rate_hz
        self._clip_offsets = np.arange(f.clip_frames) * f.clip_stride_frames / p.fps
        # Frames whose crop only clip slots may take, with the next frame's time: released once
        # the windows still to close have their clips past it.
        self._clip_only: collections.deque[tuple[int, FaceRec]] = collections.deque()
        self._lasts_cache: tuple[int, np.ndarray] | None = None

    def closed_by(self, t_ns: int) -> Iterator[WindowJob]:
        """The windows a frame at ``t_ns`` completes (its time is at or past their end), oldest first.

        A gap in the video completes one window per hop of it; they are made one at a time, so
        a caller that blocks on a full queue holds at most one.
        """
        t_ns = int(t_ns)
        if self.last_t_ns is not None and t_ns > self.last_t_ns:
            self.period_ns = int(0.9 * self.period_ns + 0.1 * (t_ns - self.last_t_ns))
        self.last_t_ns = t_ns
        if self.origin_ns is None:
            self.origin_ns = t_ns
            self.next_end = t_ns + self.hop_ns
        while t_ns >= self.next_end:
            yield self._close()

    def add(self, rec: FaceRec) -> WindowJob | None:
        """Take in a measured frame; in live mode, the window it completes (else None).

        The frame before it keeps its crop only if some window still to close has a clip or
        sequence slot that would take it (the latest frame at or before the slot's time is
        that one: it is now known to be followed by this frame)."""
        prev = self.history[-1] if self.history else None
        self.history.append(rec)
        if prev is not None and prev.crop is not None and not self._slot_between(prev.t_ns, rec.t_ns,
                                                                                 self._seq_offsets):
            if self._slot_between(prev.t_ns, rec.t_ns, self._clip_offsets):
                self._clip_only.append((int(rec.t_ns), prev))
            else:
                _release_crop(prev)
        for k in self.STAGES:
            self._sums[k] += rec.timings.get(k, 0.0)
        self._frames += 1
        # Latency is counted from here: the window's last frame has been taken in (in a replay
        # the reader runs ahead, so its read time would count queueing too).
        self._arrival = time.perf_counter()
        # Live: a window whose last frame this is goes out now rather than a frame period later,
        # as long as the next frame cannot fall inside it.
        if self.live and self._ends_window(rec.t_ns):
            return self._close()
        return None

    def finish(self) -> WindowJob | None:
        """At the end of the video: the last window, if the video ended on its boundary."""
        if self.last_t_ns is not None and self.next_end is not None and self._ends_window(self.last_t_ns):
            return self._close()
        return None

    def _slot_between(self, t_a_ns: int, t_b_ns: int, offsets: np.ndarray) -> bool:
        """Whether a slot (``offsets``: the sequence's or the clip's) of a window not yet closed
        takes the frame at ``t_a_ns`` when the next frame is at ``t_b_ns``: the slot times and the rule are
        :func:`edge.preprocess.face_plan`'s (the latest frame at or before the slot's time plus
        1 us), computed the same way, with 1 ns more either side."""
        if self.origin_ns is None or self.next_end is None:
            return True
        fps = self.p.fps
        a = (int(t_a_ns) - self.origin_ns) / 1e9
        b = (int(t_b_ns) - self.origin_ns) / 1e9
        # A window ending at e has its slots at e - 1/fps - offset: those that can land in
        # [a, b) belong to the windows ending within [a + 1/fps, b + 1/fps + the largest offset].
        first = (self.next_end - self.origin_ns) / 1e9
        hop_s = self.hop_ns / 1e9
        m0 = max(0, int(math.floor((a + 1.0 / fps - first) / hop_s)) - 1)
        m1 = int(math.ceil((b + 1.0 / fps + offsets[-1] - first) / hop_s)) + 1
        if m1 < m0:
            return False
        last = self._lasts(m1 + 1)[m0:m1 + 1]
        # Candidates by a loose bound first (offsets are sorted), then face_plan's exact test.
        lo = np.searchsorted(offsets, last - b - 1e-5, side="left")
        hi = np.searchsorted(offsets, last - a + 1e-5, side="right")
        for i in np.flatnonzero(hi > lo):
            targets = (last[i] - offsets[lo[i]:hi[i]]) + 1e-6
            if np.any((targets >= a - 1e-9) & (targets < b + 1e-9)):
                return True
        return False

    def _lasts(self, n: int) -> np.ndarray:
        """float64 (>= n,) the last grid point, s, of the next n windows (from ``next_end``),
        as face_plan computes it; cached until the next window closes."""
        cache = self._lasts_cache
        if cache is None or cache[0] != self.next_end or cache[1].size < n:
            n = max(n, 8)
            ends = ((self.next_end + np.arange(n, dtype=np.int64) * self.hop_ns) - self.origin_ns) / 1e9
            cache = self._lasts_cache = (self.next_end, ends - 1.0 / self.p.fps)
        return cache[1]

    def t_s(self, t_ns: int) -> float:
        """A time on the session clock (from the first frame), s."""
        return (int(t_ns) - self.origin_ns) / 1e9

    def _ends_window(self, t_ns: int) -> bool:
        # The frame at t_ns is the window's last when the next one (a period later) falls at or
        # past the window's end; a tenth of a period absorbs timestamp jitter. Live mode closes a
        # window on that frame, and a video that stops there completes its last window with it.
        return t_ns + self.period_ns >= self.next_end - self.period_ns // 10

    def _close(self) -> WindowJob:
        t0 = time.perf_counter()
        t_end = self.next_end
        while self.history and self.history[0].t_ns < t_end - self.keep_ns:
            self.history.popleft()
        job = WindowJob(self.seq, t_end, self.t_s(t_end), self._frames, self._arrival)
        recs = [r for r in self.history if r.t_ns < t_end]
        if recs:
            t_s = np.fromiter((r.t_ns for r in recs), np.int64, len(recs))
            t_s = (t_s - self.origin_ns) / 1e9
            period_s = float(np.median(np.diff(t_s))) if t_s.size > 1 else self.period_ns / 1e9
            plan = face_plan(t_s, job.t_s, self.p, period_s=period_s)
            job.plan, job.frame_t = plan, t_s
            job.pulse_rgb = np.array([recs[i].rgb for i in plan.pulse_idx], dtype=np.float64).reshape(-1, 3)
            if any(recs[i].crop_dropped for i in (*plan.clip_idx, *plan.seq_idx) if i >= 0):
                raise RuntimeError(f"window {self.seq}: a slot took a frame whose crop was released (a bug in "
                                   f"VideoWindows._slot_between)")
            job.clip_crops = [recs[i].crop if i >= 0 else None for i in plan.clip_idx]
            job.seq_crops = [recs[i].crop if i >= 0 else None for i in plan.seq_idx]
            job.seq_fids = [recs[i].fid if i >= 0 else -1 for i in plan.seq_idx]
            # The last frame speaks for the window's end only while it is as recent as a slot's
            # frame may be (a frame before a camera gap does not).
            max_age_ns = self.p.face.max_frame_age_periods * max(period_s, 1.0 / self.p.fps) * 1e9
            if t_end - recs[-1].t_ns <= max_age_ns + 1e3:
                job.box_last = recs[-1].box
        n = max(self._frames, 1)
        job.latency = {k: v / n for k, v in self._sums.items()}
        job.latency["assemble"] = (time.perf_counter() - t0) * 1e3
        self._sums = dict.fromkeys(self.STAGES, 0.0)
        self._frames = 0
        self.seq += 1
        self.next_end += self.hop_ns
        # The earliest clip slot of the windows still to close; a clip-only frame followed by a
        # frame before it can no longer be taken.
        earliest = (self.next_end - self.origin_ns) / 1e9 - 1.0 / self.p.fps - self._clip_offsets[-1] + 1e-6
        while self._clip_only and (self._clip_only[0][0] - self.origin_ns) / 1e9 < earliest - 1e-9:
            _release_crop(self._clip_only.popleft()[1])
        return job


def _release_crop(rec: FaceRec) -> None:
    rec.crop = None
    rec.crop_dropped = True


@dataclass
class _StreamStat:
    source: str
    chunks: int = 0
    samples: int = 0
    seq_gaps: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    rejected: int = 0
    bridged_gaps: int = 0
    bridged_to_ns: int | None = None


class SensorStore:
    """The contact streams: ring buffers, one name per stream, units, first samples, counters.

    Args:
        p: the preprocessing record (stream names and aliases, gap limit).
        keep_s: history kept per stream, s.
    """

    def __init__(self, p: Preprocessing, keep_s: float) -> None:
        self.p = p
        # Streams jitter (a 20 Hz finger oximeter's CSV): silences up to the record's gap limit
        # are bridged, as the resampler does.
        self.buffers = StreamBuffers(seconds=keep_s, gap_periods=p.contact.max_gap_periods)
        self._signals: dict[str, StreamSpec] = {s.name: s for s in p.contact.signals}
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], str] = {}
        self.units: dict[str, str] = {}
        self.first_ns: dict[str, int] = {}
        self.stats: dict[str, _StreamStat] = {}

    def push(self, chunk: SensorChunk, source: str) -> None:
        """Store a chunk (renamed ``NAME_2`` when another source already has its stream name).
        A chunk the ring refuses (bad samples) is counted and logged, not raised."""
        n = int(np.shape(chunk.samples)[0])
        key = self._key(source, chunk.stream)
        if key != chunk.stream:
            chunk = SensorChunk(key, chunk.fs_hz, chunk.t0_ns, chunk.samples, chunk.units, chunk.seq,
                                chunk.device_t0_us, chunk.source, chunk.meta)
        with self._lock:
            st = self.stats.get(key)
            if st is None:
                st = self.stats[key] = _StreamStat(source)
            seq = int(chunk.seq)
            if seq >= 0:
                if st.last_seq is not None and seq != st.last_seq + 1 and not (seq == 0 and st.last_seq == 0xFFFF):
                    st.seq_gaps += 1
                if st.first_seq is None:
                    st.first_seq = seq
                st.last_seq = seq
            st.chunks += 1
            st.samples += n
            self.units[key] = chunk.units
            self.first_ns.setdefault(key, int(chunk.t0_ns))
        try:
            self.buffers.push(chunk)
        except BadInputError as exc:
            with self._lock:
                st.rejected += 1
            log.warning("sensor chunk rejected: %s", exc)

    def _key(self, source: str, stream: str) -> str:
        ident = (source, stream)
        key = self._keys.get(ident)
        if key is None:
            key, k = stream, 1
            while key in self._keys.values():
                k += 1
                key = f"{stream}_{k}"
            self._keys[ident] = key
            if key != stream:
                log.warning("stream %r of %s is called %r here (another sensor has %r)", stream, source, key, stream)
        return key

    def streams_at(self, t_end_ns: int) -> set[str]:
        """Streams that exist for a window ending at ``t_end_ns``: their first sample is at or
        before the window's end (a stream that starts later is absent from it, whatever has
        been read ahead)."""
        with self._lock:
            firsts = dict(self.first_ns)
        have = set(self.buffers.streams())
        return {k for k, t in firsts.items() if k in have and t <= t_end_ns}

    def stream_for(self, signal: str, t_end_ns: int) -> str | None:
        """The stream carrying a contact signal in a window, by the record's aliases in order of
        preference (:attr:`edge.spec.StreamSpec.aliases`), or None."""
        spec = self._signals.get(signal)
        if spec is None:
            return None
        have = self.streams_at(t_end_ns)
        for name in spec.aliases:
            if name in have:
                return name
        return None

    def units_ok(self, signal: str, stream: str) -> bool:
        """The stream is in the units the record declares for the signal ("" accepts any)."""
        spec = self._signals.get(signal)
        return spec is None or not spec.units or self.units.get(stream) == spec.units

    def first_sample_ns(self, t_end_ns: int | None = None) -> int | None:
        """The earliest first sample (of the streams that exist at ``t_end_ns``, or of all)."""
        with self._lock:
            firsts = [t for t in self.first_ns.values() if t_end_ns is None or t <= t_end_ns]
        return min(firsts) if firsts else None

    def window(self, stream: str, t_end_ns: int, seconds: float, rate_hz: float, antialias: bool = False,
               bridge_s: float = 0.0):
        """:meth:`firmware_bridge.buffers.StreamBuffers.window`, bridging silences up to the
        record's ``contact.max_gap_periods`` of the stream's nominal period, and with
        ``bridge_s`` > 0 holes (lost chunks included) up to that long, s; the bridged holes
        are counted once each in the stream's ``bridged_gaps`` (:meth:`snapshot`)."""
        fs = self.buffers.fs_hz(stream)
        max_gap_s = self.p.contact.max_gap_periods / fs if fs else None
        w = self.buffers.window(stream, t_end_ns, seconds, rate_hz, antialias=antialias, max_gap_s=max_gap_s,
                                bridge_s=bridge_s)
        if w.gaps_bridged:
            self._count_bridged(w)
        return w

    def _count_bridged(self, w) -> None:
        # Windows overlap: a hole is counted by its end time, once, when first seen.
        m = np.concatenate([np.asarray(w.bridged, bool), [False]])
        ends = np.flatnonzero(m[:-1] & ~m[1:])
        t_ends = w.t_start_ns + np.round(ends * (1e9 / w.rate_hz)).astype(np.int64)
        with self._lock:
            st = self.stats.get(w.stream)
            if st is None:
                return
            new = t_ends if st.bridged_to_ns is None else t_ends[t_ends > st.bridged_to_ns]
            if new.size:
                st.bridged_gaps += int(new.size)
                st.bridged_to_ns = int(new[-1])

    def fs_hz(self, stream: str) -> float | None:
        return self.buffers.fs_hz(stream)

    def snapshot(self) -> dict:
        """Per stream: source, chunks, samples, sequence gaps, first / last sequence, rejected,
        and ``bridged_gaps`` (holes the reported physiology interpolated across)."""
        with self._lock:
            out = {k: dict(vars(v)) for k, v in sorted(self.stats.items())}
        for v in out.values():
            v.pop("bridged_to_ns", None)
        return out


class SensorSync:
    """The clock sensors and the inference stage share (see the module docstring).

    Args:
        n: number of sensor sources.
        replay: hold sensors to the window being formed (live sensors run on their own).
        lead_ns: replay: how far past the window being formed a sensor may deliver, ns.
        stop: the pipeline's stop flag (every wait ends when it is set).
    """

    def __init__(self, n: int, replay: bool, lead_ns: int, stop: threading.Event) -> None:
        self.replay = bool(replay)
        # The lead must cover what a window waits for, or the two would wait on each other.
        self.lead_ns = max(int(lead_ns), 2 * _PAST_END_NS)
        self._stop = stop
        self._cond = threading.Condition()
        self.wm: list[int | None] = [None] * n  # sensor i has delivered everything before this time
        self.ended = [False] * n
        self.started = [False] * n
        self.want_ns: int | None = None  # the end of the window being formed

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def admit(self, i: int, t0_ns: int) -> bool:
        """Sensor ``i`` holds a chunk starting at ``t0_ns``: may it deliver it? In replay this
        blocks until the window being formed is close enough (each sensor's first chunk goes at
        once, so the session's origin is known). False once the pipeline stops."""
        if not self.replay:
            return not self._stop.is_set()
        with self._cond:
            # Everything before this chunk is known: say so, so a window ending before it can form.
            self.wm[i] = max(self.wm[i] if self.wm[i] is not None else t0_ns - 1, t0_ns - 1)
            self._cond.notify_all()
            while not self._stop.is_set() and self.started[i] and (
                    self.want_ns is None or t0_ns > self.want_ns + self.lead_ns):
                self._cond.wait(_POLL_S)
        return not self._stop.is_set()

    def delivered(self, i: int, t_last_ns: int) -> None:
        """Sensor ``i`` has delivered every sample up to ``t_last_ns``."""
        with self._cond:
            self.wm[i] = max(self.wm[i] if self.wm[i] is not None else t_last_ns, t_last_ns)
            self.started[i] = True
            self._cond.notify_all()

    def end(self, i: int) -> None:
        """Sensor ``i`` will deliver nothing more."""
        with self._cond:
            self.ended[i] = True
            self._cond.notify_all()

    def wait_started(self) -> None:
        """Until every sensor has delivered its first chunk or ended (or the pipeline stops)."""
        with self._cond:
            while not self._stop.is_set() and not all(s or e for s, e in zip(self.started, self.ended)):
                self._cond.wait(_POLL_S)

    def all_over(self, t_end_ns: int) -> bool:
        """Every sensor has ended short of a window ending at ``t_end_ns`` (the end of a
        contact-only session)."""
        with self._cond:
            return all(self.ended) and all(w is None or w < t_end_ns - _PAST_END_NS for w in self.wm)

    def wait_for(self, t_end_ns: int) -> float:
        """The inference stage forms the window ending at ``t_end_ns``: in replay, wait until
        every sensor has delivered (or ended) a little past it.

        Returns:
            The time waited, ms.
        """
        t0 = time.perf_counter()
        with self._cond:
            self.want_ns = int(t_end_ns)
            self._cond.notify_all()
            if self.replay:
                need = int(t_end_ns) + _PAST_END_NS
                while not self._stop.is_set() and not all(
                        e or (w is not None and w >= need) for w, e in zip(self.wm, self.ended)):
                    self._cond.wait(_POLL_S)
        return (time.perf_counter() - t0) * 1e3


class HopClock:
    """Window ends every hop from the sensors' first sample, for a session without a camera.

    Args:
        sync: the :class:`SensorSync`.
        store: the :class:`SensorStore` (the first samples).
        hop_ns: time between window ends, ns.
        live: live sensors are on the host clock: a window is due once its end has passed.
        stop: the pipeline's stop flag.
    """

    def __init__(self, sync: SensorSync, store: SensorStore, hop_ns: int, live: bool, stop: threading.Event):
        self.sync, self.store, self.hop_ns, self.live, self._stop = sync, store, int(hop_ns), live, stop
        self.origin_ns: int | None = None

    def run(self, put: Callable[[WindowJob], bool]) -> None:
        """Hand out windows through ``put`` (False: stop) until the sensors are over."""
        # The origin is the earliest first sample once every sensor has delivered (or ended):
        # the same for every replay of a recording.
        self.sync.wait_started()
        self.origin_ns = self.store.first_sample_ns()
        if self.origin_ns is None:
            return
        seq, t_end = 0, self.origin_ns + self.hop_ns
        while not self._stop.is_set() and not self.sync.all_over(t_end):
            if self.live:
                # plus a little for the last block to arrive
                due = t_end + int(0.05e9)
                while not self._stop.is_set() and time.monotonic_ns() < due and not all(self.sync.ended):
                    time.sleep(min(_POLL_S, max(0.0, (due - time.monotonic_ns()) / 1e9)))
                if self.sync.all_over(t_end):
                    break
            if not put(WindowJob(seq, t_end, (t_end - self.origin_ns) / 1e9, 0, time.perf_counter())):
                return
            seq += 1
            t_end += self.hop_ns
