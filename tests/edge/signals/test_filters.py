"""Butterworth band-pass kernels: match SciPy, pass the whole pulse band, stream exactly."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.rppg import bandpass_scipy
from scipy import signal

from edge.signals.filters import BandpassStream, bandpass, butter_sos
from firmware_bridge.errors import BadInputError

FS = 30.0


def _gain_db(freq_hz: float, zero_phase: bool, lo=0.7, hi=3.5, fs=FS) -> float:
    """Steady-state gain of bandpass() at one frequency: RMS ratio over the middle third."""
    t = np.arange(int(60 * fs)) / fs
    x = np.sin(2 * np.pi * freq_hz * t)
    y = bandpass(x, fs, lo, hi, zero_phase=zero_phase)
    n = len(t)
    mid = slice(n // 3, 2 * n // 3)
    return 20 * np.log10(np.sqrt(np.mean(y[mid] ** 2)) / np.sqrt(np.mean(x[mid] ** 2)))


def test_butter_sos_is_scipy_design_cached_and_read_only():
    sos = butter_sos(FS, 0.7, 3.5, 4)
    expected = signal.butter(4, [0.7, 3.5], btype="bandpass", fs=FS, output="sos")
    np.testing.assert_array_equal(sos, expected)
    assert butter_sos(30, 0.7, 3.5, 4) is sos  # int and float fs share one cache entry
    assert not sos.flags.writeable


@pytest.mark.parametrize("shape", [(301,), (3, 200), (2, 2, 64)])
def test_bandpass_matches_scipy(shape):
    """Kernel vs scipy sosfiltfilt / sosfilt; tolerance 1e-12 of the signal's peak."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).cumsum(axis=-1) + 100.0
    for zero_phase in (True, False):
        got = bandpass(x, FS, zero_phase=zero_phase)
        ref = bandpass_scipy(x, FS, zero_phase=zero_phase)
        assert got.shape == x.shape and got.dtype == np.float64
        assert np.max(np.abs(got - ref)) <= 1e-12 * np.max(np.abs(x))


def test_bandpass_does_not_modify_input():
    x = np.sin(np.arange(100.0))
    keep = x.copy()
    bandpass(x, FS)
    bandpass(x, FS, zero_phase=False)
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("zero_phase", [True, False])
def test_150_bpm_passes_within_1_db(zero_phase):
    """The anti-cap property: a 150 bpm (2.5 Hz) pulse is not attenuated by the default band."""
    assert abs(_gain_db(2.5, zero_phase)) < 1.0
    # 42 bpm and 200 bpm are in band too (within 3 dB per pass).
    assert _gain_db(1.0, zero_phase) > -1.0
    assert _gain_db(3.3, zero_phase) > -(6.0 if zero_phase else 3.0)


def test_narrow_band_would_cap_heart_rate():
    """Why the default is 0.7-3.5 Hz: a 0.7-1.8 Hz band loses a 150 bpm pulse (> 10 dB)."""
    assert _gain_db(2.5, True, lo=0.7, hi=1.8) < -10.0


@pytest.mark.parametrize("zero_phase", [True, False])
@pytest.mark.parametrize("freq_hz", [0.2, 6.0])
def test_out_of_band_attenuated_20_db(freq_hz, zero_phase):
    assert _gain_db(freq_hz, zero_phase) < -20.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=90), min_size=1, max_size=12))
def test_stream_equals_causal_batch(block_sizes):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, sum(block_sizes))) + 50.0
    stream = BandpassStream(FS)
    parts, start = [], 0
    for m in block_sizes:
        parts.append(stream.process(x[:, start:start + m]))
        start += m
    got = np.concatenate(parts, axis=-1)
    ref = bandpass(x, FS, zero_phase=False)
    assert got.shape == x.shape
    assert np.max(np.abs(got - ref), initial=0.0) <= 1e-12 * np.max(np.abs(x), initial=1.0)


def test_stream_rejects_changed_channels_and_resets():
    stream = BandpassStream(FS)
    stream.process(np.zeros((3, 10)))
    with pytest.raises(BadInputError, match="leading shape"):
        stream.process(np.zeros(10))
    stream.reset()
    x = np.sin(np.arange(50.0))
    np.testing.assert_array_equal(stream.process(x), bandpass(x, FS, zero_phase=False))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fs=7.0), "Nyquist"),  # hi=3.5 Hz needs fs > 7 Hz
        (dict(fs=float("nan")), "finite"),
        (dict(fs=-30.0), "finite and > 0"),
        (dict(lo=0.0), "low edge"),
        (dict(lo=2.0, hi=1.0), "lo < hi"),
        (dict(hi=float("inf")), "finite"),
        (dict(order=0), "order"),
        (dict(order=2.5), "order"),
    ],
)
def test_bad_band_settings_raise(kwargs, match):
    args = dict(fs=FS, lo=0.7, hi=3.5, order=4) | kwargs
    x = np.zeros(200)
    with pytest.raises(BadInputError, match=match):
        bandpass(x, **args)
    with pytest.raises(BadInputError, match=match):
        BandpassStream(**args)


def test_bad_signals_raise():
    with pytest.raises(BadInputError, match="more than 27 samples"):
        bandpass(np.zeros(27), FS)
    assert bandpass(np.zeros(1), FS, zero_phase=False).shape == (1,)  # causal has no minimum
    with pytest.raises(BadInputError, match="NaN"):
        bandpass(np.r_[np.zeros(50), np.nan], FS)
    with pytest.raises(BadInputError, match="1-D"):
        bandpass(3.0, FS)
    with pytest.raises(BadInputError, match="real numeric"):
        bandpass(["a", "b"], FS)
    with pytest.raises(BadInputError, match="NaN"):
        BandpassStream(FS).process([0.0, np.inf])
