"""``emofuse hr``: end to end on the real clip, and one-line errors on bad videos."""
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
        "hr", str(video), "--timestamps", str(stamps), "--json", "--detect-every", "30",
        "--plot", str(png),
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    windows, summary = rows[:-1], rows[-1]
    assert len(windows) == summary["n_windows"] == 11  # 20 s clip, 10 s windows, 1 s hop
    assert all(set(w) == {"t", "hr_bpm", "quality"} for w in windows)
    assert [w["t"] for w in windows] == pytest.approx(np.arange(10.0, 21.0), abs=0.05)
    assert all(0.0 <= w["quality"] <= 1.0 for w in windows)
    assert abs(summary["hr_bpm_median"] - BVP_HR_BPM) < 3.0
    assert summary["method"] == "pos"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.realdata
def test_table_output_in_process(capsys):
    # The parser built from register() alone, as the dispatcher would build it.
    video = shared_path(f"{CLIP}/video_ZIP_H264.avi")
    parser = argparse.ArgumentParser(prog="emofuse")
    hr_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["hr", str(video), "--method", "chrom", "--detect-every", "30"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].split() == ["t_s", "hr_bpm", "quality"]
    # The table shows an unknown rate (NaN: chrom's last window) as '-'.
    values = [float(line.split()[1].replace("-", "nan")) for line in out[1:-1]]
    assert len(values) == 11 and all(math.isfinite(v) for v in values[:8])
    assert out[-1].startswith("median ") and "method chrom" in out[-1]
    median = float(out[-1].split()[1])
    assert abs(median - BVP_HR_BPM) < 3.0


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
