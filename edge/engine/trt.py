"""TensorRT engine: plans built by ``emofuse build``, run on a Jetson (or any NVIDIA GPU).

Engine files and their keys
---------------------------
A TensorRT plan only runs on the TensorRT version and GPU it was built for, and only means
something for the exact graph it was built from. ``emofuse build`` therefore names every plan by
an :class:`EngineKey`: the graph file and its SHA-256, TensorRT version, GPU name and compute
capability, precision (and INT8 mode: Q/DQ graph or TensorRT 10's implicit calibration, with the
calibration data's SHA-256), the batch profile and the DLA core. The file is
``BUNDLE/engines/<role>-<precision>-b<max>[-dla<N>]-<digest>.plan`` and manifest.json lists it
under ``"engines"`` (path -> key, plan SHA-256, builder settings). At run time
:func:`find_engine` looks for a record whose key matches this machine and the bundle as it is
now, and says for every other record why it does not (a JetPack upgrade changed TensorRT, another
board, a re-exported or re-calibrated graph, a batch profile too small, a corrupt file), so a
stale engine is never loaded. Keys, records and the matching live in :mod:`edge.engine.plans`
(every name also imports from here). Building happens in ``calibrate.engine_build``; ``edge``
(which never imports ``calibrate``) only reads.

Running
-------
:class:`TrtEngine` deserializes the plan, allocates page-locked host buffers and device buffers
for the profile's largest batch once, binds them with ``set_tensor_address`` and per run sets
the input shapes (``set_input_shape``), copies inputs host -> device, calls
``execute_async_v3`` on its own CUDA stream, copies outputs back and synchronises. CUDA
(:mod:`edge.engine.cuda`) comes from pycuda (what the design names) or cuda-python, whichever
is installed. The CUDA context is
created and made current in the thread that calls :meth:`TrtEngine.activate`, so an engine can
live in a worker thread; a run from another thread makes the context current for that call.
TensorRT 10 and 11 are told apart by the features they offer (``hasattr``), not by version
strings. TensorRT, pycuda and cuda-python are imported only on activation; when missing, one
:class:`~firmware_bridge.errors.MissingDependencyError` names the ``jetson`` extra.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.engine.base import Engine, check_precision, graph_specs, load
from edge.engine.cuda import EXTRA, open_cuda
from edge.engine.plans import (
    ENGINES_DIR, INT8_MODES, MANIFEST_SECTION, EngineKey, EngineMatch, EngineRecord, TrtPlatform,
    check_profile, engine_key, engine_path, engine_records, find_engine, probe_platform,
    read_manifest_json, require_tensorrt, stale_reasons, tensorrt_status,
)
from firmware_bridge.errors import BadInputError, ConfigError, DeviceError

# The plan records and CUDA helpers live in edge.engine.plans and edge.engine.cuda; every name
# keeps its old path here.
__all__ = [
    "ENGINES_DIR",
    "EXTRA",
    "EngineFromPlan",
    "EngineKey",
    "EngineMatch",
    "EngineRecord",
    "INT8_MODES",
    "MANIFEST_SECTION",
    "TrtEngine",
    "TrtPlatform",
    "check_profile",
    "engine_key",
    "engine_path",
    "engine_records",
    "find_engine",
    "open_cuda",
    "probe_platform",
    "read_manifest_json",
    "stale_reasons",
    "require_tensorrt",
    "tensorrt_status",
    "trt_nptype",
]

log = logging.getLogger("emofuse.engine")


def trt_nptype(trt, dtype) -> np.dtype:
    """numpy dtype of a ``tensorrt.DataType``.

    Raises:
        ConfigError: a TensorRT type numpy cannot hold (FP8, INT4...).
    """
    if TYPE_CHECKING:  # the stubs' types, so pyright checks every TensorRT call below
        import tensorrt as trt
    if hasattr(trt, "nptype"):
        try:
            return np.dtype(trt.nptype(dtype))
        except TypeError:
            pass
    by_name = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
               "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}
    name = getattr(dtype, "name", str(dtype)).split(".")[-1]
    if name not in by_name:
        raise ConfigError(f"TensorRT tensor type {name} has no numpy equivalent")
    return np.dtype(by_name[name])


# --- engine ----------------------------------------------------------------------------------


class EngineFromPlan:
    """Loader (Polygraphy naming): deserializes a plan file into a TensorRT ``ICudaEngine``.

    Args:
        path: the plan file.
        sha256: its recorded SHA-256, checked before TensorRT sees the bytes (None: no check).
        dla_core: the DLA core the plan was built for, -1 for the GPU.

    Calling it with the imported ``tensorrt`` module returns the engine; the loader keeps the
    ``trt.Runtime`` (:attr:`runtime`), which must outlive it.

    Raises (on call):
        BadInputError: unreadable plan, a SHA-256 that differs, or TensorRT cannot deserialize
            it (another TensorRT version, a corrupt file).
    """

    def __init__(self, path, *, sha256: str | None = None, dla_core: int = -1) -> None:
        self.path = Path(path)
        self.sha256 = sha256
        self.dla_core = int(dla_core)
        self.runtime = None

    def __call__(self, trt):
        if TYPE_CHECKING:  # the stubs' types, so pyright checks every TensorRT call below
            import tensorrt as trt
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise BadInputError(f"{self.path}: cannot read ({exc})") from exc
        if self.sha256 is not None and hashlib.sha256(data).hexdigest() != self.sha256:
            raise BadInputError(f"{self.path}: sha256 differs from the recorded one (corrupt or "
                                "replaced); rebuild with `emofuse build`")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self._logger)
        if self.dla_core >= 0:
            self.runtime.DLA_core = self.dla_core
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BadInputError(f"{self.path}: TensorRT {trt.__version__} could not deserialize "
                                "it (see the TensorRT log); rebuild with `emofuse build`")
        return engine



class TrtEngine(Engine):
    """Runs a plan built by ``emofuse build`` (see the module docstring).

    Args:
        bundle: an :class:`edge.bundle.Bundle` or a bundle folder.
        precision: ``"int8"``, ``"fp16"`` or ``"fp32"``.
        role: which graph (``"model"``, ``"face_encoder"``).
        engine_file: a specific plan (relative to the bundle or absolute) that manifest.json
            lists; default: the record :func:`find_engine` picks for this machine.
        device: CUDA device ordinal.
        max_batch: the largest batch the caller will run (a plan whose profile stops below it
            is not used); the engine's limit is the plan's profile maximum.
        dla_core: look for a plan built for this DLA core (None: a GPU plan).

    Raises (on activation):
        MissingDependencyError: tensorrt or a CUDA binding is missing (extra ``jetson``).
        ConfigError: no plan fits this machine and bundle (the message says why each recorded
            plan does not), or the plan's tensors differ from the manifest's.
        BadInputError: TensorRT cannot deserialize the plan.
        DeviceError: CUDA failures.
    """

    backend = "tensorrt"

    def __init__(self, bundle, precision: str = "fp32", *, role: str = "model",
                 engine_file=None, device: int = 0, max_batch: int | None = None,
                 dla_core: int | None = None) -> None:
        self.bundle = load(bundle)
        inputs, outputs = graph_specs(self.bundle, role)
        super().__init__(inputs, outputs, max_batch=max_batch)
        self.role = role
        self.precision = check_precision(precision)
        self._engine_file = engine_file
        self._device = int(device)
        self._want_batch = max_batch
        self._dla_core = dla_core
        self._lock = threading.Lock()
        self._cuda = None
        self._loader = self._engine = self._context = None
        self._host: dict = {}
        self._dev: dict = {}

    def _resolve_record(self, platform: TrtPlatform) -> EngineRecord:
        if self._engine_file is None:
            match = find_engine(self.bundle, self.precision, platform, role=self.role,
                                max_batch=self._want_batch, dla_core=self._dla_core)
            if not match.found:
                raise ConfigError(f"no usable TensorRT engine for {self.bundle.root} "
                                  f"({self.role}, {self.precision}) on {platform}: "
                                  f"{match.explain()}")
            if match.record is None:  # found means a record; say so to the type checker
                raise ConfigError(f"no TensorRT engine record for {self.bundle.root}")
            return match.record
        records, _ = engine_records(self.bundle)
        wanted = Path(self._engine_file)
        for record in records:
            if (self.bundle.root / record.file).resolve() == (
                    wanted if wanted.is_absolute() else self.bundle.root / wanted).resolve():
                why = stale_reasons(self.bundle, record, platform)
                if why:
                    raise ConfigError(f"{record.file} cannot run here: {', '.join(why)}; "
                                      f"rebuild with `emofuse build {self.bundle.root} "
                                      f"--precision {record.key.precision}`")
                return record
        raise ConfigError(f"{self._engine_file} is not an engine recorded in "
                          f"{self.bundle.root / 'manifest.json'}")

    def _activate(self) -> None:
        trt = require_tensorrt("running TensorRT engines")
        if TYPE_CHECKING:
            import tensorrt as trt
        self._cuda = open_cuda(self._device)
        try:
            self._open(trt)
        except BaseException:
            self._release()
            raise

    def _open(self, trt) -> None:
        if TYPE_CHECKING:  # the stubs' types, so pyright checks every TensorRT call below
            import tensorrt as trt
        name, cc = self._cuda.device_info(self._device)
        platform = TrtPlatform(str(trt.__version__), name, cc)
        record = self._resolve_record(platform)
        plan_path = self.bundle.root / record.file
        self._loader = EngineFromPlan(plan_path, sha256=record.sha256,
                                      dla_core=record.key.dla_core)
        self._engine = self._loader(trt)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise DeviceError(f"{plan_path}: TensorRT could not create an execution context "
                              "(out of device memory?)")
        self._bind(trt, plan_path)
        self.metadata = self._fresh_metadata(
            role=self.role, precision=self.precision, precision_requested=self.precision,
            engine_file=record.file, engine_sha256=record.sha256, engine_key=record.key.to_dict(),
            graph=record.key.onnx_file, graph_sha256=record.key.onnx_sha256,
            tensorrt=str(trt.__version__), gpu=name, compute_capability=cc,
            cuda_binding=self._cuda.name, max_batch=self.max_batch,
        )

    def _bind(self, trt, plan_path: Path) -> None:
        """Check the plan's tensors against the manifest; allocate and bind max-batch buffers."""
        if TYPE_CHECKING:  # the stubs' types, so pyright checks every TensorRT call below
            import tensorrt as trt
        engine, ctx = self._engine, self._context
        io = {}
        for i in range(engine.num_io_tensors):
            tname = engine.get_tensor_name(i)
            io[tname] = engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
        want_in, want_out = set(self.input_names), set(self.output_names)
        got_in = {n for n, is_in in io.items() if is_in}
        got_out = {n for n, is_in in io.items() if not is_in}
        if got_in != want_in or got_out != want_out:
            raise ConfigError(f"{plan_path}: engine tensors in {sorted(got_in)} out "
                              f"{sorted(got_out)} differ from the manifest's in "
                              f"{sorted(want_in)} out {sorted(want_out)}")
        profile_max = None
        for spec in self.input_specs:
            dtype = trt_nptype(trt, engine.get_tensor_dtype(spec.name))
            if dtype != np.dtype(spec.dtype):
                raise ConfigError(f"{plan_path}: input {spec.name!r} is {dtype} in the engine, "
                                  f"{spec.dtype} in the manifest")
            mins, _, maxs = engine.get_tensor_profile_shape(spec.name, 0)
            # Dims slice to tuples (the stubs declare no __iter__, so tuple(dims) does not check).
            if tuple(maxs[:])[1:] != tuple(spec.shape[1:]) or tuple(mins[:])[1:] != tuple(
                    spec.shape[1:]):
                raise ConfigError(f"{plan_path}: input {spec.name!r} profile {tuple(mins[:])}.."
                                  f"{tuple(maxs[:])} does not fit the manifest's {spec.shape}")
            profile_max = maxs[0] if profile_max is None else min(profile_max, maxs[0])
        for spec in self.output_specs:
            dtype = trt_nptype(trt, engine.get_tensor_dtype(spec.name))
            if dtype != np.dtype(spec.dtype):
                raise ConfigError(f"{plan_path}: output {spec.name!r} is {dtype} in the engine, "
                                  f"{spec.dtype} in the manifest")
        if profile_max is None:
            raise ConfigError(f"{plan_path}: the engine has no inputs")
        limit = int(profile_max)
        self.max_batch = limit if self.max_batch is None else min(self.max_batch, limit)
        # Size every buffer for the largest batch once: set the maximum input shapes, read the
        # output shapes TensorRT infers from them, allocate, bind. Runs then only set shapes.
        for spec in self.input_specs:
            shape = (self.max_batch, *spec.shape[1:])
            if not ctx.set_input_shape(spec.name, shape):
                raise ConfigError(f"{plan_path}: TensorRT refused input shape {shape} for "
                                  f"{spec.name!r}")
        for spec in self.input_specs + self.output_specs:
            shape = tuple(ctx.get_tensor_shape(spec.name)[:])
            if any(d < 0 for d in shape):
                raise ConfigError(f"{plan_path}: {spec.name!r} has data-dependent shape {shape}; "
                                  "not supported")
            dtype = trt_nptype(trt, engine.get_tensor_dtype(spec.name))
            count = int(np.prod(shape))
            self._host[spec.name] = self._cuda.pinned(count, dtype)
            self._dev[spec.name] = self._cuda.malloc(count * dtype.itemsize)
            if not ctx.set_tensor_address(spec.name, self._dev[spec.name]):
                raise DeviceError(f"{plan_path}: set_tensor_address failed for {spec.name!r}")

    def _infer(self, feeds: dict, batch: int) -> dict:
        ctx, cuda = self._context, self._cuda
        with self._lock, cuda.current():
            for name, arr in feeds.items():
                if not ctx.set_input_shape(name, arr.shape):
                    raise BadInputError(f"TensorRT refused input shape {arr.shape} for {name!r}")
                host = self._host[name][:arr.size].reshape(arr.shape)
                np.copyto(host, arr)
                cuda.htod(self._dev[name], host)
            if not ctx.execute_async_v3(cuda.stream_handle):
                raise DeviceError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            views = {}
            for spec in self.output_specs:
                shape = tuple(ctx.get_tensor_shape(spec.name)[:])
                host = self._host[spec.name][:int(np.prod(shape))].reshape(shape)
                cuda.dtoh(host, self._dev[spec.name])
                views[spec.name] = host
            cuda.sync()
            # The pinned buffers are reused by the next run; the caller gets its own copies.
            return {name: view.copy() for name, view in views.items()}

    def _release(self) -> None:
        # TensorRT objects go before the CUDA context that holds their memory.
        self._context = self._engine = self._loader = None
        self._host.clear()
        self._dev.clear()
        if self._cuda is not None:
            cuda, self._cuda = self._cuda, None
            cuda.close()

    def _deactivate(self) -> None:
        self._release()
