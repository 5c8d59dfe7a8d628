"""The adaptive skin rule (skin judged against the face's own median colour): a NumPy reference,
every Monk tone of the synthetic subjects, walls and hair, bit-stability, no per-frame
allocation, the record's setting, and the real webcam clip's heart rate against the finger BVP."""
from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from edge.signals.roi import (
    ADAPTIVE_BOX_MIN_SHARE,
    ADAPTIVE_BOX_RULE,
    ADAPTIVE_CHROMA_RADIUS,
    ADAPTIVE_MIN_REDNESS,
    ADAPTIVE_STRIDE,
    FULL_SKIN_FRACTION,
    SKIN_RULES,
    face_rgb,
    face_stats,
    roi_stats,
)
from edge.spec import DEFAULT, Preprocessing
from firmware_bridge.errors import ConfigError
from firmware_bridge.sim import SimConfig, synth_session
from helpers import shared_path

RULE = "adaptive"


def _adaptive_ref(frame_bgr, boxes):
    """NumPy/OpenCV reference for integral boxes with whole-pixel edges: when at least
    ADAPTIVE_BOX_MIN_SHARE of every ADAPTIVE_STRIDE-th pixel of the boxes passes the fixed
    ADAPTIVE_BOX_RULE, that rule; else the lower median of Y, Cr, Cb over those pixels, then
    the mean RGB of the pixels inside the chroma box and the luminance band (None when the
    median is not reddish)."""
    ycc = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2YCrCb).astype(np.int64)
    sample = np.concatenate([ycc[y:y + h:ADAPTIVE_STRIDE, x:x + w:ADAPTIVE_STRIDE].reshape(-1, 3)
                             for x, y, w, h in boxes])
    cr_lo, cr_hi, cb_lo, cb_hi = SKIN_RULES[ADAPTIVE_BOX_RULE]

    def in_box(c):
        return (c[:, 1] >= cr_lo) & (c[:, 1] <= cr_hi) & (c[:, 2] >= cb_lo) & (c[:, 2] <= cb_hi)

    if in_box(sample).sum() >= ADAPTIVE_BOX_MIN_SHARE * len(sample):
        pix = np.concatenate([frame_bgr[y:y + h, x:x + w].reshape(-1, 3) for x, y, w, h in boxes])
        keep = np.concatenate([in_box(ycc[y:y + h, x:x + w].reshape(-1, 3)) for x, y, w, h in boxes])
        return pix[keep][:, ::-1].astype(np.float64).mean(axis=0), int(keep.sum())
    med = np.sort(sample, axis=0)[(len(sample) - 1) // 2]
    if med[1] - med[2] < ADAPTIVE_MIN_REDNESS:
        return None
    y_lo, y_hi = (med[0] + 1) // 2, min(med[0] + med[0] // 2, 254)
    pix, keep = [], []
    for x, y, w, h in boxes:
        c = ycc[y:y + h, x:x + w].reshape(-1, 3)
        keep.append((np.abs(c[:, 1] - med[1]) <= ADAPTIVE_CHROMA_RADIUS)
                    & (np.abs(c[:, 2] - med[2]) <= ADAPTIVE_CHROMA_RADIUS)
                    & (c[:, 0] >= y_lo) & (c[:, 0] <= y_hi))
        pix.append(frame_bgr[y:y + h, x:x + w].reshape(-1, 3))
    keep, pix = np.concatenate(keep), np.concatenate(pix)
    return pix[keep][:, ::-1].astype(np.float64).mean(axis=0), int(keep.sum())


def test_matches_the_reference_on_skin_like_frames():
    rng = np.random.default_rng(11)
    for trial in range(12):
        base = np.array([90, 120, 170]) * rng.uniform(0.2, 1.3)  # B, G, R: dark to light skin
        frame = np.clip(base + rng.normal(0, 12, (90, 120, 3)), 0, 255).astype(np.uint8)
        boxes = [tuple(int(v) for v in rng.integers([0, 0, 8, 8], [60, 50, 50, 40])) for _ in range(2)]
        got = roi_stats(frame, boxes[0], skin=RULE, edges="pixel")
        want = _adaptive_ref(frame, boxes[:1])
        assert want is not None and got.n_skin == want[1] > 0
        np.testing.assert_allclose(got.rgb, want[0], rtol=0, atol=1e-9)
        got = face_stats(frame, (0, 0, 100, 80), skin=RULE, regions={"a": (0.1, 0.1, 0.5, 0.4),
                                                                     "b": (0.5, 0.5, 0.9, 0.9)}, edges="pixel")
        want = _adaptive_ref(frame, [(10, 8, 40, 24), (50, 40, 40, 32)])
        assert got.n_skin == want[1]
        np.testing.assert_allclose(got.rgb, want[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("tone", range(1, 11))
def test_every_monk_tone_keeps_its_skin(tone):
    # The synthetic subjects at their default settings: the fixed box drops whole faces of the
    # lightest and darkest tones; the adaptive rule must keep a full region weight on >= 90 %
    # of frames of every tone.
    s = synth_session(SimConfig(duration_s=4.0, seed=40 + tone, skin_tone=tone))
    shares = []
    for i, frame in enumerate(s.frames()):
        st = face_stats(frame, s.face_box(i, exact=True), skin=RULE)
        assert np.all(np.isfinite(st.rgb))
        shares.append(st.n_skin / st.n_box)
    shares = np.asarray(shares)
    assert np.mean(shares >= FULL_SKIN_FRACTION) >= 0.9, (tone, np.percentile(shares, [5, 50]))
    # ...and where the fixed box holds the face it is the mask: the same pixels as that rule.
    same = np.array([face_stats(f, s.face_box(i, exact=True), skin=ADAPTIVE_BOX_RULE).n_skin
                     == face_stats(f, s.face_box(i, exact=True), skin=RULE).n_skin for i, f in enumerate(s.frames())])
    if tone in (5, 6, 7, 8):  # Cr well inside the box's 133-173 at these tones
        assert same.mean() >= 0.9


@pytest.mark.parametrize("bgr", [(128, 128, 128), (235, 235, 235), (60, 60, 60), (40, 30, 25)])
def test_walls_and_black_hair_are_not_skin(bgr):
    # Grey and white walls, and blue-black hair, have a median that is not reddish: no skin, even
    # with camera noise, as one box or as a face's three regions.
    rng = np.random.default_rng(3)
    frame = np.clip(np.array(bgr) + rng.normal(0, 2.0, (120, 160, 3)), 0, 255).astype(np.uint8)
    for edges in ("pixel", "fractional"):
        st = roi_stats(frame, (10.5, 10.5, 80, 60), skin=RULE, edges=edges)
        assert st.n_skin == 0 and np.all(np.isnan(st.rgb))
        assert face_stats(frame, (20.3, 10.7, 100, 100), skin=RULE, edges=edges).n_skin == 0


@pytest.mark.parametrize("tone", [1, 2, 3])
def test_hair_over_the_forehead_is_rejected_by_the_cheeks_colour(tone):
    # A fringe of dark brown hair (reddish, so the redness test alone would keep it) over the
    # whole forehead region of a face the fixed box cuts (the lightest tones): the regions'
    # pooled median is the cheeks' skin, so the hair falls outside the luminance band and the
    # forehead drops out of the mean. (Where the fixed box holds >= 90 % of the face it is the
    # mask, as before the adaptive rule, and it passes dark brown hair: Cr >= 133.)
    s = synth_session(SimConfig(duration_s=1.0, seed=5, skin_tone=tone))
    frame = s.frame(3).copy()
    x, y, w, h = s.face_box(3)
    rng = np.random.default_rng(1)
    fy0, fy1 = int(y + 0.02 * h), int(y + 0.24 * h)
    fx0, fx1 = int(x + 0.25 * w), int(x + 0.75 * w)
    hair = np.array([18, 24, 36]) + rng.normal(0, 3, (fy1 - fy0, fx1 - fx0, 3))  # B, G, R
    frame[fy0:fy1, fx0:fx1] = np.clip(hair, 0, 255).astype(np.uint8)
    cheeks = {k: v for k, v in DEFAULT.rppg.roi_fractions.items() if k != "forehead"}
    with_hair = face_stats(frame, (x, y, w, h), skin=RULE)
    only_cheeks = face_stats(frame, (x, y, w, h), skin=RULE, regions=cheeks)
    assert with_hair.n_skin < 1.05 * only_cheeks.n_skin
    np.testing.assert_allclose(with_hair.rgb, only_cheeks.rgb, atol=3.0)
    assert np.all(with_hair.rgb > np.array([36, 24, 18]) + 10)  # not pulled towards the hair


def test_same_frame_same_result_and_views_equal_copies():
    s = synth_session(SimConfig(duration_s=1.0, seed=9, skin_tone=7))
    frame, box = s.frame(4), s.face_box(4, exact=True)
    first = face_stats(frame, box, skin=RULE)
    again = face_stats(frame.copy(), box, skin=RULE)
    assert first.n_skin == again.n_skin and first.rgb.tobytes() == again.rgb.tobytes()
    big = np.zeros((frame.shape[0] * 2, frame.shape[1] * 2, 3), np.uint8)
    big[::2, ::2] = frame
    view = face_stats(big[::2, ::2], box, skin=RULE)
    assert view.rgb.tobytes() == first.rgb.tobytes()


def test_no_per_frame_images_are_allocated():
    s = synth_session(SimConfig(duration_s=1.0, seed=9, skin_tone=4))
    frame, box = s.frame(2), s.face_box(2, exact=True)
    face_rgb(frame, box, skin=RULE)  # compile, and this thread's histogram
    tracemalloc.start()
    try:
        face_rgb(frame, box, skin=RULE)
        roi_stats(frame, (100, 100, 300, 300), skin=RULE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000  # a mask of the 300 x 300 box alone would be 90 kB


def test_record_setting():
    assert DEFAULT.rppg.skin == RULE
    d = DEFAULT.to_dict()
    assert d["rppg"]["skin"] == RULE and Preprocessing.from_dict(d).rppg.skin == RULE
    d["rppg"]["skin"] = "chai_ngan_wide"  # an old bundle's manifest keeps its box rule
    assert Preprocessing.from_dict(d).rppg.skin == "chai_ngan_wide"
    d["rppg"]["skin"] = "median"
    with pytest.raises(ConfigError, match="skin"):
        Preprocessing.from_dict(d)
    with pytest.raises(ConfigError, match="skin"):
        roi_stats(np.zeros((8, 8, 3), np.uint8), (0, 0, 4, 4), skin="Adaptive")


@pytest.mark.realdata
def test_real_clip_heart_rate_is_as_good_as_with_the_box_rule():
    from edge.offline import hr_session, resample_uniform
    from edge.signals.filters import bandpass
    from edge.signals.hr import heart_rate

    clip = "rppg/physrecorder-v01"
    video = shared_path(f"{clip}/video_ZIP_H264.avi")
    stamps = shared_path(f"{clip}/frames_timestamp.csv")
    bvp_csv = np.loadtxt(shared_path(f"{clip}/BVP.csv"), delimiter=",", skiprows=1)
    fs_bvp = 1.0 / float(np.median(np.diff(bvp_csv[:, 0])))
    t_bvp, bvp = resample_uniform(bvp_csv[:, 0], bvp_csv[:, 1], fs_bvp)
    bvp = bandpass(bvp[:, 0], fs_bvp, 0.7, 3.5)
    errors = {}
    for rule in ("chai_ngan_wide", RULE):
        est = hr_session(video, DEFAULT.replace(**{"rppg.skin": rule}), timestamps=stamps, min_pulse_quality=0.0)
        assert est.track.t_s.size == 11 and np.all(np.isfinite(est.track.hr_bpm))
        ends = est.t0_s + est.track.t_s
        ref = np.array([heart_rate(bvp[(t_bvp > e - 10.0) & (t_bvp <= e)], fs_bvp).hr_bpm for e in ends])
        errors[rule] = np.abs(est.track.hr_bpm - ref)
    print({k: np.round(v, 2).tolist() for k, v in errors.items()})
    assert np.mean(errors[RULE]) < 3.0
    assert np.mean(errors[RULE]) <= np.mean(errors["chai_ngan_wide"]) + 0.5
    assert np.max(errors[RULE]) <= np.max(errors["chai_ngan_wide"]) + 1.0
