"""One measurement of the whole runtime in a fresh process (the children of ``emofuse bench
pipeline``).

Each child imports the runtime, opens :class:`edge.pipeline.Pipeline` on a recording, replays
it and prints its raw measurements as one JSON line, so that imports, caches and memory are
those of a real run, not of the parent's. Run as ``python -m bench.child RECORDING --mode
fast|paced|first ...``. Only the pipeline's public API is used: the constructor,
:meth:`~edge.pipeline.Pipeline.results`, :meth:`~edge.pipeline.Pipeline.stats`,
:attr:`~edge.pipeline.Pipeline.metadata` and :meth:`~edge.pipeline.Pipeline.close`.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.host import pin_one_core, proc_memory_mb, thread_cpu_s
from bench.recording import open_sources
from edge.tracker import FaceTracker
from firmware_bridge.errors import BadInputError, EmofuseError

__all__ = ["child_measure", "run_child"]

#: Prefix of the line a child prints its measurements on.
MARKER = "EMOFUSE-BENCH "



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
    core = pin_one_core() if one_core else None
    t_imp = time.perf_counter()
    # Imported here on purpose: the child measures the runtime's import time (t_imp).
    from edge.pipeline import Pipeline

    import_s = time.perf_counter() - t_imp
    path = Path(recording)
    camera, sensors = open_sources(path, realtime=(mode == "paced"))
    t_open = time.perf_counter()
    face_tracker = None
    if tracker:
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

    ap = argparse.ArgumentParser(prog="python -m bench.child")
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
    sys.stdout.write(MARKER + json.dumps(out, default=_jsonable) + "\n")
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


def run_child(recording: Path, mode: str, bundle: str, limit_s: float, *, one_core: bool,
               profile: bool = False, numba_cache_dir: str | None = None, timeout_s: float | None = None,
               tracker: dict | None = None) -> dict:
    env = dict(os.environ)
    env.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if numba_cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = numba_cache_dir
    cmd = [sys.executable, "-m", "bench.child", str(recording), "--mode", mode,
           "--bundle", bundle, "--limit-s", repr(float(limit_s)), "--launched", repr(time.time())]
    if not one_core:
        cmd.append("--all-cores")
    if profile:
        cmd.append("--profile")
    if tracker:
        cmd += ["--tracker", json.dumps(tracker)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            out = json.loads(line[len(MARKER):])
            if "error" in out:
                raise BadInputError(f"benchmark child ({mode}) failed: {out['error']}")
            return out
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise BadInputError(f"benchmark child ({mode}) exited with code {proc.returncode}: " + " | ".join(tail))



if __name__ == "__main__":  # pragma: no cover - the child entry point
    sys.exit(_child_main(sys.argv[1:]))
