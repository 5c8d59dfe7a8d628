"""Auto-exposure of the synthetic camera: bounded gain, tone order kept, relative pulse kept,
and the device's face tracker finding every Monk tone.

The tracker test imports edge (tests may import both layers; firmware_bridge itself does not).
The photo tests need ../shared/data/faces and are skipped without it.
"""
from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.errors import ConfigError
from firmware_bridge.sim import SimConfig, synth_session
from firmware_bridge.sim.face import AE_GAIN_RANGE, AE_TARGET_LUMA, PBV_RGB, Motion, auto_exposure_gain
from firmware_bridge.sim.faces import tone_pulse_factors
from tests.helpers import SHARED_DATA

FACES = SHARED_DATA / "faces"
needs_faces = pytest.mark.skipif(not (FACES / "labels.csv").is_file(), reason="../shared/data/faces is absent")
STILL = dict(duration_s=1.0, noise_sigma=0.0, motion_px=0.0, motion_scale_pct=0.0, illumination_pct=0.0)


def test_gain_is_bounded_and_moves_toward_the_target():
    lo, hi = AE_GAIN_RANGE
    assert auto_exposure_gain(1.0) == pytest.approx(hi)
    assert auto_exposure_gain(255.0 * 50) == pytest.approx(lo)
    assert auto_exposure_gain(AE_TARGET_LUMA) == pytest.approx(1.0)
    dark, light = auto_exposure_gain(40.0), auto_exposure_gain(200.0)
    assert 1.0 < dark <= hi and lo <= light < 1.0
    # Partial compensation: the dark meter ends brighter, yet still below the target.
    assert 40.0 < 40.0 * dark < AE_TARGET_LUMA
    with pytest.raises(ConfigError):
        auto_exposure_gain(0.0)
    with pytest.raises(ConfigError):
        auto_exposure_gain(100.0, strength=1.5)
    with pytest.raises(ConfigError):
        SimConfig(auto_exposure="yes")


@needs_faces
def test_session_gain_within_range_and_tone_order_kept():
    lo, hi = AE_GAIN_RANGE
    lumas, gains = {}, {}
    for tone in range(1, 11):
        s = synth_session(faces=str(FACES), skin_tone=tone, **STILL)
        gains[tone] = s.exposure_gain
        lumas[tone] = _skin_luma_of(s)
    assert all(lo <= g <= hi for g in gains.values())
    # Darker tones get more gain, and still render darker (tones 2 and 3 have equal luma swatches).
    assert gains[10] > gains[5] > gains[1]
    assert lumas[1] > lumas[10] + 40.0
    order = [lumas[t] for t in range(3, 11)]
    assert all(a > b for a, b in zip(order, order[1:])), lumas
    off = synth_session(faces=str(FACES), skin_tone=10, auto_exposure=False, **STILL)
    assert off.exposure_gain == 1.0
    assert lumas[10] > 1.2 * _skin_luma_of(off)


def _skin_luma_of(s) -> float:
    frame = s.frame(0).astype(np.float64)
    w = s.skin_mask(0) > 0.5
    b, g, r = (frame[:, :, c][w].mean() for c in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


@needs_faces
@pytest.mark.parametrize("tone", [1, 6, 10])
def test_relative_pulse_per_channel_unchanged_by_exposure(tone):
    # Frames at blood volume -1 and +1 with the same index share their noise, so their
    # difference is the pulse alone (the noise only dithers the rounding).
    amp = 0.01
    expected = [amp * f * p / PBV_RGB[1] for f, p in zip(tone_pulse_factors(tone), PBV_RGB)]
    for ae in (False, True):
        s = synth_session(faces=str(FACES), skin_tone=tone, auto_exposure=ae, pulse_amplitude=amp,
                          **{**STILL, "noise_sigma": 2.0})
        r = s._renderer
        lo_f = r.render(0, -1.0, 1.0, Motion(0.0, 0.0, 1.0)).astype(np.float64)
        hi_f = r.render(0, 1.0, 1.0, Motion(0.0, 0.0, 1.0)).astype(np.float64)
        # Saturated pixels carry no pulse (tone 1 at the fixed exposure clips its highlights).
        w = (s.skin_mask(0) > 0.9) & (lo_f.max(axis=2) < 250.0)
        for c, want in zip((2, 1, 0), expected):  # BGR frame, RGB expectations
            a, b = lo_f[:, :, c][w].mean(), hi_f[:, :, c][w].mean()
            rel = (a - b) / (a + b)  # = amp * weight, since I = base * (1 -+ amp * weight)
            assert rel == pytest.approx(want, rel=0.1, abs=2e-4), (ae, c, rel, want, s.exposure_gain)


@needs_faces
def test_tracker_finds_every_tone():
    from edge.tracker import FaceTracker

    for tone in range(1, 11):
        s = synth_session(faces=str(FACES), skin_tone=tone, duration_s=2.0)
        tracker = FaceTracker()
        found = sum(tracker.update(s.frame(i)).box is not None for i in range(s.n_frames))
        assert found >= 0.95 * s.n_frames, (tone, found, s.n_frames)
