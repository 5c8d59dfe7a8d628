"""Explicit INT8: a Q/DQ graph (``model.int8.onnx``) chosen by a per-layer sensitivity sweep.

The main path of the calibrate issue. ONNX Runtime's static quantizer
(:func:`onnxruntime.quantization.quantize_static`, QDQ format, per-channel symmetric INT8
weights) inserts QuantizeLinear/DequantizeLinear pairs with ranges computed on the bundle's
calibration windows (:mod:`calibrate.calibration`) by min-max, entropy (KL divergence, Migacz
2017, "8-bit Inference with TensorRT", GTC) or percentile calibration. The same Q/DQ graph serves
ONNX Runtime on any CPU and TensorRT's explicit quantization (strongly typed networks, the only
INT8 path left in TensorRT 11).

What to quantize is decided, not guessed (Wu et al. 2020, "Integer Quantization for Deep
Learning Inference: Principles and Empirical Evaluation", arXiv 2004.09602, sec. 5: partial
quantization by per-layer sensitivity):

1. **Cost** (:func:`pays`): only operators whose INT8 kernels pay are candidates - MatMul /
   Gemm / Conv with a constant weight (``op_types``) and at least ``min_macs`` multiply-
   accumulates per window, 1-D/2-D convolutions only. LayerNorm and GELU have no INT8 kernel in
   ONNX Runtime's CPU provider, and its INT8 Softmax, attention products (QLinearMatMul on
   batched activations) and Conv3d were measured slower than FP32 here, so Q/DQ around them only
   adds work (docs/QUANTIZATION.md).
2. **Sensitivity sweep**: each candidate is quantized *alone*, and so is each group of usual
   suspects (all LayerNorms, all Softmaxes, the attention products, the classification heads),
   and the output drift against FP32 is measured on held-out *sweep* windows: max and mean
   absolute probability difference, decisions flipped, and the expected disagreement
   (:func:`calibrate.gate.expected_disagreement`: the flip rate the drift predicts over the
   observed spread of decision margins). A candidate that moves a probability by more than
   ``node_tolerance`` or is expected to flip more than half of the disagreement the gate allows
   (``(1 - min_agreement) / 2``) on its own stays in float. Flips themselves are not the
   criterion: on a hundred windows they mostly count the one or two that sit within 0.002 of
   the decision boundary, which any change flips.
3. **Combination**: the remaining candidates are quantized together; while the sweep windows'
   decision agreement is below ``min_agreement`` or their expected disagreement above half of
   what the gate allows, the remaining node with the largest accuracy cost for its speed
   (expected disagreement alone per multiply-accumulate) goes back to float.
4. **Gate** (:mod:`calibrate.gate`): the chosen graph against FP32 on the *gate* windows, which
   chose nothing.

Targets: ``cpu`` (unsigned 8-bit activations with a zero point, ONNX Runtime's fastest x86/ARM
path: its QDQ fusions turn each DQ -> MatMul into one ``MatMulIntegerToFloat`` kernel) and
``tensorrt`` (signed symmetric 8-bit activations: TensorRT accepts only zero-point-0 INT8 Q/DQ).
Outputs of MatMul / Gemm are not re-quantized, so each reads INT8 and writes float, which keeps
the float parts of the graph float. A Conv's output is (QLinearConv is ONNX Runtime's only INT8
convolution), over the range of the Relu / Clip that follows it, which is folded in, so a conv
stem runs as back-to-back QLinearConv; Shape nodes read quantized tensors directly.

:func:`quantize_bundle` runs everything and, when the gate passes, installs
``model.int8.onnx`` into the bundle (role ``model_int8``) and records the settings, the sweep,
the gate and the calibration data's SHA-256 under ``quantization`` in manifest.json, updating
the file hashes. NVIDIA's ModelOpt ONNX quantizer (``quantizer="modelopt"``) is an optional
alternative when ``modelopt`` imports.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import inspect
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from calibrate.calibration import (
    CALIBRATION_FILE, HOLDOUT_FILE, PART_GATE, PART_SWEEP, CalibrationSet, file_sha256,
)
from calibrate.gate import DEFAULT_MIN_AGREEMENT, GateReport, compare_probabilities, run_graph
from edge.bundle import MANIFEST_NAME, load_bundle, sha256_file
from firmware_bridge.errors import BadInputError, CalibrationError, ConfigError, MissingDependencyError, require

log = logging.getLogger("emofuse.calibrate")

INT8_FILE = "model.int8.onnx"
INT8_ROLE = "model_int8"
MANIFEST_SECTION = "quantization"
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# activation QuantType name, symmetric activations
TARGETS = {"cpu": ("QUInt8", False), "tensorrt": ("QInt8", True)}
QUANTIZERS = ("ort", "modelopt")
DEFAULT_OP_TYPES = ("MatMul", "Gemm", "Conv")
# Measured on this project's models (docs/QUANTIZATION.md): below ~0.1 M MACs per window an
# INT8 MatMul saves less than its activation QuantizeLinear costs.
DEFAULT_MIN_MACS = 100_000
# A MatMul / Gemm whose weight has a side below this (a bottleneck adapter's 192 -> 16 -> 192)
# gains nothing in INT8 here: the activation's QuantizeLinear costs what the GEMM saves.
DEFAULT_MIN_SIDE = 32
# Largest probability drift one candidate may cause alone on the sweep windows. 0.02 kept every
# convolution of the default bundle's conv stem in float (0.026-0.035 each, at expected
# disagreements of 0.2 %, a fifth of what the gate allows); quantized together with the rest at
# 0.05 the gate windows agree 99.57 % (docs/QUANTIZATION.md). The expected-disagreement budget
# and the combination step still bound what the drift does to decisions.
DEFAULT_NODE_TOLERANCE = 0.05
# Share of the disagreement the gate allows (1 - min_agreement) that the sweep may spend: the
# gate is measured on other people, so the sweep keeps half in reserve.
DISAGREEMENT_SHARE = 0.5
SUSPECT_OP_TYPES = ("LayerNormalization", "Softmax")
# Activations ONNX Runtime's QDQ quantizer folds into the quantized operator before them (their
# output's range becomes that operator's output range), so a Conv -> Relu -> Conv chain runs as
# QLinearConv -> QLinearConv with no float tensor, and the range starts at 0, not at the Conv's
# negative minimum (finer steps for what the next layer reads).
FUSED_ACTIVATIONS = ("Relu", "Clip")
_HEAD_RE = re.compile(r"head", re.IGNORECASE)


# What a calibration run imports: module, the package pip installs it from, what it is for.
# Checked all at once before any window is rendered (check_dependencies), so a missing one
# costs a second, not the minutes of rendering before the quantizer first imports it.
DEPENDENCIES = (
    ("onnx", "onnx", "reading and rewriting the graph"),
    ("onnxruntime", "onnxruntime", "running the FP32 and INT8 graphs"),
    ("onnxruntime.quantization", "onnxruntime", "ONNX Runtime's INT8 quantizer"),
    # quant_pre_process runs ONNX Runtime's symbolic shape inference, which is written in sympy;
    # onnxruntime does not require sympy itself, so emofuse's core requirements do.
    ("sympy", "sympy", "ONNX Runtime's symbolic shape inference (quant_pre_process)"),
    ("onnxruntime.quantization.shape_inference", "onnxruntime", "ONNX Runtime's quantization pre-processing"),
    ("tqdm", "tqdm", "the progress bar"),
)
MODELOPT_DEPENDENCY = ("modelopt.onnx.quantization", "nvidia-modelopt[onnx]", "the modelopt quantizer")


def check_dependencies(quantizer: str = "ort") -> None:
    """Import everything a calibration run needs, before any long work starts.

    Args:
        quantizer: ``"ort"`` or ``"modelopt"`` (which also needs NVIDIA ModelOpt).

    Raises:
        MissingDependencyError: one line naming every missing module, what it is for, and the
            ``pip install`` command that provides them.
    """
    needed = list(DEPENDENCIES) + ([MODELOPT_DEPENDENCY] if quantizer == "modelopt" else [])
    missing = []
    for module, package, purpose in needed:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            # A module missing only because its parent is missing is named once, by the parent.
            if not any(module.startswith(m + ".") for m, _, _ in missing):
                missing.append((module, package, f"{purpose}: {exc}"))
    if missing:
        names = "; ".join(f"{m} ({why})" for m, _, why in missing)
        packages = " ".join(dict.fromkeys(f"'{p}'" if "[" in p else p for _, p, _ in missing))
        raise MissingDependencyError(f"calibration needs modules that are not installed: {names}. "
                                     f"Install them with: pip install {packages}")


@dataclass(frozen=True)
class QuantConfig:
    """Settings of one quantization run (all recorded in the manifest).

    Attributes:
        method: ``"minmax"``, ``"entropy"`` or ``"percentile"`` activation calibration.
        per_channel: per-output-channel weight scales (True) or one per tensor.
        op_types: operator types that may be quantized (default MatMul, Gemm, Conv).
        target: ``"cpu"`` (uint8 asymmetric activations) or ``"tensorrt"`` (int8 symmetric).
        min_macs: candidates need at least this many multiply-accumulates per window.
        min_side: MatMul / Gemm candidates need both weight dimensions at least this large.
        keep_float: node names the user keeps in float regardless of the sweep.
        sweep: run the sensitivity sweep (False: quantize every candidate).
        node_tolerance: largest probability drift one node may cause alone on the sweep windows.
        min_agreement: decision agreement the combination (sweep windows) and the gate (gate
            windows) must reach on every head.
        percentile: the percentile for ``method="percentile"``.
        batch_size: windows per calibration run (default 4: ONNX Runtime's calibrator holds every
            intermediate tensor of a run; measured on the default bundle, 16 windows per run
            peaked at 1575 MiB resident, 4 at 1421 MiB in a phase measurement; docs/QUANTIZATION.md).
        quantizer: ``"ort"`` (onnxruntime.quantization) or ``"modelopt"`` (nvidia-modelopt).
    """

    method: str = "minmax"
    per_channel: bool = True
    op_types: tuple = DEFAULT_OP_TYPES
    target: str = "cpu"
    min_macs: int = DEFAULT_MIN_MACS
    min_side: int = DEFAULT_MIN_SIDE
    keep_float: tuple = ()
    sweep: bool = True
    node_tolerance: float = DEFAULT_NODE_TOLERANCE
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    percentile: float = 99.999
    batch_size: int = 4
    quantizer: str = "ort"

    def validate(self) -> "QuantConfig":
        """Returns self. Raises ConfigError for any out-of-range setting."""
        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r} is not one of {list(METHODS)}")
        if self.target not in TARGETS:
            raise ConfigError(f"--target {self.target!r} is not one of {list(TARGETS)}")
        if self.quantizer not in QUANTIZERS:
            raise ConfigError(f"quantizer {self.quantizer!r} is not one of {list(QUANTIZERS)}")
        if not self.op_types:
            raise ConfigError("op_types is empty: nothing could be quantized")
        if not 0.0 < float(self.min_agreement) <= 1.0:
            raise ConfigError(f"--min-agreement must be in (0, 1], got {self.min_agreement}")
        if not float(self.node_tolerance) > 0.0:
            raise ConfigError(f"node_tolerance must be > 0, got {self.node_tolerance}")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile}")
        if int(self.min_macs) < 0 or int(self.min_side) < 0 or int(self.batch_size) < 1:
            raise ConfigError("min_macs and min_side must be >= 0 and batch_size >= 1")
        return self

    def disagreement_budget(self) -> float:
        """Expected disagreement a sweep probe or the combination may reach on the sweep windows."""
        return (1.0 - float(self.min_agreement)) * DISAGREEMENT_SHARE

    def record(self) -> dict:
        d = asdict(self)
        d["op_types"] = list(self.op_types)
        d["keep_float"] = list(self.keep_float)
        act, sym = TARGETS[self.target]
        d.update(activation_type="uint8" if act == "QUInt8" else "int8", activation_symmetric=sym,
                 weight_type="int8", weight_symmetric=True)
        return d


# -- graph analysis ------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeInfo:
    """A quantizable operator of the graph.

    Attributes:
        name, op_type: the node.
        weighted: its second input is a constant (an initializer or a Constant's output).
        macs: multiply-accumulates per window (batch 1), or None when shapes are unknown.
        head: the node belongs to a classification head (its name says ``head``).
        spatial_dims: kernel rank of a Conv (1, 2, 3), else 0.
        min_side: the smaller side of the GEMM the operator is: for a weighted MatMul / Gemm
            the smaller of its weight's dimensions (reduction or output width); for a Conv the
            smaller of its output channels and its reduction length (input channels per group
            times the kernel's size; im2col, Chellapilla et al. 2006). None otherwise or when
            unknown.
    """

    name: str
    op_type: str
    weighted: bool
    macs: int | None
    head: bool
    spatial_dims: int = 0
    min_side: int | None = None


def _shape_table(model) -> dict:
    table = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            table[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for init in model.graph.initializer:
        table[init.name] = list(init.dims)
    return table


def _prod(dims) -> int | None:
    out = 1
    for d in dims:
        if d is None:
            return None
        out *= int(d)
    return out


def analyse_graph(model) -> list[NodeInfo]:
    """MatMul / Gemm / Conv / LayerNormalization / Softmax nodes with their cost.

    Args:
        model: an ``onnx.ModelProto`` with inferred shapes (dim 0 is the dynamic batch).

    Returns:
        One :class:`NodeInfo` per node of those types, in graph order.
    """
    shapes = _shape_table(model)
    consts = {i.name for i in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    out = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv", *SUSPECT_OP_TYPES):
            continue
        weighted = node.op_type in ("MatMul", "Gemm", "Conv") and len(node.input) > 1 and node.input[1] in consts
        macs = None
        a, b = shapes.get(node.input[0]), shapes.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "MatMul" and a and b and len(a) >= 2 and len(b) >= 2:
            # A (batch, ..., M, K) @ B (K, N) or (batch, ..., K, N): rows of A per window times K*N.
            rows = _prod(a[1:-1])
            if rows is not None and a[-1] is not None and b[-1] is not None:
                macs = rows * int(a[-1]) * int(b[-1])
        elif node.op_type == "Gemm" and b and len(b) == 2:
            macs = int(b[0]) * int(b[1])
        elif node.op_type == "Conv" and b:
            y = shapes.get(node.output[0])
            if y and len(y) >= 3 and _prod(y[2:]) is not None:
                macs = _prod(y[2:]) * int(b[0]) * _prod(b[1:])
        spatial = len(b) - 2 if node.op_type == "Conv" and b else 0
        side = None
        if weighted and node.op_type in ("MatMul", "Gemm") and b and len(b) >= 2 and None not in b[-2:]:
            side = min(int(b[-2]), int(b[-1]))
        elif weighted and node.op_type == "Conv" and b and len(b) >= 3 and None not in b:
            # weight (C_out, C_in / group, k...): the GEMM's output width and reduction length
            side = min(int(b[0]), _prod(b[1:]))
        out.append(NodeInfo(node.name, node.op_type, bool(weighted), macs, bool(_HEAD_RE.search(node.name)),
                            spatial, side))
    return out


def name_nodes(model) -> int:
    """Give every unnamed node a unique name (``nodes_to_quantize`` works by name). Returns
    how many were named."""
    used = {n.name for n in model.graph.node if n.name}
    count = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
            count += 1
    return count


def fused_activations(model) -> dict:
    """The activation each Conv's output goes through alone: Conv name -> Relu / Clip name.

    Quantizing such an activation with its Conv lets ONNX Runtime's QDQ quantizer remove it and
    quantize the Conv's output over the activation's range (QDQRemovableActivation), so chains
    of convolutions become chains of ``QLinearConv`` instead of DequantizeLinear -> Relu ->
    QuantizeLinear between each pair.

    Args:
        model: an ``onnx.ModelProto`` with named nodes (:func:`name_nodes`).

    Returns:
        Conv name -> activation name, for Convs whose only reader is one of
        ``FUSED_ACTIVATIONS`` and whose output is not a graph output.
    """
    readers: dict = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    fused = {}
    for node in model.graph.node:
        if node.op_type != "Conv" or node.output[0] in outputs:
            continue
        after = readers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type in FUSED_ACTIVATIONS:
            fused[node.name] = after[0].name
    return fused


def fold_weight_aliases(model) -> int:
    """Make every constant a plain initializer that its consumers read directly.

    The TorchScript exporter writes shared or repeated parameters as ``Identity`` nodes of one
    initializer and small tensors as ``Constant`` nodes; the quantizer recognises a weight only
    when it is an initializer, so an aliased weight would be quantized as an activation (one
    scale for the whole tensor, from calibration). Returns how many aliases were folded.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value" \
                and node.output[0] not in outputs:
            arr = numpy_helper.to_array(node.attribute[0].t)
            graph.initializer.append(numpy_helper.from_array(arr, node.output[0]))
            inits.add(node.output[0])
            continue
        src = alias.get(node.input[0], node.input[0]) if node.input else None
        if node.op_type == "Identity" and src in inits and node.output[0] not in outputs:
            alias[node.output[0]] = src
            continue
        keep.append(node)
    for node in keep:
        for k, name in enumerate(node.input):
            if name in alias:
                node.input[k] = alias[name]
    folded = len(graph.node) - len(keep)
    del graph.node[:]
    graph.node.extend(keep)
    return folded


def prepare_model(src, dst) -> Path:
    """ONNX Runtime's quantization pre-processing: symbolic shape inference and ONNX shape
    inference (``quant_pre_process``), constants as initializers (:func:`fold_weight_aliases`)
    and a name for every node.

    Graph optimisation is left to ONNX Runtime at load time (``skip_optimization``): an
    optimised FP32 graph saved to disk here would pin this machine's fusions into the file and,
    measured here, ran no faster.

    Raises:
        BadInputError: the graph cannot be read or shape-inferred.
    """
    onnx = require("onnx", "core", "quantizing a graph")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    try:
        model = onnx.load(str(src))
        fold_weight_aliases(model)
        name_nodes(model)
        onnx.save(model, str(dst))
        quant_pre_process(str(dst), str(dst), skip_optimization=True)
        onnx.checker.check_model(str(dst))
    except Exception as exc:  # the ONNX / ORT tools raise many kinds
        raise BadInputError(f"{src}: quantization pre-processing failed ({exc})") from exc
    return dst


# -- ONNX Runtime's quantizer --------------------------------------------------------------------

def _largest_divisor_at_most(n: int, cap: int) -> int:
    for d in range(min(n, cap), 0, -1):
        if n % d == 0:
            return d
    return 1


class WindowReader:
    """``CalibrationDataReader`` over model-ready arrays, in batches.

    Supports ``len`` and ``set_range`` so that ONNX Runtime's calibrators can consume it in
    chunks (``CalibStridedMinMax``) instead of keeping every intermediate tensor of every
    window in memory at once.

    Args:
        inputs: input name -> array (N, ...).
        batch_size: windows per batch.
    """

    def __init__(self, inputs: dict, batch_size: int = 16):
        self.inputs = inputs
        n = len(next(iter(inputs.values())))
        self.batches = [slice(i, min(i + batch_size, n)) for i in range(0, n, max(1, batch_size))]
        self._range = (0, len(self.batches))
        self._pos = 0

    def get_next(self):
        start, end = self._range
        if start + self._pos >= end:
            return None
        sl = self.batches[start + self._pos]
        self._pos += 1
        return {k: np.ascontiguousarray(v[sl]) for k, v in self.inputs.items()}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._range = (int(start_index), int(end_index))
        self._pos = 0

    def rewind(self) -> None:
        self._range = (0, len(self.batches))
        self._pos = 0


class OrtQuantizer:
    """Runs ``quantize_static`` repeatedly on one prepared graph with ranges computed once.

    The first call calibrates (every tensor that any of ``op_types`` plus the suspect groups
    touches) and stores the ranges in a cache file; later calls reuse them, so each sweep probe
    costs a graph rewrite, not a calibration. (ONNX Runtime without ``calibration_cache_path``
    calibrates on every call: slower, same result.) A quantized Conv takes the activation that
    follows it along (:func:`fused_activations`).

    Args:
        prepared: the pre-processed FP32 graph (:func:`prepare_model`).
        calib: the calibration windows.
        config: the :class:`QuantConfig`.
        workdir: folder for the range cache.
        op_types: every op type any call may quantize.
    """

    def __init__(self, prepared: Path, calib: CalibrationSet, config: QuantConfig, workdir: Path,
                 op_types) -> None:
        self.q = require("onnxruntime.quantization", "core", "INT8 quantization")
        self.prepared = Path(prepared)
        self.calib = calib
        self.config = config
        self.op_types = list(dict.fromkeys(op_types))
        onnx = require("onnx", "core", "quantizing a graph")
        self.fused = fused_activations(onnx.load(str(self.prepared))) if "Conv" in self.op_types else {}
        if self.fused:
            self.op_types += [t for t in FUSED_ACTIVATIONS if t not in self.op_types]
        self.cache = Path(workdir) / "ranges.json"
        self._cache_supported = "calibration_cache_path" in inspect.signature(self.q.quantize_static).parameters
        self.calibration_s = None

    def _batch_size(self) -> int:
        """Windows per calibration run. Histogram calibration (entropy, percentile) stacks the
        runs of a chunk into one array, so every batch must have the same size there: the
        largest divisor of the window count not above ``batch_size``."""
        size = int(self.config.batch_size)
        if self.config.method == "minmax":
            return size
        return _largest_divisor_at_most(len(self.calib), size)

    def _extra(self) -> dict:
        cfg = self.config
        act, symmetric = TARGETS[cfg.target]
        reader_len = len(WindowReader(self.calib.inputs, self._batch_size()))
        extra = {
            # A quantized MatMul / Gemm reads INT8 and writes float: no Q/DQ on its output, so
            # ONNX Runtime fuses DQ -> MatMul into MatMulIntegerToFloat (and QGemm). A Conv keeps
            # its output Q/DQ: QLinearConv is the only INT8 convolution kernel.
            "OpTypesToExcludeOutputQuantization": [t for t in self.op_types if t in ("MatMul", "Gemm")],
            "ActivationSymmetric": symmetric,
            "WeightSymmetric": True,
            # Calibrate in chunks, so memory stays bounded for 500 windows: each chunk's ranges
            # (min-max) or histograms (entropy, percentile) are merged into the running result.
            # Min-max merges exactly, so its chunk is one batch (every intermediate tensor of a
            # chunk is held at once); histograms are
            # rebinned at each merge, so they keep chunks of up to 4 batches. (Not
            # CalibMaxIntermediateOutputs: in ONNX Runtime 1.31 it drops the collected outputs
            # instead of merging them.)
            "CalibStridedMinMax": _largest_divisor_at_most(reader_len, 1 if cfg.method == "minmax" else 4),
        }
        if cfg.method == "percentile":
            extra["CalibPercentile"] = float(cfg.percentile)
        if symmetric:
            extra["CalibTensorRangeSymmetric"] = True
        return extra

    def quantize(self, nodes, out_path) -> Path:
        """Write a Q/DQ graph with exactly ``nodes`` quantized (and the activations fused
        into those of them that are Convs).

        Raises:
            ConfigError: ``nodes`` is empty (ONNX Runtime would read that as "all nodes").
            CalibrationError: ONNX Runtime's quantizer failed.
        """
        nodes = list(nodes)
        if not nodes:
            raise ConfigError("no node to quantize")
        nodes += [self.fused[n] for n in nodes if n in self.fused]
        cfg = self.config
        act, _ = TARGETS[cfg.target]
        kwargs = dict(
            quant_format=self.q.QuantFormat.QDQ,
            op_types_to_quantize=self.op_types,
            per_channel=bool(cfg.per_channel),
            activation_type=getattr(self.q.QuantType, act),
            weight_type=self.q.QuantType.QInt8,
            nodes_to_quantize=nodes,
            calibrate_method=getattr(self.q.CalibrationMethod, METHODS[cfg.method]),
            calibration_providers=["CPUExecutionProvider"],
            extra_options=self._extra(),
        )
        if self._cache_supported:
            kwargs["calibration_cache_path"] = str(self.cache)
        first = not self.cache.is_file()
        reader = WindowReader(self.calib.inputs, self._batch_size())
        started = time.perf_counter()
        # ORT's quantizer warns through the root logger about things we decided on purpose.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        chatter = io.StringIO()
        try:
            # The histogram calibrators print progress to stdout; it would corrupt --json output.
            with contextlib.redirect_stdout(chatter):
                self.q.quantize_static(str(self.prepared), str(out_path), reader, **kwargs)
        except Exception as exc:  # ORT raises ValueError/RuntimeError/its own
            raise CalibrationError(f"onnxruntime quantize_static failed: {exc}") from exc
        finally:
            root.setLevel(level)
            if chatter.getvalue().strip():
                log.debug("onnxruntime: %s", " | ".join(chatter.getvalue().split("\n")))
        if first:
            self.calibration_s = round(time.perf_counter() - started, 2)
        return Path(out_path)


def quantize_with_modelopt(src, out_path, calib: CalibrationSet, config: QuantConfig, exclude=()) -> Path:
    """The same Q/DQ graph made by NVIDIA ModelOpt's ONNX quantizer (TensorRT's rules for Q/DQ
    placement), when ``modelopt`` is installed.

    Raises:
        MissingDependencyError: ``modelopt`` does not import (pip install nvidia-modelopt[onnx]).
        ConfigError: ``method="percentile"`` (ModelOpt offers max and entropy only).
        CalibrationError: ModelOpt failed.
    """
    try:
        from modelopt.onnx.quantization import quantize as mo_quantize
    except ImportError as exc:
        raise MissingDependencyError(
            f"the modelopt quantizer needs NVIDIA ModelOpt: pip install 'nvidia-modelopt[onnx]' ({exc})") from exc
    if config.method == "percentile":
        raise ConfigError("ModelOpt calibrates by 'max' (minmax) or 'entropy' only")
    try:
        mo_quantize(onnx_path=str(src), quantize_mode="int8", calibration_data=dict(calib.inputs),
                    calibration_method="max" if config.method == "minmax" else "entropy",
                    calibration_eps=["cpu"], op_types_to_quantize=list(config.op_types),
                    nodes_to_exclude=list(exclude) or None, output_path=str(out_path))
    except Exception as exc:  # ModelOpt's own failures
        raise CalibrationError(f"ModelOpt quantization failed: {exc}") from exc
    return Path(out_path)


def modelopt_status() -> tuple[bool, str]:
    """(importable, reason): whether the optional ModelOpt path can run here."""
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError as exc:
        return False, f"nvidia-modelopt not importable ({exc})"
    return True, "nvidia-modelopt importable"


def pays(info: NodeInfo, config: QuantConfig) -> bool:
    """Whether INT8 can speed this operator up on ONNX Runtime's CPU kernels (the cost rule).

    A weight-bearing MatMul / Gemm / Conv with at least ``config.min_macs`` multiply-accumulates
    per window (unknown counts pass), except 3-D convolutions: ONNX Runtime's INT8 Conv3d was
    measured slower than its FP32 one here (docs/QUANTIZATION.md), and the quantized input of a
    video tubelet embedding is the largest activation of the model; and except operators whose
    GEMM has a side below ``config.min_side`` (:attr:`NodeInfo.min_side`): bottleneck adapters
    (192 -> 16 -> 192, measured no faster) and convolutions over a few input channels, such as
    an image stem's first 3x3 over RGB (reduction 27): ONNX Runtime's QLinearConv ran it at 2.4x
    the time of its FP32 NCHWc kernel here (215 vs 90 us a window, docs/PERFORMANCE.md).
    """
    if not info.weighted or info.op_type not in config.op_types:
        return False
    if info.op_type == "Conv" and info.spatial_dims >= 3:
        return False
    if info.min_side is not None and info.min_side < int(config.min_side):
        return False
    return info.macs is None or info.macs >= int(config.min_macs)


def shapes_from_quantized(model) -> int:
    """Let ``Shape`` read a DequantizeLinear's quantized input instead of its float output.

    The exporter's dynamic reshapes read the shape of activations that are now quantized, and
    ONNX Runtime gives each reader of a DequantizeLinear its own copy, so a whole tensor was
    dequantized only to have its shape taken (the conv stem's output three times a window:
    ~0.1 ms of 2.6 at batch 1, measured). DequantizeLinear keeps the shape, so the rewrite is
    exact; DequantizeLinear nodes left without readers are removed.

    Returns:
        How many Shape nodes were rewired.
    """
    graph = model.graph
    dq_input = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    rewired = 0
    for node in graph.node:
        if node.op_type == "Shape" and node.input[0] in dq_input:
            node.input[0] = dq_input[node.input[0]]
            rewired += 1
    read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    keep = [n for n in graph.node if n.op_type != "DequantizeLinear" or n.output[0] in read]
    if len(keep) < len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)
    return rewired


def finalize_graph(path) -> Path:
    """Drop the intermediate shape annotations the pre-processing added, so that ONNX Runtime
    optimises the INT8 graph from the same information as the exported FP32 one (with them it
    chose slower kernels here: 6 % on the FP32 graph, measured), take shapes from quantized
    tensors (:func:`shapes_from_quantized`), and check the result.

    Raises:
        CalibrationError: the graph fails onnx.checker.
    """
    onnx = require("onnx", "core", "quantizing a graph")
    model = onnx.load(str(path))
    del model.graph.value_info[:]
    shapes_from_quantized(model)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx's ValidationError
        raise CalibrationError(f"the INT8 graph fails onnx.checker: {exc}") from exc
    onnx.save(model, str(path))
    return Path(path)


# -- the sweep ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    """Drift caused by quantizing one node or one group alone, on the sweep windows.

    Attributes:
        group: ``node:<name>`` or ``group:<what>``.
        nodes: the node names quantized.
        candidate: whether the group is a candidate of the final graph (a single candidate node).
        max_abs_diff, mean_abs_diff: of the probabilities vs FP32, over heads.
        flips: decisions changed, summed over heads.
        agreement: lowest per-head decision agreement.
        expected_disagreement: highest per-head :func:`calibrate.gate.expected_disagreement`.
    """

    group: str
    nodes: tuple
    candidate: bool
    max_abs_diff: float
    mean_abs_diff: float
    flips: int
    agreement: float
    expected_disagreement: float = 0.0

    def sensitive(self, tolerance: float, budget: float) -> bool:
        """Whether this probe alone moves a probability by more than ``tolerance`` or is
        expected to flip more than ``budget`` of the decisions."""
        return not self.max_abs_diff <= tolerance or not self.expected_disagreement <= budget

    def to_dict(self) -> dict:
        d = asdict(self)
        d["nodes"] = len(self.nodes) if len(self.nodes) > 1 else list(self.nodes)
        return d


def _drift(ref: dict, got: dict, group: str, nodes, candidate: bool) -> Probe:
    report = compare_probabilities(ref, got, None, 1.0)
    return Probe(group, tuple(nodes), candidate, report.max_abs_diff, report.mean_abs_diff,
                 sum(h.flips for h in report.heads), report.min_agreement,
                 max(h.expected_disagreement for h in report.heads))


def sweep_groups(infos, candidates) -> dict:
    """Probe groups: every candidate alone, then the usual suspects as groups.

    Returns:
        group label -> list of node names (empty groups left out).
    """
    groups = {f"node:{c.name}": [c.name] for c in candidates}
    suspects = {
        "group:LayerNormalization": [i.name for i in infos if i.op_type == "LayerNormalization"],
        "group:Softmax": [i.name for i in infos if i.op_type == "Softmax"],
        "group:attention-matmul": [i.name for i in infos if i.op_type == "MatMul" and not i.weighted],
        # the heads are probed even when too small to be candidates: the report says whether
        # quantizing them would cost accuracy, not only that it would not pay
        "group:heads": [i.name for i in infos if i.head and i.weighted],
    }
    groups.update({k: v for k, v in suspects.items() if v})
    return groups


# -- the whole run --------------------------------------------------------------------------------

@dataclass
class QuantResult:
    """What :func:`quantize_bundle` did.

    Attributes:
        passed: the gate passed (and, if ``install``, the graph was installed).
        gate: the :class:`~calibrate.gate.GateReport` on the gate windows (None if nothing
            could be quantized).
        record: the manifest ``quantization`` section (written only when installed).
        int8_path: the installed graph, or where the rejected one was left (None if none).
        quantized, kept_float, not_paying: node lists.
        probes: the sweep's :class:`Probe` results (empty without a sweep).
        suggestions: nodes to keep in float next time (most sensitive first) when the gate failed.
    """

    passed: bool
    gate: GateReport | None
    record: dict
    int8_path: Path | None
    quantized: list = field(default_factory=list)
    kept_float: list = field(default_factory=list)
    not_paying: list = field(default_factory=list)
    probes: list = field(default_factory=list)
    suggestions: list = field(default_factory=list)

    def text(self) -> str:
        """A readable summary (sweep, choice, gate)."""
        lines = []
        if self.probes:
            lines.append(f"sensitivity sweep ({len(self.probes)} probes, drift vs FP32 on the sweep windows):")
            lines.append(f"  {'probe':<60} {'max|dp|':>8} {'mean|dp|':>9} {'flips':>6} {'E[flip]':>8}")
            ranked = sorted(self.probes, key=_severity, reverse=True)
            for p in ranked[:15]:
                label = p.group if len(p.group) <= 60 else "..." + p.group[-57:]
                lines.append(f"  {label:<60} {p.max_abs_diff:>8.4f} {p.mean_abs_diff:>9.5f} {p.flips:>6d} "
                             f"{p.expected_disagreement:>8.2%}")
            if len(ranked) > 15:
                lines.append(f"  ... {len(ranked) - 15} more (least sensitive) in manifest.json")
        lines.append(f"quantized {len(self.quantized)} nodes; kept in float for accuracy: "
                     f"{len(self.kept_float)}; not worth quantizing (cost): {len(self.not_paying)}")
        for name in self.kept_float:
            lines.append(f"  float: {name}")
        if self.gate is not None:
            lines.append(self.gate.text().rstrip("\n"))
        if not self.passed and self.suggestions:
            lines.append("keep these layers in float and re-run (--keep-float):")
            for name in self.suggestions:
                lines.append(f"  {name}")
        return "\n".join(lines) + "\n"


def _severity(p: Probe) -> tuple:
    """Sort key, most damaging probe last: expected disagreement, then mean drift, then flips."""
    return (p.expected_disagreement, p.mean_abs_diff, p.flips)


def _cost_per_gain(p: Probe, macs: int | None) -> tuple:
    """Combination order: the node whose accuracy cost (expected disagreement alone) is largest
    for the speed it brings (its multiply-accumulates) goes back to float first."""
    return (p.expected_disagreement / max(int(macs or 1), 1), p.mean_abs_diff / max(int(macs or 1), 1))


def _suggest(probes: list, quantized: list, tolerance: float, budget: float, k: int = 3) -> list:
    """Quantized nodes to keep in float: every one that is sensitive alone, most sensitive
    first; if none is (the damage comes from their combination), the ``k`` worst."""
    by_name = {p.nodes[0]: p for p in probes if len(p.nodes) == 1}
    ranked = sorted(quantized, key=lambda n: _severity(by_name[n]) if n in by_name else (0.0, 0.0, 0),
                    reverse=True)
    sensitive = [n for n in ranked if n in by_name and by_name[n].sensitive(tolerance, budget)]
    return sensitive or ranked[:k]


def choose_nodes(quantizer: OrtQuantizer, infos, config: QuantConfig, sweep_set: CalibrationSet,
                 fp32_sweep: dict, workdir: Path) -> tuple[list, list, list, list]:
    """Candidates, sweep and combination (steps 1-3 of the module docstring).

    Returns:
        (quantized nodes, kept-in-float nodes, not-paying nodes, probes).
    """
    user_float = set(config.keep_float)
    weighted = [i for i in infos if i.weighted and i.op_type in config.op_types]
    unknown_user = sorted(user_float - {i.name for i in infos})
    if unknown_user:
        raise ConfigError(f"--keep-float names nodes the graph does not have: {unknown_user}")
    not_paying = [i.name for i in weighted if not pays(i, config)]
    candidates = [i for i in weighted if i.name not in not_paying and i.name not in user_float]
    if not candidates:
        raise CalibrationError(f"no candidate node: no {'/'.join(config.op_types)} with a constant weight "
                               f"and >= {config.min_macs} MACs per window outside --keep-float")
    names = [c.name for c in candidates]
    probes: list[Probe] = []
    kept = sorted(user_float)
    if config.sweep and sweep_set is not None and len(sweep_set):
        for label, nodes in sweep_groups(infos, candidates).items():
            path = quantizer.quantize(nodes, workdir / "probe.onnx")
            got = run_graph(path, sweep_set.inputs)
            probes.append(_drift(fp32_sweep, got, label, nodes, label.startswith("node:")))
            log.debug("probe %s: max %.4f flips %d expected %.4f", label, probes[-1].max_abs_diff,
                      probes[-1].flips, probes[-1].expected_disagreement)
        budget = config.disagreement_budget()
        sensitive = {p.nodes[0] for p in probes if p.candidate and p.sensitive(config.node_tolerance, budget)}
        kept += [n for n in names if n in sensitive]
        names = [n for n in names if n not in sensitive]
        by_name = {p.nodes[0]: p for p in probes if p.candidate}
        macs = {i.name: i.macs for i in candidates}
        # Step 3: back to float, most sensitive first, until the combination agrees.
        while names:
            path = quantizer.quantize(names, workdir / "combined.onnx")
            got = run_graph(path, sweep_set.inputs)
            report = compare_probabilities(fp32_sweep, got, None, 1.0)
            agreement = report.min_agreement
            expected = max(h.expected_disagreement for h in report.heads)
            if agreement >= config.min_agreement and expected <= budget:
                break
            worst = max(names, key=lambda n: _cost_per_gain(by_name[n], macs.get(n)))
            log.info("sweep windows agree %.2f%% (expected disagreement %.2f%%, budget %.2f%%): %s back to float",
                     100 * agreement, 100 * expected, 100 * budget, worst)
            names.remove(worst)
            kept.append(worst)
        if not names:
            raise CalibrationError("every candidate had to stay in float to keep the sweep windows' "
                                   f"agreement >= {config.min_agreement:.2%}; INT8 gains nothing here")
    return names, kept, not_paying, probes


def quantize_bundle(bundle, calib: CalibrationSet, holdout: CalibrationSet, config: QuantConfig | None = None,
                    *, install: bool = True) -> QuantResult:
    """Quantize a bundle's model to INT8, gate it and (if it passes) install it.

    Args:
        bundle: an :class:`edge.bundle.Bundle` (or folder); its ``model.onnx`` is the source.
        calib: calibration windows (ranges).
        holdout: held-out windows with ``part`` (sweep / gate).
        config: settings (default :class:`QuantConfig`).
        install: write ``model.int8.onnx`` and the manifest when the gate passes. Without it
            nothing in the bundle changes and the graph is left in a temporary folder
            (``result.int8_path``) that the caller removes.

    Returns:
        The :class:`QuantResult`. A failed gate is a result (``passed`` False, suggestions),
        not an exception: the caller decides the exit code. A rejected graph is left as
        ``model.int8.rejected.onnx`` in the bundle folder for inspection, never listed.

    Raises:
        ConfigError: bad settings or windows that do not fit the bundle.
        CalibrationError: nothing could be quantized, or the quantizer failed.
        MissingDependencyError: ``quantizer="modelopt"`` without ModelOpt.
    """
    config = (config or QuantConfig()).validate()
    bundle = bundle if hasattr(bundle, "manifest") else load_bundle(bundle)
    onnx = require("onnx", "core", "quantizing a graph")
    calib.check_bundle(bundle)
    holdout.check_bundle(bundle)
    if holdout.part is None or not np.any(holdout.part == PART_GATE):
        raise ConfigError("the held-out windows have no gate part; rebuild the calibration set with --holdout >= 2")
    sweep_set = holdout.select_part(PART_SWEEP) if np.any(holdout.part == PART_SWEEP) else None
    gate_set = holdout.select_part(PART_GATE)
    src = bundle.model_path
    work = Path(tempfile.mkdtemp(prefix="emofuse-quant-"))
    try:
        prepared = prepare_model(src, work / "prepared.onnx")
        infos = analyse_graph(onnx.load(str(prepared)))
        fp32_sweep = run_graph(src, sweep_set.inputs) if sweep_set is not None else None
        fp32_gate = run_graph(src, gate_set.inputs)
        op_types = list(config.op_types) + [t for t in SUSPECT_OP_TYPES if config.sweep]
        started = time.perf_counter()
        if config.quantizer == "ort":
            quantizer = OrtQuantizer(prepared, calib, config, work, op_types)
            quantized, kept, not_paying, probes = choose_nodes(quantizer, infos, config, sweep_set, fp32_sweep, work)
            candidate_path = quantizer.quantize(quantized, work / INT8_FILE)
            calibration_s = quantizer.calibration_s
        else:
            user = set(config.keep_float)
            weighted = [i for i in infos if i.weighted and i.op_type in config.op_types]
            not_paying = [i.name for i in weighted if not pays(i, config)]
            quantized = [i.name for i in weighted if i.name not in not_paying and i.name not in user]
            kept, probes = sorted(user), []
            exclude = [i.name for i in infos if i.name not in quantized]
            candidate_path = quantize_with_modelopt(prepared, work / INT8_FILE, calib, config, exclude)
            calibration_s = None
        finalize_graph(candidate_path)
        elapsed = round(time.perf_counter() - started, 2)
        gate = compare_probabilities(fp32_gate, run_graph(candidate_path, gate_set.inputs), gate_set.labels,
                                     config.min_agreement)
        record = _record(bundle, config, calib, holdout, quantized, kept, not_paying, probes, gate,
                         sweep_set, calibration_s, elapsed)
        result = QuantResult(gate.passed, gate, record, None, quantized, kept, not_paying, probes)
        if not gate.passed:
            if not probes and config.quantizer == "ort":
                # No sweep was run: probe the quantized nodes now, so the advice is measured.
                ranking_set = sweep_set if sweep_set is not None else gate_set
                ranking_ref = fp32_sweep if sweep_set is not None else fp32_gate
                probes = [_drift(ranking_ref, run_graph(quantizer.quantize([n], work / "probe.onnx"),
                                                        ranking_set.inputs), f"node:{n}", [n], True)
                          for n in quantized]
                result.probes = probes
                result.record["sweep"]["probes"] = [p.to_dict() for p in probes]
            result.suggestions = _suggest(probes, quantized, config.node_tolerance,
                                          config.disagreement_budget())
            if install:
                rejected = bundle.root / "model.int8.rejected.onnx"
                shutil.copyfile(candidate_path, rejected)
                result.int8_path = rejected
            else:
                result.int8_path = candidate_path
            return result
        if install:
            result.int8_path = install_int8(bundle.root, candidate_path, record)
        else:
            result.int8_path = candidate_path
        return result
    finally:
        if install or not (work / INT8_FILE).is_file():
            shutil.rmtree(work, ignore_errors=True)


def _record(bundle, config, calib, holdout, quantized, kept, not_paying, probes, gate, sweep_set,
            calibration_s, elapsed) -> dict:
    ort = require("onnxruntime", "core", "INT8 quantization")
    root = bundle.root
    calib_file = root / CALIBRATION_FILE
    hold_file = root / HOLDOUT_FILE
    budget = config.disagreement_budget()
    sensitive_groups = [p.group for p in probes if not p.candidate and p.sensitive(config.node_tolerance, budget)]
    summary = (f"{len(probes)} probes on {len(sweep_set) if sweep_set is not None else 0} sweep windows; "
               f"{sum(1 for p in probes if p.candidate and p.sensitive(config.node_tolerance, budget))} candidate "
               f"nodes sensitive alone (tolerance {config.node_tolerance}, expected disagreement budget "
               f"{budget:.2%}); sensitive groups: "
               f"{', '.join(g.split(':', 1)[1] for g in sensitive_groups) or 'none'}")
    return {
        "format": "onnx-qdq",
        "file": INT8_FILE,
        "source_file": bundle.model_path.name,
        "source_sha256": bundle.manifest.role_file("model").sha256,
        "quantizer": ("onnxruntime.quantization.quantize_static" if config.quantizer == "ort"
                      else "modelopt.onnx.quantization.quantize"),
        "onnxruntime": ort.__version__,
        "settings": config.record(),
        "quantized_nodes": list(quantized),
        "kept_float": {"accuracy": list(kept), "cost": list(not_paying)},
        "sweep": {
            "summary": summary,
            "n_windows": len(sweep_set) if sweep_set is not None else 0,
            "probes": [p.to_dict() for p in sorted(probes, key=_severity, reverse=True)],
        },
        "gate": gate.to_dict(),
        "calibration": {
            "file": CALIBRATION_FILE,
            "sha256": file_sha256(calib_file) if calib_file.is_file() else None,
            "n_windows": len(calib),
            "source": calib.meta.get("source"),
            "holdout_file": HOLDOUT_FILE,
            "holdout_sha256": file_sha256(hold_file) if hold_file.is_file() else None,
            "n_holdout": len(holdout),
            "seconds": calibration_s,
        },
        "seconds": elapsed,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def install_int8(bundle_root, int8_path, record: dict) -> Path:
    """Copy a Q/DQ graph into a bundle as ``model.int8.onnx`` and record it in manifest.json.

    The manifest keeps every section it had (other tools' too); ``files`` gains (or updates)
    the INT8 entry with its SHA-256 and role ``model_int8``, and ``quantization`` is replaced by
    ``record``. The graph is renamed into place before the manifest: an interruption leaves a
    file the manifest does not vouch for (refused by the engines), never a stale vouched one.

    Returns:
        The installed path.

    Raises:
        BadInputError: unreadable manifest. ConfigError: the updated bundle does not validate.
    """
    root = Path(bundle_root)
    manifest_path = root / MANIFEST_NAME
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{manifest_path}: unreadable ({exc})") from exc
    target = root / INT8_FILE
    _write_atomic(target, Path(int8_path).read_bytes())
    raw.setdefault("files", {})[INT8_FILE] = {"sha256": sha256_file(target), "role": INT8_ROLE}
    raw[MANIFEST_SECTION] = record
    _write_atomic(manifest_path, (json.dumps(raw, indent=2, allow_nan=False) + "\n").encode("utf-8"))
    rejected = root / "model.int8.rejected.onnx"
    if rejected.is_file():
        rejected.unlink()
    load_bundle(root)
    return target
