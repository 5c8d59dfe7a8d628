"""A Jetson Orin Nano estimate of the pipeline from per-stage FLOPs and bytes and this host's
measured times. An ESTIMATE, never a measurement; every figure it assumes is in
:data:`ORIN_NANO`, and the method is in docs/PERFORMANCE.md.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from firmware_bridge.errors import BadInputError

__all__ = ["ORIN_NANO", "onnx_flops", "orin_nano_estimate"]

#: What the Jetson Orin Nano estimate assumes. Public figures of the Orin Nano 8 GB module at
#: its 15 W mode (NVIDIA Jetson Orin Nano series data sheet, DS-11105; the 2024 "Super"
#: software raises CPU to 1.7 GHz, GPU to 1020 MHz, INT8 to 67 sparse TOPS, memory to 102 GB/s).
ORIN_NANO: dict[str, Any] = {
    "module": "Jetson Orin Nano 8GB, 15 W mode (JetPack 6)",
    "cpu": "6x Arm Cortex-A78AE",
    "cpu_cores": 6,
    "cpu_ghz": 1.5,
    # 2x 128-bit NEON FMA pipes: 8 FP32 FMA = 16 FLOP per cycle per core.
    "cpu_fp32_gflops_per_core": 24.0,
    # What one A78 core streams from LPDDR5 in practice (not the 68 GB/s of the whole bus).
    "cpu_gbs_per_core": 10.0,
    # Instructions per cycle of this host's core relative to an A78 on branchy, interpreted
    # and scalar code (Zen 4/5 vs A78 in SPECint-like loads): the scalar-speed ratio is
    # (host GHz x this) / A78 GHz.
    "host_ipc_over_a78": 1.3,
    "gpu": "1024-core Ampere GPU, 32 Tensor Cores, 625 MHz",
    "gpu_int8_tops_dense": 20.0,  # 40 TOPS with 2:4 sparsity, which our models do not use
    # A batch-1 network of this size reaches a few % of the Tensor Cores' peak; launches dominate.
    "gpu_int8_efficiency": 0.05,
    "gpu_kernel_us": 8.0,  # per kernel after TensorRT fusion (launch + tail), measured class on Orin
    "gpu_fused_fraction": 0.5,  # kernels left per computing ONNX node after TensorRT's layer fusion
    "gpu_sync_us": 150.0,  # per inference: copies in and out (unified memory) and the sync
    "mem_gbs": 68.0,  # 128-bit LPDDR5
    "video_decoder": "NVDEC (H.264/H.265 in hardware); no NVENC",
}



def onnx_flops(path: str | os.PathLike) -> dict[str, Any]:
    """Multiply-accumulate work and bytes of an ONNX graph at batch 1.

    The graph is run once by ONNX Runtime (CPU, optimisations off) on zeros, with every node
    output exposed, so every tensor's shape is the real one: ONNX's static shape inference
    loses the shapes behind the dynamic reshapes that exported attention blocks contain.
    Counts 2 FLOPs per multiply-accumulate of MatMul, Gemm and Conv and one per output element
    of other computing nodes (shape, reshape and Q/DQ nodes are not work); bytes are the
    initialisers (weights) plus every computed node output once.

    Args:
        path: the .onnx file (symbolic dimensions are set to 1).

    Returns:
        dict: ``flops``, ``macs``, ``weight_bytes``, ``activation_bytes``, ``nodes`` (computing
        nodes, i.e. without constants and shape plumbing).

    Raises:
        BadInputError: the file cannot be read or run.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises several kinds
        raise BadInputError(f"cannot read ONNX graph {path}: {exc}") from exc
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    exposed = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in exposed:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
                exposed.add(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                  "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
                  "tensor(bool)": np.bool_}
        feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtypes.get(i.type, np.float32))
                 for i in sess.get_inputs()}
        values = dict(zip((o.name for o in sess.get_outputs()), sess.run(None, feeds)))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own kinds
        raise BadInputError(f"cannot run ONNX graph {path} to measure it: {exc}") from exc
    shapes = {k: np.shape(v) for k, v in values.items()}
    shapes.update({k: v.shape for k, v in inits.items()})
    plumbing = {"QuantizeLinear", "DequantizeLinear", "Shape", "Constant", "Reshape", "Unsqueeze", "Squeeze",
                "Gather", "Concat", "Slice", "Identity", "Cast", "Flatten", "Transpose", "ConstantOfShape",
                "Range", "Expand", "Split"}
    macs = other = act = nodes = 0
    for node in model.graph.node:
        if node.op_type in plumbing or not node.output:
            continue
        nodes += 1
        out = values.get(node.output[0])
        n_out = int(np.size(out)) if out is not None else 0
        if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            a = shapes.get(node.input[0])
            macs += n_out * int(a[-1]) if a else 0
        elif node.op_type == "Gemm":
            a = shapes.get(node.input[0])
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            macs += n_out * int(a[0] if trans_a else a[-1]) if a else 0
        elif node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w = shapes.get(node.input[3] if node.op_type == "QLinearConv" else node.input[1])
            macs += n_out * int(np.prod(w[1:])) if w else 0
        else:
            other += n_out
        act += sum(int(getattr(values.get(o), "nbytes", 0)) for o in node.output)
    return {"macs": int(macs), "flops": int(2 * macs + other),
            "weight_bytes": int(sum(v.nbytes for v in inits.values())), "activation_bytes": int(act),
            "nodes": nodes}


def _stage_work(stage: str, frame_size: tuple[int, int], box_px: float, p: dict | None,
                n_ecg: int) -> tuple[float, float]:
    """(FLOPs, bytes) of one unit (a frame or a window) of a CPU stage, estimated from its
    algorithm; the figures behind each are in docs/PERFORMANCE.md."""
    w, h = frame_size
    fps = float(p["fps"]) if p else 30.0
    pulse_n = float(p["rppg"]["pulse_window_s"]) * fps if p else 300.0
    contact_n = float(p["contact"]["n_samples"]) if p else 1920.0
    if stage == "read":
        # NV12 out of the decoder, converted to BGR: read 1.5 B/px, write 3 B/px, ~6 ops/px.
        return 6.0 * w * h, 4.5 * w * h
    if stage == "track":
        # A Haar search on a ~72 px face region every 10 frames (plus resize), amortised:
        # ~25 features x 9 px sums per window position over ~1e4 positions and scales.
        return 25 * 9 * 1e4 / 10.0 + 2.0 * 160 * 160, 3.0 * 160 * 160 / 10.0
    if stage == "roi":
        # Skin test (colour conversion, thresholds) and sums over the face box.
        return 20.0 * box_px, 3.0 * box_px
    if stage == "crop":
        return 3.0 * box_px / 10.0 + 32 * 32 * 3 * 8, 3.0 * box_px / 10.0
    if stage == "assemble":
        return 10.0 * pulse_n, 24.0 * pulse_n
    if stage == "pulse":
        # POS over sliding 1.6 s windows, banded detrend solve, 4th-order zero-phase band-pass.
        return 48.0 * 15 * pulse_n, 8.0 * 20 * pulse_n
    if stage == "tfr":
        # 32 frames x 128-point FFT of a 4 s Hann frame, log power, resampled to 32x32.
        return 32 * (5 * 128 * 7 + 3 * 128), 8.0 * 32 * 128
    if stage == "contact":
        # Two streams resampled to the 32 Hz grid (anti-alias box) and z-scored.
        return 2 * 30.0 * contact_n, 2 * 24.0 * contact_n
    if stage == "physio":
        # Pan-Tompkins on the ECG window (filters, derivative, integration, thresholds) and
        # EDA decomposition on the contact window.
        return 60.0 * n_ecg + 200.0 * contact_n, 8.0 * 8 * n_ecg + 8.0 * 10 * contact_n
    return 0.0, 0.0


def orin_nano_estimate(stages: list[dict], host: dict, *, frame_size: tuple[int, int], box_px: float,
                       preprocessing: dict | None, hop_s: float, model: dict | None,
                       n_ecg: int = 15000, n_results: int | None = None, assume: dict | None = None) -> dict[str, Any]:
    """What the pipeline would need on a Jetson Orin Nano. An ESTIMATE, not a measurement.

    Method (every constant in :data:`ORIN_NANO`): each CPU stage's time on one Cortex-A78AE
    core is this host's measured time scaled by the scalar-speed ratio (clock x IPC), but never
    less than its roofline floor there (its FLOPs at the core's NEON peak, or its bytes at what
    one core streams); video decoding moves to NVDEC, leaving the NV12-to-BGR copy on the CPU;
    the model runs under TensorRT INT8 on the GPU, costed as the larger of its FLOPs at a few
    % of the Tensor Cores' peak and one short kernel per fused layer, plus the copies and sync.

    Args:
        stages: the stage table of :func:`bench.pipeline.bench_pipeline` (``stage``, ``per``, ``n``, ``mean_ms`` and,
            when measured, ``cpu_ms`` / ``cpu_ms_per_media_s``).
        host: :func:`host_facts`.
        frame_size: (width, height) px.
        box_px: face-box area, px.
        preprocessing: the bundle's preprocessing dict (None: the defaults).
        hop_s: seconds between results.
        model: :func:`onnx_flops` of the model graph, or None without a model.
        n_ecg: ECG samples in a contact window.
        n_results: results in the measured run (the model ran on ``n`` of them); None: every hop.
        assume: overrides of :data:`ORIN_NANO`.

    Returns:
        dict: ``assumptions``, ``scalar_ratio``, per-stage rows (FLOPs, bytes, host ms, Orin ms
        and the basis), ``cpu_ms_per_media_s``, ``speed_x_one_core``, ``engine`` and a ``note``.
    """
    a = dict(ORIN_NANO, **(assume or {}))
    host_ghz = host.get("cpu_ghz") or 2.5
    scalar_ratio = host_ghz * a["host_ipc_over_a78"] / a["cpu_ghz"]
    fps = float(preprocessing["fps"]) if preprocessing else 30.0
    rows = []
    total = 0.0
    for st in stages:
        name = st["stage"]
        if name in ("window", "wait", "compute", "engine"):
            continue  # waits, a sum, and the model (costed on the GPU below)
        # This host's CPU time when measured (wall time preempted by others is not work).
        host_ms = st.get("cpu_ms") if st.get("cpu_ms") is not None else st.get("mean_ms")
        host_per_s = st.get("cpu_ms_per_media_s")
        if host_per_s is None:
            host_per_s = st.get("wall_ms_per_media_s")
        if host_per_s is None:
            continue
        if host_ms is None:  # a thread without timed stages: only its CPU per second is known
            per_s = host_per_s * scalar_ratio
            total += per_s
            rows.append({"stage": name, "per": st["per"], "flops": None, "bytes": None, "host_ms": None,
                         "orin_ms": None, "orin_ms_per_media_s": round(per_s, 3), "basis": "host x scalar ratio"})
            continue
        flops, nbytes = _stage_work(name, frame_size, box_px, preprocessing, n_ecg)
        floor_ms = max(flops / (a["cpu_fp32_gflops_per_core"] * 1e9), nbytes / (a["cpu_gbs_per_core"] * 1e9)) * 1e3
        if name == "read":
            # NVDEC decodes; the CPU copies and converts the picture.
            orin_ms, basis = floor_ms, "NVDEC decode; CPU NV12->BGR at the per-core byte rate"
        else:
            scaled = host_ms * scalar_ratio
            orin_ms = max(scaled, floor_ms)
            basis = "host x scalar ratio" if scaled >= floor_ms else "roofline floor"
        if host_ms > 0:
            per_s = host_per_s * orin_ms / host_ms
        else:
            per_s = orin_ms * (fps if st["per"] == "frame" else 1 / hop_s)
        total += per_s
        rows.append({"stage": name, "per": st["per"], "flops": round(flops), "bytes": round(nbytes),
                     "host_ms": round(host_ms, 4), "orin_ms": round(orin_ms, 4), "orin_ms_per_media_s": round(per_s, 3),
                     "basis": basis})
    engine = None
    if model is not None:
        peak = a["gpu_int8_tops_dense"] * 1e12 * a["gpu_int8_efficiency"]
        compute_ms = model["flops"] / peak * 1e3
        kernels = max(1, int(round(model["nodes"] * a["gpu_fused_fraction"])))
        launch_ms = kernels * a["gpu_kernel_us"] / 1e3
        engine_ms = max(compute_ms, launch_ms) + a["gpu_sync_us"] / 1e3
        host_engine = next((s.get("cpu_ms") or s["mean_ms"] for s in stages if s["stage"] == "engine"), None)
        engine = {"flops": model["flops"], "weight_bytes": model["weight_bytes"], "onnx_nodes": model["nodes"],
                  "kernels_assumed": kernels, "compute_ms": round(compute_ms, 4), "launch_ms": round(launch_ms, 4),
                  "orin_gpu_ms": round(engine_ms, 4), "host_cpu_ms": host_engine,
                  "orin_cpu_ms": None if host_engine is None else round(host_engine * scalar_ratio, 3),
                  "basis": "TensorRT INT8 on the GPU: max(FLOPs at efficiency x peak, kernels x launch) + sync"}
        engine_share = next((s["n"] / n_results for s in stages if s["stage"] == "engine" and n_results), 1.0)
        total += engine_ms * engine_share / hop_s
    return {
        "note": "ESTIMATE from per-stage FLOPs and bytes and this host's measured times; not measured on a Jetson",
        "assumptions": a, "host_ghz": host_ghz, "scalar_ratio": round(scalar_ratio, 3), "stages": rows,
        "engine": engine, "cpu_ms_per_media_s": round(total, 2),
        "speed_x_one_core": round(1000.0 / total, 2) if total > 0 else None,
        "cores_needed_realtime": round(total / 1000.0, 3),
    }
