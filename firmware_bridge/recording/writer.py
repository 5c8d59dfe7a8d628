"""Write a session (camera frames and sensor chunks) to a recording folder while it streams.

Built so that a process killed at any moment (SIGKILL, power kept) leaves a folder that reads
back up to the last write:

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
  is always either the previous or the new complete JSON;
* with a lossless codec each frames.csv row holds the CRC-32 of the frame's pixels, so a
  reader finds frames that a damaged video file decodes wrongly.

Video codec: lossless FFV1 by default. Lossy inter-frame codecs (H.264) smooth away the
sub-grey-level colour changes that carry the remote pulse (McDuff et al., "The impact of
video compression on remote cardiac pulse measurement using imaging photoplethysmography",
IEEE FG 2017), so the recorder offers only lossless codecs and, as a documented fallback,
intra-frame MJPEG at quality 95.
"""
from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError, DeviceError
from firmware_bridge.recording.format import (
    CODECS,
    FORMAT,
    FORMAT_VERSION,
    FRAMES_CSV,
    FRAMES_HEADER,
    MANIFEST,
    SAFE_NAME_RE,
    SENSOR_DIR,
    VIDEO_DIR,
    encode_chunk_record,
    frame_crc32,
    frame_row,
    iso_time,
    jsonable,
)
from firmware_bridge.recording.segment import Segment, SensorFile, atomic_write_json, write_all
from firmware_bridge.types import Frame, SensorChunk

log = logging.getLogger(__name__)

__all__ = ["Recorder"]


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
        self._files: dict[tuple[str, str], SensorFile] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._segment: Segment | None = None
        self._open_segments: list[Segment] = []
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
                      "iso": iso_time(self.start_unix_ns)},
            "end": None,
            "sources": [{"role": r, "uri": u} for r, u in sources],
            "camera": None,
            "streams": {},
            "files": [],
            "writer": {"module": "firmware_bridge.recording", "python": platform.python_version(),
                       "host": platform.node()},
            "info": dict(info or {}),
        }
        try:
            self._frames_fd = os.open(self.path / FRAMES_CSV, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            write_all(self._frames_fd, (FRAMES_HEADER + "\n").encode())
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
            self._manifest["sources"].append({"role": role, "uri": uri, **jsonable(details)})
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
            # The pixels' checksum, for lossless codecs whose decoded frames are byte-equal.
            crc = frame_crc32(image) if self.codec.lossless else None
            row = frame_row(self.n_frames, int(frame.t_ns), int(frame.index), int(frame.dropped_before),
                            frame.gap_before_s, crc)
            try:
                write_all(self._frames_fd, row)
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

    def _new_segment(self, size: tuple[int, int]) -> Segment:
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
            seg = Segment(self, self.n_frames, size, self.max_queue_frames)
            self._open_segments.append(seg)
            self._segment = seg
            return seg

    def _roll(self) -> None:
        seg, self._segment = self._segment, None
        if seg is not None:
            seg.finish()

    def _segment_done(self, seg: Segment) -> None:
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
                write_all(f.fd, record)
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

    def _open_stream(self, chunk: SensorChunk) -> SensorFile:
        with self._lock:
            self._check_open()
            ident = (chunk.source, chunk.stream)
            if ident in self._files:
                return self._files[ident]
            base = SAFE_NAME_RE.sub("_", chunk.stream) or "stream"
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
                f = SensorFile(self.path / rel, header)
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
            atomic_write_json(self.path / MANIFEST, m, fsync=self.fsync_s is not None)

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
            m["end"] = {"unix_ns": end_unix, "monotonic_ns": int(self._clock_ns()), "iso": iso_time(end_unix)}
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


