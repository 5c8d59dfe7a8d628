"""open_sensor: URIs pick sources through the registry; each source yields SensorChunk records
whose samples and times match the truth they came from."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

from firmware_bridge.errors import ConfigError, DeviceError, MissingDependencyError
from firmware_bridge.recording import Recorder
from firmware_bridge.sensors import (
    SENSOR_SCHEMES,
    SimSensorSource,
    open_sensor,
    parse_sensor_uri,
)
from firmware_bridge.sim import synth_session
from firmware_bridge.types import SensorChunk


# -- URI parsing -----------------------------------------------------------------------------------
@pytest.mark.parametrize("uri, scheme, target, query", [
    ("serial:///dev/ttyUSB0?baud=921600", "serial", "/dev/ttyUSB0", {"baud": "921600"}),
    ("/dev/ttyACM0", "serial", "/dev/ttyACM0", {}),
    ("/dev/serial/by-id/usb-emofuse-if00", "serial", "/dev/serial/by-id/usb-emofuse-if00", {}),
    ("ble://AA:BB:CC:DD:EE:FF", "ble", "AA:BB:CC:DD:EE:FF", {}),
    ("lsl://My%20ECG", "lsl", "My ECG", {}),
    ("lsl://?type=ECG", "lsl", "", {"type": "ECG"}),
    ("replay://rec/s1?streams=ecg,eda", "replay", "rec/s1", {"streams": "ecg,eda"}),
    ("SIM://?seed=3", "sim", "", {"seed": "3"}),
])
def test_parse_sensor_uri(uri, scheme, target, query):
    p = parse_sensor_uri(uri)
    assert (p.scheme, p.target, dict(p.query)) == (scheme, target, query)


def test_bare_pty_and_folder_are_recognised(tmp_path):
    master, slave = os.openpty()
    try:
        link = tmp_path / "ttyLINK"
        link.symlink_to(os.ttyname(slave))
        assert parse_sensor_uri(str(link)).scheme == "serial"  # a stable link to a tty
    finally:
        os.close(master)
        os.close(slave)
    assert parse_sensor_uri(tmp_path).scheme == "replay"
    with pytest.raises(ConfigError, match="not a sensor URI"):
        parse_sensor_uri(tmp_path / "no-such-thing")


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        open_sensor("mqtt://broker/ecg")
    for scheme in SENSOR_SCHEMES:
        assert f"{scheme}://" in str(err.value)


@pytest.mark.parametrize("uri, options, match", [
    ("serial:///dev/ttyUSB0?parity=N", {}, "unknown option.*parity.*valid here: baud"),
    ("serial:///dev/ttyUSB0?baud=fast", {}, "baud='fast'"),
    ("serial:///dev/ttyUSB0?baud=9600", {"baudrate": 9600}, "baud or baudrate"),
    ("serial://", {}, "no serial port"),
    ("ble://", {}, "no device address"),
    ("lsl://", {}, "name a stream"),
    ("replay://", {}, "no recording folder"),
    ("sim://?chunk_s=-1", {}, "chunk_s"),
    ("sim://", {"streams": "ecg,emg"}, "unknown sim stream.*emg"),
    ("sim://?heart=60", {}, "unknown parameter.*heart"),
])
def test_bad_options_are_config_errors(uri, options, match):
    with pytest.raises(ConfigError, match=match):
        open_sensor(uri, **options)


def test_missing_port_is_a_device_error():
    pytest.importorskip("serial")
    with pytest.raises(DeviceError, match="/dev/ttyNOPE0"):
        open_sensor("serial:///dev/ttyNOPE0")


@pytest.mark.parametrize("uri, module", [("ble://AA:BB:CC:DD:EE:FF", "bleak"), ("lsl://ECG", "pylsl")])
def test_missing_library_names_the_extra(uri, module):
    try:
        __import__(module)
    except ImportError:
        pass
    else:
        pytest.skip(f"{module} is installed")
    with pytest.raises(MissingDependencyError, match="sensors"):
        open_sensor(uri)


# -- sim:// ----------------------------------------------------------------------------------------
def test_sim_sensor_delivers_the_session_exactly():
    session = synth_session(duration_s=3.0, seed=7)
    with open_sensor("sim://?duration_s=3&seed=7", origin_ns=10**12, chunk_s=0.25) as src:
        chunks = list(src)
    by = {}
    for c in chunks:
        by.setdefault(c.stream, []).append(c)
    assert sorted(by) == ["ecg", "eda", "ppg"]
    for name, cs in by.items():
        trace = getattr(session, name)
        assert [c.seq for c in cs] == list(range(len(cs)))
        assert np.array_equal(np.concatenate([c.samples for c in cs]), trace.values)
        starts = np.cumsum([0] + [len(c.samples) for c in cs[:-1]])
        assert [c.t0_ns for c in cs] == [10**12 + round(k * 1e9 / trace.fs_hz) for k in starts]
        assert all(c.fs_hz == trace.fs_hz and c.units == trace.units for c in cs)
        assert all(len(c.samples) == round(0.25 * trace.fs_hz) for c in cs[:-1])
    t_last = [c.t0_ns + round((len(c.samples) - 1) * 1e9 / c.fs_hz) for c in chunks]
    assert t_last == sorted(t_last)  # merged as a board sends them


def test_sim_sensor_and_sim_camera_share_subject_and_clock():
    from firmware_bridge.cameras import open_camera

    uri = "sim://?duration_s=1&seed=9&width=64&height=64"
    cam = open_camera(uri, origin_ns=777)
    sens = open_sensor(uri, origin_ns=777, streams="ecg")
    assert np.array_equal(cam.session.ecg.values, np.concatenate([c.samples for c in sens]))
    assert next(cam).t_ns == 777
    cam.close()


def test_keyword_overrides_query_and_close_ends_iteration():
    src = open_sensor("sim://?duration_s=2&chunk_s=0.5", chunk_s=0.1, streams=["eda"])
    first = next(src)
    assert len(first.samples) == round(0.1 * first.fs_hz)
    src.close()
    assert list(src) == []


def test_realtime_sim_waits_for_the_host_clock():
    # Chunks of a session that starts now are not delivered before their last sample's time.
    origin = time.monotonic_ns()
    with SimSensorSource(synth_session(duration_s=0.3, seed=1), streams=("eda",), chunk_s=0.1,
                         realtime=True, origin_ns=origin) as src:
        for c in src:
            t_last = c.t0_ns + round((len(c.samples) - 1) * 1e9 / c.fs_hz)
            assert time.monotonic_ns() >= t_last


# -- serial:// on the simulated board --------------------------------------------------------------
def test_serial_uri_reads_the_simulated_board():
    pytest.importorskip("serial")
    from firmware_bridge.simdevice import SimulatedSensorBoard, synth_streams

    with SimulatedSensorBoard(synth_streams(duration_s=30, seed=2)) as board:
        with open_sensor(f"serial://{board.path}?baud=115200&streams=ecg,eda", reconnect=False) as src:
            assert src.baudrate == 115200
            chunks = []
            deadline = time.monotonic() + 20
            while len(chunks) < 40 and time.monotonic() < deadline:
                c = src.read(timeout_s=1.0)
                if c is not None:
                    chunks.append(c)
    assert {c.stream for c in chunks} == {"ecg", "eda"}
    ecg = [c for c in chunks if c.stream == "ecg"]
    assert [c.seq for c in ecg] == list(range(ecg[0].seq, ecg[0].seq + len(ecg)))
    assert all(c.source == f"serial://{board.path}" for c in chunks)


# -- replay:// -------------------------------------------------------------------------------------
def test_replay_uri_and_bare_folder_give_the_recorded_chunks(tmp_path):
    chunks = [SensorChunk(s, fs, 10**9 * k, np.arange(4.0) + k, u, seq=k, source="sim://")
              for k in range(5) for s, fs, u in (("ecg", 250.0, "mV"), ("eda", 4.0, "uS"))]
    with Recorder(tmp_path / "r") as rec:
        for c in chunks:
            rec.write_chunk(c)
    with open_sensor(f"replay://{tmp_path / 'r'}?streams=eda") as src:
        eda = list(src)
    assert [c.seq for c in eda] == list(range(5)) and {c.stream for c in eda} == {"eda"}
    assert all(np.array_equal(g.samples, w.samples) for g, w in zip(eda, chunks[1::2]))
    with open_sensor(tmp_path / "r", origin_ns=0) as src:
        both = list(src)
    assert len(both) == 10
    start = min(c.t0_ns for c in both)
    assert start < 0  # shifted: the recording's start went to 0, the chunks were before it
    assert sorted(c.t0_ns - start for c in both) == sorted(c.t0_ns - 0 for c in chunks)
