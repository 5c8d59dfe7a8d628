"""Face detection for the rPPG front end: OpenCV's Haar cascade on a downscaled frame.

The Viola-Jones detector (Viola & Jones 2001, "Rapid object detection using a boosted cascade
of simple features", CVPR; Lienhart & Maydt 2002 extended features, as in OpenCV's
``haarcascade_frontalface_default.xml``) is cheap, needs no model download and is good
enough to place the forehead and cheek regions. Full 640x480 detection costs ~50 ms; at
~320 px wide it is about 4x faster, and a face is still far above the cascade's 24 px
minimum. :mod:`edge.tracker` follows the face between detections.

**Contrast.** The cascade normalises each window by its own mean and variance, so a face that
is uniformly darker is no harder; but a dark face in a bright surround (a light wall, light
hair, a window behind) puts most of a window's variance in the surround, and the face's own
features (eyes darker than cheeks, a brighter nose bridge) fall below the cascade's
thresholds. Measured on the synthetic generator's Monk tones 8-10 (``bench/skin_tones.py
detect``), the cascade misses most faces at tone 10. ``contrast="clahe"`` runs contrast-limited
adaptive histogram equalisation (Zuiderveld 1994, "Contrast limited adaptive histogram
equalization", Graphics Gems IV; OpenCV's ``createCLAHE``, clip limit 2, a 4x4 grid of tiles
on the detection image) on the downscaled grey image and searches it again when the grey image
itself gives no face: each tile's contrast is stretched on its own, so a dark face's features
regain their contrast while the clip limit keeps flat wall or noise from being blown up. Only a
retry: CLAHE on every image lost faces that fill the image (1 in 20 photos of the real faces
collection: 407 of 557 found instead of 502, its tiles cut a close face into quarters); as a
retry it adds faces and never loses one. Global equalisation was tried and rejected: it lost
faces at tone 8 and raised false positives on textured backgrounds. The setting is part
of the preprocessing record (``face.tracker.contrast``), because it changes which boxes a
bundle's data were computed on.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

CASCADE_NAME = "haarcascade_frontalface_default.xml"
#: Contrast normalisations of the detection image: ``"none"`` (the grey image as it is) or
#: ``"clahe"`` (the grey image, and where it gives no face its CLAHE; see the module docstring).
CONTRASTS = ("none", "clahe")
# CLAHE on the detection image: clip limit (times the mean tile histogram height) and tiles per side.
_CLAHE_CLIP = 2.0
_CLAHE_TILES = 4


def _cascade_path() -> Path:
    root = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not root:
        raise MissingDependencyError(
            "this OpenCV build has no cv2.data.haarcascades; install opencv-python-headless<5"
        )
    path = Path(root) / CASCADE_NAME
    if not path.is_file():
        raise MissingDependencyError(
            f"OpenCV's Haar cascade {CASCADE_NAME} is missing from {root}; "
            "reinstall opencv-python-headless<5, which bundles it"
        )
    return path


class HaarFaceDetector:
    """Finds frontal faces in BGR frames with OpenCV's bundled Haar cascade.

    Args:
        detect_width: frames wider than this are downscaled to this width (px) before
            detection; boxes are mapped back to full resolution.
        min_face_frac: smallest face to report, as a fraction of the frame's shorter side.
        scale_factor: image-pyramid step of ``CascadeClassifier.detectMultiScale`` (> 1).
        min_neighbors: overlapping raw hits needed to keep a detection (higher: fewer false
            positives, more misses).
        contrast: ``"none"`` or ``"clahe"``: contrast normalisation of the downscaled grey image
            before the cascade (:data:`CONTRASTS`, module docstring).

    Raises:
        ConfigError: out-of-range settings.
        MissingDependencyError: the cascade file is not shipped with the installed OpenCV.
    """

    def __init__(
        self,
        detect_width: int = 320,
        min_face_frac: float = 0.12,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        contrast: str = "none",
    ) -> None:
        if int(detect_width) < 48:
            raise ConfigError(f"detect_width must be >= 48 px, got {detect_width}")
        if not (0.0 < float(min_face_frac) < 1.0):
            raise ConfigError(f"min_face_frac must be in (0, 1), got {min_face_frac}")
        if not float(scale_factor) > 1.0:
            raise ConfigError(f"scale_factor must be > 1, got {scale_factor}")
        if int(min_neighbors) < 0:
            raise ConfigError(f"min_neighbors must be >= 0, got {min_neighbors}")
        if contrast not in CONTRASTS:
            raise ConfigError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
        self.contrast = contrast
        self._clahe = cv2.createCLAHE(clipLimit=_CLAHE_CLIP, tileGridSize=(_CLAHE_TILES, _CLAHE_TILES)) \
            if contrast == "clahe" else None
        self.detect_width = int(detect_width)
        self.min_face_frac = float(min_face_frac)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        path = _cascade_path()
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise MissingDependencyError(f"OpenCV could not load the Haar cascade {path}")

    def detect(self, frame_bgr: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes in a frame, largest first.

        Args:
            frame_bgr: uint8 (H, W, 3) BGR image (or (H, W) grayscale).

        Returns:
            list of (x, y, w, h) int boxes in full-resolution pixels, sorted by area,
            largest first; empty when no face is found.

        Raises:
            BadInputError: frame not uint8 (H, W, 3) or (H, W).
        """
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.dtype != np.uint8:
            raise BadInputError("frame_bgr must be a uint8 numpy array")
        if frame_bgr.ndim == 3 and frame_bgr.shape[2] == 3:
            gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        elif frame_bgr.ndim == 2:
            gray = frame_bgr
        else:
            raise BadInputError(
                f"frame_bgr must be (H, W, 3) BGR or (H, W), got {frame_bgr.shape}"
            )
        height, width = gray.shape
        scale = min(1.0, self.detect_width / width)
        if scale < 1.0:
            size = (self.detect_width, max(1, round(height * scale)))
            small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        else:
            small = gray
        # No global equalisation: the cascade normalises each window's variance itself, and
        # equalising the whole frame raised false positives on textured backgrounds. CLAHE is
        # local, clipped and only a retry (module docstring).
        min_side = max(24, int(round(self.min_face_frac * min(small.shape))))
        hits = self._cascade.detectMultiScale(
            small,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        if self._clahe is not None and not len(hits):
            hits = self._cascade.detectMultiScale(
                self._clahe.apply(np.ascontiguousarray(small)),
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(min_side, min_side),
            )
        boxes = [
            (
                int(round(x / scale)),
                int(round(y / scale)),
                int(round(w / scale)),
                int(round(h / scale)),
            )
            for x, y, w, h in (hits if len(hits) else [])
        ]
        boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
        return boxes


def crop_face(frame_bgr: np.ndarray, box, size: int = 32, margin: float = 0.15) -> np.ndarray:
    """The model's face crop: a square around a face box, resized, in RGB.

    The square is centred on the box centre, its side ``max(w, h) * (1 + 2 * margin)``
    rounded to whole pixels. Where it extends past the frame it is padded with black (zeros),
    so the face keeps its place and scale in the crop near the border. The square is then
    shrunk (or enlarged) to ``size`` x ``size`` with ``cv2.INTER_AREA`` (pixel-area averaging,
    which does not alias when shrinking) and converted from BGR to RGB. Training
    (``export.data``) and the device both call this function, so both see the same crop.

    Args:
        frame_bgr: uint8 (H, W, 3) BGR frame.
        box: face box (x, y, w, h) in frame pixels (e.g. :meth:`HaarFaceDetector.detect`), w and
            h > 0; it may extend past the frame.
        size: side of the output, pixels (>= 1).
        margin: context added on each side, as a fraction of the box's longer side (>= 0).

    Returns:
        uint8 (size, size, 3) RGB crop (a new array).

    Raises:
        BadInputError: frame not uint8 (H, W, 3); box not 4 finite numbers with w, h > 0.
        ConfigError: size < 1 or margin negative or not finite.

    Method: no paper of its own; a plain square context crop with a fixed relative margin
    around the detector's box (so the crop is invariant to the box's aspect ratio), area
    resampling by OpenCV's ``INTER_AREA``.
    """
    if not isinstance(frame_bgr, np.ndarray) or frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 \
            or frame_bgr.shape[2] != 3:
        shape = getattr(frame_bgr, "shape", None)
        raise BadInputError(f"frame_bgr must be a uint8 (H, W, 3) BGR array, got {shape}")
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"box must be 4 numbers (x, y, w, h), got {box!r}") from exc
    if not all(np.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise BadInputError(f"box must be finite with w, h > 0, got {box!r}")
    if isinstance(size, bool) or int(size) != size or int(size) < 1:
        raise ConfigError(f"size must be an integer >= 1, got {size!r}")
    margin = float(margin)
    if not (np.isfinite(margin) and margin >= 0):
        raise ConfigError(f"margin must be a finite number >= 0, got {margin!r}")
    size = int(size)
    side = max(1, int(round(max(w, h) * (1.0 + 2.0 * margin))))
    x0 = int(round(x + w / 2.0 - side / 2.0))
    y0 = int(round(y + h / 2.0 - side / 2.0))
    height, width = frame_bgr.shape[:2]
    # Copy the part of the square inside the frame into a black square: padding, not clamping,
    # so a face at the border is not stretched.
    square = np.zeros((side, side, 3), np.uint8)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + side, width), min(y0 + side, height)
    if fx1 > fx0 and fy1 > fy0:
        square[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0] = frame_bgr[fy0:fy1, fx0:fx1]
    if side != size:
        square = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(square[:, :, ::-1])
