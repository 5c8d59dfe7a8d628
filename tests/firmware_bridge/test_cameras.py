"""Camera sources by URI: the real clip, written and truncated videos, folders, sim://, csi://,
and the live reader with real captures."""
from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path

import cv2
import numpy as np
import pytest

from firmware_bridge.cameras import (
    SOURCES,
    ImageFolderSource,
    LiveVideoFileSource,
    SimCameraSource,
    V4l2Source,
    VideoFileSource,
    csi_pipeline,
    open_camera,
    opencv_has_gstreamer,
    parse_camera_uri,
    read_frame_timestamps,
)
from firmware_bridge.errors import BadInputError, ConfigError, DeviceError, SourceEndedError
from helpers import shared_path

GREY_STEP = 5  # frame i of a written video is a flat grey of i * GREY_STEP


def write_video(path: Path, n: int, fps: float, size=(64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), i * GREY_STEP, np.uint8))
    writer.release()
    return path


def grey_index(frame) -> int:
    return int(round(float(frame.image.mean()) / GREY_STEP))


@pytest.fixture()
def video40(tmp_path) -> Path:
    return write_video(tmp_path / "clip.avi", 40, 30.0)


# -- the real clip --------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_clip_frames_and_timestamps_from_csv():
    video = shared_path("rppg/physrecorder-v01/video_ZIP_H264.avi")
    csv = np.loadtxt(video.parent / "frames_timestamp.csv", delimiter=",", skiprows=1)
    origin = 123_456_789
    with open_camera(video, origin_ns=origin) as cam:
        assert isinstance(cam, VideoFileSource)
        assert cam.timestamps_csv == video.parent / "frames_timestamp.csv"
        # Keep the facts, not 600 full frames (550 MB).
        facts = [(f.t_ns, f.index, f.image.shape, f.image.dtype) for f in cam]
        assert cam.end_reason.startswith("end of file")
    assert len(facts) == cam.frame_count_declared == 602
    assert {(shape, dtype) for _, _, shape, dtype in facts} == {((480, 640, 3), np.dtype(np.uint8))}
    assert [index for _, index, _, _ in facts] == list(range(len(facts)))
    t_ns = np.array([t for t, _, _, _ in facts])
    assert t_ns[0] == origin
    expected_ns = (csv[: len(facts), 1] - csv[0, 1]) * 1e9
    assert np.max(np.abs((t_ns - origin) - expected_ns)) < 1_000  # within 1 us
    assert cam.t0_unix_s == pytest.approx(csv[0, 1], abs=1e-6)
    # Another stream's UNIX times land on the same clock (BVP.csv alignment).
    assert abs(cam.unix_to_t_ns(csv[300, 1]) - t_ns[300]) < 1_000


@pytest.mark.realdata
def test_timestamp_csv_parsed_exactly():
    path = shared_path("rppg/physrecorder-v01/frames_timestamp.csv")
    ns = read_frame_timestamps(path)
    lines = path.read_text().split()[1:]
    assert len(ns) == len(lines)
    for i in (0, 1, 301, len(lines) - 1):
        assert ns[i] == int(Decimal(lines[i].split(",")[1]) * 10**9)


# -- written videos -------------------------------------------------------------------------
def test_video_file_every_frame_with_fps_times(video40):
    with open_camera(str(video40)) as cam:
        frames = list(cam)
    assert len(frames) == 40 and cam.frame_count_declared == 40
    assert [grey_index(f) for f in frames] == list(range(40))
    assert [f.t_ns for f in frames] == [round(i * 1e9 / 30) for i in range(40)]
    assert cam.t0_unix_s is None and cam.timestamps_csv is None
    assert all(f.dropped_before == 0 and f.gap_before_s == 0 for f in frames)
    with pytest.raises(ConfigError):
        cam.unix_to_t_ns(1.0)


def test_truncated_video_ends_cleanly_and_says_why(video40, tmp_path):
    data = video40.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    with open_camera(cut) as cam:
        frames = list(cam)  # no exception
    assert 1 <= len(frames) < 40
    assert [grey_index(f) for f in frames] == list(range(len(frames)))
    assert "ended early" in cam.end_reason and "truncated" in cam.end_reason


def test_bad_and_missing_files_name_the_path(tmp_path):
    junk = tmp_path / "notes.avi"
    junk.write_text("this is not a video\n" * 50)
    with pytest.raises(BadInputError, match="notes.avi"):
        open_camera(junk)
    with pytest.raises(BadInputError, match="nowhere.mp4"):
        open_camera(tmp_path / "nowhere.mp4")


def test_timestamps_csv_given_short_and_ignored(video40, tmp_path):
    csv = tmp_path / "times.csv"
    stamps = ["1700000000.5", "1700000000.52", "1700000000.6", "1700000000.61"]
    csv.write_text("frame,timestamp\n" + "".join(f"{i},{s}\n" for i, s in enumerate(stamps)))
    with open_camera(video40, timestamps=csv) as cam:
        frames = list(cam)
    assert [f.t_ns for f in frames] == [0, 20_000_000, 100_000_000, 110_000_000]
    assert "only 4 rows" in cam.end_reason
    assert cam.t0_unix_s == pytest.approx(1700000000.5)

    # A sidecar beside the video is found by name, and "none" ignores it.
    (video40.parent / "frames_timestamp.csv").write_text(csv.read_text())
    with open_camera(video40) as cam:
        assert cam.timestamps_csv is not None and len(list(cam)) == 4
    with open_camera(video40, timestamps="none") as cam:
        assert cam.timestamps_csv is None and len(list(cam)) == 40

    backwards = tmp_path / "back.csv"
    backwards.write_text("frame,timestamp\n0,10.0\n1,9.0\n")
    with pytest.raises(BadInputError, match="backwards"):
        open_camera(video40, timestamps=backwards)
    with pytest.raises(BadInputError, match="not found"):
        open_camera(video40, timestamps=tmp_path / "absent.csv")


# -- image folders ---------------------------------------------------------------------------
def test_image_folder_in_natural_order(tmp_path):
    for i in range(12):  # f0..f11: plain sorting would put f10 before f2
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((20, 30, 3), i * GREY_STEP, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    with open_camera(tmp_path, fps=10) as cam:
        assert isinstance(cam, ImageFolderSource)
        frames = list(cam)
    assert [grey_index(f) for f in frames] == list(range(12))  # PNG is lossless
    assert [f.t_ns for f in frames] == [i * 100_000_000 for i in range(12)]
    assert frames[0].image.shape == (20, 30, 3)
    assert "12 images" in cam.end_reason


def test_image_folder_default_rate_greyscale_and_errors(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.full((8, 8), 77, np.uint8))  # greyscale
    cv2.imwrite(str(tmp_path / "b.png"), np.full((8, 8), 78, np.uint8))
    frames = list(open_camera(tmp_path))
    assert frames[1].t_ns == round(1e9 / 30) and frames[0].image.shape == (8, 8, 3)
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(BadInputError, match="c.png"):
        list(open_camera(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no images"):
        open_camera(empty)


def test_realtime_paces_a_finite_source(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    start = time.monotonic()
    frames = list(open_camera(tmp_path, fps=20, realtime=True))
    # A lower bound only: pacing can make delivery late, never early.
    assert time.monotonic() - start >= 0.9 * 2 / 20
    assert [f.t_ns for f in frames] == [0, 50_000_000, 100_000_000]  # times stay deterministic


# -- sim:// ----------------------------------------------------------------------------------
def test_sim_camera_frames_and_times_match_the_session():
    uri = "sim://?duration_s=1&fps=10&width=96&height=64&seed=3&hr_bpm=((0,60),(1,90))"
    with open_camera(uri, origin_ns=5) as cam:
        assert isinstance(cam, SimCameraSource)
        frames = list(cam)
    session = cam.session
    assert session.config.frame_size == (96, 64) and session.config.hr_bpm == ((0, 60), (1, 90))
    assert len(frames) == len(session) == 10
    assert [f.t_ns for f in frames] == [5 + round(t * 1e9) for t in session.frame_times_s]
    assert np.array_equal(frames[7].image, session.frame(7))
    assert (cam.width, cam.height, cam.fps) == (96, 64, 10.0)


def test_sim_camera_rejects_unknown_parameters():
    with pytest.raises(ConfigError, match="bogus.*valid:.*hr_bpm"):
        open_camera("sim://?bogus=1")
    with pytest.raises(ConfigError, match="duration_s"):
        open_camera("sim://?duration_s=-3")


# -- URIs and options --------------------------------------------------------------------------
def test_uri_classification(tmp_path):
    assert parse_camera_uri("0").scheme == parse_camera_uri(0).scheme == "v4l2"
    assert parse_camera_uri("/dev/video3").scheme == "v4l2"
    assert parse_camera_uri(tmp_path).scheme == "folder"
    assert parse_camera_uri(tmp_path / "x.mp4").scheme == "file"
    assert parse_camera_uri(f"file://{tmp_path}/x.mp4").target == f"{tmp_path}/x.mp4"
    csi = parse_camera_uri("csi://1?width=640&height=480")
    assert (csi.scheme, csi.target) == ("csi", "1")
    assert dict(csi.query) == {"width": "640", "height": "480"}
    rtsp = parse_camera_uri("rtsp://admin:secret@10.0.0.2:554/stream1")
    assert rtsp.target.endswith("stream1") and "secret" not in rtsp.display
    assert set(SOURCES) >= {"v4l2", "file", "folder", "rtsp", "csi", "sim"}
    with pytest.raises(ConfigError, match="unknown camera scheme"):
        parse_camera_uri("ftp://host/x")
    with pytest.raises(ConfigError, match="twice"):
        parse_camera_uri("csi://0?width=1&width=2")
    with pytest.raises(ConfigError, match="empty"):
        parse_camera_uri(" ")
    with pytest.raises(ConfigError, match="string or path"):
        parse_camera_uri(1.5)


def test_options_checked_against_the_source(video40):
    with pytest.raises(ConfigError, match="widht.*valid here"):
        open_camera(video40, widht=640)
    with pytest.raises(ConfigError, match="width"):
        open_camera(video40, width=640)  # a file has no size to ask for
    with pytest.raises(ConfigError, match="fps"):
        open_camera(video40, fps=-1)
    with pytest.raises(ConfigError, match="timestamps"):
        open_camera(video40, live=True, timestamps="none")  # live playback has no CSV times
    with pytest.raises(ConfigError, match="reconnect_max_s"):
        open_camera(video40, live=True, reconnect_initial_s=2, reconnect_max_s=1)


# -- devices that are not here -----------------------------------------------------------------
def test_csi_pipeline_string():
    p = csi_pipeline(1, 1920, 1080, 29.97, flip_method=2)
    assert p.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM)")
    assert "width=(int)1920, height=(int)1080" in p and "framerate=(fraction)2997/100" in p
    assert "nvvidconv flip-method=2 ! video/x-raw" in p
    assert "format=(string)BGRx ! videoconvert" in p
    assert p.endswith("format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")
    assert "framerate=(fraction)30/1" in csi_pipeline()
    for bad in ({"sensor_id": -1}, {"width": 0}, {"fps": 0}, {"flip_method": 8}):
        with pytest.raises(ConfigError):
            csi_pipeline(**bad)


@pytest.mark.skipif(
    opencv_has_gstreamer(), reason="this OpenCV has GStreamer; csi:// would try a real camera"
)
def test_csi_without_gstreamer_says_how_to_fix():
    with pytest.raises(DeviceError, match=r"GStreamer.*JetPack.*On a Jetson"):
        open_camera("csi://0?width=1280&height=720")


@pytest.mark.skipif(Path("/dev/video9").exists(), reason="this machine has a /dev/video9")
def test_absent_v4l2_camera_is_a_device_error():
    with pytest.raises(DeviceError, match="/dev/video9"):
        open_camera("/dev/video9")
    with pytest.raises(DeviceError, match="/dev/video9"):
        open_camera("9", width=640)
    assert "width" in V4l2Source.OPTIONS


def test_unreachable_rtsp_is_a_device_error_without_the_password():
    # Port 9 (discard) on localhost: nothing listens, the connection is refused at once.
    with pytest.raises(DeviceError, match=r"rtsp://\*\*\*@127\.0\.0\.1") as info:
        open_camera("rtsp://admin:secret@127.0.0.1:9/stream", open_timeout_s=2)
    assert "secret" not in str(info.value)


# -- the live reader, with real captures --------------------------------------------------------
def _check_drop_accounting(frames):
    for before, after in zip(frames, frames[1:]):
        assert after.index - before.index - 1 == after.dropped_before
        assert after.t_ns > before.t_ns


def test_live_file_keeps_newest_frame_and_counts_drops(tmp_path):
    path = write_video(tmp_path / "fast.avi", 40, 200.0)
    frames = []
    with open_camera(path, live=True, give_up_after_s=0) as cam:
        assert isinstance(cam, LiveVideoFileSource) and cam.live
        with pytest.raises(SourceEndedError, match="gave up"):
            for frame in cam:
                frames.append(frame)
                time.sleep(0.03)  # a consumer slower than the 200 fps "camera"
        assert cam.frames_grabbed == 40
    _check_drop_accounting(frames)
    # Frames grabbed before the first next() count as dropped too.
    assert frames[0].index == frames[0].dropped_before and frames[-1].index == 39
    assert sum(f.dropped_before for f in frames) + len(frames) == 40
    assert max(f.dropped_before for f in frames) > 0
    assert all(grey_index(f) == f.index for f in frames)  # the newest frame, not a stale one
    assert all(f.gap_before_s == 0 for f in frames)


def test_live_source_reconnects_after_the_device_vanishes_and_reports_the_gap(tmp_path):
    path = write_video(tmp_path / "cam.avi", 10, 100.0)
    away = tmp_path / "unplugged.avi"
    frames = []
    with open_camera(path, live=True, reconnect_initial_s=0.02, reconnect_max_s=0.05,
                     give_up_after_s=5) as cam:
        frames.append(next(cam))
        os.rename(path, away)  # unplugged: the open capture plays out, reopening fails
        time.sleep(0.4)
        os.rename(away, path)  # plugged back in
        t_back = time.monotonic_ns()
        while not any(f.gap_before_s > 0 for f in frames):
            frames.append(next(cam))
        assert cam.reconnects >= 1
    gap_frame = next(f for f in frames if f.gap_before_s > 0)
    # The 10-frame file ends at most 0.1 s after the unplug; it is back 0.4 s after it.
    assert 0.1 < gap_frame.gap_before_s < (gap_frame.t_ns - frames[0].t_ns) / 1e9 + 1e-9
    assert gap_frame.t_ns >= t_back
    assert gap_frame.index >= 10  # the index runs on across the reconnect
    _check_drop_accounting(frames)


def test_live_source_gives_up_with_source_ended(tmp_path):
    path = write_video(tmp_path / "cam.avi", 5, 100.0)
    with open_camera(path, live=True, reconnect_initial_s=0.02, reconnect_max_s=0.05,
                     give_up_after_s=0.3) as cam:
        next(cam)
        path.rename(tmp_path / "gone.avi")
        with pytest.raises(SourceEndedError, match=r"give_up_after_s=0\.3") as info:
            for _ in cam:
                pass
        assert "reopen attempt" in str(info.value)
        assert cam.end_reason == str(info.value)
        with pytest.raises(SourceEndedError):  # stays ended
            next(cam)


def test_close_stops_the_grabber(tmp_path):
    path = write_video(tmp_path / "cam.avi", 5, 100.0)
    cam = open_camera(path, live=True, give_up_after_s=10)
    next(cam)
    cam.close()
    assert not cam._thread.is_alive()
    with pytest.raises(StopIteration):
        next(cam)
    cam.close()  # idempotent
    assert cam.end_reason == "closed"
    with pytest.raises(BadInputError):
        open_camera(tmp_path / "absent.avi", live=True)
