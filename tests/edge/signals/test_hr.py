"""Spectral heart rate: simulate pulses of known rate, recover the rate, check SNR and quality."""
from __future__ import annotations

import numpy as np
import pytest
from reference.roi_hr_tfr import heart_rate_ref

from edge.signals.hr import HeartRate, HrTrack, heart_rate, hr_track, snr_quality
from firmware_bridge.errors import BadInputError, ConfigError


def _pulse(bpm, fs, seconds, noise, rng, harmonic=0.3):
    """A PPG-like wave (fundamental plus a weaker first harmonic) in white noise."""
    t = np.arange(int(round(seconds * fs))) / fs
    phase = 2 * np.pi * bpm / 60.0 * t + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase) + harmonic * np.sin(2 * phase + 0.7)
    return wave + noise * rng.standard_normal(t.size)


@pytest.mark.parametrize("fs", [20.0, 30.0])
@pytest.mark.parametrize("noise, tol_bpm", [(0.0, 0.02), (0.3, 0.5)])
def test_recovers_rates_from_45_to_180_bpm(fs, noise, tol_bpm):
    # Noise sd 0.3 against a unit sine is a per-sample SNR of 7.4 dB; in 10 s windows the
    # noise alone scatters the estimate by ~0.1 bpm (max ~0.3 over these 28 rates).
    rng = np.random.default_rng(0)
    errors = []
    for bpm in np.linspace(45, 180, 28):
        est = heart_rate(_pulse(bpm, fs, 10.0, noise, rng), fs)
        assert isinstance(est, HeartRate) and 0 < est.quality <= 1
        errors.append(est.hr_bpm - bpm)
    assert np.max(np.abs(errors)) < tol_bpm


def test_snr_and_quality_fall_with_noise():
    fs = 30.0
    snrs, quals = [], []
    for noise in [0.0, 0.5, 1.5, 4.0]:
        est = heart_rate(_pulse(72, fs, 10.0, noise, np.random.default_rng(7)), fs)
        snrs.append(est.snr_db)
        quals.append(est.quality)
    assert np.all(np.diff(snrs) < 0) and np.all(np.diff(quals) < 0)
    assert quals[0] > 0.9 and quals[-1] < 0.5


def test_quality_is_a_monotone_map_into_unit_interval():
    snr = np.linspace(-40, 40, 81)
    q = snr_quality(snr)
    assert np.all(np.diff(q) > 0) and q[0] >= 0 and q[-1] <= 1
    assert snr_quality(0.0) == pytest.approx(0.5)
    assert snr_quality(np.nan) == 0.0


@pytest.mark.parametrize(
    "pulse", [np.zeros(300), np.full(300, 0.1), np.full(300, 1e6), np.r_[np.ones(299), np.nan]]
)
def test_no_band_power_gives_nan_and_zero_quality(pulse):
    est = heart_rate(pulse, 30.0)
    assert np.isnan(est.hr_bpm) and np.isnan(est.snr_db) and est.quality == 0.0


def test_matches_scipy_periodogram_reference():
    rng = np.random.default_rng(2)
    for bpm in [48.0, 77.7, 133.0]:
        x = _pulse(bpm, 25.0, 12.0, 0.8, rng)
        est = heart_rate(x, 25.0)
        hr_ref, snr_ref = heart_rate_ref(x, 25.0)
        assert est.hr_bpm == pytest.approx(hr_ref, abs=1e-9)
        assert est.snr_db == pytest.approx(snr_ref, abs=1e-9)


def test_track_follows_a_rate_step_and_reports_window_ends():
    rng = np.random.default_rng(3)
    fs = 30.0
    x = np.r_[_pulse(60, fs, 30.0, 0.3, rng), _pulse(100, fs, 30.0, 0.3, rng)]
    tr = hr_track(x, fs, window_s=10.0, hop_s=2.0)
    assert isinstance(tr, HrTrack)
    np.testing.assert_allclose(tr.t_s, np.arange(10.0, 60.01, 2.0))
    assert np.all(np.abs(tr.hr_bpm[tr.t_s <= 30] - 60) < 1.0)
    assert np.all(np.abs(tr.hr_bpm[tr.t_s >= 40] - 100) < 1.0)
    # Each window equals heart_rate on the same samples.
    k = 7
    start = int(round((tr.t_s[k] - 10.0) * fs))
    single = heart_rate(x[start : start + 300], fs)
    assert tr.hr_bpm[k] == pytest.approx(single.hr_bpm, abs=1e-9)
    assert tr.quality[k] == pytest.approx(single.quality, abs=1e-12)


def test_track_marks_only_windows_holding_nan():
    rng = np.random.default_rng(4)
    x = _pulse(80, 30.0, 30.0, 0.3, rng)
    x[450] = np.nan  # at 15 s: windows ending 16..25 s include it
    tr = hr_track(x, 30.0)
    bad = np.isnan(tr.hr_bpm)
    np.testing.assert_array_equal(bad, (tr.t_s > 15.0) & (tr.t_s - 10.0 <= 15.0))
    assert np.all(tr.quality[bad] == 0) and np.all(np.abs(tr.hr_bpm[~bad] - 80) < 1)


def test_errors():
    with pytest.raises(BadInputError):
        hr_track(np.zeros(100), 30.0, window_s=10.0)
    with pytest.raises(BadInputError):
        heart_rate(np.zeros((10, 2)), 30.0)
    with pytest.raises(BadInputError):
        heart_rate(np.zeros(4), 30.0)
    with pytest.raises(ConfigError):
        heart_rate(np.zeros(300), 6.0)  # hi = 3.5 Hz is above fs/2
    with pytest.raises(ConfigError):
        hr_track(np.zeros(300), 30.0, hop_s=0)
