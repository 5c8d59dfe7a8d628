"""Finite camera sources on disk: a video file and a folder of images.

Both deliver every frame, in order, as fast as the consumer reads (``realtime=True`` paces
them). Frame times come from a ``frame,timestamp`` CSV (UNIX seconds, one row per frame, as
PhysRecorder writes ``frames_timestamp.csv``) when one is beside the video or inside the
folder, else from the frame rate. ``Frame.t_ns = origin_ns + (timestamp_i - timestamp_0)`` in
ns, so replays are deterministic; ``t0_unix_s`` keeps the absolute time of frame 0 for aligning
other recorded streams.
"""
from __future__ import annotations

import csv
import logging
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import cv2
import numpy as np

from firmware_bridge.cameras.base import CameraOptions, CameraSource, CameraUri, FiniteSource
from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)

TIMESTAMPS_SIDECAR = "frames_timestamp.csv"
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp"}
)


def read_frame_timestamps(path: str | Path) -> np.ndarray:
    """Read a frame-timestamp CSV exactly, without float rounding.

    The CSV has a header with ``frame`` and ``timestamp`` columns; ``frame`` counts 0, 1, 2...
    and ``timestamp`` is UNIX time in seconds with any number of decimals (PhysRecorder's
    ``frames_timestamp.csv``). Decimal parsing keeps ns resolution, which float64 loses at
    today's epoch (its step there is about 0.24 us).

    Args:
        path: the CSV file.

    Returns:
        int64 array, shape (N,), UNIX time of each frame in ns.

    Raises:
        BadInputError: missing or unreadable file, missing columns, a non-number, frame
            numbers that do not count up from 0, or timestamps that go backwards.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if "frame" not in header or "timestamp" not in header:
                raise BadInputError(
                    f"{path}: expected a header with 'frame' and 'timestamp', got {header}"
                )
            i_frame, i_time = header.index("frame"), header.index("timestamp")
            times_ns = []
            for row_no, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                try:
                    frame_no = int(row[i_frame])
                    t_ns = int(Decimal(row[i_time].strip()) * 1_000_000_000)
                except (IndexError, ValueError, InvalidOperation):
                    raise BadInputError(
                        f"{path}: line {row_no} is not 'frame,timestamp': {row}"
                    ) from None
                if frame_no != len(times_ns):
                    raise BadInputError(
                        f"{path}: line {row_no} has frame {frame_no}, expected {len(times_ns)}"
                    )
                if times_ns and t_ns < times_ns[-1]:
                    raise BadInputError(f"{path}: line {row_no}: timestamp goes backwards")
                times_ns.append(t_ns)
    except OSError as exc:
        raise BadInputError(f"cannot read timestamps {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not a text CSV") from None
    if not times_ns:
        raise BadInputError(f"{path}: no timestamp rows")
    return np.asarray(times_ns, dtype=np.int64)


def _resolve_timestamps(option: str | None, sidecar: Path) -> Path | None:
    if option == "none":
        return None
    if option is not None:
        path = Path(option)
        if not path.is_file():
            raise BadInputError(f"timestamps CSV not found: {path}")
        return path
    return sidecar if sidecar.is_file() else None


class _TimedFrames:
    """Frame i's time relative to frame 0 (ns), from a CSV or a constant rate."""

    def __init__(self, csv_path: Path | None, fps: float | None, where: str):
        self.csv_path = csv_path
        self.unix_ns = read_frame_timestamps(csv_path) if csv_path is not None else None
        if self.unix_ns is None and fps is None:
            raise ConfigError(f"{where}: no timestamps CSV and no frame rate: pass fps=")
        self.fps = fps

    @property
    def t0_unix_ns(self) -> int | None:
        return None if self.unix_ns is None else int(self.unix_ns[0])

    @property
    def rows(self) -> int | None:
        """Rows in the CSV; None when times come from the rate."""
        return None if self.unix_ns is None else len(self.unix_ns)

    def rel_ns(self, i: int) -> int | None:
        """Offset of frame i from frame 0, ns; None when the CSV has no row for it."""
        if self.unix_ns is None:
            return round(i * 1e9 / self.fps)
        if i >= len(self.unix_ns):
            return None
        return int(self.unix_ns[i] - self.unix_ns[0])


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
        timestamps_csv: the CSV the times come from, or None (times from fps).
    """

    scheme = "file"
    OPTIONS = frozenset({"realtime", "live", "fps", "timestamps", "origin_ns"})
    LIVE_OPTIONS = frozenset(
        {"live", "fps", "reconnect_initial_s", "reconnect_max_s", "give_up_after_s"}
    )

    @classmethod
    def from_uri(cls, uri: CameraUri, options: CameraOptions) -> CameraSource:
        if options.live:
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
            self.frames_read = 0
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
        ts = self._times.unix_ns
        if ts is None or len(ts) < 2 or ts[-1] == ts[0]:
            return 0.0
        return (len(ts) - 1) * 1e9 / float(ts[-1] - ts[0])

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
        return rel_ns, image

    def _why_ended(self, n: int) -> str:
        declared = self.frame_count_declared
        error = getattr(self, "_decode_error", None)
        if error is None and (declared == 0 or n >= declared):
            reason = f"end of file after {n} frames"
            if self._times.rows is not None and self._times.rows > n:
                reason += f" (timestamps CSV lists {self._times.rows})"
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
        image = self._pending if self._pending is not None else self._load(i)
        self._pending = None
        return rel_ns, image
