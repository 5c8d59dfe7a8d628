"""Identities and skin tones for the synthetic face: real photos as bases, a documented tone scale.

**Identities.** :class:`FaceLibrary` reads a folder of face photos (e.g. ``faces/`` with its
``labels.csv`` of ``file,expression,identity`` rows and an ``images/`` folder, or a plain
folder of ``.jpg`` / ``.png``). Photos labelled ``neutral`` are preferred as bases, because the
generator adds the expression itself; one photo per identity (its first file in name order),
identities sorted by name, so index *i* is the same photo on every machine.

**Face geometry.** The expression warps need eyes, brows, mouth and cheeks. These photos are
roughly aligned 128x128 crops, so the geometry is a *canonical* one scaled to the face box that
OpenCV's Haar frontal-face cascade (Viola & Jones 2001; ``haarcascade_frontalface_default.xml``,
scaleFactor 1.1, minNeighbors 5, the largest box) finds on the photo. The canonical landmarks
are fractions of that box read off the mean of ~1,900 neutral photos of the collection (eyes at
0.29 / 0.70 of the width and 0.36 of the height, mouth corners at 0.35 / 0.65 and 0.84). When
the cascade finds nothing, or a box that overlaps the canonical box of an aligned crop by less
than IoU 0.5 (a background face, a partial detection), the canonical box is used instead. The
geometry is deterministic (same photo, same landmarks) and cheap (a few ms per photo, once).

**Skin tones.** The Monk Skin Tone scale (Monk 2019; the 10 sRGB swatches Google published with
it, skintone.google): tone *k* in 1-10 colourises the photo's skin so that its median skin
pixel has swatch *k*'s colour at a camera exposure of 0.9, the photo's own shading multiplying
it (out_c = 0.9 * swatch_c * L / L_median, which is the same product in linear light under a
power-law gamma). The rest of the photo (hair, neck beyond the tone ellipse, the photo's own
backdrop) is scaled by the same ratio, untinted (``subject_scale``): one light falls on the whole
subject, so the face keeps its lightness relative to its surround. Without that a tone-10 face sat
as a dark patch in the light-skinned photo's bright halo of forehead, hair and backdrop, and the
Haar cascade (which normalises each window by its variance) lost it in 26-65 % of frames. The
camera's auto-exposure (``firmware_bridge.sim.face.auto_exposure_gain``) then brightens or darkens
the whole frame toward mid-grey. The pulse's relative amplitude per channel follows the dichromatic skin
model that CHROM is built on (de Haan & Jeanne 2013, "Robust pulse rate from
chrominance-based rPPG", IEEE TBME 60(10):2878-2886): the camera sees a diffuse reflection
that has crossed the epidermis (melanin) and the blood-perfused dermis, and carries the pulse
with the blood-volume signature Pbv (de Haan & van Leest 2014), plus a white surface
reflection that never meets blood. The pulse is therefore diluted by the surface share:
``A_c(k) = A * Pbv_c / Pbv_G * (1 - S / I_c(k))`` with ``I_c(k)`` the tone's linear camera
intensity and ``S`` = 0.6 % of white. As melanin rises, the diffuse light falls and the
relative pulse with it, most in blue, least in red; in grey levels it falls further, because
the skin is darker. That rPPG is harder on darker skin is what Nowara, McDuff &
Veeraraghavan 2020 ("A meta-analysis of the impact of skin type and gender on non-contact
photoplethysmography measurements", CVPR Workshops) found across published studies; the value
of ``S`` is a modelling choice (the darkest tone keeps 44 % of its relative green pulse), not a
measurement.

This module is in the bottom layer: NumPy and OpenCV only.
"""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError, MissingDependencyError

__all__ = [
    "CANONICAL_BOX",
    "CANONICAL_LANDMARKS",
    "MONK_SKIN_TONES",
    "FaceLibrary",
    "FacePhoto",
    "face_library",
    "tone_pulse_factors",
]

#: Monk Skin Tone scale, tones 1 (lightest) to 10 (darkest), sRGB (R, G, B) of the published
#: swatches (Monk 2019; skintone.google).
MONK_SKIN_TONES: dict[int, tuple[int, int, int]] = {
    1: (246, 237, 228), 2: (243, 231, 219), 3: (247, 234, 208), 4: (234, 218, 186),
    5: (215, 189, 150), 6: (160, 126, 86), 7: (130, 92, 67), 8: (96, 65, 52),
    9: (58, 49, 42), 10: (41, 36, 32),
}
#: Camera exposure of the tone's swatch, in sRGB units (0.9 = 0.79 in linear light): the lightest
#: tones keep their highlights below saturation.
TONE_EXPOSURE = 0.9
#: White surface reflection that carries no pulse, as a fraction of white in linear light.
SURFACE_REFLECTION = 0.006
_GAMMA = 2.2

#: The Haar box (x, y, w, h) px on an aligned 128x128 crop: the median of the cascade's boxes
#: on the collection's neutral photos.
CANONICAL_BOX = (10.0, 9.0, 108.0, 108.0)
#: Landmarks as fractions (x, y) of the Haar face box, from the mean neutral face (image left
#: is "left").
CANONICAL_LANDMARKS: dict[str, tuple[float, float]] = {
    "eye_left": (0.287, 0.361),
    "eye_right": (0.694, 0.361),
    "brow_left": (0.287, 0.269),
    "brow_right": (0.704, 0.269),
    "brow_inner_left": (0.389, 0.287),
    "brow_inner_right": (0.611, 0.287),
    "mouth_left": (0.352, 0.843),
    "mouth_right": (0.648, 0.843),
    "mouth_center": (0.500, 0.861),
    "cheek_left": (0.259, 0.657),
    "cheek_right": (0.741, 0.657),
}
# Face-skin ellipse (forehead to chin, cheek to cheek) and the wider tone ellipse (face, jaw,
# ears' edge), as ((cx, cy), (ax, ay)) fractions of the face box.
_SKIN_ELLIPSE = ((0.5, 0.55), (0.40, 0.50))
_TONE_ELLIPSE = ((0.5, 0.58), (0.52, 0.66))
# Skin pixels: grey level within this band around the median of the skin ellipse (drops eyes,
# brows, nostrils, beards, glasses frames and specular highlights).
_SKIN_BAND = (0.62, 1.45)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def tone_pulse_factors(tone: int) -> tuple[float, float, float]:
    """Relative pulse strength (R, G, B) on Monk tone ``tone``: 1 - S / I_c (see module doc).

    Args:
        tone: Monk Skin Tone 1-10.

    Returns:
        Three floats in (0, 1]: the fraction of the pulse that survives the white surface
        reflection in each channel (about 0.99 on tone 1, 0.58 / 0.44 / 0.27 on tone 10).

    Raises:
        ConfigError: tone not an integer 1-10.
    """
    rgb = _tone_rgb(tone)
    lin = (TONE_EXPOSURE * np.asarray(rgb, np.float64) / 255.0) ** _GAMMA
    return tuple(float(v) for v in np.clip(1.0 - SURFACE_REFLECTION / lin, 0.0, 1.0))  # type: ignore[return-value]


def _tone_rgb(tone: int) -> tuple[int, int, int]:
    if isinstance(tone, bool) or not isinstance(tone, (int, np.integer)) or int(tone) not in MONK_SKIN_TONES:
        raise ConfigError(f"skin_tone must be a Monk Skin Tone 1-10, got {tone!r}")
    return MONK_SKIN_TONES[int(tone)]


@dataclass(frozen=True, eq=False)
class FacePhoto:
    """One identity's base photo and its face geometry.

    Attributes:
        file: the photo's file name.
        identity: its identity label (the file stem without the number when there are no labels).
        gray: float32 (H, W) grey levels 0-255, read-only.
        face_box: (x, y, w, h) photo px, the Haar box (or the canonical one, see ``detected``).
        detected: True when the cascade's box was used, False for the canonical fallback.
        landmarks: name -> (x, y) photo px (the names of :data:`CANONICAL_LANDMARKS`).
        skin: float32 (H, W) weights in [0, 1]: the skin that carries the pulse.
        tone: float32 (H, W) weights in [0, 1]: where a skin tone colourises the photo.
    """

    file: str
    identity: str
    gray: np.ndarray
    face_box: tuple[float, float, float, float]
    detected: bool
    landmarks: dict
    skin: np.ndarray
    tone: np.ndarray

    def colourise(self, tone: int, exposure: float = TONE_EXPOSURE) -> np.ndarray:
        """The photo with its face colourised to a Monk tone and the rest left grey.

        Args:
            tone: Monk Skin Tone 1-10.
            exposure: camera exposure of the swatch, sRGB units.

        Returns:
            float32 (H, W, 3) BGR in 0-255.

        Raises:
            ConfigError: tone not 1-10.
        """
        return colourise(self.gray, self.skin, self.tone, tone, exposure)


def colourise(gray: np.ndarray, skin: np.ndarray, tone_mask: np.ndarray, tone: int,
              exposure: float = TONE_EXPOSURE, rest: np.ndarray | None = None,
              subject_scale: bool = True) -> np.ndarray:
    """Colourise grey skin to a Monk tone: out_c = exposure * swatch_c * L / L_median (skin);
    the rest is scaled by exposure * luma(swatch) / L_median (see module doc).

    Args:
        gray: float32 (H, W) grey levels 0-255 (the photo's luminance).
        skin: float32 (H, W) skin weights; their weighted median grey level is L_median.
        tone_mask: float32 (H, W) weights in [0, 1]: colourised where 1, grey where 0.
        tone: Monk Skin Tone 1-10.
        exposure: sRGB-units gain on the swatch.
        rest: float32 (H, W, 3) BGR kept where the tone mask is 0 (default: the grey image).
        subject_scale: scale ``rest`` by the skin's luma ratio (one light on the whole subject);
            False = keep it as it is (the renderer before 2026-12, a dark face in a light halo).

    Returns:
        float32 (H, W, 3) BGR, clipped to 0-255.

    Raises:
        ConfigError: tone not 1-10.
    """
    swatch_bgr = np.asarray(_tone_rgb(tone)[::-1], np.float32)
    sel = gray[skin > 0.5]
    ref = float(np.median(sel)) if sel.size else float(np.median(gray))
    ref = max(ref, 1.0)
    coloured = (gray / np.float32(ref))[:, :, None] * (np.float32(exposure) * swatch_bgr)
    t = tone_mask[:, :, None]
    other = gray[:, :, None] if rest is None else rest
    if subject_scale:
        # The rest of the subject (hair, neck, the photo's backdrop) keeps its lightness
        # relative to the skin, as under one light: scaled by the same luma ratio, no tint.
        luma = float(np.dot(swatch_bgr, (0.114, 0.587, 0.299)))
        other = other * np.float32(exposure * luma / ref)
    out = t * coloured + (1.0 - t) * other
    return np.clip(out, 0.0, 255.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _cascade():
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise MissingDependencyError(f"OpenCV's Haar cascade is missing ({path}); reinstall opencv-python")
    return cascade


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter)


def _ellipse_mask(shape, box, ellipse, soft: float) -> np.ndarray:
    h, w = shape
    bx, by, bw, bh = box
    (cx, cy), (ax, ay) = ellipse
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ux = (xx - (bx + cx * bw)) / (ax * bw)
    uy = (yy - (by + cy * bh)) / (ay * bh)
    r = np.sqrt(ux * ux + uy * uy)
    ramp = np.clip((1.0 + soft - r) / (2.0 * soft), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)


def photo_geometry(gray_u8: np.ndarray) -> tuple[tuple[float, float, float, float], bool]:
    """The face box of a photo: the Haar cascade's largest box, or the canonical box of an
    aligned crop (scaled to the photo's size) when there is none or it disagrees with it.

    Args:
        gray_u8: uint8 (H, W) grey image.

    Returns:
        ((x, y, w, h) photo px, detected?).
    """
    h, w = gray_u8.shape
    sx, sy = w / 128.0, h / 128.0
    cx, cy, cw, ch = CANONICAL_BOX
    canonical = (cx * sx, cy * sy, cw * sx, ch * sy)
    boxes = _cascade().detectMultiScale(gray_u8, scaleFactor=1.1, minNeighbors=5,
                                        minSize=(max(24, w // 4), max(24, h // 4)))
    if len(boxes):
        best = max((tuple(float(v) for v in b) for b in boxes), key=lambda b: (b[2] * b[3], b))
        if _iou(best, canonical) >= 0.5:
            return best, True
    return canonical, False


def load_photo(path: str | Path, identity: str | None = None) -> FacePhoto:
    """Read one face photo and find its geometry, skin and tone regions.

    Args:
        path: an image file OpenCV can read (grey or colour; colour is turned to grey).
        identity: its identity label (default: the file stem).

    Returns:
        A :class:`FacePhoto`.

    Raises:
        BadInputError: the file is missing, unreadable, or smaller than 32x32.
    """
    path = Path(path)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise BadInputError(f"cannot read face photo {path}")
    if min(image.shape) < 32:
        raise BadInputError(f"face photo {path} is {image.shape[1]}x{image.shape[0]}; need at least 32x32")
    box, detected = photo_geometry(image)
    gray = image.astype(np.float32)
    bx, by, bw, bh = box
    landmarks = {name: (bx + fx * bw, by + fy * bh) for name, (fx, fy) in CANONICAL_LANDMARKS.items()}
    inside = _ellipse_mask(gray.shape, box, _SKIN_ELLIPSE, 0.08)
    sel = gray[inside > 0.5]
    med = float(np.median(sel)) if sel.size else float(np.median(gray))
    lo, hi = _SKIN_BAND
    band = ((gray >= lo * med) & (gray <= hi * med)).astype(np.float32)
    # Holes around the eyes and mouth: the warps move them, and lids and lips do not pulse.
    holes = np.zeros_like(gray)
    for name, (rx, ry) in (("eye_left", (0.11, 0.06)), ("eye_right", (0.11, 0.06)),
                           ("mouth_center", (0.19, 0.08))):
        x, y = landmarks[name]
        cv2.ellipse(holes, (round(x), round(y)), (round(rx * bw), round(ry * bh)), 0, 0, 360, 1.0, -1)
    skin = cv2.GaussianBlur(band * (1.0 - holes), (0, 0), 0.7) * inside
    tone = _ellipse_mask(gray.shape, box, _TONE_ELLIPSE, 0.2)
    for a in (gray, skin, tone):
        a.setflags(write=False)
    return FacePhoto(path.name, identity or path.stem.rstrip("_0123456789").lower(), gray, box, detected,
                     landmarks, np.clip(skin, 0.0, 1.0).astype(np.float32), tone)


class FaceLibrary:
    """The identities of a folder of face photos, in a fixed order.

    Args:
        folder: a folder with ``labels.csv`` (``file,expression,identity``) and the images in
            it or in its ``images/`` sub-folder; or the images folder itself, with
            ``labels.csv`` beside it (one level up); or any folder of images (no labels: every
            file is its own identity, named by its stem).

    Attributes:
        folder: the resolved images folder.
        entries: ``(file, identity)`` per identity, sorted by identity: its first neutral
            photo (identities without one are left out when the labels name any neutral
            photo; otherwise each identity's first photo).

    Raises:
        ConfigError: the folder does not exist or holds no usable image.
    """

    def __init__(self, folder: str | Path) -> None:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ConfigError(f"faces folder {root} does not exist")
        labels = next((p for p in (root / "labels.csv", root.parent / "labels.csv") if p.is_file()), None)
        images = root / "images" if (root / "images").is_dir() else root
        best: dict[str, tuple[int, str]] = {}
        if labels is not None:
            with open(labels, newline="") as fh:
                for row in csv.DictReader(fh):
                    name, ident = row.get("file"), row.get("identity") or row.get("file")
                    if not name or not (images / name).is_file():
                        continue
                    rank = (0 if (row.get("expression") or "").strip().lower() == "neutral" else 1, name)
                    if ident not in best or rank < best[ident]:
                        best[ident] = rank
        else:
            for p in images.iterdir():
                if p.suffix.lower() in _IMAGE_SUFFIXES:
                    best[p.stem] = (0, p.name)
        if not best:
            raise ConfigError(f"faces folder {root} holds no face photo (.jpg/.png, or labels.csv rows)")
        # Neutral faces only, when there are any: the generator adds the expression itself.
        if any(rank[0] == 0 for rank in best.values()):
            best = {k: v for k, v in best.items() if v[0] == 0}
        self.folder = images
        self.entries = [(best[k][1], k) for k in sorted(best)]

    def __len__(self) -> int:
        return len(self.entries)

    def index_of(self, identity: int | str) -> int:
        """The index of an identity given as an index (0..len-1), an identity label or a file name.

        Raises:
            ConfigError: no such identity.
        """
        if isinstance(identity, (int, np.integer)) and not isinstance(identity, bool):
            if not 0 <= int(identity) < len(self.entries):
                raise ConfigError(f"identity {identity} out of range: the faces folder has {len(self)} identities")
            return int(identity)
        for i, (file, ident) in enumerate(self.entries):
            if identity in (file, ident):
                return i
        raise ConfigError(f"identity {identity!r} is not in the faces folder {self.folder}")

    def photo(self, index: int) -> FacePhoto:
        """The base photo of identity ``index`` (cached; see :func:`load_photo`)."""
        file, ident = self.entries[self.index_of(index)]
        return _load_cached(str(self.folder / file), ident)


@functools.lru_cache(maxsize=64)
def _load_cached(path: str, identity: str) -> FacePhoto:
    return load_photo(path, identity)


@functools.lru_cache(maxsize=8)
def face_library(folder: str) -> FaceLibrary:
    """The :class:`FaceLibrary` of a folder, cached per process (same errors)."""
    return FaceLibrary(folder)
