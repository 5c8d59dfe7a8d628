"""The thin :class:`Pipeline`: opens the stages, starts and stops their threads, counts.

The per-frame path, top-down (:meth:`Pipeline._face_loop`): a frame from the
:class:`~edge.pipeline.sources.FrameReader` closes the windows its time has passed
(:meth:`~edge.pipeline.windows.VideoWindows.closed_by`), is measured by the
:class:`~edge.pipeline.face_stage.FaceStage` (track, ROI colour, crop) and taken into the
window history; closed windows go to the inference thread (:meth:`Pipeline._infer_loop`), which
waits for the sensors to reach the window's end (:meth:`~edge.pipeline.windows.SensorSync.wait_for`),
forms and gates the result (:class:`~edge.pipeline.infer.Inference`) and hands it out.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from edge.pipeline import resolve_bundle
from edge.pipeline.face_stage import FaceStage, FrameEvent
from edge.pipeline.infer import Engines, Inference, warm_kernels
from edge.pipeline.sources import (END, FrameReader, SensorReader, get, open_camera_source, open_sensor_source,
                                   put)
from edge.pipeline.windows import HopClock, SensorStore, SensorSync, VideoWindows
from edge.results import STATUS_OK, STATUS_UNKNOWN, Result
from edge.spec import PULSE_MIN_QUALITY, Preprocessing
from firmware_bridge.errors import BadInputError, ConfigError, EmofuseError
from firmware_bridge.recording import Recorder, open_recording

__all__ = ["MODES", "Pipeline", "PipelineOptions"]

log = logging.getLogger("edge.pipeline")

MODES = ("replay", "live")


@dataclass(frozen=True)
class PipelineOptions:
    """How the runtime runs: settings that change no model input (those are the bundle's
    :class:`edge.spec.Preprocessing` record).

    Attributes:
        mode: ``"replay"`` (every frame; sensors in step with the video; the same recording
            gives byte-identical JSON) or ``"live"`` (sources on their own clocks; stale frames
            dropped and counted).
        hop_s: seconds between results (> 0).
        backend: ``"auto"``, ``"onnxruntime"`` or ``"tensorrt"`` (:func:`edge.engine.open_engine`).
        precision: ``"auto"`` (INT8 when the bundle has it), ``"int8"``, ``"fp16"``, ``"fp32"``.
        intra_op_threads: ONNX Runtime threads per engine.
        min_pulse_quality: rPPG heart rates whose quality (the record's ``rppg.hr_gate``:
            :func:`edge.signals.hr.pulse_quality`) is below this are unknown (0..1; 0.5 is the
            fitted gate's operating point, and an SNR of 0 dB for the "snr" gate; the same threshold
            as the default record's ``rppg.tfr_min_quality``, below which the model gets no pulse).
        contact_window_s: window of the reported contact HRV and EDA, s (None: the record's
            ``window_s``); the contact heart rate is the mean over its last pulse window.
        contact_min_s: shortest stretch of contact signal a reported value needs, s (holes up to
            edge.pipeline.infer.CONTACT_BRIDGE_MAX_S are bridged inside it, not a restart).
        contact_tail_s: a contact stream whose last valid sample is older than this at a
            window's end has a gap, s.
        keep_windows: put each window's model inputs in ``Result.window``.
        frame_queue, job_queue: bounded queue sizes (frames, windows).
        sensor_lead_s: replay: how far sensors may run ahead of the window being formed, s.
        record: a folder to record the session into, or None.
        record_codec: the recorder's video codec.
    """

    mode: str = "replay"
    hop_s: float = 1.0
    backend: str = "auto"
    precision: str = "auto"
    intra_op_threads: int = 1
    min_pulse_quality: float = PULSE_MIN_QUALITY
    contact_window_s: float | None = None
    contact_min_s: float = 10.0
    contact_tail_s: float = 1.0
    keep_windows: bool = False
    frame_queue: int = 8
    job_queue: int = 4
    sensor_lead_s: float = 2.0
    record: str | os.PathLike | None = None
    record_codec: str = "ffv1"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("hop_s", "contact_min_s", "contact_tail_s", "sensor_lead_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and value > 0):
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        if self.contact_window_s is not None and not (
                isinstance(self.contact_window_s, (int, float)) and self.contact_window_s > 0):
            raise ConfigError(f"contact_window_s must be a number > 0, got {self.contact_window_s!r}")
        if not (isinstance(self.min_pulse_quality, (int, float)) and 0.0 <= float(self.min_pulse_quality) <= 1.0):
            raise ConfigError(f"min_pulse_quality must be within 0-1, got {self.min_pulse_quality!r}")
        for name in ("frame_queue", "job_queue", "intra_op_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")


def _preprocessing(bundle, preprocessing) -> Preprocessing:
    if bundle is not None:
        return bundle.preprocessing
    if preprocessing is not None:
        if isinstance(preprocessing, Preprocessing):
            return preprocessing
        if isinstance(preprocessing, Mapping):
            return Preprocessing.from_dict(dict(preprocessing))
        raise ConfigError(f"preprocessing must be an edge.spec.Preprocessing record or its dict, got "
                          f"{type(preprocessing).__name__}")
    try:
        return resolve_bundle("default").preprocessing
    except ConfigError as exc:
        raise ConfigError(f"without a bundle the pipeline needs a preprocessing record ({exc})") from None


class Pipeline:
    """Camera + contact sensors -> face tracking, rPPG, contact physiology, emotion model -> results.

    Construction opens everything and fails early: a corrupt bundle, a wrong manifest version,
    an unreadable file or an absent device raise here, before any thread starts. Iterating
    :meth:`results` (or calling :meth:`run`) starts the threads; leaving the iteration (end of
    the sources, ``break``, Ctrl-C, an error) stops them, flushes the recorder and closes every
    source. A pipeline runs once.

    Args:
        camera: a camera URI or path (:func:`firmware_bridge.cameras.open_camera`), a recording
            folder or ``replay://DIR`` (its video), an open camera source (any iterator of
            :class:`~firmware_bridge.types.Frame` with ``close()``), or None (contact only).
        sensors: sensor URIs (:func:`firmware_bridge.sensors.open_sensor`) or open sources
            (iterators of :class:`~firmware_bridge.types.SensorChunk`).
        bundle: see :func:`edge.pipeline.resolve_bundle` (``"default"``, a folder, a Bundle, or None).
        options: a :class:`PipelineOptions` (default: its defaults).
        preprocessing: the :class:`edge.spec.Preprocessing` record (or its manifest dict) when
            running without a bundle (default: the default bundle's); a bundle's own record rules.
        tracker: an object with ``update(frame_bgr) -> state`` (default
            :class:`edge.tracker.FaceTracker` with the record's ``face.tracker`` settings).
        on_frame: called with a :class:`FrameEvent` for every processed frame (in the face
            thread; keep it quick).
        camera_options, sensor_options: keyword options for ``open_camera`` / ``open_sensor``.
        **settings: :class:`PipelineOptions` fields, overriding ``options`` (``mode="live"``).

    Raises:
        ConfigError: bad settings, an unknown URI scheme, a missing default bundle.
        BadInputError: unreadable bundle or recording.
        DeviceError: a device that cannot be opened.
        MissingDependencyError: an optional library a source needs.
    """

    def __init__(self, camera: Any = None, sensors: Iterable[Any] = (), bundle: Any = "default",
                 options: PipelineOptions | None = None, *, preprocessing: Any = None, tracker: Any = None,
                 on_frame: Callable[[FrameEvent], None] | None = None, camera_options: Mapping | None = None,
                 sensor_options: Mapping | None = None, **settings: Any) -> None:
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(PipelineOptions)})
        if unknown:
            raise ConfigError(f"unknown pipeline setting(s) {unknown}")
        self.options = o = dataclasses.replace(options or PipelineOptions(), **settings)
        sensors = [sensors] if isinstance(sensors, (str, os.PathLike)) else list(sensors)
        if camera is None and not sensors:
            raise ConfigError("a pipeline needs a camera, a sensor, or both")
        self.mode, self.hop_s, self.on_frame = o.mode, float(o.hop_s), on_frame
        live = o.mode == "live"
        self._stop = threading.Event()
        self._closed = self._started = False
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self.engines: Engines | None = None
        self.camera = None
        self.sensors: list = []
        self.recorder = None
        try:
            self.bundle = resolve_bundle(bundle)
            self.p = p = _preprocessing(self.bundle, preprocessing)
            self.contact_window_s = float(o.contact_window_s or p.window_s)
            if self.bundle is not None:
                self.engines = Engines(self.bundle, o.backend, o.precision, o.intra_op_threads)
            warm_kernels(p)
            if self.engines is not None:
                self.engines.warmup()
            # The instant live finite sources (sim://, files, recordings) start from.
            origin = time.monotonic_ns() + int(0.2e9) if live else None
            if camera is not None:
                self.camera = open_camera_source(camera, live, origin, camera_options or {})
            for s in sensors:
                self.sensors.append(open_sensor_source(s, live, origin, sensor_options or {}))
            # Crops feed only the model (and kept windows): a signals-only run cuts none.
            self.face = FaceStage(p, tracker, crops=self.engines is not None or o.keep_windows) \
                if self.camera is not None else None
            if o.record is not None:
                self.recorder = Recorder(o.record, codec=o.record_codec, fps=getattr(self.camera, "fps", None) or None,
                                         sources=[("camera", getattr(self.camera, "uri", str(camera)))]
                                         if self.camera is not None else [],
                                         info={"pipeline": {"mode": o.mode, "hop_s": self.hop_s}})
                for s in self.sensors:
                    self.recorder.add_source("sensor", str(getattr(s, "source", repr(s))))
        except BaseException:
            # Sources handed in as objects belong to the pipeline from the call on: close them too.
            self._release()
            for src in [camera, *sensors]:
                if src is not None and not isinstance(src, (str, os.PathLike)) and hasattr(src, "close") \
                        and src is not self.camera and src not in self.sensors:
                    try:
                        src.close()
                    except Exception:  # noqa: BLE001 - already failing; the first error is the one to report
                        log.debug("closing %r failed", src, exc_info=True)
            raise

        hop_ns = int(round(self.hop_s * 1e9))
        # Sensors run at most the lead past the window being formed, which is at most the job
        # queue (and a few in hand) behind the newest window: the rings hold all of that.
        keep_s = max(self.contact_window_s, p.window_s) + o.sensor_lead_s + (o.job_queue + 3) * self.hop_s + 5.0
        self.store = SensorStore(p, keep_s)
        self.sync = SensorSync(len(self.sensors), not live, int(o.sensor_lead_s * 1e9), self._stop)
        self.windows = VideoWindows(p, hop_ns, live, p.window_s + 2 * self.hop_s + 2.0)
        self.clock = HopClock(self.sync, self.store, hop_ns, live, self._stop) if self.camera is None else None
        self.inference = Inference(p, self.store, self.engines, self.camera is not None,
                                   min_pulse_quality=float(o.min_pulse_quality),
                                   contact_window_s=self.contact_window_s, contact_min_s=float(o.contact_min_s),
                                   contact_tail_s=float(o.contact_tail_s), keep_windows=bool(o.keep_windows))
        self._frame_q: queue.Queue = queue.Queue(maxsize=o.frame_queue)
        self._job_q: queue.Queue = queue.Queue(maxsize=o.job_queue)
        self._out_q: queue.Queue = queue.Queue(maxsize=max(4, o.job_queue))
        self.reader = FrameReader(self.camera, self._frame_q, live, self.recorder, self._stop) \
            if self.camera is not None else None
        self.sensor_readers = [SensorReader(i, s, self.store, self.sync, self.recorder, self._stop)
                               for i, s in enumerate(self.sensors)]
        self._latest: Result | None = None
        self.frames_processed = 0
        self.results_made = 0
        self._by_status: collections.Counter = collections.Counter()
        self._by_reason: collections.Counter = collections.Counter()
        self.started_ns: int | None = None

    @classmethod
    def from_recording(cls, path: str | os.PathLike, bundle: Any = "default", *, realtime: bool = False,
                       **kwargs: Any) -> Pipeline:
        """Replay a recording folder (an emofuse recording or a PhysRecorder folder): its video
        (if any) as the camera and all its sensor streams, both ``replay://`` sources.

        Args:
            path: the recording folder.
            bundle: as for :class:`Pipeline`.
            realtime: pace the replay at the recorded times (default: as fast as it goes).
            **kwargs: other :class:`Pipeline` arguments (``mode`` defaults to ``"replay"``).

        Raises:
            BadInputError: not a recording, or one with neither video nor sensors.
        """
        rec = open_recording(path)
        uri = os.fspath(path)  # a recording folder is replay:// in both registries
        if not rec.has_camera and not rec.streams:
            raise BadInputError(f"{path}: the recording holds neither video nor sensor streams")
        for key in ("camera_options", "sensor_options"):
            kwargs[key] = {"realtime": realtime, **dict(kwargs.get(key) or {})}
        return cls(uri if rec.has_camera else None, [uri] if rec.streams else [], bundle, **kwargs)

    # -- public API -----------------------------------------------------------------------------
    @property
    def frames_read(self) -> int:
        return self.reader.frames_read if self.reader is not None else 0

    @property
    def frames_dropped(self) -> int:
        return self.reader.frames_dropped if self.reader is not None else 0

    @property
    def tracker(self):
        return self.face.tracker if self.face is not None else None

    def start(self) -> None:
        """Start the threads (done by :meth:`results` and :meth:`run`). Idempotent.

        Raises:
            ConfigError: the pipeline was closed (it runs once).
        """
        if self._started:
            return
        if self._closed:
            raise ConfigError("this pipeline was closed; make a new one")
        self._started = True
        self.started_ns = time.monotonic_ns()
        if self.camera is not None:
            specs = [("camera", self.reader.run), ("face", self._face_loop)]
        else:
            specs = [("clock", self._clock_loop)]
        specs.append(("infer", self._infer_loop))
        specs += [(f"sensor{r.i}", r.run) for r in self.sensor_readers]
        for name, target in specs:
            self._threads.append(threading.Thread(target=self._guard, args=(target,), name=f"emofuse-{name}",
                                                  daemon=True))
        for th in self._threads:
            th.start()

    def results(self) -> Iterator[Result]:
        """Run the pipeline and yield one :class:`Result` per hop, in order.

        The iteration ends when the camera (or, without one, every sensor) ends; leaving it
        early (``break``, an exception, Ctrl-C) stops the pipeline and closes everything.

        Raises:
            EmofuseError: a stage failed (the first error, after the pipeline is closed).
        """
        self.start()
        try:
            while True:
                item = get(self._out_q, self._stop)
                if item is END:
                    break
                yield item
        finally:
            self.close()
        if self._error is not None:
            raise self._error

    def run(self, callback: Callable[[Result], Any] | None = None) -> dict:
        """Run to the end, calling ``callback(result)`` for each result.

        Returns:
            :meth:`stats` at the end.

        Raises:
            EmofuseError: a stage failed.
        """
        for result in self.results():
            if callback is not None:
                callback(result)
        return self.stats()

    def stop(self) -> None:
        """Ask every stage to stop soon (thread-safe); :meth:`results` then ends."""
        self._stop.set()
        if hasattr(self, "sync"):
            self.sync.wake()
        # Sensor sources and live cameras are built to be closed from another thread, which
        # also wakes a reader blocked in next(); a file camera is closed by its own thread.
        for s in self.sensors:
            try:
                s.close()
            except Exception:  # noqa: BLE001 - closing is best effort; the reader also stops on the flag
                log.debug("closing sensor %r failed", s, exc_info=True)
        if self.camera is not None and getattr(self.camera, "live", False):
            try:
                self.camera.close()
            except Exception:  # noqa: BLE001
                log.debug("closing camera failed", exc_info=True)

    def close(self) -> None:
        """Stop, join the threads, close the sources, flush and close the recorder, release
        the engines. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        for th in self._threads:
            if th is not threading.current_thread():
                th.join(timeout=10.0)
                if th.is_alive():
                    log.warning("thread %s did not stop within 10 s", th.name)
        self._release()

    def _release(self) -> None:
        for src in [self.camera, *self.sensors]:
            if src is None:
                continue
            try:
                src.close()
            except Exception:  # noqa: BLE001
                log.debug("closing %r failed", src, exc_info=True)
        rec, self.recorder = self.recorder, None
        if rec is not None:
            rec.close()
        if self.engines is not None:
            try:
                self.engines.close()
            except Exception:  # noqa: BLE001
                log.debug("engine deactivate failed", exc_info=True)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def metadata(self) -> dict:
        """What runs: mode, hop, bundle and model, engine metadata (backend, precision,
        providers, notes), sources. Plain JSON values."""
        out: dict[str, Any] = {"mode": self.mode, "hop_s": self.hop_s,
                               "camera": None if self.camera is None else str(getattr(self.camera, "uri", self.camera)),
                               "sensors": [str(getattr(s, "source", s)) for s in self.sensors],
                               "min_pulse_quality": float(self.options.min_pulse_quality)}
        if self.bundle is not None:
            m = self.bundle.manifest
            out["bundle"] = {"path": str(self.bundle.root), "model": m.model_name, "version": m.model_version}
            out.update(self.engines.metadata())
        return out

    def stats(self) -> dict:
        """Counters: frames read / processed / dropped / lost, results (and by status and
        reason), why sources ended, per sensor stream chunks, samples, sequence gaps and
        rejected chunks (plus a serial source's own ``stats()`` under ``"serial"``)."""
        lost = max(0, self.frames_read - self.frames_processed - self.frames_dropped)
        with self._lock:
            by_status, by_reason = dict(self._by_status), dict(sorted(self._by_reason.items()))
        out = {"frames_read": self.frames_read, "frames_processed": self.frames_processed,
               "frames_dropped": self.frames_dropped, "frames_lost": lost, "results": self.results_made,
               "results_by_status": by_status, "results_by_reason": by_reason,
               "camera_end_reason": self.reader.end_reason if self.reader is not None else None,
               "sensor_end_reasons": [r.end_reason for r in self.sensor_readers],
               "sensor_samples_read": sum(r.samples_read for r in self.sensor_readers),
               "streams": self.store.snapshot(), "duplicate_chunks": self.store.buffers.n_dropped_chunks,
               "recording": None if self.options.record is None else os.fspath(self.options.record)}
        serial = [s.stats() for s in self.sensors if hasattr(s, "stats") and callable(s.stats)]
        if serial:
            out["serial"] = serial
        if self.face is not None and self.face.stats() is not None:
            out["tracker"] = self.face.stats()
        return out

    def summary(self, files: Iterable[str] = ()) -> str:
        """The end-of-run summary (what the CLI prints on stderr): results by status and reason;
        frames and sensor samples read, dropped and lost; the files written."""
        return format_summary(self.stats(), files)

    # -- threads --------------------------------------------------------------------------------
    def _guard(self, target) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, not lost
            with self._lock:
                if self._error is None:
                    self._error = exc
            if not isinstance(exc, EmofuseError):
                log.error("pipeline thread %s failed", threading.current_thread().name, exc_info=True)
            self.stop()

    def _face_loop(self) -> None:
        """The per-frame path: close windows, measure the frame, take it in."""
        while (item := get(self._frame_q, self._stop)) is not END:
            frame, read_ms = item
            for job in self.windows.closed_by(frame.t_ns):  # a camera gap closes one window per hop
                if not put(self._job_q, job, self._stop):
                    return
            rec = self.face.measure(frame, read_ms)  # track, ROI colour, crop
            done = self.windows.add(rec)  # live: a window whose last frame this is
            self.frames_processed += 1
            if self.on_frame is not None:
                self.on_frame(FrameEvent(frame, rec.box, self.windows.t_s(rec.t_ns), self._latest))
            if done is not None and not put(self._job_q, done, self._stop):
                return
        last = self.windows.finish() if not self._stop.is_set() else None
        if last is not None:
            put(self._job_q, last, self._stop)
        put(self._job_q, END, self._stop)

    def _clock_loop(self) -> None:
        self.clock.run(lambda job: put(self._job_q, job, self._stop))
        put(self._job_q, END, self._stop)

    def _infer_loop(self) -> None:
        contact_only = self.camera is None
        while (job := get(self._job_q, self._stop)) is not END:
            wait_ms = self.sync.wait_for(job.t_end_ns)
            if self._stop.is_set() or (contact_only and self.sync.all_over(job.t_end_ns)):
                break  # without a camera, the session ends where the sensors did
            result = self.inference.compute(job, wait_ms, self.frames_dropped)
            self._latest = result
            with self._lock:
                self.results_made += 1
                self._by_status[result.status] += 1
                self._by_reason.update(result.reasons)
            if not put(self._out_q, result, self._stop):
                return
        put(self._out_q, END, self._stop)


def format_summary(stats: Mapping, files: Iterable[str] = ()) -> str:
    """Lines of the end-of-run summary from :meth:`Pipeline.stats` and the files written."""
    by_status = stats.get("results_by_status") or {}
    status = ", ".join(f"{by_status.get(k, 0)} {k}" for k in (STATUS_OK, STATUS_UNKNOWN))
    lines = [f"emofuse: {stats['results']} results ({status})"]
    by_reason = stats.get("results_by_reason") or {}
    if by_reason:
        lines.append("  reasons: " + ", ".join(f"{k} {n}" for k, n in by_reason.items()))
    if stats.get("frames_read") or stats.get("camera_end_reason"):
        lines.append(f"  frames: {stats['frames_read']} read, {stats['frames_processed']} processed, "
                     f"{stats['frames_dropped']} dropped, {stats['frames_lost']} lost"
                     + (f" ({stats['camera_end_reason']})" if stats.get("camera_end_reason") else ""))
    streams = stats.get("streams") or {}
    if streams:
        lines.append(f"  sensor samples: {stats.get('sensor_samples_read', 0)} read; " + "; ".join(
            f"{k} {v['samples']} kept, {v['rejected']} chunks rejected, {v['seq_gaps']} sequence gaps"
            for k, v in streams.items()))
    if stats.get("duplicate_chunks"):
        lines.append(f"  {stats['duplicate_chunks']} duplicate sensor chunks dropped")
    written = [str(f) for f in files if f] + ([stats["recording"]] if stats.get("recording") else [])
    lines.append("  files: " + (", ".join(written) if written else "none written"))
    return "\n".join(lines)
