"""The frame source and the sensor sources: open them by URI, read them in their own threads.

Every source is opened through its registry: cameras by
:func:`firmware_bridge.cameras.open_camera`, sensors by :func:`firmware_bridge.sensors.open_sensor`
(``replay://DIR`` is a recording's sensor streams), so a replay is a source like any other.
A reader takes items from its source, hands them to the recorder, and passes them on:

- :class:`FrameReader`: frames into a bounded queue; in live mode, when the face stage falls
  behind, the oldest waiting frame is dropped and counted, so results stay current;
- :class:`SensorReader`: chunks into the :class:`~edge.pipeline.windows.SensorStore`, admitted
  by the :class:`~edge.pipeline.windows.SensorSync` (in replay, no further than the window being
  formed allows).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from edge.pipeline.windows import SensorStore, SensorSync
from firmware_bridge.cameras import open_camera, parse_camera_uri
from firmware_bridge.errors import BadInputError, SourceEndedError
from firmware_bridge.sensors import open_sensor, parse_sensor_uri
from firmware_bridge.types import SensorChunk

__all__ = ["END", "FrameReader", "SensorReader", "open_camera_source", "open_sensor_source", "put", "get"]

log = logging.getLogger(__name__)

#: Sent down a queue after its last item.
END = object()
_POLL_S = 0.1


def put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put into a bounded queue, waiting for room; False (not put) once ``stop`` is set."""
    while True:
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            if stop.is_set():
                return False


def get(q: queue.Queue, stop: threading.Event) -> Any:
    """Take from a queue, waiting; :data:`END` once ``stop`` is set."""
    while True:
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            if stop.is_set():
                return END


def open_camera_source(camera: Any, live: bool, origin_ns: int | None, options: Mapping):
    """An open camera source from a URI, a path, a recording (``replay://DIR`` or its folder), or
    an open source (returned as is).

    In live mode a finite source (a file, a folder, ``sim://``, a recording) plays at its own
    pace on the host clock from ``origin_ns``, the instant the live sensors start from.

    Raises:
        ConfigError, BadInputError, DeviceError, MissingDependencyError: as
            :func:`firmware_bridge.cameras.open_camera`.
    """
    if hasattr(camera, "__next__"):
        return camera
    opts = dict(options)
    plays_live = str(opts.get("live", "")).lower() in ("1", "true", "yes", "on")
    if live and not plays_live and parse_camera_uri(camera).scheme in ("file", "folder", "sim", "replay"):
        opts.setdefault("realtime", True)
        opts.setdefault("origin_ns", origin_ns)
    return open_camera(camera, **opts)


def open_sensor_source(sensor: Any, live: bool, origin_ns: int | None, options: Mapping):
    """An open sensor source from a URI (``serial://``, ``ble://``, ``lsl://``, ``sim://``,
    ``replay://DIR``) or an open source (returned as is); in live mode ``sim://`` and
    ``replay://`` play in real time from ``origin_ns``.

    Raises:
        as :func:`firmware_bridge.sensors.open_sensor`.
    """
    if hasattr(sensor, "__next__"):
        return sensor
    opts = dict(options)
    if live and parse_sensor_uri(sensor).scheme in ("sim", "replay"):
        opts.setdefault("realtime", True)
        opts.setdefault("origin_ns", origin_ns)
    return open_sensor(sensor, **opts)


class FrameReader:
    """Reads the camera into the frame queue (its own thread), recording each frame.

    Attributes:
        frames_read, frames_dropped: counters (dropped: live mode only, by the source or here).
        end_reason: why the camera stopped.
    """

    def __init__(self, camera, frame_q: queue.Queue, live: bool, recorder, stop: threading.Event) -> None:
        self.camera, self.q, self.live, self.recorder, self._stop = camera, frame_q, live, recorder, stop
        self.frames_read = 0
        self.frames_dropped = 0
        self.end_reason: str | None = None

    def run(self) -> None:
        cam = self.camera
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(cam)
                except StopIteration:
                    self.end_reason = getattr(cam, "end_reason", None) or "camera ended"
                    break
                except SourceEndedError as exc:
                    self.end_reason = str(exc)
                    log.warning("camera ended: %s", exc)
                    break
                except (BadInputError, OSError) as exc:
                    if self.frames_read == 0:
                        raise
                    # A file cut short mid-run: keep what was read.
                    self.end_reason = f"camera failed after {self.frames_read} frames: {exc}"
                    log.warning("%s", self.end_reason)
                    break
                self.frames_read += 1
                if self.recorder is not None:
                    self.recorder.write_frame(frame)
                item = (frame, (time.perf_counter() - t0) * 1e3)
                if not self.live:
                    if not put(self.q, item, self._stop):
                        break
                    continue
                self.frames_dropped += int(frame.dropped_before)
                while True:
                    try:
                        self.q.put_nowait(item)
                        break
                    except queue.Full:
                        try:
                            self.q.get_nowait()
                            self.frames_dropped += 1  # the oldest waiting frame is stale
                        except queue.Empty:
                            pass
        finally:
            try:
                cam.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing camera failed", exc_info=True)
            put(self.q, END, self._stop)


class SensorReader:
    """Reads one sensor source into the store (its own thread), recording each chunk.

    Attributes:
        end_reason: why the source stopped.
        samples_read: samples taken from the source.
    """

    def __init__(self, i: int, source, store: SensorStore, sync: SensorSync, recorder,
                 stop: threading.Event) -> None:
        self.i, self.source, self.store, self.sync, self.recorder, self._stop = i, source, store, sync, recorder, stop
        self.name = str(getattr(source, "source", f"sensor{i}"))
        self.end_reason: str | None = None
        self.samples_read = 0

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    chunk = next(self.source)
                except StopIteration:
                    self.end_reason = getattr(self.source, "end_reason", None) or "sensor ended"
                    break
                except SourceEndedError as exc:
                    if not self._stop.is_set():
                        log.warning("sensor %s ended: %s", self.name, exc)
                    self.end_reason = str(exc)
                    break
                if not isinstance(chunk, SensorChunk):
                    continue
                if self.recorder is not None:
                    self.recorder.write_chunk(chunk)
                n = int(np.shape(chunk.samples)[0])
                if n == 0:
                    continue
                self.samples_read += n
                if not self.sync.admit(self.i, int(chunk.t0_ns)):
                    break
                self.store.push(chunk, self.name)
                fs = float(chunk.fs_hz)
                self.sync.delivered(self.i, int(chunk.t0_ns) + (int(round((n - 1) * 1e9 / fs)) if fs > 0 else 0))
        finally:
            self.sync.end(self.i)

    def close(self) -> None:
        try:
            self.source.close()
        except Exception:  # noqa: BLE001 - closing is best effort; the reader also stops on the flag
            log.debug("closing sensor %r failed", self.source, exc_info=True)
