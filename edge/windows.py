"""Windows cut from whole recordings: the offline half of the one preprocessing path.

Training (``export.data``), calibration (``calibrate``) and tests cut a window's model inputs
from a whole recording - a synthetic session, a corpus trial, a recording made by
``emofuse record`` - with :func:`windows_from_session`. It finds faces with the record's
face-box method (:func:`edge.preprocess.track_faces`: the device's own tracker, fed the
window's frames in time order), cuts crops and face colours with
:func:`edge.preprocess.face_crop` / :func:`edge.preprocess.face_colour`, and hands everything
to the same :mod:`edge.preprocess` functions that the runtime (``edge.pipeline``) calls on its
ring buffers. All settings come from one :class:`edge.spec.Preprocessing` record.

Tracking offline: the tracker starts ``face.track_warmup_s`` before the pulse window and sees
every frame from there to the window's end (the face clip lies inside that span), as a
device that had been running for that long would; the ``face_seq_crops`` frames earlier than
the span (MVP's one-crop-every-0.5 s sequence) are fed to a second fresh tracker in time order.
On a window whose tracked span starts at the recording's first frame, offline and device
tensors are identical (tests/edge/test_preprocess.py). Later in a recording the two trackers
both hold the face but may rest at different places inside the tracker's dead band (5 % of
the face size): the crops then differ by about a pixel's shift, as the device's own crops do
from one detection to the next.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.preprocess import (
    Window,
    check_preprocessing,
    contact_inputs,
    ecg_level_hr,
    face_colour,
    face_crop,
    face_inputs,
    face_plan,
    needs_ecg_level,
    resample_contact,
    track_faces,
)
from edge.spec import Preprocessing
from firmware_bridge.errors import BadInputError

__all__ = ["Recording", "Stream", "recording_session", "window_shapes", "windows_from_session"]


def window_shapes(p: Preprocessing) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-window shape and dtype of every array a labelled window set holds (without N).

    Args:
        p: the preprocessing record.

    Returns:
        dict name -> (shape tuple, numpy dtype): the model inputs (``face_clip``, ``tfr``,
        ``contact``, ``contact_level``, ``face_seq_crops``), labels, ids and presence flags.

    Raises:
        ConfigError: ``p`` is not a record.
    """
    check_preprocessing(p)
    s, n_rows = p.face.crop_size, len(p.contact.streams)
    out = {
        "face_clip": ((p.face.clip_frames, s, s, 3), np.dtype(np.uint8)),
        "tfr": (tuple(p.tfr.shape), np.dtype(np.float32)),
        "contact": ((n_rows, p.contact.n_samples), np.dtype(np.float32)),
        "contact_level": ((2,), np.dtype(np.float32)),
        "face_seq_crops": ((p.face.seq_frames, s, s, 3), np.dtype(np.uint8)),
    }
    scalars = {"valence": np.float32, "arousal": np.float32, "valence_high": np.int64, "arousal_high": np.int64,
               "subject": np.int64, "trial": np.int64, "face_present": np.bool_}
    out.update({k: ((), np.dtype(v)) for k, v in scalars.items()})
    out["contact_present"] = ((n_rows,), np.dtype(np.bool_))
    out["level_present"] = ((2,), np.dtype(np.bool_))
    return out


# -- recordings ------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Stream:
    """Samples of one signal with their times.

    Attributes:
        t_s: float64 (N,) sample times, s, non-decreasing, same origin as the frame times.
        values: float64 (N,) samples (NaN = missing).
        units: physical units; EDA must be ``"uS"`` for its level summary to be computed.
    """

    t_s: np.ndarray
    values: np.ndarray
    units: str = "a.u."

    @classmethod
    def regular(cls, values: np.ndarray, fs_hz: float, t0_s: float = 0.0, units: str = "a.u.") -> Stream:
        """A regularly sampled stream: sample i at ``t0_s + i / fs_hz``.

        Raises:
            BadInputError: values not 1-D real or fs_hz not finite and > 0.
        """
        v = np.asarray(values, dtype=np.float64)
        if v.ndim != 1:
            raise BadInputError(f"stream values must be 1-D, got shape {v.shape}")
        if not (np.isfinite(fs_hz) and fs_hz > 0):
            raise BadInputError(f"fs_hz must be finite and > 0, got {fs_hz}")
        return cls(float(t0_s) + np.arange(v.size) / float(fs_hz), v, units)


@dataclass(eq=False)
class Recording:
    """A generic recording for :func:`windows_from_session`: signal streams and, optionally,
    a video.

    Attributes:
        ppg, eda, ecg: :class:`Stream` or None (absent). ``ecg`` is used only for the heart-rate
            level when there is no PPG.
        frame_times_s: float64 (n_frames,) s, or None when there is no video.
        frame: function i -> uint8 (H, W, 3) BGR frame.
        frames_at: optional function (sorted indices) -> {i: frame}, for sources that read
            faster in order (video files); default calls ``frame`` per index.
        t_end_s: the end of the recording's window, s; None = inferred.
    """

    ppg: Stream | None = None
    eda: Stream | None = None
    ecg: Stream | None = None
    frame_times_s: np.ndarray | None = None
    frame: Callable[[int], np.ndarray] | None = None
    frames_at: Callable[[Sequence[int]], dict] | None = None
    t_end_s: float | None = None


def _stream_end(stream: Any) -> float | None:
    if stream is None:
        return None
    t = np.asarray(stream.t_s)
    if t.size < 2:
        return None
    return float(t[-1] + np.median(np.diff(t)))


def _infer_t_end(session_like: Any) -> float:
    explicit = getattr(session_like, "t_end_s", None)
    if explicit is not None:
        return float(explicit)
    config = getattr(session_like, "config", None)
    if config is not None and hasattr(config, "duration_s"):
        return float(config.duration_s)
    ends = [e for e in (_stream_end(getattr(session_like, n, None)) for n in ("ppg", "eda", "ecg")) if e is not None]
    ft = getattr(session_like, "frame_times_s", None)
    if ft is not None and len(ft) >= 2:
        ends.append(float(ft[-1] + np.median(np.diff(ft))))
    if not ends:
        raise BadInputError("the recording has no signal and no video to cut a window from")
    # The window ends where every present source still has data.
    return min(ends)


# -- the face half ------------------------------------------------------------------------------

def _face_boxes(frames_at: Callable[[Sequence[int]], dict], frame_t: np.ndarray, wanted: list[int],
                t_end: float, p: Preprocessing) -> dict[int, Any]:
    # The tracker's span: every frame from track_warmup_s before the pulse window to the end.
    t_from = t_end - p.rppg.pulse_window_s - p.face.track_warmup_s
    span = [int(i) for i in np.nonzero((frame_t >= t_from) & (frame_t < t_end))[0]]
    frames = frames_at(sorted(set(span) | set(wanted)))
    boxes = dict(zip(span, track_faces((frames[i] for i in span), p)))
    # Sequence frames before the span: the same tracker over those frames in time order (it
    # holds the box between its detections, as the device's does between frames).
    early = sorted(i for i in wanted if i not in boxes)
    boxes.update(zip(early, track_faces((frames[i] for i in early), p)))
    return {i: (boxes[i], frames[i]) for i in wanted}


def _face_inputs(session_like: Any, p: Preprocessing, t_end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Find the faces of the frames the window needs and hand them to
    :func:`edge.preprocess.face_inputs`, the function the runtime calls too."""
    frame_t = getattr(session_like, "frame_times_s", None)
    frames_at = getattr(session_like, "frames_at", None)
    if frames_at is None and getattr(session_like, "frame", None) is not None:
        def frames_at(idx):
            return {i: session_like.frame(i) for i in idx}
    if frame_t is None or len(frame_t) < 2 or frames_at is None:
        s = p.face.crop_size
        return (np.zeros((p.face.clip_frames, s, s, 3), np.uint8), np.zeros(p.tfr.shape, np.float32),
                np.zeros((p.face.seq_frames, s, s, 3), np.uint8), False)
    frame_t = np.asarray(frame_t, dtype=np.float64)
    plan = face_plan(frame_t, t_end, p)
    seen = _face_boxes(frames_at, frame_t, plan.wanted(), t_end, p)

    def crop(i: int):
        box, frame = seen.get(i, (None, None)) if i >= 0 else (None, None)
        return None if box is None else face_crop(frame, box, p)

    clip_crops = [crop(int(i)) for i in plan.clip_idx]
    seq_crops = [crop(int(i)) for i in plan.seq_idx]
    rgb = np.full((plan.pulse_idx.size, 3), np.nan)
    for k, i in enumerate(plan.pulse_idx):
        box, frame = seen[int(i)]
        if box is not None:
            rgb[k] = face_colour(frame, box, p)
    fi = face_inputs(plan, frame_t, rgb, clip_crops, seq_crops, p)
    return fi.face_clip, fi.tfr, fi.face_seq_crops, fi.face_present


# -- the contact half ---------------------------------------------------------------------------

def _contact_inputs(session_like: Any, p: Preprocessing, t_end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                                 np.ndarray]:
    """Resample the window's contact streams and hand them to :func:`edge.preprocess.contact_inputs`,
    the function the runtime calls too."""
    pc, pl = p.contact, p.contact_level
    rate, n = pc.rate_hz, pc.n_samples
    grids: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in pc.streams:
        stream = getattr(session_like, name, None)
        if stream is None:
            continue
        t_s, values = np.asarray(stream.t_s, dtype=np.float64), np.asarray(stream.values, dtype=np.float64)
        if t_s.size < 2:
            continue
        grids[name] = resample_contact(t_s, values, t_end, p)
    ecg_hr = math.nan
    ecg = getattr(session_like, "ecg", None)
    if ecg is not None and needs_ecg_level(grids, p):
        # Only needed (and only paid for) when the PPG cannot give the heart-rate level.
        ecg_hr = ecg_level_hr(ecg.t_s, ecg.values, t_end - n / rate, t_end, pl.min_beats)
    eda_units = getattr(getattr(session_like, "eda", None), "units", None)
    ci = contact_inputs(grids, p, eda_units=eda_units, ecg_hr_bpm=ecg_hr)
    return ci.contact, ci.contact_present, ci.contact_level, ci.level_present


def windows_from_session(session_like: Any, p: Preprocessing, t_end_s: float | None = None) -> Window:
    """Cut the model inputs of one window from a recording, with the runtime's kernels.

    Args:
        session_like: a ``firmware_bridge.sim.SyntheticSession``, a :class:`Recording`, or any
            object with the same attributes: ``ppg``, ``eda`` (and optionally ``ecg``) with
            ``t_s``/``values`` (``units`` for EDA: "uS"), ``frame_times_s`` and ``frame(i)`` (BGR
            uint8) or ``frames_at(indices) -> {i: frame}``; a missing attribute = that source
            is absent. Faces are found by the record's method (see the module docstring), never
            taken from the recording.
        p: the preprocessing record.
        t_end_s: end of the window, s (the window is ``[t_end_s - window_s, t_end_s)``);
            default: the recording's ``t_end_s``, a synthetic session's duration, or where the
            shortest present source ends.

    Returns:
        A :class:`Window`; absent sources give zeros with their ``*_present`` flag False.

    Raises:
        BadInputError: nothing to cut a window from, or malformed signals.
        ConfigError: ``p`` is not a record.

    Method: see the module docstring (POS rPPG: Wang et al. 2017, IEEE TBME 64(7); STFT
    image: Allen 1977; PPG peaks: Elgendi et al. 2013; HRV: Task Force 1996).
    """
    check_preprocessing(p)
    t_end = float(t_end_s) if t_end_s is not None else _infer_t_end(session_like)
    if not math.isfinite(t_end):
        raise BadInputError(f"t_end_s must be finite, got {t_end}")
    clip, image, seq, face_ok = _face_inputs(session_like, p, t_end)
    rows, present, level, level_ok = _contact_inputs(session_like, p, t_end)
    return Window(clip, image, rows, level, seq, face_ok, present, level_ok)


def recording_session(rec, p: Preprocessing) -> Recording:
    """A recording opened by :func:`firmware_bridge.recording.open_recording` as a :class:`Recording`.

    Contact signals are picked from its streams the way the runtime picks them
    (:meth:`edge.spec.ContactSpec.stream_for`: the declared aliases, in order), with the units
    the recording stored; times are seconds from the recording's start; frames are decoded
    from its video on demand.

    Args:
        rec: the opened recording.
        p: the preprocessing record.

    Returns:
        The :class:`Recording`.

    Raises:
        BadInputError: unreadable streams or video.
    """
    check_preprocessing(p)
    t0 = int(rec.start_ns)
    out = Recording()
    for signal in ("ppg", "eda", "ecg"):
        key = p.contact.stream_for(signal, rec.streams)
        if key is None:
            continue
        units = next((chunk.units for chunk in rec.sensor(key)), "")
        t_ns, values = rec.read_stream(key)
        if values.ndim > 1:
            values = values[:, 0]
        setattr(out, signal, Stream((np.asarray(t_ns) - t0) / 1e9, np.asarray(values, np.float64), units))
    if rec.has_camera:
        with rec.camera() as cam:
            out.frame_times_s = np.asarray([(frame.t_ns - t0) / 1e9 for frame in cam], np.float64)

        def frames_at(indices: Sequence[int]) -> dict:
            wanted = set(int(i) for i in indices)
            got = {}
            with rec.camera() as cam:
                for k, frame in enumerate(cam):
                    if k in wanted:
                        got[k] = frame.image
                        if len(got) == len(wanted):
                            break
            return got

        out.frames_at = frames_at
    return out

