"""Where the pipeline's results go: JSON lines, CSV, a callback, an LSL outlet, an annotated
video and a session report.

Every writer is a context manager with one verb, ``write(result, frame=None, extras=None)``,
and ``close()``; :data:`WRITERS` maps a name to its class, so a new output is one new entry
(the yarppg registry habit, STYLE rule 6). :func:`open_writer` builds one from a name and a
target, :class:`WriterSet` fans one result out to several.

What a writer reads from a result (duck typing, so any object shaped like
:class:`edge.results.Result` works): ``to_json()`` (a JSON object as ``str``, keys in a stable
order) for the text writers, and the attributes ``t_s``, ``status``, ``reasons``, ``hr_bpm``,
``hr_quality``, ``contact_hr_bpm``, ``eda_tonic_us``, ``face_present``, ``face_box`` (x, y, w,
h px), ``valence_prob`` and ``arousal_prob`` ([low, high] probabilities), ``pulse`` and
``pulse_fs_hz`` for the drawing writers; a missing attribute reads as None.

``frame`` is what the camera delivered since the previous result: one BGR ``uint8`` image
(H, W, 3), a :class:`firmware_bridge.types.Frame`, or a sequence of either. Only the video
writer uses it. ``extras`` is an optional dict for what a result does not carry:

* ``"face_boxes"``: one (x, y, w, h) or None per frame in ``frame`` (without it the result's
  ``face_box`` is drawn on every frame);
* ``"pulse"``, ``"pulse_fs_hz"``: a pulse to use instead of the result's own ``pulse`` /
  ``pulse_fs_hz`` (float (N,), Hz);
* ``"pulse_t_s"``: float (N,) the session time of each pulse sample, s (without it the pulse
  is taken to end at ``result.t_s``, as the pipeline's pulse window does).

Heavy libraries are imported where they are used: OpenCV by the video writer, Matplotlib (Agg,
no display) by the report, pylsl by the LSL outlet (``pip install 'emofuse[sensors]'``).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError, DeviceError
from firmware_bridge.transports.lsl import import_pylsl

log = logging.getLogger(__name__)

__all__ = [
    "WRITERS",
    "AnnotatedVideoWriter",
    "CallbackWriter",
    "CsvWriter",
    "JsonLinesWriter",
    "LslWriter",
    "ResultLike",
    "SessionReportWriter",
    "Writer",
    "WriterSet",
    "flatten_result",
    "open_writer",
]


class ResultLike(Protocol):
    """What the writers need from a result (:class:`edge.results.Result` has it)."""

    t_s: float

    def to_json(self) -> str: ...


# ---------------------------------------------------------------------------------------------
# Helpers shared by the writers


def _attr(result: Any, name: str, default: Any = None) -> Any:
    return getattr(result, name, default)


def _to_json(result: Any, latency: bool) -> Any:
    to_json = getattr(result, "to_json", None)
    if to_json is None:
        raise BadInputError(f"a result needs a to_json() method, got {type(result).__name__}")
    # Only ask for the latency-free form when needed: a duck-typed result may not take it.
    return to_json() if latency else to_json(latency=False)


def _result_obj(result: Any, latency: bool = True) -> dict:
    """The result as the ordered dict its ``to_json()`` describes."""
    text = _to_json(result, latency)
    obj = json.loads(text) if isinstance(text, (str, bytes)) else dict(text)
    if not isinstance(obj, dict):
        raise BadInputError(f"result.to_json() must describe a JSON object, got {type(obj).__name__}")
    return obj


def _json_text(result: Any, latency: bool = True) -> str:
    text = _to_json(result, latency)
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if not isinstance(text, str):  # a mapping: serialise it the stable way
        text = json.dumps(text, separators=(",", ":"), allow_nan=False)
    if "\n" in text:
        # One object per line is the format's only rule; re-encode compactly rather than break it.
        text = json.dumps(json.loads(text), separators=(",", ":"), allow_nan=False)
    return text


#: Fixed-length fields and the names of their parts, so their CSV columns exist (empty) even
#: when the value is null, and read as words rather than indices.
CSV_PARTS: dict[str, tuple[str, ...]] = {
    "face_box": ("x", "y", "w", "h"),
    "valence_prob": ("low", "high"),
    "arousal_prob": ("low", "high"),
}


def flatten_result(obj: dict, prefix: str = "") -> dict[str, Any]:
    """Flatten a result's JSON object into CSV cells, keeping key order.

    Nested objects become ``parent.child`` keys; the fields of :data:`CSV_PARTS` become one
    column per named part (``face_box.x`` ... ``face_box.h``, ``valence_prob.low`` /
    ``.high``), all None when the field is null; other lists of numbers become ``parent.0``,
    ``parent.1``, ...; lists of strings (``reasons``) become one cell joined by ``;``; any other
    list one JSON-encoded cell.

    Args:
        obj: a JSON object as a dict (from ``json.loads(result.to_json())``).
        prefix: prepended to every key (used by the recursion).

    Returns:
        dict column -> scalar (str, int, float, bool or None), in the order of ``obj``.
    """
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        parts = CSV_PARTS.get(name)
        if isinstance(value, dict):
            out.update(flatten_result(value, name + "."))
        elif parts is not None and (value is None or (isinstance(value, (list, tuple)) and len(value) == len(parts))):
            for i, part in enumerate(parts):
                out[f"{name}.{part}"] = None if value is None else value[i]
        elif isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            for i, v in enumerate(value):
                out[f"{name}.{i}"] = v
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            out[name] = ";".join(value)
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, separators=(",", ":"))
        else:
            out[name] = value
    return out


def _latency_stages() -> tuple[str, ...] | None:
    """The pipeline's stage names (``edge.pipeline.STAGES``), when the pipeline is importable."""
    try:
        # Imported here: the writers sit below the pipeline, which must stay free to use them.
        from edge.pipeline import STAGES
    except ImportError:
        return None
    return tuple(STAGES)


def _open_text(target: str | os.PathLike | TextIO, what: str) -> tuple[TextIO, bool]:
    """(stream, owned): ``"-"`` is stdout, a path is opened for writing, a stream is used as is."""
    if hasattr(target, "write"):
        return target, False  # type: ignore[return-value]
    if str(target) == "-":
        return sys.stdout, False
    path = Path(target)
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        # newline="" so the csv module's own \r\n line ends are not translated twice.
        return open(path, "w", encoding="utf-8", newline=""), True
    except OSError as exc:
        raise DeviceError(f"cannot write the {what} {path}: {exc.strerror or exc}") from exc


def _finite_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _prob_high(prob: Any) -> float | None:
    """P(high) from a [low, high] probability pair (or a bare P(high)); None when unknown."""
    if prob is None:
        return None
    if isinstance(prob, dict):
        return _finite_or_none(prob.get("high"))
    arr = np.asarray(prob, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return None
    return float(arr[-1])


def _is_ok(result: Any) -> bool:
    return _attr(result, "status", "ok") == "ok"


def _reason_text(result: Any) -> str:
    reasons = _attr(result, "reasons")
    if reasons is None:
        reasons = [_attr(result, "reason")] if _attr(result, "reason") else []
    return ", ".join(str(r) for r in reasons) or "?"


class Writer:
    """Base of the writers: a context manager with ``write`` and an idempotent ``close``."""

    #: Registry name, set by each subclass.
    name = ""

    def __init__(self) -> None:
        self._closed = False
        self.n_written = 0

    def write(self, result: Any, frame: Any = None, extras: dict | None = None) -> None:
        """Take one result (and, for some writers, the frames and arrays that came with it).

        Raises:
            BadInputError: a closed writer, or a result without ``to_json()``.
        """
        if self._closed:
            raise BadInputError(f"the {self.name} writer is closed")
        self._write(result, frame, extras or {})
        self.n_written += 1

    def _write(self, result: Any, frame: Any, extras: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release everything; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        self._close()

    def _close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Text outputs


class JsonLinesWriter(Writer):
    """One JSON object per result per line, flushed at once (``tail -f`` and pipes see it live).

    The line is the result's own ``to_json()`` text, so key order and number formatting are
    the result's (replays of one recording give byte-identical files).

    Args:
        target: a path, ``"-"`` for stdout (default), or an open text stream (not closed here).
        latency: include ``latency_ms``; False leaves it out (``to_json(latency=False)``), so
            two replays of one recording give byte-identical files.

    Raises:
        DeviceError: the file cannot be created.
    """

    name = "jsonl"

    def __init__(self, target: str | os.PathLike | TextIO = "-", latency: bool = True) -> None:
        super().__init__()
        self.latency = bool(latency)
        self._stream, self._owned = _open_text(target, "JSON lines file")

    def _write(self, result: Any, frame: Any, extras: dict) -> None:
        self._stream.write(_json_text(result, self.latency) + "\n")
        self._stream.flush()

    def _close(self) -> None:
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()


class CsvWriter(Writer):
    """One row per result, with columns fixed for the whole file.

    The columns are ``columns`` if given, else the flattened keys (:func:`flatten_result`) of
    the first result written, with ``latency_ms`` widened to one column per pipeline stage
    (``edge.pipeline.STAGES``), so a first result without some timing still makes every column.
    A later result's missing cells stay empty; a key that is not a column is dropped (logged
    once). None is written as an empty cell, booleans as ``true`` / ``false``, floats as the
    shortest text that reads back as the same float.

    Args:
        target: a path, ``"-"`` for stdout (default), or an open text stream (not closed here).
        columns: the column names, in order (optional).
        latency: include the ``latency_ms.*`` columns (False: deterministic files).

    Raises:
        DeviceError: the file cannot be created.
    """

    name = "csv"

    def __init__(self, target: str | os.PathLike | TextIO = "-", columns: Sequence[str] | None = None,
                 latency: bool = True) -> None:
        super().__init__()
        self._stream, self._owned = _open_text(target, "CSV file")
        self.columns: list[str] | None = list(columns) if columns else None
        self.latency = bool(latency)
        self._csv = csv.writer(self._stream, lineterminator="\n")
        self._dropped_logged = False

    @staticmethod
    def _columns_from(obj: dict) -> list[str]:
        cols: list[str] = []
        for key, value in obj.items():
            if key == "latency_ms" and (value is None or isinstance(value, dict)):
                stages = list(_latency_stages() or ())
                stages += [k for k in (value or {}) if k not in stages]
                cols += [f"latency_ms.{k}" for k in stages]
            else:
                cols += list(flatten_result({key: value}))
        return cols

    def _write(self, result: Any, frame: Any, extras: dict) -> None:
        obj = _result_obj(result, self.latency)
        cells = flatten_result(obj)
        if self.columns is None:
            self.columns = self._columns_from(obj)
        if self.n_written == 0:
            self._csv.writerow(self.columns)
        cols = set(self.columns)
        extra = {k for k, v in cells.items() if k not in cols and v is not None}
        if extra and not self._dropped_logged:
            log.warning("CSV output: dropping fields that are not columns: %s", ", ".join(sorted(extra)))
            self._dropped_logged = True
        self._csv.writerow([self._cell(cells.get(c)) for c in self.columns])
        self._stream.flush()

    @staticmethod
    def _cell(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return repr(value)  # the shortest text that round-trips the float
        return value

    def _close(self) -> None:
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()


class CallbackWriter(Writer):
    """Calls ``fn(result)`` (or ``fn(result, frame, extras)`` with ``full=True``) per result.

    For code that wants results pushed rather than pulled from ``Pipeline.results()``. An
    exception raised by ``fn`` propagates: it is the caller's bug, not ours to hide.

    Args:
        fn: the callable.
        full: also pass the frames and the extras dict.

    Raises:
        ConfigError: ``fn`` is not callable.
    """

    name = "callback"

    def __init__(self, fn: Callable[..., Any], full: bool = False) -> None:
        super().__init__()
        if not callable(fn):
            raise ConfigError(f"callback output needs a callable, got {type(fn).__name__}")
        self._fn = fn
        self._full = bool(full)

    def _write(self, result: Any, frame: Any, extras: dict) -> None:
        if self._full:
            self._fn(result, frame, extras)
        else:
            self._fn(result)


# ---------------------------------------------------------------------------------------------
# Lab Streaming Layer


#: The LSL channels: label, result attribute (or a function of the result), unit.
LSL_CHANNELS: tuple[tuple[str, Callable[[Any], Any], str], ...] = (
    ("t_s", lambda r: _attr(r, "t_s"), "s"),
    ("ok", lambda r: 1.0 if _is_ok(r) else 0.0, "bool"),
    ("face_present", lambda r: 1.0 if _attr(r, "face_present") else 0.0, "bool"),
    ("hr_bpm", lambda r: _attr(r, "hr_bpm"), "bpm"),
    ("hr_quality", lambda r: _attr(r, "hr_quality"), "a.u."),
    ("contact_hr_bpm", lambda r: _attr(r, "contact_hr_bpm"), "bpm"),
    ("eda_tonic_us", lambda r: _attr(r, "eda_tonic_us"), "uS"),
    ("valence_high_prob", lambda r: _prob_high(_attr(r, "valence_prob")), "probability"),
    ("arousal_high_prob", lambda r: _prob_high(_attr(r, "arousal_prob")), "probability"),
)


class LslWriter(Writer):
    """A Lab Streaming Layer outlet: one float64 sample per result (channels: :data:`LSL_CHANNELS`).

    Unknown values (no face, low quality, no sensor) are sent as NaN, the LSL convention for
    a missing sample value; ``ok`` is 0 then. The sample is stamped with ``pylsl.local_clock()``
    when it is pushed (on Linux that is CLOCK_MONOTONIC, the clock the cameras stamp frames
    with); the session time travels in channel ``t_s``. Channel labels and units go in the
    stream's description, so a recorder such as LabRecorder keeps what each channel means
    (Kothe et al., "The Lab Streaming Layer for synchronized multimodal recording", 2024).

    Args:
        stream_name: the LSL stream name.
        stream_type: the LSL content type.
        source_id: a stable id so recorders can reconnect to the same stream.
        nominal_rate_hz: results per second (1 / hop_s); 0 marks an irregular stream.

    Raises:
        MissingDependencyError: pylsl (``pip install 'emofuse[sensors]'``) is not installed.
    """

    name = "lsl"

    def __init__(self, stream_name: str = "emofuse", stream_type: str = "Emotion",
                 source_id: str = "emofuse-results", nominal_rate_hz: float = 1.0) -> None:
        super().__init__()
        pylsl = import_pylsl("the LSL results outlet")
        info = pylsl.StreamInfo(stream_name, stream_type, len(LSL_CHANNELS), float(nominal_rate_hz),
                                "double64", source_id)
        channels = info.desc().append_child("channels")
        for label, _, unit in LSL_CHANNELS:
            ch = channels.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
        self._outlet = pylsl.StreamOutlet(info)

    def _write(self, result: Any, frame: Any, extras: dict) -> None:
        sample = []
        for _, get, _unit in LSL_CHANNELS:
            v = _finite_or_none(get(result))
            sample.append(float("nan") if v is None else v)
        self._outlet.push_sample(sample)

    def _close(self) -> None:
        self._outlet = None  # pylsl closes the outlet when the object is released


# ---------------------------------------------------------------------------------------------
# Annotated video


def _frames_of(frame: Any) -> list[np.ndarray]:
    """The BGR images in ``frame`` (an image, a Frame, a sequence of either, or None)."""
    if frame is None:
        return []
    if isinstance(frame, np.ndarray):
        return [frame] if frame.ndim == 3 else list(frame)  # (N, H, W, 3) stacks too
    if hasattr(frame, "image"):
        return [frame.image]
    if isinstance(frame, (list, tuple)):
        return [f.image if hasattr(f, "image") else f for f in frame]
    raise BadInputError(f"frame must be an image, a Frame or a sequence of them, got {type(frame).__name__}")


class _PulseHistory:
    """The rPPG pulse over the session, stitched from overlapping windows: each window adds
    only its samples later than the last one kept (windows overlap by window - hop)."""

    def __init__(self, keep_s: float | None = None) -> None:
        self.t_s: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.fs_hz: float | None = None
        self.keep_s = keep_s  # None: the whole session (the report); else only the newest part
        self._last_t = -math.inf

    def add(self, result: Any, extras: dict) -> None:
        if extras.get("pulse") is not None:
            pulse, fs = extras["pulse"], extras.get("pulse_fs_hz")
        else:
            pulse, fs = _attr(result, "pulse"), _attr(result, "pulse_fs_hz")
        if pulse is None:
            return
        pulse = np.asarray(pulse, dtype=np.float64).ravel()
        fs = _finite_or_none(fs)
        if fs is None or fs <= 0:
            raise BadInputError(f"a pulse needs its sampling rate > 0 Hz, got {fs!r}")
        t = extras.get("pulse_t_s")
        if t is None:
            t_end = _finite_or_none(_attr(result, "t_s")) or 0.0
            t = t_end - (pulse.size - 1 - np.arange(pulse.size)) / fs
        else:
            t = np.asarray(t, dtype=np.float64).ravel()
            if t.shape != pulse.shape:
                raise BadInputError(f"extras['pulse_t_s'] has shape {t.shape}, pulse has {pulse.shape}")
        # Samples before the session began are the window's padding, not pulse.
        keep = (t > self._last_t + 0.5 / fs) & (t >= -0.5 / fs)
        if np.any(keep):
            self.t_s.append(t[keep])
            self.values.append(pulse[keep])
            self._last_t = float(t[keep][-1])
        self.fs_hz = fs
        if self.keep_s is not None:
            while len(self.t_s) > 1 and self._last_t - float(self.t_s[1][0]) >= self.keep_s:
                del self.t_s[0], self.values[0]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.values:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self.t_s), np.concatenate(self.values)

    def tail(self, seconds: float) -> np.ndarray:
        """The last ``seconds`` of pulse (only the newest few windows are joined)."""
        out: list[np.ndarray] = []
        n = 0
        need = int(seconds * (self.fs_hz or 30.0))
        for v in reversed(self.values):
            out.append(v)
            n += v.size
            if n >= need:
                break
        if not out:
            return np.zeros(0)
        return np.concatenate(out[::-1])[-need:]


#: BGR colours of the overlay.
_GREEN = (80, 200, 60)
_AMBER = (0, 170, 255)
_WHITE = (255, 255, 255)
_GREY = (150, 150, 150)
_PANEL = (30, 30, 30)


class AnnotatedVideoWriter(Writer):
    """The camera video with the results drawn on it (OpenCV, intra-frame MJPEG in an .avi).

    Each frame shows the face box (green when the result is ``ok``, amber when ``unknown``),
    the last ``trace_s`` seconds of the rPPG pulse as a trace, the rPPG and contact heart
    rates (or ``--`` and the reason), and valence / arousal as two bars of P(high). The
    overlay shows the newest result, so a frame is annotated with what was known when it
    was delivered. MJPEG needs no FFmpeg and every frame is a key frame, so a file cut short
    by a crash still plays up to its last frame.

    Two ways to feed it: ``write(result, frames)`` with the frames of each hop, or
    ``Pipeline(..., on_frame=writer.on_frame)``, which hands it every frame with its box and
    the newest result from the pipeline's face thread (then call ``close()`` after the run).
    Calls are serialised by a lock, so both may come from different threads.

    Args:
        path: the .avi file to write.
        fps: frame rate written into the file, Hz.
        quality: JPEG quality, 1-100.
        trace_s: length of the pulse trace, s.
        frame_size: (width, height) px of the output; None takes the first frame's size.
            Frames of another size are resized.

    Raises:
        ConfigError: bad settings.
        DeviceError: OpenCV cannot open the file for writing.
    """

    name = "video"

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, quality: int = 90,
                 trace_s: float = 5.0, frame_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if not (math.isfinite(fps) and fps > 0):
            raise ConfigError(f"fps must be > 0, got {fps!r}")
        if not (1 <= int(quality) <= 100):
            raise ConfigError(f"quality must be in 1..100, got {quality!r}")
        if not (trace_s > 0):
            raise ConfigError(f"trace_s must be > 0, got {trace_s!r}")
        self.path = Path(path)
        self.fps = float(fps)
        self.quality = int(quality)
        self.trace_s = float(trace_s)
        self.frame_size = tuple(int(v) for v in frame_size) if frame_size else None
        self.n_frames = 0
        self._vw = None
        self._result: Any = None
        self._pulse = _PulseHistory(keep_s=self.trace_s)
        self._trace: np.ndarray = np.zeros(0)
        self._lock = threading.RLock()

    # -- writer verbs ----------------------------------------------------------------------
    def write(self, result: Any, frame: Any = None, extras: dict | None = None) -> None:
        with self._lock:
            super().write(result, frame, extras)

    def _set_result(self, result: Any, extras: dict) -> None:
        self._result = result
        self._pulse.add(result, extras)
        self._trace = self._pulse.tail(self.trace_s)

    def on_frame(self, event: Any) -> None:
        """Annotate and append one frame from a pipeline's ``on_frame`` hook.

        Args:
            event: an :class:`edge.pipeline.FrameEvent` (``frame``, ``box``, ``result``): the
                frame is drawn with its own face box and the newest result.

        Raises:
            BadInputError: a closed writer or a bad image.
        """
        with self._lock:
            result = getattr(event, "result", None)
            if result is not None and result is not self._result:
                self._set_result(result, {})
            frame = event.frame
            self.write_frame(frame.image if hasattr(frame, "image") else frame, getattr(event, "box", None))

    def _write(self, result: Any, frame: Any, extras: dict) -> None:
        self._set_result(result, extras)
        images = _frames_of(frame)
        boxes = extras.get("face_boxes")
        if boxes is not None and len(boxes) != len(images):
            raise BadInputError(f"extras['face_boxes'] has {len(boxes)} entries for {len(images)} frames")
        for i, image in enumerate(images):
            box = boxes[i] if boxes is not None else _attr(result, "face_box")
            self.write_frame(image, box)

    def write_frame(self, image: np.ndarray, face_box: Sequence[float] | None = None) -> None:
        """Annotate one BGR frame with the newest result and append it to the video.

        For callers that hand frames over one at a time between results.

        Args:
            image: uint8 (H, W, 3) BGR.
            face_box: (x, y, w, h) px of the face in this frame, or None.

        Raises:
            BadInputError: not a uint8 (H, W, 3) image, or the writer is closed.
        """
        with self._lock:
            self._write_frame(image, face_box)

    def _write_frame(self, image: np.ndarray, face_box) -> None:
        if self._closed:
            raise BadInputError("the video writer is closed")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise BadInputError(f"frames must be uint8 (H, W, 3) BGR, got {image.dtype} {image.shape}")
        cv2 = _cv2()
        if self._vw is None:
            self._open(image.shape[1], image.shape[0])
        w, h = self.frame_size
        canvas = image.copy() if image.shape[1] == w and image.shape[0] == h else cv2.resize(image, (w, h))
        if face_box is not None and (image.shape[1], image.shape[0]) != (w, h):
            sx, sy = w / image.shape[1], h / image.shape[0]
            x, y, bw, bh = face_box
            face_box = (x * sx, y * sy, bw * sx, bh * sy)
        self._draw(canvas, face_box)
        self._vw.write(canvas)
        self.n_frames += 1

    def _open(self, width: int, height: int) -> None:
        cv2 = _cv2()
        if self.frame_size is None:
            self.frame_size = (width, height)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"cannot create {self.path.parent}: {exc.strerror or exc}") from exc
        fourcc = cv2.VideoWriter_fourcc(*"MJPG")
        # OpenCV's own MJPEG muxer: present in every build, no FFmpeg needed.
        vw = cv2.VideoWriter(str(self.path), cv2.CAP_OPENCV_MJPEG, fourcc, self.fps, self.frame_size,
                             [cv2.VIDEOWRITER_PROP_QUALITY, self.quality])
        if not vw.isOpened():
            raise DeviceError(f"OpenCV cannot write an MJPEG video to {self.path}")
        self._vw = vw

    def close(self) -> None:
        with self._lock:
            super().close()

    def _close(self) -> None:
        if self._vw is not None:
            self._vw.release()
            self._vw = None

    # -- drawing ---------------------------------------------------------------------------
    def _draw(self, img: np.ndarray, face_box) -> None:
        cv2 = _cv2()
        h, w = img.shape[:2]
        r = self._result
        ok = _is_ok(r)
        colour = _GREEN if ok else _AMBER
        scale = max(0.4, w / 1280.0)
        thick = max(1, int(round(w / 640.0)))
        font = cv2.FONT_HERSHEY_SIMPLEX
        if face_box is not None and (r is None or _attr(r, "face_present", True)):
            x, y, bw, bh = (int(round(float(v))) for v in face_box)
            cv2.rectangle(img, (x, y), (x + bw, y + bh), colour, thick + 1)

        # Top-left panel: times and heart rates.
        panel_h = int(70 * scale / 0.5)
        cv2.rectangle(img, (0, 0), (min(w, int(340 * scale / 0.5)), panel_h), _PANEL, -1)
        line_h = int(22 * scale / 0.5)
        if r is None:
            lines = ["waiting for the first window"]
        else:
            t_s = _finite_or_none(_attr(r, "t_s"))
            hr = _finite_or_none(_attr(r, "hr_bpm"))
            q = _finite_or_none(_attr(r, "hr_quality"))
            chr_ = _finite_or_none(_attr(r, "contact_hr_bpm"))
            hr_txt = f"HR {hr:5.1f} bpm" if hr is not None else "HR  --"
            if q is not None:
                hr_txt += f"  q {q:.2f}"
            lines = [f"t {t_s:7.1f} s" if t_s is not None else "t  --", hr_txt]
            if chr_ is not None:
                lines[0] += f"   contact {chr_:5.1f} bpm"
            if not ok:
                lines.append(f"unknown: {_reason_text(r)}")
        for i, text in enumerate(lines[:3]):
            cv2.putText(img, text, (8, line_h * (i + 1) - 4), font, scale, _WHITE if i < 2 else _AMBER,
                        thick, cv2.LINE_AA)

        # Bottom strip: pulse trace.
        strip_h = max(24, h // 8)
        y0 = h - strip_h
        img[y0:, :] = (img[y0:, :].astype(np.uint16) // 3).astype(np.uint8)  # darken, keep context
        trace = self._trace
        if trace.size >= 2 and np.all(np.isfinite(trace)):
            lo, hi = float(trace.min()), float(trace.max())
            span = hi - lo if hi > lo else 1.0
            xs = np.linspace(0, w - 1, trace.size)
            ys = y0 + 3 + (1.0 - (trace - lo) / span) * (strip_h - 6)
            pts = np.stack([xs, ys], axis=1).round().astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(img, [pts], False, colour, thick, cv2.LINE_AA)
        cv2.putText(img, "pulse", (6, y0 + int(16 * scale / 0.5)), font, scale * 0.8, _GREY, 1, cv2.LINE_AA)

        # Right: valence / arousal bars of P(high), filled from the bottom.
        bar_w = max(10, w // 32)
        bar_h = max(40, h // 3)
        bottom = y0 - 10
        for k, (label, key) in enumerate((("V", "valence_prob"), ("A", "arousal_prob"))):
            x1 = w - (2 - k) * (bar_w + 10)
            cv2.rectangle(img, (x1, bottom - bar_h), (x1 + bar_w, bottom), _GREY, 1)
            p = _prob_high(_attr(r, key)) if r is not None else None
            if p is not None:
                top = bottom - int(round(np.clip(p, 0.0, 1.0) * bar_h))
                cv2.rectangle(img, (x1 + 1, top), (x1 + bar_w - 1, bottom - 1), colour, -1)
            cv2.putText(img, label, (x1, bottom - bar_h - 6), font, scale, _WHITE, thick, cv2.LINE_AA)


def _cv2():
    import cv2

    return cv2


# ---------------------------------------------------------------------------------------------
# Session report


class SessionReportWriter(Writer):
    """A one-page PNG that sums up a session, drawn when the writer closes.

    Four panels over session time: the rPPG pulse (stitched from the results' pulse windows,
    or ``extras``), its time-frequency image (a short-time Fourier spectrogram of that pulse,
    Allen 1977, over 0.7-3.5 Hz = 42-210 bpm, each column scaled to its peak), the rPPG heart
    rate against the contact heart rate (results marked unknown shown apart), and P(high) of
    valence and arousal. Drawn with Matplotlib's Agg canvas (no display, no pyplot state), at
    exactly ``size_px``. Results are kept as a few numbers each (about 100 bytes a hop) and the
    pulse once, so a long session costs little memory until the page is drawn.

    Args:
        path: the .png file to write.
        size_px: (width, height) of the image, px.
        dpi: dots per inch (font size scales with it).
        title: the page title; None uses the file name.

    Raises:
        ConfigError: bad size or dpi.
        DeviceError: the PNG cannot be written (at close).
    """

    name = "report"

    def __init__(self, path: str | os.PathLike, size_px: tuple[int, int] = (1200, 1000), dpi: int = 100,
                 title: str | None = None) -> None:
        super().__init__()
        w, h = (int(v) for v in size_px)
        if w < 200 or h < 200:
            raise ConfigError(f"size_px must be at least 200x200, got {size_px!r}")
        if not (20 <= int(dpi) <= 600):
            raise ConfigError(f"dpi must be in 20..600, got {dpi!r}")
        self.path = Path(path)
        self.size_px = (w, h)
        self.dpi = int(dpi)
        self.title = title
        self._rows: list[tuple] = []
        self._pulse = _PulseHistory()

    def _write(self, result: Any, frame: Any, extras: dict) -> None:
        self._pulse.add(result, extras)
        self._rows.append((
            _finite_or_none(_attr(result, "t_s")),
            _finite_or_none(_attr(result, "hr_bpm")),
            _finite_or_none(_attr(result, "contact_hr_bpm")),
            _prob_high(_attr(result, "valence_prob")),
            _prob_high(_attr(result, "arousal_prob")),
            _is_ok(result),
        ))

    def _close(self) -> None:
        fig = self.figure()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(self.path, format="png", dpi=self.dpi)
        except OSError as exc:
            raise DeviceError(f"cannot write the report {self.path}: {exc.strerror or exc}") from exc
        log.info("session report written to %s", self.path)

    def figure(self):
        """The report as a Matplotlib Figure (Agg canvas attached), for callers that want to
        show or save it themselves."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        w, h = self.size_px
        fig = Figure(figsize=(w / self.dpi, h / self.dpi), dpi=self.dpi)
        FigureCanvasAgg(fig)
        axes = fig.subplots(4, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.2, 1, 1]})
        rows = [r for r in self._rows if r[0] is not None]
        t = np.array([r[0] for r in rows], dtype=np.float64)

        def col(i):
            return np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.float64)

        ok = np.array([r[5] for r in rows], dtype=bool)
        n_unknown = int((~ok).sum())
        title = self.title or self.path.stem
        fig.suptitle(f"{title}: {len(self._rows)} results, {n_unknown} unknown")

        ax = axes[0]
        pt, pv = self._pulse.arrays()
        if pv.size:
            ax.plot(pt, pv, lw=0.7, color="tab:green")
        else:
            ax.text(0.5, 0.5, "no pulse given", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel("rPPG pulse (a.u.)")

        ax = axes[1]
        fs = self._pulse.fs_hz
        lo_hz, hi_hz = 0.7, 3.5
        if pv.size and fs and pv.size >= int(4 * fs):
            from scipy.signal import spectrogram

            nper = int(min(pv.size, round(8 * fs)))
            # Zero-padded to a 1/64 Hz grid (about 1 bpm), so the ridge reads as a line.
            nfft = max(nper, 1 << int(math.ceil(math.log2(64 * fs))))
            f, tt, sxx = spectrogram(pv, fs=fs, window="hann", nperseg=nper, noverlap=int(nper * 0.9),
                                     nfft=nfft, detrend="constant", scaling="density")
            band = (f >= lo_hz) & (f <= hi_hz)
            # Each column normalised to its peak: the ridge shows at any pulse strength.
            s = sxx[band]
            s = s / np.maximum(s.max(axis=0, keepdims=True), 1e-300)
            ax.pcolormesh(tt + pt[0], f[band] * 60.0, s, shading="nearest", cmap="magma")
        else:
            ax.text(0.5, 0.5, "pulse too short for a TFR", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylim(lo_hz * 60.0, hi_hz * 60.0)
        ax.set_ylabel("TFR (bpm)")

        ax = axes[2]
        hr, chr_ = col(1), col(2)
        if t.size:
            ax.plot(t, np.where(ok, hr, np.nan), "o-", ms=3, color="tab:green", label="rPPG")
            if np.any(np.isfinite(chr_)):
                ax.plot(t, chr_, "s-", ms=3, color="tab:blue", label="contact")
            if n_unknown:
                ymin = np.nanmin(np.concatenate([hr[np.isfinite(hr)], chr_[np.isfinite(chr_)], [60.0]]))
                ax.plot(t[~ok], np.full(n_unknown, ymin), "x", color="tab:orange", label="unknown")
            ax.legend(loc="upper right", fontsize="small")
        ax.set_ylabel("heart rate (bpm)")

        ax = axes[3]
        if t.size:
            ax.plot(t, col(3), "-", color="tab:purple", label="valence")
            ax.plot(t, col(4), "-", color="tab:red", label="arousal")
            ax.legend(loc="upper right", fontsize="small")
        ax.axhline(0.5, color="0.7", lw=0.8)
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel("P(high)")
        ax.set_xlabel("session time (s)")
        fig.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.06, hspace=0.15)
        return fig


# ---------------------------------------------------------------------------------------------
# Registry and fan-out


#: Output writers by name.
WRITERS: dict[str, type[Writer]] = {
    "jsonl": JsonLinesWriter,
    "csv": CsvWriter,
    "callback": CallbackWriter,
    "lsl": LslWriter,
    "video": AnnotatedVideoWriter,
    "report": SessionReportWriter,
}


def open_writer(name: str, target: Any = None, **options: Any) -> Writer:
    """Build the writer registered as ``name``.

    Args:
        name: a key of :data:`WRITERS`.
        target: its first argument: a path or ``"-"`` (jsonl, csv), a path (video, report), a
            callable (callback); ignored by lsl. None: stdout for jsonl and csv.
        **options: the writer's own keyword settings.

    Returns:
        The writer, open.

    Raises:
        ConfigError: unknown name, or a missing target.
        MissingDependencyError: the writer's optional library is missing (lsl).
    """
    cls = WRITERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown output {name!r}; choose one of {', '.join(WRITERS)}")
    if name == "lsl":
        return cls(**options)
    if target is None:
        if name in ("jsonl", "csv"):
            return cls("-", **options)
        raise ConfigError(f"output {name!r} needs a target ({'a function' if name == 'callback' else 'a path'})")
    return cls(target, **options)


class WriterSet(Writer):
    """Several writers behind one ``write``: each result goes to all of them, in order.

    ``close`` closes every writer even when one of them fails, then re-raises the first
    failure.

    Args:
        writers: open writers (owned from now on).
    """

    name = "set"

    def __init__(self, writers: Iterable[Writer] = ()) -> None:
        super().__init__()
        self.writers = list(writers)

    def add(self, writer: Writer) -> Writer:
        self.writers.append(writer)
        return writer

    def _write(self, result: Any, frame: Any, extras: dict) -> None:
        for w in self.writers:
            w.write(result, frame, extras)

    def _close(self) -> None:
        first: BaseException | None = None
        for w in self.writers:
            try:
                w.close()
            except Exception as exc:  # keep closing the rest; report the first
                first = first or exc
        if first is not None:
            raise first

