"""The synthetic session generator: its signals must carry the truth it claims to carry."""
from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
from scipy import signal as sps

from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.sim import SimConfig, synth_session
from firmware_bridge.sim.face import PBV_RGB
from firmware_bridge.sim.noise import nst_noise_power, nst_signal_power
from firmware_bridge.sim.physio import bateman

# A still subject in constant light: only the pulse changes the skin.
STILL = dict(motion_px=0.0, motion_scale_pct=0.0, illumination_pct=0.0)
SMALL = dict(frame_size=(160, 120))


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


# -- determinism and lazy frames -------------------------------------------------------------

def test_same_seed_same_bytes_different_seed_differs():
    cfg = SimConfig(duration_s=4, seed=7, jpeg_quality=80, ecg_snr_db=12, ppg_noise=0.02,
                    eda_noise_us=0.01, frame_jitter_s=0.003, scr_spontaneous_per_min=5, **SMALL)
    a, b = synth_session(cfg), synth_session(cfg)
    for name in ("ecg", "ppg", "eda"):
        assert getattr(a, name).values.tobytes() == getattr(b, name).values.tobytes(), name
    assert a.frame_times_s.tobytes() == b.frame_times_s.tobytes()
    for i in (0, 57, len(a) - 1):
        assert a.frame(i).tobytes() == b.frame(i).tobytes()
    c = synth_session(cfg.__class__(**{**cfg.__dict__, "seed": 8}))
    assert not np.array_equal(a.beat_times_s[:3], c.beat_times_s[:3])
    assert not np.array_equal(a.ecg.values, c.ecg.values)
    assert not np.array_equal(a.frame(0), c.frame(0))


def test_random_access_equals_iteration():
    s = synth_session(SimConfig(duration_s=2, seed=3, motion_px=4, illumination_pct=10,
                                noise_sigma=3, jpeg_quality=70, **SMALL))
    streamed = list(s.frames())
    assert len(streamed) == len(s) == 60
    for i in reversed(range(len(s))):
        assert np.array_equal(s.frame(i), streamed[i]), i
    assert all(np.array_equal(x, y) for x, y in zip(s.frames(10, 20), streamed[10:20]))


def test_changing_one_setting_leaves_other_streams_alone():
    a = synth_session(SimConfig(duration_s=5, seed=4, noise_sigma=0, **SMALL))
    b = synth_session(SimConfig(duration_s=5, seed=4, noise_sigma=6, jpeg_quality=50, **SMALL))
    assert np.array_equal(a.beat_times_s, b.beat_times_s)
    assert np.array_equal(a.ecg.values, b.ecg.values)
    assert a.face_box(77) == b.face_box(77)


def test_long_session_does_not_hold_frames():
    # 10 min of 640x480 BGR is 16 GB; the session must keep only a few frame-sized buffers.
    tracemalloc.start()
    try:
        s = synth_session(SimConfig(duration_s=600, seed=1))
        s.frame(17999)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(s) == 18000
    assert peak < 150e6


# -- heart ------------------------------------------------------------------------------------

def test_beats_follow_the_rate_trajectory():
    knots = ((0.0, 60.0), (30.0, 60.0), (90.0, 150.0), (120.0, 150.0))
    s = synth_session(SimConfig(duration_s=120, seed=5, hr_bpm=knots, hrv_sdnn_ms=0.0, **SMALL))
    mid = (s.beat_times_s[1:] + s.beat_times_s[:-1]) / 2
    inst = 60.0 / np.diff(s.beat_times_s)
    # Without HRV each interval is the programmed rate at its start: within the change of the
    # rate over one beat (<= 1.5 bpm/s * 1 s).
    assert np.max(np.abs(inst - s.hr_target_at(mid))) < 1.6
    assert np.allclose(s.hr_at(mid), inst)

    # With HRV the rate wanders around the trajectory (the LF part does not average out in
    # 10 s), but stays close to it.
    v = synth_session(SimConfig(duration_s=120, seed=5, hr_bpm=knots, hrv_sdnn_ms=20.0, **SMALL))
    err = [v.mean_hr_bpm(t0, t0 + 10) - float(np.mean(v.hr_target_at(np.linspace(t0, t0 + 10, 101))))
           for t0 in range(0, 120, 10)]
    assert np.max(np.abs(err)) < 3.0
    assert np.sqrt(np.mean(np.square(err))) < 1.5


def test_hrv_has_the_configured_sdnn_and_rsa_peak():
    s = synth_session(SimConfig(duration_s=300, seed=6, hr_bpm=70, hrv_sdnn_ms=60, hrv_lf_hf_ratio=0.0,
                                resp_rate_hz=0.3, **SMALL))
    rr = np.diff(s.beat_times_s)
    assert 60 * 0.85 < 1000 * rr.std() < 60 * 1.15
    # All variability is respiratory: the RR tachogram's spectrum peaks at the breathing rate.
    t = np.arange(s.beat_times_s[1], s.beat_times_s[-1], 0.25)
    tach = np.interp(t, s.beat_times_s[1:], rr)
    f, p = sps.welch(tach - tach.mean(), fs=4.0, nperseg=512)
    assert abs(f[np.argmax(p)] - 0.3) < 0.02
    assert s.config.hrv_sdnn_ms == 60
    # The fluctuation is constant in bpm: at twice the rate, a quarter of the SDNN.
    fast = synth_session(SimConfig(duration_s=300, seed=6, hr_bpm=140, hrv_sdnn_ms=60, **SMALL))
    assert 15 * 0.8 < 1000 * np.diff(fast.beat_times_s).std() < 15 * 1.2
    flat = synth_session(SimConfig(duration_s=60, seed=6, hr_bpm=75, hrv_sdnn_ms=0, **SMALL))
    assert np.allclose(np.diff(flat.beat_times_s), 0.8)


@pytest.mark.parametrize("hr", [45, 100, 180])
def test_ecg_r_peaks_at_beat_times(hr):
    s = synth_session(SimConfig(duration_s=20, seed=hr, hr_bpm=hr, fs_ecg_hz=500, **SMALL))
    ecg, fs = s.ecg.values, s.ecg.fs_hz
    assert len(s.r_peak_idx) == len(s.beat_times_s)
    assert abs(len(s.beat_times_s) - hr / 3) <= 2
    half = int(0.1 * fs)
    for k in s.r_peak_idx[s.r_peak_idx >= 0]:
        lo, hi = max(k - half, 0), min(k + half + 1, ecg.size)
        if hi - lo < half:
            continue
        assert abs(lo + int(np.argmax(ecg[lo:hi])) - k) <= 1
    assert 0.9 < np.median(ecg[s.r_peak_idx[s.r_peak_idx >= 0]]) < 1.15
    # A generic detector over the whole record finds exactly the true beats.
    found, _ = sps.find_peaks(ecg, height=0.6, distance=int(0.25 * fs))
    truth = s.r_peak_idx[s.r_peak_idx >= 0]
    assert found.shape == truth.shape
    # A beat halfway between two samples may peak on either: one sample of slack.
    assert np.max(np.abs(found - truth)) <= 1


def test_ecg_noise_is_added_at_the_asked_snr():
    clean = synth_session(SimConfig(duration_s=30, seed=2, **SMALL))
    noisy = synth_session(SimConfig(duration_s=30, seed=2, ecg_snr_db=6, **SMALL))
    noise = noisy.ecg.values - clean.ecg.values
    assert np.std(noise) > 0.05
    fs = clean.ecg.fs_hz
    qrs = clean.r_peak_idx[clean.r_peak_idx >= 0]
    snr = 10 * np.log10(nst_signal_power(clean.ecg.values, fs, qrs) / nst_noise_power(noise, fs))
    assert snr == pytest.approx(6.0, abs=0.3)


@pytest.mark.parametrize("delay_s", [0.2, 0.3])
def test_ppg_peaks_lag_r_by_the_configured_delay(delay_s):
    s = synth_session(SimConfig(duration_s=30, seed=9, hr_bpm=80, ppg_delay_s=delay_s, **SMALL))
    ppg, fs = s.ppg.values, s.ppg.fs_hz
    lags = []
    for b in s.beat_times_s:
        lo, hi = int(np.ceil(b * fs)), int(np.ceil((b + 0.5) * fs))
        if hi > ppg.size:
            continue
        lags.append((lo + int(np.argmax(ppg[lo:hi]))) / fs - b)
    lags = np.asarray(lags)
    assert lags.size > 30
    assert np.all(np.abs(lags - delay_s) <= 1.0 / fs + 0.005)
    ok = s.ppg_peak_idx >= 0
    assert np.all(np.abs(s.ppg_peak_idx[ok] / fs - (s.beat_times_s[ok] + delay_s)) <= 0.5 / fs)


def test_face_bvp_is_the_same_beats_at_the_frame_times():
    s = synth_session(SimConfig(duration_s=20, seed=1, hr_bpm=72, frame_jitter_s=0.004, bvp_delay_s=0.1,
                                **SMALL))
    t = s.frame_times_s
    assert np.all(np.diff(t) > 0)
    assert np.std(t - np.arange(len(s)) / s.config.fps) == pytest.approx(0.004, rel=0.2)
    # The BVP's spectral peak is the heart rate.
    f, p = sps.periodogram(s.bvp - s.bvp.mean(), fs=s.config.fps, nfft=8192)
    assert abs(60 * f[np.argmax(p)] - s.mean_hr_bpm(0, 20)) < 1.0
    # Face pulse leads the finger pulse by ppg_delay - bvp_delay = 0.1 s.
    ppg_at_frames = np.interp(t, s.ppg.t_s, s.ppg.values)
    lags = np.arange(-30, 31) / 100.0
    xc = [np.corrcoef(np.interp(t + lag, s.ppg.t_s, s.ppg.values)[30:-30], s.bvp[30:-30])[0, 1] for lag in lags]
    assert lags[int(np.argmax(xc))] == pytest.approx(0.1, abs=0.011)
    assert ppg_at_frames.shape == s.bvp.shape


# -- EDA --------------------------------------------------------------------------------------

def test_eda_responses_at_the_onsets_with_the_amplitudes():
    onsets, amps = (10.0, 30.0, 45.0), (0.5, 1.2, 0.2)
    s = synth_session(SimConfig(duration_s=60, seed=3, eda_tonic_us=4.0, eda_drift_us=0.0,
                                scr_onsets_s=onsets, scr_amplitudes_us=amps, **SMALL))
    t, eda = s.eda.t_s, s.eda.values
    assert s.eda.units == "uS"
    t_peak = 0.75 * 2.0 * np.log(2.0 / 0.75) / (2.0 - 0.75)
    for o, a in zip(onsets, amps):
        seg = (t >= o) & (t < o + 8)
        k = np.argmax(eda[seg])
        assert t[seg][k] - o == pytest.approx(t_peak, abs=1.5 / s.eda.fs_hz)
        base = np.interp(o, t, eda)
        assert eda[seg][k] - base == pytest.approx(a, rel=0.03)
        # Nothing happens in the second before an onset beyond the previous response's decay.
        pre = (t >= o - 1) & (t < o)
        assert np.all(np.diff(eda[pre]) <= 1e-12)
    assert np.allclose(eda[t < 10], 4.0)


def test_eda_drift_and_spontaneous_responses():
    s = synth_session(SimConfig(duration_s=600, seed=11, eda_drift_us=0.5, scr_spontaneous_per_min=3,
                                scr_onsets_s=(100.0,), scr_amplitudes_us=1.0, **SMALL))
    assert 10 <= s.scr_onsets_s.size <= 60
    assert 100.0 in s.scr_onsets_s
    assert np.all(np.diff(s.scr_onsets_s) >= 0)
    assert np.all(s.eda.values > 0)
    # Reconstruct the tonic part: what is left is slow and of the configured spread.
    resid = s.eda.values - s.eda.values.mean()
    assert 0.2 < np.std(resid) < 1.5


def test_bateman_is_peak_normalised_and_causal():
    t = np.linspace(-2, 20, 22001)
    b = bateman(t, 1.0, 3.75)
    assert b.max() == pytest.approx(1.0, abs=1e-6)
    assert np.all(b[t <= 0] == 0)
    assert t[np.argmax(b)] == pytest.approx(3.75 * np.log(3.75) / 2.75, abs=2e-3)
    with pytest.raises(ConfigError):
        bateman(t, 2.0, 1.0)


# -- face video --------------------------------------------------------------------------------

def _skin_means(s, channel_box=False):
    out = []
    for i, f in enumerate(s.frames()):
        if channel_box:
            x, y, w, h = s.face_box(i)
            roi = f[y + h // 4: y + 3 * h // 4, x + w // 5: x + 4 * w // 5]
            out.append(roi.reshape(-1, 3).mean(axis=0))
        else:
            m = s.skin_mask(i) > 0.5
            out.append(f[m].mean(axis=0))
    return np.asarray(out)


def test_pulse_is_in_the_face_and_absent_from_a_photo():
    cfg = dict(duration_s=10, seed=2, hr_bpm=75, frame_size=(320, 240), **STILL)
    live = synth_session(SimConfig(noise_sigma=0, **cfg))
    green = _skin_means(live, channel_box=True)[:, 1]
    # More blood absorbs more light: the skin is darkest at the systolic peak.
    assert np.corrcoef(green, live.bvp)[0, 1] < -0.8
    noisy = synth_session(SimConfig(noise_sigma=2, **cfg))
    assert np.corrcoef(_skin_means(noisy, channel_box=True)[:, 1], noisy.bvp)[0, 1] < -0.8
    photo = synth_session(SimConfig(noise_sigma=2, pulse_amplitude=0.0, **cfg))
    assert abs(np.corrcoef(_skin_means(photo, channel_box=True)[:, 1], photo.bvp)[0, 1]) < 0.3


def test_skin_colour_change_follows_the_pbv_signature_and_amplitude():
    s = synth_session(SimConfig(duration_s=5, seed=4, hr_bpm=70, noise_sigma=1.0, pulse_amplitude=0.004,
                                frame_size=(320, 240), **STILL))
    bgr = _skin_means(s)
    rel = bgr / bgr.mean(axis=0) - 1.0
    slope = np.array([np.polyfit(s.bvp, rel[:, c], 1)[0] for c in range(3)])
    rgb = -slope[::-1]
    # Relative change per unit blood volume: green == pulse_amplitude, R and B in Pbv ratio.
    assert rgb[1] == pytest.approx(0.004, rel=0.1)
    assert rgb / rgb[1] == pytest.approx(np.asarray(PBV_RGB) / PBV_RGB[1], rel=0.1)


def test_haar_cascade_finds_the_face_at_the_true_box():
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    for kw in (dict(), dict(frame_size=(320, 240), face_scale=0.25, motion_px=4, noise_sigma=4, jpeg_quality=60)):
        s = synth_session(SimConfig(duration_s=4, seed=12, **kw))
        for i in (0, 60, 119):
            found = cascade.detectMultiScale(cv2.cvtColor(s.frame(i), cv2.COLOR_BGR2GRAY), 1.1, 5)
            assert len(found) == 1, (kw, i, found)
            assert _iou(tuple(found[0]), s.face_box(i)) > 0.8


def test_motion_moves_the_face_and_its_box_together():
    s = synth_session(SimConfig(duration_s=10, seed=5, motion_px=6, motion_scale_pct=2, noise_sigma=0,
                                illumination_pct=0, **SMALL))
    dx = np.array([s.motion(i).dx_px for i in range(len(s))])
    assert 3 < dx.std() < 10
    boxes = np.array([s.face_box(i) for i in range(0, len(s), 30)])
    assert np.ptp(boxes[:, 0]) >= 4
    for i in range(0, len(s), 30):
        m = s.skin_mask(i)
        ys, xs = np.nonzero(m > 0.5)
        x, y, w, h = s.face_box(i)
        # The skin's centre stays at the same place inside the box as the face moves.
        assert abs((xs.mean() - x) / w - 0.52) < 0.06
        assert abs((ys.mean() - y) / h - 0.62) < 0.08


def test_illumination_scales_the_whole_frame():
    s = synth_session(SimConfig(duration_s=20, seed=6, illumination_pct=20, motion_px=0, motion_scale_pct=0,
                                noise_sigma=1, **SMALL))
    means = np.array([f.mean() for f in s.frames(0, len(s), )])[::5]
    gains = np.array([s.illumination(i) for i in range(0, len(s), 5)])
    assert np.ptp(gains) > 0.1 and np.all(np.abs(gains - 1) <= 0.2 + 1e-9)
    assert np.corrcoef(means, gains)[0, 1] > 0.99


# -- configuration -----------------------------------------------------------------------------

def test_config_is_frozen_validated_and_hashable():
    c = SimConfig(hr_bpm=[[0, 60], [10, 90]], scr_onsets_s=[1, 2], scr_amplitudes_us=[0.1, 0.2])
    assert c.hr_bpm == ((0.0, 60.0), (10.0, 90.0))
    hash(c)
    with pytest.raises(AttributeError):
        c.seed = 3  # type: ignore[misc]
    for bad in (dict(pulse_amplitude=0.2), dict(hr_bpm=300), dict(hr_bpm=((5, 60), (1, 70))),
                dict(jpeg_quality=0), dict(frame_size=(32, 32)), dict(scr_onsets_s=(1, 2), scr_amplitudes_us=(1, 2, 3)),
                dict(duration_s=0), dict(motion_band_hz=(1.0, 0.5))):
        with pytest.raises(ConfigError):
            SimConfig(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        synth_session(SimConfig(duration_s=1), heart_rate=60)
    s = synth_session(SimConfig(duration_s=1, **SMALL), hr_bpm=90)
    assert s.config.hr_bpm == 90
    with pytest.raises(BadInputError):
        s.frame(len(s))
    with pytest.raises(BadInputError):
        s.frame(-1)
