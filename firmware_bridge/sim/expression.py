"""Facial expression and per-subject appearance for the synthetic face.

The generator animates one photograph (see :mod:`firmware_bridge.sim.face`). Two things make it
usable for emotion data:

- **Expression**: smooth geometric warps of the photo, placed at its landmarks, in the spirit
  of the action units of the Facial Action Coding System (Ekman & Friesen 1978, "Facial Action
  Coding System", Consulting Psychologists Press). A *valence* intensity in [-1, 1] drives the
  mouth corners up and out with a cheek raise and a slight narrowing of the eyes (AU12 + AU6,
  a Duchenne smile) when positive, and the mouth corners down (AU15), the lips pressed (AU24)
  and the brows lowered and drawn together (AU4) when negative. An *arousal* intensity in
  [-1, 1] drives the brows up (AU1 + AU2) and the eyes wider (AU5) when positive, the lids
  lower when negative. That valence shows mostly in the mouth and arousal mostly in brows
  and eyes follows the facial EMG findings of Larsen, Norris & Cacioppo 2003 ("Effects of
  positive and negative affect on electromyographic activity over zygomaticus major and
  corrugator supercilii", Psychophysiology 40:776-785) and Lang et al. 1993 ("Looking at pictures: affective, facial,
  visceral, and behavioral reactions", Psychophysiology 30:261-273).
- **Appearance**: per-subject skin tone, background tint, face proportions and small
  landmark offsets (:class:`FaceAppearance`), so that simulated subjects look different.

Each warp is a sum of Gaussian-weighted displacement fields (a radial-basis deformation;
Arad et al. 1994, "Image warping by radial basis functions: application to facial
expressions", CVGIP 56:161-172) evaluated on the frame grid and applied by backward mapping
(``cv2.remap``, bilinear). The displacements stay well below the Gaussian widths, so sampling
the field at the output pixel instead of inverting it is accurate to a small fraction of a
pixel.

This module is in the bottom layer: NumPy and OpenCV only.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import cv2
import numpy as np

from firmware_bridge.errors import ConfigError

__all__ = [
    "EXPRESSION_LIMIT",
    "ExpressionRig",
    "FaceAppearance",
    "PHOTO_LANDMARKS",
    "expression_trajectory",
]

#: Largest effective intensity (expressivity x valence or arousal) the rig renders; beyond it
#: the warps would fold the image.
EXPRESSION_LIMIT = 1.5

# Landmarks of the unscaled 512x512 astronaut photo, (x, y) px, read off the image once. The
# photo already smiles (teeth showing): its own expression is the rig's zero, and a negative
# valence pulls the corners down from there.
PHOTO_LANDMARKS: dict[str, tuple[float, float]] = {
    "eye_left": (204.0, 101.0),
    "eye_right": (246.0, 102.5),
    "brow_left": (202.0, 91.0),
    "brow_right": (246.0, 92.5),
    "brow_inner_left": (213.0, 93.0),
    "brow_inner_right": (236.0, 94.0),
    "mouth_left": (202.5, 141.0),
    "mouth_right": (246.0, 141.0),
    "mouth_center": (224.0, 147.0),
    "cheek_left": (197.0, 127.0),
    "cheek_right": (251.0, 127.0),
}
# Face ellipse of the photo ((cx, cy), (semi-axis x, semi-axis y)), shared with face.py's skin
# region, grown so a skin-tone change also covers the jaw and the ears' edge.
_TONE_ELLIPSE = ((225.0, 128.0), (48.0, 64.0))

# Deformation components at unit intensity, photo px: ("shift", landmark, sigma_x, sigma_y,
# dx, dy) moves the neighbourhood of a landmark; ("stretch", landmark, sigma_x, sigma_y,
# factor) scales it vertically about the landmark (factor 0.3 = 30 % taller: an eye opening).
# "+side" negates dx on the right half so that "out" and "in" are mirrored.
_Component = tuple
_SMILE: tuple[_Component, ...] = (
    ("shift", "mouth_left", 7.0, 6.0, -3.0, -7.0),
    ("shift", "mouth_right", 7.0, 6.0, 3.0, -7.0),
    ("shift", "cheek_left", 10.0, 8.0, 0.0, -3.0),
    ("shift", "cheek_right", 10.0, 8.0, 0.0, -3.0),
    ("stretch", "mouth_center", 14.0, 7.0, 0.25),
    ("stretch", "eye_left", 8.0, 4.5, -0.22),
    ("stretch", "eye_right", 8.0, 4.5, -0.22),
)
_FROWN: tuple[_Component, ...] = (
    ("shift", "mouth_left", 7.0, 6.0, 1.5, 8.0),
    ("shift", "mouth_right", 7.0, 6.0, -1.5, 8.0),
    # Lips pressed together: the photo's open smile closes (AU24).
    ("stretch", "mouth_center", 16.0, 7.0, -1.1),
    ("shift", "brow_inner_left", 6.0, 5.0, 3.0, 3.0),
    ("shift", "brow_inner_right", 6.0, 5.0, -3.0, 3.0),
    ("shift", "brow_left", 9.0, 5.0, 0.0, 2.0),
    ("shift", "brow_right", 9.0, 5.0, 0.0, 2.0),
)
_BROW_RAISE: tuple[_Component, ...] = (
    ("shift", "brow_left", 10.0, 6.0, 0.0, -4.0),
    ("shift", "brow_right", 10.0, 6.0, 0.0, -4.0),
)
_EYE_OPEN: tuple[_Component, ...] = (
    ("stretch", "eye_left", 8.0, 5.0, 0.35),
    ("stretch", "eye_right", 8.0, 5.0, 0.35),
)
# Static geometry of FaceAppearance at unit setting.
_EYE_SPACING: tuple[_Component, ...] = (
    ("shift", "eye_left", 9.0, 7.0, -2.5, 0.0),
    ("shift", "eye_right", 9.0, 7.0, 2.5, 0.0),
)
_MOUTH_WIDTH: tuple[_Component, ...] = (
    ("shift", "mouth_left", 7.0, 6.0, -2.5, 0.0),
    ("shift", "mouth_right", 7.0, 6.0, 2.5, 0.0),
)


@dataclass(frozen=True)
class FaceAppearance:
    """How one simulated subject looks: the knobs that make subjects different.

    The defaults reproduce the plain photo exactly.

    Attributes:
        skin_tone_rgb: gains (R, G, B) on the face and neck, each 0.7-1.3 (1 = the photo).
            Keep them within about +-10 % of one another: a strong tint moves skin out of the
            YCrCb skin rule that the rPPG ROI uses.
        wall_tone_rgb: gains (R, G, B) on the background wall, each 0.5-1.5.
        width_scale, height_scale: stretch of the face (the whole photo) horizontally and
            vertically, 0.8-1.25; the face box stretches with it.
        eye_spacing: eyes moved apart (> 0) or together (< 0), -1..1 (1 = 2.5 photo px each,
            about 2.6 % of the face-box width).
        mouth_width: mouth corners moved out (> 0) or in (< 0), -1..1 (1 = 2.5 photo px).
        brow_height: brows raised (> 0) or lowered (< 0) at rest, -1..1 (1 = 4 photo px).

    Raises (on construction):
        ConfigError: a knob out of range or malformed.
    """

    skin_tone_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    wall_tone_rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    width_scale: float = 1.0
    height_scale: float = 1.0
    eye_spacing: float = 0.0
    mouth_width: float = 0.0
    brow_height: float = 0.0

    def __post_init__(self) -> None:
        try:
            for name in ("skin_tone_rgb", "wall_tone_rgb"):
                value = tuple(float(v) for v in getattr(self, name))
                if len(value) != 3:
                    raise ConfigError(f"FaceAppearance.{name} must be 3 gains (R, G, B), got {value}")
                object.__setattr__(self, name, value)
            for name in ("width_scale", "height_scale", "eye_spacing", "mouth_width", "brow_height"):
                object.__setattr__(self, name, float(getattr(self, name)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"FaceAppearance: malformed setting ({exc})") from exc
        limits = {
            "skin_tone_rgb": (0.7, 1.3),
            "wall_tone_rgb": (0.5, 1.5),
            "width_scale": (0.8, 1.25),
            "height_scale": (0.8, 1.25),
            "eye_spacing": (-1.0, 1.0),
            "mouth_width": (-1.0, 1.0),
            "brow_height": (-1.0, 1.0),
        }
        for name, (lo, hi) in limits.items():
            values = np.atleast_1d(np.asarray(getattr(self, name), dtype=np.float64))
            if not (np.all(np.isfinite(values)) and np.all(values >= lo) and np.all(values <= hi)):
                raise ConfigError(f"FaceAppearance.{name} must be within {lo}-{hi}, got {getattr(self, name)}")

    @property
    def is_default(self) -> bool:
        """True when every knob is at its default (the plain photo)."""
        return all(getattr(self, f.name) == f.default for f in fields(self))

    @property
    def has_static_warp(self) -> bool:
        """True when a landmark offset (eyes, mouth, brows) is set."""
        return bool(self.eye_spacing or self.mouth_width or self.brow_height)


def expression_trajectory(spec: float | Sequence[tuple[float, float]],
                          name: str = "expression") -> Callable[[np.ndarray], np.ndarray]:
    """An expression intensity as a function of time: a constant or knots.

    Args:
        spec: a constant in [-1, 1], or knots ``((t_s, value), ...)`` with strictly increasing
            t_s and values in [-1, 1], interpolated linearly and held beyond the ends.
        name: the setting's name, for error messages.

    Returns:
        A function mapping times (s, array-like) to intensities (float64, same shape).

    Raises:
        ConfigError: a value outside [-1, 1], non-finite, knots malformed or not increasing.
    """
    if np.ndim(spec) == 0:
        try:
            value = float(spec)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name} must be a number or knots ((t_s, value), ...), got {spec!r}") from exc
        if not (np.isfinite(value) and -1.0 <= value <= 1.0):
            raise ConfigError(f"{name} must be within -1..1, got {value}")
        return lambda t: np.full(np.shape(t), value)
    try:
        knots = np.asarray(spec, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} knots must be ((t_s, value), ...), got {spec!r}") from exc
    if knots.ndim != 2 or knots.shape[1] != 2 or knots.shape[0] < 1 or not np.all(np.isfinite(knots)):
        raise ConfigError(f"{name} knots must be ((t_s, value), ...) and finite, got shape {knots.shape}")
    if np.any(np.diff(knots[:, 0]) <= 0):
        raise ConfigError(f"{name} knot times must be strictly increasing")
    if np.any(np.abs(knots[:, 1]) > 1.0):
        raise ConfigError(f"{name} knot values must be within -1..1")
    tk, vk = knots[:, 0].copy(), knots[:, 1].copy()
    return lambda t: np.interp(np.asarray(t, dtype=np.float64), tk, vk)


class ExpressionRig:
    """Displacement fields of the expressions on one frame layout.

    Args:
        size: frame (width, height) px.
        origin: frame position (x, y) px of the unscaled photo's pixel (0, 0).
        scale: (kx, ky) frame px per photo px.
        landmarks: the photo's landmarks, name -> (x, y) photo px (default: the astronaut's,
            :data:`PHOTO_LANDMARKS`); every name of :data:`PHOTO_LANDMARKS` is needed.
        unit: photo px per astronaut-photo px: the warps' sizes and displacements are given on
            the astronaut's 95 px face box and scale with the photo's face (default 1).
        tone_ellipse: ((cx, cy), (ax, ay)) photo px of :meth:`tone_mask` (default: the
            astronaut's face and neck).

    Raises:
        ConfigError: a landmark missing or unit <= 0.

    The fields are computed once (float32 (H, W, 2) each, in frame px); :meth:`field` mixes
    them for given intensities and :meth:`warp` applies a field to an image.
    """

    def __init__(self, size: tuple[int, int], origin: tuple[float, float], scale: tuple[float, float],
                 landmarks: dict[str, tuple[float, float]] | None = None, unit: float = 1.0,
                 tone_ellipse: tuple[tuple[float, float], tuple[float, float]] | None = None) -> None:
        self.size = (int(size[0]), int(size[1]))
        self._origin = (float(origin[0]), float(origin[1]))
        self._scale = (float(scale[0]), float(scale[1]))
        self._landmarks = PHOTO_LANDMARKS if landmarks is None else dict(landmarks)
        missing = sorted(set(PHOTO_LANDMARKS) - set(self._landmarks))
        if missing:
            raise ConfigError(f"ExpressionRig: landmarks lack {', '.join(missing)}")
        if not (np.isfinite(unit) and unit > 0):
            raise ConfigError(f"ExpressionRig: unit must be > 0, got {unit}")
        self._unit = float(unit)
        self._tone_ellipse = _TONE_ELLIPSE if tone_ellipse is None else tone_ellipse
        w, h = self.size
        self._grid_x, self._grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self._bases = {
            name: self._basis(parts)
            for name, parts in (("smile", _SMILE), ("frown", _FROWN), ("brow_raise", _BROW_RAISE),
                                ("eye_open", _EYE_OPEN), ("eye_spacing", _EYE_SPACING),
                                ("mouth_width", _MOUTH_WIDTH))
        }

    def _to_frame(self, landmark: str) -> tuple[float, float]:
        x, y = self._landmarks[landmark]
        return self._origin[0] + self._scale[0] * x, self._origin[1] + self._scale[1] * y

    def _basis(self, parts: Sequence[_Component]) -> np.ndarray:
        kx, ky = self._scale
        u = self._unit
        out = np.zeros(self._grid_x.shape + (2,), np.float32)
        for part in parts:
            kind, landmark, sx, sy = part[:4]
            if u != 1.0:
                sx, sy = sx * u, sy * u
                if kind == "shift":
                    part = part[:4] + (part[4] * u, part[5] * u)
            cx, cy = self._to_frame(landmark)
            ux = (self._grid_x - cx) / (kx * sx)
            uy = (self._grid_y - cy) / (ky * sy)
            g = np.exp(-0.5 * (ux * ux + uy * uy))
            if kind == "shift":
                out[:, :, 0] += kx * part[4] * g
                out[:, :, 1] += ky * part[5] * g
            else:
                out[:, :, 1] += part[4] * (self._grid_y - cy) * g
        return out

    def field(self, valence: float = 0.0, arousal: float = 0.0,
              appearance: FaceAppearance | None = None) -> np.ndarray | None:
        """The displacement field of an expression, optionally with an appearance's static
        landmark offsets.

        Args:
            valence: effective valence intensity, clipped to +-:data:`EXPRESSION_LIMIT`.
            arousal: effective arousal intensity, clipped likewise.
            appearance: adds its eye_spacing, mouth_width and brow_height offsets.

        Returns:
            float32 (H, W, 2) forward displacement (dx, dy) in frame px, or None when it is
            zero everywhere (nothing to warp).
        """
        v = float(np.clip(valence, -EXPRESSION_LIMIT, EXPRESSION_LIMIT))
        a = float(np.clip(arousal, -EXPRESSION_LIMIT, EXPRESSION_LIMIT))
        weights = {
            "smile": max(v, 0.0),
            "frown": max(-v, 0.0),
            # Raised brows with arousal only: lowered brows belong to the frown (AU4).
            "brow_raise": max(a, 0.0),
            "eye_open": a,
        }
        if appearance is not None:
            weights["eye_spacing"] = appearance.eye_spacing
            weights["mouth_width"] = appearance.mouth_width
            weights["brow_raise"] += appearance.brow_height
        out = None
        for name, weight in weights.items():
            if weight != 0.0:
                term = self._bases[name] * np.float32(weight)
                out = term if out is None else out + term
        return out

    def warp(self, image: np.ndarray, field: np.ndarray | None) -> np.ndarray:
        """Apply a displacement field to an image of the frame's size.

        Args:
            image: float32 (H, W) or (H, W, C) image.
            field: from :meth:`field`, or None (the image is returned unchanged).

        Returns:
            float32 image of the same shape: output(p) = image(p - field(p)), bilinear, edges
            replicated.
        """
        if field is None:
            return image
        map_x = self._grid_x - field[:, :, 0]
        map_y = self._grid_y - field[:, :, 1]
        return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def tone_mask(self) -> np.ndarray:
        """Soft face-and-neck weights in [0, 1], float32 (H, W): where skin_tone_rgb applies."""
        w, h = self.size
        (cx, cy), (ax, ay) = self._tone_ellipse
        fx, fy = self._origin[0] + self._scale[0] * cx, self._origin[1] + self._scale[1] * cy
        ux = (self._grid_x - fx) / (self._scale[0] * ax)
        uy = (self._grid_y - fy) / (self._scale[1] * ay)
        r = np.sqrt(ux * ux + uy * uy)
        # Flat inside, a smooth cosine ramp from r = 0.8 to 1.2: no visible seam on the skin.
        ramp = np.clip((1.2 - r) / 0.4, 0.0, 1.0)
        return (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)
