"""ONNX Runtime engine: the backend that runs everywhere (any CPU; CUDA or TensorRT when present).

Execution providers are tried in the order TensorRT EP, CUDA EP, CPU, keeping only those this
onnxruntime build offers (``onnxruntime.get_available_providers()``); a caller may name its own
list. ONNX Runtime itself drops a provider whose libraries fail to load and carries on with the
next, printing only a log line; :class:`OrtEngine` compares the providers the session really
uses with the ones it asked for and records every difference in ``metadata["notes"]``.

Precision picks the graph: ``fp32`` the exported ``model.onnx``, ``int8`` the Q/DQ
``model.int8.onnx`` (run by the CPU EP's integer kernels, or by the TensorRT EP as explicit
quantization), ``fp16`` the FP32 graph with the TensorRT EP's FP16 mode. Without the TensorRT EP
there is no FP16 path here, so ``fp16`` then runs FP32: logged and recorded, never silent.

Thread settings: ``intra_op_threads`` (threads inside one operator; None lets ONNX Runtime use
every core), ``inter_op_threads`` (parallel branches; 1 with sequential execution, which these
small graphs need), ``allow_spinning`` (busy-wait between operators: lower latency, more power;
None keeps ONNX Runtime's default). ``graph_optimization`` is one of
:data:`GRAPH_OPTIMIZATION` (ONNX Runtime's levels).
"""
from __future__ import annotations

import logging
from pathlib import Path

from edge.engine.base import Engine, check_precision, graph_file, graph_specs, load
from firmware_bridge.errors import BadInputError, ConfigError, require

log = logging.getLogger("emofuse.engine")

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
PROVIDER_ORDER = (TRT_EP, CUDA_EP, CPU_EP)
GRAPH_OPTIMIZATION = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
# The TensorRT EP builds engines at session start; caching them beside the bundle turns a
# minutes-long start on a Jetson into seconds from the second run on.
TRT_EP_CACHE_DIR = "engines/ort-trt-cache"


def choose_providers(available, requested=None, *, precision: str = "fp32",
                     trt_cache_dir: str | None = None, device_id: int = 0):
    """Decide the execution providers and their options for a session.

    Args:
        available: provider names this onnxruntime offers (``get_available_providers()``).
        requested: provider names in priority order, or None for :data:`PROVIDER_ORDER`.
        precision: ``"int8"``, ``"fp16"`` or ``"fp32"``; sets the TensorRT EP's modes.
        trt_cache_dir: folder for the TensorRT EP's engine and timing caches (None: no cache).
        device_id: CUDA device for the GPU providers.

    Returns:
        (providers, notes): a list of ``(name, options dict)`` in priority order, and sentences
        naming each requested provider that is not available (dropped).

    Raises:
        ConfigError: nothing usable is left, or ``requested`` is empty.
    """
    check_precision(precision)
    available = list(available)
    if requested is None:
        wanted = [p for p in PROVIDER_ORDER if p in available]
        notes = []
    else:
        requested = list(requested)
        if not requested:
            raise ConfigError("providers list is empty")
        wanted = [p for p in requested if p in available]
        notes = [f"execution provider {p} requested but not available in this onnxruntime "
                 f"(available: {available}); dropped" for p in requested if p not in available]
    if not wanted:
        raise ConfigError(f"none of the execution providers {requested or list(PROVIDER_ORDER)} "
                          f"is available (this onnxruntime offers {available})")
    providers = []
    for name in wanted:
        if name == TRT_EP:
            opts = {"device_id": device_id, "trt_fp16_enable": precision == "fp16",
                    "trt_int8_enable": precision == "int8"}
            if trt_cache_dir is not None:
                opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=trt_cache_dir,
                            trt_timing_cache_enable=True)
            providers.append((name, opts))
        elif name == CUDA_EP:
            providers.append((name, {"device_id": device_id}))
        else:
            providers.append((name, {}))
    return providers, notes


class SessionFromOnnx:
    """Loader (Polygraphy naming): makes an ``onnxruntime.InferenceSession`` from an ONNX file.

    Args:
        path: the ONNX file.
        providers: list of ``(provider name, options dict)`` in priority order
            (:func:`choose_providers`).
        intra_op_threads, inter_op_threads, graph_optimization, allow_spinning: as
            :class:`OrtEngine`.

    Calling it returns the session.

    Raises (on call):
        BadInputError: ONNX Runtime cannot load the file.
    """

    def __init__(self, path, providers, *, intra_op_threads: int | None = None,
                 inter_op_threads: int = 1, graph_optimization: str = "all",
                 allow_spinning: bool | None = None) -> None:
        if graph_optimization not in GRAPH_OPTIMIZATION:
            raise ConfigError(f"graph_optimization {graph_optimization!r} is not one of "
                              f"{list(GRAPH_OPTIMIZATION)}")
        self.path = Path(path)
        self.providers = list(providers)
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.graph_optimization = graph_optimization
        self.allow_spinning = allow_spinning

    def __call__(self):
        ort = require("onnxruntime", "core", "running a bundle with ONNX Runtime")
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                              GRAPH_OPTIMIZATION[self.graph_optimization])
        # These graphs are one chain of operators: parallel branches buy nothing.
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if self.intra_op_threads is not None:
            so.intra_op_num_threads = int(self.intra_op_threads)
        so.inter_op_num_threads = int(self.inter_op_threads)
        if self.allow_spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning",
                                        "1" if self.allow_spinning else "0")
        try:
            return ort.InferenceSession(
                str(self.path), sess_options=so,
                providers=[name for name, _ in self.providers],
                provider_options=[opts for _, opts in self.providers])
        except Exception as exc:  # ORT's errors are not Python exception subclasses we know
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"{self.path}: ONNX Runtime cannot load it ({msg})") from exc


class OrtEngine(Engine):
    """Runs one graph of a bundle with ONNX Runtime (see the module docstring).

    Args:
        bundle: an :class:`edge.bundle.Bundle` or a bundle folder.
        precision: ``"int8"``, ``"fp16"`` or ``"fp32"``.
        role: which graph: ``"model"`` (valence/arousal) or ``"face_encoder"`` (MVP).
        providers: execution provider names in priority order (default :data:`PROVIDER_ORDER`,
            filtered to those available).
        intra_op_threads: threads within an operator (None: ONNX Runtime's default, all cores).
        inter_op_threads: threads across independent operators (default 1, sequential).
        graph_optimization: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"`` (default).
        allow_spinning: let idle worker threads busy-wait (None: ONNX Runtime's default).
        max_batch: refuse batches larger than this (None: no limit).
        device_id: CUDA device for the GPU providers.
        trt_cache_dir: TensorRT EP engine cache folder (default ``BUNDLE/engines/ort-trt-cache``).

    Raises:
        ConfigError: bad settings, or no graph for the precision (``int8`` before calibration).
        BadInputError: unreadable bundle.
    """

    backend = "onnxruntime"

    def __init__(self, bundle, precision: str = "fp32", *, role: str = "model",
                 providers=None, intra_op_threads: int | None = None, inter_op_threads: int = 1,
                 graph_optimization: str = "all", allow_spinning: bool | None = None,
                 max_batch: int | None = None, device_id: int = 0,
                 trt_cache_dir: str | None = None) -> None:
        self.bundle = load(bundle)
        inputs, outputs = graph_specs(self.bundle, role)
        super().__init__(inputs, outputs, max_batch=max_batch)
        check_precision(precision)
        if graph_optimization not in GRAPH_OPTIMIZATION:
            raise ConfigError(f"graph_optimization {graph_optimization!r} is not one of "
                              f"{list(GRAPH_OPTIMIZATION)}")
        for name, value in (("intra_op_threads", intra_op_threads),
                            ("inter_op_threads", inter_op_threads)):
            if value is not None and (isinstance(value, bool) or int(value) != value
                                      or value < 1):
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        self.role = role
        self.precision_requested = precision
        self._entry = graph_file(self.bundle, role, precision)
        self._providers_requested = None if providers is None else list(providers)
        self._intra = intra_op_threads
        self._inter = inter_op_threads
        self._opt = graph_optimization
        self._spinning = allow_spinning
        self._device_id = device_id
        self._trt_cache_dir = trt_cache_dir or str(self.bundle.root / TRT_EP_CACHE_DIR)
        self._session = None
        self._output_names = [s.name for s in outputs]

    @property
    def graph_path(self) -> Path:
        """The ONNX file this engine runs."""
        return self.bundle.root / self._entry.name

    def _activate(self) -> None:
        ort = require("onnxruntime", "core", "running a bundle with ONNX Runtime")
        self.metadata = self._fresh_metadata(
            role=self.role, precision_requested=self.precision_requested,
            graph=self._entry.name, graph_sha256=self._entry.sha256,
            onnxruntime=ort.__version__)
        providers, notes = choose_providers(
            ort.get_available_providers(), self._providers_requested,
            precision=self.precision_requested, trt_cache_dir=self._trt_cache_dir,
            device_id=self._device_id)
        for message in notes:
            self.note(message)
        if any(name == TRT_EP for name, _ in providers):
            Path(self._trt_cache_dir).mkdir(parents=True, exist_ok=True)

        self._session = SessionFromOnnx(
            self.graph_path, providers, intra_op_threads=self._intra,
            inter_op_threads=self._inter, graph_optimization=self._opt,
            allow_spinning=self._spinning)()

        active = list(self._session.get_providers())
        for name, _ in providers:
            if name not in active:
                self.note(f"execution provider {name} was requested but ONNX Runtime did not "
                          f"enable it (its libraries failed to load?); running on {active}")
        self.metadata.update(
            providers_requested=[name for name, _ in providers],
            providers=active,
            provider_options={name: opts for name, opts in providers if name in active},
            threads={"intra_op": self._intra, "inter_op": self._inter,
                     "allow_spinning": self._spinning},
            graph_optimization=self._opt,
            precision=self._effective_precision(active),
        )

    def _effective_precision(self, active: list[str]) -> str:
        if self.precision_requested != "fp16":
            return self.precision_requested
        if active and active[0] == TRT_EP:
            return "fp16"
        self.note(f"fp16 needs the TensorRT execution provider; running the FP32 graph on "
                  f"{active[0] if active else 'none'} instead")
        return "fp32"

    def _deactivate(self) -> None:
        self._session = None

    def _infer(self, feeds: dict, batch: int) -> dict:
        values = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, values))
