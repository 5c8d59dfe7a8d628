"""The streaming runtime: camera frames and contact samples in, a :class:`~edge.results.Result` every hop.

::

    camera ──> [read] ──frames──> [face: track, ROI means, crops] ──windows──> [infer] ──> results
    sensors ─> [read, record] ──> StreamBuffers ─────────────────────────────────┘

Each box is a thread; the arrows are bounded queues. The face stage tracks the face
(:class:`edge.tracker.FaceTracker`), takes each frame's skin colour
(:func:`edge.signals.roi.face_rgb`) and face crop (:func:`edge.face.crop_face`) into a short
history, and at every hop boundary hands a window (the frames :func:`edge.preprocess.face_plan`
picks) to the inference stage, which forms the pulse, the TFR and the contact windows with
:mod:`edge.preprocess` (the same functions training uses), measures the heart rates, runs the
bundle's engine and gates the result (:class:`edge.results.Reason`). Every rate, window and
crop size comes from the bundle manifest's ``preprocessing`` dict.

Modes:

- ``"replay"``: every frame is processed, sensors are read in step with the video (each window
  waits until every sensor has delivered past its end, and a sensor never runs more than
  ``sensor_lead_s`` ahead of the video), so the same recording gives the same results, byte
  for byte in their JSON (without the timings);
- ``"live"``: sources run on their own clocks; when the face stage falls behind, the oldest
  waiting frames are dropped and counted (``Result.frames_dropped``), so results stay current.

Without a camera the hop clock follows the sensors (contact-only sessions).

Gating (:class:`edge.results.Reason`): the rPPG heart rate is reported when the face was seen
for 90 % of the pulse window and the spectral SNR quality reaches ``min_pulse_quality`` (a
printed photo, or the synthetic face with ``pulse_amplitude=0``, stays below it); the contact
values need ``contact_min_s`` of uninterrupted signal ending at the window's end; the model
runs only on full windows of every input it takes (training never saw partial ones).

The pulse is computed per window from the window's colour trace (resampled, POS, cleaned),
exactly as training computes it, rather than by the streaming :class:`edge.signals.rppg.RppgStream`:
a continuous stream would differ from the training windows at each window's start. The cost is
under a millisecond per hop for a 10 s window.

Example::

    with Pipeline("clip.avi", ["replay://rec1"], bundle="default") as pipe:
        for result in pipe.results():
            print(result.to_json())
"""
from __future__ import annotations

import collections
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.results import STATUS_OK, STATUS_UNKNOWN, Reason, Result
from firmware_bridge.errors import BadInputError, ConfigError, EmofuseError, SourceEndedError
from firmware_bridge.resample import DEFAULT_MAX_GAP_PERIODS
from firmware_bridge.types import Frame, SensorChunk

__all__ = [
    "CONTACT_ALIASES",
    "DEFAULT_BUNDLE_DIR",
    "MODES",
    "STAGES",
    "FrameEvent",
    "Pipeline",
    "resolve_bundle",
]

log = logging.getLogger(__name__)

MODES = ("replay", "live")

#: Stage names in ``Result.latency_ms``: per frame (mean over the hop's frames) ``read``
#: (camera delivery, video decoding included; for a paced or live camera also the wait for
#: the next frame), ``track``, ``roi``, ``crop``; per window
#: ``assemble`` (picking the window's frames), ``wait`` (replay: waiting for sensors),
#: ``pulse``, ``tfr``, ``contact`` (model contact tensors), ``physio`` (contact heart rate,
#: HRV, EDA), ``encoder`` (MVP facial features), ``engine`` (the model), ``compute`` (all of
#: the inference stage) and ``window`` (from the moment the face stage has taken in the
#: window's last frame to the result: waiting for the next frame, queueing and compute).
STAGES = ("read", "track", "roi", "crop", "assemble", "wait", "pulse", "tfr", "contact", "physio",
          "encoder", "engine", "compute", "window")

#: Sensor stream names accepted for each contact signal, in order of preference.
CONTACT_ALIASES: dict[str, tuple[str, ...]] = {
    "ecg": ("ecg",),
    "ppg": ("ppg", "ppg_ir", "ppg_green", "ppg_red", "bvp"),
    "eda": ("eda", "gsr"),
}

#: Where the package's default bundle lives (``bundle="default"``).
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "default_bundle"

_END = object()
_POLL_S = 0.1
# Beats a contact heart rate needs at least.
_MIN_CONTACT_BEATS = 5
# A heart rate is reported only when the face was seen for this share of the pulse window (the
# model's TFR is formed from half of it, as in training; a rate from a window with seconds of
# no face in it would be a guess).
_MIN_FACE_FRACTION_FOR_HR = 0.9
# ppg_peaks needs >= 20 Hz; a slow PPG (a 20 Hz finger oximeter) is resampled up to this.
_MIN_PPG_RATE_HZ = 50.0


def default_bundle_dir() -> Path:
    """:data:`DEFAULT_BUNDLE_DIR`. Raises ConfigError when it is not installed."""
    if not (DEFAULT_BUNDLE_DIR / "manifest.json").is_file():
        raise ConfigError(f"the default bundle is not installed ({DEFAULT_BUNDLE_DIR}); rebuild it with "
                          "scripts/build_default_bundle.sh, or pass a bundle folder")
    return DEFAULT_BUNDLE_DIR


def recent_heart_rate(peaks: np.ndarray, n_samples: int, fs: float, span_s: float, fallback: float) -> float:
    """Mean heart rate of the beats in the last ``span_s`` of a segment (the contact heart rate
    the pipeline reports), or ``fallback`` when that span holds fewer than
    ``_MIN_CONTACT_BEATS`` beats with valid intervals.

    Args:
        peaks: beat sample indices in the segment (ascending).
        n_samples: segment length, samples.
        fs: sampling rate, Hz.
        span_s: how far back from the segment's end, s.
        fallback: the value to return when the span is too short of beats.
    """
    from edge.signals.hrv import hrv_time

    recent = peaks[peaks >= n_samples - int(round(span_s * fs))]
    h = hrv_time(recent, fs)
    if h.n_beats >= _MIN_CONTACT_BEATS and math.isfinite(h.mean_hr_bpm):
        return float(h.mean_hr_bpm)
    return float(fallback)


def resolve_bundle(bundle: Any):
    """The :class:`edge.bundle.Bundle` a pipeline runs, from what a user passes.

    Args:
        bundle: ``None`` or ``"none"`` (no model), ``"default"`` (the package's bundle in
            :data:`DEFAULT_BUNDLE_DIR`), a bundle folder (str or Path), or a loaded
            :class:`edge.bundle.Bundle`.

    Returns:
        The validated bundle (hashes checked), or None.

    Raises:
        ConfigError: the default bundle is not installed, an unknown schema version or a
            manifest field is invalid (including its preprocessing dict).
        BadInputError: a missing folder or file, a corrupt manifest or a hash mismatch.
    """
    from edge.bundle import Bundle, load_bundle
    from edge.preprocess import check_preprocessing

    if bundle is None or (isinstance(bundle, str) and bundle.lower() == "none"):
        return None
    if isinstance(bundle, str) and bundle == "default":
        bundle = default_bundle_dir()
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    try:
        check_preprocessing(loaded.manifest.preprocessing)
    except ConfigError as exc:
        raise ConfigError(f"{loaded.root}/manifest.json: {exc}") from None
    return loaded


@dataclass(frozen=True)
class FrameEvent:
    """What the face stage saw in one frame, for per-frame consumers (the annotated video).

    Attributes:
        frame: the camera frame.
        box: (x, y, w, h) face box used on it, or None.
        t_s: the frame's time on the session clock, s.
        result: the newest result produced so far (None before the first); in live mode it
            may lag the frame by a hop or two.
    """

    frame: Frame
    box: tuple[float, float, float, float] | None
    t_s: float
    result: Result | None


@dataclass
class _FaceRec:
    t_ns: int
    fid: int
    rgb: np.ndarray
    crop: np.ndarray | None
    box: tuple | None


@dataclass
class _Job:
    seq: int
    t_end_ns: int
    frames: int
    arrival_s: float | None = None
    plan: Any = None
    frame_t: np.ndarray | None = None
    pulse_rgb: np.ndarray | None = None
    clip_crops: list = field(default_factory=list)
    seq_crops: list = field(default_factory=list)
    seq_fids: list = field(default_factory=list)
    box_last: tuple | None = None
    latency: dict = field(default_factory=dict)
    dropped: int = 0


@dataclass
class _StreamStat:
    source: str
    chunks: int = 0
    samples: int = 0
    seq_gaps: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    rejected: int = 0


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
        bundle: see :func:`resolve_bundle` (``"default"``, a folder, a Bundle, or None).
        backend: ``"auto"``, ``"onnxruntime"`` or ``"tensorrt"`` (:func:`edge.engine.open_engine`).
        precision: ``"auto"`` (INT8 when the bundle has it), ``"int8"``, ``"fp16"``, ``"fp32"``.
        mode: ``"replay"`` or ``"live"`` (module docstring).
        hop_s: seconds between results (> 0).
        preprocessing: the preprocessing dict when running without a bundle (default: the
            default bundle's); ignored when a bundle is given (its manifest rules).
        tracker: an object with ``update(frame_bgr) -> TrackState`` (default
            :class:`edge.tracker.FaceTracker`).
        min_pulse_quality: rPPG heart rates whose quality (:func:`edge.signals.hr.snr_quality`
            of the SNR) is below this are reported as unknown (0..1; 0.5 is an SNR of 0 dB).
        contact_window_s: window of the reported contact HRV and EDA, s (default the manifest's
            ``window_s``). The contact heart rate is the mean over the beats of the last
            ``rppg.pulse_window_s`` of it (10 s), the span the rPPG heart rate covers, so the two
            can be compared while the rate changes (the whole window's mean lags by ~30 s).
        contact_min_s: shortest uninterrupted stretch of contact signal a reported value
            needs, s.
        contact_tail_s: a contact stream whose last valid sample is older than this at a
            window's end has a gap, s.
        record: a folder to record the session into (:class:`firmware_bridge.recording.Recorder`),
            or None.
        record_codec: the recorder's video codec.
        on_frame: called with a :class:`FrameEvent` for every processed frame (in the face
            thread; keep it quick).
        keep_windows: put each window's model inputs in ``Result.window``.
        intra_op_threads: ONNX Runtime threads per engine.
        frame_queue, job_queue: bounded queue sizes (frames, windows).
        sensor_lead_s: replay: how far sensors may run ahead of the video, s.
        camera_options, sensor_options: keyword options for ``open_camera`` / ``open_sensor``.

    Raises:
        ConfigError: bad settings, an unknown URI scheme, a missing default bundle.
        BadInputError: unreadable bundle or recording.
        DeviceError: a device that cannot be opened.
        MissingDependencyError: an optional library a source needs.
    """

    def __init__(self, camera: Any = None, sensors: Iterable[Any] = (), bundle: Any = "default", *,
                 backend: str = "auto", precision: str = "auto", mode: str = "replay", hop_s: float = 1.0,
                 preprocessing: Mapping | None = None, tracker: Any = None, min_pulse_quality: float = 0.5,
                 contact_window_s: float | None = None, contact_min_s: float = 10.0,
                 contact_tail_s: float = 1.0, record: str | os.PathLike | None = None,
                 record_codec: str = "ffv1", on_frame: Callable[[FrameEvent], None] | None = None,
                 keep_windows: bool = False, intra_op_threads: int = 1, frame_queue: int = 8,
                 job_queue: int = 4, sensor_lead_s: float = 2.0, camera_options: Mapping | None = None,
                 sensor_options: Mapping | None = None) -> None:
        from edge.preprocess import check_preprocessing

        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        for name, value in (("hop_s", hop_s), ("contact_min_s", contact_min_s), ("contact_tail_s", contact_tail_s),
                            ("sensor_lead_s", sensor_lead_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a number > 0, got {value!r}")
        if not (0.0 <= float(min_pulse_quality) <= 1.0):
            raise ConfigError(f"min_pulse_quality must be within 0-1, got {min_pulse_quality!r}")
        for name, value in (("frame_queue", frame_queue), ("job_queue", job_queue),
                            ("intra_op_threads", intra_op_threads)):
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        sensors = [sensors] if isinstance(sensors, (str, os.PathLike)) else list(sensors)
        if camera is None and not sensors:
            raise ConfigError("a pipeline needs a camera, a sensor, or both")
        self.mode = mode
        self.hop_s = float(hop_s)
        self._hop_ns = int(round(self.hop_s * 1e9))
        self.min_pulse_quality = float(min_pulse_quality)
        self.contact_min_s = float(contact_min_s)
        self.contact_tail_s = float(contact_tail_s)
        self.keep_windows = bool(keep_windows)
        self.on_frame = on_frame
        self.sensor_lead_s = float(sensor_lead_s)

        self._stop = threading.Event()
        self._closed = False
        self._started = False
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._engine = self._encoder = None
        self._live_origin_ns: int | None = None
        self.camera = None
        self.sensors: list = []
        self.recorder = None
        try:
            self.bundle = resolve_bundle(bundle)
            if self.bundle is not None:
                self.p = self.bundle.preprocessing
            elif preprocessing is not None:
                self.p = check_preprocessing(dict(preprocessing))
            else:
                try:
                    self.p = resolve_bundle("default").preprocessing
                except ConfigError as exc:
                    raise ConfigError(f"without a bundle the pipeline needs a preprocessing dict ({exc})") from None
            self.contact_window_s = float(contact_window_s) if contact_window_s else float(self.p["window_s"])
            self._hr_span_s = min(float(self.p["rppg"]["pulse_window_s"]), self.contact_window_s)
            self._open_engines(backend, precision, int(intra_op_threads))
            self._warmup()
            # The instant live finite sources (sim://, files, recordings) start from.
            self._live_origin_ns = time.monotonic_ns() + int(0.2e9) if mode == "live" else None
            self.tracker = tracker
            if camera is not None and self.tracker is None:
                from edge.tracker import FaceTracker

                self.tracker = FaceTracker()
            self.camera = None if camera is None else self._open_camera(camera, dict(camera_options or {}))
            for s in sensors:
                self.sensors.append(self._open_sensor(s, dict(sensor_options or {})))
            if record is not None:
                from firmware_bridge.recording import Recorder

                self.recorder = Recorder(record, codec=record_codec, fps=getattr(self.camera, "fps", None) or None,
                                         sources=[("camera", getattr(self.camera, "uri", str(camera)))] if self.camera
                                         is not None else [],
                                         info={"pipeline": {"mode": mode, "hop_s": self.hop_s}})
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

        from firmware_bridge.buffers import StreamBuffers

        keep_s = max(self.contact_window_s, float(self.p["window_s"])) + self.sensor_lead_s \
            + (int(job_queue) + 3) * self.hop_s + 5.0
        # A silence of up to 2.5 sample periods is bridged, as the resampler does by default:
        # irregular streams (a 20 Hz finger oximeter's CSV) jitter past 1.5 periods.
        self.buffers = StreamBuffers(seconds=keep_s, gap_periods=DEFAULT_MAX_GAP_PERIODS)
        self._frame_q: queue.Queue = queue.Queue(maxsize=int(frame_queue))
        self._job_q: queue.Queue = queue.Queue(maxsize=int(job_queue))
        self._out_q: queue.Queue = queue.Queue(maxsize=max(4, int(job_queue)))
        self._origin_ns: int | None = None
        self._clock_wm_ns: int | None = None  # the video (or hop clock) has reached this time
        self._sensor_wm_ns = [None] * len(self.sensors)
        self._sensor_ended = [False] * len(self.sensors)
        self._sensor_started = [False] * len(self.sensors)
        self._first_sample_ns: dict[str, int] = {}
        self._stream_keys: dict[tuple[str, str], str] = {}
        self._units: dict[str, str] = {}
        self._stream_stats: dict[str, _StreamStat] = {}
        self._feat_cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._latest: Result | None = None
        self.frames_read = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.results_made = 0
        self.camera_end_reason: str | None = None
        self.sensor_end_reasons: list[str | None] = [None] * len(self.sensors)
        self.started_ns: int | None = None

    # -- opening ------------------------------------------------------------------------------
    def _open_engines(self, backend: str, precision: str, threads: int) -> None:
        if self.bundle is None:
            return
        from edge.engine import open_engine
        from edge.engine.base import graph_specs

        ort = {"intra_op_threads": threads, "inter_op_threads": 1}
        self._engine = open_engine(self.bundle, backend, precision, **ort)
        self._engine.activate()
        self.input_names = [s.name for s in self.bundle.inputs]
        if "face_feats" in self.input_names:
            self._encoder = open_engine(self.bundle, backend, precision, role="face_encoder", **ort)
            self._encoder.activate()
            ins, outs = graph_specs(self.bundle, "face_encoder")
            self._enc_in, self._enc_out = ins[0].name, outs[0].name
        labels = self.bundle.manifest.labels or {}
        self._labels = {k: list(labels.get(k) or ["low", "high"]) for k in ("valence", "arousal")}

    def _open_camera(self, camera: Any, options: dict):
        if hasattr(camera, "__next__"):
            return camera
        from firmware_bridge.recording import is_recording, open_recording

        live = self.mode == "live"
        text = os.fspath(camera) if isinstance(camera, (str, os.PathLike)) else camera
        if isinstance(text, str) and (text.startswith("replay://") or is_recording(text)):
            path = text[len("replay://"):] if text.startswith("replay://") else text
            return open_recording(path).camera(realtime=bool(options.pop("realtime", live)),
                                               origin_ns=options.pop("origin_ns", self._live_origin_ns))
        from firmware_bridge.cameras import open_camera, parse_camera_uri

        plays_live = str(options.get("live", "")).lower() in ("1", "true", "yes", "on")
        if live and not plays_live and parse_camera_uri(camera).scheme in ("file", "folder", "sim"):
            # A finite source run live plays at its own pace, on the host clock the live
            # sensors use (and a sim:// sensor starts at the same instant).
            options.setdefault("realtime", True)
            options.setdefault("origin_ns", self._live_origin_ns)
        return open_camera(camera, **options)

    def _open_sensor(self, sensor: Any, options: dict):
        if hasattr(sensor, "__next__"):
            return sensor
        from firmware_bridge.sensors import open_sensor, parse_sensor_uri

        if self.mode == "live" and parse_sensor_uri(sensor).scheme in ("sim", "replay"):
            options.setdefault("realtime", True)
            options.setdefault("origin_ns", self._live_origin_ns)
        return open_sensor(sensor, **options)

    @classmethod
    def from_recording(cls, path: str | os.PathLike, bundle: Any = "default", *, realtime: bool = False,
                       **kwargs: Any) -> "Pipeline":
        """Replay a recording folder (:func:`firmware_bridge.recording.open_recording`): its
        video (if any) and all its sensor streams.

        Args:
            path: the recording folder (an emofuse recording or a PhysRecorder folder).
            bundle: as for :class:`Pipeline`.
            realtime: pace the replay at the recorded times (default: as fast as it goes).
            **kwargs: other :class:`Pipeline` arguments (``mode`` defaults to ``"replay"``).

        Raises:
            BadInputError: not a recording, or one with neither video nor sensors.
        """
        from firmware_bridge.recording import open_recording

        rec = open_recording(path)
        camera = rec.camera(realtime=realtime) if rec.has_camera else None
        sensors = [rec.sensors(realtime=realtime)] if rec.streams else []
        if camera is None and not sensors:
            raise BadInputError(f"{path}: the recording holds neither video nor sensor streams")
        try:
            return cls(camera, sensors, bundle, **kwargs)
        except BaseException:
            if camera is not None:
                camera.close()
            for s in sensors:
                s.close()
            raise

    def _warmup(self) -> None:
        """Compile (or load from Numba's cache) every kernel and run the engines once, so the
        first window does not wait for a compiler."""
        from edge.preprocess import contact_inputs, face_inputs, face_plan
        from edge.signals import roi, rppg, tfr
        from edge.signals.ecg import ecg_peaks
        from edge.signals.eda import eda_decompose, eda_scr
        from edge.signals.hrv import hrv_time
        from edge.signals.ppg import ppg_peaks

        for kernels in (roi, rppg, tfr):
            kernels.warmup()
        p = self.p
        fps = float(p["fps"])
        n = int(round(float(p["rppg"]["pulse_window_s"]) * fps)) + 2
        t = np.arange(n) / fps
        rgb = np.column_stack([120 + np.sin(6 * t), 100 + np.cos(6 * t), 80 + np.sin(3 * t)])
        plan = face_plan(t, t[-1] + 1.0 / fps, p)
        face_inputs(plan, t, rgb[plan.pulse_idx], [None] * len(plan.clip_idx), [None] * len(plan.seq_idx), p)
        rate, m = float(p["contact"]["rate_hz"]), int(p["contact"]["n_samples"])
        y = np.sin(np.arange(m) / rate * 2 * np.pi * 1.2) + 5.0
        contact_inputs({"ppg": (y, np.ones(m, bool)), "eda": (y, np.ones(m, bool))}, p)
        ecg = np.sin(np.arange(2500) / 250.0 * 2 * np.pi * 1.2)
        # Sensor windows reach the kernels as read-only views, which Numba types apart from
        # writable arrays: warm both, or the first full window pays a second compile.
        ecg_ro, y_ro = ecg.copy(), y.copy()
        ecg_ro.flags.writeable = y_ro.flags.writeable = False
        for e, v in ((ecg, y), (ecg_ro, y_ro)):
            ecg_peaks(e, 250.0)
            ppg_peaks(v, max(rate, 20.0))
            eda_scr(v, rate)
            eda_decompose(v, rate)
        hrv_time(np.arange(0, 600, 25), 25.0)
        if self._engine is not None:
            self._engine.warmup(2)
        if self._encoder is not None:
            self._encoder.warmup(2)

    # -- public API -----------------------------------------------------------------------------
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
        specs = []
        if self.camera is not None:
            specs += [("camera", self._camera_loop, ()), ("face", self._face_loop, ())]
        else:
            specs.append(("clock", self._clock_loop, ()))
        specs.append(("infer", self._infer_loop, ()))
        for i, s in enumerate(self.sensors):
            specs.append((f"sensor{i}", self._sensor_loop, (i, s)))
        for name, target, args in specs:
            th = threading.Thread(target=self._guard, args=(target, *args), name=f"emofuse-{name}", daemon=True)
            self._threads.append(th)
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
                try:
                    item = self._out_q.get(timeout=_POLL_S)
                except queue.Empty:
                    if self._stop.is_set():
                        break
                    continue
                if item is _END:
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
        with self._cond:
            self._cond.notify_all()
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
        if self.camera is not None:
            try:
                self.camera.close()
            except Exception:  # noqa: BLE001
                log.debug("closing camera failed", exc_info=True)
        for s in self.sensors:
            try:
                s.close()
            except Exception:  # noqa: BLE001
                log.debug("closing sensor failed", exc_info=True)
        rec, self.recorder = self.recorder, None
        if rec is not None:
            rec.close()
        for eng in (self._engine, self._encoder):
            if eng is not None:
                try:
                    eng.deactivate()
                except Exception:  # noqa: BLE001
                    log.debug("engine deactivate failed", exc_info=True)

    def __enter__(self) -> "Pipeline":
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
                               "min_pulse_quality": self.min_pulse_quality}
        if self.bundle is not None:
            m = self.bundle.manifest
            out["bundle"] = {"path": str(self.bundle.root), "model": m.model_name, "version": m.model_version}
            out["engine"] = dict(self._engine.metadata) if self._engine is not None else None
            if self._encoder is not None:
                out["face_encoder"] = dict(self._encoder.metadata)
        return out

    def stats(self) -> dict:
        """Counters: frames read / processed / dropped, results, why sources ended, and per
        sensor stream chunks, samples and sequence gaps (plus a serial source's own
        ``stats()`` under ``"serial"``)."""
        with self._lock:
            streams = {k: dict(vars(v)) for k, v in sorted(self._stream_stats.items())}
        out = {"frames_read": self.frames_read, "frames_processed": self.frames_processed,
               "frames_dropped": self.frames_dropped, "results": self.results_made,
               "camera_end_reason": self.camera_end_reason, "sensor_end_reasons": list(self.sensor_end_reasons),
               "streams": streams, "duplicate_chunks": self.buffers.n_dropped_chunks}
        serial = [s.stats() for s in self.sensors if hasattr(s, "stats") and callable(s.stats)]
        if serial:
            out["serial"] = serial
        if self.tracker is not None and hasattr(self.tracker, "detections"):
            out["tracker"] = {"frames": self.tracker.frames, "detections": self.tracker.detections,
                              "full_searches": getattr(self.tracker, "full_searches", None)}
        return out

    # -- thread plumbing ----------------------------------------------------------------------
    def _guard(self, target, *args) -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, not lost
            with self._lock:
                if self._error is None:
                    self._error = exc
            if not isinstance(exc, EmofuseError):
                log.error("pipeline thread %s failed", threading.current_thread().name, exc_info=True)
            self.stop()

    def _put(self, q: queue.Queue, item: Any) -> bool:
        while True:
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                if self._stop.is_set():
                    return False

    def _get(self, q: queue.Queue) -> Any:
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return _END

    # -- camera ---------------------------------------------------------------------------------
    def _camera_loop(self) -> None:
        live = self.mode == "live"
        cam = self.camera
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    frame = next(cam)
                except StopIteration:
                    self.camera_end_reason = getattr(cam, "end_reason", None) or "camera ended"
                    break
                except SourceEndedError as exc:
                    self.camera_end_reason = str(exc)
                    log.warning("camera ended: %s", exc)
                    break
                except (BadInputError, OSError) as exc:
                    if self.frames_read == 0:
                        raise
                    # A file cut short mid-run: keep what was read.
                    self.camera_end_reason = f"camera failed after {self.frames_read} frames: {exc}"
                    log.warning("%s", self.camera_end_reason)
                    break
                arrival = time.perf_counter()
                self.frames_read += 1
                if self.recorder is not None:
                    self.recorder.write_frame(frame)
                item = (frame, arrival, (arrival - t0) * 1e3)
                if live:
                    self.frames_dropped += int(frame.dropped_before)
                    while True:
                        try:
                            self._frame_q.put_nowait(item)
                            break
                        except queue.Full:
                            try:
                                self._frame_q.get_nowait()
                                self.frames_dropped += 1  # the oldest waiting frame is stale
                            except queue.Empty:
                                pass
                elif not self._put(self._frame_q, item):
                    break
        finally:
            try:
                cam.close()
            except Exception:  # noqa: BLE001
                log.debug("closing camera failed", exc_info=True)
            self._put(self._frame_q, _END)

    # -- face -------------------------------------------------------------------------------------
    def _face_loop(self) -> None:
        from edge.face import crop_face
        from edge.signals.roi import face_rgb

        p = self.p
        size, margin = int(p["face"]["crop_size"]), float(p["face"]["crop_margin"])
        skin = p["rppg"]["skin"]
        keep_ns = int((float(p["window_s"]) + 2 * self.hop_s + 2.0) * 1e9)
        history: collections.deque[_FaceRec] = collections.deque()
        sums = {"read": 0.0, "track": 0.0, "roi": 0.0, "crop": 0.0}
        frames_in_hop = 0
        last_arrival = None
        next_end = None
        seq = 0
        fid = 0
        dropped_seen = 0
        live = self.mode == "live"
        period_ns = int(round(1e9 / float(p["fps"])))  # refined from the frames as they come
        last_t_ns = None

        def emit() -> bool:
            """Send the window ending at ``next_end`` and start the next hop; False once stopped."""
            nonlocal seq, next_end, sums, frames_in_hop, dropped_seen
            job = self._make_job(seq, next_end, history, sums, frames_in_hop, last_arrival, period_ns,
                                 self.frames_dropped - dropped_seen)
            dropped_seen = self.frames_dropped
            sums = dict.fromkeys(sums, 0.0)
            frames_in_hop = 0
            if not self._put(self._job_q, job):
                return False
            seq += 1
            next_end += self._hop_ns
            return True

        while True:
            item = self._get(self._frame_q)
            if item is _END:
                break
            frame, arrival, read_ms = item
            if last_t_ns is not None and frame.t_ns > last_t_ns:
                period_ns = int(0.9 * period_ns + 0.1 * (frame.t_ns - last_t_ns))
            last_t_ns = int(frame.t_ns)
            if self._origin_ns is None:
                self._origin_ns = int(frame.t_ns)
                next_end = self._origin_ns + self._hop_ns
            # Windows whose end this frame has passed are complete.
            while frame.t_ns >= next_end:
                if not emit():
                    return
            t0 = time.perf_counter()
            state = self.tracker.update(frame.image)
            t1 = time.perf_counter()
            box = state.box
            if box is not None:
                rgb = face_rgb(frame.image, box, skin=skin)
                t2 = time.perf_counter()
                crop = crop_face(frame.image, box, size, margin)
            else:
                rgb = np.full(3, np.nan)
                t2 = time.perf_counter()
                crop = None
            t3 = time.perf_counter()
            sums["read"] += read_ms
            sums["track"] += (t1 - t0) * 1e3
            sums["roi"] += (t2 - t1) * 1e3
            sums["crop"] += (t3 - t2) * 1e3
            history.append(_FaceRec(int(frame.t_ns), fid, rgb, crop, box))
            fid += 1
            while history and history[0].t_ns < frame.t_ns - keep_ns:
                history.popleft()
            frames_in_hop += 1
            # Latency is counted from here: the window's last frame has been taken in (in a
            # replay the reader runs ahead, so its read time would count queueing too).
            last_arrival = time.perf_counter()
            self.frames_processed += 1
            with self._cond:
                self._clock_wm_ns = int(frame.t_ns)
                self._cond.notify_all()
            if self.on_frame is not None:
                self.on_frame(FrameEvent(frame, box, (frame.t_ns - self._origin_ns) / 1e9, self._latest))
            # Live: a window whose last frame this is goes out now rather than when the next
            # frame arrives (a frame period later), as long as the next frame cannot fall
            # inside it.
            if live and frame.t_ns + period_ns >= next_end - period_ns // 10:
                if not emit():
                    return
        # A video that ends on a hop boundary (its last frame one period before it) completes
        # that last window too.
        if not self._stop.is_set() and last_t_ns is not None and next_end is not None \
                and last_t_ns + period_ns >= next_end - period_ns // 10:
            self._put(self._job_q, self._make_job(seq, next_end, history, sums, frames_in_hop, last_arrival,
                                                  period_ns, self.frames_dropped - dropped_seen))
        self._put(self._job_q, _END)

    def _make_job(self, seq: int, t_end_ns: int, history, sums: dict, frames: int, arrival, period_ns: int,
                  dropped: int) -> _Job:
        from edge.preprocess import face_plan

        t0 = time.perf_counter()
        job = _Job(seq, t_end_ns, frames, arrival, dropped=dropped)
        recs = [r for r in history if r.t_ns < t_end_ns]
        if recs:
            t_ns = np.fromiter((r.t_ns for r in recs), np.int64, len(recs))
            t_s = (t_ns - self._origin_ns) / 1e9
            if t_s.size > 1:
                period_s = float(np.median(np.diff(t_s)))
            else:
                period_s = period_ns / 1e9
            plan = face_plan(t_s, (t_end_ns - self._origin_ns) / 1e9, self.p, period_s=period_s)
            job.plan, job.frame_t = plan, t_s
            job.pulse_rgb = np.array([recs[i].rgb for i in plan.pulse_idx], dtype=np.float64).reshape(-1, 3)
            job.clip_crops = [recs[i].crop if i >= 0 else None for i in plan.clip_idx]
            job.seq_crops = [recs[i].crop if i >= 0 else None for i in plan.seq_idx]
            job.seq_fids = [recs[i].fid if i >= 0 else -1 for i in plan.seq_idx]
            job.box_last = recs[-1].box
        n = max(frames, 1)
        job.latency = {k: v / n for k, v in sums.items()}
        job.latency["assemble"] = (time.perf_counter() - t0) * 1e3
        return job

    # -- hop clock without a camera -------------------------------------------------------------
    def _clock_loop(self) -> None:
        with self._cond:
            # The origin is the earliest first sample, once every sensor has delivered (or
            # ended): the same for every replay of a recording.
            while not self._stop.is_set() and not all(s or e for s, e in zip(self._sensor_started,
                                                                                self._sensor_ended)):
                self._cond.wait(_POLL_S)
            if self._first_sample_ns:
                self._origin_ns = min(self._first_sample_ns.values())
        seq = 0
        if self._origin_ns is not None:
            t_end = self._origin_ns + self._hop_ns
            while not self._stop.is_set():
                with self._cond:
                    # After the sensors end, a last window is made when they reached (within a
                    # tenth of a second) its end.
                    if all(self._sensor_ended) and all(w is None or w < t_end - int(0.1e9)
                                                       for w in self._sensor_wm_ns):
                        break
                    self._clock_wm_ns = t_end
                    self._cond.notify_all()
                if self.mode == "live":
                    # Live sensors are on the host clock: a window is due once its end has
                    # passed (plus a little for the last block to arrive).
                    while not self._stop.is_set() and time.monotonic_ns() < t_end + int(0.05e9):
                        if all(self._sensor_ended):
                            break
                        time.sleep(min(_POLL_S, max(0.0, (t_end + 0.05e9 - time.monotonic_ns()) / 1e9)))
                job = _Job(seq, t_end, 0, time.perf_counter())
                if not self._put(self._job_q, job):
                    return
                seq += 1
                t_end += self._hop_ns
        self._put(self._job_q, _END)

    # -- sensors --------------------------------------------------------------------------------
    def _sensor_loop(self, i: int, source) -> None:
        replay = self.mode == "replay"
        lead_ns = int(self.sensor_lead_s * 1e9)
        src_name = str(getattr(source, "source", f"sensor{i}"))
        try:
            while not self._stop.is_set():
                try:
                    chunk = next(source)
                except StopIteration:
                    self.sensor_end_reasons[i] = getattr(source, "end_reason", None) or "sensor ended"
                    break
                except SourceEndedError as exc:
                    if not self._stop.is_set():
                        log.warning("sensor %s ended: %s", src_name, exc)
                    self.sensor_end_reasons[i] = str(exc)
                    break
                if not isinstance(chunk, SensorChunk):
                    continue
                if self.recorder is not None:
                    self.recorder.write_chunk(chunk)
                n = int(np.shape(chunk.samples)[0])
                if n == 0:
                    continue
                fs = float(chunk.fs_hz)
                t_last = int(chunk.t0_ns) + (int(round((n - 1) * 1e9 / fs)) if fs > 0 else 0)
                if replay:
                    with self._cond:
                        # Everything before this chunk is known: publish that, then wait for
                        # the video to come close enough.
                        self._sensor_wm_ns[i] = max(self._sensor_wm_ns[i] or chunk.t0_ns - 1, chunk.t0_ns - 1)
                        self._cond.notify_all()
                        while not self._stop.is_set() and self.camera is not None and (
                                self._clock_wm_ns is None or chunk.t0_ns > self._clock_wm_ns + lead_ns):
                            self._cond.wait(_POLL_S)
                        # Without a camera the hop clock starts once every sensor has given its
                        # first chunk; until then a sensor must not run ahead (its ring would
                        # drop the start of the recording under a slow consumer).
                        while not self._stop.is_set() and self.camera is None and (
                                (self._clock_wm_ns is None and self._sensor_started[i])
                                or (self._clock_wm_ns is not None and chunk.t0_ns > self._clock_wm_ns + lead_ns)):
                            self._cond.wait(_POLL_S)
                if self._stop.is_set():
                    break
                self._push(chunk, src_name, n)
                with self._cond:
                    self._sensor_wm_ns[i] = max(self._sensor_wm_ns[i] or t_last, t_last)
                    self._sensor_started[i] = True
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._sensor_ended[i] = True
                self._cond.notify_all()

    def _push(self, chunk: SensorChunk, src_name: str, n: int) -> None:
        ident = (src_name, chunk.stream)
        key = self._stream_keys.get(ident)
        if key is None:
            key, k = chunk.stream, 1
            while key in self._stream_keys.values():
                k += 1
                key = f"{chunk.stream}_{k}"
            self._stream_keys[ident] = key
            if key != chunk.stream:
                log.warning("stream %r of %s is called %r here (another sensor has %r)", chunk.stream, src_name,
                            key, chunk.stream)
        if key != chunk.stream:
            chunk = SensorChunk(key, chunk.fs_hz, chunk.t0_ns, chunk.samples, chunk.units, chunk.seq,
                                chunk.device_t0_us, chunk.source, chunk.meta)
        with self._lock:
            st = self._stream_stats.get(key)
            if st is None:
                st = self._stream_stats[key] = _StreamStat(src_name)
            seq = int(chunk.seq)
            if seq >= 0:
                if st.last_seq is not None and seq != st.last_seq + 1 and not (seq == 0 and st.last_seq == 0xFFFF):
                    st.seq_gaps += 1
                if st.first_seq is None:
                    st.first_seq = seq
                st.last_seq = seq
            st.chunks += 1
            st.samples += n
            self._units[key] = chunk.units
            self._first_sample_ns.setdefault(key, int(chunk.t0_ns))
        try:
            self.buffers.push(chunk)
        except BadInputError as exc:
            with self._lock:
                st.rejected += 1
            log.warning("sensor chunk rejected: %s", exc)

    # -- inference ------------------------------------------------------------------------------
    def _infer_loop(self) -> None:
        while True:
            job = self._get(self._job_q)
            if job is _END:
                break
            wait_ms = self._wait_for_sensors(job.t_end_ns) if self.mode == "replay" else 0.0
            if self._stop.is_set():
                break
            result = self._compute(job, wait_ms)
            self._latest = result
            self.results_made += 1
            if not self._put(self._out_q, result):
                return
        self._put(self._out_q, _END)

    def _wait_for_sensors(self, t_end_ns: int) -> float:
        # Data up to a little past the window's end: the resampler's last interval and the
        # anti-alias box reach beyond the last grid point.
        need = t_end_ns + int(0.1e9)
        t0 = time.perf_counter()
        with self._cond:
            while not self._stop.is_set():
                if all(e or (w is not None and w >= need) for w, e in zip(self._sensor_wm_ns, self._sensor_ended)):
                    break
                self._cond.wait(_POLL_S)
        return (time.perf_counter() - t0) * 1e3

    def _stream_for(self, signal: str) -> str | None:
        have = set(self.buffers.streams())
        for name in CONTACT_ALIASES.get(signal, (signal,)):
            if name in have:
                return name
        return None

    def _compute(self, job: _Job, wait_ms: float) -> Result:
        from edge.preprocess import Window, contact_inputs, face_inputs

        p = self.p
        started = time.perf_counter()
        lat = dict(job.latency)
        lat["wait"] = wait_ms
        reasons: set[Reason] = set()
        t_s = (job.t_end_ns - self._origin_ns) / 1e9
        fps = float(p["fps"])
        pulse_window_s = float(p["rppg"]["pulse_window_s"])

        # Face: pulse, TFR, crops, rPPG heart rate.
        fi = None
        hr = quality = snr = None
        face_present = job.box_last is not None
        if self.camera is not None:
            if job.plan is not None:
                fi = face_inputs(job.plan, job.frame_t, job.pulse_rgb, job.clip_crops, job.seq_crops, p, timings=lat)
            if t_s < pulse_window_s - 1e-9:
                reasons.add(Reason.WARMING_UP)
            elif not face_present or fi is None or not fi.pulse.ok \
                    or fi.pulse.valid_fraction < _MIN_FACE_FRACTION_FOR_HR:
                reasons.add(Reason.NO_FACE)
            else:
                from edge.signals.hr import heart_rate

                band = p["rppg"]["clean"]
                h = heart_rate(fi.pulse.pulse, fps, float(band["lo"]), float(band["hi"]))
                snr = h.snr_db if math.isfinite(h.snr_db) else None
                quality = h.quality
                if math.isfinite(h.hr_bpm) and h.quality >= self.min_pulse_quality:
                    hr = h.hr_bpm
                else:
                    reasons.add(Reason.LOW_PULSE_QUALITY)

        # Contact: the model's tensors and the reported physiology.
        t1 = time.perf_counter()
        ci = self._contact_tensors(job.t_end_ns, contact_inputs)
        lat["contact"] = (time.perf_counter() - t1) * 1e3
        t1 = time.perf_counter()
        physio, physio_reasons = self._physio(job.t_end_ns)
        reasons |= physio_reasons
        lat["physio"] = (time.perf_counter() - t1) * 1e3

        # Model.
        window = None
        if fi is not None or ci is not None:
            s = int(p["face"]["crop_size"])
            n_clip, n_seq = int(p["face"]["clip_frames"]), int(p["face"]["seq_frames"])
            f_rows, t_cols = (int(v) for v in p["tfr"]["shape"])
            window = Window(
                face_clip=fi.face_clip if fi is not None else np.zeros((n_clip, s, s, 3), np.uint8),
                tfr=fi.tfr if fi is not None else np.zeros((f_rows, t_cols), np.float32),
                contact=ci.contact, contact_level=ci.contact_level,
                face_seq_crops=fi.face_seq_crops if fi is not None else np.zeros((n_seq, s, s, 3), np.uint8),
                face_present=bool(fi.face_present) if fi is not None else False,
                contact_present=ci.contact_present, level_present=ci.level_present)
        probs = None
        if self._engine is not None:
            missing = self._missing_inputs(job, fi, ci, t_s)
            if missing:
                reasons |= missing
                reasons.add(Reason.MODEL_INPUT_MISSING)
            else:
                feats = None
                if self._encoder is not None:
                    t1 = time.perf_counter()
                    feats = self._face_feats(job)
                    lat["encoder"] = (time.perf_counter() - t1) * 1e3
                from edge.preprocess import model_feeds

                feeds = model_feeds(window, self.input_names, feats)
                t1 = time.perf_counter()
                out = self._engine.run(feeds)
                lat["engine"] = (time.perf_counter() - t1) * 1e3
                probs = {k: tuple(float(v) for v in out[f"{k}_prob"][0]) for k in ("valence", "arousal")}

        done = time.perf_counter()
        lat["compute"] = (done - started) * 1e3
        if job.arrival_s is not None:
            lat["window"] = (done - job.arrival_s) * 1e3
        va = {}
        for k in ("valence", "arousal"):
            if probs is None:
                va[k] = (None, None)
            else:
                pr = probs[k]
                va[k] = (pr, self._labels[k][int(np.argmax(pr))])
        pulse = fi.pulse.pulse if fi is not None and fi.pulse.ok else None
        return Result(
            t_s=t_s, seq=job.seq, status=STATUS_OK if not reasons else STATUS_UNKNOWN,
            reasons=tuple(reasons), face_present=bool(face_present),
            face_box=None if job.box_last is None else tuple(float(v) for v in job.box_last),
            hr_bpm=hr, hr_quality=quality, hr_snr_db=snr, **physio,
            valence_prob=va["valence"][0], arousal_prob=va["arousal"][0],
            valence=va["valence"][1], arousal=va["arousal"][1],
            latency_ms=lat, frames=job.frames, frames_dropped=self.frames_dropped,
            pulse=None if pulse is None else pulse.astype(np.float32), pulse_fs_hz=fps if pulse is not None else None,
            tfr=fi.tfr if fi is not None and fi.pulse.ok else None,
            window=window if self.keep_windows else None,
        )

    def _contact_tensors(self, t_end_ns: int, contact_inputs):
        from edge.preprocess import ecg_level_hr

        p = self.p
        pc = p["contact"]
        rate, n = float(pc["rate_hz"]), int(pc["n_samples"])
        grids = {}
        for name in pc["streams"]:
            stream = self._stream_for(name)
            if stream is None:
                continue
            w = self.buffers.window(stream, t_end_ns, n / rate, rate, antialias=bool(pc["antialias"]))
            if w.samples.ndim != 1:
                continue  # a multi-channel stream is not a contact row
            grids[name] = (np.asarray(w.samples), np.asarray(w.valid))
        ecg_hr = math.nan
        ecg = self._stream_for("ecg")
        if "ppg" not in grids and ecg is not None:
            fs = self.buffers.fs_hz(ecg)
            w = self.buffers.window(ecg, t_end_ns, float(p["window_s"]), fs)
            t_rel = (w.t_ns - t_end_ns) / 1e9
            ecg_hr = ecg_level_hr(t_rel, w.samples, t_rel[0], 0.0, int(p["contact_level"]["min_beats"]))
        eda = self._stream_for("eda")
        return contact_inputs(grids, p, eda_units=self._units.get(eda) if eda else None, ecg_hr_bpm=ecg_hr)

    def _latest_run(self, stream: str, t_end_ns: int, seconds: float, rate: float):
        """The newest uninterrupted stretch of a stream's window, or why there is none."""
        w = self.buffers.window(stream, t_end_ns, seconds, rate)
        valid = np.asarray(w.valid)
        if valid.ndim != 1 or np.asarray(w.samples).ndim != 1:
            return None, None
        if not valid.any():
            return None, Reason.CONTACT_GAP
        last = int(np.flatnonzero(valid)[-1])
        if (valid.size - 1 - last) / rate > self.contact_tail_s:
            return None, Reason.CONTACT_GAP
        holes = np.flatnonzero(~valid[:last + 1])
        start = int(holes[-1]) + 1 if holes.size else 0
        if (last + 1 - start) / rate < self.contact_min_s:
            # A stream that has just begun is warming up; one that had data before the hole
            # has a gap.
            return None, Reason.CONTACT_GAP if valid[:start].any() else Reason.WARMING_UP
        return np.asarray(w.samples[start:last + 1], dtype=np.float64), None

    def _physio(self, t_end_ns: int) -> tuple[dict, set]:
        from edge.signals.ecg import ecg_peaks
        from edge.signals.eda import eda_decompose, eda_scr
        from edge.signals.hrv import hrv_time
        from edge.signals.ppg import ppg_peaks

        out: dict[str, Any] = {"contact_present": False, "contact_hr_bpm": None, "contact_sdnn_ms": None,
                               "contact_rmssd_ms": None, "eda_tonic_us": None, "eda_scr_count": None}
        reasons: set[Reason] = set()
        heart = self._stream_for("ecg")
        kind = "ecg"
        if heart is None:
            heart, kind = self._stream_for("ppg"), "ppg"
        if heart is not None:
            fs = self.buffers.fs_hz(heart)
            rate = fs if kind == "ecg" else max(fs, _MIN_PPG_RATE_HZ)
            seg, why = self._latest_run(heart, t_end_ns, self.contact_window_s, rate)
            if why is not None:
                reasons.add(why)
            if seg is not None:
                out["contact_present"] = True
                peaks = ecg_peaks(seg, rate) if kind == "ecg" else ppg_peaks(seg, rate)
                h = hrv_time(peaks, rate)
                if h.n_beats >= _MIN_CONTACT_BEATS and math.isfinite(h.mean_hr_bpm):
                    out["contact_hr_bpm"] = recent_heart_rate(peaks, seg.size, rate, self._hr_span_s,
                                                              h.mean_hr_bpm)
                    out["contact_sdnn_ms"] = h.sdnn_ms if math.isfinite(h.sdnn_ms) else None
                    out["contact_rmssd_ms"] = h.rmssd_ms if math.isfinite(h.rmssd_ms) else None
                else:
                    reasons.add(Reason.CONTACT_GAP)
        eda = self._stream_for("eda")
        if eda is not None:
            fs = self.buffers.fs_hz(eda)
            seg, why = self._latest_run(eda, t_end_ns, self.contact_window_s, fs)
            if why is not None:
                reasons.add(why)
            if seg is not None:
                out["contact_present"] = True
                if self._units.get(eda) == "uS" and fs >= 1.0:
                    tonic, _ = eda_decompose(seg, fs)
                    out["eda_tonic_us"] = float(tonic.mean())
                    out["eda_scr_count"] = int(eda_scr(seg, fs).onsets.size)
        return out, reasons

    def _missing_inputs(self, job: _Job, fi, ci, t_s: float) -> set:
        """Why the model cannot run on this window (empty when it can). A model only ever saw
        full windows in training, so an input whose window is not full yet is "warming up"
        even when enough of it exists to be formed."""
        p = self.p
        names = set(self.input_names)
        why: set[Reason] = set()
        need = {"face_clip": float(p["face"]["clip_stride_frames"]) * (float(p["face"]["clip_frames"]) - 1)
                / float(p["fps"]) + 1.0 / float(p["fps"]),
                "tfr": float(p["rppg"]["pulse_window_s"]), "face_feats": float(p["window_s"])}
        for name, need_s in need.items():
            if name not in names:
                continue
            if self.camera is None:
                why.add(Reason.NO_FACE)
            elif t_s < need_s - 1e-9:
                why.add(Reason.WARMING_UP)
            elif fi is None or not (
                    (name == "face_clip" and all(c is not None for c in job.clip_crops))
                    or (name == "tfr" and fi.pulse.ok)
                    or (name == "face_feats" and all(c is not None for c in job.seq_crops))):
                why.add(Reason.NO_FACE)
        if names & {"contact", "contact_level"}:
            wanted = list(p["contact"]["streams"])
            have = [self._stream_for(n) is not None for n in wanted]
            level_only = "contact" not in names
            if not any(have) and not (level_only and self._stream_for("ecg")):
                why.add(Reason.NO_CONTACT_SENSOR)
            else:
                firsts = list(self._first_sample_ns.values())
                full = bool(firsts) and (job.t_end_ns - min(firsts)) / 1e9 >= float(p["window_s"]) - 1e-9
                ok = ("contact" not in names or bool(np.all(ci.contact_present))) and \
                    ("contact_level" not in names or bool(np.all(ci.level_present)))
                if not full:
                    why.add(Reason.WARMING_UP)
                elif not ok:
                    why.add(Reason.CONTACT_GAP if all(have) or level_only else Reason.NO_CONTACT_SENSOR)
        return why

    def _face_feats(self, job: _Job) -> np.ndarray:
        from edge.preprocess import crops_to_nchw

        todo = [(fid, crop) for fid, crop in zip(job.seq_fids, job.seq_crops) if fid not in self._feat_cache]
        if todo:
            out = self._encoder.run({self._enc_in: crops_to_nchw(np.stack([c for _, c in todo]))})[self._enc_out]
            for (fid, _), feat in zip(todo, out):
                self._feat_cache[fid] = np.asarray(feat, dtype=np.float32)
        feats = np.stack([self._feat_cache[fid] for fid in job.seq_fids])
        keep = set(job.seq_fids)
        for fid in list(self._feat_cache):
            if fid not in keep:
                del self._feat_cache[fid]
        return feats
