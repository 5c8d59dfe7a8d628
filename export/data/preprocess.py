"""Model inputs from a recording: the one preprocessing that training and the device share.

Everything that defines a model input lives in :data:`PREPROCESSING` (copied into every
dataset's ``meta`` and every bundle's manifest), and :func:`windows_from_session` turns one
window of a recording - a synthetic session or a real one - into the contract's tensors with
exactly the runtime's kernels:

- face: ``edge.face.crop_face`` crops (RGB uint8 32x32) of 8 frames over the last 2 s
  (``face_clip``) and of one frame every 0.5 s over the whole 60 s (``face_seq_crops``);
- rPPG: ``edge.signals.roi.face_rgb`` (forehead + cheeks skin means) per frame over the last
  10 s, put on the 30 Hz grid by ``firmware_bridge.resample.resample_to_grid``, then
  ``edge.signals.rppg.rppg_extract`` (POS, Wang et al. 2017), ``rppg_clean`` and
  ``edge.signals.tfr.tfr_compute`` (32x32 STFT image over 0.7-3.5 Hz);
- contact: PPG and EDA over the 60 s window resampled to 32 Hz with ``resample_to_grid``,
  each z-scored over its valid samples (invalid samples then 0), and two level summaries that
  z-scoring removes: mean heart rate from ``edge.signals.ppg.ppg_peaks`` + ``edge.signals.hrv
  .hrv`` on that same 32 Hz PPG (/ 100), and the tonic EDA mean from
  ``edge.signals.eda.eda_decompose`` (uS / 10).

The computations on raw window data are the torch-free :mod:`edge.preprocess` functions that
the device runtime (``edge.pipeline``) calls on its ring buffers; this module reads recordings
and hands them the frames, colours and samples of each window.

:class:`EmotionWindows` holds N such windows with labels and subjects and saves them as one
``.npz``; :func:`loso_splits` and :func:`kfold_subject_splits` give subject-independent splits.
See docs/DATASET.md.
"""
from __future__ import annotations

import copy
import json
import math
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The window record and every computation on raw window data live in the torch-free
# edge.preprocess, which the device runtime calls too; this module reads recordings.
from edge.preprocess import Window
from firmware_bridge.errors import BadInputError, ConfigError

__all__ = [
    "ARRAY_NAMES",
    "PREPROCESSING",
    "EmotionWindows",
    "Recording",
    "Stream",
    "Window",
    "kfold_subject_splits",
    "loso_splits",
    "window_shapes",
    "windows_from_session",
]

#: Every model-input setting, JSON-ready. Change a value here and both the training data and
#: (through the bundle manifest) the device follow.
PREPROCESSING: dict[str, Any] = {
    "version": 1,
    "fps": 30.0,
    "window_s": 60.0,
    "face": {
        "crop": "edge.face.crop_face",
        "crop_size": 32,
        "crop_margin": 0.15,
        "clip_frames": 8,
        "clip_stride_frames": 8,
        "clip_span_s": 2.0,
        "seq_rate_hz": 2.0,
        "seq_frames": 120,
        "frame_pick": "latest frame at or before each sample time, at most one frame period old",
    },
    "rppg": {
        "roi": "edge.signals.roi.face_rgb",
        "skin": "chai_ngan_wide",
        "resample": "firmware_bridge.resample.resample_to_grid linear at fps",
        "method": "pos",
        "method_window_s": 1.6,
        "pulse_window_s": 10.0,
        "clean": {"lam": 100.0, "lo": 0.7, "hi": 3.5, "order": 4},
        "gap_fill": 0.0,
    },
    "tfr": {"kind": "stft", "shape": [32, 32], "lo": 0.7, "hi": 3.5, "norm": "zscore", "nperseg_s": 4.0,
            "overlap": 0.9},
    "contact": {
        "streams": ["ppg", "eda"],
        "rate_hz": 32.0,
        "n_samples": 1920,
        "resample": "firmware_bridge.resample.resample_to_grid linear",
        "antialias": True,
        "normalise": "zscore over valid samples",
        "invalid_value": 0.0,
        "min_valid_fraction": 0.5,
    },
    "contact_level": {
        "hr": "edge.signals.ppg.ppg_peaks + edge.signals.hrv.hrv mean_hr_bpm on the contact-rate PPG",
        "hr_scale_bpm": 100.0,
        "eda": "mean of edge.signals.eda.eda_decompose tonic",
        "eda_scale_us": 10.0,
        "min_beats": 10,
    },
}

#: Names of the arrays of an :class:`EmotionWindows`, in save order.
ARRAY_NAMES: tuple[str, ...] = (
    "face_clip", "tfr", "contact", "contact_level", "face_seq_crops", "valence", "arousal", "valence_high",
    "arousal_high", "subject", "trial", "face_present", "contact_present", "level_present",
)
_LABEL_THRESHOLD = 5.0


def window_shapes(preprocessing: dict | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-window shape and dtype of every array of :class:`EmotionWindows` (without N).

    Args:
        preprocessing: a :data:`PREPROCESSING`-like dict (default: :data:`PREPROCESSING`).

    Returns:
        dict name -> (shape tuple, numpy dtype).

    Raises:
        ConfigError: the dict lacks a needed key.
    """
    p = PREPROCESSING if preprocessing is None else preprocessing
    try:
        s = int(p["face"]["crop_size"])
        f_rows, t_cols = (int(v) for v in p["tfr"]["shape"])
        out = {
            "face_clip": ((int(p["face"]["clip_frames"]), s, s, 3), np.dtype(np.uint8)),
            "tfr": ((f_rows, t_cols), np.dtype(np.float32)),
            "contact": ((len(p["contact"]["streams"]), int(p["contact"]["n_samples"])), np.dtype(np.float32)),
            "contact_level": ((2,), np.dtype(np.float32)),
            "face_seq_crops": ((int(p["face"]["seq_frames"]), s, s, 3), np.dtype(np.uint8)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"preprocessing dict is missing or has a malformed key: {exc}") from exc
    scalars = {"valence": np.float32, "arousal": np.float32, "valence_high": np.int64, "arousal_high": np.int64,
               "subject": np.int64, "trial": np.int64, "face_present": np.bool_}
    out.update({k: ((), np.dtype(v)) for k, v in scalars.items()})
    out["contact_present"] = ((len(p["contact"]["streams"]),), np.dtype(np.bool_))
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
    a video with face boxes.

    Attributes:
        ppg, eda, ecg: :class:`Stream` or None (absent). ``ecg`` is used only for the heart-rate
            level when there is no PPG.
        frame_times_s: float64 (n_frames,) s, or None when there is no video.
        frame: function i -> uint8 (H, W, 3) BGR frame.
        face_box: function i -> (x, y, w, h) px or None (no face in frame i).
        frames_at: optional function (sorted indices) -> {i: frame}, for sources that read
            faster in order (video files); default calls ``frame`` per index.
        t_end_s: the end of the recording's window, s; None = inferred.
    """

    ppg: Stream | None = None
    eda: Stream | None = None
    ecg: Stream | None = None
    frame_times_s: np.ndarray | None = None
    frame: Callable[[int], np.ndarray] | None = None
    face_box: Callable[[int], Any] | None = None
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

def _face_inputs(session_like: Any, p: dict, t_end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Read the frames the window needs and hand them to :func:`edge.preprocess.face_inputs`,
    the function the runtime calls too."""
    from edge.face import crop_face
    from edge.preprocess import face_inputs, face_plan
    from edge.signals.roi import face_rgb

    pf, pr = p["face"], p["rppg"]
    size, margin = int(pf["crop_size"]), float(pf["crop_margin"])
    frame_t = getattr(session_like, "frame_times_s", None)
    if frame_t is None or len(frame_t) < 2 or getattr(session_like, "frame", None) is None \
            and getattr(session_like, "frames_at", None) is None:
        s = int(pf["crop_size"])
        f_rows, t_cols = (int(v) for v in p["tfr"]["shape"])
        return (np.zeros((int(pf["clip_frames"]), s, s, 3), np.uint8), np.zeros((f_rows, t_cols), np.float32),
                np.zeros((int(pf["seq_frames"]), s, s, 3), np.uint8), False)
    frame_t = np.asarray(frame_t, dtype=np.float64)
    plan = face_plan(frame_t, t_end, p)
    wanted = plan.wanted()
    frames_at = getattr(session_like, "frames_at", None)
    frames = frames_at(wanted) if frames_at is not None else {i: session_like.frame(i) for i in wanted}
    face_box = getattr(session_like, "face_box", None)
    boxes = {i: (face_box(i) if face_box is not None else None) for i in wanted}

    def crop(i: int):
        box, frame = (boxes.get(i), frames.get(i)) if i >= 0 else (None, None)
        return None if box is None or frame is None else crop_face(frame, box, size, margin)

    clip_crops = [crop(int(i)) for i in plan.clip_idx]
    seq_crops = [crop(int(i)) for i in plan.seq_idx]
    rgb = np.full((plan.pulse_idx.size, 3), np.nan)
    for k, i in enumerate(plan.pulse_idx):
        box, frame = boxes.get(int(i)), frames.get(int(i))
        if box is not None and frame is not None:
            rgb[k] = face_rgb(frame, box, skin=pr["skin"])
    fi = face_inputs(plan, frame_t, rgb, clip_crops, seq_crops, p)
    return fi.face_clip, fi.tfr, fi.face_seq_crops, fi.face_present


# -- the contact half ---------------------------------------------------------------------------

def _contact_inputs(session_like: Any, p: dict, t_end: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Resample the window's contact streams and hand them to :func:`edge.preprocess.contact_inputs`,
    the function the runtime calls too."""
    from edge.preprocess import contact_inputs, ecg_level_hr, resample_contact

    pc, pl = p["contact"], p["contact_level"]
    rate, n = float(pc["rate_hz"]), int(pc["n_samples"])
    grids: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in pc["streams"]:
        stream = getattr(session_like, name, None)
        if stream is None:
            continue
        t_s, values = np.asarray(stream.t_s, dtype=np.float64), np.asarray(stream.values, dtype=np.float64)
        if t_s.size < 2:
            continue
        grids[name] = resample_contact(t_s, values, t_end, p)
    ecg_hr = math.nan
    ppg_usable = "ppg" in grids and grids["ppg"][1].mean() >= float(pc["min_valid_fraction"])
    ecg = getattr(session_like, "ecg", None)
    if not ppg_usable and ecg is not None:
        # Only needed (and only paid for) when the PPG cannot give the heart-rate level.
        ecg_hr = ecg_level_hr(ecg.t_s, ecg.values, t_end - n / rate, t_end, int(pl["min_beats"]))
    eda_units = getattr(getattr(session_like, "eda", None), "units", None)
    ci = contact_inputs(grids, p, eda_units=eda_units, ecg_hr_bpm=ecg_hr)
    return ci.contact, ci.contact_present, ci.contact_level, ci.level_present


def windows_from_session(session_like: Any, preprocessing: dict | None = None, t_end_s: float | None = None) -> Window:
    """Cut the model inputs of one window from a recording, with the runtime's kernels.

    Args:
        session_like: a ``firmware_bridge.sim.SyntheticSession``, a :class:`Recording`, or any
            object with the same attributes: ``ppg``, ``eda`` (and optionally ``ecg``) with
            ``t_s``/``values`` (``units`` for EDA: "uS"), ``frame_times_s``, ``frame(i)`` (BGR
            uint8) and ``face_box(i)`` ((x, y, w, h) or None); a missing attribute = that
            source is absent.
        preprocessing: the settings (default :data:`PREPROCESSING`).
        t_end_s: end of the window, s (the window is ``[t_end_s - window_s, t_end_s)``);
            default: the recording's ``t_end_s``, a synthetic session's duration, or where the
            shortest present source ends.

    Returns:
        A :class:`Window`; absent sources give zeros with their ``*_present`` flag False.

    Raises:
        BadInputError: nothing to cut a window from, or malformed signals.
        ConfigError: a malformed preprocessing dict.

    Method: see the module docstring (POS rPPG: Wang et al. 2017, IEEE TBME 64(7); STFT
    image: Allen 1977; PPG peaks: Elgendi et al. 2013; HRV: Task Force 1996).
    """
    p = PREPROCESSING if preprocessing is None else preprocessing
    window_shapes(p)  # validates the dict's shape-defining keys
    t_end = float(t_end_s) if t_end_s is not None else _infer_t_end(session_like)
    if not math.isfinite(t_end):
        raise BadInputError(f"t_end_s must be finite, got {t_end}")
    clip, image, seq, face_ok = _face_inputs(session_like, p, t_end)
    rows, present, level, level_ok = _contact_inputs(session_like, p, t_end)
    return Window(clip, image, rows, level, seq, face_ok, present, level_ok)


# -- the dataset ----------------------------------------------------------------------------------

def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


@dataclass(eq=False)
class EmotionWindows:
    """N labelled windows: the contract's arrays plus presence flags and a JSON ``meta``.

    Arrays (N windows; shapes for the default :data:`PREPROCESSING`):
        face_clip uint8 (N, 8, 32, 32, 3); tfr float32 (N, 32, 32); contact float32
        (N, 2, 1920); contact_level float32 (N, 2); face_seq_crops uint8 (N, 120, 32, 32, 3);
        valence, arousal float32 (N,) self-reports 1-9; valence_high, arousal_high int64 (N,)
        (score > 5); subject, trial int64 (N,); face_present bool (N,); contact_present,
        level_present bool (N, 2).
    meta: dict with at least ``"preprocessing"``; also the generator or corpus config and seeds.

    Raises (on construction):
        BadInputError: an array of the wrong dtype or shape, inconsistent N, labels outside
            1-9 or ``*_high`` not equal to ``score > 5``.
    """

    face_clip: np.ndarray
    tfr: np.ndarray
    contact: np.ndarray
    contact_level: np.ndarray
    face_seq_crops: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    valence_high: np.ndarray
    arousal_high: np.ndarray
    subject: np.ndarray
    trial: np.ndarray
    face_present: np.ndarray
    contact_present: np.ndarray
    level_present: np.ndarray
    meta: dict = field(default_factory=lambda: {"preprocessing": copy.deepcopy(PREPROCESSING)})

    def __post_init__(self) -> None:
        if "preprocessing" not in self.meta:
            raise BadInputError("EmotionWindows.meta needs a 'preprocessing' dict")
        specs = window_shapes(self.meta["preprocessing"])
        n = None
        for name in ARRAY_NAMES:
            a = getattr(self, name)
            shape, dtype = specs[name]
            if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape[1:] != shape:
                got = (getattr(a, "dtype", type(a).__name__), getattr(a, "shape", None))
                want = ", ".join(map(str, shape))
                raise BadInputError(f"EmotionWindows.{name} must be {dtype} (N, {want}), got {got}")
            if n is None:
                n = a.shape[0]
            elif a.shape[0] != n:
                raise BadInputError(f"EmotionWindows.{name} has {a.shape[0]} windows, expected {n}")
        for name in ("valence", "arousal"):
            scores = getattr(self, name)
            if scores.size and not (np.all(np.isfinite(scores)) and scores.min() >= 1.0 and scores.max() <= 9.0):
                raise BadInputError(f"EmotionWindows.{name} scores must be within 1-9")
            if not np.array_equal(getattr(self, name + "_high"), (scores > _LABEL_THRESHOLD).astype(np.int64)):
                raise BadInputError(f"EmotionWindows.{name}_high must equal {name} > 5")

    def __len__(self) -> int:
        return int(self.valence.shape[0])

    @property
    def preprocessing(self) -> dict:
        """The preprocessing settings these windows were made with (a copy)."""
        return copy.deepcopy(self.meta["preprocessing"])

    @property
    def subjects(self) -> np.ndarray:
        """Sorted unique subject ids, int64."""
        return np.unique(self.subject)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name (views, not copies)."""
        return {name: getattr(self, name) for name in ARRAY_NAMES}

    def subset(self, idx) -> EmotionWindows:
        """The windows selected by ``idx`` (int indices or a bool mask of length N), copied;
        same meta.

        Raises:
            BadInputError: indices out of range or a mask of the wrong length.
        """
        sel = np.asarray(idx)
        if sel.dtype == np.bool_:
            if sel.shape != (len(self),):
                raise BadInputError(f"a mask must have shape ({len(self)},), got {sel.shape}")
        elif sel.size and (sel.dtype.kind not in "iu" or sel.min() < -len(self) or sel.max() >= len(self)):
            raise BadInputError(f"indices must be integers within 0..{len(self) - 1}")
        sel = sel.astype(np.int64) if sel.dtype != np.bool_ else sel
        return EmotionWindows(**{k: np.ascontiguousarray(v[sel]) for k, v in self.arrays().items()},
                              meta=copy.deepcopy(self.meta))

    @classmethod
    def from_windows(cls, windows: Sequence[Window], valence: Iterable[float], arousal: Iterable[float],
                     subject: Iterable[int], trial: Iterable[int], meta: dict) -> EmotionWindows:
        """Stack :class:`Window` objects with their labels.

        Raises:
            BadInputError: label lists of another length than ``windows``; see the class.
        """
        v = np.asarray(list(valence), dtype=np.float32)
        a = np.asarray(list(arousal), dtype=np.float32)
        specs = window_shapes(meta["preprocessing"])

        def stack(name: str) -> np.ndarray:
            shape, dtype = specs[name]
            if not windows:
                return np.zeros((0,) + shape, dtype)
            return np.stack([np.asarray(getattr(w, name), dtype=dtype) for w in windows])

        lengths = {len(windows), v.size, a.size}
        subj = np.asarray(list(subject), dtype=np.int64)
        tri = np.asarray(list(trial), dtype=np.int64)
        if len(lengths | {subj.size, tri.size}) != 1:
            raise BadInputError("windows, valence, arousal, subject and trial must have the same length")
        return cls(
            face_clip=stack("face_clip"), tfr=stack("tfr"), contact=stack("contact"),
            contact_level=stack("contact_level"), face_seq_crops=stack("face_seq_crops"),
            valence=v, arousal=a, valence_high=(v > _LABEL_THRESHOLD).astype(np.int64),
            arousal_high=(a > _LABEL_THRESHOLD).astype(np.int64), subject=subj, trial=tri,
            face_present=stack("face_present"), contact_present=stack("contact_present"),
            level_present=stack("level_present"), meta=meta,
        )

    def save(self, path: str | Path) -> Path:
        """Write all arrays and ``meta`` (as a JSON string) to one compressed ``.npz``.

        The file is written next to its destination and renamed, so a reader never sees half
        a file. Returns the path written (``.npz`` appended when missing).
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **self.arrays(), meta=np.array(json.dumps(_json_ready(self.meta))))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> EmotionWindows:
        """Read windows written by :meth:`save` (no pickle).

        Raises:
            BadInputError: the file is missing, not an npz, lacks an array or holds bad data
                (the message names the file).
        """
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"{path}: no such dataset file")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in (*ARRAY_NAMES, "meta") if k not in npz.files]
                if missing:
                    raise BadInputError(f"{path}: not an EmotionWindows file, missing {', '.join(missing)}")
                arrays = {k: npz[k] for k in ARRAY_NAMES}
                meta = json.loads(str(npz["meta"]))
        except BadInputError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError, EOFError) as exc:
            raise BadInputError(f"{path}: unreadable dataset file ({exc})") from exc
        try:
            return cls(**arrays, meta=meta)
        except BadInputError as exc:
            raise BadInputError(f"{path}: {exc}") from exc


# -- subject-independent splits ------------------------------------------------------------------

def loso_splits(subjects) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-subject-out splits.

    Args:
        subjects: int (N,) subject id of each window.

    Returns:
        One ``(train_idx, test_idx)`` pair of int64 index arrays per subject, in ascending
        subject order; the test set is exactly that subject's windows.

    Raises:
        BadInputError: not 1-D or fewer than two subjects.
    """
    s = np.asarray(subjects)
    if s.ndim != 1:
        raise BadInputError(f"subjects must be 1-D, got shape {s.shape}")
    ids = np.unique(s)
    if ids.size < 2:
        raise BadInputError(f"leave-one-subject-out needs at least 2 subjects, got {ids.size}")
    return [(np.nonzero(s != u)[0].astype(np.int64), np.nonzero(s == u)[0].astype(np.int64)) for u in ids]


def kfold_subject_splits(subjects, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Subject-wise k-fold splits: every subject's windows are in exactly one test fold.

    Subjects are shuffled with ``numpy.random.default_rng(seed)`` and dealt into k groups
    whose sizes differ by at most one.

    Args:
        subjects: int (N,) subject id of each window.
        k: number of folds, 2 <= k <= number of subjects.
        seed: shuffling seed.

    Returns:
        k ``(train_idx, test_idx)`` pairs of int64 index arrays.

    Raises:
        BadInputError: subjects not 1-D. ConfigError: k out of range.
    """
    s = np.asarray(subjects)
    if s.ndim != 1:
        raise BadInputError(f"subjects must be 1-D, got shape {s.shape}")
    ids = np.unique(s)
    if isinstance(k, bool) or int(k) != k or not 2 <= int(k) <= ids.size:
        raise ConfigError(f"k must be an integer within 2..{ids.size} (the number of subjects), got {k!r}")
    order = np.random.default_rng(seed).permutation(ids)
    folds = np.array_split(order, int(k))
    return [(np.nonzero(~np.isin(s, f))[0].astype(np.int64), np.nonzero(np.isin(s, f))[0].astype(np.int64))
            for f in folds]
