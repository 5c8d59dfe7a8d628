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
stale engine is never loaded. Building happens in ``calibrate.engine_build``; this module (in
``edge``, which never imports ``calibrate``) only reads.

Running
-------
:class:`TrtEngine` deserializes the plan, allocates page-locked host buffers and device buffers
for the profile's largest batch once, binds them with ``set_tensor_address`` and per run sets
the input shapes (``set_input_shape``), copies inputs host -> device, calls
``execute_async_v3`` on its own CUDA stream, copies outputs back and synchronises. CUDA comes
from pycuda (what the design names) or cuda-python, whichever is installed. The CUDA context is
created and made current in the thread that calls :meth:`TrtEngine.activate`, so an engine can
live in a worker thread; a run from another thread makes the context current for that call.
TensorRT 10 and 11 are told apart by the features they offer (``hasattr``), not by version
strings. TensorRT, pycuda and cuda-python are imported only on activation; when missing, one
:class:`~firmware_bridge.errors.MissingDependencyError` names the ``jetson`` extra.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from edge.engine.base import Engine, check_precision, graph_file, graph_specs, load
from firmware_bridge.errors import (
    BadInputError,
    ConfigError,
    DeviceError,
    MissingDependencyError,
    require,
)

log = logging.getLogger("emofuse.engine")

ENGINES_DIR = "engines"
MANIFEST_SECTION = "engines"
INT8_MODES = ("none", "qdq", "calibrated")
EXTRA = "jetson"


# --- platform --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrtPlatform:
    """What a TensorRT plan is bound to on the machine at hand.

    Attributes:
        tensorrt_version: ``tensorrt.__version__``, e.g. ``"10.3.0"``.
        gpu_name: the CUDA device name, e.g. ``"Orin"``.
        compute_capability: ``"major.minor"``, e.g. ``"8.7"``.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    def __str__(self) -> str:
        return (f"TensorRT {self.tensorrt_version} on {self.gpu_name!r} "
                f"(sm {self.compute_capability})")


def tensorrt_status() -> tuple[bool, str]:
    """Whether ``import tensorrt`` works here, and why not.

    Returns:
        (True, "tensorrt <version>") or (False, "tensorrt not importable (<error>)").
    """
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the package is there, its libraries not
        return False, f"tensorrt not importable ({exc})"
    return True, f"tensorrt {getattr(tensorrt, '__version__', '?')}"


def probe_platform(device: int = 0) -> TrtPlatform:
    """The TensorRT version and CUDA device of this machine.

    Args:
        device: CUDA device ordinal.

    Raises:
        MissingDependencyError: tensorrt, or both pycuda and cuda-python, are missing.
        DeviceError: no CUDA device ``device`` (no driver, no GPU).
    """
    trt = require("tensorrt", EXTRA, "running TensorRT engines")
    cuda = _cuda_class()
    name, cc = cuda.device_info(device)
    return TrtPlatform(str(trt.__version__), name, cc)


# --- keys ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineKey:
    """Everything a built plan depends on; two keys are equal exactly when a plan is reusable.

    Attributes:
        role: the bundle graph (``"model"``, ``"face_encoder"``).
        onnx_file: the graph file the plan was built from (``model.onnx``, ``model.int8.onnx``).
        onnx_sha256: that file's SHA-256 as the manifest records it.
        tensorrt_version, gpu_name, compute_capability: see :class:`TrtPlatform`.
        precision: ``"int8"``, ``"fp16"`` or ``"fp32"``.
        int8_mode: ``"qdq"`` (explicit, from the Q/DQ graph), ``"calibrated"`` (TensorRT 10's
            implicit INT8 with an entropy calibrator) or ``"none"``.
        calibration_sha256: SHA-256 of the calibration data (``"calibrated"`` only, else "").
        batch_min, batch_opt, batch_max: the optimization profile of the batch dim.
        dla_core: DLA core the plan runs on, -1 for the GPU.
    """

    role: str
    onnx_file: str
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    int8_mode: str
    calibration_sha256: str
    batch_min: int
    batch_opt: int
    batch_max: int
    dla_core: int

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.int8_mode not in INT8_MODES:
            raise ConfigError(f"int8_mode {self.int8_mode!r} is not one of {list(INT8_MODES)}")
        if (self.precision == "int8") != (self.int8_mode != "none"):
            raise ConfigError(f"int8_mode {self.int8_mode!r} does not fit precision "
                              f"{self.precision!r}")
        if (self.int8_mode == "calibrated") != bool(self.calibration_sha256):
            raise ConfigError("calibration_sha256 is needed exactly for int8_mode 'calibrated'")
        check_profile(self.batch_min, self.batch_opt, self.batch_max)

    @property
    def platform(self) -> TrtPlatform:
        return TrtPlatform(self.tensorrt_version, self.gpu_name, self.compute_capability)

    @property
    def digest(self) -> str:
        """16 hex digits of the SHA-256 of the key's canonical JSON."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    @property
    def filename(self) -> str:
        """``<role>-<precision>-b<max>[-dla<N>]-<digest>.plan``."""
        dla = f"-dla{self.dla_core}" if self.dla_core >= 0 else ""
        return f"{self.role}-{self.precision}-b{self.batch_max}{dla}-{self.digest}.plan"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> "EngineKey":
        """Parse a key written by :meth:`to_dict`.

        Raises:
            ConfigError: a field is missing, unknown or of the wrong type.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"engine key must be a JSON object, got {type(data).__name__}")
        names = {f.name: f.type for f in fields(cls)}
        missing = sorted(set(names) - set(data))
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ConfigError(f"engine key fields: missing {missing}, unknown {unknown}")
        for name, value in data.items():
            want = int if names[name] == "int" else str
            if not isinstance(value, want) or isinstance(value, bool):
                raise ConfigError(f"engine key field {name!r} must be {want.__name__}, "
                                  f"got {value!r}")
        return cls(**data)


def check_profile(batch_min: int, batch_opt: int, batch_max: int) -> None:
    """Raise ConfigError unless 1 <= batch_min <= batch_opt <= batch_max."""
    for v in (batch_min, batch_opt, batch_max):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"batch profile values must be ints, got {v!r}")
    if not 1 <= batch_min <= batch_opt <= batch_max:
        raise ConfigError(f"batch profile needs 1 <= min <= opt <= max, got min {batch_min}, "
                          f"opt {batch_opt}, max {batch_max}")


def engine_key(bundle, precision: str, platform: TrtPlatform, *, role: str = "model",
               max_batch: int = 8, opt_batch: int = 1, min_batch: int = 1,
               dla_core: int | None = None, int8_mode: str | None = None,
               calibration_sha256: str = "") -> EngineKey:
    """The key of the plan that ``emofuse build`` makes for these settings on ``platform``.

    Args:
        bundle: an :class:`edge.bundle.Bundle` or bundle folder.
        precision: ``"int8"``, ``"fp16"`` or ``"fp32"``.
        platform: the target's :class:`TrtPlatform`.
        role: the bundle graph.
        max_batch, opt_batch, min_batch: the batch profile (1 <= min <= opt <= max).
        dla_core: DLA core, or None for the GPU.
        int8_mode: for int8: ``"qdq"`` (default when the bundle has a Q/DQ graph) or
            ``"calibrated"`` (default otherwise; needs ``calibration_sha256``).
        calibration_sha256: SHA-256 of the calibration data for ``"calibrated"``.

    Raises:
        ConfigError: inconsistent settings, a missing graph, a negative DLA core.
    """
    bundle = load(bundle)
    check_precision(precision)
    if dla_core is not None and (isinstance(dla_core, bool) or int(dla_core) != dla_core
                                 or dla_core < 0):
        raise ConfigError(f"dla_core must be a non-negative int or None, got {dla_core!r}")
    if precision != "int8":
        if int8_mode not in (None, "none"):
            raise ConfigError(f"int8_mode {int8_mode!r} given for precision {precision!r}")
        mode = "none"
    elif int8_mode is None:
        try:
            graph_file(bundle, role, "int8")
            mode = "qdq"
        except ConfigError:
            mode = "calibrated"
    else:
        mode = int8_mode
    entry = graph_file(bundle, role, "int8" if mode == "qdq" else "fp32")
    return EngineKey(
        role=role, onnx_file=entry.name, onnx_sha256=entry.sha256,
        tensorrt_version=platform.tensorrt_version, gpu_name=platform.gpu_name,
        compute_capability=platform.compute_capability, precision=precision, int8_mode=mode,
        calibration_sha256=calibration_sha256 if mode == "calibrated" else "",
        batch_min=int(min_batch), batch_opt=int(opt_batch), batch_max=int(max_batch),
        dla_core=-1 if dla_core is None else int(dla_core),
    )


def engine_path(bundle, key: EngineKey) -> Path:
    """Where the plan for ``key`` lives: ``BUNDLE/engines/<key.filename>``."""
    return load(bundle).root / ENGINES_DIR / key.filename


# --- records ---------------------------------------------------------------------------------


def read_manifest_json(root) -> dict:
    """manifest.json of the bundle folder ``root`` as raw JSON, every section kept.

    (:class:`edge.bundle.Manifest` keeps only the sections it knows; engine records and
    calibration settings live beside them.)

    Raises:
        BadInputError: missing, unreadable or malformed.
    """
    path = Path(root) / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read ({exc})") from exc


@dataclass(frozen=True)
class EngineRecord:
    """One built plan as manifest.json lists it.

    Attributes:
        file: path relative to the bundle (``engines/<name>.plan``).
        key: its :class:`EngineKey`.
        sha256: SHA-256 of the plan file at build time.
        info: everything else recorded (builder settings, build time, TensorRT features used).
    """

    file: str
    key: EngineKey
    sha256: str
    info: dict

    def to_dict(self) -> dict:
        return {"key": self.key.to_dict(), "digest": self.key.digest, "sha256": self.sha256,
                **self.info}


def engine_records(bundle) -> tuple[list[EngineRecord], list[str]]:
    """The engine records of a bundle's manifest.

    Returns:
        (records, problems): parsed records, and one sentence per malformed record (skipped).
    """
    bundle = load(bundle)
    raw = read_manifest_json(bundle.root).get(MANIFEST_SECTION, {})
    if not isinstance(raw, dict):
        return [], [f"manifest.json '{MANIFEST_SECTION}' is not a JSON object; ignored"]
    records, problems = [], []
    for file, entry in raw.items():
        try:
            if not isinstance(entry, dict):
                raise ConfigError("not a JSON object")
            key = EngineKey.from_dict(entry.get("key"))
            sha = entry.get("sha256")
            if not isinstance(sha, str) or len(sha) != 64:
                raise ConfigError("sha256 missing or malformed")
            if Path(file).is_absolute() or ".." in Path(file).parts:
                raise ConfigError("path leaves the bundle")
        except ConfigError as exc:
            problems.append(f"engine record {file!r} is malformed ({exc}); ignored")
            continue
        info = {k: v for k, v in entry.items() if k not in ("key", "digest", "sha256")}
        records.append(EngineRecord(file, key, sha, info))
    return records, problems


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stale_reasons(bundle, record: EngineRecord, platform: TrtPlatform | None, *,
                  check_file: bool = True) -> list[str]:
    """Why a recorded plan cannot serve this bundle on ``platform`` (empty: it can).

    Args:
        bundle: the bundle.
        record: the engine record.
        platform: this machine, or None to check only the graph and the file.
        check_file: also check that the plan exists and its SHA-256 is the recorded one.
    """
    bundle = load(bundle)
    key = record.key
    reasons = []
    entry = bundle.manifest.files.get(key.onnx_file)
    if entry is None:
        reasons.append(f"built from {key.onnx_file}, which the bundle no longer lists")
    elif entry.sha256 != key.onnx_sha256:
        reasons.append(f"built from {key.onnx_file} sha256 {key.onnx_sha256[:12]}..., the "
                       f"bundle's is now {entry.sha256[:12]}... (re-exported or re-calibrated)")
    if platform is not None:
        if key.tensorrt_version != platform.tensorrt_version:
            reasons.append(f"built with TensorRT {key.tensorrt_version}, this is TensorRT "
                           f"{platform.tensorrt_version}")
        if (key.gpu_name, key.compute_capability) != (platform.gpu_name,
                                                       platform.compute_capability):
            reasons.append(f"built for {key.gpu_name!r} (sm {key.compute_capability}), this is "
                           f"{platform.gpu_name!r} (sm {platform.compute_capability})")
    if check_file:
        path = bundle.root / record.file
        if not path.is_file():
            reasons.append(f"{record.file} is missing")
        elif _sha256(path) != record.sha256:
            reasons.append(f"{record.file} sha256 differs from the recorded one (corrupt or "
                           "replaced)")
    return reasons


@dataclass(frozen=True)
class EngineMatch:
    """Result of :func:`find_engine`.

    Attributes:
        record: the matching :class:`EngineRecord`, or None.
        path: its plan file, or None.
        reasons: why each other candidate was rejected (or why there were none).
    """

    record: EngineRecord | None
    path: Path | None
    reasons: tuple

    @property
    def found(self) -> bool:
        return self.record is not None

    def explain(self) -> str:
        """One line: the match, or every rejection reason joined by '; '."""
        if self.found:
            k = self.record.key
            return (f"matching engine {self.record.file} ({k.precision}, TensorRT "
                    f"{k.tensorrt_version}, {k.gpu_name!r} sm {k.compute_capability}, batch "
                    f"{k.batch_min}-{k.batch_max})")
        return "; ".join(self.reasons)


def find_engine(bundle, precision: str, platform: TrtPlatform, *, role: str = "model",
                max_batch: int | None = None, dla_core: int | None = None,
                check_file: bool = True) -> EngineMatch:
    """Find the recorded plan that serves ``bundle``'s ``role`` graph at ``precision`` here.

    Args:
        bundle: the bundle.
        precision: ``"int8"``, ``"fp16"`` or ``"fp32"``.
        platform: this machine (:func:`probe_platform`).
        role: the bundle graph.
        max_batch: the largest batch the caller will run (None: any profile).
        dla_core: the DLA core wanted, or None for a GPU plan.
        check_file: verify that the plan file exists and has its recorded SHA-256.

    Returns:
        :class:`EngineMatch`; among several matches the most recently built wins.
    """
    bundle = load(bundle)
    check_precision(precision)
    records, reasons = engine_records(bundle)
    want_dla = -1 if dla_core is None else int(dla_core)
    build_hint = (f"run `emofuse build {bundle.root} --precision {precision}` on this machine")
    matches = []
    candidates = [r for r in records if r.key.role == role and r.key.precision == precision]
    for record in candidates:
        why = stale_reasons(bundle, record, platform, check_file=check_file)
        if max_batch is not None and record.key.batch_max < max_batch:
            why.append(f"its batch profile stops at {record.key.batch_max}, {max_batch} needed")
        if record.key.dla_core != want_dla:
            where = lambda d: "the GPU" if d < 0 else f"DLA core {d}"  # noqa: E731
            why.append(f"built for {where(record.key.dla_core)}, {where(want_dla)} wanted")
        if why:
            reasons.append(f"{record.file}: " + ", ".join(why))
        else:
            matches.append(record)
    if matches:
        best = max(matches, key=lambda r: str(r.info.get("built_utc", "")))
        return EngineMatch(best, bundle.root / best.file, tuple(reasons))
    if not candidates:
        reasons.append(f"no {precision} TensorRT engine for {role!r} has been built")
    reasons.append(build_hint)
    return EngineMatch(None, None, tuple(reasons))


# --- CUDA ------------------------------------------------------------------------------------


def _cuda_class():
    """The CUDA wrapper class for whichever binding is installed (pycuda first)."""
    try:
        import pycuda.driver  # noqa: F401

        return _PyCuda
    except ImportError:
        pass
    try:
        _cudart()
        return _CudaPython
    except ImportError:
        pass
    raise MissingDependencyError(
        f"TensorRT inference needs CUDA from Python: pip install 'emofuse[{EXTRA}]' (pycuda), "
        "or install cuda-python")


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


class _PyCuda:
    """CUDA through pycuda's driver API, on the device's primary context (the one TensorRT's
    runtime-API calls use), pushed onto the activating thread."""

    name = "pycuda"

    @staticmethod
    def device_info(device: int) -> tuple[str, str]:
        import pycuda.driver as drv

        try:
            drv.init()
            dev = drv.Device(device)
            major, minor = dev.compute_capability()
            return str(dev.name()), f"{major}.{minor}"
        except drv.Error as exc:
            raise DeviceError(f"CUDA device {device}: {exc}") from exc

    def __init__(self, device: int) -> None:
        import pycuda.driver as drv

        self._drv = drv
        try:
            drv.init()
            self._ctx = drv.Device(device).retain_primary_context()
            self._ctx.push()
        except drv.Error as exc:
            raise DeviceError(f"CUDA device {device}: {exc}") from exc
        self.owner = threading.get_ident()
        self._allocs = []
        self._stream = drv.Stream()

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def malloc(self, nbytes: int) -> int:
        mem = self._drv.mem_alloc(max(int(nbytes), 1))
        self._allocs.append(mem)
        return int(mem)

    def pinned(self, count: int, dtype) -> np.ndarray:
        return self._drv.pagelocked_empty(max(int(count), 1), dtype)

    def htod(self, dptr: int, host: np.ndarray) -> None:
        self._drv.memcpy_htod_async(dptr, host, self._stream)

    def dtoh(self, host: np.ndarray, dptr: int) -> None:
        self._drv.memcpy_dtoh_async(host, dptr, self._stream)

    def sync(self) -> None:
        self._stream.synchronize()

    @contextlib.contextmanager
    def current(self):
        """Make the context current for a call from a thread other than the activating one."""
        if threading.get_ident() == self.owner:
            yield
            return
        self._ctx.push()
        try:
            yield
        finally:
            self._drv.Context.pop()

    def close(self) -> None:
        with self.current():
            for mem in self._allocs:
                mem.free()
            self._allocs.clear()
            self._stream = None
        if threading.get_ident() == self.owner:
            self._drv.Context.pop()
        self._ctx.detach()


class _CudaPython:
    """CUDA through cuda-python's runtime API; ``cudaSetDevice`` binds the device's primary
    context to the calling thread, which is what TensorRT uses."""

    name = "cuda-python"

    @staticmethod
    def _check(result, what: str):
        cudart = _cudart()
        err = result[0] if isinstance(result, tuple) else result
        if err != cudart.cudaError_t.cudaSuccess:
            text = cudart.cudaGetErrorString(err)
            text = text[1] if isinstance(text, tuple) else text
            if isinstance(text, bytes):
                text = text.decode(errors="replace")
            raise DeviceError(f"CUDA {what} failed: {text}")
        if isinstance(result, tuple):
            return result[1] if len(result) == 2 else result[1:]
        return None

    @classmethod
    def device_info(cls, device: int) -> tuple[str, str]:
        cudart = _cudart()
        prop = cls._check(cudart.cudaGetDeviceProperties(device), f"device {device} query")
        name = prop.name
        if isinstance(name, bytes):
            name = name.split(b"\0", 1)[0].decode(errors="replace")
        return str(name), f"{prop.major}.{prop.minor}"

    def __init__(self, device: int) -> None:
        self._rt = _cudart()
        self._device = device
        self._check(self._rt.cudaSetDevice(device), f"set device {device}")
        self.owner = threading.get_ident()
        self._stream = self._check(self._rt.cudaStreamCreate(), "stream create")
        self._device_ptrs = []
        self._host_ptrs = []

    @property
    def stream_handle(self) -> int:
        s = self._stream
        return int(s) if hasattr(s, "__int__") else int(s.getPtr())

    def malloc(self, nbytes: int) -> int:
        ptr = int(self._check(self._rt.cudaMalloc(max(int(nbytes), 1)), "malloc"))
        self._device_ptrs.append(ptr)
        return ptr

    def pinned(self, count: int, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(int(count), 1) * dtype.itemsize
        ptr = int(self._check(self._rt.cudaMallocHost(nbytes), "pinned host malloc"))
        self._host_ptrs.append(ptr)
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        return np.frombuffer(raw, dtype=np.uint8).view(dtype)

    def htod(self, dptr: int, host: np.ndarray) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(dptr, host.ctypes.data, host.nbytes, kind,
                                             self._stream), "copy to device")

    def dtoh(self, host: np.ndarray, dptr: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(host.ctypes.data, dptr, host.nbytes, kind,
                                             self._stream), "copy to host")

    def sync(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._stream), "stream synchronize")

    @contextlib.contextmanager
    def current(self):
        if threading.get_ident() != self.owner:
            self._check(self._rt.cudaSetDevice(self._device), f"set device {self._device}")
        yield

    def close(self) -> None:
        with self.current():
            for ptr in self._device_ptrs:
                self._rt.cudaFree(ptr)
            for ptr in self._host_ptrs:
                self._rt.cudaFreeHost(ptr)
            self._device_ptrs.clear()
            self._host_ptrs.clear()
            if self._stream is not None:
                self._rt.cudaStreamDestroy(self._stream)
                self._stream = None


def open_cuda(device: int = 0):
    """Open a CUDA context + stream on ``device`` in the calling thread (pycuda or cuda-python).

    Raises:
        MissingDependencyError: neither binding is installed.
        DeviceError: the device cannot be opened.
    """
    return _cuda_class()(device)


def trt_nptype(trt, dtype) -> np.dtype:
    """numpy dtype of a ``tensorrt.DataType``.

    Raises:
        ConfigError: a TensorRT type numpy cannot hold (FP8, INT4...).
    """
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
        trt = require("tensorrt", EXTRA, "running TensorRT engines")
        self._cuda = open_cuda(self._device)
        try:
            self._open(trt)
        except BaseException:
            self._release()
            raise

    def _open(self, trt) -> None:
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
            if tuple(maxs)[1:] != tuple(spec.shape[1:]) or tuple(mins)[1:] != tuple(
                    spec.shape[1:]):
                raise ConfigError(f"{plan_path}: input {spec.name!r} profile {tuple(mins)}.."
                                  f"{tuple(maxs)} does not fit the manifest's {spec.shape}")
            profile_max = maxs[0] if profile_max is None else min(profile_max, maxs[0])
        for spec in self.output_specs:
            dtype = trt_nptype(trt, engine.get_tensor_dtype(spec.name))
            if dtype != np.dtype(spec.dtype):
                raise ConfigError(f"{plan_path}: output {spec.name!r} is {dtype} in the engine, "
                                  f"{spec.dtype} in the manifest")
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
            shape = tuple(ctx.get_tensor_shape(spec.name))
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
                shape = tuple(ctx.get_tensor_shape(spec.name))
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
