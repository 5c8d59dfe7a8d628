"""``emofuse hr``: end to end on the real clip, and one-line errors on bad videos.

``emofuse hr`` runs the runtime's own pulse path (tests/edge/test_one_hr_path.py checks that it
prints exactly what ``emofuse replay`` reports)."""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge.cli import hr as hr_cli
from helpers import shared_path

CLIP = "rppg/physrecorder-v01"
BVP_HR_BPM = 71.1  # the finger BVP's heart rate over the clip (see test_real_rppg.py)


def _emofuse(*args, timeout=300):
    """Run the installed CLI entry point in a fresh interpreter: (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from edge.cli import main; sys.exit(main())", *args],
        capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _assert_one_line_error(code, out, err, needle):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("emofuse hr: error:") and needle in lines[0]
    assert "Traceback" not in err and out == ""


@pytest.mark.realdata
def test_json_lines_on_the_real_clip(tmp_path):
    video = shared_path(f"{CLIP}/video_ZIP_H264.avi")
    stamps = shared_path(f"{CLIP}/frames_timestamp.csv")
    png = tmp_path / "hr.png"
    code, out, err = _emofuse(
        "hr", str(video), "--timestamps", str(stamps), "--json", "--plot", str(png),
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    windows, summary = rows[:-1], rows[-1]
    assert len(windows) == summary["n_windows"] == 11  # 20 s clip, 10 s windows, 1 s hop
    assert all(set(w) == {"t", "hr_bpm", "quality"} for w in windows)
    assert [w["t"] for w in windows] == pytest.approx(np.arange(10.0, 21.0), abs=0.05)
    assert all(0.0 <= w["quality"] <= 1.0 for w in windows)
    # The gate's verdict, as the runtime's: a rate exactly where the quality reaches 0.5.
    assert all((w["hr_bpm"] is not None) == (w["quality"] >= 0.5) for w in windows)
    assert summary["n_valid"] == sum(w["hr_bpm"] is not None for w in windows) >= 1
    assert abs(summary["hr_bpm_median"] - BVP_HR_BPM) < 3.0
    assert summary["method"] == "pos"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.realdata
def test_table_output_in_process(capsys):
    # The parser built from register() alone, as the dispatcher would build it.
    video = shared_path(f"{CLIP}/video_ZIP_H264.avi")
    parser = argparse.ArgumentParser(prog="emofuse")
    hr_cli.register(parser.add_subparsers(dest="command"))
    # --min-pulse-quality 0: every window's estimate is shown; --method replaces the record's.
    args = parser.parse_args(["hr", str(video), "--method", "chrom", "--min-pulse-quality", "0"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split() == ["t_s", "hr_bpm", "quality"]
    values = [float(line.split()[1]) for line in out[1:-1]]
    assert len(values) == 11 and all(math.isfinite(v) for v in values)
    assert out[-1].startswith("median ") and "method chrom" in out[-1] and "gate >= 0" in out[-1]
    median = float(out[-1].split()[1])
    assert abs(median - BVP_HR_BPM) < 3.0
    # At the default threshold the table shows a refused window's rate as '-'.
    args = parser.parse_args(["hr", str(video), "--min-pulse-quality", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert all(line.split()[1] == "-" for line in out[1:-1]) and "no estimate over 0/11" in out[-1]


def test_missing_file(tmp_path):
    _assert_one_line_error(*_emofuse("hr", str(tmp_path / "nope.avi")), "not found")


def test_not_a_video(tmp_path):
    fake = tmp_path / "notes.avi"
    fake.write_text("frame,timestamp\n0,1.0\n")
    _assert_one_line_error(*_emofuse("hr", str(fake)), "notes.avi")


def test_video_without_a_face(tmp_path):
    path = tmp_path / "noise.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(15):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    assert path.stat().st_size > 0
    _assert_one_line_error(*_emofuse("hr", str(path)), "no face found")


def test_bad_timestamps_csv(tmp_path):
    video = shared_path(f"{CLIP}/video_ZIP_H264.avi")
    bad = tmp_path / "stamps.csv"
    bad.write_text("frame,timestamp\n0,5.0\n1,4.0\n")
    _assert_one_line_error(*_emofuse("hr", str(video), "--timestamps", str(bad)), "backwards")


def _synthetic_clip(path, seconds=3.0, gray=False):
    """A synthetic face (firmware_bridge.sim) written as MJPG, in colour or grayscale."""
    from firmware_bridge.sim import synth_session

    s = synth_session(duration_s=seconds, seed=3, frame_size=(160, 120), face_scale=0.55)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120), isColor=not gray)
    for i in range(len(s)):
        frame = s.frame(i)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if gray else frame)
    writer.release()
    return path


def test_grayscale_video_is_named_as_such_not_as_faceless(tmp_path):
    """Issue 13 item 4: the face is found in a grayscale video (as replay's tracker finds it),
    but rPPG needs colour: one line that says so, not 'no face found'."""
    from edge.face import HaarFaceDetector

    path = _synthetic_clip(tmp_path / "gray.avi", gray=True)
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read()
    cap.release()
    assert ok and HaarFaceDetector().detect(first)  # there is a face to find
    code, out, err = _emofuse("hr", str(path))
    _assert_one_line_error(code, out, err, "grayscale")
    assert "no face found" not in err


@pytest.mark.realdata
def test_inf_and_huge_frame_times_cost_their_rows_only(tmp_path):
    """Issue 13 item 4: 'inf' and '1e30' in frames_timestamp.csv skip those frames (a warning),
    not an OverflowError; the heart rate is that of the clean clip."""
    video = shared_path(f"{CLIP}/video_ZIP_H264.avi")
    rows = shared_path(f"{CLIP}/frames_timestamp.csv").read_text().splitlines()
    rows[101] = rows[101].split(",")[0] + ",inf"
    rows[301] = rows[301].split(",")[0] + ",1e30"
    bad = tmp_path / "stamps.csv"
    bad.write_text("\n".join(rows) + "\n")
    code, out, err = _emofuse("hr", str(video), "--timestamps", str(bad), "--json")
    assert code == 0, err
    assert "Traceback" not in err and "2 damaged rows skipped" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n_windows"] == 11 and abs(summary["hr_bpm_median"] - BVP_HR_BPM) < 3.0


def test_repeated_frame_times_are_one_line(tmp_path):
    """Issue 13 item 4: frame times that repeat (each twice) are not a clock: one line, exit 2,
    not a ZeroDivisionError from the median frame interval."""
    path = _synthetic_clip(tmp_path / "clip.avi", seconds=2.0)
    n = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("frame,timestamp\n" + "".join(f"{i},{1000.0 + (i // 2) / 15.0:.6f}\n" for i in range(n)))
    _assert_one_line_error(*_emofuse("hr", str(path), "--timestamps", str(stamps)), "repeat")


@pytest.mark.parametrize("flag", ["--detect-every", "--window-s"])
def test_retired_options_say_where_the_setting_is(flag):
    """The offline path's own settings are gone: the record sets them, as for replay."""
    code, out, err = _emofuse("hr", "sim://?duration_s=1", flag, "10")
    _assert_one_line_error(code, out, err, "preprocessing record")


def test_bundle_none_is_one_line():
    code, out, err = _emofuse("hr", "sim://?duration_s=1", "--bundle", "none")
    _assert_one_line_error(code, out, err, "preprocessing record")


def test_clip_shorter_than_the_pulse_window_is_one_line():
    code, out, err = _emofuse("hr", "sim://?duration_s=3&width=160&height=120")
    _assert_one_line_error(code, out, err, "shorter than the record's 10 s pulse window")
