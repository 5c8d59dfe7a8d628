"""Inference engines for exported bundles: one interface, a registry of backends.

``ENGINES`` maps a backend name to its :class:`~edge.engine.base.Engine` class
(``"onnxruntime"`` -> :class:`~edge.engine.ort.OrtEngine`, ``"tensorrt"`` ->
:class:`~edge.engine.trt.TrtEngine`); a new backend is one new entry. :func:`open_engine` picks
one (``backend="auto"``: TensorRT when ``tensorrt`` imports and the bundle holds a plan built for
this machine, else ONNX Runtime), logs the choice with its reason and records both in the
engine's metadata. Nothing heavy is imported here: ONNX Runtime, TensorRT and the CUDA bindings
are imported when an engine is activated. Details: docs/ENGINES.md.
"""
from __future__ import annotations

import logging

from edge.engine.base import (  # noqa: F401
    PRECISIONS,
    Engine,
    LatencyStats,
    graph_file,
    graph_specs,
    load,
    resolve_precision,
)
from edge.engine.ort import OrtEngine
from edge.engine.trt import TrtEngine, TrtPlatform, find_engine, probe_platform, tensorrt_status
from firmware_bridge.errors import ConfigError, DeviceError, MissingDependencyError

log = logging.getLogger("emofuse.engine")

ENGINES: dict[str, type] = {"onnxruntime": OrtEngine, "tensorrt": TrtEngine}
BACKENDS = ("auto", *ENGINES)

# Settings that only one backend understands; open_engine passes each backend its own.
_OPTIONS = {
    "onnxruntime": {"providers", "intra_op_threads", "inter_op_threads", "graph_optimization",
                    "allow_spinning", "device_id", "trt_cache_dir"},
    "tensorrt": {"engine_file", "device", "dla_core"},
}


def select_backend(bundle, backend: str = "auto", precision: str = "fp32", *,
                   role: str = "model", max_batch: int | None = None,
                   dla_core: int | None = None, tensorrt_importable: bool | None = None,
                   platform: TrtPlatform | None = None) -> tuple[str, str]:
    """Decide which backend runs ``bundle``, and say why.

    ``auto`` picks ``tensorrt`` when tensorrt imports and a recorded plan matches this machine
    and the bundle (:func:`~edge.engine.trt.find_engine`), else ``onnxruntime``. An explicit
    backend is returned as asked.

    Args:
        bundle: an :class:`edge.bundle.Bundle` or a bundle folder.
        backend: ``"auto"``, ``"onnxruntime"`` or ``"tensorrt"``.
        precision: ``"int8"``, ``"fp16"`` or ``"fp32"`` (resolve ``"auto"`` first).
        role: the bundle graph.
        max_batch, dla_core: passed to :func:`~edge.engine.trt.find_engine`.
        tensorrt_importable: whether tensorrt imports; None tries the import.
        platform: this machine's :class:`~edge.engine.trt.TrtPlatform`; None probes it (needs
            tensorrt, a CUDA binding and a GPU; a failure selects ONNX Runtime with the reason).

    Returns:
        (backend, reason): the backend name and a sentence for logs and metadata.

    Raises:
        ConfigError: unknown backend or precision.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r} is not one of {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    if backend != "auto":
        return backend, "requested"
    if tensorrt_importable is None:
        tensorrt_importable, why = tensorrt_status()
    else:
        why = "tensorrt not importable" if not tensorrt_importable else "tensorrt importable"
    if not tensorrt_importable:
        return "onnxruntime", why
    if platform is None:
        try:
            platform = probe_platform()
        except (MissingDependencyError, DeviceError) as exc:
            return "onnxruntime", f"tensorrt imports but no CUDA device is usable ({exc})"
    match = find_engine(load(bundle), precision, platform, role=role, max_batch=max_batch,
                        dla_core=dla_core)
    if match.found:
        return "tensorrt", f"{match.explain()} on {platform}"
    return "onnxruntime", f"no matching TensorRT engine on {platform}: {match.explain()}"


def open_engine(bundle, backend: str = "auto", precision: str = "fp32", *,
                role: str = "model", max_batch: int | None = None, **options) -> Engine:
    """Create (not yet activate) the engine that runs one graph of a bundle.

    Args:
        bundle: an :class:`edge.bundle.Bundle` or a bundle folder.
        backend: ``"auto"`` (see :func:`select_backend`), ``"onnxruntime"`` or ``"tensorrt"``.
        precision: ``"int8"``, ``"fp16"``, ``"fp32"`` or ``"auto"`` (int8 when the bundle has an
            INT8 graph, else fp32).
        role: ``"model"`` or ``"face_encoder"``.
        max_batch: the largest batch the caller will run.
        **options: backend settings (ONNX Runtime: providers, intra_op_threads,
            inter_op_threads, graph_optimization, allow_spinning, device_id, trt_cache_dir;
            TensorRT: engine_file, device, dla_core). Settings of the backend not chosen are
            dropped with a log line.

    Returns:
        The engine; use it as a context manager (``with open_engine(...) as engine:``) or call
        ``activate()``. ``engine.metadata`` carries ``backend_requested``, ``backend_reason``,
        ``precision_requested`` and ``precision_reason``.

    Raises:
        ConfigError: unknown backend, precision or option; the chosen backend's own errors.
        BadInputError: unreadable bundle.
    """
    bundle = load(bundle)
    known = set().union(*_OPTIONS.values())
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown engine options {unknown}; known: {sorted(known)}")
    asked_precision = precision
    precision, precision_reason = resolve_precision(bundle, precision, role)
    dla_core = options.get("dla_core")
    chosen, reason = select_backend(bundle, backend, precision, role=role, max_batch=max_batch,
                                    dla_core=dla_core)
    log.info("engine for %s (%s, %s): %s - %s", bundle.root, role, precision, chosen, reason)
    mine = {k: v for k, v in options.items() if k in _OPTIONS[chosen]}
    dropped = sorted(set(options) - set(mine))
    if dropped:
        log.info("engine options %s do not apply to %s; ignored", dropped, chosen)
    engine = ENGINES[chosen](bundle, precision, role=role, max_batch=max_batch, **mine)
    engine.selection = {"backend_requested": backend, "backend_reason": reason,
                        "precision_requested": asked_precision,
                        "precision_reason": precision_reason}
    engine.metadata = engine._fresh_metadata()
    return engine
