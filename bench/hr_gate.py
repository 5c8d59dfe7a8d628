"""Labelled rPPG windows and the fit of the heart-rate quality gate (``edge.signals.hr.gate``).

Not run in CI. Two steps, both reproducible by seed::

    python -m bench.hr_gate generate --cache DIR --seeds 0-199   # synthetic sessions -> face colours
    python -m bench.hr_gate fit --cache DIR --seeds 0-199 [--real ../shared/data/rppg/physrecorder-v01]
    python -m bench.hr_gate photos --seeds 0-19    # printed photos at every face size

``generate`` renders one synthetic session per seed (:func:`session_config` draws its face size,
heart rate, motion, light, sensor noise, skin tone and whether it is a printed photo from the
seed alone) and stores the face colour of every frame (:func:`edge.preprocess.face_colour` with
:data:`edge.spec.DEFAULT` on the exact face box) with the true heart rate of every 10 s window,
one ``seed_NNNN.npz`` per session. ``fit`` forms each window's pulse exactly as the runtime does
(``rppg_extract`` + ``rppg_clean`` on the window, :func:`edge.signals.hr.heart_rate`), computes
the gate's features (:func:`edge.signals.hr.gate_features`), labels a window right when its
estimate is within 5 bpm of the truth (a photo's windows are all wrong: it has no pulse), fits a
logistic regression on the training seeds and reports precision and coverage on the held-out
seeds (seed % 5 == 0) and per window on the real clip. The coefficients it prints go into
``edge.signals.hr`` (``GATE_COEF``) by hand, with the command line that made them.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

FRAME_H = 480
FACE_SIZES = {"default": None, "60px": 60 / FRAME_H, "80px": 80 / FRAME_H, "120px": 120 / FRAME_H}
DURATION_S = 30.0
WINDOW_S = 10.0
HOP_S = 2.0
RIGHT_BPM = 5.0
# Seeds from here on are printed photos only (more of the rare photo windows that look like a pulse).
PHOTO_ONLY_FROM = 1000
# The operating point's margin over the training photos (log-odds) and its training precision.
PHOTO_MARGIN = 0.5
TRAIN_PRECISION = 0.99


def held_out(seed: int) -> bool:
    """Evaluation sessions: every fifth seed; the rest are fitted on."""
    return seed % 5 == 0


def session_config(seed: int):
    """The :class:`firmware_bridge.sim.SimConfig` of one labelled session, drawn from ``seed`` alone.

    Face size cycles through :data:`FACE_SIZES` with the seed; a quarter of the sessions are a
    printed photo (``pulse_amplitude`` 0), and every session from :data:`PHOTO_ONLY_FROM` on;
    the rest have the default pulse (0.3 %) or a weaker one (0.2 %, 0.15 %) so the gate sees
    live windows that fail.
    """
    from firmware_bridge.sim import SimConfig

    rng = np.random.default_rng([20261203, seed])
    face = list(FACE_SIZES)[seed % len(FACE_SIZES)]
    photo = bool(rng.random() < 0.25) or seed >= PHOTO_ONLY_FROM
    rate = float(rng.uniform(45.0, 180.0))
    if rng.random() < 0.3:
        end = float(np.clip(rate + rng.uniform(-25.0, 25.0), 45.0, 180.0))
        hr = ((0.0, rate), (DURATION_S, end))
    else:
        hr = rate
    tone = int(rng.integers(1, 11)) if rng.random() < 0.8 else None
    kw = dict(
        duration_s=DURATION_S, seed=1000 + seed, hr_bpm=hr,
        hrv_sdnn_ms=float(rng.choice([20.0, 50.0, 80.0])),
        motion_px=float(rng.choice([0.5, 1.0, 2.0, 3.0, 5.0])),
        motion_scale_pct=float(rng.choice([0.3, 0.5, 1.0])),
        illumination_pct=float(rng.choice([2.0, 5.0, 10.0])),
        noise_sigma=float(rng.choice([1.0, 2.0, 4.0, 6.0])),
        pulse_amplitude=0.0 if photo else float(rng.choice([0.003, 0.003, 0.002, 0.0015])),
        skin_tone=tone,
    )
    if FACE_SIZES[face] is not None:
        kw["face_scale"] = FACE_SIZES[face]
    return face, SimConfig(**kw)


def generate(cache: Path, seeds) -> None:
    from edge.preprocess import face_colour
    from edge.spec import DEFAULT
    from firmware_bridge.sim import synth_session

    cache.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        path = cache / f"seed_{seed:04d}.npz"
        if path.exists():
            continue
        t0 = time.perf_counter()
        face, cfg = session_config(seed)
        s = synth_session(cfg)
        rgb = np.array([face_colour(f, s.face_box(i, exact=True), DEFAULT) for i, f in enumerate(s.frames())])
        fs = cfg.fps
        starts = np.arange(0.0, DURATION_S - WINDOW_S + 1e-9, HOP_S)
        truth = np.array([s.mean_hr_bpm(a, a + WINDOW_S) for a in starts])
        np.savez(path, rgb=rgb, fs=fs, starts=starts, truth=truth, face=face,
                 photo=cfg.pulse_amplitude == 0.0, tone=-1 if cfg.skin_tone is None else cfg.skin_tone,
                 motion_px=cfg.motion_px, noise_sigma=cfg.noise_sigma, amplitude=cfg.pulse_amplitude)
        print(f"seed {seed}: {face} photo={cfg.pulse_amplitude == 0.0} {time.perf_counter() - t0:.1f} s",
              flush=True)


def window_rows(path: Path):
    """(features (K, F), error_bpm (K,), photo, face) of one cached session's windows, each
    pulse formed as the runtime forms it."""
    from edge.signals.hr import gate_features, heart_rate
    from edge.signals.rppg import rppg_clean, rppg_extract
    from edge.spec import DEFAULT

    d = np.load(path)
    fs = float(d["fs"])
    n = int(round(WINDOW_S * fs))
    r = DEFAULT.rppg
    feats, errs = [], []
    for start, truth in zip(d["starts"], d["truth"]):
        i0 = int(round(start * fs))
        pulse = rppg_clean(rppg_extract(d["rgb"][i0:i0 + n], fs, r.method, r.method_window_s), fs,
                           **r.clean.kwargs())
        h = heart_rate(pulse, fs, r.clean.lo, r.clean.hi)
        feats.append(gate_features(pulse, fs, h, r.clean.lo, r.clean.hi))
        errs.append(abs(h.hr_bpm - truth) if math.isfinite(h.hr_bpm) else math.inf)
    return np.array(feats), np.array(errs), bool(d["photo"]), str(d["face"]), int(d["tone"])


def real_rows(folder: Path):
    """The real clip through the runtime (``Pipeline.from_recording`` with :data:`edge.spec.DEFAULT`):
    per full pulse window (t_s, features, estimate bpm, finger reference bpm, snr-gate quality)."""
    from edge.offline import resample_uniform
    from edge.pipeline import Pipeline
    from edge.signals.filters import bandpass
    from edge.signals.hr import gate_features, heart_rate
    from edge.spec import DEFAULT

    p = DEFAULT.replace(**{"rppg.hr_gate": "snr"})
    with Pipeline.from_recording(folder, None, preprocessing=p) as pipe:
        results = [r for r in pipe.results() if r.pulse is not None and r.t_s >= p.rppg.pulse_window_s - 1e-9]
    stamps = np.loadtxt(folder / "frames_timestamp.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(folder / "BVP.csv", delimiter=",", skiprows=1)
    fs_b = 1.0 / float(np.median(np.diff(b[:, 0])))
    t_b, bvp = resample_uniform(b[:, 0] - stamps[0, 1], b[:, 1], fs_b)
    bvp = bandpass(bvp[:, 0], fs_b, 0.7, 3.5)
    rows = []
    for r in results:
        pulse = r.pulse.astype(np.float64)
        h = heart_rate(pulse, r.pulse_fs_hz, p.rppg.clean.lo, p.rppg.clean.hi)
        span = (t_b > r.t_s - p.rppg.pulse_window_s) & (t_b <= r.t_s)
        ref = heart_rate(bvp[span], fs_b).hr_bpm
        rows.append((r.t_s, gate_features(pulse, r.pulse_fs_hz, h, p.rppg.clean.lo, p.rppg.clean.hi), h.hr_bpm,
                     ref, h.quality))
    return rows


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-2, iters: int = 50):
    """Weighted logistic regression by Newton's method (IRLS) with a small ridge on the weights
    (not the bias). x (K, F) float64, y (K,) 0/1, w (K,) sample weights -> (coef (F,), bias)."""
    a = np.column_stack([np.ones(len(x)), x])
    beta = np.zeros(a.shape[1])
    ridge = np.full(a.shape[1], l2)
    ridge[0] = 0.0
    for _ in range(iters):
        z = np.clip(a @ beta, -30, 30)
        p = 1.0 / (1.0 + np.exp(-z))
        g = a.T @ (w * (p - y)) + ridge * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(ridge)
        step = np.linalg.solve(hess, g)
        beta -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return beta[1:], float(beta[0])


def _scores(x, coef, bias):
    return 1.0 / (1.0 + np.exp(-np.clip(bias + x @ coef, -700, 700)))


def fit(cache: Path, real: Path, seeds=None, photo_weight: float = 5.0, real_weight: float = 5.0) -> None:
    """Fit the gate, choose its operating point, print the constants and the held-out figures.

    Weights: a photo window counts ``photo_weight`` times (a heart rate read off a photo is the
    worst error), each real-clip window ``real_weight`` times (11 windows against ~1000).
    Operating point: :data:`PHOTO_MARGIN` (in log-odds) above the highest-scoring training photo
    window, raised further if needed until the training windows it passes are
    :data:`TRAIN_PRECISION` right; the bias is shifted so that this score is quality 0.5.
    """
    from edge.signals.hr import GATE_FEATURES, snr_quality

    files = sorted(f for f in cache.glob("seed_*.npz") if seeds is None or int(f.stem.split("_")[1]) in seeds)
    if not files:
        raise SystemExit(f"no sessions in {cache}: run generate first")
    sets = {"train": [], "test": []}
    for f in files:
        seed = int(f.stem.split("_")[1])
        sets["test" if held_out(seed) else "train"].append((seed, *window_rows(f)))
    def stack(rows):
        x = np.concatenate([r[1] for r in rows])
        err = np.concatenate([r[2] for r in rows])
        photo = np.concatenate([np.full(len(r[2]), r[3]) for r in rows])
        face = np.concatenate([np.full(len(r[2]), r[4]) for r in rows])
        tone = np.concatenate([np.full(len(r[2]), r[5]) for r in rows])
        y = ((err <= RIGHT_BPM) & ~photo).astype(np.float64)
        return x, y, err, photo, face, tone
    xtr, ytr, _, photo_tr, _, _ = stack(sets["train"])
    xte, yte, err_te, photo_te, face_te, tone_te = stack(sets["test"])
    rr = real_rows(real) if real.is_dir() else []
    print(f"sessions: {len(sets['train'])} train, {len(sets['test'])} held out; windows {len(ytr)} / {len(yte)}; "
          f"real clip windows {len(rr)}")
    x, y, w = xtr, ytr, np.where(photo_tr, photo_weight, 1.0)
    if rr:
        xr = np.array([r[1] for r in rr])
        yr = np.array([float(abs(r[2] - r[3]) <= RIGHT_BPM) for r in rr])
        x, y, w = np.vstack([x, xr]), np.r_[y, yr], np.r_[w, np.full(len(rr), real_weight)]
    coef, bias = fit_logistic(x, y, w)
    z_tr = bias + xtr @ coef
    z_op = float(z_tr[photo_tr].max()) + PHOTO_MARGIN
    while True:
        sel = z_tr >= z_op
        if not sel.any() or ytr[sel].mean() >= TRAIN_PRECISION:
            break
        z_op += 0.05
    bias_op = bias - z_op
    thr = 1.0 / (1.0 + math.exp(-z_op))
    if rr:
        # The same fit without the real clip: does the clip pass a gate that never saw it?
        c0, b0 = fit_logistic(xtr, ytr, np.where(photo_tr, photo_weight, 1.0))
        z0 = b0 + xtr @ c0
        op0 = float(z0[photo_tr].max()) + PHOTO_MARGIN
        n0 = int(sum(b0 + r[1] @ c0 >= op0 for r in rr))
        print(f"without the real clip in the fit: coef {tuple(round(float(c), 4) for c in c0)}; real clip windows "
              f"reported {n0}/{len(rr)}")
    print(f"features {GATE_FEATURES}")
    print(f"fit: coef {tuple(round(float(c), 4) for c in coef)} bias {bias:.4f}; operating point p = {thr:.3f} "
          f"-> GATE_COEF = {tuple(round(float(c), 4) for c in coef)}, GATE_BIAS = {bias_op:.4f}")
    def report(name, xs, ys, photo, errs, q):
        sel = q >= 0.5
        live = ~photo
        right_live = (errs <= RIGHT_BPM) & live
        prec = ys[sel].mean() if sel.any() else float("nan")
        hit = int((sel & right_live).sum())
        print(f"  {name}: reported {sel.sum()}/{len(ys)}; precision {prec:.4f}; coverage of right live windows "
              f"{hit}/{right_live.sum()} = {hit / max(right_live.sum(), 1):.3f}; "
              f"photo windows reported {(sel & photo).sum()}/{photo.sum()}")
    for name, q in (("logistic", _scores(xte, coef, bias_op)), ("snr (q >= 0.5)", snr_quality(xte[:, 0]))):
        print(f"held-out windows, gate {name}:")
        report("all", xte, yte, photo_te, err_te, q)
        for fc in FACE_SIZES:
            m = face_te == fc
            report(fc, xte[m], yte[m], photo_te[m], err_te[m], q[m])
        for tones, m in (("tone 1-3", (tone_te >= 1) & (tone_te <= 3)), ("tone 4-7", (tone_te >= 4) & (tone_te <= 7)),
                         ("tone 8-10", tone_te >= 8), ("own colours", tone_te < 0)):
            report(tones, xte[m], yte[m], photo_te[m], err_te[m], q[m])
    if rr:
        print("real clip: t_s, estimate, reference, |error|, snr quality, logistic quality, reported")
        for t, f, est, ref, q_snr in rr:
            q = float(_scores(f[None, :], coef, bias_op)[0])
            print(f"  {t:5.1f} {est:6.1f} {ref:6.1f} {abs(est - ref):4.1f} {q_snr:.3f} {q:.3f} {q >= 0.5}")


def photos(seeds, duration_s: float = 20.0) -> None:
    """Printed photos at every face size of :data:`FACE_SIZES` for each seed, with the nuisances of
    ``tests/edge/signals/test_synthetic_rppg.py`` (head sway 2 px and 0.5 %, 5 % light change,
    noise 2): the default record's gate quality of every 10 s window at the runtime's 1 s hop."""
    from edge.pipeline.runner import PipelineOptions
    from edge.preprocess import face_colour
    from edge.signals.hr import heart_rate, pulse_quality
    from edge.signals.rppg import rppg_clean, rppg_extract
    from edge.spec import DEFAULT
    from firmware_bridge.sim import SimConfig, synth_session

    r = DEFAULT.rppg
    thr = PipelineOptions.min_pulse_quality
    for face, scale in FACE_SIZES.items():
        q = []
        for seed in seeds:
            kw = {} if scale is None else {"face_scale": scale}
            s = synth_session(SimConfig(duration_s=duration_s, seed=200 + seed, hr_bpm=75, pulse_amplitude=0.0,
                                        motion_px=2.0, motion_scale_pct=0.5, illumination_pct=5.0, noise_sigma=2.0,
                                        hrv_sdnn_ms=50.0, **kw))
            fs = s.config.fps
            rgb = np.array([face_colour(f, s.face_box(i, exact=True), DEFAULT) for i, f in enumerate(s.frames())])
            n = int(round(WINDOW_S * fs))
            for i0 in range(0, rgb.shape[0] - n + 1, int(round(fs))):
                pulse = rppg_clean(rppg_extract(rgb[i0:i0 + n], fs, r.method, r.method_window_s), fs,
                                   **r.clean.kwargs())
                h = heart_rate(pulse, fs, r.clean.lo, r.clean.hi)
                q.append(pulse_quality(pulse, fs, h, r.hr_gate, r.clean.lo, r.clean.hi))
        q = np.array(q)
        print(f"photo, {face}: {len(seeds)} seeds, {q.size} windows, reported {(q >= thr).sum()}, quality max "
              f"{q.max():.3f}, 99th percentile {np.percentile(q, 99):.3f}", flush=True)


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.hr_gate", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--cache", type=Path, required=True)
    g.add_argument("--seeds", default="0-199")
    f = sub.add_parser("fit")
    f.add_argument("--cache", type=Path, required=True)
    f.add_argument("--real", type=Path, default=Path("../shared/data/rppg/physrecorder-v01"))
    f.add_argument("--seeds", default=None, help="cached seeds to use (default all), e.g. 0-199")
    ph = sub.add_parser("photos")
    ph.add_argument("--seeds", default="0-19")
    a = ap.parse_args(argv)
    if a.cmd == "generate":
        generate(a.cache, _seeds(a.seeds))
    elif a.cmd == "photos":
        photos(_seeds(a.seeds))
    else:
        fit(a.cache, a.real, None if a.seeds is None else set(_seeds(a.seeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
