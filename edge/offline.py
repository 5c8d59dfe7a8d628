"""The heart rate of a recorded face video, through the runtime's own path.

``emofuse hr`` and the real-recording tests use :func:`hr_session`, which runs the streaming
runtime itself (:class:`edge.pipeline.Pipeline` in replay mode, no model, no sensors) on the
video: the frame source, the face stage (:class:`edge.tracker.FaceTracker` boxes and
:func:`edge.preprocess.face_colour` with the record's ROI, edges and skin rule), the window
assembly (:func:`edge.preprocess.face_plan`, the pulse window of :func:`edge.preprocess.pulse_from_rgb`)
and the pulse half of :class:`edge.pipeline.infer.Inference` (heart rate, the record's quality
gate, ``min_pulse_quality``). Every setting comes from the bundle's preprocessing record
(:class:`edge.spec.Preprocessing`), so ``emofuse hr``, ``emofuse replay`` and ``emofuse run``
give the same windows and the same values on the same video.

:func:`resample_uniform` is a plain helper for reference signals (a finger BVP with irregular
times); the pulse path never uses it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError

__all__ = ["HrSession", "HrTrack", "hr_session", "resample_uniform"]


@dataclass(frozen=True)
class HrTrack:
    """The heart rate per window, as the runtime reports it.

    Attributes:
        t_s: float64 (W,) window ends, s from the first frame (the runtime's ``Result.t_s``).
        hr_bpm: float64 (W,) reported rPPG heart rate, beats/min; NaN where the runtime reports
            none (the gate refused it, or no face for the record's share of the window).
        quality: float64 (W,) the record's gate quality, 0..1 (``Result.hr_quality``); NaN where
            the window had no pulse to score.
        snr_db: float64 (W,) the window's SNR, dB; NaN where none.
        reasons: per window, the reasons of an unknown value (``Result.reasons``).
    """

    t_s: np.ndarray
    hr_bpm: np.ndarray
    quality: np.ndarray
    snr_db: np.ndarray
    reasons: tuple


@dataclass(frozen=True)
class HrSession:
    """A video's pulse and heart-rate track through the runtime.

    Attributes:
        t_s: float64 (M,) times of the ``pulse`` samples, s: UNIX seconds when the source knows
            its absolute start (a timestamps CSV), else seconds from the first frame.
        fs: the pulse's sampling rate, Hz (the record's ``fps``).
        pulse: float64 (M,) the cleaned rPPG pulse as the windows saw it: the first full
            window, then each later window's newest ``hop_s``; NaN where no window formed one.
        track: the :class:`HrTrack` of every window from the first full pulse window on.
        t0_s: time of the first frame on the ``t_s`` clock, s (0 without absolute times).
        t0_unix_s: UNIX time of the first frame, or None.
        window_s: the record's pulse window (each heart rate's span), s.
        method: the rPPG method of the record.
        min_pulse_quality: the gate's threshold.
        frames: frames processed.
        source: the video.
    """

    t_s: np.ndarray
    fs: float
    pulse: np.ndarray
    track: HrTrack
    t0_s: float
    t0_unix_s: float | None
    window_s: float
    method: str
    min_pulse_quality: float
    frames: int
    source: str


def hr_session(video: Any, bundle: Any = "default", *, timestamps: str | None = None, hop_s: float = 1.0,
               min_pulse_quality: float = 0.5, method: str | None = None, progress: bool = False) -> HrSession:
    """Run a finite video through the runtime's pulse path and collect its heart-rate track.

    Args:
        video: a video file readable by OpenCV, a folder of images, or a finite camera URI
            (``sim://?hr_bpm=72&duration_s=20``).
        bundle: where the preprocessing record comes from: ``"default"``, a bundle folder, a
            loaded :class:`edge.bundle.Bundle`, or an :class:`edge.spec.Preprocessing` record
            itself. The model is never run.
        timestamps: optional ``frame,timestamp`` CSV (UNIX seconds) of the frames' capture times
            (a file camera's ``timestamps`` option; by default ``frames_timestamp.csv`` beside
            the video when present).
        hop_s: seconds between windows (:attr:`edge.pipeline.PipelineOptions.hop_s`).
        min_pulse_quality: the gate's threshold (:attr:`edge.pipeline.PipelineOptions.min_pulse_quality`).
        method: an rPPG method (:data:`edge.signals.rppg.METHODS`) replacing the record's
            ``rppg.method`` (default: the record's, as the runtime runs it).
        progress: show a tqdm bar on stderr (only when stderr is a terminal).

    Returns:
        :class:`HrSession`.

    Raises:
        BadInputError: a missing or undecodable video, a bad timestamps CSV, no face in any
            frame, a grayscale video, a face without skin colour, or a video shorter than the
            record's pulse window.
        ConfigError: a live camera, a bad bundle or record, an unknown method, a bad hop or
            threshold.
    """
    from edge.pipeline import Pipeline, resolve_bundle
    from edge.spec import Preprocessing
    from firmware_bridge.cameras import open_camera

    if isinstance(video, Path) or "://" not in str(video):
        if not Path(video).exists():
            raise BadInputError(f"video not found: {video}")
    p = bundle if isinstance(bundle, Preprocessing) else None
    if p is None:
        b = resolve_bundle(bundle)
        if b is None:
            raise ConfigError("the heart rate needs a preprocessing record: pass a bundle, not 'none'")
        p = b.preprocessing
    if method is not None and method != p.rppg.method:
        p = p.replace(**{"rppg.method": method})
    options = {} if timestamps is None else {"timestamps": str(timestamps)}
    camera = open_camera(str(video), **options)
    if camera.live:
        camera.close()
        raise ConfigError(f"{video} is a live camera; a heart-rate track needs a file or sim://")
    t0_unix_s = getattr(camera, "t0_unix_s", None)
    counts = {"frames": 0, "faced": 0, "gray": 0}
    bar = None
    if progress:
        from tqdm import tqdm

        total = getattr(camera, "frame_count_declared", 0) or None
        # disable=None: silent when stderr is not a terminal (logs, pipes, tests).
        bar = tqdm(total=total, unit="frame", desc=Path(str(video)).name, disable=None)

    def on_frame(event) -> None:
        counts["frames"] += 1
        counts["faced"] += event.box is not None
        counts["gray"] += _is_gray(event.frame.image)
        if bar is not None:
            bar.update(1)

    rows = []
    try:
        pipe = Pipeline(camera, (), bundle=None, preprocessing=p, mode="replay", hop_s=hop_s,
                        min_pulse_quality=min_pulse_quality, on_frame=on_frame)
        for r in pipe.results():
            # Windows from the first full pulse window on: the earlier ones are warming up.
            if r.t_s >= p.rppg.pulse_window_s - 1e-9:
                rows.append((r.t_s, r.hr_bpm, r.hr_quality, r.hr_snr_db, r.reasons, r.pulse))
        coloured = pipe.face.coloured if pipe.face is not None else 0
    finally:
        if bar is not None:
            bar.close()
    n, faced = counts["frames"], counts["faced"]
    if n == 0:
        raise BadInputError(f"no frames could be decoded from {video}; is it a video?")
    if coloured == 0:
        if faced == 0:
            raise BadInputError(f"no face found in any of the {n} frames of {video}")
        if 2 * counts["gray"] >= n:
            raise BadInputError(f"{video} is grayscale: a face was found in {faced} of {n} frames, but rPPG "
                                f"measures colour changes of the skin and needs a colour video")
        raise BadInputError(f"a face was found in {faced} of {n} frames of {video}, but no pixel in it passed "
                            f"the skin-colour rule (edge.signals.roi)")
    if not rows:
        raise BadInputError(f"{video} ({n} frames) is shorter than the record's {p.rppg.pulse_window_s:g} s "
                            f"pulse window")
    nan = math.nan
    track = HrTrack(
        t_s=np.array([r[0] for r in rows], np.float64),
        hr_bpm=np.array([nan if r[1] is None else r[1] for r in rows], np.float64),
        quality=np.array([nan if r[2] is None else r[2] for r in rows], np.float64),
        snr_db=np.array([nan if r[3] is None else r[3] for r in rows], np.float64),
        reasons=tuple(tuple(str(getattr(x, "value", x)) for x in r[4]) for r in rows),
    )
    t_rel, pulse = _stitch(rows, p.fps, p.n_pulse)
    t0 = float(t0_unix_s) if t0_unix_s is not None else 0.0
    return HrSession(t_s=t0 + t_rel, fs=float(p.fps), pulse=pulse, track=track, t0_s=t0, t0_unix_s=t0_unix_s,
                     window_s=float(p.rppg.pulse_window_s), method=p.rppg.method,
                     min_pulse_quality=float(min_pulse_quality), frames=n, source=str(video))


def _stitch(rows, fps: float, n_pulse: int) -> tuple[np.ndarray, np.ndarray]:
    """One pulse over the session from the windows' own pulses: the first window whole, then
    the samples of each later window past what is already covered; NaN between windows that
    formed none. Returns (times from the first frame, s; pulse), float64."""
    times: list[np.ndarray] = []
    values: list[np.ndarray] = []
    covered = -math.inf
    for t_end, *_, pulse in rows:
        if pulse is None:
            continue
        # Grid point k of a window ending at t_end is at t_end - (n_pulse - k) / fps
        # (edge.preprocess.face_plan): its last point one frame period before the end.
        t = t_end - (n_pulse - np.arange(pulse.size)) / fps
        new = t > covered + 0.5 / fps
        if not new.any():
            continue
        if times and t[new][0] > covered + 1.5 / fps:
            times.append(np.array([0.5 * (covered + t[new][0])]))  # a break in the drawn line
            values.append(np.array([math.nan]))
        times.append(t[new])
        values.append(np.asarray(pulse, np.float64)[new])
        covered = float(t[new][-1])
    if not times:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(times), np.concatenate(values)


def _is_gray(image) -> bool:
    """True for a frame without colour: one channel, or B, G and R equal (checked on every 8th
    pixel each way, after lossy codecs within 2 levels)."""
    if image.ndim == 2 or image.shape[-1] == 1:
        return True
    sub = image[::8, ::8].astype(np.int16)
    return bool(np.abs(sub[..., 0] - sub[..., 1]).max() <= 2 and np.abs(sub[..., 1] - sub[..., 2]).max() <= 2)


def resample_uniform(
    t_s: np.ndarray, values: np.ndarray, fs: float
) -> tuple[np.ndarray, np.ndarray]:
    """Linear resampling of (N, C) samples at times t_s onto a uniform grid at fs Hz.

    For reference signals recorded with irregular times (a 20 Hz finger BVP). NaN rows are
    dropped first, so gaps are bridged linearly and the ends are held (``np.interp``). The
    rPPG path does not use it: the runtime resamples each pulse window with gap masks
    (:func:`edge.preprocess.pulse_from_rgb`).

    Returns:
        (grid float64 (M,) from t_s[0] in steps of 1/fs, values float64 (M, C)).

    Raises:
        BadInputError: fewer than 2 finite rows.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    good = np.all(np.isfinite(values), axis=1) & np.isfinite(t_s)
    if good.sum() < 2:
        raise BadInputError("fewer than 2 valid samples to resample")
    n = int(np.floor((t_s[-1] - t_s[0]) * fs + 1e-9)) + 1
    grid = t_s[0] + np.arange(n) / fs
    out = np.column_stack(
        [np.interp(grid, t_s[good], values[good, c]) for c in range(values.shape[1])]
    )
    return grid, out
