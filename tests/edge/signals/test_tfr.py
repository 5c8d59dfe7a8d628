"""TFR images: the ridge follows a known frequency; kernels match the SciPy/NumPy references."""
from __future__ import annotations

import json

import numpy as np
import pytest
from reference.roi_hr_tfr import tfr_cwt_ref, tfr_stft_ref

from edge.signals.tfr import tfr_compute, tfr_frequencies, tfr_params
from firmware_bridge.errors import BadInputError, ConfigError

FS = 30.0
# Z-scored images take values of a few units; float32 output keeps ~1e-7 of that, and the
# Morlet kernel's phasor/Gaussian recurrences drift ~1e-12 relative over a window.
REF_TOL = 1e-4


def _chirp(f0, f1, seconds, noise=0.0, seed=0):
    """Linear chirp f0 -> f1 Hz; returns (signal, instantaneous frequency per sample)."""
    t = np.arange(int(round(seconds * FS))) / FS
    f_inst = f0 + (f1 - f0) * t / t[-1]
    x = np.sin(2 * np.pi * np.cumsum(f_inst) / FS)
    return x + noise * np.random.default_rng(seed).standard_normal(t.size), f_inst


def _column_times_s(params, n):
    """Where the image's columns sit in time (see the tfr module docstring)."""
    t_cols = params["shape"][1]
    if params["kind"] == "cwt":
        return np.linspace(0, n - 1, t_cols) / FS
    nperseg = int(round(params["nperseg_s"] * FS))
    hop = max(1, int(round(nperseg * (1 - params["overlap"]))))
    last = (n - nperseg) // hop * hop
    return np.linspace((nperseg - 1) / 2, last + (nperseg - 1) / 2, t_cols) / FS


@pytest.mark.parametrize("kind", ["stft", "cwt"])
@pytest.mark.parametrize("noise, max_rows", [(0.0, 1.0), (0.2, 2.0)])
def test_ridge_follows_a_chirp(kind, noise, max_rows):
    x, f_inst = _chirp(1.0, 2.5, 30.0, noise=noise, seed=3)
    params = tfr_params(kind)
    image = tfr_compute(x, FS, **params)
    freqs = tfr_frequencies(params["shape"], params["lo"], params["hi"])
    row = freqs[1] - freqs[0]
    cols = _column_times_s(params, x.size)
    truth = np.interp(cols, np.arange(x.size) / FS, f_inst)
    err_rows = np.abs(freqs[np.argmax(image, axis=0)] - truth) / row
    # Columns within 1 s of the ends see a one-sided Morlet wavelet (the cone of influence),
    # which biases the CWT ridge by up to ~2.5 rows there even without noise.
    inner = (cols > 1.0) & (cols < x.size / FS - 1.0)
    assert err_rows[inner].max() <= max_rows
    assert np.median(err_rows) <= 0.5
    assert err_rows.max() <= 3.0 + max_rows


@pytest.mark.parametrize("kind", ["stft", "cwt"])
def test_ridge_follows_a_rate_step(kind):
    # 1.2 Hz for 10 s then 2.0 Hz for 10 s; away from the step the ridge sits on the rate.
    t = np.arange(int(20 * FS)) / FS
    x = np.where(t < 10, np.sin(2 * np.pi * 1.2 * t), np.sin(2 * np.pi * 2.0 * t))
    params = tfr_params(kind, shape=(57, 40))  # rows 0.05 Hz apart
    image = tfr_compute(x, FS, **params)
    freqs = tfr_frequencies(params["shape"], params["lo"], params["hi"])
    cols = _column_times_s(params, x.size)
    ridge = freqs[np.argmax(image, axis=0)]
    row = freqs[1] - freqs[0]
    assert np.all(np.abs(ridge[cols < 7.0] - 1.2) <= row)
    assert np.all(np.abs(ridge[cols > 13.0] - 2.0) <= row)


@pytest.mark.parametrize("kind", ["stft", "cwt"])
@pytest.mark.parametrize("norm", ["zscore", "minmax", "none"])
def test_matches_reference(kind, norm):
    x, _ = _chirp(0.9, 3.0, 12.0, noise=0.5, seed=1)
    params = tfr_params(kind, shape=(48, 32), norm=norm)
    ref = (tfr_stft_ref if kind == "stft" else tfr_cwt_ref)(x, FS, params)
    got = tfr_compute(x, FS, **params)
    assert got.shape == (48, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=REF_TOL * max(1.0, np.abs(ref).max()))


def test_cwt_matches_numpy_convolution_on_sample_centres():
    # On a grid whose columns land on whole samples, away from the edges, the scalogram is an
    # ordinary convolution with the sampled wavelet.
    x, _ = _chirp(1.0, 2.0, 10.0, noise=0.3, seed=2)
    x = x - x.mean()
    params = tfr_params("cwt", shape=(5, x.size), norm="none", n_cycles=4.0)
    got = 10 ** (tfr_compute(x, FS, **params).astype(np.float64) / 10)
    freqs = tfr_frequencies(params["shape"], params["lo"], params["hi"])
    for i, f in enumerate(freqs):
        sd = 4.0 / (2 * np.pi * f) * FS
        k = np.arange(-int(5 * sd), int(5 * sd) + 1)
        wav = np.exp(-(k**2) / (2 * sd**2)) * np.exp(2j * np.pi * f * k / FS)
        conv = np.convolve(x, np.conj(wav[::-1]), mode="same") / np.exp(-(k**2) / (2 * sd**2)).sum()
        inner = slice(k.size, x.size - k.size)
        np.testing.assert_allclose(got[i, inner], np.abs(conv[inner]) ** 2, rtol=1e-5)


def test_normalisations():
    x, _ = _chirp(1.0, 2.0, 10.0, noise=0.3)
    z = tfr_compute(x, FS, kind="cwt")
    assert abs(float(z.mean())) < 1e-5 and float(z.std()) == pytest.approx(1.0, abs=1e-5)
    m = tfr_compute(x, FS, norm="minmax")
    assert float(m.min()) == 0.0 and float(m.max()) == pytest.approx(1.0)
    assert np.all(tfr_compute(np.zeros(300), FS) == 0)  # silence: constant image, z-scored to zeros


def test_params_are_complete_json_and_round_trip():
    x, _ = _chirp(1.0, 2.0, 10.0, noise=0.3)
    for kind in ["stft", "cwt"]:
        params = tfr_params(kind, shape=(32, 16), lo=0.8, hi=3.0, norm="minmax")
        assert json.loads(json.dumps(params)) == params
        again = tfr_compute(x, FS, **json.loads(json.dumps(params)))
        np.testing.assert_array_equal(again, tfr_compute(x, FS, kind, (32, 16), 0.8, 3.0, norm="minmax"))
        assert again.shape == (32, 16)
    assert tfr_params("stft")["nperseg_s"] == 4.0 and tfr_params("cwt")["n_cycles"] == 5.0
    # A changed setting changes the image: the dict really is what defines it.
    assert not np.array_equal(tfr_compute(x, FS, nperseg_s=3.0), tfr_compute(x, FS, nperseg_s=4.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "wavelet"},
        {"shape": (1, 64)},
        {"shape": (64.5, 64)},
        {"lo": 3.5, "hi": 0.7},
        {"n_cycles": 5.0},  # a cwt parameter given to the stft
        {"kind": "cwt", "n_cycles": -1},
        {"overlap": 1.0},
        {"norm": "l2"},
        {"hi": 16.0},  # above fs/2
    ],
)
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        tfr_compute(np.zeros(300), FS, **kwargs)


def test_bad_pulses_raise_bad_input():
    with pytest.raises(BadInputError):
        tfr_compute(np.r_[np.zeros(299), np.nan], FS)
    with pytest.raises(BadInputError):
        tfr_compute(np.zeros(60), FS)  # 2 s is shorter than one 4 s STFT frame
    with pytest.raises(BadInputError):
        tfr_compute(np.zeros((300, 2)), FS)
