"""Heart rate: simulate pulses of known rate, recover the rate, check SNR, quality and gaps."""
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
        assert est.spectral_bpm == pytest.approx(hr_ref, abs=1e-9)
        assert est.snr_db == pytest.approx(snr_ref, abs=1e-9)
        assert heart_rate(x, 25.0, method="spectral").hr_bpm == pytest.approx(hr_ref, abs=1e-9)


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


def test_track_bridges_a_short_gap_and_blanks_only_windows_with_a_long_one():
    rng = np.random.default_rng(4)
    fs = 30.0
    x = _pulse(80, fs, 40.0, 0.3, rng)
    x[450] = np.nan  # one sample at 15 s: bridged
    x[600:621] = np.nan  # 0.7 s at 20 s: bridged
    x[900:960] = np.nan  # 2 s at 30 s: longer than max_gap_s = 1 s
    tr = hr_track(x, fs)
    bad = np.isnan(tr.hr_bpm)
    # A window is blank when it holds more than 1 s (30 samples) of the 2-s run.
    starts = np.round((tr.t_s - 10.0) * fs).astype(int)
    held = np.array([np.isnan(x[s : s + 300][np.arange(300) + s >= 900]).sum() for s in starts])
    long_gap = held > 30
    assert long_gap.sum() == 9
    np.testing.assert_array_equal(bad, long_gap)
    assert np.all(tr.quality[bad] == 0) and np.all(np.abs(tr.hr_bpm[~bad] - 80) < 1)
    assert np.all(tr.missing_fraction[bad] > 0)


def test_short_gaps_barely_move_the_estimate():
    rng = np.random.default_rng(5)
    fs = 30.0
    for bpm in [55.0, 90.0, 140.0]:
        x = _pulse(bpm, fs, 10.0, 0.3, rng)
        clean = heart_rate(x, fs)
        holed = x.copy()
        holed[[40, 41, 170]] = np.nan
        holed[220:250] = np.nan  # 1.0 s, the limit
        est = heart_rate(holed, fs)
        assert est.missing_fraction == pytest.approx(33 / 300)
        assert abs(est.hr_bpm - bpm) < 1.0 and abs(est.hr_bpm - clean.hr_bpm) < 1.0
        assert est.quality > 0.5


@pytest.mark.parametrize(
    "holes, why",
    [((slice(100, 131),), "a 1.03 s run"), ((slice(0, 20), slice(60, 80), slice(120, 140),
                                             slice(180, 190)), "23 % missing")],
)
def test_gaps_beyond_the_limits_give_no_value(holes, why):
    x = _pulse(75, 30.0, 10.0, 0.1, np.random.default_rng(6))
    for h in holes:
        x[h] = np.nan
    est = heart_rate(x, 30.0)
    assert np.isnan(est.hr_bpm) and np.isnan(est.snr_db) and est.quality == 0.0, why
    # A looser limit bridges the same window.
    assert abs(heart_rate(x, 30.0, max_gap_s=2.0, max_missing_fraction=0.3).hr_bpm - 75) < 1.5


def _rsa_pulse(fs, seconds, mean_bpm, rsa_depth, resp_hz, noise, rng):
    """A pulse whose beat rate swings with breathing (respiratory sinus arrhythmia).

    Returns the pulse and its beat (upstroke) times, so the mean-IBI truth is known.
    """
    t = np.arange(int(round(seconds * fs))) / fs
    f0 = mean_bpm / 60.0
    ph_r = rng.uniform(0, 2 * np.pi)
    # Instantaneous rate f0 * (1 + d sin(2 pi fr t + ph_r)); phase is its integral.
    swing = np.cos(2 * np.pi * resp_hz * t + ph_r) - np.cos(ph_r)
    phase = 2 * np.pi * f0 * (t - rsa_depth / (2 * np.pi * resp_hz) * swing) + rng.uniform(0, 2 * np.pi)
    x = np.sin(phase) + 0.3 * np.sin(2 * phase + 0.7) + noise * rng.standard_normal(t.size)
    return x, phase


@pytest.mark.parametrize("fs", [30.0, 100.0])
def test_fused_follows_the_mean_beat_rate_under_sinus_arrhythmia(fs):
    # 8 % breathing-driven swings of the beat rate, as at rest: the 10-s spectral peak
    # wanders from the mean beat rate, the beat timing does not.
    rng = np.random.default_rng(8)
    err_fused, err_spec = [], []
    for mean_bpm in np.linspace(55, 110, 12):
        x, phase = _rsa_pulse(fs, 10.0, mean_bpm, 0.08, rng.uniform(0.15, 0.3), 0.05, rng)
        # Truth: the beats are where the phase passes whole cycles (mod 2 pi at the upstroke
        # zero crossing of sin); the mean beat rate is cycles / time between first and last.
        k = np.arange(np.ceil(phase[0] / (2 * np.pi)), np.floor(phase[-1] / (2 * np.pi)) + 1)
        t_beats = np.interp(2 * np.pi * k, phase, np.arange(phase.size) / fs)
        truth = 60.0 * (k.size - 1) / (t_beats[-1] - t_beats[0])
        est = heart_rate(x, fs)
        assert np.isfinite(est.beats_bpm) and est.n_beats >= k.size - 1
        err_fused.append(abs(est.hr_bpm - truth))
        err_spec.append(abs(est.spectral_bpm - truth))
    assert np.mean(err_fused) < 0.3 and np.mean(err_fused) < 0.5 * np.mean(err_spec)


def test_spectral_method_ignores_beats_and_fused_keeps_steady_tones_spectral():
    rng = np.random.default_rng(9)
    x = _pulse(72, 30.0, 10.0, 0.0, rng)
    spec = heart_rate(x, 30.0, method="spectral")
    assert spec.n_beats == 0 and np.isnan(spec.beats_bpm)
    fused = heart_rate(x, 30.0)
    # A steady rhythm: beats found and agreeing, but the spectral peak is reported.
    assert fused.n_beats >= 11 and abs(fused.beats_bpm - 72) < 0.05
    assert fused.hr_bpm == spec.hr_bpm == fused.spectral_bpm


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
    with pytest.raises(ConfigError):
        heart_rate(np.zeros(300), 30.0, method="welch")
    with pytest.raises(ConfigError):
        hr_track(np.zeros(300), 30.0, max_missing_fraction=1.5)
