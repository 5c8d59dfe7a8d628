"""Labelled still face photos as training crops, split by identity.

Reads a folder laid out like ``../shared/data/faces``: ``labels.csv`` (``file,expression,identity``)
and ``images/``. Every photo is cut to the model's face crop by one swappable function
(:func:`default_crop_fn`: :func:`edge.stills.still_face`, so training, scoring and the device
cut faces the same way) and cached as uint8 RGB. Identities are split into test / train by
:func:`edge.affect.identity_split` (test identities are never read for training or tuning), and
a validation subset of the *train* identities is held out for model choice by the same hash
with a different salt.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.affect import AROUSAL_OF, EXPRESSIONS, VALENCE_OF, identity_split
from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)

#: A crop function: uint8 BGR (H, W, 3) photo, crop side in pixels -> (uint8 (side, side, 3) RGB
#: crop, whether a face was detected).
CropFn = Callable[[np.ndarray, int], tuple[np.ndarray, bool]]

VAL_SALT = "emofuse-faces-val:"


#: Side of the centred box used when the detector finds no face, as a fraction of the photo's
#: shorter side: the median Haar box on these 128 px photos is about 107 px.
FALLBACK_BOX_FRAC = 0.84


def centred_crop(image_bgr: np.ndarray, size: int, margin: float = 0.15) -> np.ndarray:
    """:func:`edge.face.crop_face` of a centred square box of :data:`FALLBACK_BOX_FRAC` of the
    photo's shorter side (the photos are face-centred): uint8 (size, size, 3) RGB."""
    from edge.face import crop_face

    h, w = image_bgr.shape[:2]
    side = FALLBACK_BOX_FRAC * min(h, w)
    return crop_face(image_bgr, ((w - side) / 2, (h - side) / 2, side, side), size=size, margin=margin)


class StillCropper:
    """The default crop: :func:`edge.stills.still_face` with the default bundle's preprocessing
    (the device's face box and :func:`edge.face.crop_face` at its crop margin), so training,
    ``emofuse faces`` and the device cut faces the same way. Photos without a detected face get
    :func:`centred_crop` and ``detected = False``; callers decide whether to use them.

    ``__call__(image_bgr, size) -> (uint8 (size, size, 3) RGB crop, detected: bool)``.
    """

    name = "edge.stills.still_face"

    def __init__(self, preprocessing: dict | None = None):
        self.preprocessing = copy.deepcopy(preprocessing if preprocessing is not None else _default_preprocessing())
        self.margin = float(self.preprocessing["face"]["crop_margin"])
        self._settings: dict[int, object] = {}
        self._trackers: dict[int, object] = {}

    def settings(self, size: int):
        from edge.stills import still_settings

        if size not in self._settings:
            p = copy.deepcopy(self.preprocessing)
            p["face"]["crop_size"] = int(size)
            self._settings[size] = still_settings(p)
        return self._settings[size]

    def __call__(self, image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, bool]:
        from edge.preprocess import face_crop
        from edge.tracker import FaceTracker

        settings = self.settings(size)
        p = settings.preprocessing
        # still_face builds a fresh FaceTracker per photo (two cascade loads, ~3x the cost of
        # the detection); a reset tracker is the same state, so keep one and reset it.
        if size not in self._trackers:
            self._trackers[size] = FaceTracker(**p.face.tracker_settings)
        tracker = self._trackers[size]
        tracker.reset()
        box = tracker.update(image_bgr).box
        if box is not None:
            return face_crop(image_bgr, tuple(float(v) for v in box), p), True
        return centred_crop(image_bgr, size, self.margin), False


def _default_preprocessing() -> dict:
    """The default bundle's ``preprocessing`` dict (edge/default_bundle/manifest.json)."""
    path = Path(__file__).resolve().parents[2] / "edge" / "default_bundle" / "manifest.json"
    try:
        return json.loads(path.read_text())["preprocessing"]
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot read the default bundle's preprocessing from {path}: {exc}") from exc


def default_crop_fn() -> tuple[CropFn, str]:
    """(crop function, its name): :class:`StillCropper`."""
    c = StillCropper()
    return c, f"{c.name} (margin {c.margin})"


@dataclass(frozen=True)
class FaceSet:
    """Crops and labels of a photo folder.

    Attributes:
        crops: uint8 (N, S, S, 3) RGB face crops.
        expression: int64 (N,) index into :data:`edge.affect.EXPRESSIONS`.
        identity: str array (N,).
        files: str array (N,) file names relative to ``images/``.
        split: str array (N,) ``"train"``, ``"val"`` or ``"test"``.
        colour: bool (N,) the photo has colour (not stored as one channel / equal channels).
        detected: bool (N,) the Haar detector found the face (else a centred fallback crop;
            ``emofuse faces`` leaves such photos out).
        crop_fn: name of the crop function used.
    """

    crops: np.ndarray
    expression: np.ndarray
    identity: np.ndarray
    files: np.ndarray
    split: np.ndarray
    colour: np.ndarray
    detected: np.ndarray
    crop_fn: str

    def subset(self, mask: np.ndarray) -> "FaceSet":
        return FaceSet(self.crops[mask], self.expression[mask], self.identity[mask], self.files[mask],
                       self.split[mask], self.colour[mask], self.detected[mask], self.crop_fn)

    def __len__(self) -> int:
        return int(self.expression.shape[0])

    @property
    def valence(self) -> np.ndarray:
        """int64 (N,): 1 high, 0 low, -1 left out (:data:`edge.affect.VALENCE_OF`)."""
        return _axis(self.expression, VALENCE_OF)

    @property
    def arousal(self) -> np.ndarray:
        """int64 (N,): 1 high, 0 low, -1 left out (:data:`edge.affect.AROUSAL_OF`)."""
        return _axis(self.expression, AROUSAL_OF)


def _axis(expr: np.ndarray, mapping: dict) -> np.ndarray:
    lut = np.array([-1 if mapping[e] is None else mapping[e] for e in EXPRESSIONS], np.int64)
    return lut[expr]


def assign_split(identity: str, test_fraction: float = 0.2, val_fraction: float = 0.1) -> str:
    """``"test"`` (:func:`edge.affect.identity_split`), else ``"val"`` for a salted-hash share
    ``val_fraction`` of the train identities, else ``"train"``. Depends on the identity only.

    Raises:
        ConfigError: a fraction outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if identity_split(identity, test_fraction) == "test":
        return "test"
    digest = hashlib.sha256((VAL_SALT + identity).encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction else "train"


def read_labels(root) -> list[dict]:
    """Rows of ``root/labels.csv`` with ``file``, ``expression`` (lower-cased), ``identity``.

    Raises:
        BadInputError: no labels.csv, missing columns or an unknown expression.
    """
    path = Path(root) / "labels.csv"
    if not path.is_file():
        raise BadInputError(f"{path} does not exist (expected a faces folder with labels.csv and images/)")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "expression", "identity"} <= set(rows[0]):
        raise BadInputError(f"{path} must have columns file,expression,identity")
    for r in rows:
        r["expression"] = r["expression"].strip().lower()
        if r["expression"] not in EXPRESSIONS:
            raise BadInputError(f"{path}: unknown expression {r['expression']!r} for {r['file']}")
    return rows


def load_faces(root, size: int = 64, *, crop_fn: CropFn | None = None, cache: str | Path | None = None,
               test_fraction: float = 0.2, val_fraction: float = 0.1, limit: int | None = None,
               files: list[str] | None = None) -> FaceSet:
    """Every labelled photo of ``root`` as a face crop.

    Args:
        root: folder with ``labels.csv`` and ``images/``.
        size: crop side in pixels (the encoder's ``size``; 64 for ``small``).
        crop_fn: photo -> (crop, detected); :func:`default_crop_fn` when None.
        cache: an ``.npz`` path to reuse crops from (keyed by crop function, size and files).
        test_fraction, val_fraction: as in :func:`assign_split`.
        limit: keep only the first ``limit`` rows (tests).
        files: keep only these file names (tests).
    Returns:
        a :class:`FaceSet`.
    Raises:
        BadInputError: missing folder, labels or an unreadable image.
    """
    from edge.stills import read_image

    root = Path(root)
    rows = read_labels(root)
    if files is not None:
        keep = set(files)
        rows = [r for r in rows if r["file"] in keep]
    if limit is not None:
        rows = rows[:limit]
    name = None
    if crop_fn is None:
        crop_fn, name = default_crop_fn()
    name = name or getattr(crop_fn, "__qualname__", "custom")
    names = np.array([r["file"] for r in rows])
    key = hashlib.sha256(("|".join([name, str(size)] + list(names))).encode()).hexdigest()[:16]
    crops = colour = detected = None
    if cache is not None and Path(cache).is_file():
        blob = np.load(cache)
        if str(blob["key"]) == key:
            crops, colour, detected = blob["crops"], blob["colour"], blob["detected"]
    if crops is None:
        crops = np.zeros((len(rows), size, size, 3), np.uint8)
        colour = np.zeros(len(rows), bool)
        detected = np.zeros(len(rows), bool)
        for i, r in enumerate(rows):
            img = read_image(root / "images" / r["file"])
            colour[i] = bool(np.abs(img.astype(np.int16) - img[..., :1]).max() > 8)
            crops[i], detected[i] = crop_fn(img, size)
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, key=key, crops=crops, colour=colour, detected=detected)
    expr = np.array([EXPRESSIONS.index(r["expression"]) for r in rows], np.int64)
    ident = np.array([r["identity"] for r in rows])
    split = np.array([assign_split(i, test_fraction, val_fraction) for i in ident])
    return FaceSet(crops, expr, ident, names, split, colour, detected, name)


def sampling_weights(expression: np.ndarray, identity: np.ndarray, class_power: float = 0.5) -> np.ndarray:
    """Per-image sampling probabilities, float64 (N,) summing to 1.

    Each identity gets one share within its class (an identity's images split it), and a
    class's total mass is proportional to (number of its identities) ** ``class_power``:
    0 samples every class equally (rare classes of a handful of photos repeated very often),
    1 follows the identity counts, 0.5 (default) sits between - the square-root re-balancing
    of Mahajan et al. 2018 ("Exploring the limits of weakly supervised pretraining", ECCV).
    """
    expression = np.asarray(expression)
    identity = np.asarray(identity)
    w = np.zeros(len(expression), np.float64)
    for c in np.unique(expression):
        in_c = expression == c
        ids, inv, counts = np.unique(identity[in_c], return_inverse=True, return_counts=True)
        per_img = 1.0 / counts[inv]  # each identity sums to 1
        w[in_c] = per_img / len(ids) * len(ids) ** class_power
    return w / w.sum()
