"""ClockSync and Unwrapper: simulate a device clock and a jittery link, recover the true times."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from firmware_bridge.clock import ClockSync, Unwrapper
from firmware_bridge.errors import BadInputError, ConfigError

HOST0_NS = 987_654_321_000_000  # a realistic monotonic clock value (11 days of uptime)
MS = 1_000_000


def simulate_link(drift_ppm, seconds=90.0, rate_hz=50.0, jitter_ms=5.0, jitter="halfnormal",
                  base_ms=1.0, outlier_p=0.02, dev0_us=123_456_789, seed=0):
    """Messages from a device whose clock runs at (1 + drift) host rate, over a link whose
    delay is base + jitter, with a share of 50-200 ms outliers, delivered in order (FIFO).

    Returns device stamps (us, int64), host arrival times (ns, int64) and, per message, the
    true host time at which the device read its stamp (ns, float).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    send_ns = HOST0_NS + np.round(np.arange(n) * 1e9 / rate_hz + rng.uniform(0, 2e5, n))
    dev_us = dev0_us + np.floor((send_ns - HOST0_NS) / 1e3 * (1 + drift_ppm * 1e-6)).astype(np.int64)
    truth_ns = HOST0_NS + (dev_us - dev0_us) * 1e3 / (1 + drift_ppm * 1e-6)
    if jitter == "halfnormal":
        delay_ms = np.abs(rng.normal(0, jitter_ms, n))
    elif jitter == "exponential":
        delay_ms = rng.exponential(jitter_ms, n)
    else:  # uniform with the same mean as the half-normal's scale
        delay_ms = rng.uniform(0, 2 * jitter_ms, n)
    late = rng.random(n) < outlier_p
    delay_ms[late] += rng.uniform(50, 200, late.sum())
    arrival = np.maximum.accumulate(send_ns + (base_ms + delay_ms) * MS).astype(np.int64)
    return dev_us, arrival, truth_ns


def online_errors_ms(sync, dev_us, arrival, truth_ns, from_s, rate_hz=50.0):
    """Feed every message; from ``from_s`` on, map each message's stamp right after it
    arrived (what the runtime does) and return the errors, ms."""
    errors = []
    for k, (d, h) in enumerate(zip(dev_us, arrival)):
        sync.update(int(d), int(h))
        if k >= from_s * rate_hz:
            errors.append((sync.to_host_ns(int(d)) - truth_ns[k]) / MS)
    return np.asarray(errors)


def test_aligns_within_2ms_after_a_minute():
    dev, arr, truth = simulate_link(100.0, seconds=90.0)
    sync = ClockSync(latency_ns=1 * MS)
    err = online_errors_ms(sync, dev, arr, truth, from_s=60.0)
    assert err.size == 30 * 50
    assert np.max(np.abs(err)) < 2.0, f"max {np.max(np.abs(err)):.3f} ms"
    # The lower envelope gets far closer than the 5 ms jitter: a mean under 0.5 ms.
    assert np.mean(np.abs(err)) < 0.5
    assert sync.ready and abs(sync.drift_ppm - 100.0) < 5.0
    assert 0 < sync.residual_ns < 1 * MS
    # Past messages of the last 10 s of the first minute, mapped with the final fit.
    last = slice(50 * 50, 60 * 50)
    mapped = sync.to_host_ns(dev[last])
    assert mapped.dtype == np.int64
    assert np.max(np.abs(mapped - truth[last])) < 2 * MS


@pytest.mark.parametrize(
    "drift_ppm, jitter",
    [(-300.0, "exponential"), (-120.0, "uniform"), (0.0, "halfnormal"),
     (180.0, "exponential"), (300.0, "uniform")],
)
def test_drift_range_and_jitter_shapes(drift_ppm, jitter):
    dev, arr, truth = simulate_link(drift_ppm, seconds=75.0, jitter=jitter, seed=int(drift_ppm) % 97)
    sync = ClockSync(latency_ns=1 * MS)
    err = online_errors_ms(sync, dev, arr, truth, from_s=60.0)
    assert np.max(np.abs(err)) < 2.0
    assert abs(sync.drift_ppm - drift_ppm) < 5.0


def test_unknown_latency_leaves_a_constant_lag():
    dev, arr, truth = simulate_link(50.0, seconds=70.0, base_ms=3.0)
    sync = ClockSync()  # latency unknown: mapped times are late by about the 3 ms base delay
    err = online_errors_ms(sync, dev, arr, truth, from_s=60.0)
    assert np.all((err > 2.5) & (err < 4.0))


def test_a_burst_of_late_blocks_does_not_move_the_fit():
    dev, arr, truth = simulate_link(-200.0, seconds=90.0, outlier_p=0.0, seed=5)
    stall = slice(40 * 50, 44 * 50)  # 4 s during which every message is 150-400 ms late
    arr = arr.copy()
    arr[stall] += np.random.default_rng(1).uniform(150, 400, 200).astype(np.int64) * MS
    arr = np.maximum.accumulate(arr)
    sync = ClockSync(latency_ns=1 * MS)
    err = online_errors_ms(sync, dev, arr, truth, from_s=60.0)
    assert np.max(np.abs(err)) < 2.0
    assert sync.n_resets == 0


def test_uint32_wrap_is_unwrapped_with_the_host_clock():
    start = 2**32 - 20_000_000  # the counter wraps 20 s into the run
    dev, arr, truth = simulate_link(150.0, seconds=80.0, dev0_us=start)
    raw = dev % 2**32
    assert np.any(np.diff(raw) < 0)
    sync = ClockSync(latency_ns=1 * MS, wrap_bits=32)
    unwrapped = [sync.update(int(d), int(h)) for d, h in zip(raw, arr)]
    np.testing.assert_array_equal(unwrapped, dev)
    assert sync.n_resets == 0
    # Raw readings just before and after the wrap map onto the one timeline.
    err_ms = (sync.to_host_ns(raw) - truth) / MS
    assert np.max(np.abs(err_ms[50 * 50:])) < 2.0
    assert sync.to_host_ns(int(raw[-1])) == sync.to_host_ns(int(dev[-1]))


def test_silence_longer_than_a_wrap_period():
    drift = 80.0
    dev, arr, truth = simulate_link(drift, seconds=60.0, outlier_p=0.0)
    sync = ClockSync(latency_ns=1 * MS, wrap_bits=32)
    for d, h in zip(dev % 2**32, arr):
        sync.update(int(d), int(h))
    # 100 min of silence (more than one 71.6 min wrap period), then one message.
    silence_ns = 100 * 60 * 10**9
    later_dev = int(dev[-1]) + int(round(silence_ns / 1e3 * (1 + drift * 1e-6)))
    later_truth = truth[-1] + silence_ns
    got = sync.update(later_dev % 2**32, int(later_truth + 2 * MS))
    assert got == later_dev
    assert sync.n_resets == 0
    # 100 min of extrapolated drift: the estimate (within ~1 ppm) keeps it within ~10 ms.
    assert abs(sync.to_host_ns(later_dev % 2**32) - later_truth) < 10 * MS


def test_device_reset_reinitialises_and_logs(caplog):
    dev_a, arr_a, truth_a = simulate_link(100.0, seconds=30.0)
    dev_b, arr_b, truth_b = simulate_link(100.0, seconds=70.0, dev0_us=1_000, seed=9)
    shift = int(arr_a[-1] - HOST0_NS) + 50 * MS  # the device reboots and counts from ~0
    sync = ClockSync(latency_ns=1 * MS, name="wristband")
    with caplog.at_level(logging.WARNING, logger="firmware_bridge.clock"):
        for d, h in zip(dev_a, arr_a):
            sync.update(int(d), int(h))
        err = online_errors_ms(sync, dev_b, arr_b + shift, truth_b + shift, from_s=60.0)
    assert sync.n_resets == 1
    assert any("wristband" in r.getMessage() and "reset" in r.getMessage() for r in caplog.records)
    assert sync.n_updates == dev_b.size
    assert np.max(np.abs(err)) < 2.0


def test_before_a_fit_drift_is_zero_and_offset_is_the_lowest_delay():
    sync = ClockSync(latency_ns=0)
    for k in range(20):  # 0.4 s, inside the first block
        sync.update(1_000 + 20_000 * k, HOST0_NS + 20_000_000 * k + (3 + k % 5) * MS)
    assert not sync.ready and sync.drift_ppm == 0.0 and np.isnan(sync.residual_ns)
    assert sync.offset_ns == HOST0_NS - 1_000 * 1_000 + 3 * MS
    assert sync.to_host_ns(1_000) == HOST0_NS + 3 * MS


def test_bad_input_and_settings():
    sync = ClockSync()
    with pytest.raises(BadInputError, match="no messages"):
        sync.to_host_ns(5)
    with pytest.raises(BadInputError):
        sync.update(1.5, HOST0_NS)
    with pytest.raises(BadInputError):
        sync.update(1, "now")
    with pytest.raises(BadInputError):
        ClockSync(wrap_bits=16).update(70_000, HOST0_NS)
    with pytest.raises(BadInputError):
        sync.update_many([1, 2, 3], [HOST0_NS, HOST0_NS + 1])
    for bad in ({"block_s": 0}, {"window_blocks": 2}, {"latency_ns": -1}, {"wrap_bits": 64},
                {"reset_tolerance_s": 0.0}):
        with pytest.raises(ConfigError):
            ClockSync(**bad)


def test_update_many_matches_update():
    dev, arr, _ = simulate_link(-60.0, seconds=20.0)
    one, many = ClockSync(), ClockSync()
    for d, h in zip(dev, arr):
        one.update(int(d), int(h))
    out = many.update_many(dev, arr)
    np.testing.assert_array_equal(out, dev)
    assert one.drift_ppm == many.drift_ppm and one.offset_ns == many.offset_ns
    np.testing.assert_array_equal(one.to_host_ns(dev[:7]), [one.to_host_ns(int(d)) for d in dev[:7]])


# -- Unwrapper -------------------------------------------------------------------------------

def test_unwrapper_recovers_a_counter_across_many_wraps():
    rng = np.random.default_rng(2)
    truth = 40_000 + np.cumsum(rng.integers(0, 30_000, 400))  # steps < half of 2**16
    raw = truth % 2**16
    u = Unwrapper(bits=16)
    scalar = [u(int(r)) for r in raw]
    np.testing.assert_array_equal(scalar, truth - truth[0] + raw[0])
    v = Unwrapper(bits=16)
    parts = [v(raw[:1]), v(raw[1:150]), v(raw[150:])]
    np.testing.assert_array_equal(np.concatenate(parts), scalar)
    assert v.last == scalar[-1]


def test_unwrapper_keeps_a_small_step_back_across_the_wrap():
    u = Unwrapper(bits=32)
    assert u(2**32 - 10) == 2**32 - 10
    assert u(5) == 2**32 + 5          # wrapped forward
    assert u(2**32 - 3) == 2**32 - 3  # a reordered earlier message, not a second wrap
    u.reset()
    assert u(7) == 7


def test_unwrapper_rejects_out_of_range():
    with pytest.raises(BadInputError):
        Unwrapper(bits=8)(256)
    with pytest.raises(BadInputError):
        Unwrapper(bits=8)(np.array([1, -1]))
    for bits in (0, 63):
        with pytest.raises(ConfigError):
            Unwrapper(bits=bits)
