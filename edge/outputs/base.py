"""What every result writer shares: the :class:`Writer` base (a context manager with one verb,
``write(result, frame=None, extras=None)``) and the helpers that read a result by duck typing
(see :mod:`edge.outputs` for the attributes read).
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from firmware_bridge.errors import BadInputError, DeviceError


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


#: Reason codes (edge.results.Reason values) in words, for pictures a person reads.
REASON_WORDS = {
    "warming_up": "window filling",
    "no_face": "no face",
    "low_pulse_quality": "weak pulse",
    "no_contact_sensor": "no contact sensor",
    "contact_gap": "sensor gap",
    "contact_units": "sensor units wrong",
    "model_input_missing": "model inputs incomplete",
}


def _reason_words(result: Any) -> str:
    """The result's reasons in words (:data:`REASON_WORDS`; unknown codes as they are)."""
    reasons = _attr(result, "reasons")
    if reasons is None:
        reasons = [_attr(result, "reason")] if _attr(result, "reason") else []
    return ", ".join(REASON_WORDS.get(str(r), str(r)) for r in reasons) or "?"


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
