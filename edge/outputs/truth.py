"""What is known to be true about a session, for the pictures to draw beside the estimates.

Two kinds of ground truth exist in this project:

* a **script**, for a synthetic session (``emofuse demo``): segments with their valence and
  arousal labels, and the beats the simulated heart was given;
* a **reference pulse** recorded beside a clip (PhysRecorder's finger BVP, ``BVP.csv``), from
  which the reference heart rate is computed with the package's own heart-rate code
  (:func:`edge.signals.hr.heart_rate`) over the same windows as the estimate.

All times are on the session clock of the results (s from the session's first frame), so the
truth and the estimates share one time axis. Nothing here draws: the session report
(:class:`edge.outputs.report.SessionReportWriter`) and ``emofuse hr --plot`` do.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError

LABELS = ("high", "low")
#: Streams that carry a reference pulse, in order of preference (a PhysRecorder finger BVP
#: first, then the PPG names the runtime reads as contact PPG).
PULSE_STREAMS = ("bvp", "ppg", "ppg_ir", "ppg_green", "ppg_red")
#: A window's reference is left out (NaN) when the pulse has a hole longer than this inside it, s.
MAX_PULSE_GAP_S = 1.0


@dataclass(frozen=True)
class TruthSegment:
    """One segment of a script.

    Attributes:
        name: what the segment is (``"calm"``).
        t0_s, t1_s: its start and end on the session clock, s (t1_s > t0_s).
        valence, arousal: the scripted label, ``"high"``, ``"low"`` or None (not scripted).

    Raises:
        ConfigError: t1_s <= t0_s, a time that is not finite, or a label not in :data:`LABELS`.
    """

    name: str
    t0_s: float
    t1_s: float
    valence: str | None = None
    arousal: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.t0_s) and math.isfinite(self.t1_s) and self.t1_s > self.t0_s):
            raise ConfigError(f"segment {self.name!r} needs finite times with t1_s > t0_s, got "
                              f"{self.t0_s!r}, {self.t1_s!r}")
        for what, label in (("valence", self.valence), ("arousal", self.arousal)):
            if label is not None and label not in LABELS:
                raise ConfigError(f"segment {self.name!r}: {what} must be 'high', 'low' or None, got {label!r}")


@dataclass(frozen=True)
class HeartTruth:
    """A heart-rate reference: the true beats (a script) or a reference pulse (a finger BVP).

    Exactly one of ``beat_times_s`` and ``pulse`` is given.

    Attributes:
        label: the legend text (``"script"``, ``"finger BVP"``).
        window_s: the estimate's heart-rate window, s; :meth:`over_windows` uses the same.
        beat_times_s: float64 (K,) increasing beat times on the session clock, s.
        pulse_t_s: float64 (N,) increasing sample times of ``pulse`` on the session clock, s
            (irregular spacing allowed: it is resampled).
        pulse: float64 (N,) the reference pulse, any units.
        lo_hz, hi_hz: the heart-rate band, Hz (as the estimate's).

    Raises:
        ConfigError: neither or both of beats and pulse, window_s <= 0, or bad band.
        BadInputError: times not increasing, shapes that differ, non-finite values, fewer
            than 2 beats or 8 pulse samples.
    """

    label: str
    window_s: float
    beat_times_s: np.ndarray | None = None
    pulse_t_s: np.ndarray | None = None
    pulse: np.ndarray | None = None
    lo_hz: float = 0.7
    hi_hz: float = 3.5

    def __post_init__(self) -> None:
        if (self.beat_times_s is None) == (self.pulse is None):
            raise ConfigError("a heart truth needs either beat_times_s or a pulse, not both or neither")
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ConfigError(f"window_s must be > 0, got {self.window_s!r}")
        if not 0 < self.lo_hz < self.hi_hz:
            raise ConfigError(f"need 0 < lo_hz < hi_hz, got {self.lo_hz}, {self.hi_hz}")
        if self.beat_times_s is not None:
            b = _increasing(self.beat_times_s, "beat_times_s")
            if b.size < 2:
                raise BadInputError(f"beat_times_s needs at least 2 beats, got {b.size}")
            object.__setattr__(self, "beat_times_s", b)
        else:
            t = _increasing(self.pulse_t_s, "pulse_t_s")
            x = np.asarray(self.pulse, dtype=np.float64)
            if x.shape != t.shape:
                raise BadInputError(f"pulse has shape {x.shape}, pulse_t_s {t.shape}")
            if not np.all(np.isfinite(x)):
                raise BadInputError("the reference pulse holds non-finite values")
            if t.size < 8:
                raise BadInputError(f"the reference pulse needs at least 8 samples, got {t.size}")
            object.__setattr__(self, "pulse_t_s", t)
            object.__setattr__(self, "pulse", x)

    @property
    def span_s(self) -> tuple[float, float]:
        """(first, last) time the reference covers, s."""
        t = self.beat_times_s if self.beat_times_s is not None else self.pulse_t_s
        return float(t[0]), float(t[-1])

    def instantaneous(self, t_s) -> np.ndarray | None:
        """The beat-to-beat heart rate at ``t_s``: 60 / RR placed at each interval's midpoint,
        linearly interpolated; NaN outside the beats. None for a reference pulse (its beats
        are not known).

        Args:
            t_s: float (M,) session times, s.

        Returns:
            float64 (M,) bpm, or None.
        """
        if self.beat_times_s is None:
            return None
        b = self.beat_times_s
        mid = 0.5 * (b[1:] + b[:-1])
        return np.interp(np.asarray(t_s, dtype=np.float64), mid, 60.0 / np.diff(b), left=np.nan, right=np.nan)

    def over_windows(self, ends_s) -> np.ndarray:
        """The reference heart rate over each window ``(end - window_s, end]``, the window the
        estimate stamped ``end`` used.

        Beats: the beats in the window per minute, counted fractionally at its edges (what a
        spectral estimate over that window should find). Pulse: :func:`edge.signals.hr.heart_rate`
        (periodogram peak; de Haan & Jeanne 2013 SNR) of the pulse resampled uniformly at its
        median rate and band-passed (:func:`edge.signals.filters.bandpass`, 0.7-3.5 Hz), exactly
        the estimator the rPPG heart rate uses.

        Args:
            ends_s: float (M,) window ends on the session clock, s.

        Returns:
            float64 (M,) bpm; NaN where the reference does not cover the whole window (or a
            pulse has a hole over :data:`MAX_PULSE_GAP_S` in it).
        """
        ends = np.asarray(ends_s, dtype=np.float64).ravel()
        out = np.full(ends.shape, np.nan)
        first, last = self.span_s
        inside = np.isfinite(ends) & (ends - self.window_s >= first - 1e-9) & (ends <= last + 1e-9)
        if self.beat_times_s is not None:
            b = self.beat_times_s
            k = np.arange(b.size, dtype=np.float64)
            e = ends[inside]
            out[inside] = 60.0 * (np.interp(e, b, k) - np.interp(e - self.window_s, b, k)) / self.window_s
            return out
        if not inside.any():
            return out
        from edge.signals.filters import bandpass
        from edge.signals.hr import heart_rate

        t, x = self.pulse_t_s, self.pulse
        fs = float(1.0 / np.median(np.diff(t)))
        if fs <= 2.0 * self.hi_hz:
            raise BadInputError(f"the reference pulse's rate {fs:.1f} Hz is too low for a band up to {self.hi_hz} Hz")
        grid = t[0] + np.arange(int(np.floor((t[-1] - t[0]) * fs + 1e-9)) + 1) / fs
        y = bandpass(np.interp(grid, t, x), fs, self.lo_hz, self.hi_hz)
        gap_at = np.flatnonzero(np.diff(t) > MAX_PULSE_GAP_S)
        n_win = int(round(self.window_s * fs))
        for i in np.flatnonzero(inside):
            e = ends[i]
            if np.any((t[gap_at + 1] > e - self.window_s) & (t[gap_at] < e)):
                continue
            stop = int(np.searchsorted(grid, e + 1e-9))
            if stop - n_win < 0 or n_win < 8:
                continue
            out[i] = heart_rate(y[stop - n_win:stop], fs, self.lo_hz, self.hi_hz).hr_bpm
        return out


@dataclass(frozen=True)
class SessionTruth:
    """Ground truth of a session: the script's segments and a heart-rate reference, either
    may be missing.

    Attributes:
        segments: the script's segments, in time order.
        heart: the heart-rate reference, or None.
        source: what the truth comes from, for the page (``"demo script"``, ``"BVP.csv"``).
    """

    segments: tuple[TruthSegment, ...] = ()
    heart: HeartTruth | None = None
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.segments))
        for a, b in zip(self.segments, self.segments[1:]):
            if b.t0_s < a.t0_s:
                raise ConfigError("truth segments must be in time order")


def _increasing(values, name: str) -> np.ndarray:
    t = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(t)):
        raise BadInputError(f"{name} holds non-finite times")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise BadInputError(f"{name} must be strictly increasing")
    return t


def recording_heart_truth(path: str | os.PathLike, origin_ns: int, window_s: float,
                          stream: str | None = None) -> HeartTruth | None:
    """The reference pulse of a recording folder (a PhysRecorder folder's ``BVP.csv``, or an
    emofuse recording's PPG stream) as a :class:`HeartTruth`.

    Args:
        path: the recording folder (as ``emofuse replay`` takes it).
        origin_ns: the session's t = 0 on the recording's clock, ns (the replayed pipeline's
            first frame, or first sample without video).
        window_s: the estimate's heart-rate window, s.
        stream: the stream to use; None picks the first of :data:`PULSE_STREAMS` present.

    Returns:
        The reference, or None when the recording holds no pulse stream (or too few samples).

    Raises:
        BadInputError: not a recording, or ``stream`` not in it.
    """
    from firmware_bridge.recording import open_recording

    rec = open_recording(path)
    name = stream if stream is not None else next((s for s in PULSE_STREAMS if s in rec.streams), None)
    if name is None:
        return None
    t_ns, x = rec.read_stream(name)
    if x.ndim != 1:
        x = x[:, 0]
    keep = np.concatenate([[True], np.diff(t_ns) > 0]) if t_ns.size else np.zeros(0, bool)
    if int(keep.sum()) < 8:
        return None
    label = "finger BVP" if name == "bvp" else f"contact {name}"
    return HeartTruth(label=label, window_s=float(window_s),
                      pulse_t_s=(t_ns[keep] - int(origin_ns)) / 1e9, pulse=x[keep])


def csv_heart_truth(path: str | os.PathLike, t0_unix_s: float, window_s: float) -> HeartTruth:
    """A ``timestamp,<pulse>`` CSV (PhysRecorder's ``BVP.csv``, UNIX seconds) as a
    :class:`HeartTruth` on a clock whose zero is ``t0_unix_s``.

    Args:
        path: the CSV (damaged rows are skipped, as the replay does).
        t0_unix_s: UNIX time of the session's t = 0, s (the clip's first frame).
        window_s: the estimate's heart-rate window, s.

    Raises:
        BadInputError: unreadable CSV, no usable rows, fewer than 8 samples.
    """
    from firmware_bridge.recording.importers import read_timestamp_csv

    p = Path(path)
    _, t_ns, x, _ = read_timestamp_csv(p)
    # Seconds relative to t0 computed in ns first: UNIX seconds as float64 keep only ~0.2 us.
    t_s = (t_ns - int(round(float(t0_unix_s) * 1e9))) / 1e9
    return HeartTruth(label=f"{p.stem} reference", window_s=float(window_s), pulse_t_s=t_s, pulse=x[:, 0])
