"""The heart-rate quality gate (``edge.signals.hr``: gate_features, gate_quality, pulse_quality)
and its setting ``preprocessing.rppg.hr_gate``: "logistic" by default, "snr" (today's gate) for
a manifest that does not name it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edge
from edge.signals.hr import (
    GATE_COEF, GATE_FEATURES, GATES, gate_features, gate_quality, heart_rate, pulse_quality, snr_quality,
)
from edge.spec import DEFAULT, Preprocessing
from firmware_bridge.errors import BadInputError, ConfigError

FS = 30.0
DEFAULT_MANIFEST = Path(edge.__file__).parent / "default_bundle" / "manifest.json"


# An rPPG pulse is in units of relative colour change: a face's is about 1-3 % peak (the
# synthetic faces' POS pulse has an sd of 1-3 %, the real webcam clip's 6-13 %).
SCALE = 0.03


def _pulse(rate_bpm: float, noise: float, seed: int, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS
    return SCALE * (np.sin(2 * np.pi * rate_bpm / 60.0 * t) + noise * rng.standard_normal(n))


def test_features_are_finite_named_and_in_their_ranges():
    for x in (_pulse(72.0, 0.1, 0), _pulse(72.0, 3.0, 1), np.zeros(300)):
        f = gate_features(x, FS, heart_rate(x, FS))
        assert f.shape == (len(GATE_FEATURES),) and np.all(np.isfinite(f))
        assert -20.0 <= f[GATE_FEATURES.index("snr_db")] <= 30.0
        assert f[GATE_FEATURES.index("amplitude_log")] <= -1.0
        assert f[GATE_FEATURES.index("beats_ok")] in (0.0, 1.0)
    assert len(GATE_COEF) == len(GATE_FEATURES)


def test_a_clean_pulse_passes_and_white_noise_does_not():
    # A noisy but clear 72 bpm pulse (SNR a few dB), against noise alone of the same size.
    good = [pulse_quality(x, FS, heart_rate(x, FS)) for x in (_pulse(72.0, 0.7, s) for s in range(10))]
    rng = np.random.default_rng(5)
    bad = []
    for _ in range(30):
        x = SCALE * rng.standard_normal(300)
        bad.append(pulse_quality(x, FS, heart_rate(x, FS)))
    assert min(good) >= 0.5, good
    assert max(bad) < 0.5, bad


def test_the_snr_gate_is_the_snr_logistic_and_no_estimate_scores_zero():
    x = _pulse(90.0, 1.0, 3)
    h = heart_rate(x, FS)
    assert pulse_quality(x, FS, h, "snr") == pytest.approx(snr_quality(h.snr_db))
    flat = np.zeros(300)
    for gate in GATES:
        assert pulse_quality(flat, FS, heart_rate(flat, FS), gate) == 0.0


def test_bad_gate_and_bad_features_raise():
    x = _pulse(90.0, 1.0, 3)
    with pytest.raises(ConfigError, match="gate"):
        pulse_quality(x, FS, heart_rate(x, FS), "median")
    with pytest.raises(BadInputError):
        gate_quality(np.ones(3))
    with pytest.raises(BadInputError):
        gate_quality(np.full(len(GATE_FEATURES), np.nan))


def test_default_record_uses_the_fitted_gate_and_round_trips():
    assert DEFAULT.rppg.hr_gate == "logistic"
    d = DEFAULT.to_dict()
    assert d["rppg"]["hr_gate"] == "logistic" and Preprocessing.from_dict(d) == DEFAULT


def test_a_manifest_without_the_key_keeps_the_snr_gate_and_writes_back_unchanged():
    d = json.loads(json.dumps(DEFAULT.to_dict()))
    del d["rppg"]["hr_gate"]
    p = Preprocessing.from_dict(d)
    assert p.rppg.hr_gate == "snr" and p.to_dict() == d
    assert p.replace(**{"rppg.hr_gate": "logistic"}).replace(**{"rppg.hr_gate": "snr"}) == p
    shipped = json.loads(DEFAULT_MANIFEST.read_text())["preprocessing"]
    if "hr_gate" not in shipped["rppg"]:
        assert Preprocessing.from_dict(shipped).rppg.hr_gate == "snr"


@pytest.mark.parametrize("bad", ["median", 1, None])
def test_an_unknown_gate_is_one_config_error(bad):
    d = DEFAULT.to_dict()
    d["rppg"]["hr_gate"] = bad
    with pytest.raises(ConfigError, match=r"preprocessing\.rppg\.hr_gate"):
        Preprocessing.from_dict(d)
