"""Offline rPPG on a recorded face video: video -> RGB trace -> pulse -> heart-rate track.

Shared by ``emofuse hr`` and the real-recording tests, so both measure the same pipeline:
Haar face box (:class:`edge.face.HaarFaceDetector`) every few frames, held and eased between
detections; skin-pixel mean colour of the forehead and cheeks (:func:`edge.signals.roi.face_rgb`);
a uniform resampling; an rPPG method (:func:`edge.signals.rppg.rppg_extract`, POS by default, Wang et
al. 2017) and its cleaning; and the windowed spectral heart rate (:func:`edge.signals.hr.hr_track`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.face import HaarFaceDetector
from edge.signals.hr import HrTrack, hr_track
from edge.signals.roi import face_stats
from edge.signals.rppg import METHODS, rppg_clean, rppg_extract
from firmware_bridge.cameras import open_camera
from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)

# Fraction of the way the held box moves toward the latest detection on every frame. Jumping
# in one step every ``detect_every`` frames would put a step into the colour trace at
# fps / detect_every (3 Hz at 30 fps / 10), inside the heart-rate band; easing spreads it out.
BOX_EASE = 0.25
# Detection attempts in a row without a face after which the held box is dropped (the face
# left, so the old box would average background).
MAX_MISSED_DETECTIONS = 3


@dataclass(frozen=True)
class RgbTrace:
    """Per-frame face colour of a video.

    Attributes:
        t_s: float64 (N,) frame times, s: UNIX seconds from the timestamps CSV, else
            ``index / fps`` from the video header.
        rgb: float64 (N, 3) mean skin R, G, B (0..255) of forehead + cheeks; NaN rows where
            no face box was held or no skin pixel was found.
        boxes: float64 (N, 4) face box (x, y, w, h) in pixels used on each frame; NaN rows
            where none.
        n_skin: int64 (N,) skin pixels behind each ``rgb`` row.
        fps: median frame rate, Hz (1 / median frame interval).
        source: the video path.
    """

    t_s: np.ndarray
    rgb: np.ndarray
    boxes: np.ndarray
    n_skin: np.ndarray
    fps: float
    source: str


@dataclass(frozen=True)
class HrEstimate:
    """The pulse and heart-rate track of a trace.

    Attributes:
        t_s: float64 (M,) uniform sample times, s, same clock as the trace's ``t_s``.
        fs: the uniform sampling rate, Hz (the trace's median frame rate).
        rgb: float64 (M, 3) the trace resampled onto ``t_s``.
        pulse: float64 (M,) cleaned rPPG pulse, a.u.
        track: HrTrack whose ``t_s`` counts seconds from ``t_s[0]``.
        method: the rPPG method name.
    """

    t_s: np.ndarray
    fs: float
    rgb: np.ndarray
    pulse: np.ndarray
    track: HrTrack
    method: str


def video_rgb_trace(
    path,
    timestamps_csv=None,
    detect_every: int = 10,
    progress: bool = False,
    detector=None,
) -> RgbTrace:
    """Face skin colour of every frame of a video (or any finite camera source).

    Frames come through :func:`firmware_bridge.cameras.open_camera`, the same source interface
    the runtime and replay use, so a file, a folder of images or ``sim://`` all work here.

    Args:
        path: a video file readable by OpenCV, a folder of images, or a camera URI of a finite
            source (``sim://?hr_bpm=72&duration_s=20``).
        timestamps_csv: optional ``frame,timestamp`` CSV (UNIX seconds) giving each frame's
            capture time; by default a ``frames_timestamp.csv`` beside the video is used when
            present. Without one, frame times are ``index / fps`` from the video header.
        detect_every: run the face detector every this many frames (and on every frame while
            no face is held); between detections the box eases toward the last detection.
        progress: show a tqdm bar on stderr (only when stderr is a terminal).
        detector: object with ``detect(frame_bgr) -> list[(x, y, w, h)]`` (largest first);
            default ``HaarFaceDetector()``.

    Returns:
        RgbTrace (see its fields); ``t_s`` is in UNIX seconds when the source knows its
        absolute start time (a timestamps CSV), else seconds from the first frame.

    Raises:
        BadInputError: file missing, not a decodable video, bad timestamps CSV (damaged rows
            are skipped by :func:`firmware_bridge.cameras.files.read_frame_times`), frame
            times that repeat, no face found in any frame, or a face but no skin colour (a
            grayscale video: rPPG needs colour).
        ConfigError: detect_every < 1, or a live camera URI (a trace needs a finite source).
    """
    if int(detect_every) < 1:
        raise ConfigError(f"detect_every must be >= 1, got {detect_every}")
    if isinstance(path, Path) or "://" not in str(path):
        if not Path(path).exists():
            raise BadInputError(f"video not found: {path}")
    options = {} if timestamps_csv is None else {"timestamps": str(timestamps_csv)}
    if detector is None:
        detector = HaarFaceDetector()

    rgb, boxes, n_skin, t_ns = [], [], [], []
    box = target = None
    missed = 0
    n_faced = n_gray = 0
    with open_camera(str(path), **options) as cam:
        if cam.live:
            raise ConfigError(f"{path} is a live camera; a heart-rate trace needs a file or sim://")
        bar = None
        if progress:
            from tqdm import tqdm

            total = getattr(cam, "frame_count_declared", 0) or None
            # disable=None: silent when stderr is not a terminal (logs, pipes, tests).
            bar = tqdm(total=total, unit="frame", desc=Path(str(path)).name, disable=None)
        for index, frame in enumerate(cam):
            image = frame.image
            if target is None or index % detect_every == 0:
                found = detector.detect(image)
                if found:
                    target = np.asarray(found[0], dtype=np.float64)
                    missed = 0
                    if box is None:
                        box = target.copy()
                elif target is not None:
                    missed += 1
                    if missed >= MAX_MISSED_DETECTIONS:
                        box = target = None
            if _is_gray(image):
                n_gray += 1
            if box is not None:
                n_faced += 1
                box += BOX_EASE * (target - box)
                stats = face_stats(image, box)
                rgb.append(stats.rgb)
                boxes.append(box.copy())
                n_skin.append(stats.n_skin)
            else:
                rgb.append(np.full(3, np.nan))
                boxes.append(np.full(4, np.nan))
                n_skin.append(0)
            t_ns.append(frame.t_ns)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        t0_unix_s = getattr(cam, "t0_unix_s", None)

    if not t_ns:
        raise BadInputError(f"no frames could be decoded from {path}; is it a video?")
    t_s = (np.asarray(t_ns, dtype=np.int64) - t_ns[0]) / 1e9
    if t0_unix_s is not None:
        t_s = t_s + t0_unix_s
    rgb_a = np.asarray(rgb, dtype=np.float64)
    if not np.any(np.isfinite(rgb_a[:, 0])):
        if n_faced == 0:
            raise BadInputError(f"no face found in any of the {len(t_ns)} frames of {path}")
        if 2 * n_gray >= len(t_ns):
            raise BadInputError(f"{path} is grayscale: a face was found in {n_faced} of {len(t_ns)} frames, "
                                f"but rPPG measures colour changes of the skin and needs a colour video")
        raise BadInputError(f"a face was found in {n_faced} of {len(t_ns)} frames of {path}, but no pixel in it "
                            f"passed the skin-colour rule (edge.signals.roi)")
    if len(t_ns) < 2:
        raise BadInputError(f"{path} has a single frame; a heart rate needs a clip")
    step_s = float(np.median(np.diff(t_s)))
    if not (np.isfinite(step_s) and step_s > 0):
        # The timestamp readers drop repeated times; a source without them could still repeat.
        raise BadInputError(f"{path}: the median frame interval is {step_s!r} s (frame times repeat); "
                            f"not a usable clock")
    fps = 1.0 / step_s
    return RgbTrace(
        t_s=t_s,
        rgb=rgb_a,
        boxes=np.asarray(boxes, dtype=np.float64),
        n_skin=np.asarray(n_skin, dtype=np.int64),
        fps=float(fps),
        source=str(path),
    )


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

    NaN rows are dropped first, so gaps are bridged linearly and the ends are held
    (``np.interp``); linear interpolation is a mild low-pass at 30 fps, far above the 3.5 Hz
    band edge, so it leaves the pulse intact.

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


def estimate_hr(
    trace: RgbTrace,
    method: str = "pos",
    window_s: float = 10.0,
    hop_s: float = 1.0,
    lo: float = 0.7,
    hi: float = 3.5,
) -> HrEstimate:
    """rPPG pulse and sliding-window heart rate of an RGB trace.

    The trace is resampled onto a uniform grid at its median frame rate first (webcam frame
    times jitter; the rPPG filters assume uniform sampling): see :func:`resample_uniform`.

    Args:
        trace: from :func:`video_rgb_trace`.
        method: rPPG method name in ``edge.signals.rppg.METHODS`` (default POS).
        window_s, hop_s: heart-rate window and hop, s.
        lo, hi: heart-rate band, Hz.

    Returns:
        HrEstimate (pulse, its uniform times and rate, and the HrTrack).

    Raises:
        BadInputError: no valid face rows, or a clip shorter than one window.
        ConfigError: unknown method, bad window or band.

    Method: POS (Wang et al. 2017, IEEE TBME 64(7)) or the chosen method; heart rate by
    :func:`edge.signals.hr.hr_track`.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown rPPG method {method!r}; choose from {sorted(METHODS)}")
    fs = float(trace.fps)
    t_s, rgb = resample_uniform(trace.t_s, trace.rgb, fs)
    duration = t_s[-1] - t_s[0] + 1.0 / fs
    if duration + 1e-9 < window_s:
        raise BadInputError(
            f"{trace.source} lasts {duration:.1f} s, shorter than the {window_s} s window"
        )
    pulse = rppg_clean(rppg_extract(rgb, fs, method=method), fs, lo=lo, hi=hi)
    track = hr_track(pulse, fs, window_s=window_s, hop_s=hop_s, lo=lo, hi=hi)
    return HrEstimate(t_s=t_s, fs=fs, rgb=rgb, pulse=pulse, track=track, method=method)
