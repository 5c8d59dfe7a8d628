"""Build TensorRT engines from a bundle's ONNX graphs (``emofuse build``), for TensorRT 10 and 11.

What is built
-------------
* ``int8`` from the Q/DQ graph ``model.int8.onnx`` (``emofuse calibrate`` writes it): a strongly
  typed network, so every precision comes from the graph (explicit quantization). This is the
  main path and the only INT8 path on TensorRT 11, which removed implicit calibration.
* ``int8`` on TensorRT 10 only, when asked for (``int8_mode="calibrated"``) or when the bundle
  has no Q/DQ graph: implicit quantization of ``model.onnx`` with the ``INT8`` builder flag and an
  ``IInt8EntropyCalibrator2`` fed from ``calibration.npz`` beside the bundle (arrays named as the
  model inputs). Its calibration cache is kept as ``engines/calib-<role>-trt<version>-<data>.cache``
  so that another TensorRT version or other data never reuses it.
* ``fp16``: TensorRT 10 by the ``FP16`` builder flag on a weakly typed network; TensorRT 11 has no
  such flag and builds a mixed-precision graph made by NVIDIA ModelOpt AutoCast (when installed).
* ``fp32``: a strongly typed network of the exported graph.

Every engine gets one optimization profile for the dynamic batch dim (min 1, opt 1, max N),
a workspace limit (Jetson memory is shared with the CPU), a persisted timing cache keyed by
TensorRT version and GPU (``engines/timing-...cache``; later builds reuse measured tactics), and
optionally a DLA core (Orin) with GPU fallback. The file is named by its
:class:`~edge.engine.trt.EngineKey` and recorded in manifest.json under ``"engines"``; a recorded
engine whose graph, TensorRT version or GPU differs is stale: the build rebuilds it (or, with
``on_stale="fail"``, stops with the reasons). Records of graphs that changed are removed with their
files; engines of other machines are kept (one bundle folder may serve several boards).

TensorRT 10 and 11 are told apart by features (:func:`detect_caps`, ``hasattr``), never by
version strings. The planning step (:func:`plan_build`) is plain Python and tested everywhere;
the TensorRT calls run only in :func:`build_engine`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.bundle import parse_manifest
from edge.engine.base import check_precision, graph_file, graph_specs, load
from edge.engine.trt import (
    ENGINES_DIR,
    EXTRA,
    MANIFEST_SECTION,
    EngineKey,
    EngineRecord,
    TrtPlatform,
    check_profile,
    engine_key,
    engine_path,
    engine_records,
    open_cuda,
    probe_platform,
    read_manifest_json,
    require_tensorrt,
    stale_reasons,
)
from firmware_bridge.errors import (
    BadInputError,
    ConfigError,
    EmofuseError,
    MissingDependencyError,
)

__all__ = [
    "BuildPlan", "BuildResult", "EngineBuildError", "EngineFromOnnx", "TrtCaps", "build_engine",
    "calibration_batches", "detect_caps", "engine_key", "engine_path", "plan_build",
    "profile_shapes", "record_engine", "remove_engine_records", "update_manifest",
]

log = logging.getLogger("emofuse.build")

CALIBRATION_FILE = "calibration.npz"
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_MAX_BATCH = 8
DEFAULT_CALIB_BATCH = 8
ON_STALE = ("rebuild", "fail")


class EngineBuildError(EmofuseError):
    """TensorRT could not parse the graph or build the engine."""


# --- TensorRT features -----------------------------------------------------------------------


@dataclass(frozen=True)
class TrtCaps:
    """The TensorRT features a build can use, found by ``hasattr`` (:func:`detect_caps`).

    Attributes:
        version: ``tensorrt.__version__`` (recorded, never parsed).
        strongly_typed_flag: ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists.
        weak_precision_flags: ``BuilderFlag.FP16`` and ``BuilderFlag.INT8`` exist (TensorRT
            10 and older; TensorRT 11 removed them and is always strongly typed).
        implicit_int8: ``IInt8EntropyCalibrator2`` and the INT8 flag exist (TensorRT 10).
        dla: ``DeviceType.DLA`` exists.
    """

    version: str
    strongly_typed_flag: bool
    weak_precision_flags: bool
    implicit_int8: bool
    dla: bool

    @property
    def always_strongly_typed(self) -> bool:
        return not self.weak_precision_flags

    def to_dict(self) -> dict:
        return asdict(self)


def detect_caps(trt) -> TrtCaps:
    """Read the features of an imported ``tensorrt`` module."""
    if TYPE_CHECKING:  # the stubs' types, so pyright checks every TensorRT call below
        import tensorrt as trt
    net_flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
    builder_flags = getattr(trt, "BuilderFlag", None)
    weak = builder_flags is not None and all(hasattr(builder_flags, f) for f in ("FP16", "INT8"))
    return TrtCaps(
        version=str(getattr(trt, "__version__", "?")),
        strongly_typed_flag=net_flags is not None and hasattr(net_flags, "STRONGLY_TYPED"),
        weak_precision_flags=weak,
        implicit_int8=weak and hasattr(trt, "IInt8EntropyCalibrator2"),
        dla=hasattr(getattr(trt, "DeviceType", None), "DLA"),
    )


# --- planning --------------------------------------------------------------------------------


def profile_shapes(specs, max_batch: int, opt_batch: int = 1, min_batch: int = 1) -> dict:
    """Optimization-profile shapes for inputs whose first dim is the dynamic batch.

    Args:
        specs: input :class:`edge.bundle.TensorSpec` objects (shape ``("batch", ...)``).
        max_batch, opt_batch, min_batch: the batch profile, 1 <= min <= opt <= max.

    Returns:
        dict input name -> (min_shape, opt_shape, max_shape), each a tuple of ints.

    Raises:
        ConfigError: an invalid profile.
    """
    check_profile(min_batch, opt_batch, max_batch)
    return {s.name: tuple((b, *map(int, s.shape[1:])) for b in (min_batch, opt_batch, max_batch))
            for s in specs}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def default_timing_cache(bundle, platform: TrtPlatform) -> Path:
    """``BUNDLE/engines/timing-trt<version>-<gpu>-sm<cc>.cache`` (tactics are per GPU, version)."""
    return (load(bundle).root / ENGINES_DIR /
            f"timing-trt{platform.tensorrt_version}-{_slug(platform.gpu_name)}-"
            f"sm{platform.compute_capability}.cache")


def calibration_cache_path(bundle, role: str, tensorrt_version: str, data_sha256: str) -> Path:
    """``BUNDLE/engines/calib-<role>-trt<version>-<data sha[:12]>.cache``.

    The TensorRT version and the calibration data are in the name, so a cache is never reused
    by another version or for other data.
    """
    return (load(bundle).root / ENGINES_DIR /
            f"calib-{role}-trt{tensorrt_version}-{data_sha256[:12]}.cache")


def file_sha256(path) -> str:
    """Lowercase hex SHA-256 of a file.

    Raises:
        BadInputError: unreadable.
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc})") from exc
    return h.hexdigest()


@dataclass(frozen=True)
class BuildPlan:
    """Everything :func:`build_engine` will do, decided without TensorRT.

    Attributes:
        key: the engine's :class:`~edge.engine.trt.EngineKey`.
        path: the plan file to write.
        onnx_path: the graph TensorRT parses (before any FP16 conversion).
        strongly_typed: build a strongly typed network.
        builder_flags: ``BuilderFlag`` names to set (``"FP16"``, ``"INT8"``).
        fp16_autocast: convert the graph with ModelOpt AutoCast first (TensorRT 11 FP16).
        calibration: calibration .npz for implicit INT8, else None.
        calibration_cache: its TensorRT calibration cache file, else None.
        calib_batch: batch size fed to the calibrator.
        timing_cache: timing cache file (read if present, written after the build).
        workspace_bytes: workspace memory-pool limit.
        profiles: input name -> (min, opt, max) shapes.
        status: ``"up-to-date"`` (nothing to do), ``"new"`` or ``"rebuild"``.
        reasons: why a rebuild is needed (stale engines of the same role and precision).
        prune: engine records (files) whose graph changed; removed after a successful build.
        caps: the TensorRT features planned for.
    """

    key: EngineKey
    path: Path
    onnx_path: Path
    strongly_typed: bool
    builder_flags: tuple
    fp16_autocast: bool
    calibration: Path | None
    calibration_cache: Path | None
    calib_batch: int
    timing_cache: Path
    workspace_bytes: int
    profiles: dict
    status: str
    reasons: tuple
    prune: tuple
    caps: TrtCaps

    def describe(self) -> str:
        k = self.key
        mode = f" {k.int8_mode}" if k.precision == "int8" else ""
        typed = "strongly typed" if self.strongly_typed else "weakly typed"
        flags = f" flags {'+'.join(self.builder_flags)}" if self.builder_flags else ""
        dla = f" DLA core {k.dla_core}" if k.dla_core >= 0 else ""
        return (f"{k.role} {k.precision}{mode} from {k.onnx_file} ({typed}{flags}{dla}), "
                f"batch {k.batch_min}/{k.batch_opt}/{k.batch_max}, TensorRT "
                f"{k.tensorrt_version} on {k.gpu_name!r} sm {k.compute_capability}")


def _check_trt_qdq(bundle) -> None:
    """TensorRT takes Q/DQ with int8 activations and zero point 0 only; ONNX Runtime's CPU
    target writes uint8 asymmetric activations, which TensorRT's parser rejects."""
    import json

    try:
        raw = json.loads((bundle.root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {bundle.root / 'manifest.json'}: {exc}") from exc
    settings = (raw.get("quantization") or {}).get("settings") or {}
    if settings and not settings.get("activation_symmetric", False):
        raise ConfigError(
            f"{bundle.root / 'model.int8.onnx'} was quantized for the CPU (uint8 activations "
            "with zero points), which TensorRT does not accept: run "
            f"`emofuse calibrate {bundle.root} --target tensorrt` first")


def plan_build(bundle, precision: str, platform: TrtPlatform, caps: TrtCaps, *,
               role: str = "model", max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = 1,
               workspace_mb: int = DEFAULT_WORKSPACE_MB, dla_core: int | None = None,
               timing_cache=None, calibration=None, int8_mode: str | None = None,
               calib_batch: int = DEFAULT_CALIB_BATCH, force: bool = False,
               on_stale: str = "rebuild") -> BuildPlan:
    """Decide how to build an engine and whether one is needed (no TensorRT calls).

    Args:
        bundle: an :class:`edge.bundle.Bundle` or bundle folder.
        precision: ``"int8"``, ``"fp16"`` or ``"fp32"``.
        platform: the target's :class:`~edge.engine.trt.TrtPlatform`.
        caps: the TensorRT features (:func:`detect_caps`).
        role: the bundle graph to build.
        max_batch, opt_batch: the batch profile (min is 1).
        workspace_mb: workspace memory-pool limit, MiB (>= 1).
        dla_core: DLA core or None for the GPU.
        timing_cache: timing cache path (default :func:`default_timing_cache`).
        calibration: .npz for implicit INT8 (default ``BUNDLE/calibration.npz``).
        int8_mode: ``"qdq"``, ``"calibrated"`` or None (Q/DQ graph when the bundle has one,
            else implicit calibration where TensorRT still has it).
        calib_batch: calibrator batch size (>= 1).
        force: rebuild even when an up-to-date engine exists.
        on_stale: ``"rebuild"`` or ``"fail"`` when a stale engine of the same role and precision
            is recorded.

    Returns:
        The :class:`BuildPlan`.

    Raises:
        ConfigError: impossible combinations, with the reason and what to do instead (INT8
            without a Q/DQ graph on TensorRT 11, implicit INT8 without calibration data, DLA at
            FP32 or without DLA support, stale engines with ``on_stale="fail"``...).
    """
    bundle = load(bundle)
    check_precision(precision)
    if on_stale not in ON_STALE:
        raise ConfigError(f"on_stale {on_stale!r} is not one of {list(ON_STALE)}")
    if isinstance(workspace_mb, bool) or int(workspace_mb) != workspace_mb or workspace_mb < 1:
        raise ConfigError(f"workspace must be a positive number of MiB, got {workspace_mb!r}")
    if isinstance(calib_batch, bool) or int(calib_batch) != calib_batch or calib_batch < 1:
        raise ConfigError(f"calibration batch must be a positive int, got {calib_batch!r}")
    inputs, _ = graph_specs(bundle, role)
    profiles = profile_shapes(inputs, max_batch, opt_batch)

    if dla_core is not None:
        if not caps.dla:
            raise ConfigError(f"TensorRT {caps.version} here offers no DLA (DeviceType.DLA)")
        if precision == "fp32":
            raise ConfigError("DLA cores run FP16 and INT8 only; ask for --precision fp16 or int8")

    has_qdq = True
    try:
        graph_file(bundle, role, "int8")
    except ConfigError:
        has_qdq = False

    mode = "none"
    calib_path = calib_cache = None
    calib_sha = ""
    fp16_autocast = False
    if precision == "int8":
        mode = int8_mode or ("qdq" if has_qdq else "calibrated")
        if mode not in ("qdq", "calibrated"):
            raise ConfigError(f"int8_mode {mode!r} is not 'qdq' or 'calibrated'")
        if mode == "qdq" and not has_qdq:
            graph_file(bundle, role, "int8")  # raises with the reason and what to run
        if mode == "qdq":
            _check_trt_qdq(bundle)
        if mode == "calibrated":
            if not caps.implicit_int8:
                raise ConfigError(
                    f"TensorRT {caps.version} has no implicit INT8 calibration (removed in 11.0; "
                    f"networks are strongly typed): run `emofuse calibrate {bundle.root}` to "
                    "write the Q/DQ graph model.int8.onnx, then build again")
            calib_path = Path(calibration) if calibration else bundle.root / CALIBRATION_FILE
            if not calib_path.is_file():
                raise ConfigError(
                    f"implicit INT8 needs calibration data: {calib_path} is missing (run "
                    f"`emofuse calibrate {bundle.root}`, which writes {CALIBRATION_FILE})")
            calib_sha = file_sha256(calib_path)
            calib_cache = calibration_cache_path(bundle, role, platform.tensorrt_version,
                                                 calib_sha)
    elif int8_mode not in (None, "none"):
        raise ConfigError(f"int8_mode {int8_mode!r} only applies to --precision int8")

    if precision == "fp16" and caps.always_strongly_typed:
        fp16_autocast = True  # TensorRT 11: FP16 must be in the graph itself

    if precision == "int8" and mode == "calibrated":
        strongly_typed, flags = False, ("INT8",)
    elif precision == "fp16" and not caps.always_strongly_typed:
        strongly_typed, flags = False, ("FP16",)
    elif caps.strongly_typed_flag or caps.always_strongly_typed:
        strongly_typed, flags = True, ()
    else:  # an old TensorRT without strong typing: Q/DQ graphs still need the INT8 flag
        strongly_typed, flags = False, ("INT8",) if precision == "int8" else ()

    key = engine_key(bundle, precision, platform, role=role, max_batch=max_batch,
                     opt_batch=opt_batch, dla_core=dla_core, int8_mode=mode,
                     calibration_sha256=calib_sha)
    path = engine_path(bundle, key)
    status, reasons, prune = _status(bundle, key, platform, force)
    if status == "rebuild" and on_stale == "fail" and not force:
        raise ConfigError(f"stale TensorRT engine for {role} {precision}: {'; '.join(reasons)}; "
                          "not rebuilding (on_stale='fail'); run `emofuse build` without "
                          "--no-rebuild")
    return BuildPlan(
        key=key, path=path, onnx_path=bundle.root / key.onnx_file,
        strongly_typed=strongly_typed, builder_flags=flags, fp16_autocast=fp16_autocast,
        calibration=calib_path, calibration_cache=calib_cache, calib_batch=int(calib_batch),
        timing_cache=Path(timing_cache) if timing_cache else default_timing_cache(bundle,
                                                                                  platform),
        workspace_bytes=int(workspace_mb) << 20, profiles=profiles, status=status,
        reasons=tuple(reasons), prune=tuple(prune), caps=caps,
    )


def _status(bundle, key: EngineKey, platform: TrtPlatform, force: bool):
    records, problems = engine_records(bundle)
    for p in problems:
        log.warning("%s", p)
    reasons, prune = [], []
    current = None
    for record in records:
        graph_stale = stale_reasons(bundle, record, None, check_file=False)
        if graph_stale:
            prune.append(record.file)
        if record.key == key:
            why = stale_reasons(bundle, record, platform)
            if why:
                reasons.append(f"{record.file}: " + ", ".join(why))
            else:
                current = record
        elif (record.key.role, record.key.precision, record.key.dla_core) == (
                key.role, key.precision, key.dla_core):
            why = stale_reasons(bundle, record, platform, check_file=False)
            if why:
                reasons.append(f"{record.file}: " + ", ".join(why))
    if current is not None and not force:
        return "up-to-date", [], prune
    if force:
        reasons.insert(0, "forced")
    return ("rebuild" if reasons else "new"), reasons, prune


# --- manifest --------------------------------------------------------------------------------


def update_manifest(root, mutate) -> dict:
    """Apply ``mutate(data)`` to manifest.json and write it back atomically.

    Every section is kept (the raw JSON is edited, not the parsed dataclass); the result is
    validated with :func:`edge.bundle.parse_manifest` before it replaces the file, and is written
    to a temporary file in the same folder then renamed, so a reader never sees half a file.

    Returns:
        The new manifest data.

    Raises:
        BadInputError: unreadable manifest; ConfigError: the edit made it invalid.
    """
    root = Path(root)
    path = root / "manifest.json"
    data = read_manifest_json(root)
    mutate(data)
    parse_manifest(data, source=str(path))
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return data


def record_engine(bundle, key: EngineKey, plan_file, info: dict | None = None) -> EngineRecord:
    """List a built plan in manifest.json under ``"engines"`` (replacing a record of that file).

    Args:
        bundle: the bundle.
        key: the plan's key.
        plan_file: the plan (inside the bundle folder).
        info: builder settings etc. to keep with it.

    Returns:
        The :class:`~edge.engine.trt.EngineRecord` written.

    Raises:
        ConfigError: the plan is outside the bundle folder.
    """
    bundle = load(bundle)
    plan_file = Path(plan_file)
    try:
        rel = plan_file.resolve().relative_to(bundle.root.resolve()).as_posix()
    except ValueError as exc:
        raise ConfigError(f"{plan_file} is not inside the bundle {bundle.root}") from exc
    record = EngineRecord(rel, key, file_sha256(plan_file),
                          {"size_bytes": plan_file.stat().st_size, **(info or {})})

    def mutate(data):
        data.setdefault(MANIFEST_SECTION, {})[rel] = record.to_dict()

    update_manifest(bundle.root, mutate)
    return record


def remove_engine_records(bundle, files, *, delete_files: bool = True) -> list[str]:
    """Remove engine records (and their plan files) from a bundle.

    Returns:
        The record paths that were removed.
    """
    bundle = load(bundle)
    files = list(files)
    removed = []

    def mutate(data):
        section = data.get(MANIFEST_SECTION, {})
        for f in files:
            if f in section:
                del section[f]
                removed.append(f)

    if files:
        update_manifest(bundle.root, mutate)
    if delete_files:
        for f in removed:
            (bundle.root / f).unlink(missing_ok=True)
    return removed


# --- calibration data ------------------------------------------------------------------------


def calibration_batches(path, specs, batch: int):
    """Batches of calibration inputs from a .npz of arrays named as the model inputs.

    Args:
        path: the .npz (``calibration.npz``; other arrays, e.g. labels, are ignored).
        specs: the graph's input specs.
        batch: windows per batch; a last partial batch is dropped (the calibration profile has
            a fixed batch).

    Returns:
        list of dicts name -> C-contiguous array (batch, *spec.shape[1:]) of the spec dtype.

    Raises:
        BadInputError: unreadable file, an input missing, a shape or dtype that differs, fewer
            windows than one batch, or window counts that differ between inputs.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {s.name: npz[s.name] for s in specs if s.name in npz.files}
            names = list(npz.files)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot read calibration data ({exc})") from exc
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise BadInputError(f"{path}: calibration data lacks inputs {missing} (has {names})")
    n = None
    for s in specs:
        a = arrays[s.name]
        if a.dtype != np.dtype(s.dtype) or a.ndim != len(s.shape) or a.shape[1:] != tuple(
                s.shape[1:]):
            raise BadInputError(f"{path}: {s.name!r} is {a.dtype} {a.shape}; the graph takes "
                                f"{s.dtype} (N, {', '.join(map(str, s.shape[1:]))})")
        if n is not None and a.shape[0] != n:
            raise BadInputError(f"{path}: inputs hold different numbers of windows")
        n = a.shape[0]
    if n < batch:
        raise BadInputError(f"{path}: {n} calibration windows, fewer than one batch of {batch}")
    return [{s.name: np.ascontiguousarray(arrays[s.name][i:i + batch]) for s in specs}
            for i in range(0, n - batch + 1, batch)]


def read_calibration_cache(path) -> bytes | None:
    """A TensorRT calibration cache's bytes, or None when absent or not a TensorRT cache."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    if not data.startswith(b"TRT-"):
        log.warning("%s does not start like a TensorRT calibration cache; recalibrating", path)
        return None
    return data


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _entropy_calibrator(trt, cuda, batches, batch: int, cache_path: Path):
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` (TensorRT 10 only)."""
    if TYPE_CHECKING:  # the stubs' types, so pyright checks every TensorRT call below
        import tensorrt as trt
    base = trt.IInt8EntropyCalibrator2

    class NpzEntropyCalibrator(base):
        def __init__(self):
            base.__init__(self)
            self._batches = iter(batches)
            self._host, self._dev = {}, {}
            self.fed = 0

        def get_batch_size(self):
            return batch

        def get_batch(self, names, *_):
            try:
                feed = next(self._batches)
            except StopIteration:
                return None
            pointers = []
            for name in names:
                arr = feed[name]
                if name not in self._dev:
                    self._host[name] = cuda.pinned(arr.size, arr.dtype)
                    self._dev[name] = cuda.malloc(arr.nbytes)
                host = self._host[name][:arr.size]
                np.copyto(host, arr.reshape(-1))
                cuda.htod(self._dev[name], host)
                pointers.append(self._dev[name])
            cuda.sync()
            self.fed += 1
            return pointers

        def read_calibration_cache(self):
            return read_calibration_cache(cache_path)

        def write_calibration_cache(self, cache):
            _write_atomic(cache_path, bytes(cache))

    return NpzEntropyCalibrator()


# --- building --------------------------------------------------------------------------------


@dataclass
class BuildResult:
    """What :func:`build_engine` did.

    Attributes:
        plan: the :class:`BuildPlan`.
        record: the engine record in the manifest (the existing one when up to date).
        built: whether TensorRT built a new plan.
        seconds: build time (0 when up to date).
        pruned: engine records removed because their graph changed.
        notes: anything that differs from the request (e.g. a timing cache TensorRT refused).
    """

    plan: BuildPlan
    record: EngineRecord | None
    built: bool
    seconds: float = 0.0
    pruned: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        if not self.built:
            return f"up to date: {self.record.file if self.record else self.plan.path.name} " \
                   f"({self.plan.describe()})"
        verb = "rebuilt" if self.plan.status == "rebuild" else "built"
        why = f" because {'; '.join(self.plan.reasons)}" if self.plan.reasons else ""
        return (f"{verb} {self.record.file} in {self.seconds:.1f} s ({self.plan.describe()})"
                f"{why}")


def build_engine(bundle, precision: str, *, role: str = "model",
                 max_batch: int = DEFAULT_MAX_BATCH, opt_batch: int = 1,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB, dla_core: int | None = None,
                 timing_cache=None, calibration=None, int8_mode: str | None = None,
                 calib_batch: int = DEFAULT_CALIB_BATCH, force: bool = False,
                 on_stale: str = "rebuild", device: int = 0) -> BuildResult:
    """Build (or confirm up to date) the TensorRT engine of one bundle graph on this machine.

    Arguments as :func:`plan_build`; ``device`` is the CUDA device to build for.

    Returns:
        :class:`BuildResult`; the plan file is written atomically and recorded in manifest.json.

    Raises:
        MissingDependencyError: tensorrt (extra ``jetson``), a CUDA binding, or, for FP16 on
            TensorRT 11, nvidia-modelopt is missing.
        ConfigError: as :func:`plan_build`; a DLA core this device does not have.
        EngineBuildError: TensorRT could not parse the graph or build the engine.
        BadInputError: unreadable graph or calibration data.
    """
    bundle = load(bundle)
    trt = require_tensorrt("building TensorRT engines")
    if TYPE_CHECKING:
        import tensorrt as trt
    caps = detect_caps(trt)
    platform = probe_platform(device)
    plan = plan_build(bundle, precision, platform, caps, role=role, max_batch=max_batch,
                      opt_batch=opt_batch, workspace_mb=workspace_mb, dla_core=dla_core,
                      timing_cache=timing_cache, calibration=calibration, int8_mode=int8_mode,
                      calib_batch=calib_batch, force=force, on_stale=on_stale)
    if plan.status == "up-to-date":
        records, _ = engine_records(bundle)
        record = next(r for r in records if r.key == plan.key)
        log.info("engine up to date: %s", record.file)
        return BuildResult(plan, record, built=False)
    for reason in plan.reasons:
        log.warning("rebuilding: %s", reason)

    notes: list[str] = []
    t0 = time.perf_counter()
    cuda = open_cuda(device)
    try:
        serialized = _build_serialized(trt, bundle, plan, cuda, notes)
    finally:
        cuda.close()
    seconds = time.perf_counter() - t0
    _write_atomic(plan.path, serialized)
    info = {
        "built_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "build_s": round(seconds, 2),
        "builder": {
            "strongly_typed": plan.strongly_typed, "flags": list(plan.builder_flags),
            "fp16_autocast": plan.fp16_autocast, "workspace_mb": plan.workspace_bytes >> 20,
            "timing_cache": str(plan.timing_cache), "calib_batch": plan.calib_batch
            if plan.calibration else None,
            "calibration": None if plan.calibration is None else {
                "file": str(plan.calibration), "sha256": plan.key.calibration_sha256,
                "cache": str(plan.calibration_cache)},
            "profile": {n: [list(s) for s in shapes] for n, shapes in plan.profiles.items()},
        },
        "tensorrt_features": caps.to_dict(),
        "notes": notes,
    }
    record = record_engine(bundle, plan.key, plan.path, info)
    pruned = remove_engine_records(bundle, [f for f in plan.prune if f != record.file])
    for f in pruned:
        log.info("removed %s: its graph changed since it was built", f)
    return BuildResult(plan, record, built=True, seconds=seconds, pruned=pruned, notes=notes)


class EngineFromOnnx:
    """Loader (Polygraphy naming): makes a TensorRT plan file from a bundle's ONNX graph.

    Holds :func:`build_engine`'s arguments; calling it builds (or finds up to date) the engine
    and returns the :class:`BuildResult`, whose ``record.file`` is the plan in the bundle.
    """

    def __init__(self, bundle, precision: str, **options) -> None:
        check_precision(precision)
        self.bundle = bundle
        self.precision = precision
        self.options = options

    def __call__(self) -> BuildResult:
        return build_engine(self.bundle, self.precision, **self.options)


def _autocast_fp16(onnx_path: Path, out_dir: Path) -> Path:
    try:
        from modelopt.onnx import autocast  # pyright: ignore[reportMissingImports]  (optional: not in CI)
    except ImportError as exc:
        raise MissingDependencyError(
            "FP16 on TensorRT 11 needs a mixed-precision graph: TensorRT removed the FP16 builder "
            "flag. Install NVIDIA ModelOpt (pip install 'nvidia-modelopt[onnx]') so emofuse can "
            f"convert {onnx_path.name} with AutoCast, or build int8/fp32 ({exc})") from exc
    import onnx

    model = autocast.convert_to_mixed_precision(onnx_path=str(onnx_path),
                                                low_precision_type="fp16", keep_io_types=True)
    out = out_dir / f"{onnx_path.stem}.fp16.onnx"
    onnx.save(model, str(out))
    return out


def _build_serialized(trt, bundle, plan: BuildPlan, cuda, notes: list) -> bytes:
    if TYPE_CHECKING:  # the stubs' types, so pyright checks every TensorRT call below
        import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    net_flags = 0
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if plan.strongly_typed and hasattr(creation, "STRONGLY_TYPED"):
        net_flags |= 1 << int(creation.STRONGLY_TYPED)
    # Ignored since TensorRT 10 (always explicit batch), needed before it; gone in 11.
    if hasattr(creation, "EXPLICIT_BATCH"):
        net_flags |= 1 << int(creation.EXPLICIT_BATCH)
    network = builder.create_network(net_flags)
    parser = trt.OnnxParser(network, logger)

    with tempfile.TemporaryDirectory(prefix="emofuse-build-") as tmp:
        onnx_path = _autocast_fp16(plan.onnx_path, Path(tmp)) if plan.fp16_autocast \
            else plan.onnx_path
        if plan.fp16_autocast:
            notes.append(f"FP16 graph made from {plan.onnx_path.name} with ModelOpt AutoCast "
                         "(TensorRT 11 has no FP16 builder flag)")
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: "
                                   f"{'; '.join(errors) or 'no details'}")

    got = {network.get_input(i).name for i in range(network.num_inputs)}
    if got != set(plan.profiles):
        raise EngineBuildError(f"{plan.onnx_path}: network inputs {sorted(got)} differ from the "
                               f"manifest's {sorted(plan.profiles)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))

    calibrator = None
    if plan.calibration is not None:
        specs, _ = graph_specs(bundle, plan.key.role)
        batches = calibration_batches(plan.calibration, specs, plan.calib_batch)
        if hasattr(config, "set_calibration_profile"):
            calib_profile = builder.create_optimization_profile()
            for name, (lo, _, _) in plan.profiles.items():
                fixed = (plan.calib_batch, *lo[1:])
                # TensorRT converts tuples to Dims; the stubs say so only in prose.
                calib_profile.set_shape(name, fixed, fixed, fixed)  # pyright: ignore[reportArgumentType]
            config.set_calibration_profile(calib_profile)
        if plan.calibration_cache is None:  # plan_build sets both or neither
            raise ConfigError("implicit INT8 calibration needs a calibration cache path")
        calibrator = _entropy_calibrator(trt, cuda, batches, plan.calib_batch,
                                         plan.calibration_cache)
        config.int8_calibrator = calibrator

    if plan.key.dla_core >= 0:
        n_dla = int(getattr(builder, "num_DLA_cores", 0))
        if plan.key.dla_core >= n_dla:
            raise ConfigError(f"DLA core {plan.key.dla_core} asked for; this device has {n_dla}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.key.dla_core
        if hasattr(trt.BuilderFlag, "GPU_FALLBACK"):
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    cache_bytes = plan.timing_cache.read_bytes() if plan.timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, False):
        notes.append(f"TensorRT refused the timing cache {plan.timing_cache} (another version "
                     "or GPU?); started a fresh one")
        log.warning("%s", notes[-1])
        config.set_timing_cache(config.create_timing_cache(b""), False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {plan.describe()} (see its log above)")
    if calibrator is not None:
        notes.append(f"implicit INT8: {calibrator.fed} calibration batches of "
                     f"{plan.calib_batch} fed (0: the calibration cache was reused)")
    _write_atomic(plan.timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)
