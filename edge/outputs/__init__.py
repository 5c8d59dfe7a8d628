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

The writers live in four modules, all reached through this one: ``base`` (:class:`Writer` and
the helpers that read a result), ``text`` (JSON lines, CSV, callback, LSL), ``video`` (the
annotated video) and ``report`` (the session report PNG).

Heavy libraries are imported where they are used: OpenCV by the video writer, Matplotlib (Agg,
no display) by the report, pylsl by the LSL outlet (``pip install 'emofuse[sensors]'``).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edge.outputs.base import ResultLike, Writer, flatten_result
from edge.outputs.report import SessionReportWriter
from edge.outputs.text import LSL_CHANNELS, CallbackWriter, CsvWriter, JsonLinesWriter, LslWriter
from edge.outputs.video import AnnotatedVideoWriter, _PulseHistory  # noqa: F401 - its old path
from firmware_bridge.errors import ConfigError


__all__ = [
    "WRITERS",
    "AnnotatedVideoWriter",
    "CallbackWriter",
    "CsvWriter",
    "JsonLinesWriter",
    "LSL_CHANNELS",
    "LslWriter",
    "ResultLike",
    "SessionReportWriter",
    "Writer",
    "WriterSet",
    "close_all",
    "flatten_result",
    "open_writer",
]





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


def close_all(writers: Iterable) -> None:
    """Close every writer given (None skipped), all of them even when one fails; re-raise the
    first failure."""
    first: BaseException | None = None
    for w in writers:
        if w is None:
            continue
        try:
            w.close()
        except Exception as exc:  # keep closing the rest; report the first
            first = first or exc
    if first is not None:
        raise first


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
        close_all(self.writers)

