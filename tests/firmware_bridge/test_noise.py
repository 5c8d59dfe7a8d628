"""ECG noise generator: each kind has the spectrum and time structure it claims, seeds
reproduce, and add_noise hits the requested NST signal-to-noise ratio."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.sim.noise import (
    NOISE_KINDS,
    add_noise,
    ecg_noise,
    nst_noise_power,
    nst_signal_power,
)

FS = 360.0
N = int(120 * FS)


def _band_fraction(x: np.ndarray, fs: float, lo: float, hi: float) -> float:
    f, p = sps.welch(x, fs=fs, nperseg=int(8 * fs))
    return float(p[(f >= lo) & (f <= hi)].sum() / p.sum())


def _window_rms(x: np.ndarray, fs: float) -> np.ndarray:
    w = int(fs)
    win = x[: x.size // w * w].reshape(-1, w)
    return win.std(axis=1)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_each_kind_has_unit_nst_power_and_reproduces(kind):
    a = ecg_noise(N, FS, kind, seed=7)
    assert a.shape == (N,) and a.dtype == np.float64 and np.all(np.isfinite(a))
    assert nst_noise_power(a, FS) == pytest.approx(1.0, rel=1e-9)
    np.testing.assert_array_equal(a, ecg_noise(N, FS, kind, seed=7))
    assert not np.allclose(a, ecg_noise(N, FS, kind, seed=8))


def test_baseline_wander_is_slow():
    x = ecg_noise(N, FS, "bw", seed=1)
    assert _band_fraction(x, FS, 0.0, 1.0) > 0.95


@pytest.mark.parametrize("fs", [360.0, 250.0, 100.0])
def test_muscle_artefact_is_band_limited_and_bursty(fs):
    x = ecg_noise(int(120 * fs), fs, "ma", seed=2)
    hi = min(150.0, 0.45 * fs)
    assert _band_fraction(x, fs, 18.0, hi + 5.0) > 0.9
    rms = _window_rms(x, fs)
    # Contractions: some seconds much louder than the typical one.
    assert rms.max() > 3.0 * np.median(rms)


def test_electrode_motion_sits_in_the_ecg_band_and_varies():
    x = ecg_noise(N, FS, "em", seed=3)
    assert _band_fraction(x, FS, 0.3, 20.0) > 0.8
    assert _band_fraction(x, FS, 40.0, FS / 2) < 0.02
    rms = _window_rms(x, FS)
    assert rms.max() > 2.0 * np.median(rms)
    # Steps and transients: heavier tails than Gaussian noise of the same power.
    d = np.diff(x)
    kurtosis = np.mean((d - d.mean()) ** 4) / np.var(d) ** 2
    assert kurtosis > 4.0


def _toy_ecg(n: int, fs: float, pp_mv: float) -> tuple[np.ndarray, np.ndarray]:
    """Narrow symmetric QRS-like spikes (peak-to-peak pp_mv) every 0.8 s."""
    t = np.arange(n) / fs
    beats = np.arange(int(0.4 * fs), n - int(0.4 * fs), int(0.8 * fs))
    x = np.zeros(n)
    for b in beats:
        x += pp_mv * np.exp(-0.5 * ((t - b / fs) / 0.01) ** 2)
    return x, beats


def test_signal_power_follows_the_nst_definition():
    x, beats = _toy_ecg(int(60 * FS), FS, pp_mv=2.0)
    assert nst_signal_power(x, FS, qrs=beats) == pytest.approx(2.0**2 / 8, rel=1e-3)
    assert nst_signal_power(x, FS) == pytest.approx(2.0**2 / 8, rel=1e-3)


@pytest.mark.parametrize("snr_db", [12.0, 6.0, 0.0, -6.0])
@pytest.mark.parametrize("kinds", [("bw", "ma", "em"), ("em",), ("ma", "bw")])
def test_add_noise_hits_the_requested_snr(snr_db, kinds):
    x, beats = _toy_ecg(int(60 * FS), FS, pp_mv=1.5)
    y = add_noise(x, FS, snr_db, kinds=kinds, seed=4, qrs=beats)
    measured = 10 * np.log10(nst_signal_power(x, FS, qrs=beats) / nst_noise_power(y - x, FS))
    assert measured == pytest.approx(snr_db, abs=1e-6)
    # Lower SNR means more noise (same seed, same shape).
    y2 = add_noise(x, FS, snr_db - 6.0, kinds=kinds, seed=4, qrs=beats)
    assert np.std(y2 - x) == pytest.approx(2.0 * np.std(y - x), rel=0.01)


def test_kind_streams_are_independent_of_the_mix():
    bw = ecg_noise(N, FS, "bw", seed=5)
    x = np.zeros(N)
    x[:: int(FS)] = 1.0  # something with a measurable QRS amplitude
    y = add_noise(x, FS, 0.0, kinds=("bw",), seed=5)
    noise = y - x
    assert np.corrcoef(noise, bw)[0, 1] > 0.999999


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown ECG noise kind"):
        ecg_noise(N, FS, "pl", seed=0)
    with pytest.raises(ConfigError, match="at least 1 s"):
        ecg_noise(10, FS, "bw", seed=0)
    with pytest.raises(ConfigError, match=">= 50 Hz"):
        ecg_noise(1000, 20.0, "bw", seed=0)
    with pytest.raises(ConfigError, match="kinds"):
        add_noise(np.ones(N), FS, 6.0, kinds=())
    with pytest.raises(BadInputError, match="finite"):
        add_noise(np.full(N, np.nan), FS, 6.0)
    with pytest.raises(BadInputError, match="qrs"):
        add_noise(np.ones(N), FS, 6.0, qrs=np.array([N + 5]))
