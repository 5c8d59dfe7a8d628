"""SerialSensorSource against the simulated board on a pseudo-terminal: the real pyserial,
the real tty layer, the real wire protocol; the board's ground truth is the answer key."""
from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np
import pytest

from firmware_bridge.errors import ConfigError, DeviceError, MissingDependencyError, SourceEndedError
from firmware_bridge.protocol import STREAM_IDS, stream_name

from firmware_bridge.simdevice import BoardStream, LineFaults, SimulatedSensorBoard, synth_streams
from firmware_bridge.transports.serial import SerialSensorSource

needs_serial = pytest.mark.skipif(
    importlib.util.find_spec("serial") is None,
    reason="pyserial (extra 'sensors') is not installed; the serial transport cannot open ports",
)

SPEED = 20.0


@pytest.fixture(scope="module")
def short_streams():
    """6 s of synthetic ECG (250 Hz), PPG (100 Hz) and EDA (32 Hz)."""
    return synth_streams(duration_s=6.0, hr_bpm=72, seed=1)


def drain(source: SerialSensorSource, board: SimulatedSensorBoard, quiet_s: float = 0.5) -> list:
    """Every chunk until the board has finished and the line has been quiet for ``quiet_s``."""
    assert board.wait_finished(timeout_s=30.0), "board did not finish"
    chunks = []
    while (chunk := source.read(timeout_s=quiet_s)) is not None:
        chunks.append(chunk)
    return chunks


def by_stream(chunks) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in chunks:
        out.setdefault(c.stream, []).append(c)
    return out


def sent_physical(board: SimulatedSensorBoard, name: str, only=lambda m: True) -> dict[int, np.ndarray]:
    """seq -> physical values of each samples message the board made for a stream."""
    info = board.streams[name]
    return {m.seq: info.to_physical(m.raw)[:, 0] for m in board.truth.samples_sent(STREAM_IDS[name]) if only(m)}


@needs_serial
def test_pty_board_end_to_end(short_streams):
    t_start_ns = time.monotonic_ns()
    with SimulatedSensorBoard(short_streams, speed=SPEED, block_s=0.005) as board, \
            SerialSensorSource(board.path) as source:
        chunks = drain(source, board)
        stats = source.stats()
    t_end_ns = time.monotonic_ns()
    assert stats["crc_errors"] == stats["malformed"] == 0
    assert stats["reconnects"] == 0 and stats["chunks_dropped"] == 0
    got = by_stream(chunks)
    assert set(got) == {"ecg", "ppg_ir", "eda"}
    for spec in short_streams:
        cs = got[spec.name]
        # Sequence complete and in order, nothing reported lost.
        assert [c.seq for c in cs] == list(range(len(cs)))
        assert all(c.meta["lost_before"] == 0 and abs(c.meta["gap_before_s"]) < 1e-5 for c in cs)
        # Rate and units as the board announces them: the recording's, times the speed.
        assert {c.fs_hz for c in cs} == {spec.fs_hz * SPEED}
        assert {c.units for c in cs} == {spec.units}
        # Every sample arrived, equal to what the board sent after scaling, and within half a
        # quantization step of the original physical value.
        sent = sent_physical(board, spec.name)
        assert len(sent) == len(cs)
        for c in cs:
            np.testing.assert_array_equal(c.samples, sent[c.seq])
        values = np.concatenate([c.samples for c in cs])
        assert values.shape == (spec.values.shape[0],)
        gain = board.streams[spec.name].gain
        assert np.max(np.abs(values - spec.values[:, 0])) <= 0.5 * gain * (1 + 1e-6)
        # Device time advances exactly one block per message. Host times lie within the test
        # and span what the device times span (the online clock fit starts from few
        # messages, so single chunks may be stamped some ms off).
        dev = np.array([c.device_t0_us for c in cs], dtype=np.int64)
        n = np.array([c.samples.size for c in cs])
        np.testing.assert_allclose(np.diff(dev), n[:-1] / c.fs_hz * 1e6, atol=1.0)
        t0 = np.array([c.t0_ns for c in cs], dtype=np.int64)
        assert t_start_ns < t0.min() and t0.max() < t_end_ns
        assert abs((t0[-1] - t0[0]) - 1000 * (dev[-1] - dev[0])) < 0.1e9
        assert all(c.source == f"serial://{board.path}" for c in cs)


@needs_serial
def test_stream_selection_starts_only_those(short_streams):
    with SimulatedSensorBoard(short_streams, speed=SPEED, block_s=0.005) as board, \
            SerialSensorSource(board.path, streams=("ecg",)) as source:
        deadline = time.monotonic() + 10.0
        while board.truth.samples_made["ecg"] < len(short_streams[0].values) and time.monotonic() < deadline:
            time.sleep(0.05)
        chunks = []
        while (chunk := source.read(timeout_s=0.3)) is not None:
            chunks.append(chunk)
    assert {c.stream for c in chunks} == {"ecg"}
    assert sum(c.samples.size for c in chunks) == len(short_streams[0].values)
    assert board.truth.samples_made["ppg_ir"] == board.truth.samples_made["eda"] == 0


@needs_serial
def test_unplug_and_replug_reconnects_and_shows_the_gap():
    streams = synth_streams(duration_s=10.0, hr_bpm=72, seed=2)
    with SimulatedSensorBoard(streams, speed=10.0, block_s=0.01) as board, \
            SerialSensorSource(board.path, backoff_s=(0.02, 0.1)) as source:
        first = source.read(timeout_s=5.0)
        assert first is not None
        time.sleep(0.2)
        board.unplug(0.3)
        chunks = [first, *drain(source, board)]
        stats = source.stats()
    assert board.truth.unplugs == 1
    assert stats["disconnects"] == 1 and stats["reconnects"] == 1
    assert stats["down_s"] >= 0.25
    lost_unplugged = [m for m in board.truth.messages if m.lost == "unplugged" and m.kind == "samples"]
    assert lost_unplugged
    for name, cs in by_stream(chunks).items():
        sid = STREAM_IDS[name]
        after = [c for c in cs if c.meta["reconnects"] == 1]
        assert after, f"{name}: no samples after the reconnect"
        gaps = [c for c in cs if c.meta["lost_before"] > 0]
        assert len(gaps) == 1, f"{name}: expected one gap, got {[c.meta for c in gaps]}"
        gap = gaps[0]
        # The seq jump is the loss; it covers at least what the board made while unplugged,
        # and the time gap is exactly the lost messages' samples.
        assert gap.meta["lost_before"] >= sum(m.stream_id == sid for m in lost_unplugged)
        block_s = board._streams[sid].block / gap.fs_hz
        assert gap.meta["gap_before_s"] == pytest.approx(gap.meta["lost_before"] * block_s, abs=2e-6)
        # After the gap the stream runs to the end of the recording, in order, intact.
        seqs = [c.seq for c in cs]
        assert seqs == sorted(seqs) and seqs[-1] == board.truth.samples_sent(sid)[-1].seq
        sent = sent_physical(board, name)
        for c in after:
            np.testing.assert_array_equal(c.samples, sent[c.seq])
        # Host times jump across the gap too, by about its length (the clock mapping is still
        # learning its offset this early, so allow it some error).
        i = cs.index(gap)
        host_gap_s = (gap.t0_ns - cs[i - 1].t0_ns) / 1e9 - cs[i - 1].samples.size / gap.fs_hz
        assert 0.8 * gap.meta["gap_before_s"] < host_gap_s < gap.meta["gap_before_s"] + 0.2


@needs_serial
def test_line_faults_are_counted_and_intact_frames_recovered():
    streams = synth_streams(duration_s=8.0, hr_bpm=72, seed=3)
    faults = LineFaults(bit_flip_rate=1e-3, drop_rate=5e-4, garbage_rate=0.02, seed=3)
    with SimulatedSensorBoard(streams, speed=SPEED, block_s=0.005, faults=faults) as board, \
            SerialSensorSource(board.path) as source:
        chunks = drain(source, board)
        stats = source.stats()
    truth = board.truth
    assert truth.frames_damaged >= 5 and truth.garbage_bursts >= 2, "the faults did not fire: test is void"
    # Every damaged frame and every noise burst shows up as a CRC error or a malformed frame.
    # Not exactly one each: a lost delimiter merges two frames into one bad one, a byte
    # flipped to 0x00 splits one in two.
    bad = stats["crc_errors"] + stats["malformed"]
    expected = sum(m.damaged for m in truth.messages) + truth.garbage_bursts
    assert abs(bad - expected) <= max(2, 0.2 * expected), (bad, expected)
    assert stats["bytes_skipped"] >= truth.garbage_bytes
    # Every frame that crossed intact is recovered; nothing that was not sent appears.
    got = {(c.stream, c.seq) for c in chunks}
    samples = [m for m in truth.messages if m.kind == "samples"]
    intact = {(stream_name(m.stream_id), m.seq) for m in samples if m.intact}
    written = {(stream_name(m.stream_id), m.seq) for m in samples if m.written}
    assert intact <= got <= written
    assert len(got) < len(samples)  # some were lost, and they were counted:
    lost = len(samples) - len(got)
    assert sum(stats["seq_gaps"].values()) <= lost <= sum(stats["seq_gaps"].values()) + 3
    for name in ("ecg", "ppg_ir", "eda"):
        sent = sent_physical(board, name)
        for c in by_stream(chunks)[name]:
            np.testing.assert_array_equal(c.samples, sent[c.seq])


@needs_serial
def test_pause_delays_but_loses_nothing(short_streams):
    with SimulatedSensorBoard(short_streams, speed=SPEED, block_s=0.005) as board, \
            SerialSensorSource(board.path) as source:
        assert source.read(timeout_s=5.0) is not None
        board.pause(0.15)
        chunks = drain(source, board)
    assert board.truth.pauses == 1
    for name, cs in by_stream(chunks).items():
        assert all(c.meta["lost_before"] == 0 for c in cs)
        seqs = [c.seq for c in cs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


@needs_serial
def test_board_reboot_on_replug_is_seen_as_a_reset_not_a_loss():
    streams = synth_streams(duration_s=10.0, hr_bpm=72, seed=4)
    with SimulatedSensorBoard(streams, speed=10.0, block_s=0.01, reboot_on_replug=True) as board, \
            SerialSensorSource(board.path, backoff_s=(0.02, 0.1)) as source:
        assert source.read(timeout_s=5.0) is not None
        time.sleep(0.2)
        board.unplug(0.2)
        chunks = drain(source, board)
        stats = source.stats()
    assert stats["reconnects"] == 1 and stats["seq_resets"] >= 1
    for name, cs in by_stream(chunks).items():
        resets = [c for c in cs if c.meta["device_reset"]]
        assert len(resets) == 1, name
        assert resets[0].seq == 0 and resets[0].meta["lost_before"] == 0
        assert all(c.meta["lost_before"] == 0 for c in cs)


@needs_serial
def test_set_rate_changes_the_chunks_and_a_bad_rate_is_refused(short_streams):
    with SimulatedSensorBoard(short_streams, speed=SPEED, block_s=0.005, loop=True) as board, \
            SerialSensorSource(board.path) as source:
        assert source.read(timeout_s=5.0) is not None
        source.set_rate("ecg", 2000.0)
        with pytest.raises(ConfigError, match="BAD_RATE"):
            source.set_rate("ecg", 0.0)
        deadline = time.monotonic() + 5.0
        rates = set()
        while time.monotonic() < deadline and 2000.0 not in rates:
            c = source.read(timeout_s=1.0)
            if c is not None and c.stream == "ecg":
                rates.add(c.fs_hz)
    assert 2000.0 in rates
    assert board.streams["ecg"].fs_hz == 2000.0


@needs_serial
def test_lost_port_that_never_returns_ends_the_source(short_streams):
    with SimulatedSensorBoard(short_streams, speed=SPEED, loop=True) as board:
        source = SerialSensorSource(board.path, backoff_s=(0.02, 0.05), reconnect_timeout_s=0.3)
        try:
            assert source.read(timeout_s=5.0) is not None
            board.unplug(30.0)
            with pytest.raises(SourceEndedError, match="not regained"):
                for _ in source:
                    pass
        finally:
            source.close()


@needs_serial
def test_port_that_does_not_exist_is_one_line_device_error(tmp_path):
    port = str(tmp_path / "ttyNOPE0")
    with pytest.raises(DeviceError) as info:
        SerialSensorSource(port)
    message = str(info.value)
    assert port in message and "\n" not in message
    assert "No such file" in message


@pytest.mark.parametrize("kwargs", [{"baudrate": 0}, {"baudrate": 1.5}, {"streams": ("heart",)},
                                    {"backoff_s": (1.0, 0.5)}, {"max_queue": 0}])
def test_bad_settings_are_config_errors(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        SerialSensorSource(str(tmp_path / "ttyX"), **kwargs)


def test_missing_pyserial_names_the_extra(monkeypatch, tmp_path):
    # pyserial is installed here; a None entry in sys.modules makes its import fail the way
    # a missing package does.
    monkeypatch.setitem(sys.modules, "serial", None)
    with pytest.raises(MissingDependencyError, match=r"emofuse\[sensors\]"):
        SerialSensorSource(str(tmp_path / "ttyX"))


@needs_serial
def test_nan_survives_the_wire_as_float32():
    values = np.sin(np.arange(400) / 10.0)
    values[[5, 100, 101, 399]] = np.nan
    stream = BoardStream("eda", values, 40.0)
    assert stream.dtype == "float32"
    with SimulatedSensorBoard([stream], speed=SPEED, block_s=0.01) as board, \
            SerialSensorSource(board.path) as source:
        chunks = drain(source, board)
    got = np.concatenate([c.samples for c in chunks])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(values))
    np.testing.assert_allclose(got, values.astype(np.float32), rtol=0, atol=0)
