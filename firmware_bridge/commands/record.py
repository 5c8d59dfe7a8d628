"""``emofuse record``: write a camera and sensor streams to a recording folder while they stream.

::

    emofuse record --camera 0 --sensor serial:///dev/ttyUSB0 --out sessions/s01 --duration-s 300
    emofuse record --camera "sim://?seed=3&duration_s=20" --sensor "sim://?seed=3&duration_s=20" --out /tmp/demo

The folder (docs/RECORDING.md) holds lossless video segments, a per-frame timestamp table,
one append-only file per sensor stream and a manifest; it reads back with
``firmware_bridge.recording.open_recording`` or as ``replay://DIR``. A killed recorder
leaves a folder that reads up to its last write.

Stops at ``--duration-s``, when every source has ended, or on Ctrl-C / SIGTERM: the sources
are closed, the open video segment is finished, every file is closed and the manifest is
marked closed; the exit code is then 0. A source that fails mid-recording is reported and
the others go on; the exit code is then 2.

Finite sources (a video file, ``sim://``) are put on the host clock at the start of the
recording (``origin_ns`` = now) and played in real time: an item is taken no earlier than its
timestamp, as a live device delivers it. A simulated camera and simulated sensors given the
same seed are then the same subject on one clock.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from typing import Any

from firmware_bridge.cameras import SOURCES, open_camera, parse_camera_uri
from firmware_bridge.errors import ConfigError, EmofuseError
from firmware_bridge.recording import CODECS, Recorder
from firmware_bridge.sensors import SENSOR_SCHEMES, open_sensor, parse_sensor_uri

log = logging.getLogger(__name__)

_JOIN_S = 5.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``record`` to the ``emofuse`` command line."""
    p = subparsers.add_parser(
        "record",
        help="record a camera and sensors to a folder (lossless video, crash-safe)",
        description="Record a camera and sensor streams to a folder while they stream: lossless "
        "video in short segments, per-frame timestamps, append-only sensor files and a manifest. "
        "Ctrl-C stops cleanly.",
    )
    p.add_argument("--camera", default=None, metavar="URI",
                   help="camera URI: 0, /dev/video0, a video file, a folder, rtsp://..., csi://0, sim://?...")
    p.add_argument("--sensor", action="append", default=[], metavar="URI",
                   help="sensor URI (repeatable): serial:///dev/ttyUSB0?baud=921600, /dev/ttyACM0, "
                   "ble://AA:BB:CC:DD:EE:FF, lsl://NAME, lsl://?type=ECG, replay://DIR, sim://?...")
    p.add_argument("--out", required=True, metavar="DIR", help="recording folder (new, or empty)")
    p.add_argument("--duration-s", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C or every source ends)")
    p.add_argument("--codec", default="ffv1", choices=sorted(CODECS),
                   help="video codec: ffv1 (lossless, default), hfyu (lossless, less CPU, larger), "
                   "mjpg (lossy quality 95 fallback)")
    p.add_argument("--segment-s", type=float, default=2.0,
                   help="seconds per video segment; at most about this much video is lost if the "
                   "recorder is killed (default 2)")
    p.add_argument("--encoder-threads", type=int, default=2,
                   help="video segments encoded at once (default 2)")
    p.add_argument("--fsync-s", type=float, default=None,
                   help="also flush files to disk this often, s, against power loss (default: never)")
    p.add_argument("--status-every-s", type=float, default=10.0,
                   help="print a status line this often, s (0: never; default 10)")
    p.set_defaults(func=run)


def _camera_options(uri: str, origin_ns: int) -> tuple[dict[str, Any], bool]:
    """Options for a camera, and whether the recorder must pace it on the host clock.

    A finite source (file, folder, sim) gets ``origin_ns`` and is then paced here: each frame
    is taken no earlier than its ``t_ns`` on the host clock, as a live camera delivers it, so
    that it stays in step with live sensors whatever the start-up delay.
    """
    parsed = parse_camera_uri(uri)
    allowed = SOURCES[parsed.scheme].OPTIONS
    if "origin_ns" in allowed and "origin_ns" not in parsed.query:
        return {"origin_ns": origin_ns}, True
    return {}, False


def _sensor_options(uri: str, origin_ns: int) -> dict[str, Any]:
    parsed = parse_sensor_uri(uri)
    allowed = SENSOR_SCHEMES[parsed.scheme].options
    opts: dict[str, Any] = {}
    if "realtime" in allowed and "realtime" not in parsed.query:
        opts["realtime"] = True
    # A simulation or a replay is put on this recording's clock, like a finite camera.
    if "origin_ns" in allowed and "origin_ns" not in parsed.query:
        opts["origin_ns"] = origin_ns
    return opts


class _SensorPump(threading.Thread):
    """Moves one sensor source's chunks into the recorder until stopped or the source ends."""

    def __init__(self, uri: str, source: Any, recorder: Any, stop: threading.Event):
        super().__init__(name=f"record-{uri}", daemon=True)
        self.uri = uri
        self.source = source
        self.recorder = recorder
        self.stop_event = stop
        self.error: BaseException | None = None
        self.chunks = 0

    def run(self) -> None:
        try:
            for chunk in self.source:
                if self.stop_event.is_set():
                    break
                self.recorder.write_chunk(chunk)
                self.chunks += 1
        except EmofuseError as exc:
            if not self.stop_event.is_set():
                self.error = exc
                log.error("sensor %s stopped: %s", self.uri, exc)
        except BaseException as exc:  # noqa: BLE001 - a bug: reported with its traceback
            self.error = exc
            log.exception("sensor %s failed", self.uri)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Record until the duration ends, every source ends, or Ctrl-C / SIGTERM.

    Returns:
        0 when every source recorded without error (Ctrl-C included), 2 when a source failed
        mid-recording (the recording is still closed cleanly).

    Raises:
        ConfigError: no source, bad flag values, an unusable folder or URI.
        DeviceError / BadInputError / MissingDependencyError: a source cannot be opened.
    """
    if args.camera is None and not args.sensor:
        raise ConfigError("nothing to record: give --camera and/or --sensor")
    if args.duration_s is not None and not args.duration_s > 0:
        raise ConfigError(f"--duration-s must be > 0, got {args.duration_s}")
    if not args.status_every_s >= 0:
        raise ConfigError(f"--status-every-s must be >= 0, got {args.status_every_s}")

    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if in_main else None
    origin_ns = time.monotonic_ns()
    camera = None
    host_paced = False
    sensors: list[tuple[str, Any]] = []
    pumps: list[_SensorPump] = []
    recorder = None
    stop = threading.Event()
    camera_error: BaseException | None = None
    interrupted = False
    try:
        # Open everything before the recorder, so that a bad URI leaves no folder behind.
        if args.camera is not None:
            cam_opts, host_paced = _camera_options(args.camera, origin_ns)
            camera = open_camera(args.camera, **cam_opts)
        for uri in args.sensor:
            sensors.append((uri, open_sensor(uri, **_sensor_options(uri, origin_ns))))
        recorder = Recorder(
            args.out, codec=args.codec, segment_s=args.segment_s,
            fps=(camera.fps or None) if camera is not None else None,
            sources=([("camera", camera.uri)] if camera is not None else [])
            + [("sensor", uri) for uri, _ in sensors],
            encoder_threads=args.encoder_threads, fsync_s=args.fsync_s,
            info={"command": "emofuse record", "camera": args.camera, "sensors": list(args.sensor),
                  "duration_s": args.duration_s},
        )
        print(f"emofuse record: recording to {args.out} ({args.codec}); Ctrl-C stops", flush=True)
        for uri, src in sensors:
            pump = _SensorPump(uri, src, recorder, stop)
            pumps.append(pump)
            pump.start()
        t_start = time.monotonic()
        deadline = None if args.duration_s is None else t_start + args.duration_s
        next_status = t_start + args.status_every_s if args.status_every_s > 0 else float("inf")
        if camera is not None:
            while True:
                try:
                    frame = next(camera)
                except StopIteration:
                    break
                except EmofuseError as exc:  # the camera failed; the sensors go on
                    camera_error = exc
                    log.error("camera %s stopped: %s", camera.uri, exc)
                    break
                if host_paced:
                    wait_ns = frame.t_ns - time.monotonic_ns()
                    if wait_ns > 0:
                        time.sleep(wait_ns / 1e9)
                recorder.write_frame(frame)
                now = time.monotonic()
                if now >= next_status:
                    print(f"[{now - t_start:7.1f} s] {_status(recorder)}", flush=True)
                    next_status += args.status_every_s
                if deadline is not None and now >= deadline:
                    break
        # Without a camera (or after a finite one ended) wait for the sensors.
        while any(p.is_alive() for p in pumps):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now >= next_status:
                print(f"[{now - t_start:7.1f} s] {_status(recorder)}", flush=True)
                next_status += args.status_every_s
            wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - now))
            time.sleep(wait)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short: the manifest must get closed.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stop.set()
            if camera is not None:
                camera.close()
            for _, src in sensors:
                try:
                    src.close()
                except EmofuseError as exc:
                    log.warning("closing a sensor: %s", exc)
            for p in pumps:
                p.join(timeout=_JOIN_S)
                if p.is_alive():
                    log.warning("sensor %s did not stop within %g s; its last chunks are not recorded",
                                p.uri, _JOIN_S)
            if recorder is not None:
                recorder.close()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, old_term)
    why = "interrupted" if interrupted else "done"
    if recorder is None:  # stopped while the sources were still opening
        print(f"emofuse record: {why} before recording started; nothing written", flush=True)
        return 0
    print(f"emofuse record: {why}: {args.out}: {_status(recorder)}", flush=True)
    failed = [f"camera {camera.uri}: {camera_error}"] if camera_error is not None else []
    failed += [f"sensor {p.uri}: {p.error}" for p in pumps if p.error is not None]
    for line in failed:
        print(f"emofuse record: error: {line}", file=sys.stderr)
    return 2 if failed else 0


def _status(recorder: Any) -> str:
    s = recorder.stats()
    streams = ", ".join(f"{k} {v['samples']} samples" for k, v in sorted(s["streams"].items()))
    return f"{s['frames']} frames in {s['segments']} segments; {streams or 'no sensor data'}"
