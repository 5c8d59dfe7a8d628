"""``emofuse bench pipeline``: the whole runtime on a recording, against the issue-6 targets.

What is measured, each in a fresh child process (so imports, caches and memory are those of a
real run, not of this one), pinned to one core unless told otherwise:

- **replay speed**: :class:`edge.pipeline.Pipeline` in replay mode over the recording as fast
  as it goes (video decoding included), as media seconds per wall second (target >= 10x);
- **latency**: ``Result.latency_ms["window"]``, from the arrival of a window's last frame to
  its result, p50 / p99, both in the fast replay (every stage competing for the core) and in
  a replay paced at the recorded times in live mode, which is how a camera drives it
  (target p99 <= 50 ms);
- **memory**: ``VmRSS`` after start-up and at every result, and the peak ``VmHWM``, from
  ``/proc/self/status`` (target <= 400 MB);
- **cold start**: the time from launching the process until the pipeline is ready (imports,
  bundle, engine, kernels compiled or loaded from Numba's cache), and the delay of the first
  result whose window is full (no ``warming_up`` reason) after that window's last frame
  arrived (target <= 2 s), with the Numba cache warm and, in a second child, empty;
- **per-stage time** from ``Result.latency_ms`` (:data:`edge.pipeline.STAGES`), as ms per
  frame or per window and as ms of work per second of video, so the next bottleneck shows;
- a **Jetson Orin Nano estimate** from per-stage FLOPs and bytes (:func:`orin_nano_estimate`),
  marked as an estimate, with every figure it assumes (:data:`ORIN_NANO`).

The recording is either a folder (:func:`firmware_bridge.recording.open_recording`: an
emofuse recording or a PhysRecorder folder such as the real H.264 clip) or ``"sim"``: a
synthetic session (:func:`make_sim_recording`) at 640x480, 30 fps, whose video is MPEG-4
Part 2 (an inter-frame codec that decodes at the speed class of H.264; OpenCV's FFmpeg
cannot encode H.264 here) and whose ECG, PPG and EDA are stored in blocks by
:class:`firmware_bridge.recording.Recorder`, as a sensor board sends them.

Speed is measured here, never in timed tests (STYLE rule 14); the figures go in
docs/PERFORMANCE.md. Run as ``python -m edge.bench_pipeline child ...`` it is one child.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError, EmofuseError

log = logging.getLogger(__name__)

__all__ = [
    "ORIN_NANO",
    "REPORT_FIELDS",
    "TARGETS",
    "bench_pipeline",
    "format_report",
    "make_sim_recording",
    "onnx_flops",
    "orin_nano_estimate",
]

#: Issue 6, section 5.
TARGETS = {"replay_speed_x": 10.0, "latency_p99_ms": 50.0, "memory_mb": 400.0, "first_result_s": 2.0}

#: Top-level keys of the report of :func:`bench_pipeline`.
REPORT_FIELDS = ("host", "recording", "bundle", "targets", "replay", "latency", "memory", "cold_start",
                 "stages", "tracker", "orin_nano", "profile", "verdict")

#: Per-frame stages of ``Result.latency_ms`` (means over the hop's frames); the rest are per window.
FRAME_STAGES = ("read", "track", "roi", "crop")
#: Per-window stages that make up ``compute`` (the inference stage's own work).
COMPUTE_STAGES = ("pulse", "tfr", "contact", "physio", "encoder", "engine")

BENCH_FILE = "bench.json"
SIM_VIDEO = "video.mp4"
SIM_PHYSIO = "physio"
#: Simulator settings of the synthetic recording beyond its defaults (a still adult at rest).
#: MPEG-4 at OpenCV's default bit rate (which cannot be raised through its API) smooths a 0.3 %
#: skin-colour pulse away (as H.264 at low rates does; McDuff et al. 2017), the more so when
#: the encoder spends its bits on sensor noise; most results would then be gated as
#: ``low_pulse_quality``. A 1.5 % pulse and less noise keep the measured path that of a good
#: session (heart rate and model on every hop); speed, not accuracy, is measured here.
SIM_CONFIG: dict[str, Any] = {"pulse_amplitude": 0.015, "noise_sigma": 0.5}
# Host-clock origin of a synthetic recording: any fixed value makes replays identical.
SIM_T0_NS = 1_000_000_000_000

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


# ---------------------------------------------------------------------------------------------
# Host and process facts


def host_facts() -> dict[str, Any]:
    """CPU model, clock, SIMD width and core count of this machine, Python and library versions."""
    import platform

    cpu, mhz, flags = platform.processor() or platform.machine(), None, ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu in ("", platform.machine(), platform.processor()):
                cpu = value.strip()
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "flags" and not flags:
                flags = value
    except (OSError, ValueError):
        pass
    simd = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("numba", "cv2", "onnxruntime"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cpu_ghz": round(mhz / 1000.0, 3) if mhz else None, "simd_bits": simd,
            "cores": os.cpu_count(), "load_avg_1min": None if load is None else round(load[0], 2),
            "versions": versions}


def proc_memory_mb() -> dict[str, float]:
    """``VmRSS`` (resident now) and ``VmHWM`` (resident peak) of this process, MB (10^6 bytes)."""
    out = {"rss_mb": float("nan"), "hwm_mb": float("nan")}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) * 1024 / 1e6
            elif line.startswith("VmHWM:"):
                out["hwm_mb"] = int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return out


def thread_cpu_s() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every thread of this process: native id -> (name, s).

    Python threads get their ``threading`` name; threads Python did not start (OpenCV's and
    ONNX Runtime's pools) are named ``native``. Read from ``/proc/self/task/*/stat`` (clock
    ticks), so preemption by other threads or processes does not count, unlike wall time.
    """
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # Fields after the command name start at "state" (field 3): utime is 14, stime 15.
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out[int(tid)] = (names.get(int(tid), "native"), cpu)
    return out


def _pin_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {core})
    return core


# ---------------------------------------------------------------------------------------------
# The synthetic recording


_worker_session = None


def _render_init(config: dict) -> None:
    global _worker_session
    from firmware_bridge.sim import SimConfig, synth_session

    _worker_session = synth_session(SimConfig(**config))


def _render(rng: tuple[int, int]) -> list[np.ndarray]:
    return [_worker_session.frame(i) for i in range(*rng)]


def make_sim_recording(out_dir: str | os.PathLike, minutes: float = 2.0, *, seed: int = 0,
                       frame_size: tuple[int, int] = (640, 480), fps: float = 30.0, block_s: float = 0.1,
                       workers: int | None = None, **sim: Any) -> Path:
    """Write a synthetic session as a benchmark recording folder.

    The folder holds ``video.mp4`` (MPEG-4 Part 2, frame ``i`` at ``i / fps`` s), ``physio/``
    (an emofuse recording of ``ecg``, ``ppg_ir`` and ``eda`` in blocks of ``block_s``, with
    sequence numbers) and ``bench.json`` (these settings). The subject is the simulator's
    default adult at rest (:class:`firmware_bridge.sim.SimConfig`, frame jitter off so video
    and sensors share one clock exactly).

    Args:
        out_dir: a new or empty folder.
        minutes: length, min (> 0).
        seed: the simulator's seed.
        frame_size: (width, height) px.
        fps: frame rate, Hz.
        block_s: sensor samples per record, s.
        workers: processes rendering frames (default: the cores available, at most 4; 1
            renders in this process).
        **sim: other :class:`firmware_bridge.sim.SimConfig` fields, over :data:`SIM_CONFIG`.

    Returns:
        The folder.

    Raises:
        ConfigError: bad settings, or a non-empty folder.
        BadInputError: OpenCV cannot encode MPEG-4 here.
    """
    import cv2

    from firmware_bridge.recording import Recorder
    from firmware_bridge.sim import SimConfig, synth_session
    from firmware_bridge.types import SensorChunk

    if not (minutes > 0 and math.isfinite(minutes)):
        raise ConfigError(f"minutes must be > 0, got {minutes!r}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    duration_s = float(minutes) * 60.0
    config = dict(SIM_CONFIG, **sim)
    config.update(duration_s=duration_s, seed=int(seed), fps=float(fps),
                  frame_size=tuple(int(v) for v in frame_size), frame_jitter_s=0.0)
    session = synth_session(SimConfig(**config))

    with Recorder(out / SIM_PHYSIO, sources=[("sensor", "sim://bench")],
                  info={"bench": "edge.bench_pipeline"}) as rec:
        for name, trace in (("ecg", session.ecg), ("ppg_ir", session.ppg), ("eda", session.eda)):
            fs = float(trace.fs_hz)
            n_block = max(1, int(round(block_s * fs)))
            values = np.asarray(trace.values, dtype=np.float64)
            for seq, start in enumerate(range(0, values.size, n_block)):
                rec.write_chunk(SensorChunk(
                    stream=name, fs_hz=fs, t0_ns=SIM_T0_NS + int(round(start * 1e9 / fs)),
                    samples=values[start:start + n_block].copy(), units=trace.units, seq=seq & 0xFFFF,
                    source="sim://bench"))

    n_frames = int(session.n_frames)
    w, h = (int(v) for v in frame_size)
    vw = cv2.VideoWriter(str(out / SIM_VIDEO), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not vw.isOpened():
        raise BadInputError("OpenCV cannot encode MPEG-4 (mp4v) video here; pass a recording folder instead")
    if workers is None:
        workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    step = 30
    ranges = [(i, min(i + step, n_frames)) for i in range(0, n_frames, step)]
    try:
        if workers <= 1:
            for a, b in ranges:
                for i in range(a, b):
                    vw.write(session.frame(i))
        else:
            import multiprocessing as mp

            # spawn: the parent may hold threads (a test runner, ONNX Runtime) that fork would copy.
            with mp.get_context("spawn").Pool(workers, _render_init, (config,)) as pool:
                for frames in pool.imap(_render, ranges, chunksize=1):
                    for f in frames:
                        vw.write(f)
    finally:
        vw.release()
    meta = {"kind": "sim", "minutes": float(minutes), "duration_s": duration_s, "seed": int(seed),
            "frame_size": [w, h], "fps": float(fps), "frames": n_frames, "video": SIM_VIDEO,
            "video_codec": "mpeg4 (mp4v)", "physio": SIM_PHYSIO, "t0_ns": SIM_T0_NS, "block_s": block_s,
            "streams": ["ecg", "ppg_ir", "eda"],
            "sim": {k: v for k, v in config.items() if k in SIM_CONFIG or k in sim}}
    (out / BENCH_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def describe_recording(path: str | os.PathLike) -> dict[str, Any]:
    """Kind, duration, frame count, size, rate and streams of a benchmark recording or a
    recording folder.

    Raises:
        BadInputError: not a recording.
    """
    p = Path(path)
    if (p / BENCH_FILE).is_file():
        meta = json.loads((p / BENCH_FILE).read_text(encoding="utf-8"))
        meta["path"] = str(p)
        return meta
    import cv2

    from firmware_bridge.recording import open_recording

    rec = open_recording(p)
    out: dict[str, Any] = {"kind": rec.manifest.get("format", "recording"), "path": str(p),
                           "streams": list(rec.streams)}
    if rec.has_camera:
        t = np.asarray(rec.frame_times_ns(), dtype=np.int64)
        out["frames"] = int(t.size)
        if t.size > 1:
            out["fps"] = round(float(1e9 / np.median(np.diff(t))), 3)
            out["duration_s"] = round(float((t[-1] - t[0]) / 1e9 + 1e9 / np.median(np.diff(t)) / 1e9), 3)
        cam = rec.camera()
        try:
            first = next(cam)
            out["frame_size"] = [int(first.image.shape[1]), int(first.image.shape[0])]
        finally:
            cam.close()
        video = getattr(rec, "video", None)
        if video is not None:
            cap = cv2.VideoCapture(str(video))
            code = int(cap.get(cv2.CAP_PROP_FOURCC))
            cap.release()
            out["video_codec"] = "".join(chr((code >> (8 * k)) & 0xFF) for k in range(4)).strip() or None
        else:
            out["video_codec"] = (rec.manifest.get("camera") or {}).get("codec")
    return out


def _open_sources(path: Path, realtime: bool):
    """(camera, sensors) of a benchmark recording or a recording folder."""
    if (path / BENCH_FILE).is_file():
        from firmware_bridge.cameras import open_camera
        from firmware_bridge.recording import open_recording

        meta = json.loads((path / BENCH_FILE).read_text(encoding="utf-8"))
        camera = open_camera(str(path / meta["video"]), fps=float(meta["fps"]), origin_ns=int(meta["t0_ns"]),
                             realtime=bool(realtime))
        rec = open_recording(path / meta["physio"])
        return camera, [rec.sensors(realtime=realtime)]
    from firmware_bridge.recording import open_recording

    rec = open_recording(path)
    camera = rec.camera(realtime=realtime) if rec.has_camera else None
    sensors = [rec.sensors(realtime=realtime)] if rec.streams else []
    return camera, sensors


# ---------------------------------------------------------------------------------------------
# One child: one measurement in a fresh process


def _thread_profiler():
    """Profile every thread started from now on (cProfile only follows the calling thread),
    in thread CPU time, so time spent preempted or blocked is not charged to a function."""
    import cProfile
    import threading

    profiles: list = []

    def start(_frame, _event, _arg):
        prof = cProfile.Profile(time.thread_time)
        profiles.append(prof)
        sys.setprofile(None)
        prof.enable()

    threading.setprofile(start)
    return profiles


def _profile_rows(profiles: list, top: int = 25) -> list[dict]:
    import pstats

    stats = None
    for prof in profiles:
        try:
            prof.disable()
        except Exception:  # noqa: BLE001 - a profile owned by a thread that has ended
            pass
        stats = pstats.Stats(prof) if stats is None else (stats.add(prof) or stats)
    if stats is None:
        return []
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc,
                     "self_s": round(tt, 4), "cumulative_s": round(ct, 4)})
    rows.sort(key=lambda r: r["self_s"], reverse=True)
    return rows[:top]


def child_measure(recording: str, mode: str, bundle: str, limit_s: float, launched_unix: float,
                  one_core: bool = True, profile: bool = False, tracker: dict | None = None) -> dict[str, Any]:
    """Run the pipeline once in this process and measure it (what a child prints as JSON).

    Args:
        recording: a benchmark recording folder or a recording folder.
        mode: ``"fast"`` (replay as fast as possible, every result), ``"paced"`` (sources at
            recorded times, live mode) or ``"first"`` (fast, stopping at the first full window).
        bundle: ``"default"``, a bundle folder, or ``"none"``.
        limit_s: stop after this much session time, s.
        launched_unix: ``time.time()`` when the parent launched this process.
        one_core: pin this process to one core first.
        profile: profile every pipeline thread with cProfile.
        tracker: :class:`edge.tracker.FaceTracker` settings (None: the pipeline's default).

    Returns:
        dict of raw measurements (per-result latencies and memory, counters, timings).

    Raises:
        EmofuseError: the recording or bundle cannot be opened, or the pipeline fails.
    """
    core = _pin_one_core() if one_core else None
    t_imp = time.perf_counter()
    from edge.pipeline import Pipeline

    import_s = time.perf_counter() - t_imp
    path = Path(recording)
    camera, sensors = _open_sources(path, realtime=(mode == "paced"))
    t_open = time.perf_counter()
    face_tracker = None
    if tracker:
        from edge.tracker import FaceTracker

        face_tracker = FaceTracker(**tracker)
    pipe = Pipeline(camera, sensors, bundle=None if bundle == "none" else bundle,
                    backend="onnxruntime", precision="int8" if bundle != "none" else "auto",
                    mode="live" if mode == "paced" else "replay", intra_op_threads=1, tracker=face_tracker)
    construct_s = time.perf_counter() - t_open
    ready_unix = time.time()
    mem_ready = proc_memory_mb()
    profiles = _thread_profiler() if profile else None
    rows: list[dict] = []
    first_full = None
    threads_cpu: dict[int, tuple[str, float]] = {}
    base_cpu = thread_cpu_s()
    cpu0 = os.times()
    t_run = time.perf_counter()
    try:
        for r in pipe.results():
            now = time.perf_counter() - t_run
            for tid, (name, cpu) in thread_cpu_s().items():
                # A thread that has just ended leaves threading's list before /proc's: keep its name.
                old = threads_cpu.get(tid)
                threads_cpu[tid] = (old[0] if old and name == "native" else name, cpu)
            mem = proc_memory_mb()
            full = "warming_up" not in r.reasons
            rows.append({"t_s": r.t_s, "status": r.status, "reasons": list(r.reasons),
                         "latency_ms": dict(r.latency_ms), "frames": r.frames, "wall_s": now,
                         "rss_mb": mem["rss_mb"], "hr_bpm": r.hr_bpm, "face_box": r.face_box,
                         "engine": "engine" in r.latency_ms})
            if full and first_full is None:
                first_full = len(rows) - 1
                if mode == "first":
                    break
            if r.t_s >= limit_s:
                break
        wall_s = time.perf_counter() - t_run
        stats = pipe.stats()
        meta = pipe.metadata
    finally:
        pipe.close()
    cpu1 = os.times()
    by_thread: dict[str, float] = {}
    for tid, (name, cpu) in threads_cpu.items():
        name = name.removeprefix("emofuse-")
        by_thread[name] = by_thread.get(name, 0.0) + cpu - (base_cpu.get(tid, (name, 0.0))[1])
    try:
        import cv2

        cv_threads = cv2.getNumThreads()
    except ImportError:
        cv_threads = None
    if profiles is not None:
        import threading

        threading.setprofile(None)
    mem_end = proc_memory_mb()
    return {
        "mode": mode, "core": core, "import_s": import_s, "construct_s": construct_s,
        "launch_to_ready_s": ready_unix - launched_unix, "wall_s": wall_s,
        "cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system),
        "mem_ready": mem_ready, "mem_end": mem_end, "rows": rows, "first_full": first_full,
        "thread_cpu_s": {k: round(v, 3) for k, v in sorted(by_thread.items())}, "opencv_threads": cv_threads,
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "stats": stats, "metadata": meta, "torch_imported": "torch" in sys.modules,
        "profile": _profile_rows(profiles) if profiles is not None else None,
    }


def _child_main(argv: Sequence[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m edge.bench_pipeline child")
    ap.add_argument("recording")
    ap.add_argument("--mode", choices=("fast", "paced", "first"), required=True)
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--limit-s", type=float, required=True)
    ap.add_argument("--launched", type=float, required=True)
    ap.add_argument("--all-cores", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--tracker", default=None, help="FaceTracker settings as a JSON object")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = child_measure(args.recording, args.mode, args.bundle, args.limit_s, args.launched,
                            one_core=not args.all_cores, profile=args.profile,
                            tracker=json.loads(args.tracker) if args.tracker else None)
    except EmofuseError as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("EMOFUSE-BENCH " + json.dumps(out, default=_jsonable) + "\n")
    sys.stdout.flush()
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def _run_child(recording: Path, mode: str, bundle: str, limit_s: float, *, one_core: bool,
               profile: bool = False, numba_cache_dir: str | None = None, timeout_s: float | None = None,
               tracker: dict | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if numba_cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = numba_cache_dir
    cmd = [sys.executable, "-m", "edge.bench_pipeline", "child", str(recording), "--mode", mode,
           "--bundle", bundle, "--limit-s", repr(float(limit_s)), "--launched", repr(time.time())]
    if not one_core:
        cmd.append("--all-cores")
    if profile:
        cmd.append("--profile")
    if tracker:
        cmd += ["--tracker", json.dumps(tracker)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith("EMOFUSE-BENCH "):
            out = json.loads(line[len("EMOFUSE-BENCH "):])
            if "error" in out:
                raise BadInputError(f"benchmark child ({mode}) failed: {out['error']}")
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise BadInputError(f"benchmark child ({mode}) exited with code {proc.returncode}: " + " | ".join(tail))


# ---------------------------------------------------------------------------------------------
# Summaries


def _pct(values: Sequence[float], q: float) -> float | None:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    return round(float(np.percentile(v, q)), 3) if v.size else None


#: Results after the first full window that still pay one-time costs (a kernel's first call
#: with a new argument type loads or compiles it); left out of the ``steady`` figures.
SETTLE_RESULTS = 3


def _latency_summary(rows: list[dict], mode_note: str) -> dict[str, Any]:
    win = [r["latency_ms"].get("window") for r in rows]
    model = [r["latency_ms"].get("window") for r in rows if r["engine"]]
    first = next((i for i, r in enumerate(rows) if "warming_up" not in r["reasons"]), len(rows))
    steady = [r["latency_ms"].get("window") for r in rows[first + SETTLE_RESULTS:]]
    worst = max(range(len(rows)), key=lambda i: rows[i]["latency_ms"].get("window") or 0.0) if rows else None
    return {"how": mode_note, "n": sum(v is not None for v in win), "p50_ms": _pct(win, 50),
            "p99_ms": _pct(win, 99), "max_ms": _pct(win, 100),
            "worst_t_s": None if worst is None else rows[worst]["t_s"],
            "with_model": {"n": sum(v is not None for v in model), "p50_ms": _pct(model, 50),
                           "p99_ms": _pct(model, 99)},
            "steady": {"n": sum(v is not None for v in steady), "p50_ms": _pct(steady, 50),
                       "p99_ms": _pct(steady, 99), "max_ms": _pct(steady, 100),
                       "how": f"after the first full window and {SETTLE_RESULTS} more results"}}


#: The pipeline thread each stage of ``Result.latency_ms`` runs in.
STAGE_THREADS = {"read": "camera", "track": "face", "roi": "face", "crop": "face", "assemble": "face",
                 "pulse": "infer", "tfr": "infer", "contact": "infer", "physio": "infer", "encoder": "infer",
                 "engine": "infer"}


def _stage_table(rows: list[dict], fps: float, hop_s: float, thread_ms: dict[str, float] | None = None) -> list[dict]:
    """Per-stage times, with a CPU-time column.

    ``mean_ms`` / ``p99_ms`` are the wall times the pipeline records (``Result.latency_ms``);
    on one shared core they include time spent preempted by other threads and processes.
    ``cpu_ms`` rescales them so that the stages of each thread add up to that thread's
    measured CPU time (:func:`thread_cpu_s`), which also charges each thread's untimed
    overhead (queues, bookkeeping) to its stages in proportion.
    """
    names: list[str] = []
    for r in rows:
        for k in r["latency_ms"]:
            if k not in names:
                names.append(k)
    try:
        from edge.pipeline import STAGES

        order = [s for s in STAGES if s in names] + [s for s in names if s not in STAGES]
    except ImportError:
        order = names
    table = []
    for name in order:
        vals = [r["latency_ms"][name] for r in rows if name in r["latency_ms"]]
        per_frame = name in FRAME_STAGES
        mean = float(np.mean(vals)) if vals else float("nan")
        # Work per second of video: per-frame stages run fps times, per-window ones 1/hop times.
        # ``window`` and ``wait`` are waits, not work; ``compute`` holds the COMPUTE_STAGES.
        if name in ("window", "wait", "compute"):
            per_media_s = None
        elif per_frame:
            per_media_s = mean * fps
        else:
            per_media_s = mean * len(vals) / max(len(rows), 1) / hop_s
        table.append({"stage": name, "per": "frame" if per_frame else "window", "thread": STAGE_THREADS.get(name),
                      "n": len(vals), "mean_ms": round(mean, 4), "p99_ms": _pct(vals, 99),
                      "wall_ms_per_media_s": None if per_media_s is None else round(per_media_s, 3)})
    thread_ms = dict(thread_ms or {})
    wall_by_thread: dict[str, float] = {}
    for t in table:
        if t["thread"] and t["wall_ms_per_media_s"] is not None:
            wall_by_thread[t["thread"]] = wall_by_thread.get(t["thread"], 0.0) + t["wall_ms_per_media_s"]
    for t in table:
        th, wall = t["thread"], t["wall_ms_per_media_s"]
        factor = None
        if th in thread_ms and wall_by_thread.get(th):
            factor = thread_ms[th] / wall_by_thread[th]
        t["cpu_ms"] = None if factor is None or wall is None else round(t["mean_ms"] * factor, 4)
        t["cpu_ms_per_media_s"] = None if factor is None or wall is None else round(wall * factor, 3)
    # Threads with no timed stage (sensor readers, the caller) still cost CPU: one row each.
    for th, ms in sorted(thread_ms.items()):
        if th not in wall_by_thread and ms > 0:
            table.append({"stage": f"({th} thread)", "per": "second", "thread": th, "n": None, "mean_ms": None,
                          "p99_ms": None, "wall_ms_per_media_s": None, "cpu_ms": None,
                          "cpu_ms_per_media_s": round(ms, 3)})
    key = "cpu_ms_per_media_s" if thread_ms else "wall_ms_per_media_s"
    total = sum(t[key] for t in table if t[key] is not None)
    for t in table:
        t["share"] = None if t[key] is None or total <= 0 else round(t[key] / total, 4)
    return table


def _memory_summary(fast: dict) -> dict[str, Any]:
    rows = fast["rows"]
    rss = [r["rss_mb"] for r in rows]
    first = fast["first_full"] or 0
    steady = rss[first:] if len(rss) - first >= 8 else rss
    growth = None
    if len(steady) >= 8:
        q = max(2, len(steady) // 5)
        a, b = float(np.mean(steady[:q])), float(np.mean(steady[-q:]))
        growth = round(100.0 * (b - a) / a, 2) if a > 0 else None
    return {"rss_ready_mb": round(fast["mem_ready"]["rss_mb"], 1),
            "rss_max_mb": round(max(rss), 1) if rss else None,
            "rss_end_mb": round(fast["mem_end"]["rss_mb"], 1),
            "hwm_mb": round(fast["mem_end"]["hwm_mb"], 1),
            "growth_pct_steady": growth,
            "torch_imported": fast["torch_imported"],
            "how": "VmRSS / VmHWM from /proc/self/status of the fast-replay child"}


def _first_summary(child: dict | None) -> dict[str, Any] | None:
    if child is None:
        return None
    rows, k = child["rows"], child["first_full"]
    out = {"launch_to_ready_s": round(child["launch_to_ready_s"], 3), "import_s": round(child["import_s"], 3),
           "construct_s": round(child["construct_s"], 3), "first_full_t_s": None,
           "first_full_latency_s": None, "first_full_wall_s": None}
    if k is not None:
        r = rows[k]
        lat = r["latency_ms"].get("window")
        out.update(first_full_t_s=r["t_s"], first_full_latency_s=None if lat is None else round(lat / 1e3, 4),
                   first_full_wall_s=round(r["wall_s"], 3))
    return out


# ---------------------------------------------------------------------------------------------
# Jetson Orin Nano estimate


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
        stages: the stage table of :func:`bench_pipeline` (``stage``, ``per``, ``n``, ``mean_ms`` and,
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


# ---------------------------------------------------------------------------------------------
# The benchmark


def bench_pipeline(recording: str | os.PathLike = "sim", *, minutes: float = 2.0, bundle: str = "default",
                   paced_s: float = 60.0, cold_cache: bool = True, one_core: bool = True, profile: bool = False,
                   keep: str | os.PathLike | None = None, sim_frame_size: tuple[int, int] = (640, 480),
                   workers: int | None = None, tracker: dict | None = None, fast_runs: int = 1,
                   progress=None) -> dict[str, Any]:
    """Run every measurement and return the report (keys: :data:`REPORT_FIELDS`).

    Args:
        recording: ``"sim"`` or a recording folder (emofuse, PhysRecorder, or one made by
            :func:`make_sim_recording`).
        minutes: length of the synthetic session, and the most session time replayed, min.
        bundle: ``"default"``, a bundle folder, or ``"none"`` (signals only, no engine; the
            preprocessing then comes from the default bundle).
        paced_s: session time of the paced (live-mode) latency run, s; 0 skips it.
        cold_cache: also measure a start with an empty Numba cache.
        one_core: pin every child to one core (the targets are stated for one core).
        profile: also run the fast replay once more under cProfile (every pipeline thread, in
            thread CPU time; not used for any timing); the top functions by self time go in
            ``report["profile"]``.
        keep: build the synthetic recording here and keep it (reused when it exists and was
            made with the same minutes and frame size); None uses a temporary folder.
        sim_frame_size: frame size of the synthetic recording, px.
        workers: processes rendering the synthetic video.
        tracker: :class:`edge.tracker.FaceTracker` settings for every child (None: the
            pipeline's default tracker), to try a cheaper detection cadence.
        fast_runs: fast replays to run; the fastest is reported (others share the machine,
            and the minimum is the least disturbed).
        progress: called with a line of text as each step starts (e.g. ``print``), or None.

    Returns:
        The report dict (JSON-serialisable).

    Raises:
        ConfigError: bad settings, or a bundle that is not installed or invalid.
        BadInputError: an unreadable recording or bundle, or a child that failed.
    """
    if not (minutes > 0 and math.isfinite(minutes)):
        raise ConfigError(f"--minutes must be > 0, got {minutes!r}")
    if paced_s < 0:
        raise ConfigError(f"paced_s must be >= 0, got {paced_s!r}")
    say = progress or (lambda _msg: None)
    limit_s = float(minutes) * 60.0
    if str(recording) != "sim" and not Path(recording).is_dir():
        raise BadInputError(f"recording folder not found: {recording}")
    # Fail on a missing or corrupt bundle now, not after minutes of rendering video.
    from edge.pipeline import resolve_bundle

    if str(bundle) != "none":
        resolve_bundle(str(bundle))
    else:
        try:
            resolve_bundle("default")
        except ConfigError as exc:
            raise ConfigError(f"--bundle none takes its preprocessing from the default bundle ({exc})") from None
    tmp = None
    try:
        if str(recording) == "sim":
            if keep is not None and (Path(keep) / BENCH_FILE).is_file():
                meta = json.loads((Path(keep) / BENCH_FILE).read_text(encoding="utf-8"))
                if meta.get("minutes") != float(minutes) or list(meta.get("frame_size", [])) != list(sim_frame_size):
                    raise ConfigError(f"{keep} holds a {meta.get('minutes')} min {meta.get('frame_size')} "
                                      f"recording; remove it or pass another --keep folder")
                path = Path(keep)
            else:
                if keep is None:
                    tmp = tempfile.mkdtemp(prefix="emofuse-bench-")
                    path = Path(tmp) / "sim"
                else:
                    path = Path(keep)
                say(f"writing a {minutes:g} min synthetic recording ({sim_frame_size[0]}x{sim_frame_size[1]}, "
                    f"30 fps) to {path}")
                t0 = time.perf_counter()
                make_sim_recording(path, minutes, frame_size=sim_frame_size, workers=workers)
                say(f"  written in {time.perf_counter() - t0:.1f} s")
        else:
            path = Path(recording)
        rec_info = describe_recording(path)
        host = host_facts()

        bundle_arg = str(bundle)
        fast = None
        for k in range(max(1, int(fast_runs))):
            say(f"fast replay {k + 1} of {max(1, int(fast_runs))} (every frame, as fast as it goes)")
            run = _run_child(path, "fast", bundle_arg, limit_s, one_core=one_core, tracker=tracker)
            if fast is None or run["wall_s"] < fast["wall_s"]:
                fast = run
        profiled = None
        if profile:
            say("fast replay under cProfile (for the profile table only)")
            profiled = _run_child(path, "fast", bundle_arg, limit_s, one_core=one_core, profile=True, tracker=tracker)
        paced = None
        if paced_s > 0:
            say(f"paced replay in live mode ({paced_s:g} s of session time at real speed)")
            paced = _run_child(path, "paced", bundle_arg, min(paced_s, limit_s), one_core=one_core, tracker=tracker)
        say("start-up with the Numba cache warm")
        warm = _run_child(path, "first", bundle_arg, limit_s, one_core=one_core, tracker=tracker)
        cold = None
        if cold_cache:
            cache = tempfile.mkdtemp(prefix="emofuse-numba-cold-")
            try:
                say("start-up with an empty Numba cache (compiles every kernel)")
                cold = _run_child(path, "first", bundle_arg, limit_s, one_core=one_core, numba_cache_dir=cache,
                                  tracker=tracker)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    meta = fast["metadata"]
    hop_s = float(meta.get("hop_s", 1.0))
    fps = float(rec_info.get("fps") or 30.0)
    rows = fast["rows"]
    media_s = (fast["stats"]["frames_processed"] / fps) if fast["stats"].get("frames_processed") else \
        (rows[-1]["t_s"] if rows else 0.0)
    speed = media_s / fast["wall_s"] if fast["wall_s"] > 0 else None
    thread_ms = {k: 1e3 * v / media_s for k, v in fast["thread_cpu_s"].items()} if media_s > 0 else {}
    stages = _stage_table(rows, fps, hop_s, thread_ms)
    p = None
    model = None
    bundle_info: dict[str, Any] = {"requested": bundle_arg}
    if meta.get("bundle"):
        from edge.bundle import load_bundle

        b = load_bundle(meta["bundle"]["path"])
        p = b.preprocessing
        eng = meta.get("engine") or {}
        bundle_info.update(path=meta["bundle"]["path"], model=meta["bundle"]["model"],
                           version=meta["bundle"]["version"], backend=eng.get("backend"),
                           precision=eng.get("precision"), graph=eng.get("graph"),
                           providers=eng.get("providers"), threads=eng.get("threads"))
        graph = Path(meta["bundle"]["path"]) / "model.onnx"
        if graph.is_file():
            model = onnx_flops(graph)
            bundle_info["model_flops"] = model["flops"]
            bundle_info["model_weight_bytes"] = model["weight_bytes"]
    boxes = [r["face_box"] for r in rows if r.get("face_box")]
    box_px = float(np.median([b[2] * b[3] for b in boxes])) if boxes else 0.25 * 480 * 480
    frame_size = tuple(rec_info.get("frame_size") or sim_frame_size)
    orin = orin_nano_estimate(stages, host, frame_size=frame_size, box_px=box_px, preprocessing=p, hop_s=hop_s,
                              model=model, n_results=len(rows))

    latency = {"fast": _latency_summary(rows, "fast replay, replay mode: every stage competing for one core"),
               "paced": None if paced is None else _latency_summary(
                   paced["rows"], "paced replay, live mode: frames arrive at the recorded times"),
               "paced_frames_dropped": None if paced is None else paced["stats"].get("frames_dropped")}
    memory = _memory_summary(fast)
    cold_start = {"warm_cache": _first_summary(warm), "cold_cache": _first_summary(cold),
                  "how": "launch_to_ready_s: process launch to a ready pipeline (imports, bundle, engine, "
                         "kernels); first_full_latency_s: the first full window's last frame to its result"}
    replay = {"media_s": round(media_s, 3), "wall_s": round(fast["wall_s"], 3),
              "speed_x": None if speed is None else round(speed, 2),
              "frames": fast["stats"].get("frames_processed"), "results": len(rows),
              "fps_processed": round(fast["stats"].get("frames_processed", 0) / fast["wall_s"], 1)
              if fast["wall_s"] > 0 else None,
              "cpu_s": round(fast["cpu_s"], 3), "cpu_busy": round(fast["cpu_s"] / fast["wall_s"], 3)
              if fast["wall_s"] > 0 else None,
              # Media seconds per CPU second of this process: what the speed would be with the
              # core to itself and no idle waits; on a loaded machine the wall figure is lower.
              "speed_x_cpu": round(media_s / fast["cpu_s"], 2) if fast["cpu_s"] > 0 else None,
              "thread_cpu_ms_per_media_s": {k: round(1e3 * v / media_s, 2) for k, v in
                                            fast["thread_cpu_s"].items()} if media_s > 0 else {},
              "load_avg_1min": fast["load_avg_1min"], "opencv_threads": fast["opencv_threads"],
              "core": fast["core"], "ok_results": sum(r["status"] == "ok" for r in rows),
              "hr_bpm_median": _pct([r["hr_bpm"] for r in rows], 50)}
    paced_p99 = (latency["paced"] or latency["fast"])["p99_ms"]
    warm_first = (cold_start["warm_cache"] or {}).get("first_full_latency_s")
    verdict = {
        "replay_speed_x": _verdict(replay["speed_x"], TARGETS["replay_speed_x"], higher=True),
        "latency_p99_ms": _verdict(paced_p99, TARGETS["latency_p99_ms"], higher=False),
        "memory_mb": _verdict(memory["hwm_mb"], TARGETS["memory_mb"], higher=False),
        "first_result_s": _verdict(warm_first, TARGETS["first_result_s"], higher=False),
    }
    tracker_stats = dict(fast["stats"].get("tracker") or {}, settings=tracker or "default")
    if tracker_stats.get("frames"):
        tracker_stats["detections_per_frame"] = round(tracker_stats.get("detections", 0) / tracker_stats["frames"], 4)
    return {
        "host": dict(host, one_core=one_core),
        "recording": rec_info,
        "bundle": bundle_info,
        "targets": dict(TARGETS),
        "replay": replay,
        "latency": latency,
        "memory": memory,
        "cold_start": cold_start,
        "stages": stages,
        "tracker": tracker_stats,
        "orin_nano": orin,
        "profile": None if profiled is None else profiled.get("profile"),
        "verdict": verdict,
    }


def _verdict(value: float | None, target: float, higher: bool) -> dict[str, Any]:
    if value is None:
        return {"value": None, "target": target, "met": None}
    return {"value": value, "target": target, "met": bool(value >= target if higher else value <= target)}


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return fmt.format(v)


def format_report(rep: dict[str, Any]) -> str:
    """The report as Markdown: targets, stages, the Orin Nano estimate, top profile rows."""
    h, r, v = rep["host"], rep["recording"], rep["verdict"]
    b = rep["bundle"]
    lines = [
        f"host: {h['cpu']} at {_f(h['cpu_ghz'])} GHz ({h['simd_bits']}-bit SIMD), "
        f"{'one core' if h['one_core'] else 'all cores'}; python {h['versions']['python']}, "
        f"numba {h['versions'].get('numba')}, opencv {h['versions'].get('cv2')}, "
        f"onnxruntime {h['versions'].get('onnxruntime')}",
        f"recording: {r.get('kind')} {r.get('path')}: {_f(r.get('duration_s'), '{:.1f}')} s, "
        f"{r.get('frames')} frames {r.get('frame_size')} at {r.get('fps')} fps, video {r.get('video_codec')}, "
        f"streams {', '.join(r.get('streams') or []) or 'none'}",
        f"bundle: {b.get('model', 'none')} {b.get('version', '')} via {b.get('backend', '-')} "
        f"{b.get('precision', '-')} ({b.get('graph', '-')})",
        "",
        "| target | measured | goal | met |",
        "| --- | --- | --- | --- |",
    ]
    names = {"replay_speed_x": "replay speed (x real time, one core, decoding included)",
             "latency_p99_ms": "latency p99, window's last frame to result (ms)",
             "memory_mb": "resident memory peak, VmHWM (MB)",
             "first_result_s": "first full window to its result, warm Numba cache (s)"}
    for key, label in names.items():
        x = v[key]
        met = "-" if x["met"] is None else ("yes" if x["met"] else "NO")
        lines.append(f"| {label} | {_f(x['value'])} | {'>=' if key == 'replay_speed_x' else '<='} "
                     f"{x['target']:g} | {met} |")
    rp, lat, mem, cs = rep["replay"], rep["latency"], rep["memory"], rep["cold_start"]
    lines += [
        "",
        f"replay: {rp['media_s']} s of video in {rp['wall_s']} s = {_f(rp['speed_x'])}x; "
        f"{rp['frames']} frames ({_f(rp['fps_processed'], '{:.0f}')} fps), {rp['results']} results "
        f"({rp['ok_results']} ok), CPU busy {_f(rp['cpu_busy'])}; per CPU second {_f(rp['speed_x_cpu'])}x; "
        f"load average {rp['load_avg_1min']} on {h['cores']} cores",
        "CPU per second of video by thread (ms): " + ", ".join(
            f"{k} {v:.1f}" for k, v in rp["thread_cpu_ms_per_media_s"].items() if v > 0),
    ]
    for key in ("fast", "paced"):
        x = lat.get(key)
        if x:
            st = x["steady"]
            lines.append(f"latency ({x['how']}): p50 {_f(x['p50_ms'])} ms, p99 {_f(x['p99_ms'])} ms, "
                         f"max {_f(x['max_ms'])} ms (at t = {x['worst_t_s']} s) over {x['n']}; with the model: "
                         f"p50 {_f(x['with_model']['p50_ms'])}, p99 {_f(x['with_model']['p99_ms'])} ms over "
                         f"{x['with_model']['n']}; steady ({st['how']}): p50 {_f(st['p50_ms'])}, p99 "
                         f"{_f(st['p99_ms'])}, max {_f(st['max_ms'])} ms over {st['n']}")
    lines.append(f"memory: RSS ready {mem['rss_ready_mb']} MB, max {mem['rss_max_mb']} MB, end "
                 f"{mem['rss_end_mb']} MB, peak (VmHWM) {mem['hwm_mb']} MB, steady growth "
                 f"{_f(mem['growth_pct_steady'])} %; torch imported: {mem['torch_imported']}")
    for key in ("warm_cache", "cold_cache"):
        x = cs.get(key)
        if x:
            lines.append(f"start ({key.replace('_', ' ')}): launch to ready {x['launch_to_ready_s']} s "
                         f"(import edge.pipeline {x['import_s']} s, open + warm-up {x['construct_s']} s); first full window "
                         f"(t = {x['first_full_t_s']} s) to its result {_f(x['first_full_latency_s'], '{:.3f}')} s")
    lines += ["", "| stage | thread | per | wall mean ms | wall p99 ms | CPU ms | CPU ms per s of video | share |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in rep["stages"]:
        share = None if s["share"] is None else f"{100 * s['share']:.1f} %"
        lines.append(f"| {s['stage']} | {s['thread'] or '-'} | {s['per']} | {_f(s['mean_ms'], '{:.3f}')} | "
                     f"{_f(s['p99_ms'], '{:.3f}')} | {_f(s['cpu_ms'], '{:.3f}')} | "
                     f"{_f(s['cpu_ms_per_media_s'], '{:.1f}')} | {share or '-'} |")
    tr = rep.get("tracker") or {}
    if tr:
        lines.append(f"\ntracker: {tr.get('detections')} detections in {tr.get('frames')} frames "
                     f"({_f(tr.get('detections_per_frame'), '{:.3f}')} per frame), "
                     f"full searches {tr.get('full_searches')}")
    o = rep["orin_nano"]
    lines += ["", f"Jetson Orin Nano ({o['note']}): scalar-speed ratio host/A78AE {o['scalar_ratio']}",
              "", "| stage | per | FLOPs | bytes | host CPU ms | Orin ms | Orin ms per s of video | basis |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in o["stages"]:
        lines.append(f"| {s['stage']} | {s['per']} | {_f(s['flops'], '{:.3g}')} | {_f(s['bytes'], '{:.3g}')} | "
                     f"{_f(s['host_ms'], '{:.3f}')} | {_f(s['orin_ms'], '{:.3f}')} | "
                     f"{_f(s['orin_ms_per_media_s'], '{:.1f}')} | {s['basis']} |")
    e = o.get("engine")
    if e:
        lines.append(f"| engine (GPU) | window | {e['flops']:.3g} | {e['weight_bytes']:.3g} | "
                     f"{_f(e['host_cpu_ms'], '{:.3f}')} | {_f(e['orin_gpu_ms'], '{:.3f}')} | - | {e['basis']} |")
    lines.append(f"\nOrin Nano total: {o['cpu_ms_per_media_s']} ms of work per second of video on one A78AE core "
                 f"= {_f(o['speed_x_one_core'])}x real time ({o['cores_needed_realtime']} cores for real time)")
    if rep.get("profile"):
        lines += ["", "| function (fast replay, all threads) | calls | self s | cumulative s |",
                  "| --- | --- | --- | --- |"]
        for row in rep["profile"][:15]:
            lines.append(f"| {row['function']} | {row['calls']} | {row['self_s']} | {row['cumulative_s']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - the child entry point
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        sys.exit(_child_main(sys.argv[2:]))
    sys.exit("usage: python -m edge.bench_pipeline child RECORDING --mode fast|paced|first ...")
