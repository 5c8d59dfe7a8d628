"""``emofuse devices``: output, JSON and exit code, on this machine and on a made-up /dev."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from firmware_bridge.cameras import opencv_has_gstreamer
from firmware_bridge.commands import devices


def run_devices(argv: list[str], capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="emofuse")
    devices.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["devices", *argv])
    code = args.func(args)
    return code, capsys.readouterr().out


def test_json_on_this_machine(capsys):
    code, out = run_devices(["--json", "--no-probe"], capsys)
    assert code == 0
    report = json.loads(out)
    assert [c["path"] for c in report["cameras"]] == [
        str(p) for p in sorted(Path("/dev").glob("video*"), key=lambda p: int(p.name[5:]))
        if p.name[5:].isdigit()
    ]
    assert report["opencv"]["gstreamer"] is opencv_has_gstreamer()
    assert report["opencv"]["ffmpeg"] is True  # the PyPI wheel and JetPack's both have it
    assert all(not p["legacy"] for p in report["serial_ports"])  # hidden without --all
    legacy = sorted(p.device for p in devices.find_serial_ports() if p.legacy)
    assert report["hidden_serial_ports"] == len(legacy)
    code, out = run_devices(["--json", "--no-probe", "--all"], capsys)
    report = json.loads(out)
    assert report["hidden_serial_ports"] == 0
    assert sorted(p["device"] for p in report["serial_ports"] if p["legacy"]) == legacy


def test_table_says_none_found_cleanly(tmp_path, capsys):
    code, out = run_devices(["--dev-dir", str(tmp_path)], capsys)
    assert code == 0
    assert out.count("none found") == 2  # cameras and serial ports
    assert "GStreamer" in out and "Traceback" not in out


def test_fake_dev_lists_nodes_in_index_order(tmp_path, capsys):
    for name in ("video10", "video2", "video0", "videoX", "ttyUSB0", "ttyACM1", "ttyTHS1", "tty5"):
        (tmp_path / name).touch()
    cams = devices.find_cameras(tmp_path)
    assert [Path(c.path).name for c in cams] == ["video0", "video2", "video10"]
    assert [c.uri for c in cams] == ["0", "2", "10"] and not any(c.opened for c in cams)
    ports = devices.find_serial_ports(tmp_path, use_pyserial=False)
    assert [Path(p.device).name for p in ports] == ["ttyACM1", "ttyTHS1", "ttyUSB0"]
    code, out = run_devices(["--dev-dir", str(tmp_path)], capsys)
    assert code == 0 and out.index("video2") < out.index("video10") and "ttyTHS1" in out
    code, out = run_devices(["--dev-dir", str(tmp_path), "--json"], capsys)
    assert len(json.loads(out)["cameras"]) == 3


def test_legacy_ports_only_with_all(capsys):
    ports = devices.find_serial_ports()
    for port in ports:
        if port.legacy:
            assert Path(port.device).name.startswith("ttyS") and not port.hwid
    legacy = [p.device for p in ports if p.legacy]
    if not legacy:
        pytest.skip("no legacy ttyS ports on this machine")
    _, plain = run_devices(["--no-probe"], capsys)
    _, full = run_devices(["--no-probe", "--all"], capsys)
    assert legacy[0] not in plain and legacy[0] in full and "--all shows them" in plain
