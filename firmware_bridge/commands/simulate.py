"""``emofuse simulate --pty``: a simulated sensor board on a pseudo-terminal.

Starts :class:`firmware_bridge.simdevice.SimulatedSensorBoard`, prints the stable port path and
the ``emofuse run --sensor serial://PATH`` command that reads it (any program that reads the
emofuse wire protocol from a serial port can open it too), then streams until Ctrl-C (exit 0) or ``--duration-s`` ends.
The recording loops. Line faults (bit flips, dropped bytes, garbage, pauses, unplugs) are
injected deterministically from ``--seed``; a summary of what was sent and injected is
printed at the end, to compare with the host's counters.
"""
from __future__ import annotations

import argparse
import shlex
import time

from firmware_bridge.errors import ConfigError, DeviceError
from firmware_bridge.simdevice import LineFaults, SimulatedSensorBoard, streams_from_spec


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``simulate`` to the ``emofuse`` command line."""
    p = subparsers.add_parser(
        "simulate",
        help="run a simulated sensor board on a pseudo-terminal",
        description="Play ECG, PPG and EDA (synthetic or recorded) as the emofuse wire protocol "
        "on a pseudo-terminal, with optional line faults, until Ctrl-C or --duration-s.",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--pty", action="store_true",
                      help="serve on a pseudo-terminal behind a stable link (the only mode so far)")
    p.add_argument("--source", default="synth",
                   help="what to play: synth (default), neurokit:FILE.csv or wfdb:RECORD")
    p.add_argument("--hr-bpm", type=float, default=72.0, help="heart rate of the synth source, bpm (default 72)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synth source and of the faults (default 0)")
    p.add_argument("--duration-s", type=float, default=None,
                   help="stop after this many seconds (default: run until Ctrl-C)")
    p.add_argument("--speed", type=float, default=1.0,
                   help="playback speed; announced rates scale with it (default 1)")
    p.add_argument("--block-s", type=float, default=0.02, help="seconds of samples per message (default 0.02)")
    p.add_argument("--drift-ppm", type=float, default=0.0, help="device clock rate error, ppm (default 0)")
    p.add_argument("--bit-flip-rate", type=float, default=0.0, help="per-byte probability of a flipped bit")
    p.add_argument("--drop-rate", type=float, default=0.0, help="per-byte probability of a lost byte")
    p.add_argument("--garbage-rate", type=float, default=0.0, help="per-packet probability of a noise burst")
    p.add_argument("--pause-every-s", type=float, default=None, help="pause sending this often, s")
    p.add_argument("--pause-s", type=float, default=0.5, help="length of each pause, s (default 0.5)")
    p.add_argument("--unplug-every-s", type=float, default=None, help="unplug this often, s")
    p.add_argument("--unplug-s", type=float, default=1.0, help="how long each unplug lasts, s (default 1)")
    p.add_argument("--reboot-on-replug", action="store_true",
                   help="the board reboots when plugged back in (clock and seq restart)")
    p.add_argument("--autostart", action="store_true", help="stream without waiting for a START command")
    p.add_argument("--link", default=None,
                   help="path of the stable link to the pseudo-terminal (default: in a new temp folder)")
    p.add_argument("--status-every-s", type=float, default=10.0,
                   help="print a status line this often, s (0: never; default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve the board until the duration ends (or Ctrl-C, which the dispatcher turns into 0).

    Raises:
        ConfigError: a bad flag value or source spec.
        BadInputError: an unreadable recording.
        DeviceError: no pseudo-terminal, or the board's thread failed.
    """
    if args.duration_s is not None and not args.duration_s > 0:
        raise ConfigError(f"--duration-s must be > 0, got {args.duration_s}")
    if not args.status_every_s >= 0:
        raise ConfigError(f"--status-every-s must be >= 0, got {args.status_every_s}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    faults = LineFaults(
        bit_flip_rate=args.bit_flip_rate, drop_rate=args.drop_rate, garbage_rate=args.garbage_rate,
        pause_every_s=args.pause_every_s, pause_s=args.pause_s,
        unplug_every_s=args.unplug_every_s, unplug_s=args.unplug_s, seed=args.seed,
    )
    streams = streams_from_spec(args.source, hr_bpm=args.hr_bpm, seed=args.seed)
    board = SimulatedSensorBoard(
        streams, speed=args.speed, block_s=args.block_s, drift_ppm=args.drift_ppm, loop=True,
        autostart=args.autostart, faults=faults, link_path=args.link,
        reboot_on_replug=args.reboot_on_replug, record_messages=False,
    )
    t_start = time.monotonic()
    try:
        described = ", ".join(f"{name} {s.fs_hz:g} Hz {s.units}" for name, s in board.streams.items())
        print(f"emofuse simulate: board on {board.path} (now {board.pty_path}): {described}")
        print(f"read it with: {run_command(board.path)}", flush=True)
        print("(or any program that reads the emofuse wire protocol from that port); Ctrl-C stops", flush=True)
        next_status = t_start + args.status_every_s if args.status_every_s > 0 else float("inf")
        while True:
            now = time.monotonic()
            if args.duration_s is not None and now - t_start >= args.duration_s:
                break
            if board.error is not None:
                raise DeviceError(f"simulated board failed: {board.error}")
            if now >= next_status:
                print(f"[{now - t_start:7.1f} s] {_status(board)}", flush=True)
                next_status += args.status_every_s
            time.sleep(0.05 if args.duration_s is None else min(0.05, max(0.0, args.duration_s - (now - t_start))))
    finally:
        board.close()
        print(f"emofuse simulate: stopped after {time.monotonic() - t_start:.1f} s: "
              f"{_status(board, with_plug=False)}", flush=True)
    return 0


def run_command(port) -> str:
    """The ``emofuse run`` command line that reads the board on ``port`` (with the simulated
    camera, so that it runs anywhere), shell-quoted."""
    return "emofuse run --camera sim:// --sensor " + shlex.quote(f"serial://{port}")


def _status(board, with_plug: bool = True) -> str:
    t = board.truth
    plug = ("plugged; " if board.plugged else "unplugged; ") if with_plug else ""
    return (f"{plug}messages {t.messages_made}, "
            f"written {t.frames_written}, damaged {t.frames_damaged}, bytes {t.bytes_written} "
            f"(flipped {t.bytes_flipped}, dropped {t.bytes_dropped}, garbage {t.garbage_bytes}), "
            f"lost unplugged {t.messages_lost_unplugged}, unplugs {t.unplugs}, pauses {t.pauses}")
