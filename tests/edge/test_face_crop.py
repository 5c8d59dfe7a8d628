"""edge.face.crop_face: the one face crop that training and the device share."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.face import crop_face
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.sim import SimConfig, synth_session


def _reference(frame_bgr, box, size, margin):
    # Pad the whole frame generously, cut the square, area-resize, flip to RGB.
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    x0 = int(round(x + w / 2 - side / 2))
    y0 = int(round(y + h / 2 - side / 2))
    pad = side + 2
    big = cv2.copyMakeBorder(frame_bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    square = big[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)[:, :, ::-1]


def test_box_without_margin_fills_the_crop_and_margin_adds_context():
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[30:70, 50:90] = (10, 200, 90)  # a BGR square exactly at the box
    crop = crop_face(frame, (50, 30, 40, 40), size=20, margin=0.0)
    assert crop.shape == (20, 20, 3) and crop.dtype == np.uint8
    assert np.all(crop == (90, 200, 10))  # RGB order
    crop = crop_face(frame, (50, 30, 40, 40), size=32, margin=0.25)
    # Side 60 px: the 40 px box covers the middle 2/3, i.e. rows/cols 5.33..26.67 of 32.
    inside = crop[:, :, 1] == 200
    assert inside[6:26, 6:26].all() and not inside[:5].any() and not inside[27:].any()


def test_matches_a_padded_reference_at_borders_and_odd_boxes():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)
    for box in ((10, 10, 40, 40), (-15, -20, 50, 44), (100, 60, 45, 52), (30.4, 20.6, 33.2, 31.9), (0, 0, 130, 90)):
        for size, margin in ((32, 0.15), (17, 0.0), (64, 0.4)):
            want = _reference(frame, box, size, margin)
            assert np.array_equal(crop_face(frame, box, size, margin), want), (box, size)


def test_border_pads_with_black_instead_of_stretching():
    frame = np.full((100, 100, 3), 255, np.uint8)
    crop = crop_face(frame, (-20, -20, 40, 40), size=40, margin=0.0)
    # The box's left and top halves lie outside the frame: black there, white inside.
    assert np.all(crop[:20, :] == 0) and np.all(crop[:, :20] == 0)
    assert np.all(crop[20:, 20:] == 255)
    assert np.all(crop_face(frame, (500, 500, 30, 30)) == 0)  # wholly outside: all padding


def test_synthetic_face_is_centred_in_its_crop():
    s = synth_session(SimConfig(duration_s=0.2, frame_size=(128, 128), face_scale=0.55, face_center=(0.45, 0.55),
                                noise_sigma=0, motion_px=0, motion_scale_pct=0))
    crop = crop_face(s.frame(0), s.face_box(0))
    ycrcb = cv2.cvtColor(np.ascontiguousarray(crop[:, :, ::-1]), cv2.COLOR_BGR2YCrCb)
    skin = cv2.inRange(ycrcb, (0, 133, 77), (255, 173, 135)) > 0
    ys, xs = np.nonzero(skin)
    assert skin.mean() > 0.3
    assert abs(xs.mean() - 15.5) < 3 and abs(ys.mean() - 15.5) < 5


def test_bad_inputs_raise():
    frame = np.zeros((50, 50, 3), np.uint8)
    for bad_frame in (np.zeros((50, 50), np.uint8), np.zeros((50, 50, 3), np.float32), [[0]]):
        with pytest.raises(BadInputError):
            crop_face(bad_frame, (0, 0, 10, 10))
    for bad_box in ((0, 0, 0, 10), (0, 0, 10), (0, np.nan, 10, 10), "box", (0, 0, -5, 5)):
        with pytest.raises(BadInputError):
            crop_face(frame, bad_box)
    for kw in (dict(size=0), dict(size=2.5), dict(margin=-0.1), dict(margin=np.inf)):
        with pytest.raises(ConfigError):
            crop_face(frame, (0, 0, 10, 10), **kw)
