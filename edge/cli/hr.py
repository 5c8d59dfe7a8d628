"""``emofuse hr VIDEO``: heart rate from a recorded face video (rPPG), by the runtime's own path.

Runs :func:`edge.offline.hr_session`: the video through :class:`edge.pipeline.Pipeline` in
replay mode without a model (FaceTracker boxes, the record's ROI colour, pulse window, heart
rate and quality gate, all from the bundle's preprocessing record), so it prints the windows and
values ``emofuse replay`` and ``emofuse run`` report for the same video. One row per window
from the first full pulse window on, plus a summary, as a table or as JSON lines.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from edge.offline import hr_session
from edge.signals.rppg import METHODS
from edge.signals.tfr import tfr_compute, tfr_params
from firmware_bridge.errors import BadInputError, ConfigError

# Clips with more frames than this get a progress bar (when stderr is a terminal).
PROGRESS_MIN_FRAMES = 300
# Options of the former offline path whose settings now come from the bundle's record.
_RETIRED = {"window_s": ("--window-s", "rppg.pulse_window_s"), "detect_every": ("--detect-every", "face.tracker")}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "hr",
        help="heart rate from a face video (rPPG)",
        description="Estimate the heart rate over sliding windows from a recorded face video, exactly as the "
        "runtime does (emofuse replay / run): face tracker, skin colour of forehead and cheeks, the record's "
        "rPPG method, heart rate and quality gate; every setting from the bundle's preprocessing record.",
    )
    p.add_argument("video", metavar="VIDEO", help="video file readable by OpenCV, a PhysRecorder folder "
                   "(its video, frames_timestamp.csv and BVP.csv), an emofuse recording folder, or a finite "
                   "camera URI (sim://?...)")
    p.add_argument(
        "--timestamps", metavar="CSV",
        help="frame,timestamp CSV (UNIX seconds) of the frames' capture times "
        "(default: frames_timestamp.csv beside the video, else times from the video's frame rate)",
    )
    p.add_argument("--bundle", default="default", metavar="DIR",
                   help="bundle whose preprocessing record sets the pulse path: a folder or 'default' "
                   "(its model is not run) (default: default)")
    p.add_argument(
        "--method", default=None, choices=sorted(METHODS),
        help="replace the record's rPPG method (default: the record's, as the runtime runs it)",
    )
    p.add_argument("--hop-s", type=float, default=1.0, help="seconds between windows (default 1)")
    p.add_argument("--min-pulse-quality", type=float, default=0.5, metavar="Q",
                   help="heart rates below this gate quality (0-1) are reported unknown, as the runtime's "
                   "option of the same name (default 0.5)")
    for dest, (flag, _) in _RETIRED.items():
        p.add_argument(flag, dest=dest, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--json", action="store_true",
        help="JSON lines {t, hr_bpm, quality} per window, then one summary object",
    )
    p.add_argument("--plot", metavar="PNG", help="write the pulse, its TFR and the HR track here")
    p.add_argument(
        "--reference", metavar="CSV",
        help="timestamp,pulse CSV (UNIX seconds) of a reference pulse, e.g. a finger BVP: its heart rate over "
        "the same windows is drawn on the plot (default: BVP.csv beside the video, when there is one)",
    )
    p.set_defaults(func=run)


def _num(x: float, digits: int):
    """Rounded float, or None for NaN/inf (JSON has no NaN)."""
    return round(float(x), digits) if math.isfinite(x) else None


def summarise(track, method: str, video: str) -> dict:
    """Summary dict of an :class:`edge.offline.HrTrack`: median/IQR of the reported heart
    rates, mean quality of the scored windows, window counts."""
    hr = track.hr_bpm[np.isfinite(track.hr_bpm)]
    q = track.quality[np.isfinite(track.quality)]
    q25, med, q75 = np.percentile(hr, [25, 50, 75]) if hr.size else (np.nan,) * 3
    return {
        "hr_bpm_median": _num(med, 2),
        "hr_bpm_iqr": _num(q75 - q25, 2),
        "quality_mean": _num(float(np.mean(q)) if q.size else np.nan, 3),
        "n_windows": int(track.t_s.size),
        "n_valid": int(hr.size),
        "method": method,
        "video": video,
    }


def run(args) -> int:
    """Process args.video and print the track; returns the exit code (0).

    Raises:
        BadInputError: unreadable video or timestamps, no face, clip shorter than a window.
        ConfigError: a retired option, a bad bundle, hop or threshold.
    """
    for dest, (flag, where) in _RETIRED.items():
        if getattr(args, dest, None) is not None:
            raise ConfigError(f"{flag} is gone: the bundle's preprocessing record sets it ({where}), as for "
                              f"emofuse replay")
    if not args.hop_s > 0:
        raise ConfigError("--hop-s must be > 0")
    if not 0.0 <= args.min_pulse_quality <= 1.0:
        raise ConfigError("--min-pulse-quality must be within 0-1")
    _physrecorder_folder(args)
    est = hr_session(args.video, args.bundle, timestamps=args.timestamps, hop_s=args.hop_s,
                     min_pulse_quality=args.min_pulse_quality, method=args.method, progress=_long(args))
    track = est.track
    summary = summarise(track, est.method, str(args.video))
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
            q_txt = f"{q:8.2f}" if math.isfinite(q) else f"{'-':>8}"
            out.write(f"{t:8.1f} {hr_txt} {q_txt}\n")
        med = summary["hr_bpm_median"]
        med_txt = f"{med:.1f} bpm" if med is not None else "no estimate"
        out.write(
            f"median {med_txt} over {summary['n_valid']}/{summary['n_windows']} windows "
            f"(mean quality {summary['quality_mean']}, method {est.method}, gate >= {est.min_pulse_quality:g})\n"
        )
    if args.plot:
        truth = _reference(args, est)
        plot_estimate(est, args.plot, title=f"{args.video} ({est.method}, gate >= {est.min_pulse_quality:g})",
                      truth=truth)
    return 0


def _physrecorder_folder(args) -> None:
    """A PhysRecorder folder as VIDEO: its video, with its frames_timestamp.csv (unless
    --timestamps) and its BVP.csv as the reference (unless --reference). An emofuse recording
    folder stays as it is: its video is the camera, as ``emofuse replay`` opens it."""
    from pathlib import Path

    from firmware_bridge.recording.importers import TIMESTAMPS_CSV, phys_video

    folder = Path(args.video)
    if "://" in str(args.video) or not folder.is_dir():
        return
    video = phys_video(folder)
    if video is None and (folder / "manifest.json").is_file():
        return
    if video is None:
        raise BadInputError(f"{folder} is a folder but not a recording (an emofuse recording, or a "
                            f"PhysRecorder video beside {TIMESTAMPS_CSV})")
    args.video = str(video)
    if not args.timestamps:
        args.timestamps = str(folder / TIMESTAMPS_CSV)


def _reference(args, est):
    """The reference pulse's heart rate over the track's windows, or None (no reference)."""
    from pathlib import Path

    from edge.outputs.truth import SessionTruth, csv_heart_truth

    given = getattr(args, "reference", None)
    if not given and "://" in str(args.video):
        return None
    path = Path(given) if given else Path(args.video).parent / "BVP.csv"
    if not given and not path.is_file():
        return None
    # The reference's UNIX times meet the frames' only when the frames have UNIX times too.
    if est.t0_unix_s is None:
        msg = f"{path.name} is in UNIX time; the frames need their capture times (--timestamps) to align it"
        if given:
            raise ConfigError(f"--reference {msg}")
        print(f"emofuse hr: reference not drawn: {msg}", file=sys.stderr)
        return None
    heart = csv_heart_truth(path, float(est.t0_unix_s), float(est.window_s))
    return SessionTruth(heart=heart, source=str(path))


def _long(args) -> bool:
    """Whether the clip is long enough for a progress bar."""
    if "://" in str(args.video):
        return False
    import cv2

    cap = cv2.VideoCapture(str(args.video))
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    cap.release()
    return n_frames > PROGRESS_MIN_FRAMES


def plot_estimate(est, path, title: str = "", truth=None) -> None:
    """Write one PNG: the pulse, its STFT TFR and the HR track (see :func:`estimate_figure`).

    Raises:
        BadInputError: the PNG cannot be written.
    """
    fig = estimate_figure(est, title, truth)
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise BadInputError(f"cannot write plot {path}: {exc}") from exc


def estimate_figure(est, title: str = "", truth=None):
    """The pulse, its STFT TFR and the HR track (coloured by quality) over one time axis, s
    from the first frame. Every window's value (the TFR columns, the HR points) is stamped at
    the END of its window; the HR axis is at least 20 bpm tall; legends sit right of the panels.

    Args:
        est: an :class:`edge.offline.HrSession` (its pulse as the windows saw it, NaN where
            none was formed; its track as the runtime reports it).
        title: figure title.
        truth: an ``edge.outputs.truth.SessionTruth`` whose ``heart`` (a reference pulse, on a
            clock whose zero is the first frame) is drawn over the same windows as the track,
            with the track's mean absolute error against it; or None.

    Returns:
        A Matplotlib Figure with an Agg canvas; ``fig.axes[:3]`` are pulse, TFR, heart rate.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from edge.outputs.report import GID_HR_WINDOWS, TRUTH_COLOUR

    t = est.t_s - est.t0_s
    fig = Figure(figsize=(10, 8))
    FigureCanvasAgg(fig)
    ax_p, ax_t, ax_h = fig.subplots(3, 1, sharex=True)
    ax_p.plot(t, est.pulse, lw=0.8)
    ax_p.set_ylabel("pulse (a.u.)")
    params = tfr_params("stft", shape=(64, 256), norm="none")
    if est.pulse.size >= round(params["nperseg_s"] * est.fs):
        # A stretch no window formed a pulse for is drawn as a gap above and as no power here.
        image = tfr_compute(np.nan_to_num(est.pulse), est.fs, **params)
        seg = params["nperseg_s"]
        # Columns span the first to the last full segment; each is stamped at its segment's end,
        # as the heart-rate windows are below. Show the top 30 dB: the floor is all noise.
        ax_t.imshow(
            image, origin="lower", aspect="auto", cmap="magma",
            vmin=float(image.max()) - 30.0, vmax=float(image.max()),
            extent=(t[0] + seg, t[-1], 60 * params["lo"], 60 * params["hi"]),
        )
    ax_t.set_ylabel("frequency (bpm)")
    tr = est.track
    ax_t.plot(tr.t_s, tr.hr_bpm, "c.", ms=4, label="HR (window end)")
    ax_t.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="x-small", frameon=False)
    sc = ax_h.scatter(tr.t_s, tr.hr_bpm, c=tr.quality, vmin=0, vmax=1, cmap="viridis", s=18, label="rPPG")
    ax_h.plot(tr.t_s, tr.hr_bpm, lw=0.6, color="0.5")
    values = [tr.hr_bpm]
    mae = ""
    heart = truth.heart if truth is not None else None
    if heart is not None:
        ref = heart.over_windows(tr.t_s)
        ax_h.plot(tr.t_s, ref, "--", lw=1.2, color=TRUTH_COLOUR, gid=GID_HR_WINDOWS,
                  label=f"{heart.label},\nsame {heart.window_s:g} s windows")
        values.append(ref)
        both = np.isfinite(ref) & np.isfinite(tr.hr_bpm)
        if both.any():
            mae = (f"\nrPPG vs {heart.label}: mean |error| {np.mean(np.abs(tr.hr_bpm[both] - ref[both])):.1f} bpm "
                   f"over {int(both.sum())} windows")
    finite = np.concatenate([v[np.isfinite(v)] for v in values])
    if finite.size:
        # At least 20 bpm tall, so a 4 bpm spread does not look dramatic.
        mid = 0.5 * (float(finite.min()) + float(finite.max()))
        half = max(10.0, 0.5 * (float(finite.max()) - float(finite.min())) + 2.0)
        ax_h.set_ylim(mid - half, mid + half)
    bar = fig.colorbar(sc, cax=ax_h.inset_axes([1.01, 0.0, 0.015, 1.0]))
    bar.set_label("quality", fontsize="x-small")
    bar.ax.tick_params(labelsize="x-small")
    ax_h.legend(loc="upper left", bbox_to_anchor=(1.09, 1.0), fontsize="x-small", frameon=False)
    ax_h.set_ylabel("HR (bpm)")
    ax_h.set_xlabel("time from the first frame (s)")
    ax_p.set_title(title + mae)
    ax_p.set_xlim(0.0, float(t[-1]))
    fig.subplots_adjust(left=0.08, right=0.74, top=0.92, bottom=0.07, hspace=0.12)
    return fig
