"""Record a session while it streams, and read it back: "nothing lost".

A recording is a folder (format described for other tools in docs/RECORDING.md)::

    manifest.json            what was recorded; "closed": true once the recorder stopped cleanly
    video/frames.csv         one row per frame: frame,t_ns,index,dropped_before,gap_before_s
    video/seg_00000000_00060.mkv   lossless FFV1 segments, each closed after ~segment_s
    sensors/<stream>.bin     append-only binary chunk records, each with a length and a CRC32

Writing (:class:`Recorder`) is built so that a process killed at any moment (SIGKILL, power
kept) leaves a folder that reads back up to the last write:

* every frames.csv row and every sensor record is handed to the OS with one ``write`` call
  as soon as it is made (SIGKILL does not lose what the kernel already holds; ``fsync_s``
  adds protection against power loss at the cost of a disk flush now and then);
* video goes into short segments, each a complete file: a segment is encoded under a
  ``.part`` name and renamed to ``seg_<first frame>_<frame count>.<ext>`` once its writer is
  closed, so the rename is the commit and a killed recorder loses only the segments still
  being encoded (at most ``encoder_threads`` x ``segment_s`` seconds of frames, plus the
  queue), never a frame before them. An unfinished container cannot be read back: FFmpeg
  writes the headers only at close, so there is nothing to salvage in a ``.part`` file;
* the manifest is replaced atomically (write a temporary file, then ``os.replace``), so it
  is always either the previous or the new complete JSON.

Reading (:func:`open_recording`) checks every record (length and CRC32) and every CSV row,
reads cleanly up to any damage (a truncated last record, a torn CSV row, a missing segment),
resynchronises on the next intact sensor record after a damaged one, and lists what it found
in :attr:`Recording.damage`. A PhysRecorder folder (video + ``frames_timestamp.csv`` +
``BVP.csv``) opens as a recording too.

Video codec: lossless FFV1 by default. Lossy inter-frame codecs (H.264) smooth away the
sub-grey-level colour changes that carry the remote pulse (McDuff et al., "The impact of
video compression on remote cardiac pulse measurement using imaging photoplethysmography",
IEEE FG 2017), so the recorder offers only lossless codecs and, as a documented fallback,
intra-frame MJPEG at quality 95.
"""
from __future__ import annotations

import csv
import datetime as _dt
import heapq
import json
import logging
import mmap
import os
import platform
import queue
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.cameras.base import CameraOptions, CameraSource, CameraUri
from firmware_bridge.errors import BadInputError, ConfigError, DeviceError
from firmware_bridge.types import Frame, SensorChunk

log = logging.getLogger(__name__)

__all__ = [
    "CODECS",
    "FORMAT",
    "FORMAT_VERSION",
    "Recorder",
    "Recording",
    "RecordingCameraSource",
    "ReplaySensorSource",
    "VideoCodec",
    "decode_chunk_records",
    "encode_chunk_record",
    "is_recording",
    "open_recording",
]

FORMAT = "emofuse-recording"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VIDEO_DIR = "video"
FRAMES_CSV = "video/frames.csv"
SENSOR_DIR = "sensors"
FRAMES_HEADER = "frame,t_ns,index,dropped_before,gap_before_s"

#: First line of every sensor file; the second line is a JSON object describing the stream.
SENSOR_MAGIC_LINE = b"EMOFUSE-SENSOR 1\n"
#: Magic of every chunk record.
RECORD_MAGIC = b"EFR1"
# magic, body length, CRC32 of the body.
_PREFIX = struct.Struct("<4sII")
# seq, t0_ns, fs_hz, device_t0_us, n_samples, n_channels, flags, extra_len.
_FIXED = struct.Struct("<qqdqIHHI")
_NO_DEVICE_T = -(1 << 63)
_FLAG_2D = 0x0001
# A record body longer than this is taken as a damaged length field, not as data.
_MAX_BODY = 1 << 28

_SEGMENT_RE = re.compile(r"^seg_(\d{8,})_(\d{5,})(\.[A-Za-z0-9]+)$")
_SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")


# ---------------------------------------------------------------------------------------------
# Video codecs


@dataclass(frozen=True)
class VideoCodec:
    """How video segments are encoded.

    Attributes:
        name: registry key.
        fourcc: the four-character code given to OpenCV.
        suffix: container file suffix.
        backend: OpenCV videoio backend name (``"FFMPEG"`` or ``"CV_MJPEG"``).
        lossless: decoded frames are byte-equal to the recorded ones.
        quality: JPEG quality for lossy intra-frame codecs, else None.
        note: when to choose it.
    """

    name: str
    fourcc: str
    suffix: str
    backend: str
    lossless: bool
    quality: int | None = None
    note: str = ""


#: Codecs by name. Measured through :class:`Recorder` (2 encoder threads) on the 2-core
#: project machine, 640x480: real webcam frames (PhysRecorder clip): ffv1 61 fps written,
#: 123 kB/frame, 75 fps read; hfyu 450 fps, 331 kB/frame, 270 fps read. Synthetic frames with
#: per-pixel sensor noise (the worst case): ffv1 24 fps (below 30: choose hfyu there),
#: 339 kB/frame; hfyu 296 fps, 425 kB/frame; mjpg 134 fps, 70 kB/frame, mean absolute error
#: 1.5 grey levels.
CODECS: dict[str, VideoCodec] = {
    "ffv1": VideoCodec("ffv1", "FFV1", ".mkv", "FFMPEG", True,
                       note="lossless FFV1 (default): smallest lossless files; the most CPU"),
    "hfyu": VideoCodec("hfyu", "HFYU", ".mkv", "FFMPEG", True,
                       note="lossless HuffYUV: about 10x less CPU than FFV1, 25-50 % larger"),
    "mjpg": VideoCodec("mjpg", "MJPG", ".avi", "CV_MJPEG", False, quality=95,
                       note="intra-frame JPEG at quality 95: lossy fallback for slow disks"),
}


def _cv2():
    import cv2  # imported where used, like the camera sources do

    return cv2


def _backend_id(name: str) -> int:
    cv2 = _cv2()
    return {"FFMPEG": cv2.CAP_FFMPEG, "CV_MJPEG": cv2.CAP_OPENCV_MJPEG}[name]


# ---------------------------------------------------------------------------------------------
# Sensor chunk records


def _jsonable(value: Any) -> Any:
    """A JSON-friendly copy of chunk metadata (numpy scalars and arrays become lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def encode_chunk_record(chunk: SensorChunk) -> bytes:
    """One chunk as a self-checking binary record (layout in docs/RECORDING.md).

    Args:
        chunk: samples (N,) or (N, C) of real numbers (stored as float64 little-endian),
            ``t0_ns`` and ``seq`` integers.

    Returns:
        The record bytes: 12-byte prefix (magic ``EFR1``, body length, CRC32 of the body)
        followed by the body (fixed fields, samples, JSON with units and metadata).

    Raises:
        BadInputError: samples not (N,) or (N, C) real numbers, too many channels or samples,
            or non-integer ``t0_ns`` / ``seq``.
    """
    x = np.asarray(chunk.samples)
    if x.ndim not in (1, 2) or x.dtype.kind not in "biuf":
        raise BadInputError(f"chunk {chunk.stream!r}: samples must be real (N,) or (N, C), "
                            f"got {x.dtype} {x.shape}")
    n = x.shape[0]
    c = 1 if x.ndim == 1 else x.shape[1]
    if not 1 <= c <= 0xFFFF or n > 0xFFFFFFFF:
        raise BadInputError(f"chunk {chunk.stream!r}: {n} samples x {c} channels cannot be stored")
    for name in ("t0_ns", "seq"):
        v = getattr(chunk, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise BadInputError(f"chunk {chunk.stream!r}: {name} must be an int, got {v!r}")
    dev = _NO_DEVICE_T if chunk.device_t0_us is None else int(chunk.device_t0_us)
    extra: dict[str, Any] = {"units": chunk.units}
    if chunk.meta:
        extra["meta"] = _jsonable(chunk.meta)
    extra_b = json.dumps(extra, separators=(",", ":"), allow_nan=True).encode("utf-8")
    samples_b = np.ascontiguousarray(x, dtype="<f8").tobytes()
    body = _FIXED.pack(int(chunk.seq), int(chunk.t0_ns), float(chunk.fs_hz), dev, n, c,
                       _FLAG_2D if x.ndim == 2 else 0, len(extra_b)) + samples_b + extra_b
    return _PREFIX.pack(RECORD_MAGIC, len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes | memoryview, stream: str, source: str) -> SensorChunk:
    seq, t0_ns, fs_hz, dev, n, c, flags, extra_len = _FIXED.unpack_from(body, 0)
    n_bytes = n * c * 8
    if _FIXED.size + n_bytes + extra_len != len(body):
        raise ValueError("record fields disagree with its length")
    samples = np.frombuffer(body, dtype="<f8", count=n * c, offset=_FIXED.size).astype(np.float64)
    samples = samples.reshape(n, c) if flags & _FLAG_2D else samples
    extra = json.loads(bytes(body[_FIXED.size + n_bytes:]).decode("utf-8")) if extra_len else {}
    return SensorChunk(
        stream=stream, fs_hz=fs_hz, t0_ns=t0_ns, samples=samples,
        units=extra.get("units", "a.u."), seq=seq,
        device_t0_us=None if dev == _NO_DEVICE_T else dev, source=source,
        meta=extra.get("meta", {}),
    )


def _scan_records(buf, start: int) -> tuple[list[tuple[int, int]], list[str]]:
    """Offsets and lengths of the intact records in ``buf[start:]``, and what was damaged.

    A record is intact when its magic, length and CRC32 check out. After a damaged one the
    scan resumes at the next intact record (a torn tail has none and ends the scan).
    """
    good: list[tuple[int, int]] = []
    damage: list[str] = []
    size = len(buf)
    pos = start
    while pos < size:
        body_at = pos + _PREFIX.size
        ok = False
        if body_at <= size:
            magic, body_len, crc = _PREFIX.unpack_from(buf, pos)
            if magic == RECORD_MAGIC and body_len <= _MAX_BODY and body_at + body_len <= size:
                ok = zlib.crc32(buf[body_at:body_at + body_len]) == crc and body_len >= _FIXED.size
        if ok:
            good.append((body_at, body_len))
            pos = body_at + body_len
            continue
        nxt = pos + 1
        while True:
            nxt = buf.find(RECORD_MAGIC, nxt)
            if nxt < 0:
                break
            b_at = nxt + _PREFIX.size
            if b_at <= size:
                _, blen, bcrc = _PREFIX.unpack_from(buf, nxt)
                if blen <= _MAX_BODY and b_at + blen <= size and blen >= _FIXED.size \
                        and zlib.crc32(buf[b_at:b_at + blen]) == bcrc:
                    break
            nxt += 1
        if nxt < 0:
            damage.append(f"{size - pos} bytes at offset {pos} are a torn or damaged last "
                          f"record; ignored")
            break
        damage.append(f"{nxt - pos} damaged bytes at offset {pos} skipped")
        pos = nxt
    return good, damage


def decode_chunk_records(data: bytes, stream: str = "", source: str = "") -> tuple[list[SensorChunk], list[str]]:
    """Decode a run of chunk records (as :func:`encode_chunk_record` makes them).

    Args:
        data: concatenated records (no sensor-file header).
        stream: stream name to give the chunks.
        source: source URI to give the chunks.

    Returns:
        ``(chunks, damage)``: the intact chunks in order, and one line per damaged stretch.
    """
    good, damage = _scan_records(data, 0)
    out = []
    for at, length in good:
        try:
            out.append(_decode_body(memoryview(data)[at:at + length], stream, source))
        except (ValueError, UnicodeDecodeError, struct.error) as exc:
            damage.append(f"record at offset {at}: {exc}")
    return out, damage


# ---------------------------------------------------------------------------------------------
# Writing


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _atomic_write_json(path: Path, obj: dict, fsync: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    data = (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _iso(unix_ns: int) -> str:
    return _dt.datetime.fromtimestamp(unix_ns / 1e9, tz=_dt.timezone.utc).isoformat()


class _SensorFile:
    """One append-only sensor file: header at creation, then one record per write."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        head = SENSOR_MAGIC_LINE + json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n"
        _write_all(self.fd, head)
        self.lock = threading.Lock()
        self.chunks = 0
        self.samples = 0
        self.first_t_ns: int | None = None
        self.last_t_ns: int | None = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Segment:
    """One video segment being encoded by its own thread, committed by a rename."""

    def __init__(self, rec: "Recorder", first_frame: int, size: tuple[int, int], max_queue: int):
        self.rec = rec
        self.first = first_frame
        self.size = size  # (width, height)
        self.n_queued = 0
        self.t_first_ns: int | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.error: BaseException | None = None
        self.done = threading.Event()
        # FFmpeg picks the container from the suffix, so ".part" goes before it.
        self.part = rec.path / VIDEO_DIR / f"seg_{first_frame:08d}.part{rec.codec.suffix}"
        self.final: Path | None = None
        self.thread = threading.Thread(target=self._run, name=f"rec-seg-{first_frame}", daemon=True)
        self.thread.start()

    def put(self, image: np.ndarray) -> None:
        self.queue.put(image)
        self.n_queued += 1

    def finish(self) -> None:
        if not self.done.is_set():  # a failed encoder reads nothing more
            self.queue.put(None)

    def _run(self) -> None:
        cv2 = _cv2()
        codec = self.rec.codec
        writer = None
        n = 0
        try:
            params = [] if codec.quality is None else [cv2.VIDEOWRITER_PROP_QUALITY, codec.quality]
            writer = cv2.VideoWriter(str(self.part), _backend_id(codec.backend),
                                     cv2.VideoWriter_fourcc(*codec.fourcc), self.rec.fps, self.size, params)
            if not writer.isOpened():
                raise ConfigError(
                    f"OpenCV cannot write {codec.fourcc} video to {self.part.name} here; "
                    f"choose another codec ({', '.join(CODECS)})"
                )
            while True:
                image = self.queue.get()
                if image is None:
                    break
                writer.write(image)
                n += 1
            writer.release()
            writer = None
            final = self.rec.path / VIDEO_DIR / f"seg_{self.first:08d}_{n:05d}{codec.suffix}"
            if n:
                os.replace(self.part, final)
                self.final = final
            else:
                self.part.unlink(missing_ok=True)
        except BaseException as exc:  # noqa: BLE001 - reported to the recording thread
            self.error = exc
            # Drain so that a producer blocked on a full queue is released.
            try:
                while self.queue.get_nowait() is not None:
                    pass
            except queue.Empty:
                pass
        finally:
            if writer is not None:
                writer.release()
            self.rec._segment_done(self)
            self.done.set()


class Recorder:
    """Write a session (camera frames and sensor chunks) to a folder while it streams.

    Thread-safe: one thread may call :meth:`write_frame` while others call
    :meth:`write_chunk`. Frames are encoded by background threads (one per open segment, at
    most ``encoder_threads`` at once); when they fall behind, :meth:`write_frame` blocks
    (back-pressure: a live camera then drops frames and says so in ``Frame.dropped_before``;
    nothing is dropped here). Layout and durability: module docstring and docs/RECORDING.md.

    Args:
        out_dir: the recording folder; created, or an existing empty folder.
        codec: a key of :data:`CODECS` (``"ffv1"`` lossless by default).
        segment_s: a new video segment starts once a segment spans this many seconds of
            frame time, s (> 0). Smaller: less lost on a kill, more files.
        fps: nominal frame rate written into the segment headers, Hz (frame times come from
            frames.csv regardless); None uses 30.
        sources: ``(role, uri)`` pairs for the manifest, e.g. ``[("camera", "sim://"),
            ("sensor", "serial:///dev/ttyUSB0")]``; more with :meth:`add_source`.
        encoder_threads: segments encoded at once (>= 1); more keeps up with a slow codec
            on more cores.
        max_queue_frames: frames waiting for an encoder, per segment, before
            :meth:`write_frame` blocks (default: 2 segments' worth at ``fps``).
        fsync_s: also ``fsync`` every file at most this often, s (protects against power
            loss, not only a killed process); None never.
        info: extra JSON-serialisable facts for the manifest's ``"info"``.
        clock_ns: the host monotonic clock (for tests).

    Raises:
        ConfigError: unknown codec, bad setting, or ``out_dir`` exists and is not empty.
        DeviceError: the folder cannot be created or written.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        codec: str = "ffv1",
        segment_s: float = 2.0,
        fps: float | None = None,
        sources: Iterable[tuple[str, str]] = (),
        encoder_threads: int = 2,
        max_queue_frames: int | None = None,
        fsync_s: float | None = None,
        info: dict | None = None,
        clock_ns=time.monotonic_ns,
    ):
        if codec not in CODECS:
            raise ConfigError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
        if not (isinstance(segment_s, (int, float)) and np.isfinite(segment_s) and segment_s > 0):
            raise ConfigError(f"segment_s must be > 0, got {segment_s!r}")
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise ConfigError(f"fps must be > 0, got {fps!r}")
        if isinstance(encoder_threads, bool) or not isinstance(encoder_threads, int) or encoder_threads < 1:
            raise ConfigError(f"encoder_threads must be an integer >= 1, got {encoder_threads!r}")
        if fsync_s is not None and not (np.isfinite(fsync_s) and fsync_s >= 0):
            raise ConfigError(f"fsync_s must be >= 0 or None, got {fsync_s!r}")
        self.path = Path(out_dir)
        self.codec = CODECS[codec]
        self.segment_ns = int(round(segment_s * 1e9))
        self.fps = float(fps) if fps else 30.0
        self.encoder_threads = encoder_threads
        self.max_queue_frames = int(max_queue_frames) if max_queue_frames else \
            max(8, int(np.ceil(2 * segment_s * self.fps)))
        self.fsync_s = fsync_s
        self._clock_ns = clock_ns
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise ConfigError(f"recording folder {self.path} exists and is not empty; "
                              f"choose a new folder")
        try:
            (self.path / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
            (self.path / SENSOR_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"cannot create recording folder {self.path}: {exc.strerror or exc}") from exc

        self._lock = threading.RLock()  # manifest, stream registry, segment list
        self._frame_lock = threading.Lock()
        self._closed = False
        self._error: BaseException | None = None
        self._files: dict[tuple[str, str], _SensorFile] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._segment: _Segment | None = None
        self._open_segments: list[_Segment] = []
        self._segments_done: list[str] = []
        self._frames_fd = -1
        self.n_frames = 0
        self.encoder_waits = 0
        self._last_frame_t_ns: int | None = None
        self._camera: dict[str, Any] | None = None
        self._last_fsync = time.monotonic()

        # Read the two clocks back to back; the pair ties host monotonic times to UNIX time.
        self.start_monotonic_ns = int(clock_ns())
        self.start_unix_ns = time.time_ns()
        self._manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "closed": False,
            "start": {"unix_ns": self.start_unix_ns, "monotonic_ns": self.start_monotonic_ns,
                      "iso": _iso(self.start_unix_ns)},
            "end": None,
            "sources": [{"role": r, "uri": u} for r, u in sources],
            "camera": None,
            "streams": {},
            "files": [],
            "writer": {"module": __name__, "python": platform.python_version(),
                       "host": platform.node()},
            "info": dict(info or {}),
        }
        try:
            self._frames_fd = os.open(self.path / FRAMES_CSV, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            _write_all(self._frames_fd, (FRAMES_HEADER + "\n").encode())
            self._write_manifest()
        except OSError as exc:
            raise DeviceError(f"cannot write recording {self.path}: {exc.strerror or exc}") from exc
        log.info("recording to %s (%s, %g s segments)", self.path, self.codec.fourcc, segment_s)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def add_source(self, role: str, uri: str, **details: Any) -> None:
        """Name a source in the manifest's ``"sources"`` (role: ``"camera"`` or ``"sensor"``)."""
        with self._lock:
            self._manifest["sources"].append({"role": role, "uri": uri, **_jsonable(details)})
            self._write_manifest()

    # -- frames ----------------------------------------------------------------------------
    def write_frame(self, frame: Frame) -> None:
        """Append one camera frame: its row to frames.csv now, its image to the open segment.

        Args:
            frame: a :class:`Frame` with a uint8 BGR image (H, W, 3) and integer ``t_ns``.

        Raises:
            BadInputError: wrong image dtype or shape, or non-integer times.
            ConfigError: the codec cannot be written by this OpenCV (at the first frame).
            DeviceError: a write failed (disk full, folder removed), or the recorder is closed.
        """
        image = frame.image
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                or image.shape[2] != 3:
            raise BadInputError(f"frame {frame.index}: image must be uint8 (H, W, 3), got "
                                f"{getattr(image, 'dtype', type(image).__name__)} {np.shape(image)}")
        for name in ("t_ns", "index", "dropped_before"):
            v = getattr(frame, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise BadInputError(f"frame {frame.index}: {name} must be an int, got {v!r}")
        with self._frame_lock:
            self._check_open()
            size = (image.shape[1], image.shape[0])
            seg = self._segment
            if seg is not None and (seg.size != size or seg.error is not None or (
                    seg.t_first_ns is not None and int(frame.t_ns) - seg.t_first_ns >= self.segment_ns)):
                self._roll()
                seg = None
            if seg is None:
                seg = self._new_segment(size)
            row = (f"{self.n_frames},{int(frame.t_ns)},{int(frame.index)},{int(frame.dropped_before)},"
                   f"{float(frame.gap_before_s)!r}\n")
            try:
                _write_all(self._frames_fd, row.encode())
            except OSError as exc:
                raise DeviceError(f"cannot write {self.path / FRAMES_CSV}: {exc.strerror or exc}") from exc
            if seg.t_first_ns is None:
                seg.t_first_ns = int(frame.t_ns)
            if seg.queue.full():
                # Back-pressure reaches the camera: a live one will drop frames. Say so once.
                if self.encoder_waits == 0:
                    log.warning("%s: the %s encoder is slower than the camera; frames wait (a live "
                                "camera drops them). Try codec 'hfyu' (lossless, ~10x less CPU) or "
                                "more encoder_threads", self.path, self.codec.fourcc)
                self.encoder_waits += 1
            seg.put(np.ascontiguousarray(image))
            self.n_frames += 1
            self._last_frame_t_ns = int(frame.t_ns)
            if self._camera is None:
                self._camera_started(frame, size)
        self._maybe_fsync()

    def _camera_started(self, frame: Frame, size: tuple[int, int]) -> None:
        with self._lock:
            self._camera = {
                "source": frame.source,
                "codec": self.codec.name,
                "fourcc": self.codec.fourcc,
                "lossless": self.codec.lossless,
                "quality": self.codec.quality,
                "container": self.codec.suffix.lstrip("."),
                "segment_s": self.segment_ns / 1e9,
                "fps": self.fps,
                "width": size[0],
                "height": size[1],
                "frames_file": FRAMES_CSV,
                "segments_dir": VIDEO_DIR,
                "frames": None,
            }
            self._manifest["camera"] = self._camera
            self._write_manifest()

    def _new_segment(self, size: tuple[int, int]) -> _Segment:
        with self._lock:
            # Back-pressure: at most encoder_threads segments in flight.
            while len(self._open_segments) >= self.encoder_threads:
                oldest = self._open_segments[0]
                self._lock.release()
                try:
                    oldest.done.wait()
                finally:
                    self._lock.acquire()
                if oldest in self._open_segments:  # pragma: no cover - removed by _segment_done
                    self._open_segments.remove(oldest)
            self._raise_segment_errors()
            seg = _Segment(self, self.n_frames, size, self.max_queue_frames)
            self._open_segments.append(seg)
            self._segment = seg
            return seg

    def _roll(self) -> None:
        seg, self._segment = self._segment, None
        if seg is not None:
            seg.finish()

    def _segment_done(self, seg: _Segment) -> None:
        with self._lock:
            if seg in self._open_segments:
                self._open_segments.remove(seg)
            if seg.error is not None:
                if self._error is None:
                    self._error = seg.error
                log.error("video segment %s failed: %s", seg.part.name, seg.error)
            elif seg.final is not None:
                self._segments_done.append(f"{VIDEO_DIR}/{seg.final.name}")
                if not self._closed:
                    self._write_manifest()

    def _raise_segment_errors(self) -> None:
        err = self._error
        if err is None:
            return
        if isinstance(err, (ConfigError, DeviceError, BadInputError)):
            raise err
        if isinstance(err, OSError):
            raise DeviceError(f"writing video to {self.path}: {err.strerror or err}") from err
        raise DeviceError(f"writing video to {self.path} failed: {type(err).__name__}: {err}") from err

    # -- sensor chunks ---------------------------------------------------------------------
    def write_chunk(self, chunk: SensorChunk) -> None:
        """Append one sensor chunk to its stream's file (one ``write`` call).

        Streams are keyed by (``chunk.source``, ``chunk.stream``); the file is
        ``sensors/<stream>.bin``, with ``_2``, ``_3``... appended when another source already
        uses that stream name (the key is what :meth:`Recording.sensor` takes).

        Args:
            chunk: a :class:`SensorChunk` with (N,) or (N, C) real samples.

        Raises:
            BadInputError: samples that cannot be stored (see :func:`encode_chunk_record`).
            DeviceError: the write failed, or the recorder is closed.
        """
        record = encode_chunk_record(chunk)
        ident = (chunk.source, chunk.stream)
        f = self._files.get(ident)
        if f is None:
            f = self._open_stream(chunk)
        x = np.asarray(chunk.samples)
        t_last = int(chunk.t0_ns) + int(round((x.shape[0] - 1) * 1e9 / chunk.fs_hz)) \
            if x.shape[0] and chunk.fs_hz > 0 else int(chunk.t0_ns)
        with f.lock:
            if f.fd < 0:
                raise DeviceError(f"recording {self.path} is closed")
            try:
                _write_all(f.fd, record)
            except OSError as exc:
                raise DeviceError(f"cannot write {f.path}: {exc.strerror or exc}") from exc
            f.chunks += 1
            f.samples += x.shape[0]
            if f.first_t_ns is None:
                f.first_t_ns = int(chunk.t0_ns)
            f.last_t_ns = t_last
        entry = self._manifest["streams"][self._keys[ident]]
        if entry["fs_hz"] != float(chunk.fs_hz) or entry["units"] != chunk.units:
            with self._lock:  # a board told to change its rate: the manifest says the latest
                entry["fs_hz"], entry["units"] = float(chunk.fs_hz), chunk.units
        self._maybe_fsync()

    def _open_stream(self, chunk: SensorChunk) -> _SensorFile:
        with self._lock:
            self._check_open()
            ident = (chunk.source, chunk.stream)
            if ident in self._files:
                return self._files[ident]
            base = _SAFE_NAME_RE.sub("_", chunk.stream) or "stream"
            key, k = base, 1
            used = set(self._keys.values())
            while key in used:
                k += 1
                key = f"{base}_{k}"
            if key != chunk.stream:
                log.warning("stream %r from %s is recorded as %r", chunk.stream, chunk.source, key)
            x = np.asarray(chunk.samples)
            channels = 1 if x.ndim == 1 else int(x.shape[1])
            rel = f"{SENSOR_DIR}/{key}.bin"
            header = {"key": key, "stream": chunk.stream, "source": chunk.source,
                      "fs_hz": float(chunk.fs_hz), "units": chunk.units, "channels": channels,
                      "created_unix_ns": time.time_ns()}
            try:
                f = _SensorFile(self.path / rel, header)
            except OSError as exc:
                raise DeviceError(f"cannot create {self.path / rel}: {exc.strerror or exc}") from exc
            self._keys[ident] = key
            self._files[ident] = f
            self._manifest["streams"][key] = {
                "file": rel, "stream": chunk.stream, "source": chunk.source,
                "fs_hz": float(chunk.fs_hz), "units": chunk.units, "channels": channels,
            }
            self._write_manifest()
            return f

    # -- housekeeping ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(f"recording {self.path} is closed")
        self._raise_segment_errors()

    def _maybe_fsync(self) -> None:
        if self.fsync_s is None:
            return
        now = time.monotonic()
        if now - self._last_fsync < self.fsync_s:
            return
        self._last_fsync = now
        self._fsync_all()

    def _fsync_all(self) -> None:
        fds = [self._frames_fd] + [f.fd for f in list(self._files.values())]
        for fd in fds:
            if fd >= 0:
                try:
                    os.fsync(fd)
                except OSError:  # a closed or unsyncable descriptor: nothing to protect
                    pass

    def _write_manifest(self) -> None:
        with self._lock:
            m = self._manifest
            files = [MANIFEST, FRAMES_CSV] + sorted(self._segments_done) + \
                sorted(s["file"] for s in m["streams"].values())
            m["files"] = files
            _atomic_write_json(self.path / MANIFEST, m, fsync=self.fsync_s is not None)

    def stats(self) -> dict[str, Any]:
        """Counts so far: ``frames``, ``segments`` (committed), ``encoder_waits`` (frames that
        waited for a busy encoder), ``streams`` (key -> chunks, samples)."""
        with self._lock:
            return {
                "frames": self.n_frames,
                "segments": len(self._segments_done),
                "encoder_waits": self.encoder_waits,
                "streams": {self._keys[i]: {"chunks": f.chunks, "samples": f.samples}
                            for i, f in self._files.items()},
            }

    def close(self) -> None:
        """Finish the open segment, wait for the encoders, close every file and mark the
        manifest ``"closed": true``. Idempotent.

        Raises:
            DeviceError / ConfigError: an encoder failed during the recording (the manifest
                is still closed, with the error in ``"errors"``).
        """
        with self._frame_lock:
            if self._closed:
                return
            self._roll()
        with self._lock:
            pending = list(self._open_segments)
        for seg in pending:
            seg.thread.join()
        with self._frame_lock, self._lock:
            self._closed = True
            for f in self._files.values():
                with f.lock:
                    if self.fsync_s is not None and f.fd >= 0:
                        os.fsync(f.fd)
                    f.close()
            if self._frames_fd >= 0:
                if self.fsync_s is not None:
                    os.fsync(self._frames_fd)
                os.close(self._frames_fd)
                self._frames_fd = -1
            end_unix = time.time_ns()
            m = self._manifest
            m["closed"] = True
            m["end"] = {"unix_ns": end_unix, "monotonic_ns": int(self._clock_ns()), "iso": _iso(end_unix)}
            if self._camera is not None:
                self._camera["frames"] = self.n_frames
                self._camera["encoder_waits"] = self.encoder_waits
                self._camera["last_t_ns"] = self._last_frame_t_ns
            for ident, f in self._files.items():
                m["streams"][self._keys[ident]].update(
                    chunks=f.chunks, samples=f.samples, first_t_ns=f.first_t_ns, last_t_ns=f.last_t_ns)
            if self._error is not None:
                m["errors"] = [f"{type(self._error).__name__}: {self._error}"]
            self._write_manifest()
        log.info("recording %s closed: %d frames, %s", self.path, self.n_frames,
                 ", ".join(f"{k} {v['samples']} samples" for k, v in self.stats()["streams"].items()) or "no sensors")
        self._raise_segment_errors()


# ---------------------------------------------------------------------------------------------
# Reading


class _Pacer:
    """Real-time pacing shared by every source of one recording: recording time t maps to
    ``wall_zero + (t - t_zero)`` on the host monotonic clock, fixed at the first item paced,
    so a camera and sensors replayed together keep their relative timing."""

    def __init__(self, t_zero_ns: int):
        self.t_zero_ns = int(t_zero_ns)
        self._wall_zero: int | None = None
        self._lock = threading.Lock()

    def wait(self, t_ns: int) -> None:
        with self._lock:
            if self._wall_zero is None:
                self._wall_zero = time.monotonic_ns()
            due = self._wall_zero + int(t_ns) - self.t_zero_ns
        delay = due - time.monotonic_ns()
        if delay > 0:
            time.sleep(delay / 1e9)


class ReplaySensorSource:
    """Sensor chunks read back from a recording: an iterator of :class:`SensorChunk` with
    ``close()`` and context-manager use, like a live sensor source.

    Made by :meth:`Recording.sensor` and :meth:`Recording.sensors`; several streams are merged
    in the order their last samples were taken (as a live board delivers them; ties broken
    by stream name, then file order), so replays are deterministic.

    Attributes:
        source: ``"replay://<folder>"``.
        streams: the stream keys delivered.
        end_reason: why the iteration ended (None while running).
    """

    def __init__(self, recording: "Recording", streams: list[str], realtime: bool, shift_ns: int,
                 pacer: _Pacer | None):
        self.recording = recording
        self.streams = list(streams)
        self.source = f"replay://{recording.path}"
        self.realtime = bool(realtime)
        self.end_reason: str | None = None
        self._shift_ns = int(shift_ns)
        self._pacer = pacer
        iters = [self._keyed(s) for s in self.streams]
        self._it = heapq.merge(*iters) if len(iters) != 1 else iters[0]
        self._closed = False

    def _keyed(self, stream: str) -> Iterator[tuple[int, str, int, SensorChunk]]:
        # The position in the file breaks ties: seq may repeat (-1 for sources without one).
        for position, chunk in enumerate(self.recording._iter_stream(stream)):
            n = np.shape(chunk.samples)[0]
            t_last = chunk.t0_ns + (int(round((n - 1) * 1e9 / chunk.fs_hz)) if n and chunk.fs_hz > 0 else 0)
            yield (t_last, stream, position, chunk)

    def __iter__(self) -> "ReplaySensorSource":
        return self

    def __next__(self) -> SensorChunk:
        if self._closed:
            raise StopIteration
        try:
            t_last, _, _, chunk = next(self._it)
        except StopIteration:
            self.end_reason = "end of recording"
            self.close()
            raise
        if self.realtime and self._pacer is not None:
            self._pacer.wait(t_last)
        if self._shift_ns:
            chunk = SensorChunk(chunk.stream, chunk.fs_hz, chunk.t0_ns + self._shift_ns, chunk.samples,
                                chunk.units, chunk.seq, chunk.device_t0_us, chunk.source, chunk.meta)
        return chunk

    def read(self, timeout_s: float | None = None) -> SensorChunk | None:
        """The next chunk, or None at the end (``timeout_s`` is accepted for symmetry with
        live sources; a replay never waits except for real-time pacing)."""
        try:
            return next(self)
        except StopIteration:
            return None

    def close(self) -> None:
        """Stop; later ``next()`` raises StopIteration. Idempotent."""
        if not self._closed:
            self._closed = True
            if self.end_reason is None:
                self.end_reason = "closed"

    def __enter__(self) -> "ReplaySensorSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ReplaySensorSource {self.source} streams={self.streams}>"


@dataclass(frozen=True)
class _FrameRows:
    frame: np.ndarray
    t_ns: np.ndarray
    index: np.ndarray
    dropped: np.ndarray
    gap_s: np.ndarray


def _read_frames_csv(path: Path, damage: list[str]) -> _FrameRows:
    frames, ts, idx, drop, gap = [], [], [], [], []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = raw.split(b"\n")
    if not lines or lines[0].strip().decode("utf-8", "replace") != FRAMES_HEADER:
        raise BadInputError(f"{path}: not a frames table (expected the header '{FRAMES_HEADER}')")
    complete = raw.endswith(b"\n")
    body = lines[1:]
    if complete:
        body = body[:-1]  # the empty string after the final newline
    for k, line in enumerate(body):
        last = k == len(body) - 1
        parts = line.decode("utf-8", "replace").split(",")
        try:
            if (last and not complete) or len(parts) != 5:
                raise ValueError
            row = (int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]), float(parts[4]))
        except ValueError:
            damage.append(f"{FRAMES_CSV}: line {k + 2} is torn or damaged; frames from "
                          f"{len(frames)} on are not read")
            break
        if row[0] != len(frames):
            damage.append(f"{FRAMES_CSV}: line {k + 2} has frame {row[0]}, expected {len(frames)}; "
                          f"frames from {len(frames)} on are not read")
            break
        frames.append(row[0])
        ts.append(row[1])
        idx.append(row[2])
        drop.append(row[3])
        gap.append(row[4])
    return _FrameRows(np.asarray(frames, np.int64), np.asarray(ts, np.int64), np.asarray(idx, np.int64),
                      np.asarray(drop, np.int64), np.asarray(gap, np.float64))


class RecordingCameraSource(CameraSource):
    """The frames of a recording, with their recorded times, via the camera interface.

    Every frame is delivered in order with its recorded ``t_ns`` (shifted when the replay was
    asked to start at ``origin_ns``), ``index``, ``dropped_before`` and ``gap_before_s``;
    ``Frame.source`` is the recorded camera's URI. Frames of a missing or undecodable segment
    are skipped (their indices jump; :attr:`Recording.damage` says why). ``realtime=True``
    paces frames at their times (shared with the recording's sensor replays); the default
    delivers them as fast as they are read. Made by :meth:`Recording.camera`.
    """

    scheme = "replay"
    OPTIONS = frozenset({"realtime"})

    def __init__(self, recording: "EmofuseRecording", realtime: bool, shift_ns: int, pacer: _Pacer):
        display = f"replay://{recording.path}"
        super().__init__(CameraUri(display, "replay", str(recording.path), {}, display),
                         CameraOptions(realtime=bool(realtime)))
        cam = recording.manifest.get("camera") or {}
        self.fps = float(cam.get("fps") or 0.0)
        self.width = int(cam.get("width") or 0)
        self.height = int(cam.get("height") or 0)
        self.recorded_source = str(cam.get("source", ""))
        self.recording = recording
        self._shift_ns = int(shift_ns)
        self._pacer = pacer
        self._frames = recording._iter_frames()

    def _next_frame(self) -> Frame:
        try:
            row, image = next(self._frames)
        except StopIteration:
            self.end_reason = f"end of recording after {self.recording.n_frames} frames"
            self.close()
            raise
        rows = self.recording._rows
        t_ns = int(rows.t_ns[row])
        if self.options.realtime:
            self._pacer.wait(t_ns)
        return Frame(
            t_ns=t_ns + self._shift_ns,
            index=int(rows.index[row]),
            image=image,
            source=self.recorded_source,
            dropped_before=int(rows.dropped[row]),
            gap_before_s=float(rows.gap_s[row]),
        )

    def _release(self) -> None:
        self._frames.close()


class _PacedCamera(CameraSource):
    """A finite camera whose frames are paced by a recording's shared pacer."""

    OPTIONS = frozenset({"realtime"})

    def __init__(self, inner: CameraSource, pacer: _Pacer, shift_ns: int):
        super().__init__(CameraUri(inner.uri, inner.scheme, inner.uri, {}, inner.uri),
                         CameraOptions(realtime=True))
        self.scheme = inner.scheme
        self.fps, self.width, self.height = inner.fps, inner.width, inner.height
        self.inner = inner
        self._pacer = pacer
        self._shift_ns = shift_ns

    def _next_frame(self) -> Frame:
        try:
            frame = next(self.inner)
        except StopIteration:
            self.end_reason = self.inner.end_reason
            self.close()
            raise
        self._pacer.wait(frame.t_ns - self._shift_ns)
        return frame

    def _release(self) -> None:
        self.inner.close()


class Recording:
    """A recording opened for reading (base of both on-disk formats).

    Attributes:
        path: the folder.
        manifest: the manifest (for a PhysRecorder folder, one made up from its files).
        closed: True when the recorder stopped cleanly (False: it died; the recording still
            reads up to its last write).
        damage: one line per problem found (torn tail, damaged bytes, missing segment...);
            empty for an intact recording.
        start_ns: the time ``origin_ns`` of the replay methods maps to: the recording's start
            on its host monotonic clock (frame 0 for a PhysRecorder folder), ns.
    """

    path: Path
    manifest: dict
    closed: bool
    damage: list[str]
    start_ns: int

    def __init__(self) -> None:
        self._pacer: _Pacer | None = None

    # Implemented by the formats.
    @property
    def streams(self) -> list[str]:
        """Keys of the sensor streams, sorted."""
        raise NotImplementedError

    @property
    def has_camera(self) -> bool:
        """True when the recording holds video."""
        raise NotImplementedError

    def _iter_stream(self, stream: str) -> Iterator[SensorChunk]:
        raise NotImplementedError

    def _first_t_ns(self) -> int:
        raise NotImplementedError

    def _open_camera(self, realtime: bool, shift_ns: int, pacer: _Pacer):
        raise NotImplementedError

    # Shared.
    def _shift(self, origin_ns: int | None) -> int:
        if origin_ns is None:
            return 0
        if isinstance(origin_ns, bool) or not isinstance(origin_ns, (int, np.integer)):
            raise ConfigError(f"origin_ns must be an int or None, got {origin_ns!r}")
        return int(origin_ns) - self.start_ns

    def _get_pacer(self) -> _Pacer:
        if self._pacer is None:
            self._pacer = _Pacer(self._first_t_ns())
        return self._pacer

    def camera(self, realtime: bool = False, origin_ns: int | None = None):
        """The recorded frames as a camera source (an iterator of :class:`Frame`).

        Args:
            realtime: pace frames at their recorded times (with the sensors of this
                recording, if replayed too); False delivers them as fast as read,
                deterministically.
            origin_ns: put :attr:`start_ns` at this host time, ns (e.g.
                ``time.monotonic_ns()`` to mix a replay with live sources); None keeps the
                recorded times. Apply the same value to the sensors.

        Returns:
            A camera source: iterate it; ``close()`` it or use ``with``.

        Raises:
            BadInputError: the recording holds no video.
        """
        if not self.has_camera:
            raise BadInputError(f"{self.path}: the recording holds no video")
        return self._open_camera(realtime, self._shift(origin_ns), self._get_pacer())

    def sensor(self, stream: str, realtime: bool = False, origin_ns: int | None = None) -> ReplaySensorSource:
        """The chunks of one stream, with their recorded ``t0_ns``, ``seq``, units and meta.

        Args:
            stream: a key of :attr:`streams`.
            realtime, origin_ns: as for :meth:`camera`.

        Returns:
            A :class:`ReplaySensorSource`.

        Raises:
            BadInputError: no such stream (the message lists the streams).
        """
        return self.sensors([stream], realtime=realtime, origin_ns=origin_ns)

    def sensors(self, streams: Iterable[str] | None = None, realtime: bool = False,
                origin_ns: int | None = None) -> ReplaySensorSource:
        """The chunks of several streams (all by default), merged in time order.

        Args:
            streams: keys of :attr:`streams`; None for all.
            realtime, origin_ns: as for :meth:`camera`.

        Returns:
            A :class:`ReplaySensorSource`.

        Raises:
            BadInputError: an unknown stream, or the recording has no sensor streams.
        """
        names = self.streams if streams is None else list(streams)
        if isinstance(streams, str):
            names = [streams]
        unknown = [s for s in names if s not in self.streams]
        if unknown:
            raise BadInputError(f"{self.path}: no stream {', '.join(map(repr, unknown))}; "
                                f"streams: {', '.join(self.streams) or 'none'}")
        if not names:
            raise BadInputError(f"{self.path}: the recording holds no sensor streams")
        return ReplaySensorSource(self, names, realtime, self._shift(origin_ns), self._get_pacer())

    def read_stream(self, stream: str) -> tuple[np.ndarray, np.ndarray]:
        """All samples of one stream with their times, for offline use.

        Args:
            stream: a key of :attr:`streams`.

        Returns:
            ``(t_ns, samples)``: int64 (N,) host times (sample k of a chunk at
            ``t0_ns + k / fs_hz``; for an irregular stream, ``fs_hz`` 0, the chunk's
            ``meta["t_ns"]`` when it has one), float64 (N,) or (N, C) values.

        Raises:
            BadInputError: no such stream, or chunks of different channel counts.
        """
        ts, xs = [], []
        with self.sensor(stream) as src:
            for c in src:
                n = np.shape(c.samples)[0]
                per_sample = c.meta.get("t_ns") if isinstance(c.meta, dict) else None
                if c.fs_hz > 0:
                    ts.append(c.t0_ns + np.round(np.arange(n) * (1e9 / c.fs_hz)).astype(np.int64))
                elif per_sample is not None and len(per_sample) == n:
                    ts.append(np.asarray(per_sample, dtype=np.int64))  # irregular (LSL rate 0)
                else:
                    ts.append(np.full(n, c.t0_ns, dtype=np.int64))
                xs.append(np.asarray(c.samples, dtype=np.float64))
        if not xs:
            return np.zeros(0, np.int64), np.zeros(0)
        if len({x.shape[1:] for x in xs}) > 1:
            raise BadInputError(f"{self.path}: stream {stream!r} changes its channel count")
        return np.concatenate(ts), np.concatenate(xs)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "not closed (recorder died)"
        return f"<{type(self).__name__} {self.path} {state}, streams {self.streams}>"


class EmofuseRecording(Recording):
    """A folder written by :class:`Recorder` (see the module docstring)."""

    def __init__(self, path: Path, manifest: dict):
        super().__init__()
        self.path = path
        self.manifest = manifest
        self.closed = bool(manifest.get("closed"))
        self.damage: list[str] = []
        start = manifest.get("start") or {}
        try:
            self.start_ns = int(start["monotonic_ns"])
            self.start_unix_ns = int(start["unix_ns"])
        except (KeyError, TypeError, ValueError):
            raise BadInputError(f"{path / MANIFEST}: no start times (start.monotonic_ns, start.unix_ns)") from None
        if not self.closed:
            self.damage.append("manifest not closed: the recorder stopped without closing "
                               "(killed or crashed); read up to its last write")
        self._load_sensors()
        self._load_video()

    # -- sensors ---------------------------------------------------------------------------
    def _load_sensors(self) -> None:
        self._stream_files: dict[str, tuple[Path, dict]] = {}
        listed = {k: v for k, v in (self.manifest.get("streams") or {}).items()}
        found = sorted((self.path / SENSOR_DIR).glob("*.bin")) if (self.path / SENSOR_DIR).is_dir() else []
        for p in found:
            header = self._read_sensor_header(p)
            if header is None:
                continue
            key = str(header.get("key") or p.stem)
            self._stream_files[key] = (p, header)
        for key, entry in listed.items():
            if key not in self._stream_files:
                self.damage.append(f"stream {key!r}: file {entry.get('file')} is missing")
        self._index: dict[str, tuple[list[tuple[int, int]], int]] = {}

    def _read_sensor_header(self, p: Path) -> dict | None:
        try:
            with p.open("rb") as fh:
                magic = fh.read(len(SENSOR_MAGIC_LINE))
                line = fh.readline(1 << 16)
        except OSError as exc:
            self.damage.append(f"{p.name}: unreadable ({exc.strerror or exc})")
            return None
        if magic != SENSOR_MAGIC_LINE:
            self.damage.append(f"{p.name}: not an emofuse sensor file (bad first line); skipped")
            return None
        try:
            if not line.endswith(b"\n"):
                raise ValueError("torn")
            header = json.loads(line)
            if not isinstance(header, dict):
                raise ValueError("not an object")
        except ValueError:
            self.damage.append(f"{p.name}: header line torn or damaged; skipped")
            return None
        header["_data_offset"] = len(SENSOR_MAGIC_LINE) + len(line)
        return header

    @property
    def streams(self) -> list[str]:
        return sorted(self._stream_files)

    def _map(self, stream: str):
        path, header = self._stream_files[stream]
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return None, header
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ), header

    def _records(self, stream: str) -> list[tuple[int, int]]:
        if stream not in self._index:
            buf, header = self._map(stream)
            if buf is None:
                self._index[stream] = ([], 0)
            else:
                try:
                    good, damage = _scan_records(buf, header["_data_offset"])
                finally:
                    buf.close()
                self.damage.extend(f"stream {stream!r}: {d}" for d in damage)
                self._index[stream] = (good, 0)
        return self._index[stream][0]

    def _iter_stream(self, stream: str) -> Iterator[SensorChunk]:
        records = self._records(stream)
        if not records:
            return
        path, header = self._stream_files[stream]
        buf, _ = self._map(stream)
        source = str(header.get("source", ""))
        try:
            for at, length in records:
                try:
                    chunk = _decode_body(buf[at:at + length], stream, source)
                except (ValueError, UnicodeDecodeError, struct.error) as exc:
                    msg = f"stream {stream!r}: record at offset {at} undecodable ({exc}); skipped"
                    if msg not in self.damage:
                        self.damage.append(msg)
                        log.warning("%s: %s", self.path, msg)
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
        _, header = self._stream_files[stream]
        info = {k: v for k, v in header.items() if not k.startswith("_")}
        info.update((self.manifest.get("streams") or {}).get(stream, {}))
        info["n_chunks"] = len(self._records(stream))
        return info

    # -- video -----------------------------------------------------------------------------
    def _load_video(self) -> None:
        vdir = self.path / VIDEO_DIR
        csv_path = self.path / FRAMES_CSV
        self._segments: list[tuple[int, int, Path]] = []
        empty = _FrameRows(*(np.zeros(0, np.int64) for _ in range(4)), np.zeros(0))
        if not csv_path.is_file():
            if self.manifest.get("camera"):
                self.damage.append(f"{FRAMES_CSV} is missing: no frames can be read")
            self._rows = empty
            return
        self._rows = _read_frames_csv(csv_path, self.damage)
        for p in sorted(vdir.iterdir()):
            m = _SEGMENT_RE.match(p.name)
            if m:
                self._segments.append((int(m.group(1)), int(m.group(2)), p))
            elif ".part." in p.name:
                self.damage.append(f"{VIDEO_DIR}/{p.name}: segment still being written when the "
                                   f"recorder stopped; its frames are lost")
        self._segments.sort()
        expect = 0
        n_rows = len(self._rows.t_ns)
        for first, n, p in self._segments:
            if first > expect:
                self.damage.append(f"frames {expect}-{first - 1}: no video segment holds them")
            expect = max(expect, first + n)
        if n_rows > expect:
            self.damage.append(f"frames {expect}-{n_rows - 1}: listed in {FRAMES_CSV} but their "
                               f"video was not committed (lost tail)")
        self.n_frames = sum(max(0, min(first + n, n_rows) - first) for first, n, _ in self._segments)

    @property
    def has_camera(self) -> bool:
        return bool(self._segments)

    def frame_times_ns(self) -> np.ndarray:
        """int64 (n_frames,) recorded ``t_ns`` of the frames that can be read, in order."""
        n_rows = len(self._rows.t_ns)
        keep = np.zeros(n_rows, dtype=bool)
        for first, n, _ in self._segments:
            keep[first:min(first + n, n_rows)] = True
        return self._rows.t_ns[keep]

    def _iter_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        from firmware_bridge.cameras.files import open_video_file

        cv2 = _cv2()
        n_rows = len(self._rows.t_ns)
        for first, n, p in self._segments:
            if first >= n_rows:
                break
            try:
                cap = open_video_file(p)
            except BadInputError as exc:
                self.damage.append(f"{VIDEO_DIR}/{p.name}: {exc}; its {n} frames are skipped")
                log.warning("%s: %s", self.path, self.damage[-1])
                continue
            try:
                for j in range(min(n, n_rows - first)):
                    try:
                        ok, image = cap.read()
                    except cv2.error:
                        ok, image = False, None
                    if not ok or image is None:
                        self.damage.append(f"{VIDEO_DIR}/{p.name}: decoded {j} of {n} frames; the "
                                           f"rest are skipped")
                        log.warning("%s: %s", self.path, self.damage[-1])
                        break
                    yield first + j, image
            finally:
                cap.release()

    def _open_camera(self, realtime: bool, shift_ns: int, pacer: _Pacer):
        return RecordingCameraSource(self, realtime, shift_ns, pacer)

    def _first_t_ns(self) -> int:
        firsts = []
        if len(self._rows.t_ns):
            firsts.append(int(self._rows.t_ns[0]))
        for s in self.streams:
            for chunk in self._iter_stream(s):
                firsts.append(int(chunk.t0_ns))
                break
        return min(firsts) if firsts else self.start_ns


# -- PhysRecorder folders ------------------------------------------------------------------
_PHYS_TIMESTAMPS = "frames_timestamp.csv"
_VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov")


def _read_timestamp_csv(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A ``timestamp,<value>...`` CSV: column names, int64 UNIX ns, float64 values (N, C)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if len(header) < 2 or header[0].lower() != "timestamp":
            raise BadInputError(f"{path}: expected a header 'timestamp,<value>...', got {header}")
        ts, vals = [], []
        for row_no, row in enumerate(reader, start=2):
            if not row or not "".join(row).strip():
                continue
            try:
                if len(row) != len(header):
                    raise ValueError
                ts.append(int(Decimal(row[0].strip()) * 1_000_000_000))
                vals.append([float(v) for v in row[1:]])
            except (ValueError, InvalidOperation):
                raise BadInputError(f"{path}: line {row_no} is not {len(header)} numbers: {row}") from None
    t = np.asarray(ts, dtype=np.int64)
    if t.size and np.any(np.diff(t) < 0):
        raise BadInputError(f"{path}: timestamps go backwards")
    return header[1:], t, np.asarray(vals, dtype=np.float64).reshape(len(ts), len(header) - 1)


class PhysRecorderRecording(Recording):
    """A PhysRecorder folder: a video, ``frames_timestamp.csv`` (``frame,timestamp`` UNIX s)
    and sensor CSVs such as ``BVP.csv`` (``timestamp,bvp`` UNIX s, ~20 Hz).

    Clock: frame 0 is at t = 0 ns; every other time is its UNIX time minus frame 0's, so
    sensors and frames share one clock (exact to the ns: timestamps are parsed as decimals).
    Each CSV ``NAME.csv`` with a ``timestamp`` first column is a stream ``name`` (lower
    case); its samples come one per chunk (the device's timestamps are irregular, and a
    chunk's samples must be evenly spaced), with ``seq`` the row number, ``fs_hz`` the rate
    from the median spacing and units ``"a.u."``.
    """

    def __init__(self, path: Path, video: Path):
        super().__init__()
        from firmware_bridge.cameras.files import read_frame_timestamps

        self.path = path
        self.video = video
        self.closed = True
        self.damage = []
        self.start_ns = 0
        self._frame_unix_ns = read_frame_timestamps(path / _PHYS_TIMESTAMPS)
        self.t0_unix_ns = int(self._frame_unix_ns[0])
        self._csv_streams: dict[str, tuple[Path, np.ndarray, np.ndarray, float]] = {}
        for p in sorted(path.glob("*.csv")):
            if p.name == _PHYS_TIMESTAMPS:
                continue
            try:
                cols, t_unix, vals = _read_timestamp_csv(p)
            except BadInputError as exc:
                self.damage.append(f"{p.name}: {exc}; skipped")
                continue
            except (OSError, UnicodeDecodeError) as exc:
                self.damage.append(f"{p.name}: unreadable ({exc}); skipped")
                continue
            if t_unix.size == 0:
                continue
            spacing = np.diff(t_unix)
            fs = float(1e9 / np.median(spacing)) if spacing.size and np.median(spacing) > 0 else 0.0
            x = vals[:, 0] if vals.shape[1] == 1 else vals
            self._csv_streams[p.stem.lower()] = (p, t_unix - self.t0_unix_ns, x, fs)
        self.manifest = {
            "format": "physrecorder",
            "format_version": None,
            "closed": True,
            "start": {"unix_ns": self.t0_unix_ns, "monotonic_ns": 0, "iso": _iso(self.t0_unix_ns)},
            "camera": {"source": str(video), "frames_file": _PHYS_TIMESTAMPS,
                       "frames": int(len(self._frame_unix_ns))},
            "streams": {k: {"file": v[0].name, "fs_hz": v[3], "units": "a.u.", "channels":
                            1 if v[2].ndim == 1 else int(v[2].shape[1]), "samples": int(len(v[1]))}
                        for k, v in self._csv_streams.items()},
            "files": sorted(p.name for p in path.iterdir() if p.is_file()),
        }

    @property
    def streams(self) -> list[str]:
        return sorted(self._csv_streams)

    @property
    def has_camera(self) -> bool:
        return True

    def frame_times_ns(self) -> np.ndarray:
        """int64 (N,) frame times from ``frames_timestamp.csv``, frame 0 at 0, ns."""
        return self._frame_unix_ns - self.t0_unix_ns

    def _iter_stream(self, stream: str) -> Iterator[SensorChunk]:
        path, t_ns, x, fs = self._csv_streams[stream]
        source = str(path)
        for i in range(len(t_ns)):
            yield SensorChunk(stream=stream, fs_hz=fs, t0_ns=int(t_ns[i]), samples=x[i:i + 1].copy(),
                              units="a.u.", seq=i, source=source)

    def _first_t_ns(self) -> int:
        firsts = [0] + [int(v[1][0]) for v in self._csv_streams.values()]
        return min(firsts)

    def _open_camera(self, realtime: bool, shift_ns: int, pacer: _Pacer):
        from firmware_bridge.cameras import open_camera

        inner = open_camera(str(self.video), timestamps=str(self.path / _PHYS_TIMESTAMPS),
                            origin_ns=shift_ns)
        if not realtime:
            return inner
        return _PacedCamera(inner, pacer, shift_ns)


# -- opening -------------------------------------------------------------------------------
def _phys_video(path: Path) -> Path | None:
    if not (path / _PHYS_TIMESTAMPS).is_file():
        return None
    videos = sorted(p for p in path.iterdir() if p.suffix.lower() in _VIDEO_SUFFIXES and p.is_file())
    if len(videos) > 1:
        log.warning("%s: %d videos; using %s", path, len(videos), videos[0].name)
    return videos[0] if videos else None


def is_recording(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder :func:`open_recording` can open (it has a manifest.json,
    or it is a PhysRecorder folder: a video beside ``frames_timestamp.csv``)."""
    p = Path(path)
    return p.is_dir() and ((p / MANIFEST).is_file() or _phys_video(p) is not None)


def open_recording(path: str | os.PathLike) -> Recording:
    """Open a recording folder for replay.

    Accepts a folder written by :class:`Recorder` (closed, or left by a recorder that died:
    read up to its last write) or a PhysRecorder folder (video + ``frames_timestamp.csv`` +
    ``BVP.csv``).

    Args:
        path: the folder.

    Returns:
        A :class:`Recording`: ``.camera()``, ``.sensor(key)``, ``.sensors()``, ``.manifest``,
        ``.streams``, ``.damage``.

    Raises:
        BadInputError: not a folder, not a recording (no manifest.json and not a PhysRecorder
            folder), a manifest that is not JSON or of another format or a newer version, or
            an unreadable frames table.
    """
    p = Path(path)
    if not p.is_dir():
        raise BadInputError(f"recording folder not found: {p}")
    mpath = p / MANIFEST
    if mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BadInputError(f"{mpath}: not a readable JSON manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BadInputError(f"{mpath}: not an emofuse recording manifest (format is "
                                f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                                f"expected {FORMAT!r})")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BadInputError(f"{mpath}: format_version {version!r} is not supported (this "
                                f"reader knows {FORMAT_VERSION}); upgrade emofuse")
        rec: Recording = EmofuseRecording(p, manifest)
    else:
        video = _phys_video(p)
        if video is None:
            raise BadInputError(
                f"{p} is not a recording: no {MANIFEST} (an emofuse recording) and no video "
                f"beside {_PHYS_TIMESTAMPS} (a PhysRecorder folder)"
            )
        rec = PhysRecorderRecording(p, video)
    for line in rec.damage:
        log.warning("%s: %s", p, line)
    return rec
