"""Labelled window sets for training: the dataset container and subject-independent splits.

A window's model inputs are cut from a recording by :func:`edge.windows.windows_from_session`
with the torch-free :mod:`edge.preprocess` functions that the device runtime calls too, and
every setting comes from one :class:`edge.spec.Preprocessing` record (:data:`edge.spec.DEFAULT`
unless a model asks for other settings). This module re-exports those names for the training
side and adds :class:`EmotionWindows` (N windows with labels and subjects, saved as one
``.npz``, its record kept in ``meta``) and the splits :func:`loso_splits` and
:func:`kfold_subject_splits`. See docs/DATASET.md.
"""
from __future__ import annotations

import copy
import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.preprocess import Window
from edge.spec import DEFAULT, Preprocessing
from edge.windows import Recording, Stream, window_shapes, windows_from_session
from firmware_bridge.errors import BadInputError, ConfigError

__all__ = [
    "ARRAY_NAMES",
    "EmotionWindows",
    "Recording",
    "Stream",
    "Window",
    "kfold_subject_splits",
    "loso_splits",
    "window_shapes",
    "windows_from_session",
]

#: Names of the arrays of an :class:`EmotionWindows`, in save order.
ARRAY_NAMES: tuple[str, ...] = (
    "face_clip", "tfr", "contact", "contact_level", "face_seq_crops", "valence", "arousal", "valence_high",
    "arousal_high", "subject", "trial", "face_present", "contact_present", "level_present",
)
_LABEL_THRESHOLD = 5.0


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

    Arrays (N windows; shapes for :data:`edge.spec.DEFAULT`):
        face_clip uint8 (N, 8, 32, 32, 3); tfr float32 (N, 32, 32); contact float32
        (N, 2, 1920); contact_level float32 (N, 2); face_seq_crops uint8 (N, 120, 32, 32, 3);
        valence, arousal float32 (N,) self-reports 1-9; valence_high, arousal_high int64 (N,)
        (score > 5); subject, trial int64 (N,); face_present bool (N,); contact_present,
        level_present bool (N, 2).
    meta: dict with at least ``"preprocessing"`` (the record's JSON object,
        :meth:`edge.spec.Preprocessing.to_dict`); also the generator or corpus config and seeds.

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
    meta: dict = field(default_factory=lambda: {"preprocessing": DEFAULT.to_dict()})

    def __post_init__(self) -> None:
        if "preprocessing" not in self.meta:
            raise BadInputError("EmotionWindows.meta needs a 'preprocessing' dict")
        specs = window_shapes(Preprocessing.from_dict(self.meta["preprocessing"]))
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
    def preprocessing(self) -> Preprocessing:
        """The preprocessing record these windows were made with."""
        return Preprocessing.from_dict(self.meta["preprocessing"])

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
        specs = window_shapes(Preprocessing.from_dict(meta["preprocessing"]))

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
