"""The emofuse recording format: file names, the frames table, the sensor chunk record, the
manifest, and the tally of what a reader skipped. Described for other tools in
docs/RECORDING.md; :mod:`.writer` writes it, :mod:`.reader` reads it.
"""
from __future__ import annotations

import datetime as _dt
import json
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.cameras.files import check_clock, increasing_rows
from firmware_bridge.errors import BadInputError
from firmware_bridge.types import SensorChunk

FORMAT = "emofuse-recording"
#: 2 added the ``crc32`` (pixels) and ``row_crc32`` (the row itself) columns of frames.csv; a
#: reader reads 1 and 2 and refuses larger.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
VIDEO_DIR = "video"
FRAMES_CSV = "video/frames.csv"
SENSOR_DIR = "sensors"
#: Header of frames.csv (version 2); version 1 files lack the two checksum columns.
FRAMES_HEADER = "frame,t_ns,index,dropped_before,gap_before_s,crc32,row_crc32"
FRAMES_HEADER_V1 = "frame,t_ns,index,dropped_before,gap_before_s"

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

SEGMENT_RE = re.compile(r"^seg_(\d{8,})_(\d{5,})(\.[A-Za-z0-9]+)$")
SAFE_NAME_RE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class VideoCodec:
    """How video segments are encoded.

    Attributes:
        name: registry key.
        fourcc: the four-character code given to OpenCV.
        suffix: container file suffix.
        backend: OpenCV videoio backend name (``"FFMPEG"`` or ``"CV_MJPEG"``).
        lossless: decoded frames are byte-equal to the recorded ones (so frames.csv holds a
            CRC-32 of each frame that the reader checks).
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


def iso_time(unix_ns: int) -> str:
    """UNIX ns as ISO 8601 UTC text, for the manifest's ``start`` and ``end``."""
    return _dt.datetime.fromtimestamp(unix_ns / 1e9, tz=_dt.timezone.utc).isoformat()


def frame_crc32(image: np.ndarray) -> int:
    """CRC-32 (zlib / ISO-HDLC) of a frame's pixel bytes, row-major uint8 BGR (H, W, 3)."""
    return zlib.crc32(np.ascontiguousarray(image).data)


# ---------------------------------------------------------------------------------------------
# What a reader skipped


@dataclass
class Skips:
    """Counts of what a reader skipped because it was damaged; they grow while the recording
    is read (frames are checked as they are decoded, sensor files when first read).

    Attributes:
        rows: table rows skipped: frames.csv, ``frames_timestamp.csv``, sensor CSVs.
        headers: sensor-file header lines damaged (the stream is still read: its records
            carry their own checks; the manifest describes the stream).
        records: damaged stretches of sensor records skipped, torn last records and
            undecodable records (a stretch holds at least one record; ``seq`` numbers around
            it show how many).
        record_bytes: bytes of sensor files skipped in those stretches.
        frames: frames not delivered: no committed segment, undecodable, a damaged or
            missing frames.csv row, or a pixel checksum that does not match.
        checksum: of ``frames``, those decoded whose CRC-32 did not match frames.csv.
    """

    rows: int = 0
    headers: int = 0
    records: int = 0
    record_bytes: int = 0
    frames: int = 0
    checksum: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to the named counts (threads of one replay may report at once)."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + int(n))

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for a run summary)."""
        return {k: getattr(self, k) for k in ("rows", "headers", "records", "record_bytes",
                                               "frames", "checksum")}

    def __bool__(self) -> bool:
        return any(self.as_dict().values())

    def summary(self) -> str:
        """One line, e.g. ``"skipped as damaged: 1 rows, 1 frames"``; empty when nothing was."""
        parts = [f"{v} {k.replace('_', ' ')}" for k, v in self.as_dict().items() if v]
        return "skipped as damaged: " + ", ".join(parts) if parts else ""


# ---------------------------------------------------------------------------------------------
# Sensor chunk records


def jsonable(value: Any) -> Any:
    """A JSON-friendly copy of chunk metadata (numpy scalars and arrays become lists)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
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
        extra["meta"] = jsonable(chunk.meta)
    extra_b = json.dumps(extra, separators=(",", ":"), allow_nan=True).encode("utf-8")
    samples_b = np.ascontiguousarray(x, dtype="<f8").tobytes()
    body = _FIXED.pack(int(chunk.seq), int(chunk.t0_ns), float(chunk.fs_hz), dev, n, c,
                       _FLAG_2D if x.ndim == 2 else 0, len(extra_b)) + samples_b + extra_b
    return _PREFIX.pack(RECORD_MAGIC, len(body), zlib.crc32(body)) + body


def decode_body(body: bytes | memoryview, stream: str, source: str) -> SensorChunk:
    """A chunk from one record body (the bytes after the 12-byte prefix).

    Raises:
        ValueError, UnicodeDecodeError, struct.error: a body whose fields disagree.
    """
    seq, t0_ns, fs_hz, dev, n, c, flags, extra_len = _FIXED.unpack_from(body, 0)
    n_bytes = n * c * 8
    if _FIXED.size + n_bytes + extra_len != len(body):
        raise ValueError("record fields disagree with its length")
    samples = np.frombuffer(body, dtype="<f8", count=n * c, offset=_FIXED.size).astype(np.float64)
    samples = samples.reshape(n, c) if flags & _FLAG_2D else samples
    extra = json.loads(bytes(body[_FIXED.size + n_bytes:]).decode("utf-8")) if extra_len else {}
    if not isinstance(extra, dict):
        raise ValueError("record extra is not a JSON object")
    meta = extra.get("meta", {})
    return SensorChunk(
        stream=stream, fs_hz=fs_hz, t0_ns=t0_ns, samples=samples,
        units=str(extra.get("units", "a.u.")), seq=seq,
        device_t0_us=None if dev == _NO_DEVICE_T else dev, source=source,
        meta=meta if isinstance(meta, dict) else {},
    )


def _intact_at(buf, pos: int, size: int) -> int:
    """Body length of the intact record at ``pos`` (magic, length and CRC32 check out), or -1."""
    body_at = pos + _PREFIX.size
    if body_at > size:
        return -1
    magic, body_len, crc = _PREFIX.unpack_from(buf, pos)
    if magic != RECORD_MAGIC or body_len > _MAX_BODY or body_len < _FIXED.size \
            or body_at + body_len > size:
        return -1
    return body_len if zlib.crc32(buf[body_at:body_at + body_len]) == crc else -1


def next_intact_record(buf, pos: int) -> int:
    """Offset of the first intact record at or after ``pos``, or -1 when there is none."""
    size = len(buf)
    nxt = pos
    while True:
        nxt = buf.find(RECORD_MAGIC, nxt)
        if nxt < 0 or _intact_at(buf, nxt, size) >= 0:
            return nxt
        nxt += 1


def scan_records(buf, start: int) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """Offsets and lengths of the intact records in ``buf[start:]``, and what was damaged.

    A record is intact when its magic, length and CRC32 check out. After a damaged one the
    scan resumes at the next intact record (a torn tail has none and ends the scan).

    Returns:
        ``(good, damage)``: ``(body offset, body length)`` per intact record; ``(offset,
        bytes, line)`` per damaged stretch.
    """
    good: list[tuple[int, int]] = []
    damage: list[tuple[int, int, str]] = []
    size = len(buf)
    pos = start
    while pos < size:
        body_len = _intact_at(buf, pos, size)
        if body_len >= 0:
            good.append((pos + _PREFIX.size, body_len))
            pos += _PREFIX.size + body_len
            continue
        nxt = next_intact_record(buf, pos + 1)
        if nxt < 0:
            damage.append((pos, size - pos, f"{size - pos} bytes at offset {pos} are a torn or "
                                            f"damaged last record; ignored"))
            break
        damage.append((pos, nxt - pos, f"{nxt - pos} damaged bytes at offset {pos} skipped"))
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
    good, stretches = scan_records(data, 0)
    damage = [line for _, _, line in stretches]
    out = []
    for at, length in good:
        try:
            out.append(decode_body(memoryview(data)[at:at + length], stream, source))
        except (ValueError, UnicodeDecodeError, struct.error) as exc:
            damage.append(f"record at offset {at}: {exc}")
    return out, damage


# ---------------------------------------------------------------------------------------------
# frames.csv


@dataclass(frozen=True)
class FrameRows:
    """The usable rows of frames.csv, in frame order.

    Attributes:
        frame: int64 (M,) frame numbers (strictly increasing; a damaged row leaves a hole).
        t_ns: int64 (M,) capture times, host monotonic ns (strictly increasing).
        index: int64 (M,) the camera's frame index.
        dropped: int64 (M,) frames the camera dropped before each.
        gap_s: float64 (M,) seconds without frames before each.
        crc: int64 (M,) CRC-32 of each frame's pixels, -1 where none was stored (version 1,
            or a lossy codec).
    """

    frame: np.ndarray
    t_ns: np.ndarray
    index: np.ndarray
    dropped: np.ndarray
    gap_s: np.ndarray
    crc: np.ndarray

    @classmethod
    def empty(cls) -> "FrameRows":
        z = np.zeros(0, np.int64)
        return cls(z, z, z, z, np.zeros(0), z)


def frame_row(frame: int, t_ns: int, index: int, dropped: int, gap_s: float, crc: int | None) -> bytes:
    """One frames.csv row (version 2), newline included: the fields, the pixels' CRC-32 (8 hex
    digits, empty for a lossy codec) and the CRC-32 of the row's text up to that last comma."""
    pixels = "" if crc is None else f"{crc:08x}"
    text = f"{frame},{t_ns},{index},{dropped},{float(gap_s)!r},{pixels},".encode()
    return text + f"{zlib.crc32(text):08x}\n".encode()


def _parse_row(line: bytes, n_fields: int) -> tuple | None:
    try:
        parts = line.decode("ascii").split(",")
        if len(parts) != n_fields:
            return None
        if n_fields == 7 and (len(parts[6]) != 8 or
                              zlib.crc32(line[:len(line) - 8]) != int(parts[6], 16)):
            return None  # the row's own checksum: any damaged byte costs this row only
        ints = [int(p) for p in parts[:4]]
        gap = float(parts[4])
        crc = -1
        if n_fields == 7 and parts[5]:
            if len(parts[5]) != 8:
                return None
            crc = int(parts[5], 16)
    except (UnicodeDecodeError, ValueError):
        return None
    if ints[0] < 0 or not all(-(1 << 63) < v < (1 << 63) for v in ints):
        return None
    return (*ints, gap, crc)


def read_frames_csv(path: Path, version: int = FORMAT_VERSION) -> tuple[FrameRows, list[str], int]:
    """Read frames.csv, skipping damaged rows: one damaged row costs its frame only.

    A row is used when it has the header's number of fields, its own CRC-32 checks out
    (version 2), its fields parse (integers, a float, 8 hex digits or nothing), and its frame
    number and ``t_ns`` both increase (:func:`~firmware_bridge.cameras.files.increasing_rows`;
    for version 1 files, which have no row checksum, this is what catches a damaged number).
    A torn last row (no newline) is skipped too. A damaged header line costs the header
    only: the rows are read by the manifest's ``version``.

    Args:
        path: the frames.csv file.
        version: the recording's format version, for a damaged header.

    Returns:
        ``(rows, damage, skipped)``: the usable rows, lines describing the rows skipped,
        and how many rows were skipped.

    Raises:
        BadInputError: the file cannot be read.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    lines = raw.split(b"\n")
    head = lines[0].strip().decode("utf-8", "replace")
    damage_head = []
    if head not in (FRAMES_HEADER, FRAMES_HEADER_V1):
        head = FRAMES_HEADER if version >= 2 else FRAMES_HEADER_V1
        damage_head.append(f"{FRAMES_CSV}: header line damaged; rows read as format {version}")
    n_fields = head.count(",") + 1
    body = lines[1:-1] if raw.endswith(b"\n") else lines[1:]
    rows, line_no, damage_rows = [], [], []
    for k, line in enumerate(body):
        torn = k == len(body) - 1 and not raw.endswith(b"\n")
        row = None if torn else _parse_row(line, n_fields)
        if row is None:
            what = "torn" if torn else "damaged"
            damage_rows.append(f"{FRAMES_CSV}: line {k + 2} is {what}; row skipped")
            continue
        rows.append(row)
        line_no.append(k + 2)
    damage = damage_head + damage_rows
    if not rows:
        return FrameRows.empty(), damage, len(damage)
    cols = list(zip(*rows))
    frame, t_ns = np.asarray(cols[0], np.int64), np.asarray(cols[1], np.int64)
    keep = increasing_rows(frame, t_ns)
    try:
        damage += check_clock(keep, t_ns, np.asarray(line_no), "frame number or time", Path(FRAMES_CSV))
    except BadInputError as exc:
        # Rows that are no clock cost the video, not the sensors: report, keep the longest chain.
        damage.append(f"{exc}; the longest increasing run of rows is kept")
    skipped = len(damage_rows) + int(np.count_nonzero(~keep))
    return FrameRows(frame[keep], t_ns[keep], np.asarray(cols[2], np.int64)[keep],
                     np.asarray(cols[3], np.int64)[keep], np.asarray(cols[4], np.float64)[keep],
                     np.asarray(cols[5], np.int64)[keep]), damage, skipped


# ---------------------------------------------------------------------------------------------
# manifest.json


def check_manifest(manifest: Any, path: Path) -> dict:
    """Check what a reader needs of a manifest: the format, a known version, start times.

    Args:
        manifest: the parsed JSON.
        path: the manifest file, for messages.

    Returns:
        The manifest (a dict).

    Raises:
        BadInputError: not an object, another format, a newer version, or no start times.
    """
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadInputError(f"{path}: not an emofuse recording manifest (format is "
                            f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                            f"expected {FORMAT!r})")
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise BadInputError(f"{path}: format_version {version!r} is not supported (this "
                            f"reader knows 1 to {FORMAT_VERSION}); upgrade emofuse")
    start = manifest.get("start")
    try:
        int(start["monotonic_ns"]), int(start["unix_ns"])
    except (KeyError, TypeError, ValueError):
        raise BadInputError(f"{path}: no start times (start.monotonic_ns, start.unix_ns)") from None
    for key in ("streams",):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise BadInputError(f"{path}: {key!r} must be an object")
    if manifest.get("camera") is not None and not isinstance(manifest["camera"], dict):
        raise BadInputError(f"{path}: 'camera' must be an object or null")
    return manifest
