"""Still face photos as model inputs: read, detect, crop, and a window with no physiology.

The models take a window of video (a face clip of ``clip_frames`` crops) and physiology (the
rPPG time-frequency image ``tfr``, contact PPG / EDA rows and their level summaries). A still
photo has one frame and no pulse. This module turns it into the same :class:`edge.preprocess.Window`
the runtime builds, so that a photo is scored, and a face encoder trained on photos is fed,
exactly as the device would cut and feed that face:

- read: :func:`read_image` decodes any OpenCV-readable file to uint8 BGR; a grayscale photo
  becomes 3 equal channels (``cv2.IMREAD_COLOR``), the same as a grayscale camera frame;
- detect: the manifest's face-box method on a one-frame sequence
  (:func:`edge.preprocess.track_faces`: the device's tracker, whose first frame is a full
  :class:`edge.face.HaarFaceDetector` detection, largest face); no face means no crop and a
  stated reason, never a guessed box;
- crop: :func:`edge.face.crop_face` at the bundle's ``preprocessing.face.crop_size`` and
  ``crop_margin`` (:func:`edge.preprocess.face_crop`);
- window (:func:`still_window`): the one crop repeated ``clip_frames`` times as the face clip
  (and ``seq_frames`` times as the 60 s crop sequence); the physiological inputs marked absent
  exactly as the runtime marks a window without them: ``tfr`` all zeros (what
  :func:`edge.preprocess.face_inputs` returns when the pulse window was not formed), and the
  contact rows and levels from :func:`edge.preprocess.contact_inputs` with no stream
  (zero rows, ``contact_present`` and ``level_present`` all False). ``face_present`` is False
  because its definition includes a formed pulse window.

The preprocessing settings are read in one place, :func:`still_settings`, from the bundle's
:class:`edge.spec.Preprocessing` record.

numpy + OpenCV only (no torch): training code imports it too.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.preprocess import Window, contact_inputs, face_crop, model_feeds, track_faces
from edge.spec import Preprocessing
from firmware_bridge.errors import BadInputError

# File name endings read as images when a folder is scored.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm")

NO_FACE_REASON = "no face found by the device's face detector (Haar cascade, edge.face.HaarFaceDetector)"


@dataclass(frozen=True)
class StillSettings:
    """The preprocessing settings a still photo needs (from a bundle manifest).

    Attributes:
        crop_size: side of the face crop, px.
        crop_margin: context around the face box, fraction of its longer side.
        clip_frames: crops in the model's face clip.
        seq_frames: crops in the window's face sequence (for ``face_feats`` models).
        tfr_shape: (F, T) of the rPPG time-frequency image.
        preprocessing: the whole :class:`edge.spec.Preprocessing` record, for the face box
            (:func:`edge.preprocess.track_faces`), the crop and
            :func:`edge.preprocess.contact_inputs`.
    """

    crop_size: int
    crop_margin: float
    clip_frames: int
    seq_frames: int
    tfr_shape: tuple
    preprocessing: Any


def still_settings(preprocessing) -> StillSettings:
    """Read the settings a still needs from a bundle's preprocessing.

    The only function here that reads the preprocessing settings, so a change of their form
    is one edit.

    Args:
        preprocessing: ``bundle.preprocessing`` (an :class:`edge.spec.Preprocessing` record),
            or a manifest's ``preprocessing`` JSON object (parsed with
            :meth:`edge.spec.Preprocessing.from_dict`).

    Returns:
        :class:`StillSettings`.

    Raises:
        ConfigError: a missing or malformed setting.
    """
    p = preprocessing if isinstance(preprocessing, Preprocessing) else Preprocessing.from_dict(preprocessing)
    return StillSettings(crop_size=int(p.face.crop_size), crop_margin=float(p.face.crop_margin),
                         clip_frames=int(p.face.clip_frames), seq_frames=int(p.face.seq_frames),
                         tfr_shape=tuple(int(v) for v in p.tfr.shape), preprocessing=p)


def read_image(path) -> np.ndarray:
    """Decode an image file to uint8 BGR.

    Args:
        path: file path (str or Path); any format OpenCV decodes (JPEG, PNG, BMP, TIFF...).

    Returns:
        uint8 (H, W, 3) BGR; a grayscale file gives 3 equal channels, an alpha channel is
        dropped, 16-bit images are scaled to 8 bits (OpenCV's ``IMREAD_COLOR``).

    Raises:
        BadInputError: missing, unreadable or undecodable file.
    """
    import cv2

    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"image {p} does not exist or is not a file")
    try:
        # Read the bytes ourselves: cv2.imread fails silently on some non-ASCII paths.
        data = np.fromfile(os.fspath(p), dtype=np.uint8)
    except OSError as exc:
        raise BadInputError(f"cannot read image {p}: {exc}") from exc
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise BadInputError(f"cannot decode image {p} (not an image OpenCV can read)")
    return image


def list_images(folder) -> list[Path]:
    """Image files directly inside a folder (by :data:`IMAGE_SUFFIXES`), sorted by name.

    Raises:
        BadInputError: not a folder, or no image in it.
    """
    d = Path(folder)
    if not d.is_dir():
        raise BadInputError(f"{d} is not a folder")
    files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {d}")
    return files


@dataclass(frozen=True, eq=False)
class StillFace:
    """The face of one still photo.

    Attributes:
        box: (x, y, w, h) float px of the face the device's tracker picks on this one frame,
            or None.
        crop: uint8 (S, S, 3) RGB :func:`edge.face.crop_face` of ``box``, or None.
        reason: why there is no crop (None when there is one).
    """

    box: tuple | None
    crop: np.ndarray | None
    reason: str | None

    @property
    def found(self) -> bool:
        return self.crop is not None


def still_face(image_bgr: np.ndarray, settings: StillSettings) -> StillFace:
    """Find the face in a photo as the device would on a first frame, and cut the model's crop.

    The box comes from :func:`edge.preprocess.track_faces` on a one-frame sequence: the
    manifest's face-box method (``face.box``, today the :class:`edge.tracker.FaceTracker`,
    whose first frame is a full-frame :class:`edge.face.HaarFaceDetector` detection keeping the
    largest face). The crop is :func:`edge.preprocess.face_crop` (``edge.face.crop_face`` at
    ``face.crop_size`` / ``face.crop_margin``).

    Args:
        image_bgr: uint8 (H, W, 3) BGR (:func:`read_image`).
        settings: :func:`still_settings` of the bundle.

    Returns:
        :class:`StillFace`; without a face, ``crop`` is None and ``reason`` says so.

    Raises:
        BadInputError: not a uint8 (H, W, 3) image.

    Method: Viola & Jones 2001 cascade (OpenCV's frontal-face model) and the square context
    crop of :func:`edge.face.crop_face`, as on the device.
    """
    box = track_faces([image_bgr], settings.preprocessing)[0]
    if box is None:
        return StillFace(None, None, NO_FACE_REASON)
    box = tuple(float(v) for v in box)
    return StillFace(box, face_crop(image_bgr, box, settings.preprocessing), None)


def still_window(crop: np.ndarray, settings: StillSettings):
    """The :class:`edge.preprocess.Window` of one still face crop, physiology absent.

    Args:
        crop: uint8 (S, S, 3) RGB face crop, S = ``settings.crop_size``.
        settings: :func:`still_settings` of the bundle.

    Returns:
        A Window whose ``face_clip`` is ``crop`` repeated ``clip_frames`` times and
        ``face_seq_crops`` it repeated ``seq_frames`` times; ``tfr`` float32 zeros of
        ``tfr_shape``; ``contact``, ``contact_level``, ``contact_present`` and
        ``level_present`` from :func:`edge.preprocess.contact_inputs` with no streams (zeros
        and False, as the runtime builds them without a sensor); ``face_present`` False (no
        pulse window).

    Raises:
        BadInputError: a crop of the wrong dtype or shape.
    """
    c = np.asarray(crop)
    s = settings.crop_size
    if c.dtype != np.uint8 or c.shape != (s, s, 3):
        raise BadInputError(f"a still face crop must be uint8 ({s}, {s}, 3), got {c.dtype} {c.shape}")
    ci = contact_inputs({}, settings.preprocessing)
    return Window(
        face_clip=np.repeat(c[None], settings.clip_frames, axis=0),
        tfr=np.zeros(settings.tfr_shape, np.float32),
        contact=ci.contact, contact_level=ci.contact_level,
        face_seq_crops=np.repeat(c[None], settings.seq_frames, axis=0),
        face_present=False,
        contact_present=ci.contact_present, level_present=ci.level_present,
    )


def still_feeds(crop: np.ndarray, settings: StillSettings, input_names: Sequence[str],
                face_feat: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Model inputs (batch 1) of one still face crop, by ONNX input name.

    Args:
        crop: uint8 (S, S, 3) RGB face crop.
        settings: :func:`still_settings` of the bundle.
        input_names: the model's input names (``bundle.input_names``).
        face_feat: float32 (D,) the bundle's face-encoder feature of ``crop``; needed only when
            the model takes ``face_feats`` (it is repeated ``seq_frames`` times, as the crop is).

    Returns:
        dict name -> float32 array, as :func:`edge.preprocess.model_feeds`.

    Raises:
        BadInputError: a bad crop. ConfigError: an unknown input or missing ``face_feat``.
    """
    window = still_window(crop, settings)
    feats = None
    if face_feat is not None:
        f = np.asarray(face_feat, dtype=np.float32).reshape(-1)
        feats = np.repeat(f[None], settings.seq_frames, axis=0)
    return model_feeds(window, input_names, feats)
