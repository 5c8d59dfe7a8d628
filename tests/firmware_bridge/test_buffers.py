"""RingBuffer against a plain list, StreamBuffers windows against analytic signals and holes."""
from __future__ import annotations

import dataclasses
import logging
import threading

import numpy as np
import pytest

from firmware_bridge.buffers import RingBuffer, StreamBuffers, Window
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.types import SensorChunk

T0_NS = 5_000_000_000_000  # an arbitrary host monotonic origin
F_HZ = 1.2                 # test tone


def tone(t_ns):
    return np.sin(2 * np.pi * F_HZ * (np.asarray(t_ns) - T0_NS) / 1e9)


def chunks(fs_hz=250.0, seconds=10.0, size=25, stream="ppg", skip=(), t0_jitter_ns=0, seed=0,
           seq_offset=0, channels=None):
    """Chunks of a tone sampled at fs_hz, with ``skip`` chunk indices lost in transit and the
    chunk start times disturbed by up to t0_jitter_ns (clock-mapping noise)."""
    rng = np.random.default_rng(seed)
    period_ns = 1e9 / fs_hz
    out = []
    for c in range(int(seconds * fs_hz) // size):
        if c in skip:
            continue
        t0 = T0_NS + int(round(c * size * period_ns)) + int(rng.integers(-t0_jitter_ns, t0_jitter_ns + 1))
        t = t0 + np.round(np.arange(size) * period_ns)
        x = tone(t)
        if channels:
            x = np.stack([x * (k + 1) for k in range(channels)], axis=1)
        out.append(SensorChunk(stream=stream, fs_hz=fs_hz, t0_ns=t0, samples=x, seq=c + seq_offset))
    return out


# -- RingBuffer --------------------------------------------------------------------------------

def test_ring_wraps_like_a_bounded_list():
    rng = np.random.default_rng(1)
    ring = RingBuffer(capacity=37, channels=2)
    ref_t, ref_x = [], []
    t = 0
    for _ in range(60):
        m = int(rng.integers(0, 50))  # sometimes empty, sometimes longer than the capacity
        ts = t + np.cumsum(rng.integers(1, 5, m))
        xs = rng.normal(size=(m, 2))
        t = int(ts[-1]) if m else t
        ring.append(xs, ts)
        ref_t.extend(ts.tolist())
        ref_x.extend(xs.tolist())
        got_t, got_x, _ = ring.read()
        np.testing.assert_array_equal(got_t, ref_t[-37:])
        np.testing.assert_array_equal(got_x, np.asarray(ref_x[-37:]).reshape(-1, 2))
        assert len(ring) == min(37, len(ref_t))
        if ref_t:
            assert ring.latest_t_ns == ref_t[-1] and ring.oldest_t_ns == ref_t[-37:][0]
            # A time range with one sample of padding either side, against the list.
            kept = np.asarray(ref_t[-37:])
            lo_t, hi_t = sorted(rng.integers(kept[0] - 5, kept[-1] + 5, 2))
            inside = np.flatnonzero((kept >= lo_t) & (kept <= hi_t))
            rt, _, _ = ring.read(int(lo_t), int(hi_t), pad=1)
            if inside.size:
                lo, hi = max(0, inside[0] - 1), min(kept.size, inside[-1] + 2)
                np.testing.assert_array_equal(rt, kept[lo:hi])


def test_ring_flags_breaks_and_keeps_time_order():
    ring = RingBuffer(4)
    ring.append([1.0, 2.0], np.array([10, 20]))
    ring.append([3.0], np.array([40]), gap_before=True)
    _, x, brk = ring.read()
    np.testing.assert_array_equal(x[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(brk, [False, False, True])
    with pytest.raises(BadInputError, match="after the newest"):
        ring.append([4.0], np.array([40]))
    with pytest.raises(BadInputError, match="increasing"):
        ring.append([4.0, 5.0], np.array([60, 50]))
    with pytest.raises(BadInputError):
        ring.append(np.zeros((2, 2)), np.array([70, 80]))
    with pytest.raises(BadInputError):
        ring.append([1.0], np.array([70.5]))
    with pytest.raises(ConfigError):
        RingBuffer(0)
    ring.clear()
    assert len(ring) == 0 and ring.latest_t_ns is None


# -- StreamBuffers -----------------------------------------------------------------------------

def test_window_of_a_sine_matches_the_analytic_sine():
    buf = StreamBuffers(seconds=30.0)
    for ch in chunks(fs_hz=250.0, seconds=10.0, t0_jitter_ns=200_000):
        buf.push(ch)
    t_end = T0_NS + 9 * 10**9
    w = buf.window("ppg", t_end, seconds=4.0, rate_hz=30.0)
    assert isinstance(w, Window) and w.n == 120 and w.stream == "ppg"
    assert w.t_start_ns == t_end - 4 * 10**9
    assert w.valid.all() and w.valid_fraction == 1.0
    # 0.2 ms of clock noise on a 1.2 Hz tone moves it by at most 2*pi*1.2*2e-4 = 1.5e-3.
    np.testing.assert_allclose(w.samples, tone(w.t_ns), atol=3e-3)
    assert np.all(np.diff(w.t_ns) > 0) and w.t_ns[-1] < t_end
    assert not w.samples.flags.writeable and not w.valid.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.rate_hz = 10.0


def test_lost_chunks_make_their_span_invalid():
    fs, size = 100.0, 10
    buf = StreamBuffers(seconds=30.0)
    for ch in chunks(fs_hz=fs, size=size, seconds=10.0, skip={40, 41}):  # 0.2 s lost at 4.0 s
        buf.push(ch)
    w = buf.window("ppg", T0_NS + 6 * 10**9, seconds=4.0, rate_hz=50.0)
    tg_s = (w.t_ns - T0_NS) / 1e9
    hole = (tg_s > 3.99 + 1e-6) & (tg_s < 4.2 - 1e-6)
    np.testing.assert_array_equal(w.valid, ~hole)
    assert np.isnan(w.samples[hole]).all()
    np.testing.assert_allclose(w.samples[~hole], tone(w.t_ns[~hole]), atol=2e-3)


def test_a_sequence_jump_breaks_even_without_a_time_gap():
    buf = StreamBuffers()
    cs = chunks(fs_hz=100.0, size=10, seconds=2.0)
    for ch in cs[:5]:
        buf.push(ch)
    # The next chunk arrives on time but its seq says one chunk was lost on the way
    # (e.g. the device re-timestamped): the 10 ms before it must not be interpolated.
    buf.push(dataclasses.replace(cs[5], seq=cs[5].seq + 1))
    w = buf.window("ppg", T0_NS + 600_000_000, seconds=0.6, rate_hz=1000.0)
    tg_ms = (w.t_ns - T0_NS) / 1e6
    np.testing.assert_array_equal(~w.valid, (tg_ms > 490.0) & (tg_ms < 500.0) | (tg_ms > 590.0))


def test_a_silence_without_sequence_numbers_is_a_hole():
    buf = StreamBuffers()
    for ch in chunks(fs_hz=64.0, size=16, seconds=6.0, skip={8, 9}):
        buf.push(dataclasses.replace(ch, seq=-1))
    w = buf.window("ppg", T0_NS + 5 * 10**9, seconds=4.0, rate_hz=16.0)
    tg_s = (w.t_ns - T0_NS) / 1e9
    hole = (tg_s > 2.0 - 1 / 64 + 1e-6) & (tg_s < 2.5 - 1e-6)
    np.testing.assert_array_equal(w.valid, ~hole)


def test_duplicates_are_dropped_and_small_overlaps_absorbed():
    buf = StreamBuffers()
    cs = chunks(fs_hz=250.0, size=25, seconds=2.0)
    for k, ch in enumerate(cs):
        # Clock-mapping noise: some chunks are stamped early, onto (4.3 ms) or too close to
        # (2.5 ms, over half a period) the previous chunk's last sample; the sample count
        # says where they belong.
        if k % 4 == 1:
            ch = dataclasses.replace(ch, t0_ns=ch.t0_ns - 4_300_000)
        elif k % 4 == 2:
            ch = dataclasses.replace(ch, t0_ns=ch.t0_ns - 2_500_000)
        buf.push(ch)
        if k == 3:
            buf.push(ch)  # delivered twice
    assert buf.n_dropped_chunks == 1
    w = buf.window("ppg", T0_NS + 2 * 10**9 - 4_000_000, seconds=1.9, rate_hz=250.0)
    assert w.valid.all()
    np.testing.assert_allclose(w.samples, tone(w.t_ns), atol=1e-9)


def test_time_base_reset_drops_history_with_a_warning(caplog):
    buf = StreamBuffers()
    for ch in chunks(fs_hz=100.0, size=10, seconds=5.0):
        buf.push(ch)
    late = dataclasses.replace(chunks(fs_hz=100.0, size=10, seconds=1.0)[0], seq=1000)
    with caplog.at_level(logging.WARNING, logger="firmware_bridge.buffers"):
        buf.push(late)  # 5 s earlier than the newest sample
    assert any("reset" in r.getMessage() for r in caplog.records)
    assert buf.latest_t_ns("ppg") == late.t0_ns + 90_000_000
    w = buf.window("ppg", T0_NS + 5 * 10**9, seconds=5.0, rate_hz=10.0)
    assert w.valid.sum() == 1  # only the grid point at T0 on the new chunk's first sample


def test_missing_stream_gives_an_all_invalid_window():
    buf = StreamBuffers()
    w = buf.window("eda", T0_NS, seconds=2.0, rate_hz=4.0)
    assert w.samples.shape == (8,) and not w.valid.any() and np.isnan(w.samples).all()
    assert buf.streams() == [] and buf.latest_t_ns("eda") is None and buf.fs_hz("eda") is None


def test_multichannel_streams_keep_their_shape():
    buf = StreamBuffers()
    for ch in chunks(stream="imu", fs_hz=100.0, size=20, seconds=3.0, channels=3):
        buf.push(ch)
    for ch in chunks(stream="one", fs_hz=100.0, size=20, seconds=3.0, channels=1):
        buf.push(ch)
    w = buf.window("imu", T0_NS + 2 * 10**9, seconds=1.0, rate_hz=25.0)
    assert w.samples.shape == (25, 3) and w.valid.all()
    np.testing.assert_allclose(w.samples[:, 2], 3 * tone(w.t_ns), atol=2e-3)
    assert buf.window("one", T0_NS + 2 * 10**9, 1.0, 25.0).samples.shape == (25, 1)
    assert buf.streams() == ["imu", "one"] and buf.fs_hz("imu") == 100.0


def test_history_is_bounded_to_the_configured_seconds():
    buf = StreamBuffers(seconds=10.0)
    for ch in chunks(fs_hz=100.0, size=50, seconds=40.0):
        buf.push(ch)
    assert len(buf._streams["ppg"].ring) == 1001
    w = buf.window("ppg", T0_NS + 40 * 10**9, seconds=20.0, rate_hz=10.0)
    tg_s = (w.t_ns - T0_NS) / 1e9
    np.testing.assert_array_equal(w.valid, (tg_s >= 29.99 - 1e-6) & (tg_s <= 39.99 + 1e-6))


def test_rate_change_restarts_the_stream(caplog):
    buf = StreamBuffers()
    buf.push(chunks(fs_hz=100.0, size=10, seconds=1.0)[0])
    with caplog.at_level(logging.WARNING, logger="firmware_bridge.buffers"):
        buf.push(SensorChunk("ppg", 200.0, T0_NS + 10**9, np.zeros(20), seq=7))
    assert buf.fs_hz("ppg") == 200.0 and any("changed" in r.getMessage() for r in caplog.records)


def test_bad_chunks_and_window_arguments():
    buf = StreamBuffers()
    with pytest.raises(BadInputError):
        buf.push(SensorChunk("x", 100.0, T0_NS, np.zeros((2, 2, 2))))
    with pytest.raises(BadInputError):
        buf.push(SensorChunk("x", 0.0, T0_NS, np.zeros(4)))
    with pytest.raises(BadInputError):
        buf.push(SensorChunk("x", 100.0, 1.5, np.zeros(4)))
    with pytest.raises(BadInputError):
        buf.push(SensorChunk("x", 100.0, T0_NS, np.array(["a", "b"])))
    with pytest.raises(BadInputError, match="inf"):
        buf.push(SensorChunk("x", 100.0, T0_NS, np.array([1.0, np.inf])))
    with pytest.raises(ConfigError):
        buf.window("x", T0_NS, seconds=0.0, rate_hz=10.0)
    with pytest.raises(ConfigError):
        buf.window("x", T0_NS, seconds=0.01, rate_hz=10.0)
    with pytest.raises(ConfigError):
        buf.window("x", T0_NS, seconds=1.0, rate_hz=-1.0)
    with pytest.raises(BadInputError):
        buf.window("x", float(T0_NS), seconds=1.0, rate_hz=10.0)
    with pytest.raises(ConfigError):
        StreamBuffers(seconds=0)


def test_one_producer_one_consumer_threads():
    buf = StreamBuffers(seconds=5.0)
    all_chunks = chunks(fs_hz=250.0, size=25, seconds=20.0)
    errors = []

    def produce():
        for ch in all_chunks:
            buf.push(ch)

    def consume():
        try:
            for _ in range(200):
                t_end = buf.latest_t_ns("ppg")
                if t_end is None:
                    continue
                w = buf.window("ppg", t_end, seconds=2.0, rate_hz=50.0)
                ok = w.valid
                if ok.any() and not np.allclose(w.samples[ok], tone(w.t_ns[ok]), atol=2e-3):
                    errors.append("window does not match the tone")
        except Exception as exc:  # noqa: BLE001 - reported below with its type
            errors.append(repr(exc))

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not errors, errors[:3]
    assert buf.latest_t_ns("ppg") == all_chunks[-1].t0_ns + int(round(24 * 4e6))


def test_bridging_interpolates_short_holes_marks_and_counts_them_and_leaves_long_ones():
    """Issue 13 item 2: a lost 20 ms chunk is interpolated across when asked (bridge_s), marked
    in ``bridged`` and counted; a hole longer than bridge_s stays invalid; without bridge_s
    nothing changes."""
    fs, size = 250.0, 5  # 20 ms chunks, as the serial board sends
    buf = StreamBuffers(seconds=30.0)
    lost = {100, 300, 301, 302, 303, 304, 305, 306, 307, 308, 309}  # 20 ms at 2.0 s; 200 ms at 6.0 s
    for ch in chunks(fs_hz=fs, size=size, seconds=10.0, skip=lost):
        buf.push(ch)
    end = T0_NS + 8 * 10**9
    plain = buf.window("ppg", end, seconds=8.0, rate_hz=fs)
    assert plain.bridged is None and plain.gaps_bridged == 0 and not plain.valid.all()
    w = buf.window("ppg", end, seconds=8.0, rate_hz=fs, bridge_s=0.1)
    tg_s = (w.t_ns - T0_NS) / 1e9
    short = (tg_s > 1.996 + 1e-6) & (tg_s < 2.02 - 1e-6)
    long_ = (tg_s > 5.996 + 1e-6) & (tg_s < 6.2 - 1e-6)
    assert short.sum() == 5 and not plain.valid[short].any()
    np.testing.assert_array_equal(w.bridged, short)
    np.testing.assert_array_equal(w.valid, ~long_)
    assert w.gaps_bridged == 1 and w.longest_bridged_s == pytest.approx(5 / fs)
    # Interpolated, not measured: within the tone's curvature over 24 ms, and finite.
    np.testing.assert_allclose(w.samples[short], tone(w.t_ns[short]), atol=0.05)
    np.testing.assert_array_equal(w.valid & ~short, plain.valid)
    assert w.measured_fraction == pytest.approx(plain.valid_fraction)
    with pytest.raises(ConfigError):
        buf.window("ppg", end, seconds=8.0, rate_hz=fs, bridge_s=-1.0)
