"""Text and stream outputs: JSON lines, CSV, a Python callback and a Lab Streaming Layer outlet
(pylsl, imported when the outlet opens: ``pip install 'emofuse[sensors]'``).
"""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from edge.outputs.base import (
    Writer, _attr, _finite_or_none, _is_ok, _json_text, _latency_stages, _open_text, _prob_high, _result_obj,
    flatten_result,
)
from firmware_bridge.errors import ConfigError
from firmware_bridge.transports.lsl import import_pylsl

log = logging.getLogger(__name__)



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
