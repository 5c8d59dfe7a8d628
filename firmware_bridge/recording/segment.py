"""The files a :class:`~firmware_bridge.recording.writer.Recorder` writes: append-only
descriptors written with one call per record, the atomically replaced manifest, and the video
segment encoded by its own thread and committed by a rename (the durability rules are in
:mod:`firmware_bridge.recording.writer` and docs/RECORDING.md).
"""
from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path

import cv2
import numpy as np

from firmware_bridge.errors import ConfigError
from firmware_bridge.recording.format import CODECS, SENSOR_MAGIC_LINE, VIDEO_DIR


def _backend_id(name: str) -> int:
    return {"FFMPEG": cv2.CAP_FFMPEG, "CV_MJPEG": cv2.CAP_OPENCV_MJPEG}[name]


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write_json(path: Path, obj: dict, fsync: bool) -> None:
    """Replace ``path`` by ``obj`` as JSON, atomically: a reader sees the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    data = (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class SensorFile:
    """One append-only sensor file: header at creation, then one record per write."""

    def __init__(self, path: Path, header: dict):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        head = SENSOR_MAGIC_LINE + json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n"
        write_all(self.fd, head)
        self.lock = threading.Lock()
        self.chunks = 0
        self.samples = 0
        self.first_t_ns: int | None = None
        self.last_t_ns: int | None = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Segment:
    """One video segment being encoded by its own thread, committed by a rename.

    ``rec`` is the :class:`~firmware_bridge.recording.writer.Recorder`: its ``path``,
    ``codec`` and ``fps`` set the file, and its ``_segment_done`` hears when the thread ends.
    """

    def __init__(self, rec, first_frame: int, size: tuple[int, int], max_queue: int):
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
