"""Recordings made by other tools, opened as a :class:`~.replay.Recording`.

PhysRecorder, an open-source recorder of face video and physiology, writes a folder with a video,
``frames_timestamp.csv`` (``frame,timestamp``, UNIX seconds, one row per frame) and sensor
CSVs such as ``BVP.csv`` (``timestamp,bvp``, UNIX seconds, about 20 Hz from a finger
oximeter). A damaged row of any of these CSVs (not numbers, ``inf``, ``nan``, ``1e30``, a
time that repeats or goes backwards) costs that row only; it is skipped, counted and logged.
"""
from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from firmware_bridge.cameras import open_camera
from firmware_bridge.cameras.base import CameraSource
from firmware_bridge.cameras.files import (
    TIMESTAMPS_SIDECAR,
    check_clock,
    increasing_rows,
    parse_seconds_ns,
    read_frame_times,
)
from firmware_bridge.errors import BadInputError
from firmware_bridge.recording.format import iso_time
from firmware_bridge.recording.replay import Recording, _PacedCamera, _Pacer
from firmware_bridge.types import SensorChunk

log = logging.getLogger(__name__)

TIMESTAMPS_CSV = TIMESTAMPS_SIDECAR
VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov")


def read_timestamp_csv(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """A ``timestamp,<value>...`` CSV (PhysRecorder's ``BVP.csv``), damaged rows skipped.

    A row is skipped (and listed) when it does not have the header's number of fields, its
    time is not a finite number of seconds within int64 ns
    (:func:`~firmware_bridge.cameras.files.parse_seconds_ns`), a value is not a finite
    number, or its time repeats or goes backwards
    (:func:`~firmware_bridge.cameras.files.increasing_rows`).

    Args:
        path: the CSV file.

    Returns:
        ``(columns, t_unix_ns, values, skipped)``: the value column names, int64 (N,) UNIX
        ns (strictly increasing), float64 (N, C) values, one line per skipped row.

    Raises:
        BadInputError: unreadable, no ``timestamp,<value>...`` header, no usable row, or
            times that repeat or go backwards in at least half of the rows.
    """
    ts, vals, lines, skipped = [], [], [], []
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            header = [h.strip() for h in next(reader, [])]
            if len(header) < 2 or header[0].lower() != "timestamp":
                raise BadInputError(f"{path}: expected a header 'timestamp,<value>...', got {header}")
            for row_no, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                t_ns = parse_seconds_ns(row[0]) if len(row) == len(header) else None
                try:
                    values = [float(v) for v in row[1:]]
                except ValueError:
                    values = []
                if t_ns is None or len(values) != len(header) - 1 \
                        or not all(math.isfinite(v) for v in values):
                    skipped.append(f"{path.name}: line {row_no} is not {len(header)} finite numbers "
                                   f"(a time in seconds first): {','.join(row)[:60]!r}; row skipped")
                    continue
                ts.append(t_ns)
                vals.append(values)
                lines.append(row_no)
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except csv.Error as exc:
        raise BadInputError(f"{path}: not a CSV ({exc})") from None
    if not ts:
        raise BadInputError(f"{path}: no usable rows" + (f" ({len(skipped)} damaged)" if skipped else ""))
    t = np.asarray(ts, dtype=np.int64)
    keep = increasing_rows(np.arange(len(t)), t)
    skipped += check_clock(keep, t, np.asarray(lines), "time", path)
    x = np.asarray(vals, dtype=np.float64).reshape(len(ts), len(header) - 1)
    return header[1:], t[keep], x[keep], skipped


def phys_video(path: Path) -> Path | None:
    """The video of a PhysRecorder folder (beside ``frames_timestamp.csv``), or None."""
    if not (path / TIMESTAMPS_CSV).is_file():
        return None
    videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if len(videos) > 1:
        log.warning("%s: %d videos; using %s", path, len(videos), videos[0].name)
    return videos[0] if videos else None


class PhysRecorderRecording(Recording):
    """A PhysRecorder folder: a video, ``frames_timestamp.csv`` (``frame,timestamp`` UNIX s)
    and sensor CSVs such as ``BVP.csv`` (``timestamp,bvp`` UNIX s, ~20 Hz).

    Clock: the first timed frame (frame 0 unless its row is damaged) is at t = 0 ns; every
    other time is its UNIX time minus that frame's, so sensors and frames share one clock
    (exact to the ns: timestamps are parsed as decimals). Each CSV ``NAME.csv`` with a
    ``timestamp`` first column is a stream ``name`` (lower case); its samples come one per
    chunk (the device's timestamps are irregular, and a chunk's samples must be evenly
    spaced), with ``seq`` the row's position among the usable rows, ``fs_hz`` the rate from
    the median spacing and units ``"a.u."``. A frame whose timestamp row is damaged is not
    delivered; a sensor CSV that cannot be used at all is skipped (the video still plays).

    Raises:
        BadInputError: ``frames_timestamp.csv`` has no usable row, or its times repeat or go
            backwards in half of its rows.
    """

    def __init__(self, path: Path, video: Path):
        super().__init__()
        self.path = path
        self.video = video
        self.closed = True
        self.start_ns = 0
        table = read_frame_times(path / TIMESTAMPS_CSV)
        self.skips.add(rows=len(table.skipped),
                       frames=int(table.frame[-1]) + 1 - len(table.frame))
        for line in table.skipped:
            self._report(line, warn=False)
        self._frame_unix_ns = table.unix_ns
        self.t0_unix_ns = int(table.unix_ns[0])
        self._csv_streams: dict[str, tuple[Path, np.ndarray, np.ndarray, float]] = {}
        for p in sorted(path.glob("*.csv")):
            if p.name != TIMESTAMPS_CSV:
                self._add_stream(p)
        self.manifest = {
            "format": "physrecorder",
            "format_version": None,
            "closed": True,
            "start": {"unix_ns": self.t0_unix_ns, "monotonic_ns": 0, "iso": iso_time(self.t0_unix_ns)},
            "camera": {"source": str(video), "frames_file": TIMESTAMPS_CSV,
                       "frames": int(len(self._frame_unix_ns))},
            "streams": {k: {"file": v[0].name, "fs_hz": v[3], "units": "a.u.", "channels":
                            1 if v[2].ndim == 1 else int(v[2].shape[1]), "samples": int(len(v[1]))}
                        for k, v in self._csv_streams.items()},
            "files": sorted(p.name for p in path.iterdir() if p.is_file()),
        }

    def _add_stream(self, p: Path) -> None:
        try:
            _, t_unix, vals, skipped = read_timestamp_csv(p)
        except BadInputError as exc:
            self._report(f"{p.name}: {exc}; skipped", warn=False)
            return
        self.skips.add(rows=len(skipped))
        for line in skipped:
            self._report(line, warn=False)
        spacing = np.diff(t_unix)  # > 0: repeated times were skipped
        fs = float(1e9 / np.median(spacing)) if spacing.size else 0.0
        x = vals[:, 0] if vals.shape[1] == 1 else vals
        self._csv_streams[p.stem.lower()] = (p, t_unix - self.t0_unix_ns, x, fs)

    @property
    def streams(self) -> list[str]:
        return sorted(self._csv_streams)

    @property
    def has_camera(self) -> bool:
        return True

    def frame_times_ns(self) -> np.ndarray:
        """int64 (N,) times of the frames with a usable ``frames_timestamp.csv`` row, the
        first at 0, ns."""
        return self._frame_unix_ns - self.t0_unix_ns

    def _iter_stream(self, stream: str) -> Iterator[SensorChunk]:
        path, t_ns, x, fs = self._csv_streams[stream]
        source = str(path)
        for i in range(len(t_ns)):
            yield SensorChunk(stream=stream, fs_hz=fs, t0_ns=int(t_ns[i]), samples=x[i:i + 1].copy(),
                              units="a.u.", seq=i, source=source)

    def _first_t_ns(self) -> int:
        return min([0] + [int(v[1][0]) for v in self._csv_streams.values()])

    def _open_camera(self, realtime: bool, shift_ns: int, pacer: _Pacer) -> CameraSource:
        inner = open_camera(str(self.video), timestamps=str(self.path / TIMESTAMPS_CSV),
                            origin_ns=shift_ns)
        if not realtime:
            return inner
        return _PacedCamera(inner, pacer, shift_ns)
