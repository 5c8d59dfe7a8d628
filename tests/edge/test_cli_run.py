"""``emofuse run / replay / demo`` through the real CLI entry (edge.cli.main)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, face_only_bundle

pytest.importorskip("export.data.preprocess")

# `emofuse` with this module's commands registered, whatever the installed entry points say.
LAUNCH = ("import sys, edge.cli as c; c._command_modules = lambda: {'run': 'edge.cli.run'}; "
          "sys.exit(c.main(sys.argv[1:]))")


def emofuse(*argv, monkeypatch) -> int:
    import edge.cli as cli

    monkeypatch.setattr(cli, "_command_modules", lambda: {"run": "edge.cli.run"})
    return cli.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return face_only_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """12 s of a synthetic person recorded with the real recorder."""
    from firmware_bridge.cameras.sim import SimCameraSource
    from firmware_bridge.recording import Recorder
    from firmware_bridge.sensors import SimSensorSource
    from firmware_bridge.sim import synth_session

    s = synth_session(duration_s=12.0, seed=6, frame_size=(160, 120), face_scale=0.55, hrv_sdnn_ms=30.0)
    path = tmp_path_factory.mktemp("cli") / "rec"
    with Recorder(path, codec="hfyu", fps=30.0) as rec:
        for frame in SimCameraSource.from_session(s):
            rec.write_frame(frame)
        for chunk in SimSensorSource(s):
            rec.write_chunk(chunk)
    return path


def test_replay_prints_identical_json_lines_every_time(recording, bundle, monkeypatch, capsys):
    outs = []
    for _ in range(2):
        assert emofuse("replay", recording, "--bundle", bundle, monkeypatch=monkeypatch) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
    lines = [json.loads(line) for line in outs[0].splitlines()]
    assert [d["t_s"] for d in lines] == [float(k) for k in range(1, 13)]
    assert "latency_ms" not in lines[0] and lines[-1]["valence_prob"] is not None
    assert lines[-1]["contact_hr_bpm"] is not None


def test_replay_writes_every_output_and_prints_a_table(recording, bundle, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r.jsonl"
    code = emofuse("replay", recording, "--bundle", bundle, "--out", out, "--csv", tmp_path / "r.csv",
                   "--video", tmp_path / "v.avi", "--report", tmp_path / "r.png", "--latency",
                   monkeypatch=monkeypatch)
    assert code == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["t_s", "status", "HR[bpm]"] and len(table) == 13
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 12 and "window" in lines[-1]["latency_ms"]
    assert (tmp_path / "r.csv").read_text().splitlines()[0].startswith("t_s,")
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2

    cap = cv2.VideoCapture(str(tmp_path / "v.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 360  # every replayed frame, annotated
    cap.release()


def test_toml_config_and_flags(recording, bundle, tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "emofuse.toml"
    cfg.write_text(f'recording = "{recording}"\nbundle = "{bundle}"\nhop-s = 2.0\nprint = "jsonl"\n'
                   f'log_level = "warning"\n')
    assert emofuse("replay", "--config", cfg, monkeypatch=monkeypatch) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["t_s"] for d in lines] == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    # A flag beats the file.
    assert emofuse("replay", "--config", cfg, "--hop-s", "3", monkeypatch=monkeypatch) == 0
    assert [json.loads(x)["t_s"] for x in capsys.readouterr().out.splitlines()] == [3.0, 6.0, 9.0, 12.0]
    # An unknown key: one line, exit 2.
    cfg.write_text('recording = "x"\nspeed = 3\n')
    assert emofuse("replay", "--config", cfg, monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "speed" in err[0] and err[0].startswith("emofuse replay: error:")


def test_errors_are_one_line_and_exit_2(recording, bundle, tmp_path, monkeypatch, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "model.onnx").write_bytes((broken / "model.onnx").read_bytes()[:-100])  # truncated
    cases = [
        ("replay", tmp_path / "nowhere", "--bundle", bundle),
        ("replay", recording, "--bundle", broken),
        ("run", "--camera", "sim://?duration_s=2", "--bundle", "none", "--hop-s", "-1"),
        ("run", "--camera", "bogus://x", "--bundle", bundle),
        ("run", "--bundle", bundle),
    ]
    for argv in cases:
        assert emofuse(*argv, monkeypatch=monkeypatch) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"emofuse {argv[0]}: error:"), (argv, err)


def test_run_records_and_ctrl_c_stops_cleanly(bundle, tmp_path):
    rec = tmp_path / "rec"
    out = tmp_path / "live.jsonl"
    cmd = [sys.executable, "-c", LAUNCH, "run", "--camera", "sim://?duration_s=60&frame_size=(160,120)&face_scale=0.55",
           "--sensor", "sim://?duration_s=60", "--bundle", str(bundle), "--record", str(rec), "--out", str(out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
            time.sleep(0.2)
        assert out.exists(), proc.stderr.read() if proc.poll() is not None else "no results yet"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "interrupted" in err
    from firmware_bridge.recording import open_recording

    r = open_recording(rec)
    assert r.closed and not r.damage  # flushed and closed by the interrupted command
    frames = r.frame_times_ns()
    assert frames.size >= 45 and {"ecg", "ppg", "eda"} <= set(r.streams)
    t, x = r.read_stream("ppg")
    assert t.size > 150 and np.all(np.diff(t) > 0)
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) >= 2 and "latency_ms" in results[0]


def test_demo_streams_and_writes_video_and_report(bundle, tmp_path, monkeypatch, capsys):
    from edge.bundle import load_bundle
    from edge.engine.base import resolve_precision

    precision, _ = resolve_precision(load_bundle(bundle), "auto")
    code = emofuse("demo", "--duration-s", "4", "--bundle", bundle, "--precision", precision, "--out-dir",
                   tmp_path / "demo", monkeypatch=monkeypatch)
    assert code == 0
    out = capsys.readouterr()
    rows = out.out.splitlines()
    assert rows[0].split()[:2] == ["t_s", "status"] and [r.split()[0] for r in rows[1:]] == [
        f"{k}.0" for k in range(1, 5)]
    assert "CRC errors" in out.err and "0 dropped" in out.err
    # units in the table's header, a one-line legend of the columns on stderr
    assert all(u in rows[0] for u in ("HR[bpm]", "cHR[bpm]", "SDNN[ms]", "EDA[uS]"))
    assert sum("columns: HR heart rate" in line for line in out.err.splitlines()) == 1
    lines = (tmp_path / "demo" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[-1])["face_present"] is True
    assert (tmp_path / "demo" / "report.png").stat().st_size > 10_000
    import cv2

    assert not (tmp_path / "demo" / "demo.avi").exists()
    cap = cv2.VideoCapture(str(tmp_path / "demo" / "demo.mp4"))  # compact MPEG-4, and it opens again
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) >= 100
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (240, 320, 3)


def test_the_default_bundle_location_is_reported_when_missing(monkeypatch, tmp_path, capsys):
    import edge.pipeline as pipeline

    monkeypatch.setattr(pipeline, "DEFAULT_BUNDLE_DIR", Path(tmp_path) / "absent")
    assert emofuse("demo", "--duration-s", "1", "--out-dir", tmp_path / "d", monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert "default bundle is not installed" in err and "build_default_bundle.sh" in err
