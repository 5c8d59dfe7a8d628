"""``emofuse hr VIDEO``: heart rate from a recorded face video (offline rPPG).

Runs :mod:`edge.offline` (Haar face, forehead + cheek skin colour, rPPG, windowed spectral
heart rate) and prints one row per window plus a summary, as a table or as JSON lines.
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np

from edge.offline import estimate_hr, video_rgb_trace
from edge.signals.rppg import METHODS
from edge.signals.tfr import tfr_compute, tfr_params
from firmware_bridge.errors import BadInputError, ConfigError

# Clips with more frames than this get a progress bar (when stderr is a terminal).
PROGRESS_MIN_FRAMES = 300


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "hr",
        help="heart rate from a face video (rPPG)",
        description="Estimate the heart rate over sliding windows from a recorded face video: "
        "Haar face box, skin colour of forehead and cheeks, an rPPG method, spectral peak.",
    )
    p.add_argument("video", metavar="VIDEO", help="video file readable by OpenCV")
    p.add_argument(
        "--timestamps", metavar="CSV",
        help="frame,timestamp CSV (UNIX seconds) of the frames' capture times "
        "(default: times from the video's frame rate)",
    )
    p.add_argument(
        "--method", default="pos", choices=sorted(METHODS), help="rPPG method (default pos)"
    )
    p.add_argument("--window-s", type=float, default=10.0, help="window length, s (default 10)")
    p.add_argument("--hop-s", type=float, default=1.0, help="window step, s (default 1)")
    p.add_argument(
        "--detect-every", type=int, default=10,
        help="run the face detector every N frames (default 10)",
    )
    p.add_argument(
        "--json", action="store_true",
        help="JSON lines {t, hr_bpm, quality} per window, then one summary object",
    )
    p.add_argument("--plot", metavar="PNG", help="write the pulse, its TFR and the HR track here")
    p.set_defaults(func=run)


def _num(x: float, digits: int):
    """Rounded float, or None for NaN/inf (JSON has no NaN)."""
    return round(float(x), digits) if math.isfinite(x) else None


def summarise(track, method: str, video: str) -> dict:
    """Summary dict of an HrTrack: median/IQR of finite HR, mean quality, window count."""
    hr = track.hr_bpm[np.isfinite(track.hr_bpm)]
    q25, med, q75 = np.percentile(hr, [25, 50, 75]) if hr.size else (np.nan,) * 3
    return {
        "hr_bpm_median": _num(med, 2),
        "hr_bpm_iqr": _num(q75 - q25, 2),
        "quality_mean": _num(float(np.mean(track.quality)) if track.quality.size else np.nan, 3),
        "n_windows": int(track.t_s.size),
        "n_valid": int(hr.size),
        "method": method,
        "video": video,
    }


def run(args) -> int:
    """Process args.video and print the track; returns the exit code (0).

    Raises:
        BadInputError: unreadable video or timestamps, no face, clip shorter than a window.
        ConfigError: bad window, hop or detection settings.
    """
    if args.window_s <= 0 or args.hop_s <= 0:
        raise ConfigError("--window-s and --hop-s must be > 0")
    trace = _trace(args, video_rgb_trace)
    est = estimate_hr(trace, method=args.method, window_s=args.window_s, hop_s=args.hop_s)
    track = est.track
    summary = summarise(track, args.method, str(args.video))
    out = sys.stdout
    if args.json:
        for t, hr, q in zip(track.t_s, track.hr_bpm, track.quality):
            out.write(json.dumps({"t": round(float(t), 3), "hr_bpm": _num(hr, 2),
                                  "quality": _num(q, 3)}) + "\n")
        out.write(json.dumps(summary) + "\n")
    else:
        out.write(f"{'t_s':>8} {'hr_bpm':>8} {'quality':>8}\n")
        for t, hr, q in zip(track.t_s, track.hr_bpm, track.quality):
            hr_txt = f"{hr:8.1f}" if math.isfinite(hr) else f"{'-':>8}"
            out.write(f"{t:8.1f} {hr_txt} {q:8.2f}\n")
        med = summary["hr_bpm_median"]
        med_txt = f"{med:.1f} bpm" if med is not None else "no estimate"
        out.write(
            f"median {med_txt} over {summary['n_valid']}/{summary['n_windows']} windows "
            f"(mean quality {summary['quality_mean']}, method {args.method})\n"
        )
    if args.plot:
        plot_estimate(est, args.plot, args.window_s, title=f"{args.video} ({args.method})")
    return 0


def _trace(args, video_rgb_trace):
    import cv2

    cap = cv2.VideoCapture(str(args.video))
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    cap.release()
    return video_rgb_trace(
        args.video,
        timestamps_csv=args.timestamps,
        detect_every=args.detect_every,
        progress=n_frames > PROGRESS_MIN_FRAMES,
    )


def plot_estimate(est, path, window_s: float, title: str = "") -> None:
    """Write one PNG: the pulse, its STFT TFR and the HR track (coloured by quality).

    Args:
        est: an ``edge.offline.HrEstimate``.
        path: PNG path to write.
        window_s: the track's window length, s (HR is drawn on the TFR at window centres).
        title: figure title.

    Raises:
        BadInputError: the PNG cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = est.t_s - est.t_s[0]
    fig = Figure(figsize=(10, 8), constrained_layout=True)
    FigureCanvasAgg(fig)
    ax_p, ax_t, ax_h = fig.subplots(3, 1, sharex=True)
    ax_p.plot(t, est.pulse, lw=0.8)
    ax_p.set_ylabel("pulse (a.u.)")
    ax_p.set_title(title)
    params = tfr_params("stft", shape=(64, 256), norm="none")
    if est.pulse.size >= round(params["nperseg_s"] * est.fs):
        image = tfr_compute(est.pulse, est.fs, **params)
        half = params["nperseg_s"] / 2.0
        # Show the top 30 dB: the 100 dB floor of the raw image is all noise.
        ax_t.imshow(
            image, origin="lower", aspect="auto", cmap="magma",
            vmin=float(image.max()) - 30.0, vmax=float(image.max()),
            extent=(half, t[-1] - half, 60 * params["lo"], 60 * params["hi"]),
        )
    ax_t.set_ylabel("frequency (bpm)")
    tr = est.track
    ax_t.plot(tr.t_s - window_s / 2.0, tr.hr_bpm, "c.", ms=4)
    sc = ax_h.scatter(tr.t_s, tr.hr_bpm, c=tr.quality, vmin=0, vmax=1, cmap="viridis", s=18)
    ax_h.plot(tr.t_s, tr.hr_bpm, lw=0.6, color="0.5")
    fig.colorbar(sc, ax=ax_h, label="quality")
    ax_h.set_ylabel("HR (bpm)")
    ax_h.set_xlabel("time (s)")
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise BadInputError(f"cannot write plot {path}: {exc}") from exc
