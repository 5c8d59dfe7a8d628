"""``emofuse devices``: the cameras and serial ports this machine offers, and what OpenCV can open.

Cameras are the ``/dev/video*`` nodes, each opened once with OpenCV to report its current
size and rate (a UVC camera also creates metadata nodes that cannot capture: they show as
such). Serial ports come from pyserial's ``list_ports`` when it is installed, else from the
``/dev/ttyUSB*``, ``/dev/ttyACM*`` and Jetson ``/dev/ttyTHS*`` names. Legacy on-board
``ttyS*`` ports that report no hardware are hidden unless ``--all``. ``--json`` prints the
same facts for scripts. Finding nothing is not an error: the command says so and exits 0.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from firmware_bridge.cameras.live import opencv_has_gstreamer

_SERIAL_GLOBS = ("ttyUSB*", "ttyACM*", "ttyTHS*", "ttyAMA*", "tty.usb*", "cu.usb*")


@dataclass(frozen=True)
class CameraInfo:
    """One ``/dev/videoN`` node.

    Attributes:
        path: the node, e.g. ``/dev/video0``.
        uri: what to pass to ``open_camera`` (the index as a string).
        name: the driver's card name from sysfs ("" when unknown).
        opened: whether OpenCV could open it for capture.
        width, height: current frame size, px (0 when not opened).
        fps: current rate, Hz (0.0 when not opened or not reported).
        backend: the OpenCV backend that opened it ("" when not opened).
    """

    path: str
    uri: str
    name: str
    opened: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    backend: str = ""


@dataclass(frozen=True)
class SerialPortInfo:
    """One serial port.

    Attributes:
        device: the port, e.g. ``/dev/ttyUSB0``.
        description: what the USB descriptor or driver says ("" when nothing).
        hwid: pyserial's hardware id, e.g. ``USB VID:PID=10C4:EA60 SER=0001`` ("" if none).
        legacy: a ``ttyS*`` port with no hardware information (usually not connected).
    """

    device: str
    description: str = ""
    hwid: str = ""
    legacy: bool = False


def _natural(path: Path) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def find_cameras(dev_dir: str | Path = "/dev", probe: bool = True) -> list[CameraInfo]:
    """List the ``video*`` nodes under ``dev_dir`` and, with ``probe``, open each with OpenCV.

    Args:
        dev_dir: where the nodes are (``/dev``; another folder for tests).
        probe: open each node to read its size and rate (a camera in use by another program
            shows as not opened); only for ``/dev``.

    Returns:
        One :class:`CameraInfo` per node, in index order; empty when there is none.
    """
    nodes = sorted(
        (p for p in Path(dev_dir).glob("video*") if re.fullmatch(r"video\d+", p.name)),
        key=_natural,
    )
    # Probing opens by index, which always means /dev/videoN: never probe another folder.
    probe = probe and Path(dev_dir) == Path("/dev")
    if probe and nodes:
        import cv2

        backend = cv2.CAP_V4L2 if cv2.videoio_registry.hasBackend(cv2.CAP_V4L2) else cv2.CAP_ANY
    found = []
    for node in nodes:
        index = node.name[len("video"):]
        name_file = Path("/sys/class/video4linux") / node.name / "name"
        try:
            name = name_file.read_text(encoding="utf-8").strip() if probe else ""
        except OSError:
            name = ""
        if not probe:
            found.append(CameraInfo(str(node), index, name, False))
            continue
        cap = cv2.VideoCapture(int(index), backend)
        try:
            if not cap.isOpened():
                found.append(CameraInfo(str(node), index, name, False))
                continue
            fps = cap.get(cv2.CAP_PROP_FPS)
            found.append(
                CameraInfo(
                    str(node),
                    index,
                    name,
                    True,
                    int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                    int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                    float(fps) if fps == fps and fps > 0 else 0.0,
                    cap.getBackendName(),
                )
            )
        finally:
            cap.release()
    return found


def opencv_video_support() -> dict:
    """What the installed OpenCV can open: ``{"version", "ffmpeg", "v4l2", "gstreamer"}``.

    ``ffmpeg`` covers files and ``rtsp://``; ``gstreamer`` is needed for ``csi://``.
    """
    import cv2

    registry = cv2.videoio_registry
    return {
        "version": cv2.__version__,
        "ffmpeg": bool(registry.hasBackend(cv2.CAP_FFMPEG)),
        "v4l2": bool(registry.hasBackend(cv2.CAP_V4L2)),
        "gstreamer": opencv_has_gstreamer(),
    }


def find_serial_ports(
    dev_dir: str | Path = "/dev", use_pyserial: bool = True
) -> list[SerialPortInfo]:
    """List serial ports: pyserial's ``list_ports.comports()`` if installed, else device names.

    Args:
        dev_dir: where to look by name when pyserial is absent (``/dev``; another for tests).
        use_pyserial: False forces the name-based listing.

    Returns:
        One :class:`SerialPortInfo` per port, sorted by device; legacy ``ttyS*`` ports with no
        hardware information are included, marked ``legacy``.
    """
    ports: list[SerialPortInfo] = []
    if use_pyserial and importlib.util.find_spec("serial") is not None:
        from serial.tools import list_ports

        for port in list_ports.comports():
            hwid = "" if port.hwid in (None, "n/a") else str(port.hwid)
            description = "" if port.description in (None, "n/a") else str(port.description)
            legacy = not hwid and Path(port.device).name.startswith("ttyS")
            ports.append(SerialPortInfo(str(port.device), description, hwid, legacy))
    else:
        seen = set()
        for pattern in _SERIAL_GLOBS:
            for path in Path(dev_dir).glob(pattern):
                if path.name not in seen:
                    seen.add(path.name)
                    ports.append(SerialPortInfo(str(path)))
    return sorted(ports, key=lambda p: _natural(Path(p.device)))


def _print_table(
    cameras: list[CameraInfo], video: dict, ports: list[SerialPortInfo], show_all: bool
) -> None:
    out = sys.stdout
    print("Cameras", file=out)
    if not cameras:
        print("  none found (no /dev/video* nodes)", file=out)
    for cam in cameras:
        label = f"  {cam.path:<14} {cam.name or '-':<28}"
        if cam.opened:
            rate = f" @ {cam.fps:g} fps" if cam.fps else ""
            size = f"{cam.width}x{cam.height}{rate} ({cam.backend})"
            print(f"{label} {size}  uri: {cam.uri}", file=out)
        else:
            print(f"{label} cannot capture (busy, no permission, or a metadata node)", file=out)

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    print(
        f"OpenCV {video['version']}: FFMPEG {yes(video['ffmpeg'])} (files, rtsp://), "
        f"V4L2 {yes(video['v4l2'])}, GStreamer {yes(video['gstreamer'])} (csi://)",
        file=out,
    )
    if not video["gstreamer"]:
        print("  csi:// needs OpenCV built with GStreamer: see README 'On a Jetson'", file=out)

    shown = [p for p in ports if show_all or not p.legacy]
    hidden = len(ports) - len(shown)
    print("Serial ports", file=out)
    if not shown:
        print("  none found", file=out)
    for port in shown:
        detail = "  ".join(x for x in (port.description, port.hwid) if x) or "-"
        print(f"  {port.device:<14} {detail}", file=out)
    if hidden:
        print(
            f"  ({hidden} legacy ttyS port(s) without hardware info hidden; --all shows them)",
            file=out,
        )


def run(args: argparse.Namespace) -> int:
    """Print the devices found; always exit 0 (finding none is an answer, not a failure)."""
    dev_dir = getattr(args, "dev_dir", "/dev")
    cameras = find_cameras(dev_dir, probe=not args.no_probe)
    video = opencv_video_support()
    ports = find_serial_ports(dev_dir, use_pyserial=Path(dev_dir) == Path("/dev"))
    if args.json:
        shown = [p for p in ports if args.all or not p.legacy]
        report = {
            "cameras": [asdict(c) for c in cameras],
            "opencv": video,
            "serial_ports": [asdict(p) for p in shown],
            "hidden_serial_ports": len(ports) - len(shown),
        }
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_table(cameras, video, ports, args.all)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``devices`` to the ``emofuse`` command line."""
    parser = subparsers.add_parser(
        "devices",
        help="list cameras and serial ports",
        description="List cameras (/dev/video*), what OpenCV can open (FFMPEG, V4L2, "
        "GStreamer for csi://) and serial ports.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--all", action="store_true", help="also show legacy ttyS ports")
    parser.add_argument(
        "--no-probe", action="store_true", help="list camera nodes without opening them"
    )
    parser.add_argument("--dev-dir", default="/dev", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)
