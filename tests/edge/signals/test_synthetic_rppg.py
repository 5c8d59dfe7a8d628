"""End to end on the synthetic generator: face video -> skin RGB -> rPPG -> heart rate and TFR.

The generator knows the true beats, so the chain ROI -> POS -> cleaning -> spectral heart rate
must recover them under realistic nuisances (head motion, an illumination ramp, sensor
noise), must not find a confident pulse in a printed photo, and the TFR's ridge must follow a
changing rate. The true face box is used instead of a detector, for speed: the exact
(sub-pixel) box, as a tracker gives, not the generator's rounded one.

Face sizes: the generator's defaults (640x480 frames, ``face_scale`` 0.35: a 168 px face) and
faces of 60, 80 and 120 px in the same frames, the sizes of a dashboard or kiosk camera. The
colour comes from :func:`edge.preprocess.face_colour` with :data:`edge.spec.DEFAULT`, so the
default record's ROI settings (fractional region edges) are what is tested.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge.preprocess import face_colour
from edge.pipeline.runner import PipelineOptions
from edge.signals.hr import heart_rate, pulse_quality
from edge.signals.rppg import rppg_clean, rppg_extract
from edge.signals.tfr import tfr_compute
from edge.spec import DEFAULT
from firmware_bridge.sim import SimConfig, synth_session

pytestmark = pytest.mark.slow

# A subject close to a webcam: head sway of 2 px and 0.5 % scale, a 5 % light ramp, 2 grey
# levels of sensor noise, resting HRV (SDNN 50 ms at 70 bpm). Frame size and face size are the
# generator's unless a face size is named.
NUISANCE = dict(motion_px=2.0, motion_scale_pct=0.5, illumination_pct=5.0, noise_sigma=2.0, hrv_sdnn_ms=50.0)
FRAME_H = 480
FACES = {"default": {}, "60px": dict(face_scale=60 / FRAME_H), "80px": dict(face_scale=80 / FRAME_H),
         "120px": dict(face_scale=120 / FRAME_H)}
RATES_BPM = (45, 60, 75, 90, 110, 130, 155, 180)
DURATION_S = 20.0
WINDOW_S = 10.0
WINDOW_STARTS_S = (0.0, 5.0, 10.0)
# Targets over the 45-180 bpm sweep (issue 10).
MAX_MEAN_ERROR_BPM = 1.5
MAX_WINDOW_ERROR_BPM = 5.0


def test_the_generator_default_is_a_640x480_frame():
    # The pixel sizes above are fractions of this frame height.
    assert SimConfig().frame_size == (640, FRAME_H)


def _rgb(session) -> np.ndarray:
    return np.array([face_colour(f, session.face_box(i, exact=True), DEFAULT) for i, f in enumerate(session.frames())])


def _pulse(rgb: np.ndarray, fs: float) -> np.ndarray:
    return rppg_clean(rppg_extract(rgb, fs, method="pos"), fs)


_SWEEPS: dict = {}
# The default record's gate quality of each sweep window (same order as _SWEEPS).
_GATED: dict = {}
# The runtime reports a heart rate whose gate quality reaches this (its default option).
MIN_PULSE_QUALITY = PipelineOptions.min_pulse_quality


def _sweep(face: str) -> list:
    """(rate, truth_bpm, HeartRate) per 10 s window of the 45-180 bpm sweep at one face size."""
    if face not in _SWEEPS:
        out, gated = [], []
        for seed, rate in enumerate(RATES_BPM):
            s = synth_session(SimConfig(duration_s=DURATION_S, seed=100 + seed, hr_bpm=rate, **FACES[face],
                                        **NUISANCE))
            fs = s.config.fps
            rgb = _rgb(s)
            n = int(round(WINDOW_S * fs))
            for t0 in WINDOW_STARTS_S:
                i0 = int(round(t0 * fs))
                pulse = _pulse(rgb[i0:i0 + n], fs)
                est = heart_rate(pulse, fs)
                out.append((rate, s.mean_hr_bpm(t0, t0 + WINDOW_S), est))
                gated.append(pulse_quality(pulse, fs, est, DEFAULT.rppg.hr_gate))
        _SWEEPS[face], _GATED[face] = out, gated
    return _SWEEPS[face]


@pytest.mark.parametrize("face", list(FACES))
def test_heart_rate_error_across_the_range(face):
    windows = _sweep(face)
    errors = np.array([est.hr_bpm - truth for _, truth, est in windows])
    worst = int(np.argmax(np.abs(errors)))
    print(f"{face}: {len(windows)} windows, mean |error| {np.mean(np.abs(errors)):.2f} bpm, worst "
          f"{errors[worst]:+.2f} bpm at {windows[worst][0]} bpm")
    assert np.all(np.isfinite(errors))
    assert np.mean(np.abs(errors)) <= MAX_MEAN_ERROR_BPM
    # No window may be lost (a harmonic or a motion peak would be off by > 10 bpm).
    assert np.max(np.abs(errors)) <= MAX_WINDOW_ERROR_BPM


# Printed photos (pulse_amplitude 0): 20 seeds, the face size cycling through FACES, 12 s each,
# so each gives the runtime's 10 s windows ending at 10, 11 and 12 s.
PHOTO_SEEDS = range(20)
PHOTO_DURATION_S = 12.0


def test_a_printed_photo_reports_no_heart_rate():
    fs = SimConfig().fps
    n = int(round(WINDOW_S * fs))
    worst = (0.0, None)
    for seed in PHOTO_SEEDS:
        face = list(FACES)[seed % len(FACES)]
        s = synth_session(SimConfig(duration_s=PHOTO_DURATION_S, seed=200 + seed, hr_bpm=75, pulse_amplitude=0.0,
                                    **FACES[face], **NUISANCE))
        rgb = _rgb(s)
        for i0 in range(0, rgb.shape[0] - n + 1, int(round(fs))):
            pulse = _pulse(rgb[i0:i0 + n], fs)
            q = pulse_quality(pulse, fs, heart_rate(pulse, fs), DEFAULT.rppg.hr_gate)
            worst = max(worst, (q, (seed, face, i0 / fs)), key=lambda v: v[0])
    print("highest photo window quality", round(worst[0], 3), "at (seed, face, start s)", worst[1])
    assert worst[0] < MIN_PULSE_QUALITY


def test_a_longer_photo_session_does_not_fool_the_gate():
    # Over 20 s instead of 12 s, seed 200 at the default face once held a photo window the gate
    # passed (quality 0.883, a steady 75 bpm artifact); with the renderer's auto-exposure and the
    # adaptive skin rule its windows score at most ~0.1.
    s = synth_session(SimConfig(duration_s=DURATION_S, seed=200, hr_bpm=75, pulse_amplitude=0.0, **NUISANCE))
    fs = s.config.fps
    n = int(round(WINDOW_S * fs))
    rgb = _rgb(s)
    quality = []
    for i0 in range(0, rgb.shape[0] - n + 1, int(round(fs))):
        pulse = _pulse(rgb[i0:i0 + n], fs)
        quality.append(pulse_quality(pulse, fs, heart_rate(pulse, fs), DEFAULT.rppg.hr_gate))
    print("photo window qualities", np.round(quality, 3))
    assert max(quality) < MIN_PULSE_QUALITY


@pytest.mark.parametrize("face", list(FACES))
def test_the_gate_reports_the_live_sweep(face):
    # The other side of the photo test: the same gate passes a live face's windows, and what it
    # passes is right (issue 10: >= 97 % of reported windows within 5 bpm).
    windows, quality = _sweep(face), np.array(_GATED[face])
    reported = quality >= MIN_PULSE_QUALITY
    right = np.array([abs(est.hr_bpm - truth) <= 5.0 for _, truth, est in windows])
    print(f"{face}: reported {reported.sum()}/{reported.size}, quality min {quality.min():.3f}")
    assert reported.mean() >= 0.9
    assert right[reported].mean() >= 0.97


def _hann_weighted_hr(session, centre_s: float, frame_s: float) -> float:
    # What an STFT frame sees: the instantaneous rate weighted by the frame's Hann window.
    t = np.linspace(centre_s - frame_s / 2, centre_s + frame_s / 2, 121)
    w = np.hanning(t.size)
    return float(np.sum(w * session.hr_at(t)) / w.sum())


def test_tfr_ridge_follows_a_rate_ramp():
    s = synth_session(SimConfig(duration_s=30.0, seed=7, hr_bpm=((0.0, 60.0), (30.0, 120.0)), **NUISANCE))
    fs = s.config.fps
    n_rows, n_cols, lo, hi = 64, 32, 0.7, 3.5
    freqs_hz = np.linspace(lo, hi, n_rows)
    row_bpm = 60.0 * (freqs_hz[1] - freqs_hz[0])
    # STFT columns run from the first 4-s frame's centre to the last one's.
    frame_s = 4.0
    centres = np.linspace(frame_s / 2, len(s) / fs - frame_s / 2, n_cols)
    truth = np.array([_hann_weighted_hr(s, c, frame_s) for c in centres])

    # The generator's own face pulse: every column on the true rate.
    image = tfr_compute(rppg_clean(s.bvp, fs), fs, kind="stft", shape=(n_rows, n_cols), lo=lo, hi=hi)
    assert image.shape == (n_rows, n_cols) and image.dtype == np.float32
    bvp_err = 60.0 * freqs_hz[np.argmax(image, axis=0)] - truth
    assert np.max(np.abs(bvp_err)) <= 5.0

    # The camera's pulse under the nuisances: the ridge follows, with rare stray columns.
    image = tfr_compute(_pulse(_rgb(s), fs), fs, kind="stft", shape=(n_rows, n_cols), lo=lo, hi=hi)
    ridge = 60.0 * freqs_hz[np.argmax(image, axis=0)]
    err = ridge - truth
    print("ridge error per column, bpm:", np.round(err, 1), f"(row = {row_bpm:.2f} bpm)")
    assert np.median(np.abs(err)) <= row_bpm
    assert np.mean(np.abs(err) <= 5.0) >= 0.85
    # The ridge rises with the rate: first and last quarters differ by about 60 -> 120 bpm.
    rise = np.median(ridge[-8:]) - np.median(ridge[:8])
    assert rise == pytest.approx(np.median(truth[-8:]) - np.median(truth[:8]), abs=6.0)
