"""torch -> ONNX for emofuse models, and the parity check between torch and ONNX Runtime.

Graphs are written by the TorchScript exporter (``torch.onnx.export(dynamo=False)``) at a
pinned opset (:data:`OPSET`), with the contract's input and output names and a dynamic batch
dim on every tensor, and must pass ``onnx.checker`` (full check, with shape inference) with
only standard-domain ops. The TorchScript exporter is used because every model of the
registry traces to plain ops with it; the dynamo exporter is not verified for all of them.

Parity (:func:`check_parity`) runs the torch model and the exported graph in ONNX Runtime
(CPU) on the same real preprocessed windows and compares the output probabilities; an export
whose largest absolute difference exceeds the tolerance is refused (:class:`ParityError`).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError, EmofuseError, require

log = logging.getLogger(__name__)

OPSET = 17
OUTPUT_NAMES = ("valence_prob", "arousal_prob")
FACE_ENCODER_INPUT = "face_crop"
FACE_ENCODER_OUTPUT = "face_feat"
PARITY_TOLERANCE = 1e-4
EXPORTER = "torchscript"

# Meanings of the face encoder's own tensors; the model's inputs and outputs are described
# once, in export.models.INPUT_SPECS / OUTPUT_SPECS.
TENSOR_MEANINGS = {
    FACE_ENCODER_INPUT: "one face crop, RGB in [0, 1], (channel, y, x), cut by "
                        "edge.face.crop_face",
    FACE_ENCODER_OUTPUT: "the frozen facial encoder's pooled feature of one face crop (one "
                         "row of the model's face_feats)",
}


class ParityError(EmofuseError):
    """ONNX Runtime's outputs differ from torch's by more than the tolerance."""


@dataclass(frozen=True)
class ParityResult:
    """Outcome of :func:`check_parity`.

    Attributes:
        max_abs_diff: largest absolute difference over all outputs and windows.
        per_output: output name -> its largest absolute difference.
        n_windows: windows compared.
        tolerance: the limit applied.
        passed: ``max_abs_diff <= tolerance`` (and everything finite).
        extra: further measurements (e.g. the face encoder's feature difference).
    """

    max_abs_diff: float
    per_output: dict
    n_windows: int
    tolerance: float
    passed: bool
    extra: dict = field(default_factory=dict)


def _torch():
    return require("torch", "export", "exporting a model to ONNX")


def _to_torch(feeds: dict) -> dict:
    torch = _torch()
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}


def _module(fn, name: str):
    """An nn.Module whose forward is ``fn`` (what the exporter traces)."""
    torch = _torch()

    class _Forward(torch.nn.Module):
        def __init__(self, owner):
            super().__init__()
            self.owner = owner  # registers the wrapped model's parameters

        def forward(self, *inputs):
            return fn(*inputs)

    _Forward.__name__ = name
    return _Forward


def export_graph(fn, owner, path, example: dict, output_names, *, opset: int = OPSET) -> Path:
    """Trace ``fn(*example.values())`` and write it as an ONNX graph, then check it.

    Args:
        fn: callable taking the inputs positionally in ``example``'s order and returning a
            tensor or a tuple of tensors (e.g. ``model.export_forward``).
        owner: the ``nn.Module`` whose parameters ``fn`` uses (put in eval mode here).
        path: output ``.onnx`` file.
        example: input name -> numpy array (batch first); names become the graph's inputs.
        output_names: names of ``fn``'s outputs, in order.
        opset: ONNX opset to pin.

    Returns:
        ``path``.

    Raises:
        ConfigError: the exporter fails, or the graph fails ``onnx.checker``, uses another
            opset or a non-standard op domain, or its input/output names differ.
    """
    torch = _torch()
    path = Path(path)
    names = list(example)
    wrapper = _module(fn, "ExportForward")(owner).eval()
    owner.eval()
    args = tuple(_to_torch(example).values())
    dynamic = {n: {0: "batch"} for n in [*names, *output_names]}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated upstream but is the verified path here;
            # its warnings would only repeat that on every export.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper, args, str(path), input_names=names, output_names=list(output_names),
                dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"ONNX export of {type(owner).__name__} to {path} failed: "
                          f"{first}") from exc
    check_graph(path, names, list(output_names), opset=opset)
    log.info("exported %s (%d bytes)", path, path.stat().st_size)
    return path


def check_graph(path, input_names, output_names, *, opset: int = OPSET) -> None:
    """``onnx.checker`` (full, with shape inference) plus emofuse's own rules on a graph.

    Raises:
        ConfigError: checker failure, another opset, a custom-domain op, different input or
            output names, or a batch dim that is not dynamic.
    """
    import onnx
    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: fails onnx.checker: {first}") from exc
    model = onnx.load(str(path))
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx") != opset:
        raise ConfigError(f"{path}: opset {opsets.get('ai.onnx')} instead of {opset}")
    custom = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        raise ConfigError(f"{path}: uses non-standard op domains {custom}")
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != list(input_names) or got_out != list(output_names):
        raise ConfigError(f"{path}: graph tensors {got_in} -> {got_out}, expected "
                          f"{list(input_names)} -> {list(output_names)}")
    for v in [*model.graph.input, *model.graph.output]:
        dim0 = v.type.tensor_type.shape.dim[0]
        if not dim0.dim_param:
            raise ConfigError(f"{path}: '{v.name}' has a fixed batch dim {dim0.dim_value}")


def export_model(model, path, example: dict, *, opset: int = OPSET) -> Path:
    """Export an emofuse model's ``export_forward`` (probabilities) to ``path``.

    Args:
        model: a registry model with ``input_names`` and ``export_forward(*inputs)``.
        path: output ``.onnx`` file.
        example: input name -> float32 array (batch first) for every name in
            ``model.input_names``, in that order.

    Raises:
        ConfigError: ``example`` does not hold exactly the model's inputs; export or checks
            fail (see :func:`export_graph`).
    """
    names = list(model.input_names)
    if list(example) != names:
        raise ConfigError(f"{type(model).__name__} takes inputs {names}, got {list(example)}")
    return export_graph(model.export_forward, model, path, example, OUTPUT_NAMES, opset=opset)


def export_face_encoder(encoder, path, example_crops: np.ndarray, *, opset: int = OPSET) -> Path:
    """Export ``encoder.encode_frames``: ``face_crop`` (B, 3, H, W) -> ``face_feat`` (B, D).

    Raises:
        ConfigError: export or checks fail.
    """
    return export_graph(encoder.encode_frames, encoder, path,
                        {FACE_ENCODER_INPUT: example_crops}, (FACE_ENCODER_OUTPUT,), opset=opset)


def onnx_session(path):
    """An ONNX Runtime CPU session for ``path`` (single-threaded: deterministic and fair on a
    machine shared with training).

    Raises:
        BadInputError: ONNX Runtime cannot load the graph.
    """
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path}: ONNX Runtime cannot load it ({first})") from exc


def run_onnx(session, feeds: dict) -> dict:
    """Run a session on named float arrays; returns output name -> array.

    Raises:
        BadInputError: the feeds do not match the graph's inputs or ORT fails on them.
    """
    want = [i.name for i in session.get_inputs()]
    if sorted(want) != sorted(feeds):
        raise BadInputError(f"graph takes {want}, got {sorted(feeds)}")
    names = [o.name for o in session.get_outputs()]
    try:
        outs = session.run(names, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"ONNX Runtime failed: {first}") from exc
    return dict(zip(names, outs))


def torch_probabilities(model, feeds: dict) -> dict:
    """``model.export_forward`` on numpy feeds (in ``model.input_names`` order), as numpy.

    Returns:
        ``{"valence_prob": (B, 2), "arousal_prob": (B, 2)}`` float32.
    """
    torch = _torch()
    model.eval()
    with torch.no_grad():
        outs = model.export_forward(*_to_torch({n: feeds[n] for n in model.input_names}).values())
    return {name: o.detach().cpu().numpy() for name, o in zip(OUTPUT_NAMES, outs)}


def compare_outputs(reference: dict, candidate: dict) -> tuple[float, dict]:
    """Largest absolute difference per output and overall; non-finite counts as infinite.

    Raises:
        BadInputError: the two hold different outputs or shapes.
    """
    if sorted(reference) != sorted(candidate):
        raise BadInputError(f"outputs differ: {sorted(reference)} vs {sorted(candidate)}")
    per = {}
    for name, ref in reference.items():
        cand = candidate[name]
        if ref.shape != cand.shape:
            raise BadInputError(f"output '{name}' shape {cand.shape} vs torch's {ref.shape}")
        diff = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
        per[name] = float(diff.max()) if np.all(np.isfinite(diff)) else float("inf")
    return max(per.values()), per


def check_parity(
    reference: dict,
    candidate: dict,
    *,
    tolerance: float = PARITY_TOLERANCE,
    extra: dict | None = None,
) -> ParityResult:
    """Compare torch's output probabilities with ONNX Runtime's on the same windows.

    Args:
        reference: torch outputs, name -> (N, 2) float arrays.
        candidate: ONNX Runtime outputs for the same N windows.
        tolerance: largest allowed absolute difference of any probability.
        extra: further measurements to keep in the result.

    Returns:
        :class:`ParityResult` (``passed`` tells; nothing is raised for a failed comparison,
        see :func:`require_parity`).

    Raises:
        BadInputError: outputs or shapes differ.
        ConfigError: tolerance not a positive finite number.
    """
    if not (tolerance > 0 and np.isfinite(tolerance)):
        raise ConfigError(f"parity tolerance must be > 0, got {tolerance}")
    max_diff, per = compare_outputs(reference, candidate)
    n = int(next(iter(reference.values())).shape[0])
    return ParityResult(max_diff, per, n, float(tolerance), bool(max_diff <= tolerance),
                        dict(extra or {}))


def require_parity(result: ParityResult, what: str) -> None:
    """Raise :class:`ParityError` (one line) unless ``result.passed``."""
    if not result.passed:
        worst = max(result.per_output, key=result.per_output.get)
        raise ParityError(
            f"{what}: ONNX Runtime differs from torch by {result.max_abs_diff:.3g} "
            f"(worst output '{worst}') on {result.n_windows} real windows; tolerance "
            f"{result.tolerance:g}"
        )
