"""Finite camera sources on disk: a video file and a folder of images.

Both deliver every frame, in order, as fast as the consumer reads (``realtime=True`` paces
them). Frame times come from a ``frame,timestamp`` CSV (UNIX seconds, one row per frame, as
PhysRecorder writes ``frames_timestamp.csv``) when one is beside the video or inside the
folder, else from the frame rate. ``Frame.t_ns = origin_ns + (timestamp_i - timestamp_0)`` in
ns, so replays are deterministic; ``t0_unix_s`` keeps the absolute time of frame 0 for aligning
other recorded streams. A damaged CSV row (not a number, ``inf``, ``1e30``, a time that repeats
or goes backwards) costs its frame only: it is skipped, counted and logged; a CSV with no usable
row, or whose times repeat or go backwards in half of its rows, is a ``BadInputError``.
"""
from __future__ import annotations

import bisect
import csv
import dataclasses
import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import cv2
import numpy as np

from firmware_bridge.cameras.base import CameraOptions, CameraSource, CameraUri, FiniteSource
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.types import Frame

log = logging.getLogger(__name__)

TIMESTAMPS_SIDECAR = "frames_timestamp.csv"
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp"}
)


#: The largest time a table may hold, in seconds either side of its zero: what int64
#: nanoseconds can represent (about 292 years). A larger number is a damaged row.
MAX_ABS_TIME_S = 9_000_000_000


def parse_seconds_ns(text: str) -> int | None:
    """Decimal seconds as exact integer nanoseconds, or None when the text is not one.

    Decimal parsing keeps ns resolution, which float64 loses at today's epoch (its step there
    is about 0.24 us).

    Args:
        text: a decimal number of seconds, e.g. ``"1685590249.9497862"``.

    Returns:
        int ns, or None for text that is not a finite number within +-:data:`MAX_ABS_TIME_S`
        (``inf``, ``nan``, ``1e30``, garbage).
    """
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or value.adjusted() > 12 or abs(value) > MAX_ABS_TIME_S:
        return None
    return int(value * 1_000_000_000)


def increasing_rows(keys: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The rows to keep from a table whose keys and times should both strictly increase.

    Keeps the longest chain of rows in which both the key (a frame number, or the row's
    position) and the time strictly increase, so that one damaged row (a repeated, garbled or
    out-of-order time or frame number) costs that row only, not every row after it. Found as
    a longest strictly increasing subsequence of the times with rows ordered by key (times
    descending within a key, so a key is used once): O(N log N) (Fredman, "On computing the
    length of longest increasing subsequences", Discrete Math. 1975).

    Args:
        keys: int64 (N,) row keys, in file order.
        times: int64 (N,) row times, ns.

    Returns:
        bool (N,): True for the rows kept, in file order.
    """
    keys = np.asarray(keys, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64)
    n = len(times)
    if n < 2 or (np.all(np.diff(keys) > 0) and np.all(np.diff(times) > 0)):
        return np.ones(n, dtype=bool)
    order = np.lexsort((-times, keys))
    seq = times[order]
    tails: list[int] = []  # tails[k]: the smallest last time of a chain of length k + 1
    tail_at: list[int] = []  # its position in seq
    before = np.full(n, -1, dtype=np.int64)
    for pos, t in enumerate(seq.tolist()):
        k = bisect.bisect_left(tails, t)
        if k < len(tails) and tails[k] == t:
            continue  # a repeat: the earlier row keeps the place
        if k:
            before[pos] = tail_at[k - 1]
        if k == len(tails):
            tails.append(t)
            tail_at.append(pos)
        else:
            tails[k] = t
            tail_at[k] = pos
    keep = np.zeros(n, dtype=bool)
    pos = tail_at[-1] if tail_at else -1
    while pos >= 0:
        keep[order[pos]] = True
        pos = int(before[pos])
    return keep


def check_clock(keep: np.ndarray, times: np.ndarray, lines: np.ndarray, what: str,
                path: Path) -> list[str]:
    """Lines describing the rows :func:`increasing_rows` dropped, or an error when they are
    so many that the times are not a clock at all.

    Args:
        keep: bool (N,) from :func:`increasing_rows`.
        times: int64 (N,) the rows' times, ns (to name the first that repeats or goes back).
        lines: int (N,) the file line number of each row (for messages).
        what: what the times are, for messages (``"frame time"``).
        path: the file, for messages.

    Returns:
        One line per dropped row.

    Raises:
        BadInputError: at least half of the rows (and at least one) are out of order: the
            times repeat or go backwards throughout (e.g. all equal), so no subset is
            trustworthy.
    """
    dropped = np.flatnonzero(~keep)
    if dropped.size and 2 * dropped.size >= keep.size:
        back = np.flatnonzero(np.diff(np.asarray(times, dtype=np.int64)) <= 0)
        first = int(back[0]) + 1 if back.size else int(dropped[0])
        raise BadInputError(
            f"{path}: line {int(lines[first])}: the {what}s repeat or go backwards "
            f"({dropped.size} of {keep.size} rows out of order); not a usable clock"
        )
    return [f"{path.name}: line {int(lines[i])}: {what} repeats or goes backwards; row skipped"
            for i in dropped]


@dataclass(frozen=True)
class FrameTimes:
    """The usable rows of a ``frame,timestamp`` CSV.

    Attributes:
        frame: int64 (M,) frame numbers that have a usable row, strictly increasing.
        unix_ns: int64 (M,) their UNIX times, ns, strictly increasing.
        skipped: one line per row skipped (file name, line and why).
    """

    frame: np.ndarray
    unix_ns: np.ndarray
    skipped: tuple[str, ...] = ()

    def lookup(self, i: int) -> int | None:
        """UNIX time of frame ``i``, ns; None when it has no usable row."""
        j = int(np.searchsorted(self.frame, i))
        return int(self.unix_ns[j]) if j < len(self.frame) and self.frame[j] == i else None


def read_frame_times(path: str | Path) -> FrameTimes:
    """Read a frame-timestamp CSV exactly, skipping (and listing) damaged rows.

    The CSV has a header with ``frame`` and ``timestamp`` columns; ``frame`` counts 0, 1, 2...
    and ``timestamp`` is UNIX time in seconds with any number of decimals (PhysRecorder's
    ``frames_timestamp.csv``), parsed exactly (:func:`parse_seconds_ns`).

    A row that does not parse, holds a time that is not a finite number of int64 ns (``inf``,
    ``nan``, ``1e30``), or whose frame number or time repeats or goes backwards
    (:func:`increasing_rows`) is skipped and listed in ``skipped``: its frame has no time.

    Args:
        path: the CSV file.

    Returns:
        :class:`FrameTimes`.

    Raises:
        BadInputError: missing or unreadable file, missing columns, no usable row, or times
            that repeat or go backwards in at least half of the rows (all equal, say).
    """
    path = Path(path)
    frames, times, lines, skipped = [], [], [], []
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if "frame" not in header or "timestamp" not in header:
                raise BadInputError(
                    f"{path}: expected a header with 'frame' and 'timestamp', got {header}"
                )
            i_frame, i_time = header.index("frame"), header.index("timestamp")
            for row_no, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                try:
                    frame_no = int(row[i_frame])
                    t_ns = parse_seconds_ns(row[i_time])
                except (IndexError, ValueError):
                    frame_no, t_ns = -1, None
                if t_ns is None or frame_no < 0 or len(row) != len(header):
                    skipped.append(f"{path.name}: line {row_no} is not 'frame,timestamp' "
                                   f"(a number of seconds): {','.join(row)[:60]!r}; row skipped")
                    continue
                frames.append(frame_no)
                times.append(t_ns)
                lines.append(row_no)
    except OSError as exc:
        raise BadInputError(f"cannot read timestamps {path}: {exc.strerror or exc}") from exc
    except csv.Error as exc:
        raise BadInputError(f"{path}: not a CSV ({exc})") from None
    if not times:
        raise BadInputError(f"{path}: no usable timestamp rows" +
                            (f" ({len(skipped)} damaged)" if skipped else ""))
    frame_a, t_a = np.asarray(frames, np.int64), np.asarray(times, np.int64)
    keep = increasing_rows(frame_a, t_a)
    skipped += check_clock(keep, t_a, np.asarray(lines), "frame time", path)
    if skipped:
        log.warning("%s: %d damaged rows skipped (their frames have no time and are skipped)",
                    path, len(skipped))
    return FrameTimes(frame_a[keep], t_a[keep], tuple(skipped))


def read_frame_timestamps(path: str | Path) -> np.ndarray:
    """The times of the usable rows of a frame-timestamp CSV (:func:`read_frame_times`).

    Returns:
        int64 (M,) UNIX times, ns, of the usable rows in order; M is the frame count when no
        row was skipped (use :func:`read_frame_times` to know which frame each belongs to).

    Raises:
        BadInputError: as :func:`read_frame_times`.
    """
    return read_frame_times(path).unix_ns


def _resolve_timestamps(option: str | None, sidecar: Path) -> Path | None:
    if option == "none":
        return None
    if option is not None:
        path = Path(option)
        if not path.is_file():
            raise BadInputError(f"timestamps CSV not found: {path}")
        return path
    return sidecar if sidecar.is_file() else None


#: What :meth:`_TimedFrames.rel_ns` returns for a frame whose CSV row was damaged.
NO_TIME = object()


class _TimedFrames:
    """Frame i's time relative to the first timed frame (ns), from a CSV or a constant rate."""

    def __init__(self, csv_path: Path | None, fps: float | None, where: str):
        self.csv_path = csv_path
        self.table = read_frame_times(csv_path) if csv_path is not None else None
        if self.table is None and fps is None:
            raise ConfigError(f"{where}: no timestamps CSV and no frame rate: pass fps=")
        self.fps = fps

    @property
    def unix_ns(self) -> np.ndarray | None:
        return None if self.table is None else self.table.unix_ns

    @property
    def t0_unix_ns(self) -> int | None:
        return None if self.table is None else int(self.table.unix_ns[0])

    @property
    def rows(self) -> int | None:
        """Frames the CSV covers (its last usable frame number + 1); None when times come
        from the rate."""
        return None if self.table is None else int(self.table.frame[-1]) + 1

    def rel_ns(self, i: int):
        """Offset of frame i from the first timed frame, ns; None past the CSV's last row;
        :data:`NO_TIME` when the CSV's row for it was damaged (skip the frame)."""
        if self.table is None:
            return round(i * 1e9 / self.fps)
        if i >= self.rows:
            return None
        t = self.table.lookup(i)
        return NO_TIME if t is None else t - int(self.table.unix_ns[0])


def _video_backend() -> int:
    # Name FFMPEG explicitly: CAP_ANY may hand a name with '%' to the image-sequence reader.
    if cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
        return cv2.CAP_FFMPEG
    return cv2.CAP_ANY


def open_video_file(path: Path) -> cv2.VideoCapture:
    """Open a video file with OpenCV or raise one line naming it.

    Raises:
        BadInputError: the file is missing, a folder, or not decodable as video.
    """
    if not path.exists():
        raise BadInputError(f"video file not found: {path}")
    if not path.is_file():
        raise BadInputError(f"not a file: {path}")
    cap = cv2.VideoCapture(str(path), _video_backend())
    if not cap.isOpened():
        cap.release()
        raise BadInputError(f"cannot decode {path} as video (not a video file, or corrupt)")
    return cap


def _as_bgr(image: np.ndarray, where: str) -> np.ndarray:
    if image.dtype != np.uint8:
        raise BadInputError(f"{where}: {image.dtype} pixels; expected 8-bit")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise BadInputError(f"{where}: image of shape {image.shape}; expected (H, W, 3)")


class VideoFileSource(FiniteSource):
    """Every frame of a video file (any container/codec OpenCV's FFMPEG decodes).

    Frame times: the timestamps CSV (see module doc) if present or given, else
    ``i / fps`` with fps from the option or the file header. A file that ends before the
    frame count its header declares (truncated, or a decoder error) ends the iteration
    cleanly; ``end_reason`` says so and a warning is logged. ``live=True`` opens
    :class:`~firmware_bridge.cameras.live.LiveVideoFileSource` instead.

    Attributes:
        path: the file.
        frame_count_declared: frame count in the header (0 when unknown).
        frames_read: frames decoded so far.
        frames_skipped: decoded frames not delivered because their timestamps-CSV row was
            damaged (the next delivered frame's ``dropped_before`` counts them and its
            ``index`` jumps).
        timestamps_csv: the CSV the times come from, or None (times from fps).
        timestamp_skips: one line per damaged CSV row skipped.
    """

    scheme = "file"
    OPTIONS = frozenset({"realtime", "live", "fps", "timestamps", "origin_ns"})
    LIVE_OPTIONS = frozenset(
        {"live", "fps", "reconnect_initial_s", "reconnect_max_s", "give_up_after_s"}
    )

    @classmethod
    def from_uri(cls, uri: CameraUri, options: CameraOptions) -> CameraSource:
        if options.live:
            # Imported here: cameras.live builds on this module (open_video_file), an import cycle.
            from firmware_bridge.cameras.live import LiveVideoFileSource

            return LiveVideoFileSource(uri, options)
        return cls(uri, options)

    def __init__(self, uri: CameraUri, options: CameraOptions):
        super().__init__(uri, options)
        self.path = Path(uri.target)
        self._cap = open_video_file(self.path)
        try:
            header_fps = self._cap.get(cv2.CAP_PROP_FPS)
            header_fps = header_fps if np.isfinite(header_fps) and header_fps > 0 else None
            self.frame_count_declared = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))
            sidecar = self.path.parent / TIMESTAMPS_SIDECAR
            csv_path = _resolve_timestamps(options.timestamps, sidecar)
            self._times = _TimedFrames(csv_path, options.fps or header_fps, str(self.path))
            self.timestamps_csv = csv_path
            self._set_unix_t0(self._times.t0_unix_ns)
            self.timestamp_skips = self._times.table.skipped if self._times.table else ()
            self.frames_read = 0
            self.frames_skipped = 0
            self._skipped_before = 0
            # Decode one frame now, so a file that opens but holds no picture fails at open.
            self._pending = self._decode()
            if self._pending is None:
                raise BadInputError(f"no frame could be decoded from {self.path}")
        except BaseException:
            self._cap.release()
            raise
        self.height, self.width = self._pending.shape[:2]
        self.fps = float(options.fps or header_fps or self._fps_from_csv())
        log.info(
            "%s: %dx%d, %s frames declared, times from %s",
            self.path, self.width, self.height, self.frame_count_declared or "?",
            csv_path or f"{self.fps:g} fps",
        )

    def _fps_from_csv(self) -> float:
        table = self._times.table
        if table is None or len(table.frame) < 2:
            return 0.0  # times are strictly increasing, so two rows give a rate
        span = float(table.unix_ns[-1] - table.unix_ns[0])
        return float(table.frame[-1] - table.frame[0]) * 1e9 / span

    def _decode(self) -> np.ndarray | None:
        try:
            ok, image = self._cap.read()
        except cv2.error as exc:
            self._decode_error = str(exc).strip().splitlines()[-1]
            return None
        if not ok or image is None:
            return None
        return _as_bgr(image, str(self.path))

    def _read(self) -> tuple[int, np.ndarray] | None:
        while True:
            image = self._pending if self._pending is not None else self._decode()
            self._pending = None
            i = self.frames_read
            if image is None:
                self.end_reason = self._why_ended(i)
                return None
            rel_ns = self._times.rel_ns(i)
            if rel_ns is None:
                self.end_reason = (
                    f"timestamps CSV {self.timestamps_csv} has only {self._times.rows} rows; "
                    f"stopped at frame {i}"
                )
                log.warning("%s: %s", self.path, self.end_reason)
                return None
            self.frames_read += 1
            if rel_ns is NO_TIME:
                self.frames_skipped += 1  # its CSV row was damaged: no time, so not delivered
                self._skipped_before += 1
                continue
            self._index = i  # Frame.index is the file's frame number: a skip shows as a jump
            return rel_ns, image

    def _next_frame(self) -> Frame:
        frame = super()._next_frame()
        if self._skipped_before:
            frame = dataclasses.replace(frame, dropped_before=self._skipped_before)
            self._skipped_before = 0
        return frame

    def _why_ended(self, n: int) -> str:
        declared = self.frame_count_declared
        error = getattr(self, "_decode_error", None)
        if error is None and (declared == 0 or n >= declared):
            reason = f"end of file after {n} frames"
            if self._times.rows is not None and self._times.rows > n:
                reason += f" (timestamps CSV lists {self._times.rows})"
            if self.frames_skipped:
                reason += (f"; {self.frames_skipped} frames skipped: their timestamp rows "
                           f"were damaged")
            return reason
        reason = f"file ended early: decoded {n} of {declared or '?'} frames the header declares"
        if error:
            reason += f" (decoder error: {error})"
        log.warning("%s: %s (truncated or corrupt)", self.path, reason)
        return reason + "; truncated or corrupt"

    def _release(self) -> None:
        self._cap.release()


def _natural_key(name: str) -> list:
    # frame2.png before frame10.png; zero-padded names sort the same either way.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class ImageFolderSource(FiniteSource):
    """The images of a folder as frames, in natural name order (``img2`` before ``img10``).

    Images are read as 8-bit BGR (greyscale is expanded). Frame times: the timestamps CSV
    ``frames_timestamp.csv`` inside the folder (or given), else ``i / fps`` with fps default
    30. An image that cannot be decoded raises ``BadInputError`` naming it.

    Attributes:
        path: the folder.
        files: the image files, in delivery order.
        frames_skipped: images not delivered because their timestamps-CSV row was damaged.
        timestamp_skips: one line per damaged CSV row skipped.
    """

    scheme = "folder"
    OPTIONS = frozenset({"realtime", "fps", "timestamps", "origin_ns"})
    DEFAULT_FPS = 30.0

    def __init__(self, uri: CameraUri, options: CameraOptions):
        super().__init__(uri, options)
        self.path = Path(uri.target)
        if not self.path.is_dir():
            raise BadInputError(f"image folder not found: {self.path}")
        self.files = sorted(
            (p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: _natural_key(p.name),
        )
        if not self.files:
            suffixes = " ".join(sorted(IMAGE_SUFFIXES))
            raise BadInputError(f"no images ({suffixes}) in folder {self.path}")
        csv_path = _resolve_timestamps(options.timestamps, self.path / TIMESTAMPS_SIDECAR)
        self.fps = float(options.fps or self.DEFAULT_FPS)
        self._times = _TimedFrames(csv_path, self.fps, str(self.path))
        self.timestamps_csv = csv_path
        self._set_unix_t0(self._times.t0_unix_ns)
        self.timestamp_skips = self._times.table.skipped if self._times.table else ()
        self.frames_skipped = 0
        first = self._load(0)
        self.height, self.width = first.shape[:2]
        self._pending: np.ndarray | None = first

    def _load(self, i: int) -> np.ndarray:
        path = self.files[i]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise BadInputError(f"cannot decode image {path}")
        return _as_bgr(image, str(path))

    def _read(self) -> tuple[int, np.ndarray] | None:
        while True:
            i = self._index
            if i >= len(self.files):
                self.end_reason = f"end of folder after {i} images"
                return None
            rel_ns = self._times.rel_ns(i)
            if rel_ns is None:
                self.end_reason = (
                    f"timestamps CSV {self.timestamps_csv} has only {self._times.rows} rows "
                    f"for {len(self.files)} images; stopped at image {i}"
                )
                log.warning("%s: %s", self.path, self.end_reason)
                return None
            if rel_ns is NO_TIME:  # its CSV row was damaged: no time, so not delivered
                self.frames_skipped += 1
                self._index += 1
                self._pending = None
                continue
            image = self._pending if self._pending is not None else self._load(i)
            self._pending = None
            return rel_ns, image
