"""Benchmark recordings: a synthetic session written as video plus sensor blocks, and the
description of any recording folder a benchmark replays.

A synthetic recording (:func:`make_sim_recording`) is a 640x480, 30 fps session whose video
is MPEG-4 Part 2 (an inter-frame codec that decodes at the speed class of H.264; OpenCV's
FFmpeg cannot encode H.264 here) and whose ECG, PPG and EDA are stored in blocks by
:class:`firmware_bridge.recording.Recorder`, as a sensor board sends them.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.cameras import open_camera
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.recording import Recorder, open_recording
from firmware_bridge.sim import SimConfig, synth_session
from firmware_bridge.types import SensorChunk

__all__ = ["BENCH_FILE", "SIM_CONFIG", "SIM_PHYSIO", "SIM_T0_NS", "SIM_VIDEO", "describe_recording",
           "make_sim_recording", "open_sources"]

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





_worker_session = None


def _render_init(config: dict) -> None:
    global _worker_session

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
                  info={"bench": "bench.recording"}) as rec:
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


def open_sources(path: Path, realtime: bool):
    """(camera, sensors) of a benchmark recording or a recording folder."""
    if (path / BENCH_FILE).is_file():
        meta = json.loads((path / BENCH_FILE).read_text(encoding="utf-8"))
        camera = open_camera(str(path / meta["video"]), fps=float(meta["fps"]), origin_ns=int(meta["t0_ns"]),
                             realtime=bool(realtime))
        rec = open_recording(path / meta["physio"])
        return camera, [rec.sensors(realtime=realtime)]

    rec = open_recording(path)
    camera = rec.camera(realtime=realtime) if rec.has_camera else None
    sensors = [rec.sensors(realtime=realtime)] if rec.streams else []
    return camera, sensors
