"""resample_to_grid: exact on lines, holes marked and never bridged, inputs checked."""
from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.resample import METHODS, resample_to_grid
from helpers import shared_path


def jittered_times(fs_hz, seconds, jitter_frac=0.3, seed=0):
    rng = np.random.default_rng(seed)
    n = int(seconds * fs_hz)
    return (np.arange(n) + rng.uniform(-jitter_frac, jitter_frac, n)) / fs_hz


def test_linear_data_is_reproduced_exactly():
    t = jittered_times(100.0, 10.0)
    x = 3.0 - 0.7 * t
    y, valid = resample_to_grid(t, x, 30.0, 0.5, 270)
    tg = 0.5 + np.arange(270) / 30.0
    assert valid.all()
    np.testing.assert_allclose(y, 3.0 - 0.7 * tg, rtol=0, atol=1e-12)


def test_outside_the_data_is_invalid_nan():
    t = np.arange(100) / 50.0  # 0 .. 1.98 s
    y, valid = resample_to_grid(t, t, 10.0, -0.5, 30)  # grid -0.5 .. 2.4 s
    tg = -0.5 + np.arange(30) / 10.0
    inside = (tg >= 0) & (tg <= 1.98 + 1e-9)
    np.testing.assert_array_equal(valid, inside)
    assert np.isnan(y[~valid]).all() and np.isfinite(y[valid]).all()


def test_grid_point_on_the_last_sample_survives_rounding():
    t = np.arange(301) / 300.0  # the last sample at exactly 1 s
    y, valid = resample_to_grid(t, 2 * t, 30.0, 0.0, 31)  # 30 / 30.0 may round either way
    assert valid.all()
    assert y[-1] == pytest.approx(2.0, abs=1e-12)


def test_a_removed_second_is_invalid_and_its_neighbours_valid():
    fs = 100.0
    t = jittered_times(fs, 10.0, jitter_frac=0.1)
    keep = (t < 4.0) | (t >= 5.0)
    x = np.sin(2 * np.pi * 1.3 * t)
    y, valid = resample_to_grid(t[keep], x[keep], 25.0, 0.0, 250)
    tg = np.arange(250) / 25.0
    last_before, first_after = t[keep][t[keep] < 4.0].max(), t[keep][t[keep] >= 5.0].min()
    hole = (tg > last_before) & (tg < first_after)
    in_data = (tg >= t[0]) & (tg <= t[-1])
    np.testing.assert_array_equal(valid, in_data & ~hole)
    assert np.isnan(y[hole]).all()
    # The grid points just around the hole are real, not bridged.
    assert valid[(tg > 3.8) & (tg < 4.0)].all() and valid[(tg > 5.05) & (tg < 5.3)].all()
    np.testing.assert_allclose(y[valid], np.sin(2 * np.pi * 1.3 * tg[valid]), atol=0.01)


def test_default_max_gap_is_two_and_a_half_periods():
    t = np.arange(200) / 100.0
    one_lost = np.delete(t, 50)         # a 2-period hole: bridged
    two_lost = np.delete(t, [50, 51])   # a 3-period hole: not
    _, v1 = resample_to_grid(one_lost, one_lost, 1000.0, 0.0, 1990)
    _, v2 = resample_to_grid(two_lost, two_lost, 1000.0, 0.0, 1990)
    assert v1.all()
    tg = np.arange(1990) / 1000.0
    np.testing.assert_array_equal(~v2, (tg > 0.49 + 1e-9) & (tg < 0.52 - 1e-9))
    # An explicit max_gap_s overrides the default.
    _, v3 = resample_to_grid(one_lost, one_lost, 1000.0, 0.0, 1990, max_gap_s=0.015)
    assert not v3.all()


def test_breaks_cut_a_short_interval():
    t = np.arange(100) / 100.0
    breaks = np.zeros(100, dtype=bool)
    breaks[40] = True  # data lost between samples 39 and 40 although no time is missing
    _, valid = resample_to_grid(t, t, 1000.0, 0.0, 990, breaks=breaks)
    tg = np.arange(990) / 1000.0
    np.testing.assert_array_equal(~valid, (tg > 0.39 + 1e-9) & (tg < 0.40 - 1e-9))


def test_multichannel_matches_channel_by_channel():
    t = jittered_times(64.0, 5.0, seed=3)
    x = np.stack([np.sin(t), np.cos(3 * t), t**2], axis=1)
    t = t[np.r_[0:100, 140:t.size]]  # a hole
    x = x[np.r_[0:100, 140:x.shape[0]]]
    y, valid = resample_to_grid(t, x, 20.0, 0.0, 100)
    assert y.shape == (100, 3) and y.dtype == np.float64
    for c in range(3):
        yc, vc = resample_to_grid(t, x[:, c], 20.0, 0.0, 100)
        np.testing.assert_array_equal(vc, valid)
        np.testing.assert_array_equal(yc, y[:, c])
    assert np.isnan(y[~valid]).all()


def test_nan_samples_are_missing():
    t = np.arange(100) / 10.0
    x = np.sin(t)
    x[30:36] = np.nan  # a 0.7 s hole at 10 Hz
    y, valid = resample_to_grid(t, x, 10.0, 0.0, 100)
    np.testing.assert_array_equal(~valid, np.isin(np.arange(100), np.arange(30, 36)))
    np.testing.assert_allclose(y[valid], np.sin(t[valid]), atol=1e-12)


def test_duplicate_timestamps_are_averaged():
    t = np.array([0.0, 0.1, 0.1, 0.2, 0.3])
    x = np.array([0.0, 1.0, 3.0, 4.0, 6.0])
    y, valid = resample_to_grid(t, x, 20.0, 0.0, 7)  # 0, 0.05, ... 0.3
    assert valid.all()
    np.testing.assert_allclose(y, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], atol=1e-12)


def test_unsorted_timestamps_are_rejected_clearly():
    with pytest.raises(BadInputError, match="sorted"):
        resample_to_grid([0.0, 0.2, 0.1], [1.0, 2.0, 3.0], 10.0, 0.0, 3)


@pytest.mark.parametrize(
    "args, error",
    [
        (([0.0, np.nan], [1.0, 2.0], 10.0, 0.0, 3), BadInputError),
        (([0.0, 1.0], [1.0, np.inf], 10.0, 0.0, 3), BadInputError),
        (([0.0, 1.0], [1.0, 2.0, 3.0], 10.0, 0.0, 3), BadInputError),
        (([[0.0, 1.0]], [1.0, 2.0], 10.0, 0.0, 3), BadInputError),
        (([0.0, 1.0], np.zeros((2, 2, 2)), 10.0, 0.0, 3), BadInputError),
        (([0.0, 1.0], np.array([1 + 1j, 2j]), 10.0, 0.0, 3), BadInputError),
        (([0.0, 1.0], [1.0, 2.0], 0.0, 0.0, 3), ConfigError),
        (([0.0, 1.0], [1.0, 2.0], 10.0, 0.0, -1), ConfigError),
        (([0.0, 1.0], [1.0, 2.0], 10.0, 0.0, 2.5), ConfigError),
        (([0.0, 1.0], [1.0, 2.0], 10.0, np.nan, 3), BadInputError),
    ],
)
def test_bad_arguments(args, error):
    with pytest.raises(error):
        resample_to_grid(*args)


def test_bad_options():
    with pytest.raises(ConfigError, match="method"):
        resample_to_grid([0.0, 1.0], [1.0, 2.0], 10.0, 0.0, 3, method="cubic")
    with pytest.raises(ConfigError):
        resample_to_grid([0.0, 1.0], [1.0, 2.0], 10.0, 0.0, 3, max_gap_s=0.0)
    with pytest.raises(ConfigError, match="antialias"):
        resample_to_grid([0.0, 1.0], [1.0, 2.0], 10.0, 0.0, 3, method="nearest", antialias=True)
    with pytest.raises(BadInputError, match="breaks"):
        resample_to_grid([0.0, 1.0], [1.0, 2.0], 10.0, 0.0, 3, breaks=[0, 1])


def test_too_little_data_gives_nothing_valid():
    for t, x in (([], []), ([1.0], [2.0]), ([1.0, 1.0], [2.0, 4.0])):
        y, valid = resample_to_grid(t, x, 10.0, 0.0, 20)
        assert y.shape == (20,) and not valid.any() and np.isnan(y).all()
    y, valid = resample_to_grid([0.0, 1.0], [1.0, 2.0], 10.0, 0.0, 0)
    assert y.shape == (0,) and valid.shape == (0,)


def test_nearest_and_previous():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    x = np.array([10.0, 20.0, 30.0, 40.0])
    tg = np.array([0.0, 0.4, 0.6, 1.0, 2.9, 3.0])
    expect = {"nearest": [10, 10, 20, 20, 40, 40], "previous": [10, 10, 10, 20, 30, 40]}
    assert set(expect) <= set(METHODS)
    for method, want in expect.items():
        for k, tq in enumerate(tg):
            y, valid = resample_to_grid(t, x, 1.0, tq, 1, method=method)
            assert valid[0] and y[0] == want[k], (method, tq)


def test_antialias_suppresses_noise_and_keeps_the_slow_signal():
    fs, rate = 500.0, 25.0
    t = jittered_times(fs, 8.0, jitter_frac=0.2, seed=4)
    rng = np.random.default_rng(4)
    slow = np.sin(2 * np.pi * 0.8 * t)
    noise = rng.normal(0, 1.0, t.size)
    tg = np.arange(175) / rate + 0.5
    y_plain, _ = resample_to_grid(t, slow + noise, rate, 0.5, 175)
    y_box, valid = resample_to_grid(t, slow + noise, rate, 0.5, 175, antialias=True)
    assert valid.all()
    truth = np.sin(2 * np.pi * 0.8 * tg)
    # White noise folds in fully without the prefilter; the box averages ~20 samples.
    assert np.std(y_plain - truth) > 0.8
    assert np.std(y_box - truth) < 0.35
    # On a clean slow signal the box costs only its sinc gain (0.998 at 0.8 Hz / 25 Hz).
    y_clean, _ = resample_to_grid(t, slow, rate, 0.5, 175, antialias=True)
    np.testing.assert_allclose(y_clean, np.sinc(0.8 / rate) * truth, atol=2e-3)


def test_antialias_box_must_not_touch_a_hole():
    t = np.arange(1000) / 100.0
    keep = (t < 4.0) | (t >= 5.0)
    _, plain = resample_to_grid(t[keep], t[keep], 5.0, 0.0, 50)
    _, boxed = resample_to_grid(t[keep], t[keep], 5.0, 0.0, 50, antialias=True)
    tg = np.arange(50) / 5.0
    assert not boxed[0]  # the first box starts before the data
    # Every point whose 0.2 s box reaches into the hole (3.99, 5.0) is invalid too.
    touches = (tg + 0.1 > 3.99) & (tg - 0.1 < 5.0)
    np.testing.assert_array_equal(boxed[1:-1], ~touches[1:-1])
    assert np.all(plain[~touches & (tg <= 9.99)])


@pytest.mark.realdata
def test_real_finger_bvp_onto_the_video_frame_grid():
    """The PhysRecorder finger BVP (about 20 Hz, jittered host stamps) resampled to the 30 fps
    video grid: all valid where both exist, and its pulse is the ~71 bpm of the recording."""
    root = shared_path("rppg/physrecorder-v01/BVP.csv").parent
    bvp = np.loadtxt(root / "BVP.csv", delimiter=",", skiprows=1)
    frames = np.loadtxt(root / "frames_timestamp.csv", delimiter=",", skiprows=1)
    t0 = frames[0, 1]
    t_bvp = bvp[:, 0] - t0  # relative seconds: Unix seconds in float64 lose sub-us detail
    n = frames.shape[0]
    y, valid = resample_to_grid(t_bvp, bvp[:, 1], 30.0, 0.0, n)
    tg = np.arange(n) / 30.0
    overlap = (tg >= t_bvp[0]) & (tg <= t_bvp[-1])
    np.testing.assert_array_equal(valid, overlap)
    assert valid.mean() > 0.95
    seg = y[valid] - y[valid].mean()
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size), 8192))
    freqs = np.fft.rfftfreq(8192, 1 / 30.0)
    band = (freqs > 0.7) & (freqs < 3.0)
    hr_bpm = 60.0 * freqs[band][np.argmax(spec[band])]
    assert abs(hr_bpm - 71.0) < 6.0, hr_bpm
