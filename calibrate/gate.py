"""Accuracy gate: the INT8 graph against the FP32 graph on held-out windows.

Quantization is accepted on evidence, not on faith. :func:`compare_probabilities` takes the two
graphs' output probabilities on the same windows (never used to choose calibration ranges or
float-kept nodes) and reports, per head (``valence``, ``arousal``):

- decision agreement: the fraction of windows whose arg-max class is the same;
- mean and max absolute difference of the probabilities;
- expected disagreement (:func:`expected_disagreement`): the flip rate the observed drift
  predicts for windows with the observed spread of decision margins - a smooth estimate of what
  the agreement measures by counting, reported beside it and used by the sensitivity sweep;
- accuracy and macro-F1 of each graph against the labels (when the windows are labelled) and
  their change, INT8 minus FP32.

The gate passes when every head's agreement is at least the threshold (default 0.99, the
issue's target). :func:`run_gate` runs both graphs with ONNX Runtime on the CPU and builds the
report; :meth:`GateReport.text` is what ``emofuse calibrate`` prints.

Agreement rather than accuracy is the criterion because it measures what quantization changed:
on a few hundred windows an accuracy difference of one or two percent is noise, while a
decision that flips is a change the deployed model makes and the validated one did not
(Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR, report the same paired comparison).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError, require

DEFAULT_MIN_AGREEMENT = 0.99
PROB_SUFFIX = "_prob"


def heads_of(outputs) -> list[str]:
    """Head names of a model's outputs: ``valence_prob`` -> ``valence`` (output order kept).

    Raises:
        ConfigError: no output name ends in ``_prob``.
    """
    heads = [name[: -len(PROB_SUFFIX)] for name in outputs if name.endswith(PROB_SUFFIX)]
    if not heads:
        raise ConfigError(f"no probability outputs (names ending in {PROB_SUFFIX!r}) in {list(outputs)}")
    return heads


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over ``n_classes`` classes (a class absent from both scores 0).

    Args:
        y_true, y_pred: int (N,) class indices.
        n_classes: number of classes.
    Returns:
        float in [0, 1]; NaN for N = 0.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        return math.nan
    scores = []
    for c in range(n_classes):
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        fp = float(np.sum((y_pred == c) & (y_true != c)))
        fn = float(np.sum((y_pred != c) & (y_true == c)))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom > 0 else 0.0)
    return float(np.mean(scores))


@dataclass(frozen=True)
class HeadReport:
    """FP32 vs INT8 on one head.

    Attributes:
        head: ``"valence"`` or ``"arousal"``.
        agreement: fraction of windows with the same arg-max class, in [0, 1].
        flips: windows whose decision differs.
        mean_abs_diff, max_abs_diff: of the class probabilities, over windows and classes.
        expected_disagreement: :func:`expected_disagreement` of this head, in [0, 1].
        accuracy_fp32, accuracy_int8, f1_fp32, f1_int8: against the labels (None unlabelled).
    """

    head: str
    agreement: float
    flips: int
    mean_abs_diff: float
    max_abs_diff: float
    expected_disagreement: float = 0.0
    accuracy_fp32: float | None = None
    accuracy_int8: float | None = None
    f1_fp32: float | None = None
    f1_int8: float | None = None

    @property
    def accuracy_change(self) -> float | None:
        if self.accuracy_fp32 is None:
            return None
        return self.accuracy_int8 - self.accuracy_fp32

    @property
    def f1_change(self) -> float | None:
        if self.f1_fp32 is None:
            return None
        return self.f1_int8 - self.f1_fp32

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("head", "agreement", "flips", "mean_abs_diff", "max_abs_diff",
                                           "expected_disagreement", "accuracy_fp32", "accuracy_int8", "f1_fp32", "f1_int8")}
        d["accuracy_change"] = self.accuracy_change
        d["f1_change"] = self.f1_change
        return d


@dataclass(frozen=True)
class GateReport:
    """The accuracy gate's verdict.

    Attributes:
        n_windows: held-out windows compared.
        threshold: the minimum agreement every head must reach.
        heads: per-head :class:`HeadReport`, in output order.
        passed: every head's agreement >= threshold (and all outputs finite).
        labelled: whether accuracy and F1 could be computed.
        notes: anything the reader must know (non-finite outputs, missing labels...).
    """

    n_windows: int
    threshold: float
    heads: tuple
    passed: bool
    labelled: bool
    notes: tuple = field(default_factory=tuple)

    @property
    def min_agreement(self) -> float:
        return min(h.agreement for h in self.heads)

    @property
    def max_abs_diff(self) -> float:
        return max(h.max_abs_diff for h in self.heads)

    @property
    def mean_abs_diff(self) -> float:
        return float(np.mean([h.mean_abs_diff for h in self.heads]))

    def head(self, name: str) -> HeadReport:
        for h in self.heads:
            if h.head == name:
                return h
        raise ConfigError(f"no head {name!r} in the report; heads: {[h.head for h in self.heads]}")

    def to_dict(self) -> dict:
        """JSON-ready dict (what the manifest records under ``quantization.gate``)."""
        return {
            "n_windows": self.n_windows, "threshold": self.threshold, "passed": self.passed,
            "labelled": self.labelled, "min_agreement": self.min_agreement,
            "mean_abs_diff": self.mean_abs_diff, "max_abs_diff": self.max_abs_diff,
            "heads": {h.head: h.to_dict() for h in self.heads}, "notes": list(self.notes),
        }

    def text(self) -> str:
        """A readable multi-line report."""
        lines = [f"INT8 vs FP32 on {self.n_windows} held-out windows "
                 f"(gate: agreement >= {self.threshold:.2%} on every head)"]
        head_row = f"  {'head':<9} {'agree':>8} {'flips':>6} {'E[flip]':>8} {'mean|dp|':>9} {'max|dp|':>8}"
        if self.labelled:
            head_row += f" {'acc fp32':>9} {'acc int8':>9} {'d acc':>7} {'F1 fp32':>8} {'F1 int8':>8} {'d F1':>7}"
        lines.append(head_row)
        for h in self.heads:
            row = (f"  {h.head:<9} {h.agreement:>8.2%} {h.flips:>6d} {h.expected_disagreement:>8.2%} "
                   f"{h.mean_abs_diff:>9.4f} {h.max_abs_diff:>8.4f}")
            if self.labelled:
                row += (f" {h.accuracy_fp32:>9.3f} {h.accuracy_int8:>9.3f} {h.accuracy_change:>+7.3f}"
                        f" {h.f1_fp32:>8.3f} {h.f1_int8:>8.3f} {h.f1_change:>+7.3f}")
            lines.append(row)
        for note in self.notes:
            lines.append(f"  note: {note}")
        lines.append(f"  gate {'PASSED' if self.passed else 'FAILED'} "
                     f"(lowest agreement {self.min_agreement:.2%}; E[flip]: the flip rate the drift predicts)")
        return "\n".join(lines) + "\n"


def expected_disagreement(fp32: np.ndarray, int8: np.ndarray) -> float:
    """The decision-flip rate that the observed drift predicts, as a smooth estimate.

    Measured in log-odds, where a network's output error hardly depends on how sure it is (in
    probabilities the same error is largest at 0.5): a window's margin is the log-ratio of its
    FP32 winner's probability to the runner-up's, and INT8 changes that log-ratio by some
    ``delta``. A window flips when its ``delta`` points toward the boundary and exceeds its
    margin. Counting flips on a hundred windows mostly counts the one or two that happen to sit
    closest to the boundary; pairing every observed ``|delta|`` with every observed margin, half
    of the pairs pointing each way, estimates the flip rate for windows drawn like these:
    ``0.5 * mean_i mean_j [|delta_i| > margin_j]``.

    Args:
        fp32, int8: (N, C) probabilities of the same windows.
    Returns:
        The estimate in [0, 0.5] (0 for identical outputs).
    """
    a = np.log(np.maximum(np.asarray(fp32, dtype=np.float64), 1e-30))
    b = np.log(np.maximum(np.asarray(int8, dtype=np.float64), 1e-30))
    rows = np.arange(a.shape[0])
    top = a.argmax(axis=1)
    runner = np.where(np.arange(a.shape[1]) == top[:, None], -np.inf, a).argmax(axis=1)
    margin = a[rows, top] - a[rows, runner]
    delta = np.sort(np.abs(margin - (b[rows, top] - b[rows, runner])))
    # For each margin, the share of drifts above it (sorted search: O(N log N)).
    above = delta.size - np.searchsorted(delta, margin, side="right")
    return float(0.5 * np.mean(above) / delta.size)


def compare_probabilities(fp32: dict, int8: dict, labels: dict | None = None,
                          threshold: float = DEFAULT_MIN_AGREEMENT) -> GateReport:
    """Compare two graphs' probabilities on the same windows.

    Args:
        fp32, int8: output name -> float (N, C) probabilities, e.g. ``valence_prob`` (N, 2).
            Both must hold the same ``*_prob`` outputs with the same shapes.
        labels: optional head -> int (N,) true class (``{"valence": valence_high, ...}``);
            heads missing from it get no accuracy.
        threshold: minimum decision agreement per head, in (0, 1].

    Returns:
        The :class:`GateReport`.

    Raises:
        ConfigError: threshold outside (0, 1]. BadInputError: outputs missing, of different
            shapes, empty, or labels of the wrong length.
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ConfigError(f"the agreement threshold must be in (0, 1], got {threshold}")
    heads = heads_of(fp32)
    notes = []
    reports = []
    n = None
    labelled = labels is not None and all(h in labels for h in heads)
    for head in heads:
        name = head + PROB_SUFFIX
        if name not in int8:
            raise BadInputError(f"the INT8 outputs lack {name!r}")
        a = np.asarray(fp32[name], dtype=np.float64)
        b = np.asarray(int8[name], dtype=np.float64)
        if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
            raise BadInputError(f"{name}: FP32 {a.shape} and INT8 {b.shape} must be the same non-empty (N, C)")
        n = a.shape[0]
        finite = bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)))
        if not finite:
            notes.append(f"{name} has non-finite values")
        diff = np.abs(a - b)
        da, db = a.argmax(axis=1), b.argmax(axis=1)
        flips = int(np.sum(da != db))
        kw = {}
        if labelled:
            y = np.asarray(labels[head], dtype=np.int64)
            if y.shape != (n,):
                raise BadInputError(f"labels[{head!r}] has shape {y.shape}, expected ({n},)")
            kw = {"accuracy_fp32": float(np.mean(da == y)), "accuracy_int8": float(np.mean(db == y)),
                  "f1_fp32": macro_f1(y, da, a.shape[1]), "f1_int8": macro_f1(y, db, a.shape[1])}
        reports.append(HeadReport(head, 1.0 - flips / n, flips,
                                  float(np.nanmean(diff)) if finite else math.inf,
                                  float(np.nanmax(diff)) if finite else math.inf,
                                  expected_disagreement(a, b) if finite else 1.0, **kw))
    if labels is not None and not labelled:
        notes.append("labels given for only some heads; accuracy not reported")
    if labels is None:
        notes.append("windows are unlabelled: accuracy and F1 not reported")
    passed = all(r.agreement >= threshold and math.isfinite(r.max_abs_diff) for r in reports)
    return GateReport(int(n), float(threshold), tuple(reports), passed, labelled, tuple(notes))


def ort_session(path, threads: int | None = None):
    """A CPU ONNX Runtime session with full graph optimisation (what the device runs).

    Args:
        path: the ONNX file.
        threads: intra-op threads (None: ONNX Runtime's default).

    Raises:
        BadInputError: ONNX Runtime cannot load the file.
    """
    ort = require("onnxruntime", "core", "running ONNX graphs")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"{path}: ONNX Runtime cannot load it ({first})") from exc


def run_graph(session_or_path, inputs: dict, batch_size: int = 16) -> dict:
    """Run a graph over N windows in batches and stack the outputs.

    Args:
        session_or_path: an ``onnxruntime.InferenceSession`` or an ONNX path.
        inputs: input name -> array (N, ...) with the graph's dtypes.
        batch_size: windows per run (default 16: ONNX Runtime's memory arena keeps the
            activations of the largest batch for the session's life).

    Returns:
        output name -> array (N, ...).

    Raises:
        BadInputError: missing inputs, unequal N, or an ONNX Runtime failure.
    """
    sess = session_or_path if hasattr(session_or_path, "run") else ort_session(session_or_path)
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise BadInputError(f"inputs {missing} missing; the graph takes {names}")
    sizes = {int(np.shape(inputs[n])[0]) for n in names}
    if len(sizes) != 1:
        raise BadInputError(f"inputs have different window counts {sorted(sizes)}")
    total = sizes.pop()
    out_names = [o.name for o in sess.get_outputs()]
    parts = {o: [] for o in out_names}
    for start in range(0, total, max(1, int(batch_size))):
        feeds = {n: np.ascontiguousarray(inputs[n][start:start + batch_size]) for n in names}
        try:
            values = sess.run(out_names, feeds)
        except Exception as exc:  # ORT's own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInputError(f"ONNX Runtime failed on windows {start}..: {first}") from exc
        for o, v in zip(out_names, values):
            parts[o].append(v)
    return {o: np.concatenate(v, axis=0) for o, v in parts.items()}


def run_gate(fp32_path, int8_path, inputs: dict, labels: dict | None = None,
             threshold: float = DEFAULT_MIN_AGREEMENT, fp32_outputs: dict | None = None) -> GateReport:
    """Run both graphs on held-out windows and compare them (:func:`compare_probabilities`).

    Args:
        fp32_path, int8_path: the exported graph and its Q/DQ graph.
        inputs: input name -> float32 array (N, ...) of held-out windows.
        labels: optional head -> int (N,) true class.
        threshold: minimum agreement per head.
        fp32_outputs: the FP32 outputs when already computed (skips running ``fp32_path``).

    Returns:
        The :class:`GateReport`.

    Raises:
        BadInputError: a graph cannot be loaded or run. ConfigError: bad threshold.
    """
    ref = fp32_outputs if fp32_outputs is not None else run_graph(Path(fp32_path), inputs)
    got = run_graph(Path(int8_path), inputs)
    return compare_probabilities(ref, got, labels, threshold)
