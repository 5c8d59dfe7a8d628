"""Latency and throughput of a bundle per backend, precision and batch (``emofuse bench BUNDLE``).

Like ``trtexec`` for our bundles: each case (backend x precision x batch) is one engine from
:func:`edge.engine.open_engine`, activated, warmed up, then timed through
:meth:`~edge.engine.base.Engine.run` - the call an application makes, so input validation and
(on a GPU) host-device copies are included. Cases are timed in interleaved rounds (a block of
runs of each case in turn, repeated) so that a slow minute on a shared machine weighs on every
case alike rather than on whichever ran then. Inputs are real windows from the bundle's
``calibration_holdout.npz`` or ``calibration.npz`` when ``emofuse calibrate`` left them, else
the engine's dummy inputs (the table says which).

Reported per case: p50 and p99 latency per run, mean, throughput (windows/s) and, for other
precisions, the p50 speed-up over FP32 at the same backend and batch. The figures go in
docs/QUANTIZATION.md; nothing here is asserted by tests.
"""
from __future__ import annotations

import json
import logging
import platform
import time
from pathlib import Path

import numpy as np

from bench import host
from edge.engine import open_engine
from edge.engine.base import graph_file, load
from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger("emofuse.bench")

DATA_FILES = ("calibration_holdout.npz", "calibration.npz")
DEFAULT_BATCHES = (1, 8)


def _real_windows(bundle) -> tuple[dict | None, str]:
    """Model inputs of real windows saved beside the bundle, or None."""
    names = [s.name for s in bundle.inputs]
    for fname in DATA_FILES:
        path = Path(bundle.root) / fname
        if not path.is_file():
            continue
        try:
            with np.load(path, allow_pickle=False) as npz:
                if all(n in npz.files for n in names):
                    arrays = {n: npz[n] for n in names}
                    if len(next(iter(arrays.values()))):
                        return arrays, f"real windows from {fname}"
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s); using dummy inputs", path, exc)
    return None, "dummy inputs (no calibration windows beside the bundle)"


def batch_of(windows: dict, batch: int, offset: int = 0) -> dict:
    """``batch`` windows from ``windows`` (cycling when there are fewer), as contiguous arrays."""
    n = len(next(iter(windows.values())))
    idx = (np.arange(batch) + offset) % n
    return {k: np.ascontiguousarray(v[idx]) for k, v in windows.items()}


def available_precisions(bundle) -> list[str]:
    """``fp32``, plus ``int8`` when the bundle lists an INT8 graph."""
    out = ["fp32"]
    try:
        graph_file(bundle, "model", "int8")
        out.append("int8")
    except ConfigError:
        pass
    return out


def bench_bundle(bundle, backends=("onnxruntime",), precisions=None, batches=DEFAULT_BATCHES,
                 threads: int | None = 1, warmup: int = 50, runs: int = 300, rounds: int = 10) -> dict:
    """Benchmark a bundle.

    Args:
        bundle: an :class:`edge.bundle.Bundle` or a bundle folder.
        backends: backend names for :func:`edge.engine.open_engine` (``"onnxruntime"``,
            ``"tensorrt"``, ``"auto"``).
        precisions: precisions to run (default: fp32, and int8 when the bundle has it).
        batches: batch sizes (windows per run), each >= 1.
        threads: ONNX Runtime intra-op threads (None: its default).
        warmup: untimed runs per case before timing.
        runs: timed runs per case at batch 1; larger batches get proportionally fewer (at
            least 20), so each case processes about the same number of windows.
        rounds: interleaved rounds the timed runs are spread over.

    Returns:
        ``{"host", "inputs", "rows": [...], "notes": [...]}``; a row has backend, precision,
        batch, runs, p50_ms, p99_ms, mean_ms, windows_per_s (windows over the time spent in
        ``Engine.run``), windows (timed windows: runs x batch), timed_s (wall time of the timed
        runs as this function clocked them, loop included), speedup_p50 (vs fp32, same backend
        and batch; None for fp32 or when fp32 was not run), graph and providers.

    Raises:
        ConfigError: bad counts, an unknown backend or precision, or a precision the bundle
            lacks (int8 before calibration). MissingDependencyError: a backend not installed.
    """
    bundle = load(bundle)
    batches = [int(b) for b in batches]
    if not batches or min(batches) < 1:
        raise ConfigError(f"batch sizes must be >= 1, got {batches}")
    if warmup < 0 or runs < 1 or rounds < 1:
        raise ConfigError("warmup must be >= 0, runs and rounds >= 1")
    precisions = list(precisions) if precisions else available_precisions(bundle)
    windows, inputs_note = _real_windows(bundle)
    engines = []
    notes = []
    try:
        for backend in backends:
            for precision in precisions:
                for batch in batches:
                    options = {} if threads is None else {"intra_op_threads": int(threads)}
                    engine = open_engine(bundle, backend, precision, max_batch=max(batches), **options)
                    engine.activate()
                    feeds = batch_of(windows, batch) if windows is not None else engine.dummy_inputs(batch)
                    total = max(20, int(round(runs / batch)))
                    engines.append({"engine": engine, "backend": backend, "precision": precision,
                                    "batch": batch, "feeds": feeds, "total": total, "timed_s": 0.0})
        for case in engines:
            eng = case["engine"]
            for _ in range(warmup):
                eng.run(case["feeds"])
            eng.reset_latency()
        for r in range(rounds):
            for case in engines:
                per_round = case["total"] // rounds + (1 if r < case["total"] % rounds else 0)
                t0 = time.perf_counter()
                for _ in range(per_round):
                    case["engine"].run(case["feeds"])
                case["timed_s"] += time.perf_counter() - t0
        rows = []
        for case in engines:
            eng = case["engine"]
            stats = eng.latency()
            meta = eng.metadata
            for note in meta.get("notes", []):
                notes.append(f"{case['backend']}/{case['precision']}/b{case['batch']}: {note}")
            rows.append({
                "backend": meta.get("backend", case["backend"]), "backend_requested": case["backend"],
                "precision": meta.get("precision", case["precision"]), "batch": case["batch"],
                "runs": stats.count, "p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms, "mean_ms": stats.mean_ms,
                "windows_per_s": stats.items_per_s, "windows": case["total"] * case["batch"],
                "timed_s": case["timed_s"], "graph": meta.get("graph"),
                "providers": meta.get("providers"), "threads": threads,
            })
    finally:
        for case in engines:
            case["engine"].deactivate()
    for row in rows:
        ref = next((r for r in rows if r["backend"] == row["backend"] and r["batch"] == row["batch"]
                    and r["precision"] == "fp32"), None)
        row["speedup_p50"] = (None if ref is None or row["precision"] == "fp32"
                              else ref["p50_ms"] / row["p50_ms"])
    return {"host": host_description(), "inputs": inputs_note, "rows": rows, "notes": notes,
            "bundle": str(bundle.root), "model": bundle.manifest.model_name}


def host_description() -> str:
    """The signal benchmarks' host line plus the ONNX Runtime version and CPU flags that
    decide its INT8 kernels (VNNI / AMX)."""
    extra = []
    try:
        import onnxruntime

        extra.append(f"onnxruntime {onnxruntime.__version__}")
    except ImportError:
        extra.append("onnxruntime not installed")
    try:
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        int8 = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
        if flags:
            extra.append("int8 dot-product instructions: " + (", ".join(int8) if int8 else "none"))
    except OSError:
        pass
    extra.append(platform.machine())
    return host.host_description() + "; " + "; ".join(extra)


def format_bundle_table(result: dict) -> str:
    """The benchmark as a text table (what ``emofuse bench BUNDLE`` prints)."""
    lines = [f"bundle: {result['bundle']} (model {result['model']})", f"host: {result['host']}",
             f"inputs: {result['inputs']}", "",
             f"{'backend':<12} {'precision':<9} {'batch':>5} {'runs':>6} {'p50 ms':>9} {'p99 ms':>9} "
             f"{'mean ms':>9} {'windows/s':>10} {'vs fp32':>8}"]
    for r in result["rows"]:
        speed = "" if r["speedup_p50"] is None else f"{r['speedup_p50']:.2f}x"
        lines.append(f"{r['backend']:<12} {r['precision']:<9} {r['batch']:>5d} {r['runs']:>6d} "
                     f"{r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} {r['mean_ms']:>9.3f} "
                     f"{r['windows_per_s']:>10.1f} {speed:>8}")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def format_json_lines(result: dict) -> str:
    """One JSON object per row, each carrying the host and input description."""
    return "".join(json.dumps(dict(r, host=result["host"], inputs=result["inputs"])) + "\n"
                   for r in result["rows"])


def check_batches(values) -> list[int]:
    """Validate ``--batch`` values.

    Raises:
        BadInputError: a value that is not a positive integer.
    """
    out = []
    for v in values:
        if isinstance(v, bool) or int(v) != v or int(v) < 1:
            raise BadInputError(f"batch sizes must be positive integers, got {v!r}")
        out.append(int(v))
    return out
