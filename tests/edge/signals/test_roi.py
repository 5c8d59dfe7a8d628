"""ROI colour means: the Numba kernel against an OpenCV/NumPy reference, clipping, NaN cases."""
from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
from reference.roi_hr_tfr import roi_mean_rgb_ref

from edge.signals.roi import (
    FACE_ROI_FRACTIONS,
    SKIN_RULES,
    face_rgb,
    face_rois,
    face_stats,
    roi_mean_rgb,
    roi_stats,
)
from firmware_bridge.errors import BadInputError, ConfigError
from helpers import shared_path

# The skin mask is bit-identical to cv2's (same fixed-point YCrCb); the kernel sums integers
# exactly, so the only difference is the order of the final float division.
TOL = 1e-9


def _skinlike_frame(rng, height=120, width=160):
    """Random frame around a skin tone (so roughly half the pixels pass the skin rule)."""
    base = np.array([120, 150, 200])  # B, G, R
    frame = base + rng.normal(0, 35, size=(height, width, 3))
    return np.clip(frame, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("skin", [True, False, "chai_ngan", "chai_ngan_wide"])
def test_matches_reference_on_random_frames(skin):
    rng = np.random.default_rng(0)
    for trial in range(20):
        if trial % 2:
            frame = _skinlike_frame(rng)
        else:
            frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        box = rng.integers([-20, -20, 1, 1], [100, 80, 120, 90])
        got = roi_mean_rgb(frame, box, skin=skin)
        ref = roi_mean_rgb_ref(frame, box, skin=skin)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)


@pytest.mark.parametrize("rule", sorted(SKIN_RULES))
def test_skin_mask_is_opencv_mask_on_every_colour(rule):
    # All 2**24 colours in one image; equal counts and equal sums over every colour mean the
    # fixed-point conversion agrees with cv2 bit for bit, not just on average.
    # Little-endian bytes of 0..2**24-1 are (B, G, R, 0): every colour once, built in place.
    v = np.arange(1 << 24, dtype="<u4")
    frame = np.ascontiguousarray(v.view(np.uint8).reshape(4096, 4096, 4)[..., :3])
    cr_lo, cr_hi, cb_lo, cb_hi = SKIN_RULES[rule]
    ycrcb = cv2.cvtColor(frame, cv2.COLOR_BGR2YCrCb)
    mask = cv2.inRange(ycrcb, (0, cr_lo, cb_lo), (255, cr_hi, cb_hi))
    stats = roi_stats(frame, (0, 0, 4096, 4096), skin=rule)
    assert stats.n_skin == int(np.count_nonzero(mask))
    want = frame[mask > 0][:, ::-1].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(stats.rgb, want, rtol=0, atol=TOL)


def test_matches_reference_on_real_frames():
    path = shared_path("rppg/physrecorder-v01/video_ZIP_H264.avi")
    cap = cv2.VideoCapture(str(path))
    frames = [cap.read()[1] for _ in range(3)]
    cap.release()
    face = (268, 160, 164, 164)  # the subject's face in the first frames (checked by eye)
    for frame in frames:
        for box in [face, (0, 0, 640, 480), *face_rois(face)]:
            np.testing.assert_allclose(
                roi_mean_rgb(frame, box), roi_mean_rgb_ref(frame, box), rtol=0, atol=TOL
            )
        # The cheeks and forehead (minus the fringe of hair) are skin under the default rule;
        # the published Chai & Ngan Cb ceiling loses most of them under this cool light.
        wide = face_stats(frame, face)
        narrow = face_stats(frame, face, skin="chai_ngan")
        assert wide.n_skin > 0.7 * wide.n_box
        assert narrow.n_skin < wide.n_skin
        assert wide.rgb[0] > max(wide.rgb[1], wide.rgb[2])  # skin is red-dominant


def test_box_is_clipped_to_the_frame():
    rng = np.random.default_rng(1)
    frame = _skinlike_frame(rng, 50, 60)
    inside = roi_stats(frame, (40, 30, 20, 20))
    overhang = roi_stats(frame, (40, 30, 500, 500))
    np.testing.assert_array_equal(inside.rgb, overhang.rgb)
    assert overhang.n_box == 20 * 20
    negative = roi_stats(frame, (-10, -10, 20, 15))
    np.testing.assert_allclose(negative.rgb, roi_mean_rgb_ref(frame, (0, 0, 10, 5)), atol=TOL)
    assert negative.n_box == 10 * 5


@pytest.mark.parametrize("box", [(100, 100, 10, 10), (-30, 5, 20, 5), (5, 5, 0, 10)])
def test_empty_box_gives_nan(box):
    frame = np.full((40, 40, 3), 128, np.uint8)
    stats = roi_stats(frame, box)
    assert np.isnan(stats.rgb).all() and stats.n_skin == 0 and stats.n_box == 0


def test_no_skin_gives_nan_but_unmasked_mean_is_defined():
    frame = np.zeros((40, 40, 3), np.uint8)
    frame[..., 0] = 255  # pure blue: Cb far above the skin range
    stats = roi_stats(frame, (0, 0, 40, 40))
    assert np.isnan(stats.rgb).all() and stats.n_skin == 0 and stats.n_box == 1600
    np.testing.assert_array_equal(roi_mean_rgb(frame, (0, 0, 40, 40), skin=False), [0, 0, 255])


def test_reads_views_in_place_without_copying():
    rng = np.random.default_rng(2)
    big = rng.integers(0, 256, (1200, 1600, 4), dtype=np.uint8)
    view = big[::2, 1::2, 2::-1]  # strided rows and columns, negative channel stride
    assert not view.flags.c_contiguous and np.shares_memory(view, big)
    box = (100, 100, 500, 400)
    np.testing.assert_allclose(roi_mean_rgb(view, box), roi_mean_rgb_ref(view, box), atol=TOL)
    tracemalloc.start()
    try:
        roi_mean_rgb(view, box)
        face_rgb(view, box)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A crop copy of the box alone would be 600 kB; the results are a few small arrays.
    assert peak < 50_000


def test_face_rois_are_inside_the_box_and_disjoint():
    box = (100, 50, 200, 240)
    subs = face_rois(box)
    assert len(subs) == len(FACE_ROI_FRACTIONS) == 3
    masks = np.zeros((3, 400, 400), bool)
    for k, (x, y, w, h) in enumerate(subs):
        assert w > 0 and h > 0
        assert box[0] <= x and x + w <= box[0] + box[2] and box[1] <= y and y + h <= box[1] + box[3]
        masks[k, y : y + h, x : x + w] = True
    assert masks.sum(axis=0).max() == 1
    forehead, left, right = subs
    assert forehead[1] + forehead[3] <= min(left[1], right[1])  # forehead above the cheeks
    assert left[0] + left[2] <= right[0]


def test_face_rgb_is_the_pixel_weighted_mean_of_the_sub_boxes():
    rng = np.random.default_rng(3)
    frame = _skinlike_frame(rng, 300, 300)
    box = (40, 30, 220, 240)
    sums = np.zeros(3)
    count = 0
    for sub in face_rois(box):
        st = roi_stats(frame, sub)
        sums += st.rgb * st.n_skin
        count += st.n_skin
    stats = face_stats(frame, box)
    assert stats.n_skin == count
    np.testing.assert_allclose(face_rgb(frame, box), sums / count, rtol=1e-12)


@pytest.mark.parametrize(
    "frame, box",
    [
        (np.zeros((10, 10, 3), np.float32), (0, 0, 5, 5)),
        (np.zeros((10, 10), np.uint8), (0, 0, 5, 5)),
        (np.zeros((10, 10, 3), np.uint8), (0, 0, -1, 5)),
        (np.zeros((10, 10, 3), np.uint8), (0, 0, 5)),
        ([[1, 2, 3]], (0, 0, 1, 1)),
    ],
)
def test_bad_input_raises(frame, box):
    with pytest.raises(BadInputError):
        roi_mean_rgb(frame, box)


def test_unknown_skin_rule_raises():
    with pytest.raises(ConfigError):
        roi_mean_rgb(np.zeros((10, 10, 3), np.uint8), (0, 0, 5, 5), skin="hsv")
