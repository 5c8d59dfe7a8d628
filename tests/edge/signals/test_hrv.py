"""hrv: known RR series give the textbook values; missed and extra beats are rejected,
not averaged in; the kernel agrees with its plain-Python twin."""
from __future__ import annotations

import math

import numpy as np
import pytest
from reference.physio import hrv_ref

from edge.signals.hrv import HRV, hrv_time, nn_mask
from firmware_bridge.errors import BadInputError

FS = 1000.0  # 1 sample = 1 ms keeps the expected values exact


def peaks_from_rr(rr_s: np.ndarray, fs: float = FS) -> np.ndarray:
    return np.round(np.concatenate([[0.0], np.cumsum(rr_s)]) * fs).astype(np.int64) + 500


def test_constant_rhythm():
    out = hrv_time(peaks_from_rr(np.full(60, 0.8)), FS)
    assert isinstance(out, HRV)
    assert out.mean_hr_bpm == pytest.approx(75.0)
    assert out.sdnn_ms == pytest.approx(0.0, abs=1e-9) and out.rmssd_ms == pytest.approx(0.0, abs=1e-9)
    assert out.n_beats == 61


def test_alternating_rhythm():
    rr = np.tile([0.8, 0.9], 30)
    out = hrv_time(peaks_from_rr(rr), FS)
    assert out.mean_hr_bpm == pytest.approx(60.0 / 0.85)
    assert out.sdnn_ms == pytest.approx(np.std(rr, ddof=1) * 1000.0)
    assert out.rmssd_ms == pytest.approx(100.0)


def test_random_rhythm_matches_the_formulas():
    rng = np.random.default_rng(0)
    rr = 0.9 + 0.03 * np.sin(np.arange(300) * 2 * np.pi / 12) + rng.normal(0, 0.015, 300)
    rr = np.round(rr, 3)
    out = hrv_time(peaks_from_rr(rr), FS)
    assert out.mean_hr_bpm == pytest.approx(60.0 / rr.mean())
    assert out.sdnn_ms == pytest.approx(np.std(rr, ddof=1) * 1000.0, rel=1e-9)
    assert out.rmssd_ms == pytest.approx(np.sqrt(np.mean(np.diff(rr) ** 2)) * 1000.0, rel=1e-9)


def test_missed_and_extra_beats_are_rejected():
    rng = np.random.default_rng(1)
    rr = np.round(0.8 + rng.normal(0, 0.01, 200), 3)
    clean = peaks_from_rr(rr)
    base = hrv_time(clean, FS)
    missed = np.delete(clean, 50)                                 # one 1.6-s interval
    extra = np.sort(np.append(clean, (clean[120] + clean[121]) // 2))  # two 0.4-s intervals
    for peaks, n_bad in ((missed, 1), (extra, 2)):
        mask = nn_mask(peaks, FS)
        assert (~mask).sum() == n_bad
        out = hrv_time(peaks, FS)
        assert out.mean_hr_bpm == pytest.approx(base.mean_hr_bpm, abs=0.1)
        assert out.sdnn_ms == pytest.approx(base.sdnn_ms, rel=0.05)
        assert out.rmssd_ms == pytest.approx(base.rmssd_ms, rel=0.1)
    # Without rejection the extra beat alone would have doubled SDNN.
    assert np.std(np.diff(extra), ddof=1) * 1000 > 2 * base.sdnn_ms


def test_physiological_range():
    rr = np.array([0.8] * 10 + [2.5] + [0.8] * 10 + [0.2] + [0.8] * 10)
    mask = nn_mask(peaks_from_rr(rr), FS)
    assert mask.tolist() == [r == 0.8 for r in rr]


def test_too_few_beats_give_nan():
    for peaks in (np.array([], dtype=np.int64), np.array([100])):
        out = hrv_time(peaks, FS)
        assert all(math.isnan(v) for v in out[:3]) and out.n_beats == 0
    out = hrv_time(np.array([100, 900]), FS)
    assert out.mean_hr_bpm == pytest.approx(75.0) and math.isnan(out.sdnn_ms) and math.isnan(out.rmssd_ms)
    assert out.n_beats == 2
    out = hrv_time(np.array([0, 3000]), FS)  # only an impossible interval
    assert math.isnan(out.mean_hr_bpm) and out.n_beats == 0


def test_kernel_matches_reference():
    rng = np.random.default_rng(2)
    rr = 0.75 + rng.normal(0, 0.04, 500)
    rr[rng.choice(500, 25, replace=False)] *= rng.choice([0.5, 1.6, 2.0, 3.5], 25)  # artefacts
    peaks = peaks_from_rr(rr, fs=256.0)
    got = hrv_time(peaks, 256.0)
    want = hrv_ref(peaks, 256.0)
    np.testing.assert_allclose(got[:3], want[:3], rtol=1e-12)
    assert got.n_beats == want[3]


def test_input_validation():
    with pytest.raises(BadInputError, match="increasing"):
        hrv_time(np.array([100, 50, 900]), FS)
    with pytest.raises(BadInputError, match="increasing"):
        hrv_time(np.array([100, 100, 900]), FS)
    with pytest.raises(BadInputError, match="integer"):
        hrv_time(np.array([1.5, 900.0]), FS)
    with pytest.raises(BadInputError, match="1-D"):
        hrv_time(np.zeros((2, 2), dtype=np.int64), FS)
    with pytest.raises(BadInputError, match="fs"):
        hrv_time(np.array([1, 900]), -1.0)
