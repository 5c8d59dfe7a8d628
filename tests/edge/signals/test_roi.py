"""ROI colour means: the Numba kernels against an OpenCV/NumPy reference, clipping, NaN cases,
fractional (area-weighted) region edges and how regions combine."""
from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
from reference.roi_hr_tfr import roi_mean_rgb_ref

from edge.signals.roi import (
    FACE_ROI_FRACTIONS,
    FULL_SKIN_FRACTION,
    MIN_SKIN_FRACTION,
    ROI_EDGES,
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
        for box in [face, (0, 0, 640, 480), *face_rois(face, edges="pixel")]:
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
    subs = face_rois(box, edges="pixel")
    assert all(isinstance(v, int) for sub in subs for v in sub)
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
    for sub in face_rois(box, edges="pixel"):
        st = roi_stats(frame, sub, edges="pixel")
        sums += st.rgb * st.n_skin
        count += st.n_skin
    stats = face_stats(frame, box, edges="pixel")
    assert stats.n_skin == count
    np.testing.assert_allclose(face_rgb(frame, box, edges="pixel"), sums / count, rtol=1e-12)


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


# -- fractional edges -------------------------------------------------------------------------


def _area_weighted_ref(frame_bgr, box, skin=True):
    """NumPy reference: every pixel (i, j) weighs the area of [j, j+1) x [i, i+1) inside the box."""
    height, width = frame_bgr.shape[:2]
    x, y, w, h = box
    x0, x1 = np.clip([x, x + w], 0, width)
    y0, y1 = np.clip([y, y + h], 0, height)
    cols = np.arange(width)
    rows = np.arange(height)
    wx = np.clip(np.minimum(cols + 1, x1) - np.maximum(cols, x0), 0, 1)
    wy = np.clip(np.minimum(rows + 1, y1) - np.maximum(rows, y0), 0, 1)
    weight = wy[:, None] * wx[None, :]
    if skin:
        cr_lo, cr_hi, cb_lo, cb_hi = SKIN_RULES["chai_ngan_wide" if skin is True else skin]
        ycrcb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YCrCb)
        weight = weight * (cv2.inRange(ycrcb, (0, cr_lo, cb_lo), (255, cr_hi, cb_hi)) > 0)
    total = weight.sum()
    if total == 0:
        return np.full(3, np.nan), 0.0
    rgb = frame_bgr[..., ::-1].astype(np.float64)
    return (rgb * weight[..., None]).sum(axis=(0, 1)) / total, total


def test_half_pixel_shift_gives_the_area_weighted_mean():
    # Columns of distinct colours: a half-pixel shift must count both end columns at half weight.
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[..., 2] = np.array([10, 20, 30, 40, 50, 60], np.uint8)[None, :]  # R by column
    frame[..., 1] = 7
    stats = roi_stats(frame, (1.5, 0, 3, 4), skin=False)
    # Columns 1..4 weigh 0.5, 1, 1, 0.5 over a 3 px wide box.
    assert stats.rgb[0] == pytest.approx((0.5 * 20 + 30 + 40 + 0.5 * 50) / 3, abs=1e-12)
    assert stats.rgb[1] == pytest.approx(7.0, abs=1e-12) and stats.n_box == 12
    # The same half-pixel shift vertically, and a box inside one pixel (its colour, exactly).
    frame[..., 0] = np.array([100, 110, 120, 130], np.uint8)[:, None]
    # Rows 0..2 weigh 0.5, 1, 0.5 over a 2 px tall box.
    assert roi_stats(frame, (0, 0.5, 6, 2), skin=False).rgb[2] == pytest.approx((50 + 110 + 60) / 2, abs=1e-12)
    np.testing.assert_allclose(roi_stats(frame, (2.2, 1.3, 0.5, 0.4), skin=False).rgb, [30, 7, 110], atol=1e-12)


@pytest.mark.parametrize("skin", [True, False, "chai_ngan"])
def test_fractional_matches_the_area_weighted_reference(skin):
    rng = np.random.default_rng(4)
    frame = _skinlike_frame(rng, 60, 80)
    for _ in range(40):
        box = (rng.uniform(-10, 70), rng.uniform(-10, 50), rng.uniform(0.2, 40), rng.uniform(0.2, 30))
        stats = roi_stats(frame, box, skin=skin, edges="fractional")
        want, area = _area_weighted_ref(frame, box, skin)
        np.testing.assert_array_equal(np.isnan(stats.rgb), np.isnan(want))
        np.testing.assert_allclose(stats.rgb, want, rtol=0, atol=1e-9)
        assert stats.n_skin == int(round(area))


@pytest.mark.parametrize("skin", [True, False, "chai_ngan"])
def test_integral_boxes_give_the_whole_pixel_result_exactly(skin):
    rng = np.random.default_rng(5)
    frame = _skinlike_frame(rng, 60, 80)
    for _ in range(60):
        box = tuple(int(v) for v in rng.integers([-20, -20, 0, 0], [90, 70, 50, 40]))
        pixel = roi_stats(frame, box, skin=skin, edges="pixel")
        frac = roi_stats(frame, box, skin=skin, edges="fractional")
        np.testing.assert_array_equal(pixel.rgb, frac.rgb)  # NaN == NaN here
        assert (pixel.n_skin, pixel.n_box) == (frac.n_skin, frac.n_box)


def test_a_sub_pixel_move_changes_the_mean_continuously():
    # A sharp vertical edge (skin-coloured left, darker right) crossed by a box moving 0.01 px per
    # step: the fractional mean moves by at most the step's share of the colour difference; the
    # whole-pixel mean stands still, then jumps by a whole column's share.
    frame = np.zeros((40, 40, 3), np.uint8)
    frame[:, :20] = (120, 150, 200)
    frame[:, 20:] = (60, 75, 100)
    shifts = np.arange(0.0, 2.0, 0.01)
    means = {e: np.array([roi_stats(frame, (10 + d, 5, 15.3, 10), skin=False, edges=e).rgb[0] for d in shifts])
             for e in ROI_EDGES}
    column_share = (200 - 100) / 15.3
    step_frac = np.abs(np.diff(means["fractional"]))
    step_pixel = np.abs(np.diff(means["pixel"]))
    assert step_frac.max() <= 0.01 * column_share * 1.0001
    assert np.all(np.diff(means["fractional"]) < 0)  # moving right takes in more of the dark side
    assert step_pixel.max() >= 0.9 * column_share and np.count_nonzero(step_pixel) <= 4


def test_face_rois_fractional_are_the_exact_fractions():
    box = (100.25, 50.5, 201.0, 240.3)
    frac = face_rois(box, edges="fractional")
    pixel = face_rois(box, edges="pixel")
    for (fx0, fy0, fx1, fy1), sub, whole in zip(FACE_ROI_FRACTIONS.values(), frac, pixel):
        assert sub == pytest.approx((box[0] + fx0 * box[2], box[1] + fy0 * box[3], (fx1 - fx0) * box[2],
                                     (fy1 - fy0) * box[3]), abs=1e-9)
        assert np.max(np.abs(np.subtract(sub, whole))) <= 1.0


def _two_tone_face(skin_rows_forehead: int):
    """A 200 x 200 face box at (0, 0): cheeks of skin colour A, the forehead of skin colour B on
    its first ``skin_rows_forehead`` rows and blue (not skin) below."""
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[:] = (255, 0, 0)  # blue: not skin
    cheek = (120, 150, 200)
    forehead = (100, 140, 210)
    fx0, fy0, fx1, fy1 = (int(v * 200) for v in FACE_ROI_FRACTIONS["forehead"])
    frame[fy0:fy0 + skin_rows_forehead, fx0:fx1] = forehead
    for name in ("left_cheek", "right_cheek"):
        x0, y0, x1, y1 = (int(v * 200) for v in FACE_ROI_FRACTIONS[name])
        frame[y0:y1, x0:x1] = cheek
    return frame, np.array(cheek[::-1], float), np.array(forehead[::-1], float)


def test_regions_combine_by_area_and_skin_share():
    box = (0, 0, 200, 200)
    fx0, fy0, fx1, fy1 = FACE_ROI_FRACTIONS["forehead"]
    rows = round((fy1 - fy0) * 200)  # 28
    area = {k: (v[2] - v[0]) * (v[3] - v[1]) * 200 * 200 for k, v in FACE_ROI_FRACTIONS.items()}
    cheeks = area["left_cheek"] + area["right_cheek"]
    for skin_rows in (rows, 10, 4, 0):
        frame, cheek, forehead = _two_tone_face(skin_rows)
        share = skin_rows / rows
        factor = min(max((share - MIN_SKIN_FRACTION) / (FULL_SKIN_FRACTION - MIN_SKIN_FRACTION), 0), 1)
        wf = area["forehead"] * factor
        want = (cheeks * cheek + wf * forehead) / (cheeks + wf)
        got = face_stats(frame, box, edges="fractional")
        np.testing.assert_allclose(got.rgb, want, rtol=0, atol=1e-9)
        assert got.n_skin == round(cheeks + skin_rows * (fx1 - fx0) * 200)
        # The whole-pixel path pools every skin pixel: a forehead of 4 rows still pulls the mean.
        if skin_rows:
            pooled = face_stats(frame, box, edges="pixel").rgb
            n_forehead = skin_rows * (fx1 - fx0) * 200
            np.testing.assert_allclose(pooled, (cheeks * cheek + n_forehead * forehead) / (cheeks + n_forehead),
                                       atol=1e-9)


def test_when_every_region_is_short_of_skin_the_pooled_skin_mean_is_the_fallback():
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[:] = (255, 0, 0)
    frame[14:16, 70:80] = (120, 150, 200)  # 20 skin pixels in the forehead only
    stats = face_stats(frame, (0, 0, 200, 200), edges="fractional")
    np.testing.assert_allclose(stats.rgb, [200, 150, 120], atol=1e-9)
    assert stats.n_skin == 20
    frame[14:16, 70:80] = (255, 0, 0)
    empty = face_stats(frame, (0, 0, 200, 200), edges="fractional")
    assert np.isnan(empty.rgb).all() and empty.n_skin == 0 and empty.n_box > 0


def test_fractional_face_rgb_allocates_nothing_big():
    rng = np.random.default_rng(6)
    big = rng.integers(0, 256, (1200, 1600, 4), dtype=np.uint8)
    view = big[::2, 1::2, 2::-1]
    box = (100.3, 100.7, 500.2, 400.9)
    face_rgb(view, box, edges="fractional")
    tracemalloc.start()
    try:
        face_rgb(view, box, edges="fractional")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50_000


def test_bad_edge_mode_and_non_finite_box():
    frame = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ConfigError, match="edges"):
        face_rgb(frame, (0, 0, 5, 5), edges="subpixel")
    with pytest.raises(ConfigError, match="edges"):
        face_rois((0, 0, 5, 5), edges=None)
    with pytest.raises(BadInputError):
        roi_stats(frame, (0, np.nan, 5, 5), edges="fractional")
