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
- a **Jetson Orin Nano estimate** from per-stage FLOPs and bytes
  (:func:`bench.orin.orin_nano_estimate`), marked as an estimate, with every figure it assumes
  (:data:`bench.orin.ORIN_NANO`).

The recording is either a folder (:func:`firmware_bridge.recording.open_recording`: an
emofuse recording or a PhysRecorder folder such as the real H.264 clip) or ``"sim"``: a
synthetic session (:func:`bench.recording.make_sim_recording`).

Speed is measured here, never in timed tests (STYLE rule 14); the figures go in
docs/PERFORMANCE.md. The children are :mod:`bench.child`; they use only the public API of
:class:`edge.pipeline.Pipeline` and its documented ``Result`` / ``stats()`` / ``metadata``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.child import run_child
from bench.host import host_facts
from bench.orin import onnx_flops, orin_nano_estimate
from bench.recording import BENCH_FILE, describe_recording, make_sim_recording
from edge.bundle import load_bundle
from edge.pipeline import STAGES, resolve_bundle
from firmware_bridge.errors import BadInputError, ConfigError

__all__ = ["REPORT_FIELDS", "TARGETS", "bench_pipeline", "format_report"]

#: Issue 6, section 5.
TARGETS = {"replay_speed_x": 10.0, "latency_p99_ms": 50.0, "memory_mb": 400.0, "first_result_s": 2.0}

#: Top-level keys of the report of :func:`bench_pipeline`.
REPORT_FIELDS = ("host", "recording", "bundle", "targets", "replay", "latency", "memory", "cold_start",
                 "stages", "tracker", "orin_nano", "profile", "verdict")

#: Per-frame stages of ``Result.latency_ms`` (means over the hop's frames); the rest are per window.
FRAME_STAGES = ("read", "track", "roi", "crop")
#: Per-window stages that make up ``compute`` (the inference stage's own work).
COMPUTE_STAGES = ("pulse", "tfr", "contact", "physio", "encoder", "engine")



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
            run = run_child(path, "fast", bundle_arg, limit_s, one_core=one_core, tracker=tracker)
            if fast is None or run["wall_s"] < fast["wall_s"]:
                fast = run
        profiled = None
        if profile:
            say("fast replay under cProfile (for the profile table only)")
            profiled = run_child(path, "fast", bundle_arg, limit_s, one_core=one_core, profile=True, tracker=tracker)
        paced = None
        if paced_s > 0:
            say(f"paced replay in live mode ({paced_s:g} s of session time at real speed)")
            paced = run_child(path, "paced", bundle_arg, min(paced_s, limit_s), one_core=one_core, tracker=tracker)
        say("start-up with the Numba cache warm")
        warm = run_child(path, "first", bundle_arg, limit_s, one_core=one_core, tracker=tracker)
        cold = None
        if cold_cache:
            cache = tempfile.mkdtemp(prefix="emofuse-numba-cold-")
            try:
                say("start-up with an empty Numba cache (compiles every kernel)")
                cold = run_child(path, "first", bundle_arg, limit_s, one_core=one_core, numba_cache_dir=cache,
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
        b = load_bundle(meta["bundle"]["path"])
        p = b.preprocessing.to_dict()  # the Orin estimate reads the manifest's plain JSON form
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

