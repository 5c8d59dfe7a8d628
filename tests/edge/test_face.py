"""Haar face detection on real faces: the physrecorder webcam clip and scikit-image's astronaut."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from edge.face import HaarFaceDetector
from firmware_bridge.errors import BadInputError, ConfigError
from helpers import shared_path

# Face centre and size checked by eye on the images (the astronaut's face spans roughly
# x 175-270, y 65-165 of the 512x512 photo; the clip's subject x 270-430, y 160-320).
ASTRONAUT_FACE = (222, 115, 98)
CLIP_FACE = (350, 242, 164)


@pytest.fixture(scope="module")
def detector():
    return HaarFaceDetector()


def _assert_box_on(box, face):
    cx, cy, size = face
    x, y, w, h = box
    assert all(isinstance(v, int) for v in box)
    assert abs(x + w / 2 - cx) < 0.2 * size and abs(y + h / 2 - cy) < 0.2 * size
    assert 0.7 * size < w < 1.4 * size and w == h


def test_detects_the_face_in_the_real_clip(detector):
    path = shared_path("rppg/physrecorder-v01/video_ZIP_H264.avi")
    cap = cv2.VideoCapture(str(path))
    frames = [cap.read()[1] for _ in range(20)][::5]
    cap.release()
    for frame in frames:
        boxes = detector.detect(frame)
        assert len(boxes) >= 1
        _assert_box_on(boxes[0], CLIP_FACE)


def test_detects_the_astronaut(detector):
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    boxes = detector.detect(bgr)
    assert len(boxes) == 1
    _assert_box_on(boxes[0], ASTRONAUT_FACE)
    # Grayscale input gives the same box.
    assert detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)) == boxes


def test_boxes_are_in_full_resolution_coordinates(detector):
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    # Pad to 1024x1024 with the photo at an offset: detection runs at 320 px wide either
    # way, so the box must come back scaled by 2 and shifted by the offset.
    big = np.full((1024, 1024, 3), 255, np.uint8)
    big[200:712, 300:812] = bgr
    boxes = HaarFaceDetector(min_face_frac=0.05).detect(big)
    assert boxes
    cx, cy, size = ASTRONAUT_FACE
    _assert_box_on(boxes[0], (cx + 300, cy + 200, size))


def test_largest_face_comes_first(detector):
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    face = bgr[40:190, 150:300]
    canvas = np.full((480, 800, 3), 200, np.uint8)
    canvas[20:170, 20:170] = face
    canvas[180:480, 400:700] = cv2.resize(face, (300, 300))
    boxes = detector.detect(canvas)
    assert len(boxes) == 2
    areas = [w * h for _, _, w, h in boxes]
    assert areas[0] > areas[1] and boxes[0][0] > 400


def test_no_face_in_noise(detector):
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detector.detect(noise) == []


def test_errors(detector):
    with pytest.raises(BadInputError):
        detector.detect(np.zeros((48, 64, 3), np.float32))
    with pytest.raises(BadInputError):
        detector.detect(np.zeros((48, 64, 4), np.uint8))
    with pytest.raises(ConfigError):
        HaarFaceDetector(scale_factor=1.0)
    with pytest.raises(ConfigError):
        HaarFaceDetector(min_face_frac=0)
