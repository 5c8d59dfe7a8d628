"""Read a recording back: :func:`open_recording` opens an emofuse recording folder (this
module) or a PhysRecorder folder (:mod:`.importers`) as a :class:`~.replay.Recording`.

Every check the format allows is made, and small damage costs only what it damaged:

* a sensor record is used when its magic, length and CRC-32 check out; after a damaged
  stretch the reader resynchronises on the next intact record, and a damaged header line of
  a sensor file costs the header only (the manifest describes the stream);
* a damaged or out-of-order frames.csv row costs its frame only (rows are keyed by their
  frame number, not by their position);
* a frame whose decoded pixels do not match the CRC-32 in its row is not delivered;
* a missing or undecodable segment costs its frames.

Each skip is a line in :attr:`Recording.damage`, a count in :attr:`Recording.skips` and a
logged warning.
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from firmware_bridge.cameras.files import open_video_file
from firmware_bridge.errors import BadInputError
from firmware_bridge.recording.format import (
    FRAMES_CSV,
    MANIFEST,
    SEGMENT_RE,
    SENSOR_DIR,
    SENSOR_MAGIC_LINE,
    VIDEO_DIR,
    FrameRows,
    check_manifest,
    decode_body,
    frame_crc32,
    next_intact_record,
    read_frames_csv,
    scan_records,
)
from firmware_bridge.recording.importers import TIMESTAMPS_CSV, PhysRecorderRecording, phys_video
from firmware_bridge.recording.replay import Recording
from firmware_bridge.types import SensorChunk

log = logging.getLogger(__name__)

#: Failed reads in a row after which a segment is taken to have ended.
_MAX_READ_FAILS = 3
#: Damage lines logged one by one when a recording opens; the rest are counted in one line.
_LOG_LINES = 20


class EmofuseRecording(Recording):
    """A folder written by :class:`~firmware_bridge.recording.writer.Recorder`."""

    def __init__(self, path: Path, manifest: dict):
        super().__init__()
        self.path = path
        self.manifest = manifest
        self.closed = bool(manifest.get("closed"))
        self.start_ns = int(manifest["start"]["monotonic_ns"])
        self.start_unix_ns = int(manifest["start"]["unix_ns"])
        if not self.closed:
            self._report("manifest not closed: the recorder stopped without closing "
                         "(killed or crashed); read up to its last write", warn=False)
        self._index_lock = threading.Lock()
        self._load_sensors()
        self._load_video()

    # -- sensors ---------------------------------------------------------------------------
    def _load_sensors(self) -> None:
        # key -> (file, header without private keys, offset of the first record or None:
        # the header is damaged, so the records start at the first intact one).
        self._stream_files: dict[str, tuple[Path, dict, int | None]] = {}
        listed = self.manifest.get("streams") or {}
        sdir = self.path / SENSOR_DIR
        for p in sorted(sdir.glob("*.bin")) if sdir.is_dir() else []:
            opened = self._read_sensor_header(p, listed)
            if opened is not None:
                header, offset = opened
                self._stream_files[str(header.get("key") or p.stem)] = (p, header, offset)
        for key, entry in listed.items():
            if key not in self._stream_files:
                self._report(f"stream {key!r}: file {entry.get('file') if isinstance(entry, dict) else entry} "
                             f"is missing", warn=False)
        self._index: dict[str, list[tuple[int, int]]] = {}

    def _read_sensor_header(self, p: Path, listed: dict) -> tuple[dict, int | None] | None:
        try:
            with p.open("rb") as fh:
                magic = fh.read(len(SENSOR_MAGIC_LINE))
                line = fh.readline(1 << 16)
        except OSError as exc:
            self._report(f"{p.name}: unreadable ({exc.strerror or exc})", warn=False)
            return None
        header = None
        if magic == SENSOR_MAGIC_LINE and line.endswith(b"\n"):
            try:
                header = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                header = None
        if isinstance(header, dict):
            return header, len(SENSOR_MAGIC_LINE) + len(line)
        # A damaged header line: the records carry their own checks, so read on from the
        # first intact one; the manifest says what the stream is.
        rel = f"{SENSOR_DIR}/{p.name}"
        entry = next(({"key": k, **v} for k, v in listed.items()
                      if isinstance(v, dict) and v.get("file") == rel), None)
        if entry is None and not self._has_intact_record(p):
            self._report(f"{p.name}: not an emofuse sensor file (bad header, no intact "
                         f"record); skipped", warn=False)
            return None
        self._report(f"{rel}: header line damaged; the stream is read from its first intact "
                     f"record{'' if entry else ' and named after the file'}", warn=False, headers=1)
        return {k: v for k, v in (entry or {"key": p.stem, "stream": p.stem}).items()}, None

    @staticmethod
    def _has_intact_record(p: Path) -> bool:
        with p.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return False
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return next_intact_record(buf, 0) >= 0

    @property
    def streams(self) -> list[str]:
        return sorted(self._stream_files)

    def _map(self, stream: str) -> mmap.mmap | None:
        path = self._stream_files[stream][0]
        with path.open("rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                return None
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)

    def _records(self, stream: str) -> list[tuple[int, int]]:
        with self._index_lock:
            if stream not in self._index:
                good: list[tuple[int, int]] = []
                stretches: list = []
                buf = self._map(stream)
                if buf is not None:
                    try:
                        start = self._stream_files[stream][2]
                        if start is None:
                            start = next_intact_record(buf, 0)
                        if start >= 0:
                            good, stretches = scan_records(buf, start)
                            for _, n_bytes, line in stretches:
                                self._report(f"stream {stream!r}: {line}", records=1,
                                             record_bytes=n_bytes)
                    finally:
                        buf.close()
                self._index[stream] = good
                self._check_total(stream, len(good), len(stretches))
            return self._index[stream]

    def _check_total(self, stream: str, n_read: int, n_stretches: int) -> None:
        """A closed recording's manifest counts each stream's chunks: fewer intact ones means
        records were lost, even where the file was cut exactly between two records."""
        entry = (self.manifest.get("streams") or {}).get(stream)
        listed = entry.get("chunks") if isinstance(entry, dict) else None
        if isinstance(listed, int) and not isinstance(listed, bool) and listed > n_read:
            self._report(f"stream {stream!r}: {listed - n_read} of the {listed} records the "
                         f"manifest lists are missing", records=max(0, listed - n_read - n_stretches))

    def _iter_stream(self, stream: str) -> Iterator[SensorChunk]:
        records = self._records(stream)
        if not records:
            return
        path, header, _ = self._stream_files[stream]
        buf = self._map(stream)
        source = str(header.get("source", ""))
        try:
            for at, length in records:
                try:
                    chunk = decode_body(buf[at:at + length], stream, source)
                except (ValueError, UnicodeDecodeError, struct.error) as exc:
                    self._report(f"stream {stream!r}: record at offset {at} undecodable ({exc}); "
                                 f"skipped", records=1)
                    continue
                yield chunk
        finally:
            buf.close()

    def stream_info(self, stream: str) -> dict:
        """What the recording says about a stream: the sensor file header merged with the
        manifest entry (``stream``, ``source``, ``fs_hz``, ``units``, ``channels``...).

        Raises:
            BadInputError: no such stream.
        """
        if stream not in self._stream_files:
            raise BadInputError(f"{self.path}: no stream {stream!r}; streams: {', '.join(self.streams) or 'none'}")
        info = dict(self._stream_files[stream][1])
        entry = (self.manifest.get("streams") or {}).get(stream)
        info.update(entry if isinstance(entry, dict) else {})
        info["n_chunks"] = len(self._records(stream))
        return info

    # -- video -----------------------------------------------------------------------------
    def _load_video(self) -> None:
        vdir = self.path / VIDEO_DIR
        csv_path = self.path / FRAMES_CSV
        self._segments: list[tuple[int, int, Path]] = []
        self._rows = FrameRows.empty()
        self.n_frames = 0
        if not csv_path.is_file():
            if self.manifest.get("camera"):
                self._report(f"{FRAMES_CSV} is missing: no frames can be read", warn=False)
            return
        self._rows, lines, n_bad = read_frames_csv(csv_path, int(self.manifest["format_version"]))
        self.skips.add(rows=n_bad)
        for line in lines:
            self._report(line, warn=False)
        listed = (self.manifest.get("camera") or {}).get("frames")
        n_listed = int(self._rows.frame[-1]) + 1 if len(self._rows.frame) else 0
        if isinstance(listed, int) and not isinstance(listed, bool) and listed > n_listed:
            # A cut exactly between two rows leaves no torn row: the manifest's count shows it.
            self._report(f"{FRAMES_CSV}: rows {n_listed}-{listed - 1} of the {listed} the manifest "
                         f"lists are missing", warn=False,
                         rows=max(0, listed - len(self._rows.frame) - n_bad))
        for p in sorted(vdir.iterdir()):
            m = SEGMENT_RE.match(p.name)
            if m:
                self._segments.append((int(m.group(1)), int(m.group(2)), p))
            elif ".part." in p.name:
                self._report(f"{VIDEO_DIR}/{p.name}: segment still being written when the "
                             f"recorder stopped; its frames are lost", warn=False)
        self._segments.sort()
        rows = self._rows.frame
        covered = np.zeros(len(rows), dtype=bool)
        expect = 0
        for first, n, _ in self._segments:
            if first > expect:
                self._frames_lost(expect, first, "no video segment holds them")
            expect = max(expect, first + n)
            inside = (rows >= first) & (rows < first + n)
            covered |= inside
            no_row = n - int(np.count_nonzero(inside))
            if no_row:
                self._report(f"{VIDEO_DIR}/seg_{first:08d}: {no_row} of its {n} frames have no "
                             f"usable row in {FRAMES_CSV}; they are skipped", warn=False,
                             frames=no_row)
        if len(rows) and rows[-1] >= expect:
            self._frames_lost(expect, int(rows[-1]) + 1,
                              f"listed in {FRAMES_CSV} but their video was not committed (lost tail)")
        self._covered = covered
        self.n_frames = int(np.count_nonzero(covered))

    def _frames_lost(self, lo: int, hi: int, why: str) -> None:
        """Report the frames in [lo, hi) that have rows but no video."""
        rows = self._rows.frame
        n = int(np.count_nonzero((rows >= lo) & (rows < hi)))
        if n:
            self._report(f"frames {lo}-{hi - 1}: {why}", warn=False, frames=n)

    @property
    def has_camera(self) -> bool:
        return bool(self._segments)

    def frame_times_ns(self) -> np.ndarray:
        """int64 (n_frames,) recorded ``t_ns`` of the frames that can be read, in order."""
        return self._rows.t_ns[self._covered] if self.n_frames else np.zeros(0, np.int64)

    def _iter_frames(self) -> Iterator[tuple[int, int, int, float, np.ndarray]]:
        rows = self._rows
        last = -1  # frame number of the last frame delivered
        for first, n, p in self._segments:
            lo, hi = (int(i) for i in np.searchsorted(rows.frame, [first, first + n]))
            if lo == hi:
                continue  # no row for any of its frames: reported at open
            try:
                cap = open_video_file(p)
            except BadInputError as exc:
                self._report(f"{VIDEO_DIR}/{p.name}: {exc}; its {hi - lo} frames are skipped",
                             frames=hi - lo)
                continue
            try:
                for r, image in self._decode_segment(cap, p, first, lo, hi):
                    frame_no = int(rows.frame[r])
                    lost, last = frame_no - last - 1, frame_no
                    yield (int(rows.t_ns[r]), int(rows.index[r]), int(rows.dropped[r]) + lost,
                           float(rows.gap_s[r]), image)
            finally:
                cap.release()

    def _decode_segment(self, cap, p: Path, first: int, lo: int, hi: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(row, image)`` for the frames of one segment that decode intact.

        Rows ``lo:hi`` of the frames table belong to the segment. With checksums (lossless
        codecs, format 2) each decoded image is matched to its row by its CRC-32, so frames
        the decoder drops, repeats or conceals after damage cost only themselves, and reading
        goes on after a failed read (FFmpeg resynchronises on the next intact packet).
        Without checksums frames are matched by position and a failed read ends the segment.
        """
        rows = self._rows
        crcs = rows.crc[lo:hi]
        checked = bool(np.all(crcs >= 0))
        k = lo  # the row expected next
        fails = 0
        pos = first  # frame number the decoder is at, when frames are matched by position
        while k < hi:
            try:
                ok, image = cap.read()
            except cv2.error:
                ok, image = False, None
            if not ok or image is None:
                fails += 1
                if checked and fails < _MAX_READ_FAILS:
                    continue
                self._report(f"{VIDEO_DIR}/{p.name}: decoding stopped before frame "
                             f"{int(rows.frame[k])}; {hi - k} frames of the segment are skipped",
                             frames=hi - k)
                return
            fails = 0
            if not checked:
                if rows.frame[k] == pos:
                    yield k, image
                    k += 1
                pos += 1  # a frame whose row was damaged is decoded and dropped
                continue
            crc = frame_crc32(image)
            match = np.flatnonzero(crcs[k - lo:] == crc)
            if match.size:
                m = k + int(match[0])
                if m > k:
                    self._report(f"{VIDEO_DIR}/{p.name}: frames {int(rows.frame[k])}-"
                                 f"{int(rows.frame[m - 1])} did not decode; skipped", frames=m - k)
                yield m, image
                k = m + 1
                pos = int(rows.frame[m]) + 1
            elif rows.frame[k] != pos:
                pos += 1  # a frame whose row was damaged (reported at open)
            else:
                self._report(f"{VIDEO_DIR}/{p.name}: frame {pos} decodes to pixels whose CRC-32 "
                             f"does not match {FRAMES_CSV}; skipped", frames=1, checksum=1)
                k += 1
                pos += 1

    def _first_t_ns(self) -> int:
        firsts = []
        if len(self._rows.t_ns):
            firsts.append(int(self._rows.t_ns[0]))
        for s in self.streams:
            for chunk in self._iter_stream(s):
                firsts.append(int(chunk.t0_ns))
                break
        return min(firsts) if firsts else self.start_ns


def is_recording(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder :func:`open_recording` can open (it has a manifest.json,
    or it is a PhysRecorder folder: a video beside ``frames_timestamp.csv``)."""
    p = Path(path)
    return p.is_dir() and ((p / MANIFEST).is_file() or phys_video(p) is not None)


def open_recording(path: str | os.PathLike) -> Recording:
    """Open a recording folder for replay.

    Accepts a folder written by :class:`~firmware_bridge.recording.Recorder` (closed, or left
    by a recorder that died: read up to its last write) or a PhysRecorder folder (video +
    ``frames_timestamp.csv`` + ``BVP.csv``). Damage found on opening is logged as warnings
    (the first 20 lines, then a count); damage found while reading is logged when found.

    Args:
        path: the folder.

    Returns:
        A :class:`~.replay.Recording`: ``.camera()``, ``.sensor(key)``, ``.sensors()``,
        ``.manifest``, ``.streams``, ``.damage``, ``.skips``.

    Raises:
        BadInputError: not a folder, not a recording (no manifest.json and not a PhysRecorder
            folder), a manifest that is not JSON, of another format or a newer version, an
            unreadable frames table, or a PhysRecorder ``frames_timestamp.csv`` with no
            usable row.
    """
    p = Path(path)
    if not p.is_dir():
        raise BadInputError(f"recording folder not found: {p}")
    mpath = p / MANIFEST
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise BadInputError(f"{mpath}: not a readable JSON manifest ({exc})") from None
        rec: Recording = EmofuseRecording(p, check_manifest(manifest, mpath))
    else:
        video = phys_video(p)
        if video is None:
            raise BadInputError(
                f"{p} is not a recording: no {MANIFEST} (an emofuse recording) and no video "
                f"beside {TIMESTAMPS_CSV} (a PhysRecorder folder)"
            )
        rec = PhysRecorderRecording(p, video)
    for line in rec.damage[:_LOG_LINES]:
        log.warning("%s: %s", p, line)
    if len(rec.damage) > _LOG_LINES:
        log.warning("%s: %d more damage lines (Recording.damage lists them)", p,
                    len(rec.damage) - _LOG_LINES)
    if rec.skips:
        log.warning("%s: %s", p, rec.skips.summary())
    return rec
