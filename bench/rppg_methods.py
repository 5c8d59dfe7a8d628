"""``emofuse bench rppg-methods``: every rPPG method's heart-rate error on the synthetic sweep and
on the real webcam clip, and its per-window cost.

- Synthetic sweep: :func:`firmware_bridge.sim.synth_session` at the generator's default settings
  (:class:`~firmware_bridge.sim.SimConfig` defaults: 640x480, 30 fps, a 168 px face, 1 px head
  motion, a 2 % light change, sensor noise 2 grey levels, HRV) with only the rate, the seed and
  the length set; 45-180 bpm. The skin colour is taken as ``tests/edge/signals/
  test_synthetic_rppg.py`` takes it: :func:`edge.preprocess.face_colour` with
  :data:`edge.spec.DEFAULT` on the generator's exact (sub-pixel) face box. Each 10 s window is
  extracted, cleaned (:func:`edge.signals.rppg.rppg_clean`) and its rate estimated
  (:func:`edge.signals.hr.heart_rate`) on its own, against the true mean rate of that window.
- Real clip (``rppg/physrecorder-v01`` in the data folder): :func:`edge.offline.hr_session`, the
  runtime's own path as ``emofuse hr`` runs it (10 s windows, 1 s hop, :data:`edge.spec.DEFAULT`),
  with each method in place of the record's and every window's estimate kept (threshold 0), against
  the finger BVP's rate over the same absolute times.
- Cost: :func:`edge.signals.rppg.rppg_extract` on a 300 s trace, the best of 7 runs divided by
  the windows it computes and by the frames.

The colour of each synthetic session is computed once and shared by all methods, so a method
row differs from another only by the method. Figures go in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RATES_BPM = (45.0, 60.0, 75.0, 90.0, 110.0, 130.0, 155.0, 180.0)
DURATION_S = 20.0
WINDOW_S = 10.0
WINDOW_STARTS_S = (0.0, 5.0, 10.0)
CLIP = "rppg/physrecorder-v01"
DATA_ENV = "EMOFUSE_DATA"


@dataclass
class MethodErrors:
    """Signed heart-rate errors (estimate - truth, bpm) of one method, window by window."""

    method: str
    synthetic: list = field(default_factory=list)  # (rate_bpm, window start s, error bpm)
    real: list = field(default_factory=list)  # (window end s from the clip start, error bpm)


def default_data_dir() -> Path:
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path.cwd().parent / "shared" / "data"


def synthetic_colour(rate_bpm: float, seed: int, duration_s: float = DURATION_S):
    """(rgb float64 (N, 3), fs Hz, session) of one default-settings synthetic session."""
    from edge.preprocess import face_colour
    from edge.spec import DEFAULT
    from firmware_bridge.sim import SimConfig, synth_session

    s = synth_session(SimConfig(duration_s=duration_s, seed=seed, hr_bpm=rate_bpm))
    rgb = np.array([face_colour(f, s.face_box(i, exact=True), DEFAULT) for i, f in enumerate(s.frames())])
    return rgb, float(s.config.fps), s


def window_hr(rgb: np.ndarray, fs: float, method: str) -> float:
    """Heart rate (bpm) of one window of skin colour by one method, cleaned as the runtime does."""
    from edge.signals.hr import heart_rate
    from edge.signals.rppg import rppg_clean, rppg_extract

    return float(heart_rate(rppg_clean(rppg_extract(rgb, fs, method), fs), fs).hr_bpm)


def sweep_synthetic(methods, rates=RATES_BPM, duration_s=DURATION_S, window_starts=WINDOW_STARTS_S,
                    progress=None) -> dict:
    """{method: MethodErrors} over the synthetic sweep (seed 100 + index of the rate)."""
    out = {m: MethodErrors(m) for m in methods}
    for k, rate in enumerate(rates):
        rgb, fs, s = synthetic_colour(rate, 100 + k, duration_s)
        n = int(round(WINDOW_S * fs))
        for t0 in window_starts:
            if t0 + WINDOW_S > duration_s + 1e-9:
                continue
            i0 = int(round(t0 * fs))
            truth = s.mean_hr_bpm(t0, t0 + WINDOW_S)
            for m in methods:
                out[m].synthetic.append((rate, t0, window_hr(rgb[i0:i0 + n], fs, m) - truth))
        if progress:
            progress(f"synthetic {rate:g} bpm done")
    return out


def real_clip(methods, data_dir: Path, errors: dict, progress=None) -> bool:
    """Adds the real clip's per-window errors to ``errors``; False when the clip is absent."""
    from edge.offline import hr_session, resample_uniform
    from edge.signals.filters import bandpass
    from edge.signals.hr import heart_rate
    from edge.spec import DEFAULT

    clip = Path(data_dir) / CLIP
    if not (clip / "video_ZIP_H264.avi").is_file():
        return False
    bvp_csv = np.loadtxt(clip / "BVP.csv", delimiter=",", skiprows=1)
    fs_bvp = 1.0 / float(np.median(np.diff(bvp_csv[:, 0])))
    t_bvp, bvp = resample_uniform(bvp_csv[:, 0], bvp_csv[:, 1], fs_bvp)
    bvp = bandpass(bvp[:, 0], fs_bvp, 0.7, 3.5)
    for m in methods:
        est = hr_session(clip / "video_ZIP_H264.avi", DEFAULT, timestamps=clip / "frames_timestamp.csv", method=m,
                         min_pulse_quality=0.0)
        ends = est.t0_s + est.track.t_s
        for end, hr in zip(ends, est.track.hr_bpm):
            truth = heart_rate(bvp[(t_bvp > end - WINDOW_S) & (t_bvp <= end)], fs_bvp).hr_bpm
            errors[m].real.append((float(end - est.t0_s), float(hr - truth)))
        if progress:
            progress(f"real clip {m} done")
    return True


def cost_per_window(methods, fs: float = 30.0, length_s: float = 300.0, window_s: float = 1.6,
                    repeat: int = 7) -> list[dict]:
    """Per-window and per-frame time of :func:`rppg_extract` (best of ``repeat``), microseconds."""
    from edge.signals.rppg import METHODS, rppg_extract

    n = int(length_s * fs)
    t = np.arange(n) / fs
    rng = np.random.default_rng(0)
    pulse = np.sin(2 * np.pi * 1.2 * t)[:, None] * np.array([0.33, 0.77, 0.53])
    rgb = np.array([170.0, 120.0, 95.0]) * (1 + 0.003 * pulse) * (1 + 1e-3 * rng.normal(size=(n, 3)))
    rows = []
    for m in methods:
        rppg_extract(rgb[:200], fs, m, window_s)  # compile or load from cache
        L, hop = METHODS[m].geometry(fs, window_s)
        n_win = (n - L) // hop + 1
        best = np.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            rppg_extract(rgb, fs, m, window_s)
            best = min(best, time.perf_counter() - t0)
        rows.append(dict(method=m, window=L, hop=hop, us_per_window=best / n_win * 1e6,
                         us_per_frame=best / n * 1e6))
    return rows


def summarise(errors: dict) -> list[dict]:
    """One row per method: synthetic mean and worst |error| and windows over 5 bpm; real-clip
    mean |error|, worst and its per-window signed errors."""
    rows = []
    for m, e in errors.items():
        syn = np.abs([x[2] for x in e.synthetic]) if e.synthetic else np.array([np.nan])
        worst = int(np.nanargmax(syn)) if e.synthetic else None
        real = np.array([x[1] for x in e.real]) if e.real else np.array([])
        rows.append(dict(
            method=m,
            syn_windows=len(e.synthetic),
            syn_mean=float(np.mean(syn)),
            syn_worst=float(syn[worst]) if worst is not None else float("nan"),
            syn_worst_at_bpm=e.synthetic[worst][0] if worst is not None else None,
            syn_over_5=int(np.sum(syn > 5.0)),
            real_windows=int(real.size),
            real_mean=float(np.mean(np.abs(real))) if real.size else float("nan"),
            real_worst=float(np.max(np.abs(real))) if real.size else float("nan"),
            real_errors=[round(float(x), 2) for x in real],
            syn_by_rate={f"{rate:g}": float(np.mean([abs(x[2]) for x in e.synthetic if x[0] == rate]))
                         for rate in sorted({x[0] for x in e.synthetic})},
        ))
    return rows


def format_tables(rows: list[dict], cost: list[dict] | None = None) -> str:
    lines = ["| method | synthetic windows | mean abs error, bpm | worst window, bpm (at rate) | windows > 5 bpm "
             "| real-clip windows | real mean abs error, bpm | real worst, bpm |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        at = f" ({r['syn_worst_at_bpm']:g})" if r["syn_worst_at_bpm"] is not None else ""
        lines.append(f"| {r['method']} | {r['syn_windows']} | {r['syn_mean']:.2f} | {r['syn_worst']:.2f}{at} | "
                     f"{r['syn_over_5']} | {r['real_windows']} | {r['real_mean']:.2f} | {r['real_worst']:.2f} |")
    rates = list(rows[0]["syn_by_rate"]) if rows else []
    if rates:
        lines += ["", "Synthetic mean |error| per rate, bpm:", "",
                  "| method | " + " | ".join(rates) + " |", "| --- |" + " --- |" * len(rates)]
        for r in rows:
            lines.append(f"| {r['method']} | " + " | ".join(f"{r['syn_by_rate'][k]:.2f}" for k in rates) + " |")
    if any(r["real_windows"] for r in rows):
        lines += ["", "Real clip, signed error per window (estimate - finger BVP, bpm):", ""]
        for r in rows:
            lines.append(f"- {r['method']}: " + " ".join(f"{x:+.1f}" for x in r["real_errors"]))
    if cost:
        lines += ["", "| method | window, frames | hop | us per window | us per frame |", "| --- | --- | --- | --- | --- |"]
        for c in cost:
            lines.append(f"| {c['method']} | {c['window']} | {c['hop']} | {c['us_per_window']:.2f} | "
                         f"{c['us_per_frame']:.3f} |")
    return "\n".join(lines) + "\n"
