"""Identities from face photos and Monk skin tones in the synthetic generator.

The tone tests run on the astronaut (no data needed); the identity tests need the face photos in
../shared/data/faces and are skipped without them. The rPPG test runs the project's own chain
(skin ROI -> POS -> cleaning -> spectral heart rate) at the generator's default settings.
"""
from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.errors import ConfigError
from firmware_bridge.sim import SimConfig, synth_session
from firmware_bridge.sim.face import PBV_RGB, FaceRenderer, Motion
from firmware_bridge.sim.faces import MONK_SKIN_TONES, face_library, tone_pulse_factors
from tests.helpers import SHARED_DATA

FACES = SHARED_DATA / "faces"
needs_faces = pytest.mark.skipif(not (FACES / "labels.csv").is_file(), reason="../shared/data/faces is absent")
STILL = dict(duration_s=1.0, noise_sigma=0.0, motion_px=0.0, motion_scale_pct=0.0, illumination_pct=0.0,
             frame_size=(320, 240))


def _skin_luma(session) -> float:
    frame = session.frame(0).astype(np.float64)
    w = session.skin_mask(0) > 0.5
    b, g, r = (frame[:, :, c][w].mean() for c in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_tones_are_distinct_and_ordered_by_luminance():
    # The swatches' fixed exposure (auto-exposure compresses the spread, test_sim_exposure.py).
    lumas = [_skin_luma(synth_session(SimConfig(skin_tone=k, auto_exposure=False, **STILL))) for k in range(1, 11)]
    swatch = [0.299 * r + 0.587 * g + 0.114 * b for r, g, b in (MONK_SKIN_TONES[k] for k in range(1, 11))]
    print("skin luma per Monk tone:", np.round(lumas, 1), "swatch luma:", np.round(swatch, 1))
    # The skin's luminance follows the swatches' (whose tones 2 and 3 are equally light, 233
    # and 235): the same order, in proportion, and darker with every step from tone 3 on.
    assert np.array_equal(np.argsort(lumas), np.argsort(swatch))
    assert np.allclose(np.asarray(lumas) / np.asarray(swatch), np.mean(np.asarray(lumas) / np.asarray(swatch)),
                       rtol=0.05)
    assert all(a > b for a, b in zip(lumas[2:], lumas[3:])) and lumas[0] > lumas[1]
    assert lumas[0] / lumas[-1] > 4.0


def test_the_tone_changes_the_hue_towards_the_swatch():
    for k in (2, 6, 8):
        s = synth_session(SimConfig(skin_tone=k, **STILL))
        frame = s.frame(0).astype(np.float64)
        w = s.skin_mask(0) > 0.5
        rgb = np.array([frame[:, :, c][w].mean() for c in (2, 1, 0)])
        swatch = np.asarray(MONK_SKIN_TONES[k], np.float64)
        # Same chromaticity as the swatch within 3 %: the photo's shading only scales it.
        assert np.allclose(rgb / rgb.sum(), swatch / swatch.sum(), atol=0.03 / 3)


def test_pulse_strength_falls_with_melanin_and_stays_mostly_green():
    factors = np.array([tone_pulse_factors(k) for k in range(1, 11)])
    assert np.all(factors <= 1.0) and np.all(factors > 0.0)
    swatches = np.array([MONK_SKIN_TONES[k] for k in range(1, 11)], np.float64)
    # Each channel's pulse survives less where the swatch is darker in that channel (the
    # published tones 2 and 3 are about equally light), and falls at every step from tone 3.
    for c in range(3):
        assert np.array_equal(np.argsort(factors[:, c]), np.argsort(swatches[:, c]))
    assert np.all(np.diff(factors[2:], axis=0) < 0)
    assert factors[0, 1] > 0.98 and 0.35 < factors[-1, 1] < 0.55
    for k in range(1, 11):
        truth = synth_session(SimConfig(skin_tone=k, duration_s=1.0)).face_truth
        amp = truth["pulse_amplitude_rgb"]
        assert truth["skin_tone"] == k
        assert amp[1] == max(amp)  # green carries the most pulse at every tone


@pytest.mark.parametrize("tone", [1, 5, 10])
def test_rendered_pulse_matches_the_recorded_amplitude(tone):
    # Relative darkening of the skin between bvp = 0 and 1, per channel, is what the truth says.
    r = FaceRenderer((320, 240), pulse_amplitude=0.004, skin_tone=tone)
    still = Motion(0.0, 0.0, 1.0)
    a = r.render(0, 0.0, 1.0, still).astype(np.float64)
    b = r.render(0, 1.0, 1.0, still).astype(np.float64)
    w = r.skin_mask(still) > 0.99
    # Uint8 rounding needs bright enough pixels to resolve a 0.1 % change: measure on sums.
    measured = [1.0 - b[:, :, c][w].sum() / a[:, :, c][w].sum() for c in (2, 1, 0)]
    expected = [0.004 * f * p / PBV_RGB[1] for f, p in zip(tone_pulse_factors(tone), PBV_RGB)]
    print(tone, np.round(measured, 5), np.round(expected, 5))
    assert np.allclose(measured, expected, rtol=0.25, atol=2e-4)


@pytest.mark.parametrize("faces", [None, pytest.param(str(FACES), marks=needs_faces)])
def test_a_printed_photo_carries_no_pulse_at_any_tone(faces):
    for tone in (1, 6, 10):
        s = synth_session(SimConfig(skin_tone=tone, pulse_amplitude=0.0, faces=faces, seed=4, **STILL))
        first = s.frame(0)
        # Without noise, motion or light change, nothing but the pulse could change a pixel.
        assert all(np.array_equal(first, s.frame(i)) for i in range(1, len(s), 5))
        s_live = synth_session(SimConfig(skin_tone=tone, pulse_amplitude=0.003, faces=faces, seed=4, **STILL))
        assert any(not np.array_equal(s_live.frame(0), s_live.frame(i)) for i in range(1, len(s_live), 5))


def test_tone_and_identity_settings_are_validated(tmp_path):
    for bad in (0, 11, 2.5, True, "5"):
        with pytest.raises(ConfigError):
            SimConfig(skin_tone=bad)
    with pytest.raises(ConfigError, match="identity needs faces"):
        SimConfig(identity=3)
    with pytest.raises(ConfigError, match="does not exist"):
        synth_session(SimConfig(faces=str(tmp_path / "nowhere"), duration_s=1.0))
    with pytest.raises(ConfigError, match="no face photo"):
        synth_session(SimConfig(faces=str(tmp_path), duration_s=1.0))


def test_default_session_is_still_the_astronaut_without_a_tone():
    truth = synth_session(SimConfig(duration_s=1.0)).face_truth
    assert truth["identity"] == "astronaut" and truth["skin_tone"] is None


def test_tone_sessions_are_deterministic_by_seed():
    a = synth_session(SimConfig(skin_tone=7, seed=3, duration_s=1.0, frame_size=(160, 120)))
    b = synth_session(SimConfig(skin_tone=7, seed=3, duration_s=1.0, frame_size=(160, 120)))
    assert all(np.array_equal(a.frame(i), b.frame(i)) for i in (0, 7, 29))


# -- identities (need the face photos) -------------------------------------------------------

@needs_faces
def test_library_prefers_neutral_photos_one_per_identity():
    import csv

    lib = face_library(str(FACES))
    rows = {r["file"]: r for r in csv.DictReader(open(FACES / "labels.csv", newline=""))}
    assert len(lib) > 1000
    assert all(rows[f]["expression"] == "neutral" for f, _ in lib.entries)
    assert len({ident for _, ident in lib.entries}) == len(lib)
    # The images folder itself finds labels.csv one level up: the same library.
    assert face_library(str(FACES / "images")).entries == lib.entries


@needs_faces
def test_photo_geometry_is_found_and_deterministic():
    lib = face_library(str(FACES))
    photos = [lib.photo(i) for i in range(0, len(lib), len(lib) // 40)]
    detected = np.mean([p.detected for p in photos])
    print(f"Haar box found on {detected:.0%} of {len(photos)} photos")
    assert detected >= 0.85
    for p in photos:
        x, y, w, h = p.face_box
        ex_l, ey_l = p.landmarks["eye_left"]
        ex_r, _ = p.landmarks["eye_right"]
        _, my = p.landmarks["mouth_center"]
        assert x < ex_l < ex_r < x + w and y < ey_l < my < y + h
        # The pulsing skin is a good part of the face, not a speck nor the whole tile.
        assert 0.15 < p.skin.sum() / (w * h) < 0.8
    from firmware_bridge.sim.faces import load_photo

    again = load_photo(lib.folder / photos[3].file, photos[3].identity)
    assert again.face_box == photos[3].face_box and np.array_equal(again.skin, photos[3].skin)


@needs_faces
def test_identities_differ_and_follow_the_seed():
    cfg = dict(faces=str(FACES), **STILL)
    truths = [synth_session(SimConfig(seed=seed, **cfg)).face_truth for seed in range(8)]
    assert len({t["identity"] for t in truths}) >= 6
    assert len({t["skin_tone"] for t in truths}) >= 4
    again = synth_session(SimConfig(seed=5, **cfg))
    assert again.face_truth == truths[5]
    # Another setting (here the sensor noise) does not change who the subject is.
    assert synth_session(SimConfig(seed=5, **dict(cfg, noise_sigma=3.0))).face_truth == truths[5]
    a = synth_session(SimConfig(identity=10, skin_tone=5, **cfg)).frame(0)
    b = synth_session(SimConfig(identity=11, skin_tone=5, **cfg)).frame(0)
    by_name = synth_session(SimConfig(identity=face_library(str(FACES)).entries[10][1], skin_tone=5, **cfg))
    assert np.array_equal(a, by_name.frame(0))
    x, y, w, h = by_name.face_box(0)
    face = (slice(y, y + h), slice(x, x + w))
    diff = np.mean(np.abs(a[face].astype(np.int16) - b[face].astype(np.int16)))
    print(f"mean difference of two identities inside the face box: {diff:.1f} grey levels")
    assert diff > 15.0


@needs_faces
def test_expressions_follow_the_photo_landmarks():
    s = synth_session(SimConfig(faces=str(FACES), identity=20, skin_tone=4, **STILL))
    rig = s._renderer.rig
    field = rig.field(valence=1.0)
    x, y = rig._to_frame("mouth_left")
    # The smile lifts this photo's mouth corner (dy < 0) and leaves its forehead alone.
    assert field[round(y), round(x), 1] < -1.0
    fx, fy = rig._to_frame("brow_left")
    assert abs(field[round(fy) - 15, round(fx), 1]) < 0.2


# -- the project's rPPG at every tone ---------------------------------------------------------

def _rppg_hr(session):
    from edge.signals import rppg as rppg_mod
    from edge.signals.hr import heart_rate
    from edge.signals.roi import face_rgb
    from edge.spec import DEFAULT

    extract = rppg_mod.rppg_extract
    # The runtime's skin rule (the default preprocessing's, "adaptive" since 2026-12): the
    # fixed Chai & Ngan box rejects tone 1 once auto-exposure darkens it (Cr < 133).
    rule = DEFAULT.rppg.skin
    rgb = np.array([face_rgb(f, session.face_box(i), skin=rule) for i, f in enumerate(session.frames())])
    fs = session.config.fps
    return heart_rate(rppg_mod.rppg_clean(extract(rgb, fs, method="pos"), fs), fs)


# Monk 10 failed here while the camera had a fixed exposure and the ROI the fixed Chai & Ngan box
# (its swatch sits at Cr 130-131, under the box's floor of 133); with auto-exposure and the
# runtime's adaptive rule it passes, so it is an ordinary case now.
_TONES = list(range(1, 11))


@pytest.mark.slow
@pytest.mark.parametrize("tone", _TONES)
def test_rppg_recovers_the_pulse_at_every_tone(tone):
    # The generator's defaults (640x480, face 35 % of the height, motion, light ramp, noise).
    s = synth_session(SimConfig(duration_s=15.0, seed=11, hr_bpm=75.0, skin_tone=tone))
    est = _rppg_hr(s)
    truth = s.mean_hr_bpm(0.0, 15.0)
    print(f"Monk {tone}: truth {truth:.1f} estimate {est.hr_bpm:.1f} bpm, quality {est.quality:.2f}")
    assert abs(est.hr_bpm - truth) <= 3.0
