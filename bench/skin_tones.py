"""Skin tones: heart-rate error per Monk tone, and face detection per tone and on real images.

``python -m bench.skin_tones hr``: the synthetic generator at its default settings
(:class:`~firmware_bridge.sim.SimConfig`: 640x480, 30 fps, a 168 px face, 1 px head motion, a
2 % light change, sensor noise 2 grey levels, HRV) with the rate, the seed, the length and the
Monk tone set; 45-180 bpm; each 10 s window against the true mean rate of that window. Two
paths per session:

- ``runtime``: :func:`edge.offline.hr_session` on the ``sim://`` URI of the session (the
  runtime's own face tracker, skin colour, pulse window, heart rate; the record is
  :data:`edge.spec.DEFAULT`; the gate's threshold 0 so every window's estimate is kept, and the
  share the default threshold 0.5 reports is counted);
- ``exact``: :func:`edge.preprocess.face_colour` with :data:`edge.spec.DEFAULT` on the
  generator's exact (sub-pixel) face box, each window extracted, cleaned and estimated on its
  own (as ``tests/edge/signals/test_synthetic_rppg.py``), so the face detector plays no part.

``python -m bench.skin_tones detect``: frames with a face box per tone (the device's
:class:`edge.tracker.FaceTracker` over a 6 s default-settings session, per contrast setting
``none`` / ``clahe``), and the full-frame detector on real images (the real webcam clip frame
by frame, 1 in 20 photos of the faces collection, and scikit-image's bundled non-face images):
detection rate and false boxes.

Figures go in docs/BENCHMARKS.md ("Skin tones").
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

TONES = tuple(range(1, 11))
RATES_BPM = (45.0, 75.0, 110.0, 145.0, 180.0)
DURATION_S = 20.0
WINDOW_S = 10.0
WINDOW_STARTS_S = (0.0, 5.0, 10.0)
DATA_ENV = "EMOFUSE_DATA"
# scikit-image's bundled images without a face (the cameraman and the astronaut have one).
NON_FACE_IMAGES = ("coffee", "chelsea", "rocket", "brick", "grass", "gravel", "text", "page", "moon", "horse",
                   "coins", "hubble_deep_field", "immunohistochemistry", "clock", "cell")


def default_data_dir() -> Path:
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path.cwd().parent / "shared" / "data"


def _seed(tone: int, k: int) -> int:
    """The k-th session's seed, the same for every tone: each tone then sees the same heart,
    breathing, motion, light and noise, and the table compares tones, not sessions."""
    del tone
    return 1000 + k


# -- heart rate per tone ---------------------------------------------------------------------------

def exact_box_errors(tone: int, rate_bpm: float, seed: int, duration_s: float = DURATION_S,
                     window_starts=WINDOW_STARTS_S) -> list[float]:
    """Signed errors (bpm) of each 10 s window on the generator's exact face box."""
    from edge.preprocess import face_colour
    from edge.signals.hr import heart_rate
    from edge.signals.rppg import rppg_clean, rppg_extract
    from edge.spec import DEFAULT
    from firmware_bridge.sim import SimConfig, synth_session

    s = synth_session(SimConfig(duration_s=duration_s, seed=seed, hr_bpm=rate_bpm, skin_tone=tone))
    rgb = np.array([face_colour(f, s.face_box(i, exact=True), DEFAULT) for i, f in enumerate(s.frames())])
    fs = float(s.config.fps)
    n = int(round(WINDOW_S * fs))
    out = []
    for t0 in window_starts:
        if t0 + WINDOW_S > duration_s + 1e-9:
            continue
        i0 = int(round(t0 * fs))
        hr = heart_rate(rppg_clean(rppg_extract(rgb[i0:i0 + n], fs, DEFAULT.rppg.method), fs), fs).hr_bpm
        out.append(float(hr - s.mean_hr_bpm(t0, t0 + WINDOW_S)))
    return out


def runtime_errors(tone: int, rate_bpm: float, seed: int, record=None, duration_s: float = DURATION_S,
                   hop_s: float = 5.0) -> tuple[list[float], list[float]]:
    """(signed errors bpm, gate qualities) of each 10 s window through :func:`edge.offline.hr_session`."""
    from edge.offline import hr_session
    from edge.spec import DEFAULT
    from firmware_bridge.sim import SimConfig, synth_session

    record = DEFAULT if record is None else record
    uri = f"sim://?hr_bpm={rate_bpm:g}&duration_s={duration_s:g}&seed={seed}&skin_tone={tone}"
    est = hr_session(uri, record, hop_s=hop_s, min_pulse_quality=0.0)
    s = synth_session(SimConfig(duration_s=duration_s, seed=seed, hr_bpm=rate_bpm, skin_tone=tone))
    errs, quals = [], []
    for end, hr, q in zip(est.track.t_s - est.t0_s, est.track.hr_bpm, est.track.quality):
        truth = s.mean_hr_bpm(max(0.0, end - WINDOW_S), end)
        errs.append(float(hr - truth) if np.isfinite(hr) else float("nan"))
        quals.append(float(q))
    return errs, quals


def hr_table(tones=TONES, rates=RATES_BPM, paths=("exact", "runtime"), duration_s=DURATION_S,
             log=print) -> dict:
    """{path: {tone: dict(mae, worst, n, reported, mae_reported, worst_reported)}} over the sweep
    (``*_reported``: the runtime's windows at gate quality >= 0.5, what a user is shown; NaN for
    the exact path, which has no gate)."""
    out: dict = {p: {} for p in paths}
    for tone in tones:
        for path in paths:
            errs, quals = [], []
            for k, rate in enumerate(rates):
                if path == "exact":
                    errs += exact_box_errors(tone, rate, _seed(tone, k), duration_s)
                else:
                    e, q = runtime_errors(tone, rate, _seed(tone, k), duration_s=duration_s)
                    errs += e
                    quals += q
            a = np.abs(np.asarray(errs, np.float64))
            shown = a[np.asarray(quals) >= 0.5] if quals else np.zeros(0)
            shown = shown[np.isfinite(shown)]
            out[path][tone] = dict(mae=float(np.nanmean(a)), worst=float(np.nanmax(a)), n=int(a.size),
                                   mae_reported=float(shown.mean()) if shown.size else float("nan"),
                                   worst_reported=float(shown.max()) if shown.size else float("nan"),
                                   missing=int(np.isnan(a).sum()),
                                   reported=(float(np.mean(np.asarray(quals) >= 0.5)) if quals else float("nan")))
            log(f"tone {tone} {path}: mean {out[path][tone]['mae']:.2f} worst {out[path][tone]['worst']:.2f} bpm "
                f"({a.size} windows)")
    return out


# -- detection ------------------------------------------------------------------------------------

def tracked_share(tone: int, contrast: str, seed: int = 2, duration_s: float = 6.0) -> tuple[float, float]:
    """(share of frames with a tracker box, share of detections that found a face) on one session."""
    from edge.tracker import FaceTracker
    from firmware_bridge.sim import SimConfig, synth_session

    s = synth_session(SimConfig(duration_s=duration_s, seed=seed, skin_tone=tone))
    tr = FaceTracker(contrast=contrast)
    boxed = det = found = 0
    for f in s.frames():
        st = tr.update(f)
        boxed += st.box is not None
        det += st.detected
        found += st.detected and st.n_faces > 0
    return boxed / len(s), found / max(det, 1)


def _iou(a, b) -> float:
    from edge.tracker import box_iou

    return box_iou(a, b)


def real_detection(contrast: str, data_dir: Path, photo_step: int = 20) -> dict:
    """Full-frame detector on real images: {set: (images, with a true face box, false boxes)}."""
    import cv2

    from edge.face import HaarFaceDetector

    det = HaarFaceDetector(contrast=contrast)
    out = {}
    clip = data_dir / "rppg" / "physrecorder-v01" / "video_ZIP_H264.avi"
    if clip.is_file():
        cap = cv2.VideoCapture(str(clip))
        boxes = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            boxes.append(det.detect(frame))
        cap.release()
        firsts = np.array([b[0] for b in boxes if b], np.float64)
        ref = np.median(firsts, axis=0) if len(firsts) else np.zeros(4)
        hit = sum(any(_iou(x, ref) >= 0.3 for x in b) for b in boxes)
        false = sum(sum(_iou(x, ref) < 0.3 for x in b) for b in boxes)
        out["webcam clip"] = (len(boxes), hit, false)
    faces = data_dir / "faces" / "images"
    if faces.is_dir():
        from firmware_bridge.sim.faces import CANONICAL_BOX

        files = sorted(faces.iterdir())[::photo_step]
        n = hit = false = 0
        for p in files:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                continue
            h, w = img.shape[:2]
            cx, cy, cw, ch = CANONICAL_BOX
            ref = (cx * w / 128, cy * h / 128, cw * w / 128, ch * h / 128)
            b = det.detect(img)
            n += 1
            hit += any(_iou(x, ref) >= 0.3 for x in b)
            false += sum(_iou(x, ref) < 0.3 for x in b)
        out["face photos"] = (n, hit, false)
    from skimage import data

    n = false = 0
    for name in NON_FACE_IMAGES:
        img = getattr(data, name)()
        if img.dtype != np.uint8:
            img = (np.clip(img.astype(np.float64) / max(float(img.max()), 1e-9), 0, 1) * 255).astype(np.uint8)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        img = np.ascontiguousarray(img[:, :, 2::-1]) if img.shape[2] >= 3 else img
        n += 1
        false += len(det.detect(img.astype(np.uint8)))
    out["non-face images"] = (n, 0, false)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.skin_tones", description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("hr", "detect"))
    ap.add_argument("--tones", default="1-10", help="e.g. 1-10 or 1,5,10")
    ap.add_argument("--paths", default="exact,runtime")
    ap.add_argument("--rates", default=",".join(f"{r:g}" for r in RATES_BPM), help="bpm, comma-separated")
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args(argv)
    if "-" in args.tones:
        a, b = (int(v) for v in args.tones.split("-"))
        tones = tuple(range(a, b + 1))
    else:
        tones = tuple(int(v) for v in args.tones.split(","))
    t0 = time.perf_counter()
    if args.what == "hr":
        table = hr_table(tones, rates=tuple(float(v) for v in args.rates.split(",")), paths=tuple(args.paths.split(",")), log=lambda m: print(m, file=sys.stderr,
                                                                                          flush=True))
        runtime = "runtime" in table
        print("| Monk tone | " + " | ".join(f"{p} mean / worst bpm" for p in table)
              + (" | runtime reported | runtime reported windows' mean / worst bpm |" if runtime else " |"))
        print("|---" * (len(table) + 1 + 2 * runtime) + "|")
        for tone in tones:
            cells = [f"{table[p][tone]['mae']:.2f} / {table[p][tone]['worst']:.1f}" for p in table]
            if runtime:
                r = table["runtime"][tone]
                cells += [f"{r['reported']:.0%}", f"{r['mae_reported']:.2f} / {r['worst_reported']:.1f}"]
            print(f"| {tone} | " + " | ".join(cells) + " |")
        for p in table:
            m = [table[p][t]["mae"] for t in tones]
            print(f"{p}: worst tone / best tone mean error = {max(m):.2f} / {min(m):.2f} = {max(m) / min(m):.2f}")
        if runtime:
            m = [table["runtime"][t]["mae_reported"] for t in tones]
            print(f"runtime, reported windows: worst tone / best tone mean error = {max(m):.2f} / {min(m):.2f} = "
                  f"{max(m) / min(m):.2f}")
    else:
        data_dir = args.data or default_data_dir()
        print("| Monk tone | boxed none | boxed clahe | detections found none | clahe |")
        print("|---|---|---|---|---|")
        for tone in tones:
            a = tracked_share(tone, "none")
            b = tracked_share(tone, "clahe")
            print(f"| {tone} | {a[0]:.0%} | {b[0]:.0%} | {a[1]:.0%} | {b[1]:.0%} |", flush=True)
        for contrast in ("none", "clahe"):
            for name, (n, hit, false) in real_detection(contrast, data_dir).items():
                print(f"{contrast}: {name}: {n} images, true face found in {hit}, false boxes {false}", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
