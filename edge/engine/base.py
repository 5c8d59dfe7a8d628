"""The one interface every inference backend implements, and what the backends share.

An :class:`Engine` is a Polygraphy-style runner: constructed cheaply, then *activated* (the
session or the CUDA context, engine and buffers are created; heavy libraries are imported here,
not at module import), used through :meth:`Engine.run` on ``dict[str, ndarray]``, and
*deactivated*. It is a context manager::

    with open_engine(bundle, precision="int8") as engine:
        engine.warmup(20)
        probs = engine.run({"tfr": tfr, ...})      # {"valence_prob": (B, 2), ...}
        print(engine.latency())                     # p50 / p90 / p99 / mean, count

Inputs are validated against the bundle manifest's tensor specs before they reach a backend:
names (none missing, none extra), dtypes (exact, never cast silently), ranks and non-batch
dims, and one batch size shared by every input within the engine's batch limit. Every run's
wall time (validation, host-device copies and execution) is recorded; :meth:`Engine.latency`
summarises it.

Which graph file serves which precision (:func:`graph_file`): ``fp32`` and ``fp16`` use the
exported graph (``model.onnx``); ``int8`` uses the Q/DQ graph that ``emofuse calibrate`` writes
beside it (``model.int8.onnx``, listed in the manifest with role ``model_int8``).

Backends record what they really ran in :attr:`Engine.metadata` (backend, precision, graph file
and its SHA-256, execution providers, and a ``notes`` list saying what changed from the request
and why): STYLE rule 10, no silent fallbacks.
"""
from __future__ import annotations

import abc
import collections
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.bundle import Bundle, load_bundle
from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger("emofuse.engine")

PRECISIONS = ("int8", "fp16", "fp32")
BATCH = "batch"
# Enough runs for a stable p99 in a benchmark, small enough to keep forever on a device.
DEFAULT_HISTORY = 10_000


def check_precision(precision: str, allowed=PRECISIONS) -> str:
    """Return ``precision`` if it is one of ``allowed``.

    Raises:
        ConfigError: any other value.
    """
    if precision not in allowed:
        raise ConfigError(f"precision {precision!r} is not one of {list(allowed)}")
    return precision


def load(bundle):
    """A :class:`edge.bundle.Bundle` from a Bundle or a bundle folder path.

    Raises:
        BadInputError, ConfigError: as :func:`edge.bundle.load_bundle`.
    """
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)


def graph_specs(bundle, role: str = "model") -> tuple[tuple, tuple]:
    """Input and output :class:`edge.bundle.TensorSpec` tuples of the graph with ``role``.

    The main model's specs are the manifest's top-level ``inputs`` / ``outputs``; another graph
    (the MVP face encoder) carries its own in its ``files`` entry.

    Raises:
        ConfigError: the bundle has no graph with that role, or it declares no tensors.
    """
    if role == "model":
        return tuple(bundle.inputs), tuple(bundle.outputs)
    entry = bundle.manifest.role_file(role)
    if entry is None:
        raise ConfigError(f"bundle {bundle.root} has no graph with role {role!r}")
    if not entry.inputs or not entry.outputs:
        raise ConfigError(f"bundle {bundle.root}: {entry.name} (role {role!r}) declares no "
                          "inputs/outputs in manifest.json")
    return tuple(entry.inputs), tuple(entry.outputs)


def graph_file(bundle, role: str = "model", precision: str = "fp32"):
    """The manifest's :class:`edge.bundle.BundleFile` of the ONNX graph for a precision.

    Args:
        bundle: an :class:`edge.bundle.Bundle`.
        role: ``"model"`` or ``"face_encoder"``.
        precision: ``"fp32"`` / ``"fp16"`` -> the exported graph; ``"int8"`` -> its Q/DQ
            graph, found by role ``"<role>_int8"`` or by name ``"<stem>.int8.onnx"``.

    Raises:
        ConfigError: no graph with that role, or no INT8 graph recorded (``emofuse calibrate``
            writes it); an INT8 file that exists but is not in the manifest is refused, because
            its hash was never recorded.
    """
    check_precision(precision)
    base = bundle.manifest.role_file(role)
    if base is None:
        raise ConfigError(f"bundle {bundle.root} has no graph with role {role!r}")
    if precision != "int8":
        return base
    int8_name = f"{Path(base.name).stem}.int8.onnx"
    for entry in bundle.manifest.files.values():
        if entry.role == f"{role}_int8" or entry.name == int8_name:
            return entry
    if (bundle.root / int8_name).is_file():
        raise ConfigError(f"{bundle.root / int8_name} exists but manifest.json does not list it "
                          f"(hash unverified); re-run `emofuse calibrate {bundle.root}`")
    raise ConfigError(f"bundle {bundle.root} has no INT8 graph for {role!r} ({int8_name}); "
                      f"run `emofuse calibrate {bundle.root}` first, or ask for fp32/fp16")


def resolve_precision(bundle, precision: str, role: str = "model") -> tuple[str, str]:
    """Turn ``"auto"`` into a concrete precision; pass the others through.

    ``auto`` is ``int8`` when the bundle has an INT8 graph for ``role``, else ``fp32``.

    Returns:
        (precision, reason) with reason a short sentence for logs and metadata.

    Raises:
        ConfigError: unknown precision.
    """
    if precision != "auto":
        return check_precision(precision), "requested"
    try:
        entry = graph_file(bundle, role, "int8")
    except ConfigError as exc:
        return "fp32", f"auto: no usable INT8 graph ({exc})"
    return "int8", f"auto: the bundle has an INT8 graph ({entry.name})"


@dataclass(frozen=True)
class LatencyStats:
    """Summary of an engine's recorded runs.

    Attributes:
        count: number of runs summarised.
        items: windows processed over those runs (sum of batch sizes).
        mean_ms, p50_ms, p90_ms, p99_ms, min_ms, max_ms: wall time per run, milliseconds
            (NaN when ``count`` is 0). Percentiles use linear interpolation.
        items_per_s: throughput, windows per second of run time (NaN when ``count`` is 0).
    """

    count: int
    items: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    items_per_s: float

    def to_dict(self) -> dict:
        """JSON-ready dict; NaN becomes None."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}

    def __str__(self) -> str:
        if self.count == 0:
            return "no runs recorded"
        return (f"{self.count} runs: p50 {self.p50_ms:.3f} ms, p90 {self.p90_ms:.3f} ms, "
                f"p99 {self.p99_ms:.3f} ms, mean {self.mean_ms:.3f} ms, "
                f"{self.items_per_s:.1f} windows/s")


def latency_stats(durations_s, batches) -> LatencyStats:
    """Summarise per-run durations.

    Args:
        durations_s: (N,) wall time of each run, seconds.
        batches: (N,) batch size of each run.

    Returns:
        The :class:`LatencyStats` (all-NaN timings when N is 0).
    """
    d = np.asarray(durations_s, dtype=np.float64)
    b = np.asarray(batches, dtype=np.int64)
    if d.size == 0:
        nan = float("nan")
        return LatencyStats(0, 0, nan, nan, nan, nan, nan, nan, nan)
    ms = d * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    total = float(d.sum())
    return LatencyStats(
        count=int(d.size), items=int(b.sum()), mean_ms=float(ms.mean()), p50_ms=float(p50),
        p90_ms=float(p90), p99_ms=float(p99), min_ms=float(ms.min()), max_ms=float(ms.max()),
        items_per_s=float(b.sum() / total) if total > 0 else float("inf"),
    )


class Engine(abc.ABC):
    """Runs one graph of a bundle on one backend (see the module docstring).

    Subclasses implement :meth:`_activate`, :meth:`_deactivate` and :meth:`_infer`; they fill
    :attr:`metadata` when activated and may narrow :attr:`max_batch` (a TensorRT profile).

    Attributes:
        backend: registry name of the backend (``"onnxruntime"``, ``"tensorrt"``).
        metadata: what the engine really runs (backend, precision, graph, providers, notes);
            plain JSON values, meant to be copied into results.
    """

    backend = ""

    def __init__(self, inputs, outputs, *, max_batch: int | None = None,
                 history: int = DEFAULT_HISTORY) -> None:
        if max_batch is not None and (isinstance(max_batch, bool) or int(max_batch) != max_batch
                                      or max_batch < 1):
            raise ConfigError(f"max_batch must be a positive int or None, got {max_batch!r}")
        if history < 1:
            raise ConfigError(f"history must be >= 1, got {history}")
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)
        for spec in self._inputs + self._outputs:
            if not spec.shape or spec.shape[0] != BATCH:
                raise ConfigError(f"tensor {spec.name!r} shape {list(spec.shape)} does not start "
                                  "with the dynamic batch dim")
        self.max_batch = None if max_batch is None else int(max_batch)
        # How the engine was chosen (open_engine fills it); copied into metadata on activation.
        self.selection: dict = {}
        self.metadata: dict = self._fresh_metadata()
        self._active = False
        self._durations = collections.deque(maxlen=history)
        self._batches = collections.deque(maxlen=history)
        self._stats_lock = threading.Lock()

    # --- specs ---------------------------------------------------------------------------------

    @property
    def input_specs(self) -> tuple:
        """The graph's input :class:`edge.bundle.TensorSpec` objects, in graph order."""
        return self._inputs

    @property
    def output_specs(self) -> tuple:
        """The graph's output :class:`edge.bundle.TensorSpec` objects, in graph order."""
        return self._outputs

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self._outputs]

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._active

    def activate(self) -> "Engine":
        """Create the backend's session or engine; a no-op when already active.

        Returns:
            self.

        Raises:
            MissingDependencyError: the backend's library is not installed.
            ConfigError, BadInputError, DeviceError: as the backend says.
        """
        if not self._active:
            self._activate()
            self._active = True
            log.info("%s engine active: %s", self.backend, self.describe())
        return self

    def deactivate(self) -> None:
        """Release the backend's resources; a no-op when not active."""
        if self._active:
            try:
                self._deactivate()
            finally:
                self._active = False

    def __enter__(self) -> "Engine":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def describe(self) -> str:
        """One line: backend, precision, graph and providers as recorded in metadata."""
        m = self.metadata
        parts = [m.get("backend", "?"), m.get("precision", "?")]
        if m.get("graph"):
            parts.append(str(m["graph"]))
        if m.get("engine_file"):
            parts.append(str(m["engine_file"]))
        if m.get("providers"):
            parts.append("+".join(m["providers"]))
        return " ".join(parts)

    def _fresh_metadata(self, **fields) -> dict:
        """Metadata for a new activation: backend, ``fields``, selection, empty notes."""
        return {"backend": self.backend, **fields, **self.selection, "notes": []}

    def note(self, message: str) -> None:
        """Record (and log as a warning) something that differs from what was asked."""
        log.warning("%s engine: %s", self.backend, message)
        self.metadata.setdefault("notes", []).append(message)

    # --- running -------------------------------------------------------------------------------

    def validate(self, inputs) -> tuple[dict, int]:
        """Check ``inputs`` against the input specs.

        Args:
            inputs: mapping input name -> ndarray of the spec's dtype and shape
                ``(B, *spec.shape[1:])``, one B >= 1 for all inputs.

        Returns:
            (feeds, B): C-contiguous arrays by name in graph order, and the batch size.

        Raises:
            BadInputError: not a mapping, a name missing or unknown, an array that is not an
                ndarray, a dtype that differs, a rank or non-batch dim that differs, batch sizes
                that differ between inputs, a batch of 0, or one above :attr:`max_batch`.
        """
        if not hasattr(inputs, "keys"):
            raise BadInputError(f"inputs must be a dict of name -> ndarray, got "
                                f"{type(inputs).__name__}")
        names = self.input_names
        missing = [n for n in names if n not in inputs]
        extra = sorted(str(k) for k in inputs.keys() if k not in names)
        if missing or extra:
            raise BadInputError(f"inputs {sorted(map(str, inputs.keys()))} do not match the "
                                f"graph's {names}: missing {missing}, unknown {extra}")
        feeds = {}
        batch = None
        first = None
        for spec in self._inputs:
            arr = inputs[spec.name]
            if not isinstance(arr, np.ndarray):
                raise BadInputError(f"input {spec.name!r} must be a numpy array, got "
                                    f"{type(arr).__name__}")
            if arr.dtype != np.dtype(spec.dtype):
                raise BadInputError(f"input {spec.name!r} is {arr.dtype}; the graph takes "
                                    f"{spec.dtype} (convert it explicitly)")
            want = tuple(spec.shape[1:])
            if arr.ndim != len(spec.shape) or tuple(arr.shape[1:]) != want:
                raise BadInputError(f"input {spec.name!r} has shape {arr.shape}; the graph takes "
                                    f"(batch, {', '.join(map(str, want))})")
            if batch is None:
                batch, first = arr.shape[0], spec.name
            elif arr.shape[0] != batch:
                raise BadInputError(f"batch sizes differ: {first!r} has {batch}, {spec.name!r} "
                                    f"has {arr.shape[0]}")
            feeds[spec.name] = np.ascontiguousarray(arr)
        if batch < 1:
            raise BadInputError("batch size is 0: nothing to run")
        if self.max_batch is not None and batch > self.max_batch:
            raise BadInputError(f"batch size {batch} exceeds this engine's maximum "
                                f"{self.max_batch}; split the batch")
        return feeds, int(batch)

    def run(self, inputs) -> dict:
        """Run the graph on one batch.

        Args:
            inputs: see :meth:`validate`.

        Returns:
            dict output name -> ndarray ``(B, *spec.shape[1:])`` of the output spec's dtype, in
            graph order; arrays the caller owns.

        Raises:
            ConfigError: the engine is not active, or the backend returned outputs that differ
                from the manifest's.
            BadInputError: as :meth:`validate`.
        """
        if not self._active:
            raise ConfigError(f"{self.backend} engine is not active: use `with engine:` or "
                              "call engine.activate() first")
        t0 = time.perf_counter()
        feeds, batch = self.validate(inputs)
        raw = self._infer(feeds, batch)
        dt = time.perf_counter() - t0
        with self._stats_lock:
            self._durations.append(dt)
            self._batches.append(batch)
        return self._check_outputs(raw, batch)

    # Polygraphy's runners call it infer; both names work.
    infer = run

    def _check_outputs(self, raw: dict, batch: int) -> dict:
        out = {}
        for spec in self._outputs:
            if spec.name not in raw:
                raise ConfigError(f"{self.backend} returned no output {spec.name!r} "
                                  f"(got {sorted(raw)})")
            arr = np.asarray(raw[spec.name])
            want = (batch, *spec.shape[1:])
            if arr.shape != want:
                raise ConfigError(f"{self.backend} output {spec.name!r} has shape {arr.shape}, "
                                  f"the manifest says {want}")
            out[spec.name] = arr
        return out

    def dummy_inputs(self, batch: int = 1) -> dict:
        """Zero-filled inputs of the specs' dtypes and shapes for a batch of ``batch``."""
        return {s.name: np.zeros((batch, *s.shape[1:]), dtype=np.dtype(s.dtype))
                for s in self._inputs}

    def warmup(self, n: int = 10, batch: int = 1, inputs=None) -> LatencyStats:
        """Run ``n`` times so that lazy allocations and kernel selection happen before timing.

        The warm-up runs are then dropped from the latency record.

        Args:
            n: number of runs (>= 1).
            batch: batch size of the zero inputs used when ``inputs`` is None.
            inputs: optional real inputs to warm up with (see :meth:`validate`).

        Returns:
            :class:`LatencyStats` of the warm-up runs themselves (the first is the cold start).

        Raises:
            ConfigError: n < 1 or the engine is not active.
            BadInputError: as :meth:`validate`.
        """
        if n < 1:
            raise ConfigError(f"warm-up needs n >= 1, got {n}")
        feeds = self.dummy_inputs(batch) if inputs is None else inputs
        self.reset_latency()
        for _ in range(n):
            self.run(feeds)
        stats = self.latency()
        self.reset_latency()
        return stats

    def latency(self) -> LatencyStats:
        """:class:`LatencyStats` of the runs recorded since the last reset (history-bounded)."""
        with self._stats_lock:
            return latency_stats(list(self._durations), list(self._batches))

    def reset_latency(self) -> None:
        """Forget the recorded runs."""
        with self._stats_lock:
            self._durations.clear()
            self._batches.clear()

    # --- backend hooks -------------------------------------------------------------------------

    @abc.abstractmethod
    def _activate(self) -> None:
        """Create the session/engine and fill metadata."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Release what _activate created."""

    @abc.abstractmethod
    def _infer(self, feeds: dict, batch: int) -> dict:
        """Run validated, contiguous feeds; return output name -> array."""

    def __repr__(self) -> str:
        state = "active" if self._active else "inactive"
        return f"<{type(self).__name__} {state} {self.describe()}>"
