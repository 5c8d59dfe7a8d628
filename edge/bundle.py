"""Read and validate an exported model bundle (``manifest.json`` + ONNX graphs) without torch.

A bundle is a folder that ``emofuse export`` writes (``export/bundle.py``)::

    BUNDLE_DIR/model.onnx            valence / arousal model (always)
    BUNDLE_DIR/face_encoder.onnx     per-frame facial encoder (MVP only)
    BUNDLE_DIR/manifest.json         everything needed to feed and trust the graphs

The manifest is the one place that configures preprocessing on the device (window lengths,
rates, crop size, TFR parameters): the runtime, calibration and training all read it. Its
format is specified in ``docs/BUNDLE.md``; this module is the reference reader. Loading checks
what would otherwise fail late or silently: malformed JSON, an unknown ``schema_version``,
missing or ill-typed fields, files that are missing or whose SHA-256 differs from the one
recorded at export, a parity record that did not pass, a manifest larger than
:data:`MAX_MANIFEST_BYTES` (never read whole) or nested deeper than :data:`MAX_JSON_DEPTH`,
and tensor or window sizes whose buffers would exceed :data:`MAX_TENSOR_BYTES` /
:data:`MAX_WINDOW_BYTES` (refused before anything is allocated). By default
(``check_graphs``) it also reads each graph's declared inputs and outputs with ``onnx``
(no session, no kernels) and checks their names, ranks, fixed dims and dtypes against the
manifest.

Every error is one line that names the offending file: ``BadInputError`` for unreadable or
corrupt data (missing file, wrong hash, malformed JSON), ``ConfigError`` for a manifest field
that is missing or invalid (including an unknown schema version).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.spec import Preprocessing
from firmware_bridge.errors import BadInputError, ConfigError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
BATCH = "batch"
DTYPES = ("float32", "float16", "float64", "uint8", "int32", "int64", "bool")
# Roles a reader knows how to use; others are carried along (a newer exporter may add some).
KNOWN_ROLES = ("model", "face_encoder")

# A manifest is a few hundred KiB at most (the default bundle's, with its training record, is
# ~140 KiB); more is not a manifest, and is refused without reading it whole.
MAX_MANIFEST_BYTES = 16 << 20
# JSON nesting deeper than this is refused before decoding (Python's decoder recurses).
MAX_JSON_DEPTH = 64
# Largest single input or output tensor per batch item, bytes, and largest per-window buffer the
# preprocessing would make (face crops of a window's sequence and clip, contact rows), bytes.
MAX_TENSOR_BYTES = 256 << 20
MAX_WINDOW_BYTES = 2 << 30

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ITEMSIZE = {"float32": 4, "float16": 2, "float64": 8, "uint8": 1, "int32": 4, "int64": 8, "bool": 1}
_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 2: "uint8", 6: "int32", 7: "int64", 9: "bool"}
_JSON_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a graph.

    Attributes:
        name: the ONNX input/output name (the contract's tensor name, e.g. ``"tfr"``).
        shape: dims; the first is the string ``"batch"`` (dynamic), the rest positive ints.
        dtype: numpy dtype name, one of :data:`DTYPES`.
        meaning: what the tensor holds, with units and value range.
        optional: the model answers without it: the runtime may feed zeros and mark it absent
            in the ``present`` input instead of waiting for it (main-model inputs only).
    """

    name: str
    shape: tuple
    dtype: str
    meaning: str
    optional: bool = False

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "meaning": self.meaning}
        if self.optional:
            d["optional"] = True
        return d


@dataclass(frozen=True)
class BundleFile:
    """One file of the bundle as the manifest records it.

    Attributes:
        name: file name relative to the bundle folder (no folders, no ``..``).
        sha256: lowercase hex SHA-256 of the file's bytes at export.
        role: ``"model"`` (the valence/arousal graph), ``"face_encoder"`` or another role.
        inputs, outputs: the graph's own tensors for a graph other than the main model
            (e.g. the face encoder's ``face_crop`` -> ``face_feat``); empty for the main
            model, whose tensors are the manifest's top-level ``inputs`` / ``outputs``.
    """

    name: str
    sha256: str
    role: str
    inputs: tuple = ()
    outputs: tuple = ()

    def to_dict(self) -> dict:
        d = {"sha256": self.sha256, "role": self.role}
        if self.inputs:
            d["inputs"] = [s.to_dict() for s in self.inputs]
        if self.outputs:
            d["outputs"] = [s.to_dict() for s in self.outputs]
        return d


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime vs torch on real preprocessed windows, measured at export.

    Attributes:
        max_abs_diff: largest absolute difference of any output probability.
        n_windows: how many windows were compared.
        passed: whether ``max_abs_diff`` was within the exporter's tolerance.
        details: any further keys the exporter recorded (tolerance, data, per output...).
    """

    max_abs_diff: float
    n_windows: int
    passed: bool
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"max_abs_diff": self.max_abs_diff, "n_windows": self.n_windows,
                "passed": self.passed, **self.details}


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` (format: docs/BUNDLE.md).

    Attributes:
        schema_version: always :data:`SCHEMA_VERSION` for manifests this reader accepts.
        model_name: registry name of the model, e.g. ``"promptfusion"``.
        model_version: identifies the trained weights (changes whenever they change).
        inputs, outputs: the main model's tensors, in graph order.
        preprocessing: how raw frames and samples become the inputs: the typed, checked
            :class:`edge.spec.Preprocessing` record (rates, windows, face boxes and crops, ROI,
            pulse cleaning, TFR, contact streams and units, level summaries).
        labels: head name -> class names in output order, e.g. ``{"valence": ["low", "high"]}``.
        training: metrics, protocol and data description of the training run.
        export: opset and library versions of the export, and its UTC time.
        files: file name -> :class:`BundleFile`.
        parity: the export's :class:`Parity` record.
    """

    schema_version: int
    model_name: str
    model_version: str
    inputs: tuple
    outputs: tuple
    preprocessing: Preprocessing
    labels: dict
    training: dict
    export: dict
    files: dict
    parity: Parity

    def to_dict(self) -> dict:
        """The manifest as JSON-ready plain values (what ``manifest.json`` holds)."""
        return {
            "schema_version": self.schema_version,
            "model": {"name": self.model_name, "version": self.model_version},
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "preprocessing": self.preprocessing.to_dict(),
            "labels": copy.deepcopy(self.labels),
            "training": copy.deepcopy(self.training),
            "export": copy.deepcopy(self.export),
            "files": {name: f.to_dict() for name, f in self.files.items()},
            "parity": self.parity.to_dict(),
        }

    def role_file(self, role: str) -> BundleFile | None:
        """The file with this role, or None."""
        for f in self.files.values():
            if f.role == role:
                return f
        return None


@dataclass(frozen=True)
class Bundle:
    """A validated bundle folder.

    Attributes:
        root: the bundle folder.
        manifest: its parsed :class:`Manifest`.
    """

    root: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        """Path of the main valence/arousal graph (role ``"model"``)."""
        return self.root / self.manifest.role_file("model").name

    @property
    def face_encoder_path(self) -> Path | None:
        """Path of the per-frame facial encoder graph, or None when the model needs none."""
        f = self.manifest.role_file("face_encoder")
        return None if f is None else self.root / f.name

    @property
    def preprocessing(self) -> Preprocessing:
        """The manifest's preprocessing record (frozen; ``replace`` makes a changed copy)."""
        return self.manifest.preprocessing

    @property
    def inputs(self) -> tuple:
        return self.manifest.inputs

    @property
    def outputs(self) -> tuple:
        return self.manifest.outputs

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.manifest.inputs]

    def input(self, name: str) -> TensorSpec:
        """The main model's input spec called ``name``.

        Raises:
            ConfigError: no such input.
        """
        for s in self.manifest.inputs:
            if s.name == name:
                return s
        raise ConfigError(f"bundle {self.root} has no input {name!r}; it has {self.input_names}")

    def path(self, role: str) -> Path:
        """Path of the file with ``role``.

        Raises:
            ConfigError: the bundle has no file with that role.
        """
        f = self.manifest.role_file(role)
        if f is None:
            raise ConfigError(f"bundle {self.root} has no file with role {role!r}")
        return self.root / f.name


def sha256_file(path) -> str:
    """Lowercase hex SHA-256 of a file's bytes, read in 1 MiB chunks.

    Raises:
        BadInputError: the file cannot be read.
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
                h.update(chunk)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return h.hexdigest()


# --- parsing -----------------------------------------------------------------------------------


class _Fields:
    """Typed access to one JSON object, with errors that name the file and the field path."""

    def __init__(self, obj, where: str, source: str) -> None:
        if not isinstance(obj, dict):
            raise ConfigError(f"{source}: {where or 'top level'} must be a JSON object, "
                              f"got {type(obj).__name__}")
        self.obj = obj
        self.where = where
        self.source = source

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kinds, what: str):
        if key not in self.obj:
            raise ConfigError(f"{self.source}: missing field '{self._key(key)}'")
        value = self.obj[key]
        # bool is an int subclass in Python; a manifest that says `true` for an int is wrong.
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in _as_tuple(kinds))
        if not ok:
            raise ConfigError(f"{self.source}: field '{self._key(key)}' must be {what}, "
                              f"got {json.dumps(value)[:60]}")
        return value

    def sub(self, key: str) -> "_Fields":
        return _Fields(self.get(key, dict, "a JSON object"), self._key(key), self.source)


def _as_tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _parse_specs(items, where: str, source: str) -> tuple:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{source}: field '{where}' must be a non-empty list of tensor specs")
    specs = []
    for i, item in enumerate(items):
        f = _Fields(item, f"{where}[{i}]", source)
        name = f.get("name", str, "a string")
        if not name:
            raise ConfigError(f"{source}: field '{where}[{i}].name' is empty")
        shape = f.get("shape", list, "a list like [\"batch\", 2]")
        if not shape or shape[0] != BATCH:
            raise ConfigError(f"{source}: {where} '{name}' shape must start with \"{BATCH}\", "
                              f"got {shape}")
        for d in shape[1:]:
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ConfigError(f"{source}: {where} '{name}' shape {shape} has a dim that "
                                  "is not a positive int")
        dtype = f.get("dtype", str, "a dtype name")
        if dtype not in DTYPES:
            raise ConfigError(f"{source}: {where} '{name}' dtype {dtype!r} is not one of "
                              f"{DTYPES}")
        size = math.prod(shape[1:]) * _ITEMSIZE[dtype]
        if size > MAX_TENSOR_BYTES:
            raise ConfigError(f"{source}: {where} '{name}' shape {shape} is {size / 2**30:.3g} GiB per batch item "
                              f"(more than {MAX_TENSOR_BYTES >> 20} MiB); refused before allocating it")
        meaning = f.get("meaning", str, "a string")
        if not meaning.strip():
            raise ConfigError(f"{source}: {where} '{name}' has an empty meaning")
        optional = item.get("optional", False) if isinstance(item, dict) else False
        if not isinstance(optional, bool):
            raise ConfigError(f"{source}: {where} '{name}' optional must be true or false, got {optional!r}")
        specs.append(TensorSpec(name, tuple(shape), dtype, meaning, optional))
    names = [s.name for s in specs]
    if any(s.optional for s in specs) and "present" not in names:
        raise ConfigError(f"{source}: {where} marks inputs optional but has no 'present' input to flag them")
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: {where} names repeat: {names}")
    return tuple(specs)


def _safe_name(name: str, source: str) -> str:
    # A manifest names files inside its own folder; anything else could point hashing or the
    # runtime at an arbitrary path.
    p = Path(name)
    if not name or p.is_absolute() or len(p.parts) != 1 or name in (".", "..") or "\\" in name:
        raise ConfigError(f"{source}: file name {name!r} must be a plain name inside the bundle")
    return name


def _finite_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def parse_manifest(data, source: str = MANIFEST_NAME) -> Manifest:
    """Validate a manifest's decoded JSON and return it as a :class:`Manifest`.

    Args:
        data: the decoded JSON (a dict).
        source: file name used in error messages.

    Returns:
        The parsed manifest (files are not opened; see :func:`load_bundle`).

    Raises:
        ConfigError: unknown ``schema_version``; a field missing, of the wrong type or out of
            range; no ``"model"`` file; a file name that escapes the bundle; a parity record
            that did not pass; label lists that do not match the output widths.
    """
    top = _Fields(data, "", source)
    if "schema_version" not in data:
        raise ConfigError(f"{source}: missing field 'schema_version'")
    version = data["schema_version"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ConfigError(f"{source}: unknown schema_version {json.dumps(version)[:40]}; this "
                          f"emofuse reads schema_version {SCHEMA_VERSION} (upgrade emofuse or "
                          "re-export the bundle)")
    model = top.sub("model")
    model_name = model.get("name", str, "a string")
    model_version = model.get("version", str, "a string")
    if not model_name:
        raise ConfigError(f"{source}: field 'model.name' is empty")

    inputs = _parse_specs(data.get("inputs"), "inputs", source)
    outputs = _parse_specs(data.get("outputs"), "outputs", source)
    try:
        preprocessing = Preprocessing.from_dict(top.get("preprocessing", dict, "a JSON object"))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    _check_input_shapes(inputs, preprocessing, source)
    _check_window_bytes(preprocessing, source)
    labels = top.get("labels", dict, "a JSON object")
    for head, names in labels.items():
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise ConfigError(f"{source}: labels.{head} must be a non-empty list of strings")
        out = next((s for s in outputs if s.name == f"{head}_prob"), None)
        if out is not None and out.shape[-1] != len(names):
            raise ConfigError(f"{source}: output '{out.name}' has {out.shape[-1]} classes but "
                              f"labels.{head} names {len(names)}")
    training = top.get("training", dict, "a JSON object")
    export = top.sub("export")
    opset = export.get("opset", int, "an int")
    if opset < 1:
        raise ConfigError(f"{source}: field 'export.opset' must be >= 1, got {opset}")

    files_obj = top.get("files", dict, "a JSON object")
    files = {}
    for name, entry in files_obj.items():
        _safe_name(name, source)
        f = _Fields(entry, f"files.{name}", source)
        digest = f.get("sha256", str, "a hex string")
        if not _SHA256_RE.match(digest):
            raise ConfigError(f"{source}: files.{name}.sha256 is not 64 lowercase hex digits")
        role = f.get("role", str, "a string")
        sub_in = _parse_specs(entry["inputs"], f"files.{name}.inputs", source) \
            if "inputs" in entry else ()
        sub_out = _parse_specs(entry["outputs"], f"files.{name}.outputs", source) \
            if "outputs" in entry else ()
        files[name] = BundleFile(name, digest, role, sub_in, sub_out)
    roles = [f.role for f in files.values()]
    for role in KNOWN_ROLES:
        if roles.count(role) > 1:
            raise ConfigError(f"{source}: more than one file has role {role!r}")
    if "model" not in roles:
        raise ConfigError(f"{source}: no file has role 'model'")

    par = top.sub("parity")
    max_abs_diff = par.get("max_abs_diff", (int, float), "a number")
    if not _finite_number(max_abs_diff) or max_abs_diff < 0:
        raise ConfigError(f"{source}: parity.max_abs_diff must be a finite number >= 0")
    n_windows = par.get("n_windows", int, "an int")
    if n_windows < 1:
        raise ConfigError(f"{source}: parity.n_windows must be >= 1, got {n_windows}")
    passed = par.get("passed", bool, "true or false")
    if not passed:
        raise ConfigError(f"{source}: parity check recorded as failed (max_abs_diff "
                          f"{max_abs_diff:.3g}); this bundle must not be deployed")
    details = {k: v for k, v in par.obj.items() if k not in ("max_abs_diff", "n_windows",
                                                             "passed")}
    return Manifest(
        schema_version=SCHEMA_VERSION,
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        outputs=outputs,
        preprocessing=preprocessing,
        labels=copy.deepcopy(labels),
        training=copy.deepcopy(training),
        export=copy.deepcopy(export.obj),
        files=files,
        parity=Parity(float(max_abs_diff), int(n_windows), True, copy.deepcopy(details)),
    )


def _check_input_shapes(inputs: tuple, p: Preprocessing, source: str) -> None:
    # The graph's fixed input sizes must be the ones the preprocessing makes: a 64-pixel crop
    # into a 32-pixel graph, or a 1920-sample contact row into a 3840 one, fails here, not at
    # the first window.
    expected = {
        "face_clip": (p.face.clip_frames, 3, p.face.crop_size, p.face.crop_size),
        "tfr": (1, *p.tfr.shape),
        "contact": (len(p.contact.streams), p.contact.n_samples),
        "contact_level": (2,),
        "present": (6,),
    }
    for spec in inputs:
        want = expected.get(spec.name)
        if want is not None and tuple(spec.shape[1:]) != want:
            raise ConfigError(f"{source}: input '{spec.name}' has shape {list(spec.shape[1:])} but the "
                              f"preprocessing makes {list(want)}")


def _check_window_bytes(p: Preprocessing, source: str) -> None:
    # What the runtime allocates per window from the record alone (the face crops of a window's
    # sequence and clip, the contact rows): absurd sizes are refused here, not by a failed
    # allocation at the first window.
    crop = p.face.crop_size * p.face.crop_size * 3
    need = {"face.seq_frames x crop": p.face.seq_frames * crop, "face.clip_frames x crop": p.face.clip_frames * crop,
            "contact rows": len(p.contact.signals) * p.contact.n_samples * 8}
    for what, size in need.items():
        if size > MAX_WINDOW_BYTES:
            raise ConfigError(f"{source}: preprocessing {what} makes {size / 2**30:.3g} GiB per window (more than "
                              f"{MAX_WINDOW_BYTES >> 30} GiB); refused before allocating it")


def json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[`` / ``{`` in JSON text (brackets inside strings do not count),
    found without decoding it (linear time, no recursion).

    Args:
        raw: the UTF-8 JSON bytes.

    Returns:
        The depth, 0 for a scalar document.
    """
    skeleton = _JSON_STRING_RE.sub(b"", raw)
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    step = np.isin(codes, (0x5B, 0x7B)).astype(np.int64) - np.isin(codes, (0x5D, 0x7D)).astype(np.int64)
    return int(np.cumsum(step).max()) if step.size else 0


def read_manifest(path) -> Manifest:
    """Read and validate one ``manifest.json``.

    At most :data:`MAX_MANIFEST_BYTES` + 1 bytes are read; a longer file, or JSON nested deeper
    than :data:`MAX_JSON_DEPTH`, is refused before it is decoded.

    Args:
        path: the manifest file.

    Raises:
        BadInputError: missing, unreadable, too large, not UTF-8, nested too deeply or
            malformed JSON.
        ConfigError: as :func:`parse_manifest`.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: missing (not a bundle: no {MANIFEST_NAME})")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BadInputError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a manifest")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: cannot read (not UTF-8: {exc.reason} at byte {exc.start})") from exc
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise BadInputError(f"{path}: JSON nested {depth} deep (more than {MAX_JSON_DEPTH}); not a manifest")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: "
                            f"{exc.msg}") from exc
    except RecursionError:  # the depth check should have caught it; never a traceback
        raise BadInputError(f"{path}: JSON nested too deeply; not a manifest") from None
    return parse_manifest(data, source=str(path))


def _graph_io(path: Path):
    """The declared (input, output) value infos of an ONNX file, initializers left out."""
    # onnx is a core dependency, imported here to keep `import edge.bundle` light. Parsing the
    # protobuf reads the declarations without making a session (no kernels, no optimisation).
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError and others
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path}: not an ONNX graph ({msg})") from None
    g = model.graph
    inits = {i.name for i in g.initializer}
    return [v for v in g.input if v.name not in inits], list(g.output)


def _check_graph_io(path: Path, inputs: tuple, outputs: tuple) -> None:
    ins, outs = _graph_io(path)
    for kind, specs, actual in (("input", inputs, ins), ("output", outputs, outs)):
        got = [a.name for a in actual]
        want = [s.name for s in specs]
        if got != want:
            raise ConfigError(f"{path}: graph {kind}s {got} differ from the manifest's {want}")
        for spec, arg in zip(specs, actual):
            t = arg.type.tensor_type
            dtype = _ONNX_DTYPES.get(t.elem_type, f"onnx type {t.elem_type}")
            if dtype != spec.dtype:
                raise ConfigError(f"{path}: {kind} '{spec.name}' is {dtype} in the graph, "
                                  f"{spec.dtype} in the manifest")
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            if len(dims) != len(spec.shape):
                raise ConfigError(f"{path}: {kind} '{spec.name}' has rank {len(dims)} in "
                                  f"the graph, {len(spec.shape)} in the manifest")
            if isinstance(dims[0], int):
                raise ConfigError(f"{path}: {kind} '{spec.name}' has a fixed batch dim "
                                  f"{dims[0]}; bundles need a dynamic one")
            for g, m in zip(dims[1:], spec.shape[1:]):
                if isinstance(g, int) and g != m:
                    raise ConfigError(f"{path}: {kind} '{spec.name}' shape {dims} differs "
                                      f"from the manifest's {list(spec.shape)}")


def load_bundle(path, *, verify_hashes: bool = True, check_graphs: bool = True) -> Bundle:
    """Open a bundle folder and validate it.

    Args:
        path: the bundle folder (holding ``manifest.json``).
        verify_hashes: recompute every listed file's SHA-256 and compare (default; cheap for
            the small graphs emofuse exports).
        check_graphs: also read each graph's declared inputs and outputs (``onnx``, no
            session) and check their names, dtypes, ranks, fixed dims and the dynamic batch
            dim against the manifest (default; a few ms, see docs/BUNDLE.md).

    Returns:
        The :class:`Bundle`.

    Raises:
        BadInputError: the folder or a listed file is missing, a hash differs, the manifest is
            unreadable, too large, too deeply nested or malformed JSON, or a graph is not ONNX.
        ConfigError: unknown schema version or an invalid field (see :func:`parse_manifest`),
            or a graph's tensors differ from the manifest's.
    """
    root = Path(path)
    if not root.is_dir():
        raise BadInputError(f"{root}: bundle folder does not exist")
    manifest = read_manifest(root / MANIFEST_NAME)
    for f in manifest.files.values():
        fpath = root / f.name
        if not fpath.is_file():
            raise BadInputError(f"{fpath}: listed in {MANIFEST_NAME} but missing")
        if verify_hashes:
            digest = sha256_file(fpath)
            if digest != f.sha256:
                raise BadInputError(f"{fpath}: sha256 {digest[:12]}... differs from the "
                                    f"manifest's {f.sha256[:12]}... (file changed or corrupt)")
    bundle = Bundle(root, manifest)
    if check_graphs:
        for f in manifest.files.values():
            if f.role == "model":
                _check_graph_io(root / f.name, manifest.inputs, manifest.outputs)
            elif f.inputs or f.outputs:
                _check_graph_io(root / f.name, f.inputs, f.outputs)
    return bundle
