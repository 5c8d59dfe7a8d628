"""Generator-warped still faces with the generator's valence / arousal as labels.

The synthetic sessions (:mod:`export.data.synth`, the demo) carry their expression only in the
generator's action-unit warps (:mod:`firmware_bridge.sim.expression`): mouth corners up or
down, brows raised or drawn together. A face encoder trained on real photos alone does not
read those warps as expressions (docs/RESULTS.md), so synthetic ground truth is noise to any
model on top of it. This module renders a bank of such faces - real neutral photos of *train*
identities (never validation or test ones) and the astronaut, colourised across the Monk skin
tones - at random intensities, and cuts each with the device's still path, so
:mod:`export.faces.train` can add them to the real photos with a valence / arousal target only
(the expression and teacher terms stay real-photo only).

Labels follow the generator's sign: intensity > +0.25 is "high", < -0.25 is "low", in between
is no target (a barely moved face, or the astronaut's own smile at zero, is not a label).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import ConfigError

log = logging.getLogger(__name__)

#: |intensity| below which a rendered face gets no valence / arousal target.
LABEL_MARGIN = 0.25
#: Intensities are drawn uniformly in +- this (the rig renders up to 1.5).
MAX_INTENSITY = 1.2


@dataclass(frozen=True)
class SyntheticStills:
    """Rendered synthetic face crops.

    Attributes:
        crops: uint8 (N, S, S, 3) RGB.
        valence, arousal: int64 (N,) 1 high, 0 low, -1 no target.
        intensity: float32 (N, 2) the rendered (valence, arousal) intensities.
        identity: str (N,) the base photo's identity ("astronaut" for her).
        tone: int64 (N,) Monk skin tone 1-10, 0 for the astronaut's own colours.
        detected: bool (N,) the device's detector found the face (else the renderer's true box).
    """

    crops: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    intensity: np.ndarray
    identity: np.ndarray
    tone: np.ndarray
    detected: np.ndarray

    def __len__(self) -> int:
        return len(self.crops)


def _label(v: np.ndarray) -> np.ndarray:
    return np.where(v > LABEL_MARGIN, 1, np.where(v < -LABEL_MARGIN, 0, -1)).astype(np.int64)


def split_identities(faces_root, split: str = "train") -> list[int]:
    """Indices into the faces folder's :class:`~firmware_bridge.sim.faces.FaceLibrary` whose
    identity is in ``split`` of :func:`export.faces.data.assign_split` ("train" or "val")."""
    from export.faces.data import assign_split
    from firmware_bridge.sim.faces import face_library

    if split not in ("train", "val"):
        raise ConfigError(f"synthetic faces come from train or val identities, not {split!r}")
    lib = face_library(str(faces_root))
    return [i for i, (_, ident) in enumerate(lib.entries) if assign_split(ident) == split]


def render_stills(faces_root, n: int, size: int = 64, seed: int = 0, astronaut_share: float = 0.15,
                  frame_size: tuple[int, int] = (320, 240), split: str = "train") -> SyntheticStills:
    """Render ``n`` warped faces and cut them as the device cuts a still.

    Args:
        faces_root: a faces folder (``labels.csv`` + ``images/``) or None for the astronaut only.
        n: number of faces (>= 1).
        size: crop side (the encoder's).
        seed: draws identities, tones, intensities, sizes and noise.
        astronaut_share: fraction of faces on the astronaut (her photo is the demo's and the
            user's default identity).
        frame_size: rendered frame (width, height); the face box is 40-60 % of its height.
        split: whose neutral photos: "train" identities, or "val" ones for a held-out check.
    Raises:
        ConfigError: n < 1 or a faces folder without train identities.
    """
    from export.faces.data import StillCropper
    from edge.preprocess import face_crop
    from firmware_bridge.sim.face import FaceRenderer, Motion
    from firmware_bridge.sim.faces import face_library

    if int(n) < 1:
        raise ConfigError(f"need at least one synthetic face, got {n}")
    rng = np.random.default_rng([int(seed), 0x57111])
    ids = split_identities(faces_root, split) if faces_root is not None else []
    if faces_root is not None and not ids:
        raise ConfigError(f"faces folder {faces_root} has no {split}-split identity to render")
    lib = face_library(str(faces_root)) if ids else None
    cropper = StillCropper()
    p = cropper.settings(size).preprocessing
    crops = np.empty((n, size, size, 3), np.uint8)
    inten = rng.uniform(-MAX_INTENSITY, MAX_INTENSITY, (n, 2)).astype(np.float32)
    ident, tones, det = [], np.zeros(n, np.int64), np.zeros(n, bool)
    for i in range(n):
        astro = not ids or rng.random() < astronaut_share
        photo = None if astro else lib.photo(ids[int(rng.integers(len(ids)))])
        tone = None if astro and rng.random() < 0.5 else int(rng.integers(1, 11))
        r = FaceRenderer(frame_size, face_scale=float(rng.uniform(0.4, 0.6)),
                         face_center=(float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.42, 0.55))),
                         pulse_amplitude=0.0, noise_sigma=float(rng.uniform(0.5, 2.0)),
                         seed=int(rng.integers(2**31)), photo=photo, skin_tone=tone)
        motion = Motion(0.0, 0.0, 1.0)
        frame = r.render(i, 0.0, float(rng.uniform(0.85, 1.15)), motion, (float(inten[i, 0]), float(inten[i, 1])))
        crop, found = cropper(frame, size)
        if not found:  # the renderer's own box: the encoder still learns the face
            crop = face_crop(frame, tuple(float(v) for v in r.face_box(motion)), p)
        crops[i] = crop
        det[i] = found
        tones[i] = 0 if tone is None else tone
        ident.append("astronaut" if photo is None else photo.identity)
    log.info("synthetic stills: %d rendered (%d detected by the device's tracker)", n, int(det.sum()))
    return SyntheticStills(crops, _label(inten[:, 0]), _label(inten[:, 1]), inten, np.asarray(ident),
                           tones, det)
