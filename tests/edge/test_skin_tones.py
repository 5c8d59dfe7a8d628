"""Skin tones: the face detector's CLAHE retry (face.tracker.contrast) and the heart-rate error per
Monk tone (issue 10 item 5).

The per-tone heart-rate test runs the synthetic generator at its default settings with only the
rate, the seed, the length and the tone set, on the generator's exact face box, so the detector
plays no part; ``bench/skin_tones.py hr`` gives the full table, through the runtime as well.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge.face import HaarFaceDetector
from edge.spec import DEFAULT, Preprocessing
from edge.tracker import FaceTracker
from firmware_bridge.errors import ConfigError
from firmware_bridge.sim import SimConfig, synth_session


def test_contrast_setting_is_checked_and_recorded():
    with pytest.raises(ConfigError, match="contrast"):
        HaarFaceDetector(contrast="equalise")
    with pytest.raises(ConfigError, match="contrast"):
        FaceTracker(contrast="CLAHE")
    assert DEFAULT.face.tracker_settings == {"contrast": "clahe"}
    # A manifest without the key keeps what bundles computed before it: no retry.
    d = DEFAULT.to_dict()
    d["face"]["tracker"] = {}
    old = Preprocessing.from_dict(d)
    assert FaceTracker(**old.face.tracker_settings).contrast == "none"
    with pytest.raises(ConfigError, match="contrast"):
        DEFAULT.replace(**{"face.tracker": {"contrast": "global"}})


def test_clahe_retry_finds_the_darkest_tone_and_changes_nothing_where_a_face_is_found():
    plain, retry = HaarFaceDetector(), HaarFaceDetector(contrast="clahe")
    dark = synth_session(SimConfig(duration_s=2.0, seed=2, skin_tone=10))
    # The renderer's auto-exposure brings a Monk-10 face to where the plain detector finds it;
    # two stops under that (a dim cabin at night, past the camera's gain) it finds none.
    frames = [(dark.frame(i).astype(np.float32) * 0.25).astype(np.uint8) for i in range(0, 60, 6)]
    assert sum(bool(plain.detect(f)) for f in frames) == 0
    found = [retry.detect(f) for f in frames]
    assert sum(bool(b) for b in found) >= 3
    for i, boxes in zip(range(0, 60, 6), found):
        if boxes:
            x, y, w, h = dark.face_box(i)
            bx, by, bw, bh = boxes[0]
            assert abs((bx + bw / 2) - (x + w / 2)) < 0.2 * w and abs(bw - w) < 0.3 * w
    light = synth_session(SimConfig(duration_s=1.0, seed=2, skin_tone=1))
    for i in range(0, 30, 10):
        assert plain.detect(light.frame(i)) == retry.detect(light.frame(i))


# -- heart rate per tone -----------------------------------------------------------------------

RATES_BPM = (60.0, 120.0, 180.0)
SESSION_S = 10.0
# Issue 10 item 5: the worst tone's mean error at most 1.5x the best tone's.
MAX_TONE_RATIO = 1.5


def _exact_box_error(tone: int, rate: float, seed: int) -> float:
    from edge.preprocess import face_colour
    from edge.signals.hr import heart_rate
    from edge.signals.rppg import rppg_clean, rppg_extract

    s = synth_session(SimConfig(duration_s=SESSION_S, seed=seed, hr_bpm=rate, skin_tone=tone))
    rgb = np.array([face_colour(f, s.face_box(i, exact=True), DEFAULT) for i, f in enumerate(s.frames())])
    fs = float(s.config.fps)
    hr = heart_rate(rppg_clean(rppg_extract(rgb, fs, DEFAULT.rppg.method), fs), fs).hr_bpm
    return abs(float(hr) - s.mean_hr_bpm(0.0, SESSION_S))


@pytest.mark.slow
def test_worst_tone_error_is_within_1_5x_the_best():
    """Every tone sees the same three sessions (same seeds: the same heart, breathing, motion,
    light and sensor noise), so the comparison isolates the skin tone. With a different seed per
    tone the ratio measured the sessions: 3 windows a tone whose errors differ by 1-3 bpm from one
    session to the next whatever the tone (docs/BENCHMARKS.md)."""
    means = {tone: float(np.mean([_exact_box_error(tone, rate, 500 + k) for k, rate in enumerate(RATES_BPM)]))
             for tone in range(1, 11)}
    print("mean |error| per Monk tone, bpm:", {k: round(v, 2) for k, v in means.items()})
    best, worst = min(means.values()), max(means.values())
    assert worst <= MAX_TONE_RATIO * best, means
