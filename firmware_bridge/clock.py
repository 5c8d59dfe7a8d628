"""One clock: map each device's own timestamps onto the host monotonic clock.

Every sensor board stamps its samples with its own free-running microsecond counter. The host
sees each message arrive at ``time.monotonic_ns()``, later than it was sent by a transport
delay that is positive, jittery (USB/UART latency, OS scheduling) and now and then very large.
:class:`ClockSync` learns, per device, the line ``host = f(device)`` from those pairs, online.

Method. Because the arrival delay is never below the true transport delay, the useful
information is the *lower envelope* of ``host - device`` over time, not its mean: this is
the one-way-delay view of clock skew estimation of Moon, Skelly and Towsley, "Estimation and
removal of clock skew from network delay measurements", IEEE INFOCOM 1999, and the minimum
filtering of NTP (Mills, RFC 5905, clock filter). We follow it in two stages:

1. windowed minimum filtering: messages are grouped into blocks of ``block_s`` device
   seconds and only the message with the smallest ``host - device`` of each block is kept;
   delayed messages and outliers never reach the fit;
2. a robust line through the last ``window_blocks`` block minima: the slope is the
   Theil-Sen estimator (median of pairwise slopes; Theil 1950, Sen 1968), which also
   survives blocks whose every message was late; the line is then lowered onto the lowest
   block minimum, so that it is the lower envelope that Moon et al. fit by linear
   programming, but with a slope that a single low point cannot tilt.

Cost per :meth:`ClockSync.update` is O(1); once per block the fit costs O(K^2) on K <=
``window_blocks`` minima (about 0.2 ms for K = 120), so memory and CPU are bounded.

The constant part of the transport delay is not observable from one-way messages; pass it as
``latency_ns`` when known (a USB-serial adapter is typically 1-2 ms), otherwise mapped times
are late by that constant.

Device counters wrap (a uint32 microsecond counter wraps every 2**32 us = 71.6 min) and
devices reset (their counter jumps backwards). :class:`Unwrapper` undoes wraps of a single
sequence; :class:`ClockSync` with ``wrap_bits`` undoes them using the host clock to count
whole wrap periods, so that even a gap longer than one period is unwrapped correctly, and
re-initialises (with a logged warning) when the device timeline is inconsistent with the
host's.
"""
from __future__ import annotations

import logging
from collections import deque

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)

# A block minimum more than this far below the median block minimum is taken as a glitch.
_GLITCH_SCALES = 5.0
_GLITCH_FLOOR_NS = 2e6

__all__ = ["ClockSync", "Unwrapper"]


def _as_int(value, what: str) -> int:
    """A Python int from an integer-valued scalar, else BadInputError."""
    if isinstance(value, (bool, np.bool_)):
        raise BadInputError(f"{what} must be an integer, got a bool")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    raise BadInputError(f"{what} must be an integer, got {value!r}")


def _as_int64_array(values, what: str) -> np.ndarray:
    """An int64 array from integer-valued input of any shape, else BadInputError."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
            raise BadInputError(f"{what} exceeds the int64 range")
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise BadInputError(f"{what} must hold finite integer values")
        return arr.astype(np.int64)
    raise BadInputError(f"{what} must be integers, got dtype {arr.dtype}")


class Unwrapper:
    """Undo the wrap-around of an unsigned ``bits``-bit counter in one sequence of readings.

    Each reading is placed at the unwrapped value nearest the previous one (the half-range
    rule, as RTP timestamps are extended, RFC 3550 appendix A.1), so consecutive readings must
    be less than half a period (2**(bits-1) ticks; 35.8 min for a 32-bit us counter) apart.
    A small step backwards (a reordered message) stays a small step backwards.

    Args:
        bits: counter width, 1..62 (the unwrapped values live in int64).

    Raises:
        ConfigError: ``bits`` outside 1..62.
    """

    def __init__(self, bits: int = 32):
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 62:
            raise ConfigError(f"Unwrapper bits must be an integer in 1..62, got {bits!r}")
        self.bits = int(bits)
        self.modulus = 1 << self.bits
        self._half = self.modulus >> 1
        self._last_raw: int | None = None
        self._last: int | None = None

    @property
    def last(self) -> int | None:
        """The latest unwrapped value, or None before the first reading."""
        return self._last

    def reset(self) -> None:
        """Forget the history: the next reading is taken as it is."""
        self._last_raw = None
        self._last = None

    def __call__(self, raw):
        """Unwrap one reading (int -> int) or a sequence in order (array -> int64 array).

        Args:
            raw: counter reading(s), integers in ``[0, 2**bits)``; an array is read in order
                as consecutive readings.

        Returns:
            The unwrapped value(s): int, or int64 array of the same shape as ``raw``.

        Raises:
            BadInputError: a reading that is not an integer in ``[0, 2**bits)``.
        """
        if np.ndim(raw) == 0:
            value = _as_int(raw, "counter reading")
            self._check_range(value, value)
            self._step(value)
            return self._last
        arr = _as_int64_array(raw, "counter readings").ravel()
        if arr.size == 0:
            return arr.reshape(np.shape(raw))
        self._check_range(int(arr.min()), int(arr.max()))
        prev = np.empty_like(arr)
        prev[0] = arr[0] if self._last_raw is None else self._last_raw
        prev[1:] = arr[:-1]
        # int64 is exact here: bits <= 62 keeps every intermediate below 2**63.
        step = np.mod(arr - prev + self._half, self.modulus) - self._half
        base = int(arr[0]) if self._last is None else self._last
        out = base + np.cumsum(step)
        self._last_raw = int(arr[-1])
        self._last = int(out[-1])
        return out.reshape(np.shape(raw))

    def _check_range(self, lo: int, hi: int) -> None:
        if lo < 0 or hi >= self.modulus:
            raise BadInputError(
                f"counter reading outside [0, 2**{self.bits}): min {lo}, max {hi}"
            )

    def _step(self, value: int) -> None:
        if self._last is None:
            self._last = value
        else:
            step = (value - self._last_raw + self._half) % self.modulus - self._half
            self._last += step
        self._last_raw = value


class ClockSync:
    """Online offset and drift of one device clock against the host monotonic clock.

    Feed every received message with :meth:`update`; map any device time with
    :meth:`to_host_ns`. The model is ``host_ns = 1000 * device_us + offset(device_us)`` with
    ``offset`` linear in device time; the method (minimum filtering of ``host - device``
    per block, then a Theil-Sen line through the block minima) is described in the module
    docstring (Moon et al., INFOCOM 1999; Theil 1950; Sen 1968). On simulated links
    (50 messages/s, 5 ms jitter, 2 % outliers of 50-200 ms, +-300 ppm) the mapped times are
    within 0.2 ms of the truth after a minute; tests/firmware_bridge/test_clock.py.

    Until the block minima span ``min_fit_span_s`` of device time the drift is taken as 0
    and the offset is the lowest ``host - device`` of the latest two blocks.

    Args:
        block_s: device seconds per minimum-filter block. Larger blocks reject longer bursts
            of delay; smaller ones follow drift changes faster. At least a few messages
            should fall in each block.
        window_blocks: how many block minima the line is fitted to (bounds memory and CPU).
            With the defaults the fit spans the last 2 min.
        min_fit_span_s: device seconds of block minima needed before drift is estimated.
        latency_ns: known constant part of the transport delay, ns, subtracted from every
            arrival time (not observable from one-way messages).
        wrap_bits: width of the device counter if it wraps (e.g. 32 for a uint32 us
            counter); None for a counter that never wraps.
        reset_tolerance_s: a device timestamp this much earlier than the previous one, or
            a message that would have arrived this much before it was sent, means the device
            reset or jumped: the estimate is re-initialised and a warning is logged.
        name: device name used in log messages.

    Raises:
        ConfigError: a setting out of range.
    """

    def __init__(
        self,
        block_s: float = 1.0,
        window_blocks: int = 120,
        min_fit_span_s: float = 5.0,
        latency_ns: int = 0,
        wrap_bits: int | None = None,
        reset_tolerance_s: float = 1.0,
        name: str = "",
    ):
        if not (np.isfinite(block_s) and block_s > 0):
            raise ConfigError(f"block_s must be > 0, got {block_s!r}")
        if isinstance(window_blocks, bool) or not isinstance(window_blocks, (int, np.integer)) \
                or window_blocks < 3:
            raise ConfigError(f"window_blocks must be an integer >= 3, got {window_blocks!r}")
        if not (np.isfinite(min_fit_span_s) and min_fit_span_s >= 0):
            raise ConfigError(f"min_fit_span_s must be >= 0, got {min_fit_span_s!r}")
        if not (np.isfinite(reset_tolerance_s) and reset_tolerance_s > 0):
            raise ConfigError(f"reset_tolerance_s must be > 0, got {reset_tolerance_s!r}")
        try:
            latency = _as_int(latency_ns, "latency_ns")
        except BadInputError as exc:
            raise ConfigError(str(exc)) from None
        if latency < 0:
            raise ConfigError(f"latency_ns must be >= 0, got {latency_ns!r}")
        if wrap_bits is not None and (isinstance(wrap_bits, bool)
                                      or not isinstance(wrap_bits, (int, np.integer))
                                      or not 1 <= wrap_bits <= 62):
            raise ConfigError(f"wrap_bits must be None or an integer in 1..62, got {wrap_bits!r}")
        self.block_us = float(block_s) * 1e6
        self.window_blocks = int(window_blocks)
        self.min_fit_span_us = float(min_fit_span_s) * 1e6
        self.latency_ns = latency
        self.wrap_bits = None if wrap_bits is None else int(wrap_bits)
        self.reset_tolerance_us = float(reset_tolerance_s) * 1e6
        self.name = name
        self.n_resets = 0
        self._init_state()

    # -- state -------------------------------------------------------------------------
    def _init_state(self) -> None:
        self._n = 0
        self._dev_ref: int | None = None   # unwrapped device us at x = 0
        self._off_ref = 0                  # ns; y is (host - latency - 1000 * dev) - _off_ref
        self._last_raw: int | None = None
        self._last_dev: int | None = None
        self._last_host: int | None = None
        self._minima: deque[tuple[float, float]] = deque(maxlen=self.window_blocks)
        self._blk_start = 0.0
        self._blk_x = 0.0
        self._blk_y = np.inf
        self._alpha = 0.0                  # ns at x = 0
        self._beta = 0.0                   # ns of offset per us of device time
        self._fitted = False
        self._scale_ns = float("nan")

    # -- public API ----------------------------------------------------------------------
    @property
    def n_updates(self) -> int:
        """Messages accepted since the last (re)initialisation."""
        return self._n

    @property
    def ready(self) -> bool:
        """True once drift is estimated (block minima span ``min_fit_span_s``)."""
        return self._fitted

    @property
    def drift_ppm(self) -> float:
        """Device clock rate error in ppm: the device counts ``1 + drift_ppm * 1e-6`` us per
        host us (positive: the device clock runs fast). 0 until :attr:`ready`."""
        return (1000.0 / (1000.0 + self._beta) - 1.0) * 1e6

    @property
    def offset_ns(self) -> int:
        """``host_ns - 1000 * device_us`` at the latest message's device time, ns.

        Raises:
            BadInputError: before the first update.
        """
        self._need_data()
        return self._off_ref + int(round(self._line(float(self._last_dev - self._dev_ref))))

    @property
    def residual_ns(self) -> float:
        """Quality figure: robust spread (1.4826 * MAD) of the block minima around the fitted
        line, ns. Small (well under 1 ms) when the fit is good; NaN until :attr:`ready`."""
        return self._scale_ns

    def update(self, device_t_us, host_t_ns) -> int:
        """Take one received message into the estimate.

        Args:
            device_t_us: the device timestamp in the message, us (integer; raw counter
                reading when ``wrap_bits`` is set).
            host_t_ns: host monotonic arrival time, ns (integer), e.g. ``time.monotonic_ns()``.

        Returns:
            The unwrapped device time, us (the value :meth:`to_host_ns` extrapolates from).

        Raises:
            BadInputError: a non-integer timestamp, or a raw reading outside the counter range.
        """
        raw = _as_int(device_t_us, "device_t_us")
        host = _as_int(host_t_ns, "host_t_ns")
        if self.wrap_bits is not None and not 0 <= raw < (1 << self.wrap_bits):
            raise BadInputError(f"device_t_us {raw} outside [0, 2**{self.wrap_bits})")
        host -= self.latency_ns
        if self._last_dev is None:
            return self._start(raw, host)
        dev = self._unwrap_with_host(raw, host)
        x = float(dev - self._dev_ref)
        y = float(host - 1000 * dev - self._off_ref)
        backwards_us = self._last_dev - dev
        early_ns = self._line(x) - y  # > 0: arrived before the fitted send time
        if backwards_us > self.reset_tolerance_us or early_ns > 1000.0 * self.reset_tolerance_us:
            log.warning(
                "clock %s: device timeline jumped (%+.3f s device vs %+.3f s host since the last "
                "message); treating it as a device reset and re-initialising",
                self.name or "?", -backwards_us / 1e6, (host - self._last_host) / 1e9,
            )
            self.n_resets += 1
            self._init_state()
            return self._start(raw, host)
        self._last_raw, self._last_dev, self._last_host = raw, dev, host
        self._n += 1
        if x - self._blk_start >= self.block_us:
            self._close_block()
            self._blk_start, self._blk_x, self._blk_y = x, x, y
        elif y < self._blk_y:
            self._blk_x, self._blk_y = x, y
        if not self._fitted:
            self._fallback_fit()
        return dev

    def update_many(self, device_t_us, host_t_ns) -> np.ndarray:
        """:meth:`update` for arrays of messages in arrival order (e.g. replaying a log).

        Args:
            device_t_us: (N,) integer device timestamps, us.
            host_t_ns: (N,) integer host arrival times, ns.

        Returns:
            (N,) int64 unwrapped device times, us.

        Raises:
            BadInputError: shapes differ or values are not integers.
        """
        dev = _as_int64_array(device_t_us, "device_t_us").ravel()
        host = _as_int64_array(host_t_ns, "host_t_ns").ravel()
        if dev.shape != host.shape:
            raise BadInputError(f"device_t_us has {dev.size} values but host_t_ns has {host.size}")
        return np.array([self.update(int(d), int(h)) for d, h in zip(dev, host)], dtype=np.int64)

    def unwrap(self, device_t_us):
        """Unwrapped device time(s) for raw reading(s) near the latest message.

        With ``wrap_bits`` each value is read modulo ``2**wrap_bits`` and placed in the wrap
        period nearest the latest message (so it must lie within half a period of it, 35.8
        min for 32 bits); without, values are returned unchanged.

        Args:
            device_t_us: int or integer array, us.

        Returns:
            int or int64 array of the same shape, us.

        Raises:
            BadInputError: before the first update, or non-integer input.
        """
        self._need_data()
        scalar = np.ndim(device_t_us) == 0
        arr = np.atleast_1d(_as_int64_array(device_t_us, "device_t_us"))
        if self.wrap_bits is not None:
            mod = 1 << self.wrap_bits
            half = mod >> 1
            arr = self._last_dev + (np.mod(arr - self._last_raw + half, mod) - half)
        return int(arr[0]) if scalar else arr.reshape(np.shape(device_t_us))

    def to_host_ns(self, device_t_us):
        """Host monotonic time, ns, at which the device read ``device_t_us``.

        Args:
            device_t_us: device time(s), us: an int, or an integer array of any shape (raw
                readings when ``wrap_bits`` is set; see :meth:`unwrap`).

        Returns:
            int for a scalar, int64 array of the same shape for an array. Extrapolates
            linearly beyond the latest message.

        Raises:
            BadInputError: before the first update, or non-integer input.
        """
        dev = self.unwrap(device_t_us)
        if np.ndim(dev) == 0:
            return 1000 * dev + self._off_ref + int(round(self._line(float(dev - self._dev_ref))))
        x = (dev - self._dev_ref).astype(np.float64)
        return 1000 * dev + self._off_ref + np.round(self._line(x)).astype(np.int64)

    def __repr__(self) -> str:
        return (f"ClockSync(name={self.name!r}, n_updates={self._n}, ready={self._fitted}, "
                f"drift_ppm={self.drift_ppm:.2f}, residual_ns={self._scale_ns:.0f}, "
                f"n_resets={self.n_resets})")

    # -- internals -----------------------------------------------------------------------
    def _need_data(self) -> None:
        if self._last_dev is None:
            raise BadInputError("ClockSync has no messages yet: call update() first")

    def _line(self, x):
        return self._alpha + self._beta * x

    def _start(self, raw: int, host: int) -> int:
        self._last_raw = self._last_dev = self._dev_ref = raw
        self._last_host = host
        self._off_ref = host - 1000 * raw
        self._n = 1
        self._blk_start = self._blk_x = self._blk_y = 0.0
        self._alpha = 0.0
        return raw

    def _unwrap_with_host(self, raw: int, host: int) -> int:
        if self.wrap_bits is None:
            return raw
        mod = 1 << self.wrap_bits
        step = (raw - self._last_raw) % mod
        # Count whole wrap periods from the host clock, so a silence longer than a period
        # (71.6 min for 32 bits) still unwraps right; a device reset shows up as a step far
        # from the host's and is caught by the caller.
        host_step_us = (host - self._last_host) / 1000.0
        step += mod * int(np.round((host_step_us - step) / mod))
        return self._last_dev + step

    def _close_block(self) -> None:
        if np.isfinite(self._blk_y):
            self._minima.append((self._blk_x, self._blk_y))
        if len(self._minima) >= 3 and self._minima[-1][0] - self._minima[0][0] >= self.min_fit_span_us:
            self._robust_fit()

    def _fallback_fit(self) -> None:
        # Lowest point of the latest closed block and the open one, drift assumed 0: a few
        # seconds of a few hundred ppm add at most about a millisecond.
        lows = [self._blk_y]
        if self._minima:
            lows.append(self._minima[-1][1])
        self._alpha, self._beta = float(min(lows)), 0.0

    def _robust_fit(self) -> None:
        pts = np.asarray(self._minima)
        x, y = pts[:, 0], pts[:, 1]
        i, j = np.triu_indices(len(x), k=1)
        dx = x[j] - x[i]
        ok = dx > 0
        beta = float(np.median((y[j] - y[i])[ok] / dx[ok]))
        resid = y - beta * x
        med = float(np.median(resid))
        scale = float(1.4826 * np.median(np.abs(resid - med)))
        # The line is the lower envelope, so it goes through the lowest minimum, not the
        # median one (the median sits above the envelope by the typical block-minimum delay,
        # about 1 ms at 5 messages/s). A minimum far below all others cannot be a delay and
        # is a timestamp glitch: it is left out.
        floor = med - _GLITCH_SCALES * scale - _GLITCH_FLOOR_NS
        self._alpha = float(resid[resid >= floor].min())
        self._beta = beta
        self._scale_ns = scale
        self._fitted = True
