"""Triton Inference Server model repositories for bundles (``emofuse triton``).

For deployments that outgrow one device: one GPU server runs the model for many cameras, and
Triton's dynamic batcher groups their windows into batches. :func:`write_triton_repo` writes::

    OUT/<name>/config.pbtxt            model configuration (protobuf text format)
    OUT/<name>/1/model.onnx            platform onnxruntime_onnx (the FP32 or the Q/DQ INT8 graph)
    OUT/<name>/1/model.plan            or platform tensorrt_plan (an engine from `emofuse build`)
    OUT/<name>/<head>_labels.txt       class names of each probability output
    OUT/<name>/emofuse_manifest.json   the bundle manifest: preprocessing for the clients
    OUT/<name>_face_encoder/...        the same for an MVP bundle's per-frame face encoder

``config.pbtxt`` declares the platform, ``max_batch_size``, every input and output with its
Triton data type and its dims *without* the batch dim (Triton adds it when max_batch_size > 0),
``dynamic_batching`` with preferred batch sizes, an ``instance_group``, a version policy, and
``parameters`` recording the bundle's model version, precision and graph or engine hash.

A TensorRT plan only runs on the TensorRT version and GPU it was built for, so a
``tensorrt_plan`` repository must be written on (a machine like) the server, after
``emofuse build`` there. Every config written is parsed back as protobuf text format against
Triton's own ModelConfig schema from ``tritonclient`` (extra ``triton``; :func:`parse_model_config`)
before the repository is finished; without tritonclient the command stops before writing.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge.engine.base import check_precision, graph_file, graph_specs, load
from edge.engine.trt import engine_records, stale_reasons
from firmware_bridge.errors import BadInputError, ConfigError, require

log = logging.getLogger("emofuse.triton")

PLATFORMS = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU", "auto": "KIND_AUTO"}
# numpy dtype name -> Triton DataType enum name (model_config.proto).
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class TritonModel:
    """One model folder written into a repository.

    Attributes:
        name: the Triton model name (folder name).
        folder: the model folder.
        config_path: its config.pbtxt.
        model_file: the versioned graph or plan.
        role: the bundle graph it serves.
    """

    name: str
    folder: Path
    config_path: Path
    model_file: Path
    role: str


def _q(text: str) -> str:
    # A JSON string literal (quotes, backslashes and control characters escaped C-style) is a
    # valid protobuf text-format string.
    return json.dumps(str(text), ensure_ascii=False)


def model_config_text(name: str, platform: str, inputs, outputs, *, max_batch: int = 8,
                      preferred_batch_sizes=None, max_queue_delay_us: int = 100,
                      instances: int = 1, kind: str = "gpu", label_files=None,
                      parameters=None) -> str:
    """The ``config.pbtxt`` text of one model.

    Args:
        name: model name (letters, digits, ``_ . -``).
        platform: ``"onnxruntime_onnx"`` or ``"tensorrt_plan"``.
        inputs, outputs: :class:`edge.bundle.TensorSpec` objects (shape ``("batch", ...)``).
        max_batch: Triton's max_batch_size; 0 disables batching (dims then keep a -1 batch dim
            and there is no dynamic batcher).
        preferred_batch_sizes: dynamic batcher's preferred sizes (default: powers of two up to
            max_batch, and max_batch itself).
        max_queue_delay_us: how long the batcher may hold a request to fill a batch, us.
        instances: model instances per device.
        kind: ``"gpu"``, ``"cpu"`` or ``"auto"``.
        label_files: output name -> label file name (in the model folder).
        parameters: extra string parameters (provenance), name -> value.

    Raises:
        ConfigError: invalid name, platform, kind, batch or dtype.
    """
    if not _NAME_RE.match(name):
        raise ConfigError(f"Triton model name {name!r} may hold only letters, digits, _ . -")
    if platform not in PLATFORMS:
        raise ConfigError(f"platform {platform!r} is not one of {list(PLATFORMS)}")
    if kind not in KINDS:
        raise ConfigError(f"instance kind {kind!r} is not one of {list(KINDS)}")
    for label, value, low in (("max_batch", max_batch, 0), ("instances", instances, 1),
                              ("max_queue_delay_us", max_queue_delay_us, 0)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ConfigError(f"{label} must be an int >= {low}, got {value!r}")
    if preferred_batch_sizes is None:
        preferred = sorted({b for b in (1, 2, 4, 8, 16, 32, 64) if b <= max_batch}
                           | ({max_batch} if max_batch else set()))
    else:
        preferred = sorted(set(int(b) for b in preferred_batch_sizes))
        if max_batch and any(b < 1 or b > max_batch for b in preferred):
            raise ConfigError(f"preferred batch sizes {preferred} must lie in 1..{max_batch}")
    label_files = label_files or {}

    def tensor(spec, is_output: bool) -> list[str]:
        if spec.dtype not in TRITON_DTYPES:
            raise ConfigError(f"tensor {spec.name!r} dtype {spec.dtype} has no Triton type")
        dims = list(spec.shape[1:]) if max_batch > 0 else [-1, *spec.shape[1:]]
        lines = ["  {", f"    name: {_q(spec.name)}",
                 f"    data_type: {TRITON_DTYPES[spec.dtype]}",
                 f"    dims: [ {', '.join(str(int(d)) for d in dims)} ]"]
        if is_output and spec.name in label_files:
            lines.append(f"    label_filename: {_q(label_files[spec.name])}")
        lines.append("  }")
        return lines

    def block(field: str, specs, is_output: bool) -> list[str]:
        body = []
        for i, spec in enumerate(specs):
            lines = tensor(spec, is_output)
            if i < len(specs) - 1:
                lines[-1] += ","
            body += lines
        return [f"{field} [", *body, "]"]

    out = [f"name: {_q(name)}", f"platform: {_q(platform)}", f"max_batch_size: {int(max_batch)}"]
    out += block("input", list(inputs), False)
    out += block("output", list(outputs), True)
    if max_batch > 0:
        out += ["dynamic_batching {",
                f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
                f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}", "}"]
    out += ["instance_group [", "  {", f"    count: {int(instances)}",
            f"    kind: {KINDS[kind]}", "  }", "]"]
    out += ["version_policy: { latest: { num_versions: 1 } }"]
    for key, value in (parameters or {}).items():
        out += ["parameters {", f"  key: {_q(key)}",
                f"  value: {{ string_value: {_q(value)} }}", "}"]
    return "\n".join(out) + "\n"


# --- schema ----------------------------------------------------------------------------------

#: The emofuse extra that installs Triton's client library (with its ModelConfig schema).
EXTRA = "triton"


def model_config_schema():
    """(ModelConfig message class, source): Triton's own schema, ``inference.ModelConfig`` from
    ``tritonclient.grpc.model_config_pb2`` (generated from Triton's ``model_config.proto``).

    Raises:
        MissingDependencyError: tritonclient (with its gRPC part) is not installed
            (``pip install 'emofuse[triton]'``).
    """
    pb2 = require("tritonclient.grpc.model_config_pb2", EXTRA, "checking Triton model configurations")
    try:
        from importlib.metadata import version

        source = f"tritonclient {version('tritonclient')} model_config.proto"
    except Exception:  # metadata missing in an unusual install: the schema still works
        source = "tritonclient model_config.proto"
    return pb2.ModelConfig, source


def parse_model_config(text: str):
    """Parse config.pbtxt text as protobuf text format against Triton's ModelConfig schema.

    Returns:
        The parsed ``inference.ModelConfig`` message.

    Raises:
        BadInputError: the text is not a valid ModelConfig (message names line and column).
    """
    from google.protobuf import text_format

    cls, _ = model_config_schema()
    msg = cls()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise BadInputError(f"config.pbtxt does not parse as a Triton ModelConfig: {exc}") \
            from exc
    return msg


# --- repository ------------------------------------------------------------------------------


def _pick_engine(bundle, role: str, precision: str, max_batch: int, engine_file):
    records, _ = engine_records(bundle)
    cands = [r for r in records if r.key.role == role and r.key.precision == precision]
    if engine_file is not None:
        want = (bundle.root / engine_file).resolve()
        cands = [r for r in records if (bundle.root / r.file).resolve() == want]
        if not cands:
            raise ConfigError(f"{engine_file} is not an engine recorded in "
                              f"{bundle.root / 'manifest.json'}")
    usable = []
    why = []
    for r in cands:
        reasons = stale_reasons(bundle, r, None)
        if r.key.batch_max < max_batch:
            reasons.append(f"its batch profile stops at {r.key.batch_max}, max_batch is "
                           f"{max_batch}")
        if r.key.dla_core >= 0:
            reasons.append("built for a DLA core")
        (why.append(f"{r.file}: {', '.join(reasons)}") if reasons else usable.append(r))
    if not usable:
        detail = "; ".join(why) or f"no {precision} engine for {role!r} is recorded"
        raise ConfigError(f"no usable TensorRT engine for a tensorrt_plan repository ({detail}); "
                          f"run `emofuse build {bundle.root} --precision {precision} "
                          f"--max-batch {max_batch}` on a machine like the server")
    if len(usable) > 1 and engine_file is None:
        platforms = sorted({str(r.key.platform) for r in usable})
        if len(platforms) > 1:
            raise ConfigError(f"engines for several platforms are recorded ({platforms}); name "
                              "the one matching the Triton server with --engine")
    return max(usable, key=lambda r: str(r.info.get("built_utc", "")))


def write_triton_repo(bundle, out_dir, platform: str = "onnxruntime_onnx", *,
                      max_batch: int = 8, precision: str = "fp32", name: str | None = None,
                      instances: int = 1, kind: str | None = None,
                      preferred_batch_sizes=None, max_queue_delay_us: int = 100,
                      engine_file=None, overwrite: bool = False) -> list[TritonModel]:
    """Write a Triton model repository for a bundle (see the module docstring).

    Args:
        bundle: an :class:`edge.bundle.Bundle` or bundle folder.
        out_dir: the repository folder (created; other models in it are left alone).
        platform: ``"onnxruntime_onnx"`` or ``"tensorrt_plan"``.
        max_batch: Triton's max_batch_size (0: no batching).
        precision: ``"fp32"`` or ``"int8"`` (the Q/DQ graph) for ONNX Runtime; the engine's
            precision for TensorRT.
        name: model name (default: the bundle's model name); the face encoder gets
            ``<name>_face_encoder``.
        instances: instances per device.
        kind: ``"gpu"``, ``"cpu"`` or ``"auto"`` (default: gpu for TensorRT, auto for ONNX).
        preferred_batch_sizes, max_queue_delay_us: dynamic batcher settings.
        engine_file: the plan to serve (tensorrt_plan; default: the one recorded for the
            precision and batch).
        overwrite: replace existing model folders of the same names.

    Returns:
        The :class:`TritonModel` folders written (the main model first).

    Raises:
        ConfigError: bad settings; no graph or engine for the precision; fp16 with ONNX
            Runtime; an existing model folder without ``overwrite``.
        BadInputError: unreadable bundle.
        MissingDependencyError: tritonclient is not installed (extra ``triton``).
    """
    model_config_schema()  # the schema every config is checked against, before anything is written
    bundle = load(bundle)
    check_precision(precision)
    if platform not in PLATFORMS:
        raise ConfigError(f"platform {platform!r} is not one of {list(PLATFORMS)}")
    if platform == "onnxruntime_onnx" and precision == "fp16":
        raise ConfigError("an onnxruntime_onnx repository serves fp32 or int8 graphs; fp16 comes "
                          "from TensorRT (use platform tensorrt_plan)")
    if platform == "tensorrt_plan" and max_batch < 1:
        raise ConfigError("tensorrt_plan needs max_batch >= 1 (the plan has a batch profile)")
    kind = kind or ("gpu" if platform == "tensorrt_plan" else "auto")
    base_name = name or bundle.manifest.model_name
    out_dir = Path(out_dir)
    roles = ["model"] + (["face_encoder"] if bundle.manifest.role_file("face_encoder") else [])
    jobs = []
    for role in roles:
        model_name = base_name if role == "model" else f"{base_name}_{role}"
        folder = out_dir / model_name
        if folder.exists() and not overwrite:
            raise ConfigError(f"{folder} exists; pass overwrite=True (--force) to replace it")
        if platform == "onnxruntime_onnx":
            role_precision = precision
            if role != "model" and precision == "int8":
                try:
                    graph_file(bundle, role, "int8")
                except ConfigError:
                    role_precision = "fp32"
                    log.warning("%s has no INT8 graph; its Triton model serves fp32 (recorded in "
                                "its parameters)", role)
            entry = graph_file(bundle, role, role_precision)
            source = bundle.root / entry.name
            params = {"emofuse_graph": entry.name, "emofuse_graph_sha256": entry.sha256}
        else:
            role_precision = precision
            record = _pick_engine(bundle, role, precision, max_batch,
                                  engine_file if role == "model" else None)
            source = bundle.root / record.file
            params = {"emofuse_engine": record.file, "emofuse_engine_sha256": record.sha256,
                      "emofuse_engine_key": record.key.digest,
                      "emofuse_tensorrt": record.key.tensorrt_version,
                      "emofuse_gpu": f"{record.key.gpu_name} sm {record.key.compute_capability}"}
        params.update(emofuse_model=bundle.manifest.model_name,
                      emofuse_model_version=bundle.manifest.model_version,
                      emofuse_precision=role_precision,
                      emofuse_precision_requested=precision)
        jobs.append((role, model_name, folder, source, params))

    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_text = (bundle.root / "manifest.json").read_text(encoding="utf-8")
    for role, model_name, folder, source, params in jobs:
        inputs, outputs = graph_specs(bundle, role)
        labels = {}
        if role == "model":
            for head, names in bundle.manifest.labels.items():
                if any(o.name == f"{head}_prob" for o in outputs):
                    labels[f"{head}_prob"] = (f"{head}_labels.txt", names)
        text = model_config_text(
            model_name, platform, inputs, outputs, max_batch=max_batch,
            preferred_batch_sizes=preferred_batch_sizes, max_queue_delay_us=max_queue_delay_us,
            instances=instances, kind=kind,
            label_files={k: v[0] for k, v in labels.items()}, parameters=params)
        parse_model_config(text)  # never leave a config Triton would refuse
        # Build the folder beside its final place, then swap it in: no half-written model.
        tmp = Path(tempfile.mkdtemp(prefix=f".{model_name}-", dir=out_dir))
        try:
            (tmp / "1").mkdir()
            target = tmp / "1" / PLATFORMS[platform]
            shutil.copyfile(source, target)
            (tmp / "config.pbtxt").write_text(text, encoding="utf-8")
            for file, names in labels.values():
                (tmp / file).write_text("\n".join(names) + "\n", encoding="utf-8")
            (tmp / "emofuse_manifest.json").write_text(manifest_text, encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written.append(TritonModel(model_name, folder, folder / "config.pbtxt",
                                   folder / "1" / PLATFORMS[platform], role))
    return written
