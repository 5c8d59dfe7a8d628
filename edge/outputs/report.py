"""The session report output: a one-page PNG drawn with Matplotlib (Agg, no display) when the
writer closes, with the session's ground truth beside the estimates when it is known
(:mod:`edge.outputs.truth`).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.outputs.base import Writer, _attr, _finite_or_none, _is_ok, _prob_high
from edge.outputs.truth import SessionTruth
from edge.outputs.video import _PulseHistory
from firmware_bridge.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

#: Matplotlib ``gid`` of every artist that draws ground truth, so a caller (or a test) can
#: find them: segment boundaries, segment names, the expected side of 0.5 of P(V+) / P(A+),
#: the true beat-to-beat heart rate, and the reference heart rate over the estimate's windows.
GID_BOUNDARY = "truth-boundary"
GID_SEGMENT = "truth-segment"
GID_EXPECTED = "truth-expected"
GID_HR_BEATS = "truth-hr-beats"
GID_HR_WINDOWS = "truth-hr-windows"
TRUTH_COLOUR = "black"
EXPECTED_COLOUR = "tab:olive"


class SessionReportWriter(Writer):
    """A one-page PNG that sums up a session, drawn when the writer closes.

    Five panels over one session-time axis: the rPPG pulse (stitched from the results' pulse
    windows, or ``extras``), its time-frequency image (a short-time Fourier spectrogram of that
    pulse, Allen 1977, over 0.7-3.5 Hz = 42-210 bpm, each column scaled to its peak and stamped
    at its segment's end), the rPPG heart rate against the contact heart rate (results marked
    unknown shown as a band over their hop, never as a value), P(high valence) and P(high
    arousal). Every result is stamped at the end of its window, and so is everything drawn.

    Ground truth (``truth``), when given: the script's segments as dotted boundaries on every
    panel with their names over the pulse, the scripted side of 0.5 shaded on the P(V+) and
    P(A+) panels, the true beat-to-beat heart rate (a script's beats) and the reference heart
    rate over each result's own window (a script's beats counted, or a reference pulse through
    :func:`edge.signals.hr.heart_rate`) on the heart-rate panel, with the rPPG's mean absolute
    error against it in the title. Artists carry the ``GID_*`` gids.

    Drawn with Matplotlib's Agg canvas (no display, no pyplot state), at exactly ``size_px``.
    Results are kept as a few numbers each (about 100 bytes a hop) and the pulse once, so a
    long session costs little memory until the page is drawn; Matplotlib is imported only then.

    Args:
        path: the .png file to write.
        size_px: (width, height) of the image, px.
        dpi: dots per inch (font size scales with it).
        title: the page title; None uses the file name.
        truth: the session's ground truth, or None (:meth:`set_truth` can give it later).

    Raises:
        ConfigError: bad size or dpi, or a truth that is not a SessionTruth.
        DeviceError: the PNG cannot be written (at close).
    """

    name = "report"

    def __init__(self, path: str | os.PathLike, size_px: tuple[int, int] = (1200, 1000), dpi: int = 100,
                 title: str | None = None, truth: SessionTruth | None = None) -> None:
        super().__init__()
        w, h = (int(v) for v in size_px)
        if w < 200 or h < 200:
            raise ConfigError(f"size_px must be at least 200x200, got {size_px!r}")
        if not (20 <= int(dpi) <= 600):
            raise ConfigError(f"dpi must be in 20..600, got {dpi!r}")
        self.path = Path(path)
        self.size_px = (w, h)
        self.dpi = int(dpi)
        self.title = title
        self.truth: SessionTruth | None = None
        self.set_truth(truth)
        self._rows: list[tuple] = []
        self._pulse = _PulseHistory()

    def set_truth(self, truth: SessionTruth | None) -> None:
        """Give (or replace, or with None drop) the ground truth drawn at close: a replay knows
        its reference only once its session clock is known.

        Raises:
            ConfigError: not a SessionTruth.
        """
        if truth is not None and not isinstance(truth, SessionTruth):
            raise ConfigError(f"truth must be an edge.outputs.truth.SessionTruth, got {type(truth).__name__}")
        self.truth = truth

    def _write(self, result: Any, frame: Any, extras: dict) -> None:
        self._pulse.add(result, extras)
        self._rows.append((
            _finite_or_none(_attr(result, "t_s")),
            _finite_or_none(_attr(result, "hr_bpm")),
            _finite_or_none(_attr(result, "contact_hr_bpm")),
            _prob_high(_attr(result, "valence_prob")),
            _prob_high(_attr(result, "arousal_prob")),
            _is_ok(result),
        ))

    def _close(self) -> None:
        fig = self.figure()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(self.path, format="png", dpi=self.dpi)
        except OSError as exc:
            raise DeviceError(f"cannot write the report {self.path}: {exc.strerror or exc}") from exc
        log.info("session report written to %s", self.path)

    def figure(self):
        """The report as a Matplotlib Figure (Agg canvas attached), for callers that want to
        show or save it themselves. Panels (``fig.axes[:5]``): pulse, TFR, heart rate, P(V+),
        P(A+)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        w, h = self.size_px
        fig = Figure(figsize=(w / self.dpi, h / self.dpi), dpi=self.dpi)
        FigureCanvasAgg(fig)
        axes = fig.subplots(5, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.2, 1.2, 0.8, 0.8]})
        rows = [r for r in self._rows if r[0] is not None]
        t = np.array([r[0] for r in rows], dtype=np.float64)

        def col(i):
            return np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.float64)

        ok = np.array([r[5] for r in rows], dtype=bool)
        n_unknown = int((~ok).sum())
        hop = float(np.median(np.diff(t))) if t.size > 1 else 1.0
        pt, pv = self._pulse.arrays()
        # One session-time range for every panel: the pulse's first sample (or the first
        # result's hop) to the last result.
        starts = [v for v in (pt[0] if pt.size else None, t[0] - hop if t.size else None) if v is not None]
        x_range = (min(0.0, *starts), float(t[-1])) if t.size else None

        ax = axes[0]
        if pv.size:
            ax.plot(pt, pv, lw=0.7, color="tab:green")
        else:
            ax.text(0.5, 0.5, "no pulse given", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylabel("rPPG pulse (a.u.)")

        ax = axes[1]
        fs = self._pulse.fs_hz
        lo_hz, hi_hz = 0.7, 3.5
        if pv.size and fs and pv.size >= int(4 * fs):
            from scipy.signal import spectrogram

            nper = int(min(pv.size, round(8 * fs)))
            # Zero-padded to a 1/64 Hz grid (about 1 bpm), so the ridge reads as a line.
            nfft = max(nper, 1 << int(math.ceil(math.log2(64 * fs))))
            f, tt, sxx = spectrogram(pv, fs=fs, window="hann", nperseg=nper, noverlap=int(nper * 0.9),
                                     nfft=nfft, detrend="constant", scaling="density")
            band = (f >= lo_hz) & (f <= hi_hz)
            # Each column normalised to its peak: the ridge shows at any pulse strength.
            s = sxx[band]
            s = s / np.maximum(s.max(axis=0, keepdims=True), 1e-300)
            # Each column is stamped at the END of its segment, as every result is stamped at the
            # end of its window, so the ridge and the heart-rate track below share one time axis.
            mesh = ax.pcolormesh(tt + pt[0] + nper / (2.0 * fs), f[band] * 60.0, s, shading="nearest",
                                 cmap="magma", vmin=0.0, vmax=1.0)
            cax = ax.inset_axes([1.01, 0.0, 0.012, 1.0])
            bar = ax.figure.colorbar(mesh, cax=cax)
            bar.set_label("power / column peak", fontsize="x-small")
            bar.ax.tick_params(labelsize="x-small")
        else:
            ax.text(0.5, 0.5, "pulse too short for a TFR", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylim(lo_hz * 60.0, hi_hz * 60.0)
        ax.set_ylabel("TFR (bpm)")

        ax = axes[2]
        hr, chr_ = col(1), col(2)
        truth = self.truth
        heart = truth.heart if truth is not None else None
        mae_text = ""
        values = [hr[ok & np.isfinite(hr)], chr_[np.isfinite(chr_)]]
        if t.size:
            ax.plot(t, np.where(ok, hr, np.nan), "o-", ms=3, color="tab:green", label="rPPG")
            if np.any(np.isfinite(chr_)):
                ax.plot(t, chr_, "s-", ms=3, color="tab:blue", label="contact")
            if heart is not None:
                drawn = _draw_heart_truth(ax, heart, t, x_range)
                values += drawn
                ref = drawn[-1]
                both = ok & np.isfinite(hr) & np.isfinite(ref)
                if both.any():
                    mae_text = (f"; rPPG vs {heart.label}: mean |error| {np.mean(np.abs(hr[both] - ref[both])):.1f} "
                                f"bpm over {int(both.sum())} windows")
            if n_unknown:
                # Unknown results are a status band over their hop, never a value on the axis.
                for k, tk in enumerate(t[~ok]):
                    ax.axvspan(tk - hop, tk, color="tab:orange", alpha=0.18, lw=0,
                               label="unknown" if k == 0 else None)
            finite = np.concatenate([v[np.isfinite(v)] for v in values])
            if finite.size:
                # At least 20 bpm tall, so a 4 bpm spread does not fill the panel.
                mid = 0.5 * (float(finite.min()) + float(finite.max()))
                half = max(10.0, 0.5 * (float(finite.max()) - float(finite.min())) + 2.0)
                ax.set_ylim(mid - half, mid + half)
            _legend_outside(ax)
        ax.set_ylabel("heart rate (bpm)")

        segments = truth.segments if truth is not None else ()
        for ax, i, which, colour in ((axes[3], 3, "valence", "tab:purple"), (axes[4], 4, "arousal", "tab:red")):
            if segments:
                _draw_expected(ax, segments, which, x_range)
            if t.size:
                ax.plot(t, col(i), "-", color=colour, label=f"P(high {which})")
            ax.axhline(0.5, color="0.7", lw=0.8)
            ax.set_ylim(0.0, 1.0)
            ax.set_ylabel("P(V+)" if which == "valence" else "P(A+)")
            if t.size or segments:
                _legend_outside(ax)
        axes[-1].set_xlabel("session time (s)")
        if segments:
            _draw_segments(axes, segments, x_range)
        if x_range is not None and x_range[1] > x_range[0]:
            axes[0].set_xlim(*x_range)  # shared: every panel

        title = self.title or self.path.stem
        source = f"; truth: {truth.source}" if truth is not None and truth.source else ""
        fig.suptitle(f"{title}: {len(self._rows)} results, {n_unknown} unknown{source}{mae_text}", fontsize="medium")
        fig.subplots_adjust(left=0.08, right=0.84, top=0.94, bottom=0.06, hspace=0.15)
        return fig


def _draw_heart_truth(ax, heart, t: np.ndarray, x_range) -> list[np.ndarray]:
    """The true heart rate on the heart-rate panel: beat to beat (a script's beats), and over
    each result's own window. Returns the values drawn (for the axis range), the windowed
    reference last, on ``t``."""
    drawn = []
    inst_t = None
    if x_range is not None:
        lo = max(x_range[0], heart.span_s[0])
        hi = min(x_range[1], heart.span_s[1])
        if hi > lo:
            inst_t = np.linspace(lo, hi, max(2, int((hi - lo) * 10)))
    inst = heart.instantaneous(inst_t) if inst_t is not None else None
    if inst is not None:
        ax.plot(inst_t, inst, "-", lw=0.8, color=TRUTH_COLOUR, alpha=0.45, gid=GID_HR_BEATS,
                label=f"true, beat to beat ({heart.label})")
        drawn.append(inst)
    ref = heart.over_windows(t)
    ax.plot(t, ref, "--", lw=1.2, color=TRUTH_COLOUR, gid=GID_HR_WINDOWS,
            label=f"{'true' if heart.beat_times_s is not None else heart.label},\n"
                  f"same {heart.window_s:g} s windows")
    drawn.append(ref)
    return drawn


def _draw_expected(ax, segments, which: str, x_range) -> None:
    """Shade the half of a P(high) panel the script says each segment belongs in."""
    from matplotlib.patches import Rectangle

    first = True
    for s in segments:
        label = getattr(s, which)
        if label is None:
            continue
        t0, t1 = _clip(s.t0_s, s.t1_s, x_range)
        if t1 <= t0:
            continue
        ax.add_patch(Rectangle((t0, 0.5 if label == "high" else 0.0), t1 - t0, 0.5, facecolor=EXPECTED_COLOUR,
                               alpha=0.2, lw=0, gid=GID_EXPECTED, label="scripted side" if first else None))
        first = False


def _draw_segments(axes, segments, x_range) -> None:
    """The script's segment boundaries on every panel, their names over the first panel."""
    from matplotlib.transforms import blended_transform_factory

    top = axes[0]
    tr = blended_transform_factory(top.transData, top.transAxes)
    for k, s in enumerate(segments):
        t0, t1 = _clip(s.t0_s, s.t1_s, x_range)
        if t1 <= t0:
            continue
        if k and (x_range is None or x_range[0] < s.t0_s < x_range[1]):
            for ax in axes:
                ax.axvline(s.t0_s, color=TRUTH_COLOUR, lw=0.8, ls=":", gid=GID_BOUNDARY)
        top.text(0.5 * (t0 + t1), 0.97, s.name, transform=tr, ha="center", va="top", fontsize="small",
                 gid=GID_SEGMENT, bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1.0})


def _clip(t0: float, t1: float, x_range) -> tuple[float, float]:
    if x_range is None:
        return t0, t1
    return max(t0, x_range[0]), min(t1, x_range[1])


def _legend_outside(ax) -> None:
    # Right of the panel, so it never covers the latest data.
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="x-small", frameon=False, borderaxespad=0.0)
