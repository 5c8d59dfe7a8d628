"""EDA: Bateman-shaped responses with known onsets and amplitudes are recovered, artefacts
and drifts are not counted, the real event-related recording shows responses after the
negative images, and the kernels agree with their SciPy twins."""
from __future__ import annotations

import numpy as np
import pytest
from reference.physio import eda_decompose_ref, eda_scr_ref

from edge.signals.eda import SCR, eda_decompose, eda_scr
from firmware_bridge.errors import BadInputError
from helpers import shared_path

realdata = pytest.mark.realdata

TAU_RISE_S, TAU_DECAY_S = 0.75, 2.0


def bateman(t: np.ndarray, onset_s: float, amplitude_us: float) -> np.ndarray:
    """Bateman SCR shape (Alexander et al. 2005; Benedek & Kaernbach 2010) scaled so its
    maximum is amplitude_us; zero before the onset."""
    u = np.clip(t - onset_s, 0.0, None)
    shape = np.exp(-u / TAU_DECAY_S) - np.exp(-u / TAU_RISE_S)
    t_peak = TAU_RISE_S * TAU_DECAY_S / (TAU_DECAY_S - TAU_RISE_S) * np.log(TAU_DECAY_S / TAU_RISE_S)
    peak = np.exp(-t_peak / TAU_DECAY_S) - np.exp(-t_peak / TAU_RISE_S)
    return amplitude_us * shape / peak


def synthetic_eda(fs: float, seed: int = 0):
    """120 s: tonic 5 uS drifting down 0.004 uS/s, 8 SCRs (0.05-1.0 uS), white noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(120 * fs)) / fs
    onsets = np.array([6.0, 20.0, 33.0, 45.0, 60.0, 74.0, 90.0, 104.0])
    amps = np.array([0.5, 0.05, 1.0, 0.2, 0.08, 0.6, 0.3, 0.12])
    tonic = 5.0 - 0.004 * t
    x = tonic + sum(bateman(t, o, a) for o, a in zip(onsets, amps)) + rng.normal(0, 0.002, t.size)
    return x, tonic, onsets, amps


@pytest.mark.parametrize("fs", [4.0, 32.0, 100.0, 1000.0])
def test_scr_onsets_and_amplitudes(fs):
    x, _, onsets, amps = synthetic_eda(fs)
    scr = eda_scr(x, fs)
    assert isinstance(scr, SCR)
    assert scr.onsets.dtype == np.int64 and scr.peaks.dtype == np.int64
    assert scr.amplitudes_us.dtype == np.float64
    assert scr.onsets.size == onsets.size
    assert np.all(scr.onsets < scr.peaks)
    np.testing.assert_allclose(scr.onsets / fs, onsets, atol=0.35)
    # Trough-to-peak sees the response minus the tonic drift over its rise (0.004 uS/s x ~1.2 s)
    # and the previous response's tail: within 5 % + 0.01 uS.
    np.testing.assert_allclose(scr.amplitudes_us, amps, rtol=0.05, atol=0.01)
    rise = (scr.peaks - scr.onsets) / fs
    assert np.all((rise >= 0.5) & (rise <= 5.0))


def test_threshold_artefacts_and_drift_are_rejected():
    fs = 50.0
    t = np.arange(int(60 * fs)) / fs
    x = 3.0 + bateman(t, 5.0, 0.4) + bateman(t, 35.0, 0.015)  # second one below 0.02 uS
    x = x + np.where(t > 20.0, 0.3, 0.0)                     # electrode step: rises in 20 ms
    x = x + np.where(t > 45.0, 0.01 * (t - 45.0), 0.0)        # slow drift up: 0.15 uS over 15 s
    scr = eda_scr(x, fs)
    assert scr.onsets.size == 1 and abs(scr.onsets[0] / fs - 5.0) < 0.35
    assert eda_scr(x, fs, min_amplitude_us=0.01).onsets.size == 2  # the small one, if asked for


def test_decomposition_recovers_the_tonic_level():
    fs = 32.0
    x, tonic, onsets, amps = synthetic_eda(fs)
    est_tonic, phasic = eda_decompose(x, fs)
    assert est_tonic.shape == phasic.shape == x.shape
    np.testing.assert_allclose(est_tonic + phasic, x, atol=1e-12)
    # The running median rides under the responses: off by a small part of the largest SCR.
    assert np.median(np.abs(est_tonic - tonic)) < 0.05
    assert np.max(np.abs(est_tonic - tonic)) < 0.5 * amps.max()
    # Each response shows up in the phasic part, near its peak.
    for o, a in zip(onsets, amps):
        seg = phasic[int((o + 0.5) * fs) : int((o + 3.0) * fs)]
        assert seg.max() > 0.5 * a


def test_flat_or_drifting_skin_has_no_phasic_activity():
    fs = 16.0
    t = np.arange(int(60 * fs)) / fs
    tonic, phasic = eda_decompose(2.0 + 0.01 * t, fs)
    inner = slice(int(6 * fs), int(54 * fs))
    assert np.max(np.abs(phasic[inner])) < 1e-3
    assert eda_scr(2.0 + 0.01 * t, fs).onsets.size == 0


@pytest.fixture(scope="module")
def event_related():
    path = shared_path("physio/neurokit/bio_eventrelated_100hz.csv")
    data = np.genfromtxt(path, delimiter=",", names=True)
    fs = 100.0
    photo = data["Photosensor"]
    dark = photo < 0.5 * photo.max()
    image_onsets = np.flatnonzero(dark[1:] & ~dark[:-1]) + 1
    return data["EDA"], fs, image_onsets


@realdata
def test_responses_follow_the_negative_images(event_related):
    eda, fs, image_onsets = event_related
    assert image_onsets.size == 4  # Negative, Neutral, Neutral, Negative
    scr = eda_scr(eda, fs)
    latencies = [(scr.onsets - o) / fs for o in image_onsets]
    found = [bool(np.any((lat >= 1.0) & (lat <= 5.0))) for lat in latencies]
    print("image onsets (s):", (image_onsets / fs).tolist(), "response within 1-5 s:", found)
    # Inspected by eye: clear rises (1.6 and 3.5 uS) start about 3.0 s after image 1 and 1.2 s
    # after image 4 (both negative). After image 2 the conductance keeps falling from a
    # response that began before the image; after image 3 it is flat: nothing to find there.
    assert found[0] and found[3]
    for k in (0, 3):
        hit = (latencies[k] >= 1.0) & (latencies[k] <= 5.0)
        assert scr.amplitudes_us[hit].max() > 1.0


@realdata
def test_kernels_match_references_on_real_data(event_related):
    eda, fs, _ = event_related
    tonic, phasic = eda_decompose(eda, fs)
    tonic_ref, phasic_ref = eda_decompose_ref(eda, fs)
    np.testing.assert_allclose(tonic, tonic_ref, rtol=0, atol=1e-9)
    got, want = eda_scr(eda, fs), eda_scr_ref(eda, fs)
    np.testing.assert_array_equal(got.onsets, want[0])
    np.testing.assert_array_equal(got.peaks, want[1])
    np.testing.assert_allclose(got.amplitudes_us, want[2], rtol=1e-9)


@pytest.mark.parametrize("fs", [4.0, 100.0])
def test_kernels_match_references_synthetic(fs):
    x, *_ = synthetic_eda(fs, seed=3)
    np.testing.assert_allclose(eda_decompose(x, fs)[0], eda_decompose_ref(x, fs)[0], rtol=0, atol=1e-9)
    got, want = eda_scr(x, fs), eda_scr_ref(x, fs)
    np.testing.assert_array_equal(got.onsets, want[0])
    np.testing.assert_array_equal(got.peaks, want[1])


def test_input_validation():
    x, *_ = synthetic_eda(10.0)
    with pytest.raises(BadInputError, match="1-D"):
        eda_scr(np.stack([x, x]), 10.0)
    with pytest.raises(BadInputError, match="NaN"):
        eda_decompose(np.where(np.arange(x.size) == 3, np.nan, x), 10.0)
    with pytest.raises(BadInputError, match="min_amplitude_us"):
        eda_scr(x, 10.0, min_amplitude_us=0.0)
    with pytest.raises(BadInputError, match="window_s"):
        eda_decompose(x, 10.0, window_s=-1.0)
    with pytest.raises(BadInputError, match="fs >= 1"):
        eda_scr(x, 0.5)
    empty = eda_scr(x[:2], 10.0)
    assert empty.onsets.size == empty.peaks.size == empty.amplitudes_us.size == 0
