"""Facial expression and per-subject appearance of the synthetic face."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from firmware_bridge.errors import ConfigError
from firmware_bridge.sim import FaceAppearance, SimConfig, synth_session
from firmware_bridge.sim.expression import PHOTO_LANDMARKS, ExpressionRig, expression_trajectory
from firmware_bridge.sim.face import FaceRenderer, Motion

STILL = dict(motion_px=0.0, motion_scale_pct=0.0, illumination_pct=0.0, noise_sigma=0.0)
# A small frame with the face filling most of it: the dataset's layout.
SMALL = dict(frame_size=(128, 128), face_scale=0.55, face_center=(0.5, 0.5))


def _frame(**kw) -> tuple[np.ndarray, object]:
    s = synth_session(SimConfig(duration_s=0.2, seed=1, **STILL, **kw))
    return s.frame(0), s


def _to_frame(renderer: FaceRenderer, landmark: str) -> tuple[float, float]:
    (ox, oy), (kx, ky) = renderer._placement
    x, y = PHOTO_LANDMARKS[landmark]
    return ox + kx * x, oy + ky * y


def _luma(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)


def test_defaults_render_exactly_the_plain_photo():
    plain = synth_session(SimConfig(duration_s=1, seed=3, frame_size=(160, 120)))
    same = synth_session(SimConfig(duration_s=1, seed=3, frame_size=(160, 120), expression_valence=0.0,
                                   expressivity=2.5, face_appearance=FaceAppearance()))
    for i in (0, 17, 29):
        assert np.array_equal(plain.frame(i), same.frame(i))
        assert np.array_equal(plain.skin_mask(i), same.skin_mask(i))
    r0 = FaceRenderer((160, 120), seed=1, noise_sigma=2)
    r1 = FaceRenderer((160, 120), seed=1, noise_sigma=2, appearance=FaceAppearance())
    m = Motion(1.0, -0.5, 1.01)
    assert np.array_equal(r0.render(4, 0.3, 1.02, m), r1.render(4, 0.3, 1.02, m, expression=(0.0, 0.0)))


def test_expression_leaves_the_other_streams_alone():
    base = dict(duration_s=4, seed=7, frame_size=(128, 128), motion_px=2.0)
    a = synth_session(SimConfig(**base))
    b = synth_session(SimConfig(**base, expression_valence=((0, -1), (4, 1)), expression_arousal=0.5))
    for name in ("ecg", "ppg", "eda"):
        assert np.array_equal(getattr(a, name).values, getattr(b, name).values)
    assert np.array_equal(a.bvp, b.bvp)
    assert all(a.face_box(i) == b.face_box(i) and a.motion(i) == b.motion(i) for i in range(0, len(a), 13))
    assert not np.array_equal(a.frame(60), b.frame(60))


def test_expression_trajectory_follows_the_knots_times_expressivity():
    s = synth_session(SimConfig(duration_s=10, frame_size=(128, 128), expression_valence=((2, -0.5), (8, 1.0)),
                                expression_arousal=0.4, expressivity=1.2))
    v = np.array([s.expression(i)[0] for i in range(len(s))])
    a = np.array([s.expression(i)[1] for i in range(len(s))])
    t = s.frame_times_s
    want = np.clip(1.2 * np.interp(t, [2, 8], [-0.5, 1.0]), -1.5, 1.5)
    assert np.allclose(v, want)
    assert np.allclose(a, 0.48)
    # Held beyond the ends, clipped at the rig's limit (1.2 x 1.0 is inside it; 3 x 1 is not).
    assert v[0] == pytest.approx(-0.6) and v[-1] == pytest.approx(1.2)
    s3 = synth_session(SimConfig(duration_s=1, frame_size=(128, 128), expression_valence=1.0, expressivity=3.0))
    assert s3.expression(5) == (1.5, 0.0)


def _vshift(ref: np.ndarray, img: np.ndarray, x: float, y: float, half_w: int, half_h: int) -> int:
    """Vertical shift (px, > 0 = down) of the content around (x, y) from ref to img: the
    offset that best matches the column-averaged luma profiles."""
    x0, x1 = int(x) - half_w, int(x) + half_w + 1
    y0, y1 = int(y) - half_h, int(y) + half_h
    profile = _luma(ref)[y0:y1, x0:x1].mean(axis=1)
    errors = {d: np.sum((_luma(img)[y0 + d:y1 + d, x0:x1].mean(axis=1) - profile) ** 2) for d in range(-6, 7)}
    return min(errors, key=errors.get)


def _teeth(img: np.ndarray, x: float, y: float, half_w: int, half_h: int) -> int:
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[int(y) - half_h:int(y) + half_h, int(x) - half_w:int(x) + half_w]
    return int(np.sum((hsv[:, :, 1] < 60) & (hsv[:, :, 2] > 170)))


def test_smile_lifts_the_mouth_corners_and_frown_lowers_them():
    # The photo's own exposure: the teeth count below uses absolute brightness thresholds.
    neutral, s = _frame(**SMALL, auto_exposure=False)
    smile, _ = _frame(**SMALL, expression_valence=1.0, auto_exposure=False)
    frown, _ = _frame(**SMALL, expression_valence=-1.0, auto_exposure=False)
    renderer = s._renderer
    for corner in ("mouth_left", "mouth_right"):
        cx, cy = _to_frame(renderer, corner)
        assert _vshift(neutral, smile, cx, cy, 4, 10) < 0, corner  # content moved up
        assert _vshift(neutral, frown, cx, cy, 4, 10) > 0, corner  # content moved down
    # The photo's open smile shows teeth (bright, unsaturated); pressed lips hide most of them.
    kx, ky = renderer._placement[1]
    mx, my = _to_frame(renderer, "mouth_center")
    teeth = [_teeth(img, mx, my, int(16 * kx), int(8 * ky)) for img in (frown, neutral, smile)]
    assert teeth[0] < 0.7 * teeth[1] and teeth[2] > teeth[1], teeth


def test_arousal_opens_the_eyes_and_raises_the_brows():
    open_, s = _frame(frame_size=(320, 240), face_scale=0.6, expression_arousal=1.0)
    closed, _ = _frame(frame_size=(320, 240), face_scale=0.6, expression_arousal=-1.0)
    neutral, _ = _frame(frame_size=(320, 240), face_scale=0.6)
    renderer = s._renderer
    kx, ky = renderer._placement[1]
    for eye, brow in (("eye_left", "brow_left"), ("eye_right", "brow_right")):
        ex, ey = _to_frame(renderer, eye)
        box = (slice(int(ey - 6 * ky), int(ey + 6 * ky)), slice(int(ex - 7 * kx), int(ex + 7 * kx)))
        # Dark pixels (iris, pupil, lashes) in the eye box: more when the eye is wider open.
        dark = [np.sum(_luma(img)[box] < 90) for img in (closed, neutral, open_)]
        assert dark[0] < dark[1] < dark[2], (eye, dark)
        bx, by = _to_frame(renderer, brow)
        # 4 photo px up at unit arousal, about 6 px here.
        assert _vshift(neutral, open_, bx, by, int(4 * kx), int(4 * ky)) <= -3, brow
        # Lowered lids do not lift the brows (the lid warp's tail reaches them by < 1 px).
        assert 0 <= _vshift(neutral, closed, bx, by, int(4 * kx), int(4 * ky)) <= 1, brow


def test_pulse_survives_a_changing_expression():
    s = synth_session(SimConfig(duration_s=8, seed=2, hr_bpm=80, frame_size=(160, 160), face_scale=0.55,
                                face_center=(0.5, 0.5), noise_sigma=1.0, motion_px=0.0, motion_scale_pct=0.0,
                                illumination_pct=0.0,
                                expression_valence=((0, -1), (2, 1), (4, -1), (6, 1), (8, 0))))
    green = []
    for i in range(len(s)):
        w = s.skin_mask(i)
        green.append(np.sum(s.frame(i)[:, :, 1] * w) / np.sum(w))
    green = np.asarray(green)
    # The expression changes the skin's mean slowly (period 4 s); the pulse is the fast part.
    hp = green - np.convolve(green, np.ones(15) / 15, mode="same")
    bvp = s.bvp - np.convolve(s.bvp, np.ones(15) / 15, mode="same")
    sl = slice(15, -15)
    assert np.corrcoef(hp[sl], bvp[sl])[0, 1] < -0.8


def test_appearance_makes_subjects_look_different():
    plain, s0 = _frame(**SMALL)
    tint = FaceAppearance(skin_tone_rgb=(1.08, 1.0, 0.94), wall_tone_rgb=(0.7, 1.0, 1.3))
    tinted, s1 = _frame(**SMALL, face_appearance=tint)
    # Face colour: the R/G ratio over the skin moves by the gain ratio, the wall by its own.
    m = s0.skin_mask(0) > 0.9
    rg0 = plain[m][:, 2].mean() / plain[m][:, 1].mean()
    rg1 = tinted[m][:, 2].mean() / tinted[m][:, 1].mean()
    assert rg1 / rg0 == pytest.approx(1.08, rel=0.02)
    # The studio backdrop behind the subject (top left corner of the frame) takes the wall tint.
    corner = (slice(0, 8), slice(0, 8))
    assert tinted[corner][:, :, 0].mean() / plain[corner][:, :, 0].mean() == pytest.approx(1.3, rel=0.03)
    assert tinted[corner][:, :, 2].mean() / plain[corner][:, :, 2].mean() == pytest.approx(0.7, rel=0.03)
    # Proportions: the face box stretches with the face.
    _, wide = _frame(**SMALL, face_appearance=FaceAppearance(width_scale=1.15, height_scale=0.9))
    x0, y0, w0, h0 = s0.face_box(0)
    x1, y1, w1, h1 = wide.face_box(0)
    assert w1 / w0 == pytest.approx(1.15, abs=0.03) and h1 / h0 == pytest.approx(0.9, abs=0.03)
    # Landmark offsets change the face but not its box, and the skin is still skin for the ROI rule.
    geo, s2 = _frame(**SMALL, face_appearance=FaceAppearance(eye_spacing=1.0, mouth_width=-1.0, brow_height=0.5))
    assert s2.face_box(0) == s0.face_box(0)
    assert np.abs(geo.astype(int) - plain.astype(int)).max() > 20
    ycc = cv2.cvtColor(tinted, cv2.COLOR_BGR2YCrCb)
    skin_rule = cv2.inRange(ycc, (0, 133, 77), (255, 173, 135)) > 0
    assert np.sum(skin_rule & m) > 0.8 * np.sum(m)


def test_haar_still_finds_an_expressive_restyled_face():
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    look = FaceAppearance(skin_tone_rgb=(1.05, 0.98, 0.95), width_scale=1.08, eye_spacing=0.5)
    for v, a in ((1.0, 0.5), (-1.0, -0.5)):
        img, s = _frame(frame_size=(320, 240), expression_valence=v, expression_arousal=a, face_appearance=look)
        found = cascade.detectMultiScale(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), 1.1, 5)
        assert len(found) == 1
        x, y, w, h = s.face_box(0)
        fx, fy, fw, fh = found[0]
        assert abs((fx + fw / 2) - (x + w / 2)) < 0.15 * w and abs((fy + fh / 2) - (y + h / 2)) < 0.15 * h


def test_rig_field_is_zero_at_rest_and_local():
    rig = ExpressionRig((128, 128), (-80.0, -40.0), (0.5, 0.5))
    assert rig.field(0.0, 0.0) is None
    f = rig.field(1.0, 0.0)
    assert f.shape == (128, 128, 2) and f.dtype == np.float32
    # Far from the face (the frame's corner) nothing moves; at a mouth corner it moves up.
    assert np.abs(f[0, 0]).max() < 1e-3
    x, y = -80 + 0.5 * PHOTO_LANDMARKS["mouth_left"][0], -40 + 0.5 * PHOTO_LANDMARKS["mouth_left"][1]
    assert f[int(round(y)), int(round(x)), 1] < -2.0
    img = np.random.default_rng(0).uniform(0, 255, (128, 128, 3)).astype(np.float32)
    assert rig.warp(img, None) is img


def test_expression_and_appearance_are_validated():
    for bad in (dict(expression_valence=1.5), dict(expression_arousal=-2), dict(expression_valence=((1, 0), (0, 1))),
                dict(expression_valence=((0, 0.5), (1, 1.2))), dict(expressivity=-0.1), dict(expressivity=4),
                dict(expression_valence="happy"), dict(face_appearance=3)):
        with pytest.raises(ConfigError):
            SimConfig(**bad)
    for bad in (dict(skin_tone_rgb=(1.5, 1, 1)), dict(skin_tone_rgb=(1, 1)), dict(width_scale=2),
                dict(eye_spacing=-1.5), dict(wall_tone_rgb=(1, np.nan, 1))):
        with pytest.raises(ConfigError):
            FaceAppearance(**bad)
    c = SimConfig(expression_valence=[[0, 0.2], [5, -0.3]], face_appearance=dict(width_scale=1.1))
    assert c.expression_valence == ((0.0, 0.2), (5.0, -0.3))
    assert c.face_appearance == FaceAppearance(width_scale=1.1)
    hash(c)
    assert expression_trajectory(0.25)(np.zeros(3)).tolist() == [0.25] * 3
