"""Recording and replay: what is written reads back equal, a killed recorder loses only its
unflushed tail, damaged files read cleanly up to the damage, PhysRecorder folders open."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.cameras import SimCameraSource
from firmware_bridge.errors import BadInputError, ConfigError, DeviceError
from firmware_bridge.recording import (
    CODECS,
    FRAMES_CSV,
    Recorder,
    decode_chunk_records,
    encode_chunk_record,
    is_recording,
    open_recording,
)
from firmware_bridge.sensors import SimSensorSource
from firmware_bridge.sim import SimConfig, synth_session
from firmware_bridge.types import Frame, SensorChunk
from helpers import shared_path

REPO = Path(__file__).resolve().parents[2]
ORIGIN_NS = 5_000_000_000_000


def _session(seed=1, duration_s=2.0):
    return synth_session(SimConfig(duration_s=duration_s, seed=seed, frame_size=(96, 72)))


def _record(out: Path, session, codec="ffv1", segment_s=0.5, extra_chunks=()):
    """Record every frame and sensor chunk of a session, as fast as possible."""
    frames, chunks = [], []
    with Recorder(out, codec=codec, segment_s=segment_s, fps=30.0,
                  sources=[("camera", "sim://session"), ("sensor", "sim://")]) as rec:
        cam = SimCameraSource.from_session(session, origin_ns=ORIGIN_NS)
        sens = SimSensorSource(session, chunk_s=0.1, origin_ns=ORIGIN_NS)
        for f in cam:
            rec.write_frame(f)
            frames.append(f)
        for c in list(sens) + list(extra_chunks):
            rec.write_chunk(c)
            chunks.append(c)
    return frames, chunks


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "session"
    extra = [
        SensorChunk("imu", 50.0, ORIGIN_NS + k * 200_000_000, np.arange(30.0).reshape(10, 3) + k,
                    "g", seq=k, device_t0_us=123 + k, source="test://imu",
                    meta={"lost_before": np.int64(0), "gain": np.float32(0.5), "tags": ("a", 1)})
        for k in range(5)
    ]
    session = _session()
    frames, chunks = _record(out, session, extra_chunks=extra)
    return out, session, frames, chunks


def _copy(recorded, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(recorded[0], dst)
    return dst


def _by_stream(chunks):
    out: dict[str, list[SensorChunk]] = {}
    for c in chunks:
        out.setdefault(c.stream, []).append(c)
    return out


def _assert_chunks_equal(got: list[SensorChunk], want: list[SensorChunk]):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.stream, g.fs_hz, g.t0_ns, g.units, g.seq, g.device_t0_us, g.source) == \
               (w.stream, w.fs_hz, w.t0_ns, w.units, w.seq, w.device_t0_us, w.source)
        assert g.samples.dtype == np.float64 and g.samples.shape == np.shape(w.samples)
        assert np.array_equal(g.samples, w.samples)


# -- round trip ----------------------------------------------------------------------------------
def test_replay_equals_what_was_recorded(recorded):
    out, session, frames, chunks = recorded
    rec = open_recording(out)
    assert rec.closed and rec.damage == []
    assert rec.n_frames == len(frames) == len(session)
    segments = sorted(p.name for p in (out / "video").iterdir() if p.suffix == ".mkv")
    assert len(segments) == 4  # 60 frames at 30 fps in 0.5 s segments
    with rec.camera() as cam:
        got = list(cam)
    assert len(got) == len(frames)
    for g, w in zip(got, frames):
        assert np.array_equal(g.image, w.image)  # FFV1 is lossless: byte-equal
        assert (g.t_ns, g.index, g.dropped_before, g.gap_before_s, g.source) == \
               (w.t_ns, w.index, w.dropped_before, w.gap_before_s, w.source)
    want = _by_stream(chunks)
    assert rec.streams == sorted(want)
    for name, ws in want.items():
        _assert_chunks_equal(list(rec.sensor(name)), ws)
        assert [c.seq for c in rec.sensor(name)] == list(range(len(ws)))
    imu = list(rec.sensor("imu"))
    assert imu[2].meta == {"lost_before": 0, "gain": 0.5, "tags": ["a", 1]}


def test_manifest_describes_the_session(recorded):
    out, session, frames, chunks = recorded
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "emofuse-recording" and m["format_version"] == 2 and m["closed"] is True
    assert m["start"]["unix_ns"] <= m["end"]["unix_ns"]
    assert m["camera"]["frames"] == len(frames) and m["camera"]["lossless"] is True
    assert (m["camera"]["width"], m["camera"]["height"]) == (96, 72)
    ecg = m["streams"]["ecg"]
    assert (ecg["fs_hz"], ecg["units"], ecg["channels"]) == (session.ecg.fs_hz, "mV", 1)
    assert ecg["samples"] == len(session.ecg)
    assert m["streams"]["imu"]["channels"] == 3
    for rel in m["files"]:
        assert (out / rel).is_file(), rel
    assert [s["role"] for s in m["sources"]] == ["camera", "sensor"]


def test_replay_is_deterministic_and_sensors_merge_in_time_order(recorded):
    out = recorded[0]

    def digest():
        h = hashlib.sha256()
        rec = open_recording(out)
        for f in rec.camera():
            h.update(f.image.tobytes())
            h.update(str(f.t_ns).encode())
        for c in rec.sensors():
            h.update(c.samples.tobytes())
            h.update(f"{c.stream}{c.seq}{c.t0_ns}".encode())
        return h.hexdigest()

    assert digest() == digest()
    merged = list(open_recording(out).sensors())
    t_last = [c.t0_ns + round((len(c.samples) - 1) * 1e9 / c.fs_hz) for c in merged]
    assert t_last == sorted(t_last)
    assert len(merged) == len(recorded[3])


def test_origin_ns_shifts_camera_and_sensors_together(recorded):
    rec = open_recording(recorded[0])
    shift = 10**9 - rec.start_ns
    f0 = next(iter(rec.camera(origin_ns=10**9)))
    c0 = next(iter(rec.sensor("ecg", origin_ns=10**9)))
    assert f0.t_ns == recorded[2][0].t_ns + shift
    assert c0.t0_ns == _by_stream(recorded[3])["ecg"][0].t0_ns + shift


def test_read_stream_matches_the_session(recorded):
    out, session = recorded[0], recorded[1]
    t_ns, x = open_recording(out).read_stream("ppg")
    assert np.array_equal(x, session.ppg.values)
    expect = ORIGIN_NS + np.round(np.arange(len(x)) * 1e9 / session.ppg.fs_hz).astype(np.int64)
    assert np.max(np.abs(t_ns - expect)) <= 1  # per-chunk rounding of t0


@pytest.mark.parametrize("codec", ["hfyu", "mjpg"])
def test_other_codecs(tmp_path, codec):
    session = _session(seed=2, duration_s=0.5)
    frames, _ = _record(tmp_path / codec, session, codec=codec)
    got = list(open_recording(tmp_path / codec).camera())
    assert len(got) == len(frames)
    err = max(np.abs(g.image.astype(int) - w.image.astype(int)).mean() for g, w in zip(got, frames))
    if CODECS[codec].lossless:
        assert err == 0
    else:
        assert 0 < err < 4  # quality-95 JPEG: small but real damage


def test_frame_size_change_starts_a_new_segment(tmp_path):
    rng = np.random.default_rng(0)
    frames = [Frame(i * 33_000_000, i, rng.integers(0, 256, (72 if i < 3 else 64, 96, 3), dtype=np.uint8))
              for i in range(6)]
    with Recorder(tmp_path / "r", segment_s=10.0) as rec:
        for f in frames:
            rec.write_frame(f)
    got = list(open_recording(tmp_path / "r").camera())
    assert [g.image.shape for g in got] == [f.image.shape for f in frames]
    assert all(np.array_equal(g.image, f.image) for g, f in zip(got, frames))


def test_same_stream_name_from_two_sources_gets_two_files(tmp_path):
    with Recorder(tmp_path / "r") as rec:
        for src in ("serial://a", "serial://b"):
            rec.write_chunk(SensorChunk("ecg", 250.0, 0, np.ones(5), "mV", seq=0, source=src))
    r = open_recording(tmp_path / "r")
    assert r.streams == ["ecg", "ecg_2"]
    assert next(iter(r.sensor("ecg_2"))).source == "serial://b"
    assert r.stream_info("ecg_2")["stream"] == "ecg"


def test_recorder_rejects_bad_use(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        Recorder(tmp_path / "full")
    with pytest.raises(ConfigError, match="unknown codec"):
        Recorder(tmp_path / "a", codec="h264")
    with pytest.raises(ConfigError, match="segment_s"):
        Recorder(tmp_path / "b", segment_s=0)
    rec = Recorder(tmp_path / "c")
    with pytest.raises(BadInputError, match="uint8"):
        rec.write_frame(Frame(0, 0, np.zeros((8, 8, 3), np.float32)))
    with pytest.raises(BadInputError, match="samples"):
        rec.write_chunk(SensorChunk("x", 1.0, 0, np.zeros((2, 2, 2))))
    rec.close()
    rec.close()  # idempotent
    with pytest.raises(DeviceError, match="closed"):
        rec.write_frame(Frame(0, 0, np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(DeviceError, match="closed"):
        rec.write_chunk(SensorChunk("x", 1.0, 0, np.zeros(2)))
    assert open_recording(tmp_path / "c").damage == []


# -- damaged recordings ----------------------------------------------------------------------------
def test_truncated_sensor_file_reads_up_to_the_cut(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    want = _by_stream(recorded[3])["ecg"]
    path = out / "sensors" / "ecg.bin"
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # tear the last record
    rec = open_recording(out)
    got = list(rec.sensor("ecg"))
    _assert_chunks_equal(got, want[:-1])
    assert any("torn" in d for d in rec.damage)


def test_damaged_record_is_skipped_and_the_rest_read(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    want = _by_stream(recorded[3])["ppg"]
    path = out / "sensors" / "ppg.bin"
    data = bytearray(path.read_bytes())
    record_len = len(encode_chunk_record(want[0]))
    header_len = len(data) - sum(len(encode_chunk_record(c)) for c in want)
    at = header_len + 4 * record_len + 100  # inside the 5th record's samples
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    rec = open_recording(out)
    got = list(rec.sensor("ppg"))
    assert [c.seq for c in got] == [s for s in range(len(want)) if s != 4]
    _assert_chunks_equal(got, want[:4] + want[5:])
    assert any("damaged bytes" in d for d in rec.damage)


def test_torn_frames_csv_reads_frames_up_to_the_tear(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    csv_path = out / FRAMES_CSV
    lines = csv_path.read_bytes().split(b"\n")
    # Keep the header and 40 rows, and half of the 41st.
    csv_path.write_bytes(b"\n".join(lines[:41]) + b"\n" + lines[41][:5])
    rec = open_recording(out)
    got = list(rec.camera())
    assert rec.n_frames == 40 and len(got) == 40
    assert [g.t_ns for g in got] == [f.t_ns for f in recorded[2][:40]]
    assert any("torn" in d for d in rec.damage)


def test_missing_and_corrupt_segments_are_skipped(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    segs = sorted((out / "video").glob("seg_*.mkv"))
    segs[1].unlink()  # frames 15-29
    segs[2].write_bytes(os.urandom(2000))  # frames 30-44
    rec = open_recording(out)
    got = list(rec.camera())
    frames = recorded[2]
    assert [g.index for g in got] == list(range(15)) + list(range(45, 60))
    for g in got:
        assert np.array_equal(g.image, frames[g.index].image) and g.t_ns == frames[g.index].t_ns
    assert any("no video segment" in d for d in rec.damage)
    assert any(segs[2].name in d for d in rec.damage)


def test_not_a_recording_is_a_clear_error(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        open_recording(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="is not a recording"):
        open_recording(tmp_path / "empty")
    assert not is_recording(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(BadInputError, match="JSON"):
        open_recording(bad)
    (bad / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(BadInputError, match="not an emofuse recording"):
        open_recording(bad)
    (bad / "manifest.json").write_text(json.dumps({"format": "emofuse-recording", "format_version": 99}))
    with pytest.raises(BadInputError, match="format_version"):
        open_recording(bad)


def test_unknown_stream_and_no_video_are_clear_errors(tmp_path):
    with Recorder(tmp_path / "r") as rec:
        rec.write_chunk(SensorChunk("eda", 4.0, 0, np.ones(4), "uS", seq=0))
    r = open_recording(tmp_path / "r")
    with pytest.raises(BadInputError, match="no stream 'ecg'.*eda"):
        r.sensor("ecg")
    with pytest.raises(BadInputError, match="no video"):
        r.camera()


def _record_of(chunks):
    return b"".join(encode_chunk_record(c) for c in chunks)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000), n=st.integers(min_value=1, max_value=6))
def test_any_truncation_decodes_to_a_prefix(cut, n):
    chunks = [SensorChunk("ecg", 250.0, k * 10**8, np.linspace(0, 1, 7 + k), "mV", seq=k,
                          meta={"k": k}) for k in range(n)]
    data = _record_of(chunks)
    cut = min(cut, len(data))
    got, damage = decode_chunk_records(data[:cut], "ecg")
    sizes = np.cumsum([len(encode_chunk_record(c)) for c in chunks])
    whole = int(np.searchsorted(sizes, cut, side="right"))
    _assert_chunks_equal(got, chunks[:whole])
    assert bool(damage) == (cut not in (0, *sizes.tolist()))


# -- a killed recorder, Ctrl-C -------------------------------------------------------------------
_RECORD_MAIN = (
    "import argparse, sys\n"
    "from firmware_bridge.commands import record\n"
    "p = argparse.ArgumentParser(); sub = p.add_subparsers(dest='command'); record.register(sub)\n"
    "a = p.parse_args(sys.argv[1:])\n"
    "sys.exit(a.func(a))\n"
)


def _start_recorder(out: Path, camera: str, sensor: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", _RECORD_MAIN, "record", "--camera", camera, "--sensor", sensor,
         "--out", str(out), "--segment-s", "0.5", "--status-every-s", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )


def _wait_for_segments(proc: subprocess.Popen, out: Path, n: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"recorder exited early: {proc.communicate()}")
        if (out / "video").is_dir() and len(list((out / "video").glob("seg_*_*.mkv"))) >= n:
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("recorder wrote no segments in time")


def test_sigkill_leaves_a_recording_intact_up_to_the_cut(tmp_path):
    out = tmp_path / "killed"
    query = "seed=4&duration_s=60&width=96&height=72"
    proc = _start_recorder(out, f"sim://?{query}", f"sim://?{query}")
    try:
        _wait_for_segments(proc, out, 2)
        time.sleep(0.2)  # land mid-segment, with sensor chunks in flight
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    rec = open_recording(out)
    assert not rec.closed and any("not closed" in d for d in rec.damage)
    session = synth_session(SimConfig(duration_s=60, seed=4, frame_size=(96, 72)))
    frames = list(rec.camera())
    n = len(frames)
    assert n >= 30  # two committed 0.5 s segments at least
    assert [f.index for f in frames] == list(range(n))  # continuous: nothing lost before the cut
    t0 = frames[0].t_ns
    want_t = np.rint(session.frame_times_s[:n] * 1e9).astype(np.int64)
    assert np.array_equal(np.array([f.t_ns for f in frames]) - t0, want_t - want_t[0])
    for i in (0, n // 2, n - 1):
        assert np.array_equal(frames[i].image, session.frame(i))
    for name in ("ecg", "ppg", "eda"):
        chunks = list(rec.sensor(name))
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert chunks[0].t0_ns == t0  # camera and sensors on one clock
        x = np.concatenate([c.samples for c in chunks])
        trace = getattr(session, name)
        assert len(x) >= 0.5 * trace.fs_hz  # samples up to the kill, not only the first chunk
        assert np.array_equal(x, trace.values[:len(x)])


def test_ctrl_c_stops_cleanly_with_the_pty_board(tmp_path):
    from firmware_bridge.simdevice import SimulatedSensorBoard, synth_streams

    out = tmp_path / "stopped"
    with SimulatedSensorBoard(synth_streams(duration_s=60, seed=1)) as board:
        proc = _start_recorder(out, "sim://?seed=1&duration_s=60&width=96&height=72",
                               f"serial://{board.path}")
        try:
            _wait_for_segments(proc, out, 2)
        finally:
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert b"interrupted" in stdout
    rec = open_recording(out)
    assert rec.closed and rec.damage == []
    assert not list((out / "video").glob("*.part.*"))
    csv_rows = (out / FRAMES_CSV).read_text().count("\n") - 1
    assert rec.n_frames == csv_rows == rec.manifest["camera"]["frames"]
    assert set(rec.streams) == {"ecg", "ppg_ir", "eda"}
    for name in rec.streams:
        chunks = list(rec.sensor(name))
        assert len(chunks) > 10
        seqs = [c.seq for c in chunks]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no message lost
        assert all(c.meta.get("lost_before") == 0 for c in chunks[1:])
        assert rec.manifest["streams"][name]["chunks"] == len(chunks)


# -- PhysRecorder folders ------------------------------------------------------------------------
@pytest.mark.realdata
def test_physrecorder_folder_opens_with_its_timestamps_and_bvp():
    folder = shared_path("rppg/physrecorder-v01")
    rec = open_recording(folder)
    assert rec.streams == ["bvp"] and rec.closed and rec.damage == []
    lines = (folder / "frames_timestamp.csv").read_text().split()[1:]
    frame_unix = [Decimal(line.split(",")[1]) for line in lines]
    with rec.camera() as cam:
        frames = [f for _, f in zip(range(45), cam)]
    assert [f.index for f in frames] == list(range(45))
    assert frames[0].image.shape == (480, 640, 3)
    for f in frames:
        assert f.t_ns == int((frame_unix[f.index] - frame_unix[0]) * 10**9)
    rows = [line.split(",") for line in (folder / "BVP.csv").read_text().split()[1:]]
    bvp = list(rec.sensor("bvp"))
    assert len(bvp) == len(rows) and [c.seq for c in bvp] == list(range(len(rows)))
    for c, (t, v) in zip(bvp, rows):
        assert c.t0_ns == int((Decimal(t) - frame_unix[0]) * 10**9)  # frame 0 = t 0, same clock
        assert c.samples.tolist() == [float(v)]
    assert 19.0 < bvp[0].fs_hz < 21.0
    assert 0 < bvp[0].t0_ns < 20_000_000  # the oximeter started 10 ms after the camera


# -- the record command in-process -------------------------------------------------------------------
def _record_args(*argv):
    import argparse

    from firmware_bridge.commands import record

    parser = argparse.ArgumentParser()
    record.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["record", *argv])


def test_record_command_sensors_only_for_a_duration(tmp_path):
    args = _record_args("--sensor", "sim://?duration_s=30&seed=3", "--out", str(tmp_path / "s"),
                        "--duration-s", "0.4", "--status-every-s", "0")
    assert args.func(args) == 0
    rec = open_recording(tmp_path / "s")
    assert rec.closed and not rec.has_camera and rec.streams == ["ecg", "eda", "ppg"]
    session = synth_session(duration_s=30, seed=3)
    t, x = rec.read_stream("ecg")
    assert 0 < len(x) < 2 * session.ecg.fs_hz  # stopped by the duration, not the session's end
    assert np.array_equal(x, session.ecg.values[:len(x)])


def test_record_command_refuses_bad_input_and_leaves_no_folder(tmp_path):
    args = _record_args("--out", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="nothing to record"):
        args.func(args)
    args = _record_args("--camera", "sim://?duration_s=1", "--sensor", "mqtt://x", "--out", str(tmp_path / "bad"))
    with pytest.raises(ConfigError, match="unknown sensor scheme"):
        args.func(args)
    assert not (tmp_path / "bad").exists()


def test_realtime_replay_never_runs_ahead_of_the_recorded_times(tmp_path):
    frames = [Frame(10**9 + i * 50_000_000, i, np.full((64, 64, 3), i, np.uint8)) for i in range(6)]
    chunks = [SensorChunk("eda", 20.0, 10**9 + k * 100_000_000, np.ones(2), "uS", seq=k) for k in range(3)]
    with Recorder(tmp_path / "r") as rec:
        for f in frames:
            rec.write_frame(f)
        for c in chunks:
            rec.write_chunk(c)
    r = open_recording(tmp_path / "r")
    wall0 = time.monotonic_ns()
    cam, sens = r.camera(realtime=True), r.sensors(realtime=True)
    items = [(f.t_ns, time.monotonic_ns()) for f in cam] + \
            [(c.t0_ns + 50_000_000, time.monotonic_ns()) for c in sens]
    t_zero = 10**9  # the earliest item: frame 0 and chunk 0 start together
    for t_ns, wall in items:
        assert wall - wall0 >= t_ns - t_zero - 1_000_000  # 1 ms for the clock reads
    assert [f.index for f in r.camera()] == list(range(6))  # and as fast as possible by default
