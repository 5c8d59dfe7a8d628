"""TensorRT plan files of a bundle: this machine's platform, the :class:`EngineKey` that names a
plan, the records in manifest.json, and :func:`find_engine`, which says for every record why it
fits this machine and bundle or not (see :mod:`edge.engine.trt`). Only reads; building is
``calibrate.engine_build``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.engine.base import check_precision, graph_file, load
from edge.engine.cuda import EXTRA, _cuda_class
from firmware_bridge.errors import BadInputError, ConfigError, MissingDependencyError, require

log = logging.getLogger("emofuse.engine")

ENGINES_DIR = "engines"
MANIFEST_SECTION = "engines"
INT8_MODES = ("none", "qdq", "calibrated")


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
    """Whether TensorRT's Python bindings work here, and why not.

    ``import tensorrt`` alone proves nothing: with only type stubs installed (the
    ``tensorrt-stubs`` package) it succeeds as an empty namespace package. The bindings are
    there when ``tensorrt.Builder`` is.

    Returns:
        (True, "tensorrt <version>") or (False, "<why not>").
    """
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the package is there, its libraries not
        return False, f"tensorrt not importable ({exc})"
    if not hasattr(tensorrt, "Builder"):
        return False, ("tensorrt not importable as NVIDIA's bindings (it imports without tensorrt.Builder: type "
                       "stubs or an empty namespace package)")
    return True, f"tensorrt {getattr(tensorrt, '__version__', '?')}"


def require_tensorrt(purpose: str):
    """The ``tensorrt`` module when its bindings are really there (see :func:`tensorrt_status`).

    Args:
        purpose: what the caller wants it for, for the message.

    Raises:
        MissingDependencyError: tensorrt does not import, or imports without ``Builder``.
    """
    trt = require("tensorrt", EXTRA, purpose)
    if not hasattr(trt, "Builder"):
        raise MissingDependencyError(
            f"{purpose} needs NVIDIA's TensorRT Python bindings, but 'tensorrt' here has no Builder (only type "
            f"stubs or an empty namespace package): use JetPack's TensorRT with pip install 'emofuse[{EXTRA}]'")
    return trt


def probe_platform(device: int = 0) -> TrtPlatform:
    """The TensorRT version and CUDA device of this machine.

    Args:
        device: CUDA device ordinal.

    Raises:
        MissingDependencyError: tensorrt, or both pycuda and cuda-python, are missing.
        DeviceError: no CUDA device ``device`` (no driver, no GPU).
    """
    trt = require_tensorrt("running TensorRT engines")
    if TYPE_CHECKING:
        import tensorrt as trt
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
