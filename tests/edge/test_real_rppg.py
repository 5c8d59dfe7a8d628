"""rPPG on a real webcam recording against the finger oximeter's pulse recorded alongside.

rppg/physrecorder-v01: a 20 s face video (Logitech C930c, 640x480, ~30 fps) with per-frame
UNIX timestamps and a finger BVP (Contec CMS50E, ~20 Hz, irregular timestamps). The video
is processed exactly as ``emofuse hr`` and the runtime do (edge.offline.hr_session: the
pipeline's face tracker, forehead + cheek skin means, the record's pulse window and heart
rate; every window's estimate kept, threshold 0). The two streams are aligned by their
timestamps, never by sample index.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge.offline import hr_session, resample_uniform
from edge.signals.filters import bandpass
from edge.signals.hr import heart_rate
from helpers import shared_path

pytestmark = pytest.mark.realdata

CLIP = "rppg/physrecorder-v01"


@pytest.fixture(scope="module")
def recording():
    video = shared_path(f"{CLIP}/video_ZIP_H264.avi")
    stamps = shared_path(f"{CLIP}/frames_timestamp.csv")
    bvp_csv = np.loadtxt(shared_path(f"{CLIP}/BVP.csv"), delimiter=",", skiprows=1)
    est = hr_session(video, "default", timestamps=stamps, min_pulse_quality=0.0)
    fs_bvp = 1.0 / float(np.median(np.diff(bvp_csv[:, 0])))
    t_bvp, bvp = resample_uniform(bvp_csv[:, 0], bvp_csv[:, 1], fs_bvp)
    bvp = bandpass(bvp[:, 0], fs_bvp, 0.7, 3.5)
    return None, est, t_bvp, bvp, fs_bvp


def test_every_window_has_a_face_and_a_pulse(recording):
    _, est, *_ = recording
    assert est.frames == 602 and est.t0_unix_s is not None
    assert est.track.t_s.size == 11 and np.all(np.isfinite(est.track.hr_bpm))
    assert np.all(np.isfinite(est.pulse)) and est.fs == 30.0
    assert np.all(np.diff(est.t_s) > 0) and abs(est.t_s[0] - est.t0_s) < 0.05


def test_heart_rate_matches_finger_bvp(recording):
    _, est, t_bvp, bvp, fs_bvp = recording
    t0 = max(est.t_s[0], t_bvp[0])
    t1 = min(est.t_s[-1], t_bvp[-1])
    assert t1 - t0 > 15.0  # the streams overlap for most of the clip
    hr_bvp = heart_rate(bvp[(t_bvp >= t0) & (t_bvp <= t1)], fs_bvp).hr_bpm
    hr_rppg = heart_rate(est.pulse[(est.t_s >= t0) & (est.t_s <= t1)], est.fs).hr_bpm
    assert 65.0 < hr_bvp < 77.0  # the data README: about 71 bpm
    assert abs(hr_rppg - hr_bvp) < 3.0  # measured: 71.1 vs 71.1 bpm
    # The windowed track, window by window against the BVP over the same absolute times.
    ends = est.t0_s + est.track.t_s
    hr_bvp_win = np.array(
        [heart_rate(bvp[(t_bvp > e - 10.0) & (t_bvp <= e)], fs_bvp).hr_bpm for e in ends]
    )
    assert abs(np.median(est.track.hr_bpm) - hr_bvp) < 3.0
    assert np.mean(np.abs(est.track.hr_bpm - hr_bvp_win)) < 3.0  # measured: ~0.9 bpm


def test_pulse_waveform_correlates_with_finger_bvp(recording):
    _, est, t_bvp, bvp, _ = recording
    # Compare on the rPPG grid, 1 s in from each end so every lag stays inside both streams.
    t0 = max(est.t_s[0], t_bvp[0]) + 1.0
    t1 = min(est.t_s[-1], t_bvp[-1]) - 1.0
    grid = est.t_s[(est.t_s >= t0) & (est.t_s <= t1)]
    pulse = np.interp(grid, est.t_s, est.pulse)
    lags = np.arange(-1.0, 1.0 + 1e-9, 1.0 / est.fs)
    # r at lag L compares the face at t with the finger at t + L. The finger pulse arrives
    # later and the oximeter adds its own delay, and the BVP polarity may be flipped, so the
    # largest |r| over +-1 s is taken.
    r = np.array([np.corrcoef(pulse, np.interp(grid + lag, t_bvp, bvp))[0, 1] for lag in lags])
    best = int(np.argmax(np.abs(r)))
    assert abs(r[best]) > 0.4  # measured: |r| ~ 0.6
    # A pulse correlates periodically: |r| must dip between peaks, or it is not a pulse.
    assert np.min(np.abs(r)) < 0.2
