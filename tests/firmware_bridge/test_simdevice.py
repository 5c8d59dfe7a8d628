"""The simulated sensor board: protocol behaviour seen byte by byte on its pseudo-terminal,
deterministic fault injection against its own ground truth, unplug/replug of the stable link,
the recorded sources, and the ``emofuse simulate --pty`` command."""
from __future__ import annotations

import argparse
import errno
import os
import select
import termios
import threading
import time
import tty
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.protocol import (
    ALL_STREAMS,
    NO_STREAM,
    STREAM_IDS,
    Ack,
    Command,
    Decoder,
    DeviceInfo,
    Opcode,
    SamplesMessage,
    Status,
    encode,
)
from firmware_bridge.simdevice import (
    BoardStream,
    LineFaults,
    SimulatedSensorBoard,
    neurokit_streams,
    streams_from_spec,
    synth_streams,
    wfdb_streams,
)
from helpers import shared_path

ECG = STREAM_IDS["ecg"]


@pytest.fixture(scope="module")
def streams():
    """4 s of synthetic ECG (250 Hz), PPG (100 Hz) and EDA (32 Hz)."""
    return synth_streams(duration_s=4.0, hr_bpm=72, seed=5)


class RawPort:
    """The host end opened by hand (no pyserial), to see exactly what the board sends."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        # TCSANOW: the default TCSAFLUSH would throw away what the board sent at boot.
        tty.setraw(self.fd, termios.TCSANOW)
        self.decoder = Decoder()
        self.bytes = bytearray()
        self.held: list = []
        self._seq = 0

    def close(self) -> None:
        os.close(self.fd)

    def read(self, wait_s: float) -> list:
        """Messages held back by :meth:`until`, then those that arrive within ``wait_s`` s."""
        out, self.held = self.held, []
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            if select.select([self.fd], [], [], left)[0]:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    break  # unplugged
                if not data:
                    break
                self.bytes += data
                out += self.decoder.feed(data)
        return out

    def until(self, pred, wait_s: float = 2.0) -> list:
        """Messages up to and including the first for which ``pred`` is true; the rest are
        held for the next read."""
        out = []
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            got = self.read(0.02)
            for i, m in enumerate(got):
                if pred(m):
                    self.held = got[i + 1:]
                    return out + got[:i + 1]
            out += got
        raise AssertionError(f"condition not met within {wait_s} s; got {out[-5:]}")

    def command(self, opcode: int, sid: int = ALL_STREAMS, rate_mhz: int = 0) -> tuple[int, list]:
        self._seq += 1
        os.write(self.fd, encode(Command(opcode, sid, self._seq, rate_mhz)))
        seq = self._seq
        msgs = self.until(lambda m: isinstance(m, Ack) and m.seq == seq)
        return seq, msgs


def test_board_speaks_the_protocol(streams):
    with SimulatedSensorBoard(streams, speed=20.0, block_s=0.005, loop=True) as board:
        port = RawPort(board.path)
        try:
            # Boot: a DEVICE_INFO (seq 0) announcing every stream; nothing streams before START.
            boot = port.read(0.15)
            assert len(boot) == 1 and isinstance(boot[0], DeviceInfo) and boot[0].seq == 0
            info = boot[0]
            assert info.t_us == board.clock_start_us
            assert [s.name for s in info.streams] == ["ecg", "ppg_ir", "eda"]
            assert [s.fs_hz for s in info.streams] == [5000.0, 2000.0, 640.0]
            assert [s.units for s in info.streams] == ["mV", "a.u.", "uS"]
            assert port.bytes[0] == 0  # the lone delimiter that ends any partial frame

            seq, msgs = port.command(Opcode.GET_INFO, NO_STREAM)
            assert msgs[-1].status == Status.OK and msgs[-1].opcode == Opcode.GET_INFO
            nxt = port.until(lambda m: isinstance(m, DeviceInfo))
            assert nxt[-1].seq == 1

            _, msgs = port.command(Opcode.START, ECG)
            assert msgs[-1].ok
            got = port.read(0.2)
            ecg = [m for m in got if isinstance(m, SamplesMessage)]
            assert ecg and {m.stream_id for m in ecg} == {ECG}
            assert [m.seq for m in ecg] == list(range(len(ecg)))
            assert np.all(np.diff([m.t_us for m in ecg]) == 5000)  # 25 samples at 5 kHz

            # SET_RATE: OK, then a DEVICE_INFO with the new rate before any block at it.
            _, msgs = port.command(Opcode.SET_RATE, ECG, 1_000_000)
            assert msgs[-1].ok
            after = port.until(lambda m: isinstance(m, DeviceInfo))
            assert after[-1].stream("ecg").fs_hz == 1000.0
            more = [m for m in port.read(0.15) if isinstance(m, SamplesMessage)]
            assert more and all(m.n_samples == 5 for m in more)
            assert np.all(np.diff([m.t_us for m in more]) == 5000)
            last_seq = more[-1].seq

            for opcode, sid, rate, status in [
                (Opcode.SET_RATE, ALL_STREAMS, 1000, Status.BAD_STREAM),
                (Opcode.SET_RATE, ECG, 0, Status.BAD_RATE),
                (Opcode.START, 0x42, 0, Status.BAD_STREAM),
                (0x42, NO_STREAM, 0, Status.UNKNOWN_OPCODE),
            ]:
                seq, msgs = port.command(opcode, sid, rate)
                ack = msgs[-1]
                assert (ack.status, ack.seq, ack.stream_id) == (status, seq, sid)
                assert ack.detail

            # STOP ends the samples; START again continues the seq (no false loss).
            _, msgs = port.command(Opcode.STOP, ALL_STREAMS)
            port.read(0.05)
            assert not [m for m in port.read(0.1) if isinstance(m, SamplesMessage)]
            _, msgs = port.command(Opcode.START, ALL_STREAMS)
            resumed = [m for m in msgs if isinstance(m, SamplesMessage)] + \
                [m for m in port.read(0.1) if isinstance(m, SamplesMessage)]
            ecg_seqs = [m.seq for m in resumed if m.stream_id == ECG]
            assert ecg_seqs[0] > last_seq
            assert {m.stream_id for m in resumed} == set(STREAM_IDS[n] for n in ("ecg", "ppg_ir", "eda"))
            assert port.decoder.crc_errors == port.decoder.malformed == 0
            assert [c.opcode for c in board.truth.commands][:3] == [Opcode.GET_INFO, Opcode.START, Opcode.SET_RATE]
        finally:
            port.close()


def _capture(streams, faults: LineFaults) -> tuple[bytes, SimulatedSensorBoard]:
    """Everything a board with ``autostart`` sends, read raw until it has finished."""
    board = SimulatedSensorBoard(streams, speed=40.0, block_s=0.005, autostart=True, faults=faults)
    try:
        port = RawPort(board.path)
        try:
            while not board.wait_finished(timeout_s=0):
                port.read(0.02)
            port.read(0.1)
        finally:
            port.close()
    finally:
        board.close()
    return bytes(port.bytes), board


def test_fault_injection_is_deterministic_and_matches_its_truth(streams):
    faults = LineFaults(bit_flip_rate=2e-3, drop_rate=1e-3, garbage_rate=0.03, seed=11)
    wire1, board1 = _capture(streams, faults)
    wire2, board2 = _capture(streams, faults)
    wire3, _ = _capture(streams, LineFaults(bit_flip_rate=2e-3, drop_rate=1e-3, garbage_rate=0.03, seed=12))
    assert wire1 == wire2, "same seed, different bytes"
    assert wire1 != wire3
    truth = board1.truth
    assert truth.bytes_written == len(wire1)
    assert truth.frames_damaged >= 10 and truth.garbage_bursts >= 3 and truth.bytes_dropped > 0
    assert truth.bytes_overflowed == 0
    dec = Decoder()
    msgs = dec.feed(wire1)
    # Each damaged frame and each garbage burst costs the decoder one bad frame, give or take
    # merges (a lost delimiter) and splits (a byte flipped to 0x00).
    bad = dec.crc_errors + dec.malformed
    expected = truth.frames_damaged + truth.garbage_bursts
    assert abs(bad - expected) <= max(2, 0.15 * expected), (bad, expected)
    # Exactly the frames the truth calls intact are decoded, with the values sent.
    sent = {(m.kind, m.stream_id, m.seq): m for m in truth.messages if m.intact}
    kinds = {SamplesMessage: "samples", DeviceInfo: "info", Ack: "ack"}
    decoded = {(kinds[type(m)], getattr(m, "stream_id", NO_STREAM), m.seq): m for m in msgs}
    assert set(decoded) == set(sent)
    for key, m in decoded.items():
        if key[0] == "samples":
            np.testing.assert_array_equal(m.samples, sent[key].raw)


def _hung_up(fd: int) -> bool:
    """True when ``fd`` reads as hung up: after any bytes still buffered, select says readable
    with a zero timeout and the read gives EIO or end of file. No clock is involved."""
    for _ in range(10_000):  # the buffered bytes of a pty come out in a bounded number of reads
        if not select.select([fd], [], [], 0)[0]:
            return False
        try:
            if not os.read(fd, 65536):
                return True
        except OSError as exc:
            return exc.errno == errno.EIO
    return False


def test_unplug_removes_and_repoints_the_stable_link(streams):
    with SimulatedSensorBoard(streams, speed=20.0, loop=True) as board:
        first_pty = board.pty_path
        assert Path(board.path).is_symlink() and os.readlink(board.path) == first_pty
        port = RawPort(board.path)
        port.read(0.05)
        board.unplug(1.0)
        deadline = time.monotonic() + 2.0
        # The link goes first, then the pty closes: wait for both (bounded, not asserted on time).
        while (os.path.lexists(board.path) or board.plugged) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not os.path.lexists(board.path), "link still there while unplugged"
        assert not board.plugged
        # The old handle is dead: it reports a hang-up (EIO or end of file) without waiting,
        # where a live but quiet line would have nothing to read.
        assert _hung_up(port.fd)
        port.close()
        while not Path(board.path).exists() and time.monotonic() < deadline + 2.0:
            time.sleep(0.01)
        assert board.plugged and os.readlink(board.path) == board.pty_path
        port = RawPort(board.path)
        try:
            _, msgs = port.command(Opcode.GET_INFO, NO_STREAM)
            assert msgs[-1].ok
        finally:
            port.close()
        assert board.truth.unplugs == 1
    assert not os.path.lexists(board.path)


def test_scheduled_unplugs_and_pauses(streams):
    faults = LineFaults(unplug_every_s=0.15, unplug_s=0.1, pause_every_s=0.1, pause_s=0.05)
    with SimulatedSensorBoard(streams, loop=True, autostart=True, faults=faults) as board:
        time.sleep(0.8)
        assert board.truth.unplugs >= 2
        assert board.truth.pauses >= 2
        assert board.truth.messages_lost_unplugged > 0


def test_device_clock_counts_microseconds_with_drift(streams):
    with SimulatedSensorBoard(streams, drift_ppm=250.0, clock_start_us=5_000_000) as board:
        h = time.monotonic_ns()
        step = board.device_time_us(h + 2_000_000_000) - board.device_time_us(h)
        assert step == pytest.approx(2_000_000 * (1 + 250e-6), abs=1.0)
        assert board.device_time_us() >= 5_000_000


def test_board_stream_validation():
    with pytest.raises(BadInputError, match="unknown stream"):
        BoardStream("heart", np.zeros(10), 100.0)
    with pytest.raises(BadInputError, match="inf"):
        BoardStream("ecg", np.array([0.0, np.inf]), 100.0)
    with pytest.raises(BadInputError, match="NaN"):
        BoardStream("ecg", np.array([0.0, np.nan]), 100.0, dtype="int16")
    with pytest.raises(BadInputError, match="fs_hz"):
        BoardStream("ecg", np.zeros(10), 0.0)
    with pytest.raises(ConfigError, match="bit_flip_rate"):
        LineFaults(bit_flip_rate=1.5)
    with pytest.raises(ConfigError, match="at most once"):
        SimulatedSensorBoard([BoardStream("ecg", np.zeros(10), 100.0)] * 2)
    with pytest.raises(ConfigError, match="unknown source"):
        streams_from_spec("camera:0")
    accel = BoardStream("accel", np.zeros((10, 3)), 50.0)
    assert accel.channels == 3 and accel.units == "g"


def test_neurokit_csv_plays_through_the_serial_source():
    pytest.importorskip("serial", reason="pyserial (extra 'sensors') is needed for the serial transport")
    from firmware_bridge.transports.serial import SerialSensorSource

    path = shared_path("physio/neurokit/bio_resting_5min_100hz.csv")
    full = neurokit_streams(path)
    assert [s.name for s in full] == ["ecg", "ppg_ir", "resp"]
    table = np.genfromtxt(path, delimiter=",", names=True)
    assert table.shape == (30000,)
    np.testing.assert_array_equal(full[0].values[:, 0], table["ECG"])
    np.testing.assert_array_equal(full[1].values[:, 0], table["PPG"])
    # Ten seconds of the real ECG and PPG through the wire, at 50 x.
    short = [BoardStream(s.name, s.values[:1000], s.fs_hz, s.units) for s in full[:2]]
    with SimulatedSensorBoard(short, speed=50.0, block_s=0.01) as board, \
            SerialSensorSource(board.path) as source:
        assert board.wait_finished(timeout_s=10.0)
        chunks = []
        while (c := source.read(timeout_s=0.5)) is not None:
            chunks.append(c)
    for spec in short:
        got = np.concatenate([c.samples for c in chunks if c.stream == spec.name])
        gain = board.streams[spec.name].gain
        assert got.shape == (1000,)
        assert np.max(np.abs(got - spec.values[:, 0])) <= 0.5 * gain * (1 + 1e-6)
        assert {c.fs_hz for c in chunks if c.stream == spec.name} == {5000.0}


def test_wfdb_record_becomes_the_ecg_stream():
    record = shared_path("ecg/mitdb-100/100.hea").with_suffix("")
    pytest.importorskip("wfdb", reason="the wfdb package (extra 'physionet') reads PhysioNet records")
    (ecg,) = wfdb_streams(record)
    assert (ecg.name, ecg.fs_hz, ecg.units, ecg.values.shape) == ("ecg", 360.0, "mV", (650000, 1))
    assert 0.5 < np.ptp(ecg.values) < 10.0  # a real lead in mV, not ADC counts
    with pytest.raises(BadInputError, match="no channel"):
        wfdb_streams(record, channel=5)


def _parser() -> argparse.ArgumentParser:
    from firmware_bridge.commands import simulate

    parser = argparse.ArgumentParser(prog="emofuse")
    simulate.register(parser.add_subparsers(dest="command"))
    return parser


def test_simulate_command_serves_a_board_a_host_can_read(tmp_path, capsys):
    pytest.importorskip("serial", reason="pyserial (extra 'sensors') is needed for the serial transport")
    from firmware_bridge.transports.serial import SerialSensorSource

    link = tmp_path / "ttySIM"
    args = _parser().parse_args(["simulate", "--pty", "--link", str(link), "--duration-s", "1.5",
                                 "--speed", "10", "--hr-bpm", "90", "--status-every-s", "0"])
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(args.func(args)))
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with SerialSensorSource(str(link)) as source:
            chunk = source.read(timeout_s=5.0)
    finally:
        thread.join(timeout=15.0)
    assert chunk is not None and chunk.fs_hz in (2500.0, 1000.0, 320.0)
    assert result == [0]
    out = capsys.readouterr().out
    assert str(link) in out and "stopped after" in out
    assert not os.path.lexists(link)


def test_simulate_command_prints_the_run_command_that_reads_the_port(tmp_path, capsys):
    # The printed line is an `emofuse run --sensor serial://PORT` command (not a Python call),
    # and the URI in it opens the board through the sensor registry and reads samples.
    pytest.importorskip("serial", reason="pyserial (extra 'sensors') is needed for the serial transport")
    import shlex

    from firmware_bridge.sensors import open_sensor

    link = tmp_path / "tty SIM"  # a space: the printed command must quote the path
    args = _parser().parse_args(["simulate", "--pty", "--link", str(link), "--duration-s", "3",
                                 "--speed", "10", "--status-every-s", "0"])
    thread = threading.Thread(target=lambda: args.func(args))
    thread.start()
    try:
        deadline = time.monotonic() + 10.0
        while not link.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # the banner is printed right after the link appears
        line = next(x for x in capsys.readouterr().out.splitlines() if "emofuse run" in x)
        argv = shlex.split(line.split(":", 1)[1])
        assert argv[:2] == ["emofuse", "run"] and "SerialSensorSource" not in line
        sensor = argv[argv.index("--sensor") + 1]
        assert sensor == f"serial://{link}"
        with open_sensor(sensor) as source:
            chunk = source.read(timeout_s=5.0)
        assert chunk is not None and chunk.fs_hz > 0
    finally:
        thread.join(timeout=15.0)


@pytest.mark.parametrize("argv, match", [
    (["--source", "camera:0"], "unknown source"),
    (["--duration-s", "0"], "duration"),
    (["--bit-flip-rate", "2"], "bit_flip_rate"),
])
def test_simulate_command_rejects_bad_flags(argv, match):
    args = _parser().parse_args(["simulate", "--pty", *argv])
    with pytest.raises(ConfigError, match=match):
        args.func(args)
