"""Small damage costs only what it damaged (issue 13 items 3 and 4): a garbled frames.csv row
costs its frame, a damaged sensor header costs the header, a damaged video segment never
plays wrong pixels, bad timestamps cost their row, and every skip is counted. Also: a
recording opens through the camera and sensor registries like any other source."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.cameras import SimCameraSource, open_camera, parse_camera_uri
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.recording import FRAMES_CSV, Recorder, RecordingCameraSource, open_recording
from firmware_bridge.sensors import SimSensorSource, open_sensor
from firmware_bridge.sim import SimConfig, synth_session

ORIGIN_NS = 5_000_000_000_000
N_FRAMES = 60  # 2 s at 30 fps, in four 0.5 s segments


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A 2 s recording (FFV1, 0.5 s segments) and what was written to it."""
    out = tmp_path_factory.mktemp("damage") / "session"
    session = synth_session(SimConfig(duration_s=2.0, seed=3, frame_size=(96, 72)))
    frames, chunks = [], []
    with Recorder(out, segment_s=0.5, fps=30.0) as rec:
        for f in SimCameraSource.from_session(session, origin_ns=ORIGIN_NS):
            rec.write_frame(f)
            frames.append(f)
        for c in SimSensorSource(session, chunk_s=0.1, origin_ns=ORIGIN_NS):
            rec.write_chunk(c)
            chunks.append(c)
    assert len(frames) == N_FRAMES
    return out, frames, chunks


def _copy(recorded, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(recorded[0], dst)
    return dst


def _stream(chunks, name):
    return [c for c in chunks if c.stream == name]


def _row_span(data: bytes, k: int) -> tuple[int, int]:
    """Byte range of data row k (0-based, after the header) of a frames.csv, newline included."""
    starts = [0] + [i + 1 for i, b in enumerate(data) if b == 0x0A]
    return starts[k + 1], starts[k + 2]


# -- frames.csv --------------------------------------------------------------------------------
def test_one_garbled_frames_row_costs_only_its_frame(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    path = out / FRAMES_CSV
    data = bytearray(path.read_bytes())
    lo, hi = _row_span(bytes(data), 20)
    data[lo + 3:lo + 8] = b"#?!x%"
    path.write_bytes(bytes(data))
    rec = open_recording(out)
    got = list(rec.camera())
    frames = recorded[1]
    assert [g.index for g in got] == [i for i in range(N_FRAMES) if i != 20]
    for g in got:
        assert np.array_equal(g.image, frames[g.index].image) and g.t_ns == frames[g.index].t_ns
    assert got[20].index == 21 and got[20].dropped_before == 1  # the hole is visible
    assert rec.n_frames == N_FRAMES - 1
    assert (rec.skips.rows, rec.skips.frames) == (1, 1)
    assert any("line 22" in d for d in rec.damage)


def test_a_changed_digit_in_a_row_is_caught_by_the_row_checksum(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    path = out / FRAMES_CSV
    data = bytearray(path.read_bytes())
    lo, _ = _row_span(bytes(data), 30)
    t_at = data.index(b",", lo) + 3  # a digit of t_ns: still a valid, increasing number
    data[t_at] = ord("0") + (data[t_at] - ord("0") + 1) % 10
    path.write_bytes(bytes(data))
    rec = open_recording(out)
    assert list(rec.frame_times_ns()) == [f.t_ns for i, f in enumerate(recorded[1]) if i != 30]
    assert rec.skips.rows == 1


def test_a_damaged_frames_header_costs_only_the_header(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    path = out / FRAMES_CSV
    data = bytearray(path.read_bytes())
    data[2:6] = b"XXXX"
    path.write_bytes(bytes(data))
    rec = open_recording(out)
    assert rec.n_frames == N_FRAMES
    assert any("header line damaged" in d for d in rec.damage)


def test_a_wrong_pixel_checksum_skips_that_frame(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    path = out / FRAMES_CSV
    frames = recorded[1]
    lines = path.read_bytes().split(b"\n")
    # Rewrite row 10 with another pixel checksum and a valid row checksum: the row reads,
    # the decoded pixels do not match it.
    from firmware_bridge.recording.format import frame_row

    f = frames[10]
    lines[11] = frame_row(10, f.t_ns, f.index, f.dropped_before, f.gap_before_s, 0x12345678)[:-1]
    path.write_bytes(b"\n".join(lines))
    rec = open_recording(out)
    got = list(rec.camera())
    assert [g.index for g in got] == [i for i in range(N_FRAMES) if i != 10]
    assert (rec.skips.checksum, rec.skips.frames) == (1, 1)
    assert any("CRC-32 does not match" in d for d in rec.damage)


@pytest.mark.parametrize("where", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_4kib_overwritten_in_a_segment_never_plays_wrong_pixels(recorded, tmp_path, where):
    out = _copy(recorded, tmp_path)
    seg = sorted((out / "video").glob("seg_*.mkv"))[1]  # frames 15-29
    data = bytearray(seg.read_bytes())
    at = int(where * (len(data) - 4096))
    data[at:at + 4096] = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    seg.write_bytes(bytes(data))
    rec = open_recording(out)
    got = list(rec.camera())
    frames = recorded[1]
    for g in got:
        assert np.array_equal(g.image, frames[g.index].image), g.index
    assert [g.index for g in got] == sorted({g.index for g in got})
    # Every frame is either delivered intact or counted; the other segments are whole.
    assert len(got) + rec.skips.frames == N_FRAMES
    assert set(range(15)) | set(range(30, N_FRAMES)) <= {g.index for g in got}
    assert rec.skips.frames >= 1 and any(seg.name in d for d in rec.damage)


def test_format_1_recordings_without_checksums_still_read(recorded, tmp_path):
    out = _copy(recorded, tmp_path)
    path = out / FRAMES_CSV
    lines = path.read_text().splitlines()
    v1 = ["frame,t_ns,index,dropped_before,gap_before_s"] + [",".join(r.split(",")[:5]) for r in lines[1:]]
    path.write_text("\n".join(v1) + "\n")
    m = json.loads((out / "manifest.json").read_text())
    m["format_version"] = 1
    (out / "manifest.json").write_text(json.dumps(m))
    rec = open_recording(out)
    got = list(rec.camera())
    assert rec.damage == [] and len(got) == N_FRAMES
    assert all(np.array_equal(g.image, f.image) for g, f in zip(got, recorded[1]))


# -- sensor files ------------------------------------------------------------------------------
@pytest.mark.parametrize("at", [2, 40])  # the magic line; the JSON header line
def test_a_damaged_sensor_header_keeps_the_stream(recorded, tmp_path, at):
    out = _copy(recorded, tmp_path)
    path = out / "sensors" / "ecg.bin"
    data = bytearray(path.read_bytes())
    data[at:at + 3] = b"\x00\xff\x00"
    path.write_bytes(bytes(data))
    rec = open_recording(out)
    want = _stream(recorded[2], "ecg")
    got = list(rec.sensor("ecg"))
    assert [c.seq for c in got] == [c.seq for c in want]
    assert all(np.array_equal(g.samples, w.samples) and g.t0_ns == w.t0_ns for g, w in zip(got, want))
    assert got[0].source == want[0].source  # named by the manifest
    assert rec.skips.headers == 1 and rec.skips.records == 0
    assert rec.stream_info("ecg")["fs_hz"] == want[0].fs_hz


def test_skipped_records_are_counted_logged_and_named_at_the_end(recorded, tmp_path, caplog):
    out = _copy(recorded, tmp_path)
    path = out / "sensors" / "ppg.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    rec = open_recording(out)
    with caplog.at_level(logging.WARNING, logger="firmware_bridge.recording"):
        src = rec.sensors()
        chunks = list(src)
    want = recorded[2]
    assert len(chunks) == len(want) - 1
    assert rec.skips.records == 1 and rec.skips.record_bytes > 0
    assert any("damaged bytes" in r.getMessage() for r in caplog.records)
    assert "skipped as damaged" in src.end_reason and "1 records" in src.end_reason


# -- bad timestamps (frames_timestamp.csv, BVP.csv) --------------------------------------------
def _grey_video(path: Path, n: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), i * 5, np.uint8))
    writer.release()
    return path


def _stamps(n: int, bad: dict[int, str] | None = None) -> list[str]:
    rows = [f"{1_700_000_000 + i / 30:.6f}" for i in range(n)]
    for i, text in (bad or {}).items():
        rows[i] = text
    return rows


def _physrecorder(folder: Path, frame_bad=None, bvp_bad=None, n=40) -> Path:
    folder.mkdir()
    _grey_video(folder / "video.avi", n)
    stamps = _stamps(n, frame_bad)
    (folder / "frames_timestamp.csv").write_text(
        "frame,timestamp\n" + "".join(f"{i},{s}\n" for i, s in enumerate(stamps)))
    bvp = _stamps(n // 2, bvp_bad)
    (folder / "BVP.csv").write_text("timestamp,bvp\n" + "".join(f"{t},{50 + i}\n" for i, t in enumerate(bvp)))
    return folder


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "1e30", "17e99999999", "x1.5"])
def test_a_bad_frame_timestamp_costs_only_its_frame(tmp_path, bad):
    video = _grey_video(tmp_path / "clip.avi", 40)
    csv = tmp_path / "times.csv"
    csv.write_text("frame,timestamp\n" + "".join(f"{i},{s}\n" for i, s in enumerate(_stamps(40, {7: bad}))))
    with open_camera(video, timestamps=csv) as cam:
        frames = list(cam)
        assert cam.frames_skipped == 1 and len(cam.timestamp_skips) == 1
        assert "line 9" in cam.timestamp_skips[0]
    assert [f.index for f in frames] == [i for i in range(40) if i != 7]
    assert frames[7].index == 8 and frames[7].dropped_before == 1
    assert frames[7].t_ns - frames[6].t_ns == round(2e9 / 30, -3)  # frame 8 keeps its own time


def test_a_repeated_frame_time_costs_its_row_and_all_equal_times_are_an_error(tmp_path):
    video = _grey_video(tmp_path / "clip.avi", 40)
    stamps = _stamps(40)
    stamps[12] = stamps[11]
    csv = tmp_path / "times.csv"
    csv.write_text("frame,timestamp\n" + "".join(f"{i},{s}\n" for i, s in enumerate(stamps)))
    with open_camera(video, timestamps=csv) as cam:
        frames = list(cam)
    assert len(frames) == 39 and np.all(np.diff([f.t_ns for f in frames]) > 0)
    csv.write_text("frame,timestamp\n" + "".join(f"{i},1700000000.5\n" for i in range(40)))
    with pytest.raises(BadInputError, match=r"times.csv: line 3: .*repeat"):
        open_camera(video, timestamps=csv)
    csv.write_text("frame,timestamp\n0,inf\n1,nan\n")
    with pytest.raises(BadInputError, match="times.csv: no usable timestamp rows"):
        open_camera(video, timestamps=csv)


def test_physrecorder_bad_rows_are_skipped_and_counted(tmp_path):
    folder = _physrecorder(tmp_path / "phys", frame_bad={5: "1e30"}, bvp_bad={3: "inf", 4: "nan"})
    rec = open_recording(folder)
    bvp = list(rec.sensor("bvp"))
    assert len(bvp) == 18 and np.all(np.diff([c.t0_ns for c in bvp]) > 0)
    assert 29.0 < bvp[0].fs_hz < 31.0
    frames = list(rec.camera())
    assert [f.index for f in frames] == [i for i in range(40) if i != 5]
    assert rec.skips.rows == 3 and rec.skips.frames == 1
    assert any("BVP.csv: line 5" in d for d in rec.damage)
    assert any("frames_timestamp.csv: line 7" in d for d in rec.damage)


def test_physrecorder_unusable_bvp_is_skipped_and_unusable_frame_times_are_an_error(tmp_path):
    same = {i: "1700000000.0" for i in range(20)}
    rec = open_recording(_physrecorder(tmp_path / "a", bvp_bad=same))
    assert rec.streams == [] and any("BVP.csv" in d and "repeat" in d for d in rec.damage)
    assert len(list(rec.camera())) == 40  # the video still plays
    with pytest.raises(BadInputError, match="frames_timestamp.csv: line 3"):
        open_recording(_physrecorder(tmp_path / "b", frame_bad={i: "5.0" for i in range(40)}))


# -- the registries ----------------------------------------------------------------------------
def test_a_recording_opens_through_the_camera_and_sensor_registries(recorded):
    out = recorded[0]
    assert parse_camera_uri(f"replay://{out}").scheme == "replay"
    assert parse_camera_uri(str(out)).scheme == "replay"  # the folder itself, as for sensors
    want = [(f.t_ns, f.index) for f in recorded[1]]
    for uri in (f"replay://{out}", str(out)):
        with open_camera(uri) as cam:
            assert isinstance(cam, RecordingCameraSource)
            assert [(f.t_ns, f.index) for f in cam] == want
    with open_camera(f"replay://{out}?realtime=1", origin_ns=10**9) as cam:
        assert cam.options.realtime
        assert next(cam).t_ns == recorded[1][0].t_ns + 10**9 - open_recording(out).start_ns
    with open_sensor(f"replay://{out}") as src:
        chunks = list(src)
    assert sorted((c.stream, c.seq) for c in chunks) == sorted((c.stream, c.seq) for c in recorded[2])
    with pytest.raises(ConfigError, match="no recording folder"):
        open_camera("replay://")
    with pytest.raises(ConfigError, match="unknown option"):
        open_camera(f"replay://{out}", fps=30)


def test_a_physrecorder_folder_opens_through_the_camera_registry(tmp_path):
    folder = _physrecorder(tmp_path / "phys")
    with open_camera(f"replay://{folder}") as cam:
        frames = list(cam)
    assert len(frames) == 40 and frames[0].t_ns == 0
    assert frames[1].t_ns == round(1e9 / 30, -3)


# -- random damage -------------------------------------------------------------------------------
def _record_spans(data: bytes, offset: int) -> list[tuple[int, int, int]]:
    """(start, end, seq) of each record of an intact sensor file's body."""
    import struct

    out = []
    while offset < len(data):
        _, body_len, _ = struct.unpack_from("<4sII", data, offset)
        seq = struct.unpack_from("<q", data, offset + 12)[0]
        out.append((offset, offset + 12 + body_len, seq))
        offset += 12 + body_len
    return out


_damage = st.lists(
    st.one_of(
        st.tuples(st.just("overwrite"), st.sampled_from(["frames", "ecg"]), st.floats(0, 1),
                  st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("truncate"), st.sampled_from(["frames", "ecg"]), st.floats(0, 1), st.just(b"")),
    ),
    min_size=1, max_size=4,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_damage)
def test_random_damage_never_raises_and_keeps_every_intact_row_and_record(recorded, tmp_path, ops):
    out = Path(tempfile.mkdtemp(dir=tmp_path)) / "r"
    shutil.copytree(recorded[0], out)
    files = {"frames": out / FRAMES_CSV, "ecg": out / "sensors" / "ecg.bin"}
    original = {k: p.read_bytes() for k, p in files.items()}
    touched = {k: np.zeros(len(v), dtype=bool) for k, v in original.items()}
    size = {k: len(v) for k, v in original.items()}
    data = {k: bytearray(v) for k, v in original.items()}
    for op, name, where, payload in ops:
        at = int(where * size[name])
        if op == "overwrite":
            end = min(at + len(payload), size[name])
            data[name][at:end] = payload[:end - at]
            touched[name][at:end] = True
        else:
            size[name] = at
            del data[name][at:]
    for name, p in files.items():
        p.write_bytes(bytes(data[name]))

    try:
        rec = open_recording(out)
        times = set(rec.frame_times_ns().tolist())
        seqs = [c.seq for c in rec.sensor("ecg")] if "ecg" in rec.streams else []
    except BadInputError:
        return  # a one-line error is allowed; any other exception fails the test

    # Every frames.csv row whose bytes (and the newline before it) are untouched is read.
    frames_raw = original["frames"]
    starts = [i + 1 for i, b in enumerate(frames_raw) if b == 0x0A]
    for k, f in enumerate(recorded[1]):
        lo, hi = starts[k] - 1, starts[k + 1]
        if hi <= size["frames"] and not touched["frames"][lo:hi].any():
            assert f.t_ns in times, f"intact row of frame {k} lost"
    # Every sensor record whose bytes are untouched is read, in order.
    ecg_raw = original["ecg"]
    header_end = ecg_raw.index(b"\n", len(b"EMOFUSE-SENSOR 1\n")) + 1
    intact = [seq for lo, hi, seq in _record_spans(ecg_raw, header_end)
              if hi <= size["ecg"] and not touched["ecg"][lo:hi].any()]
    assert set(intact) <= set(seqs), "an intact sensor record was lost"
    assert seqs == sorted(seqs)
    # Whatever was lost is counted (the manifest's totals reveal a cut at a record boundary).
    rows_lost = len(recorded[1]) - len(times)
    records_lost = len(_stream(recorded[2], "ecg")) - len(seqs)
    assert rows_lost == 0 or rec.skips.rows > 0
    assert records_lost == 0 or rec.skips.records > 0
    if not any(t.any() for t in touched.values()) and size == {k: len(v) for k, v in original.items()}:
        assert rec.damage == []
