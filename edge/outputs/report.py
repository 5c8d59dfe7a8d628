"""The session report output: a one-page PNG drawn with Matplotlib (Agg, no display) when the
writer closes.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.outputs.base import Writer, _attr, _finite_or_none, _is_ok, _prob_high
from edge.outputs.video import _PulseHistory
from firmware_bridge.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)



class SessionReportWriter(Writer):
    """A one-page PNG that sums up a session, drawn when the writer closes.

    Four panels over session time: the rPPG pulse (stitched from the results' pulse windows,
    or ``extras``), its time-frequency image (a short-time Fourier spectrogram of that pulse,
    Allen 1977, over 0.7-3.5 Hz = 42-210 bpm, each column scaled to its peak), the rPPG heart
    rate against the contact heart rate (results marked unknown shown apart), and P(high) of
    valence and arousal. Drawn with Matplotlib's Agg canvas (no display, no pyplot state), at
    exactly ``size_px``. Results are kept as a few numbers each (about 100 bytes a hop) and the
    pulse once, so a long session costs little memory until the page is drawn.

    Args:
        path: the .png file to write.
        size_px: (width, height) of the image, px.
        dpi: dots per inch (font size scales with it).
        title: the page title; None uses the file name.

    Raises:
        ConfigError: bad size or dpi.
        DeviceError: the PNG cannot be written (at close).
    """

    name = "report"

    def __init__(self, path: str | os.PathLike, size_px: tuple[int, int] = (1200, 1000), dpi: int = 100,
                 title: str | None = None) -> None:
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
        self._rows: list[tuple] = []
        self._pulse = _PulseHistory()

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
        show or save it themselves."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        w, h = self.size_px
        fig = Figure(figsize=(w / self.dpi, h / self.dpi), dpi=self.dpi)
        FigureCanvasAgg(fig)
        axes = fig.subplots(4, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.2, 1, 1]})
        rows = [r for r in self._rows if r[0] is not None]
        t = np.array([r[0] for r in rows], dtype=np.float64)

        def col(i):
            return np.array([np.nan if r[i] is None else r[i] for r in rows], dtype=np.float64)

        ok = np.array([r[5] for r in rows], dtype=bool)
        n_unknown = int((~ok).sum())
        title = self.title or self.path.stem
        fig.suptitle(f"{title}: {len(self._rows)} results, {n_unknown} unknown")

        ax = axes[0]
        pt, pv = self._pulse.arrays()
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
        if t.size:
            ax.plot(t, np.where(ok, hr, np.nan), "o-", ms=3, color="tab:green", label="rPPG")
            if np.any(np.isfinite(chr_)):
                ax.plot(t, chr_, "s-", ms=3, color="tab:blue", label="contact")
            if n_unknown:
                # Unknown results are a status band over their hop, never a value on the axis.
                hop = float(np.median(np.diff(t))) if t.size > 1 else 1.0
                for k, tk in enumerate(t[~ok]):
                    ax.axvspan(tk - hop, tk, color="tab:orange", alpha=0.18, lw=0,
                               label="unknown" if k == 0 else None)
            values = np.concatenate([hr[ok & np.isfinite(hr)], chr_[np.isfinite(chr_)]])
            if values.size:
                # At least 20 bpm tall, so a 4 bpm spread does not fill the panel.
                mid = 0.5 * (float(values.min()) + float(values.max()))
                half = max(10.0, 0.5 * (float(values.max()) - float(values.min())) + 2.0)
                ax.set_ylim(mid - half, mid + half)
            _legend_outside(ax)
        ax.set_ylabel("heart rate (bpm)")

        ax = axes[3]
        if t.size:
            ax.plot(t, col(3), "-", color="tab:purple", label="valence")
            ax.plot(t, col(4), "-", color="tab:red", label="arousal")
            _legend_outside(ax)
        ax.axhline(0.5, color="0.7", lw=0.8)
        ax.set_ylim(0.0, 1.0)
        ax.set_ylabel("P(high)")
        ax.set_xlabel("session time (s)")
        fig.subplots_adjust(left=0.08, right=0.86, top=0.94, bottom=0.06, hspace=0.15)
        return fig


def _legend_outside(ax) -> None:
    # Right of the panel, so it never covers the latest data.
    ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize="x-small", frameon=False, borderaxespad=0.0)
