"""Replay: what every opened recording shares (:class:`Recording`), and the sources it hands
out: :class:`RecordingCameraSource` (frames, via the camera interface) and
:class:`ReplaySensorSource` (sensor chunks, like a live sensor source), paced together in real
time when asked. The on-disk formats subclass :class:`Recording` in :mod:`.reader` and
:mod:`.importers`.
"""
from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from firmware_bridge.cameras.base import CameraOptions, CameraSource, CameraUri
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.recording.format import Skips
from firmware_bridge.types import Frame, SensorChunk

log = logging.getLogger(__name__)


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
        recording: the :class:`Recording`; its ``skips`` and ``damage`` say what was skipped.
        end_reason: why the iteration ended (None while running); names the skips.
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
            if self.recording.skips:
                self.end_reason += f" ({self.recording.skips.summary()}; see its damage)"
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


class RecordingCameraSource(CameraSource):
    """The frames of a recording, with their recorded times, via the camera interface.

    Every readable frame is delivered in order with its recorded ``t_ns`` (shifted when the
    replay was asked to start at ``origin_ns``), ``index`` and ``gap_before_s``;
    ``dropped_before`` is what the camera dropped plus the frames of the recording skipped
    just before (damaged: their ``Recording.damage`` line says why). ``Frame.source`` is the
    recorded camera's URI. ``realtime=True`` paces frames at their times (shared with the
    recording's sensor replays); the default delivers them as fast as they are read. Made by
    :meth:`Recording.camera`.

    Attributes:
        recording: the :class:`Recording`; its ``skips`` and ``damage`` say what was skipped.
    """

    scheme = "replay"
    OPTIONS = frozenset({"realtime", "origin_ns"})

    def __init__(self, recording: "Recording", realtime: bool, shift_ns: int, pacer: _Pacer):
        display = f"replay://{recording.path}"
        super().__init__(CameraUri(display, "replay", str(recording.path), {}, display),
                         CameraOptions(realtime=bool(realtime)))
        cam = recording.manifest.get("camera") or {}
        self.fps = float(cam.get("fps") or 0.0)
        self.width = int(cam.get("width") or 0)
        self.height = int(cam.get("height") or 0)
        self.recorded_source = str(cam.get("source", ""))
        self.recording = recording
        self.frames_delivered = 0
        self._shift_ns = int(shift_ns)
        self._pacer = pacer
        self._frames = recording._iter_frames()

    def _next_frame(self) -> Frame:
        try:
            t_ns, index, dropped, gap_s, image = next(self._frames)
        except StopIteration:
            self.end_reason = f"end of recording after {self.frames_delivered} frames"
            if self.recording.skips:
                self.end_reason += f" ({self.recording.skips.summary()}; see its damage)"
            self.close()
            raise
        if self.options.realtime:
            self._pacer.wait(t_ns)
        self.frames_delivered += 1
        return Frame(t_ns=t_ns + self._shift_ns, index=index, image=image,
                     source=self.recorded_source, dropped_before=dropped, gap_before_s=gap_s)

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
        damage: one line per problem found (torn tail, damaged bytes or rows, missing
            segment, frame checksum mismatch...); empty for an intact recording. Grows while
            the recording is read (frames are checked as they are decoded).
        skips: :class:`~firmware_bridge.recording.format.Skips`, the counts of rows,
            records and frames skipped as damaged (for a run summary).
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
        self.damage: list[str] = []
        self.skips = Skips()
        self._reported: set[str] = set()
        self._report_lock = threading.Lock()

    def _report(self, line: str, warn: bool = True, **counts: int) -> None:
        """Note a problem once (a second replay of the same recording finds it again):
        append its line to :attr:`damage`, add its counts to :attr:`skips`, log it."""
        with self._report_lock:
            if line in self._reported:
                return
            self._reported.add(line)
            self.damage.append(line)
            self.skips.add(**counts)
        if warn:
            log.warning("%s: %s", self.path, line)

    # Implemented by the formats (_iter_frames or _open_camera, for video).
    def _iter_frames(self) -> Iterator[tuple[int, int, int, float, np.ndarray]]:
        """``(t_ns, index, dropped_before, gap_before_s, image)`` per readable frame."""
        raise NotImplementedError

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

    def _open_camera(self, realtime: bool, shift_ns: int, pacer: _Pacer) -> CameraSource:
        return RecordingCameraSource(self, realtime, shift_ns, pacer)

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
