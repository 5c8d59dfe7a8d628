"""ppg_peaks: heart rate against the ECG of the same recording, beat-by-beat pairing with
R peaks, synthetic pulses with known peaks, and agreement with the SciPy reference."""
from __future__ import annotations

import numpy as np
import pytest
from reference.physio import ppg_peaks_ref

from edge.signals.ecg import ecg_peaks
from edge.signals.hrv import hrv_time
from edge.signals.ppg import ppg_peaks
from firmware_bridge.errors import BadInputError
from helpers import shared_path

realdata = pytest.mark.realdata


@pytest.fixture(scope="module")
def resting():
    path = shared_path("physio/neurokit/bio_resting_5min_100hz.csv")
    data = np.genfromtxt(path, delimiter=",", names=True)
    return data["ECG"], data["PPG"], 100.0


@realdata
def test_heart_rate_matches_the_ecg(resting):
    ecg, ppg, fs = resting
    hr_ecg = hrv_time(ecg_peaks(ecg, fs), fs).mean_hr_bpm
    hr_ppg = hrv_time(ppg_peaks(ppg, fs), fs).mean_hr_bpm
    print(f"resting 5 min: HR from ECG {hr_ecg:.2f} bpm, from PPG {hr_ppg:.2f} bpm")
    assert 80.0 < hr_ecg < 95.0
    assert abs(hr_ppg - hr_ecg) <= 2.0


@realdata
def test_each_heartbeat_has_one_pulse(resting):
    ecg, ppg, fs = resting
    r = ecg_peaks(ecg, fs)
    p = ppg_peaks(ppg, fs)
    # Pulse arrival at the finger: each R peak is followed by a systolic peak 100-500 ms later.
    lag = np.array([p[np.searchsorted(p, rr)] - rr for rr in r[:-1] if np.searchsorted(p, rr) < p.size]) / fs
    assert np.mean((lag > 0.1) & (lag < 0.5)) >= 0.98
    assert abs(p.size - r.size) <= 0.01 * r.size


def synthetic_ppg(fs: float, duration_s: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pulses made of a systolic and a smaller, later diastolic Gaussian on a varying RR
    series, plus respiratory baseline and noise; returns (ppg, systolic_peak_indices)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * fs)) / fs
    rr = 0.75 + 0.1 * np.sin(2 * np.pi * 0.1 * np.arange(300)) + rng.normal(0, 0.02, 300)
    peaks_t = 0.6 + np.concatenate([[0.0], np.cumsum(rr)])
    peaks_t = peaks_t[peaks_t < duration_s - 0.6]
    x = np.zeros_like(t)
    for pt in peaks_t:
        x += np.exp(-0.5 * ((t - pt) / 0.08) ** 2) + 0.4 * np.exp(-0.5 * ((t - pt - 0.3) / 0.1) ** 2)
    x += 0.3 * np.sin(2 * np.pi * 0.25 * t) + rng.normal(0, 0.02, t.size)
    return x, np.round(peaks_t * fs).astype(np.int64)


@pytest.mark.parametrize("fs", [25.0, 64.0, 100.0, 500.0])
def test_synthetic_ppg_peaks(fs):
    x, truth = synthetic_ppg(fs, 120.0, seed=int(fs))
    peaks = ppg_peaks(x, fs)
    assert peaks.dtype == np.int64 and np.all(np.diff(peaks) > 0)
    assert peaks.size == truth.size
    # The band-pass shifts an asymmetric pulse's maximum slightly: within 40 ms.
    assert np.max(np.abs(peaks - truth)) / fs <= 0.040


@realdata
def test_kernel_matches_reference(resting):
    _, ppg, fs = resting
    # Same rules and SciPy-compatible filtering: identical indices.
    np.testing.assert_array_equal(ppg_peaks(ppg, fs), ppg_peaks_ref(ppg, fs))


def test_kernel_matches_reference_synthetic():
    x, _ = synthetic_ppg(64.0, 60.0, seed=5)
    np.testing.assert_array_equal(ppg_peaks(x, 64.0), ppg_peaks_ref(x, 64.0))


def test_input_validation():
    x, _ = synthetic_ppg(100.0, 10.0, seed=1)
    with pytest.raises(BadInputError, match="1-D"):
        ppg_peaks(x[:, None], 100.0)
    with pytest.raises(BadInputError, match="NaN"):
        ppg_peaks(np.where(np.arange(x.size) == 5, np.inf, x), 100.0)
    with pytest.raises(BadInputError, match="fs >= 20"):
        ppg_peaks(x, 10.0)
    assert ppg_peaks(x[:50], 100.0).size == 0
    assert ppg_peaks(np.full(3000, 1.7), 100.0).size == 0  # flat: no pulses in rounding noise
