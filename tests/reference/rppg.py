"""Plain NumPy/SciPy references for rppg, detrend and filters.

Written the way the papers and popular toolboxes state them, with dense linear algebra and
library calls, so the Numba kernels in ``edge.signals.{rppg,detrend,filters}`` are checked
against an independent formulation:

- :func:`detrend_dense` forms the N x N matrix and inverts it (O(N^3) time, O(N^2) memory),
  as Tarvainen et al. 2002 write it and as toolboxes implement it.
- :func:`bandpass_scipy` is ``scipy.signal.butter`` + ``sosfiltfilt`` / ``sosfilt``.
- :func:`rppg_reference` loops over windows in Python with matrix algebra per window:
  ``np.linalg.svd`` for LGI, ``np.linalg.qr`` for OMIT, ``np.linalg.solve`` for PBV,
  ``scipy.signal.get_window`` for CHROM's Hann taper and ``scipy.signal.sosfiltfilt`` for its
  in-window band-pass. It shares only the documented constants
  (projection matrices, signature, band) with the kernels, not their code.

Conventions (window length, hops, tapers, NaN and degenerate windows) are those documented in
``edge.signals.rppg``.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

from edge.signals.rppg import (
    CHROM_BAND_HZ,
    CHROM_ORDER,
    CHROM_X,
    CHROM_Y,
    PBV_RIDGE,
    PBV_SIGNATURE,
    POS_PROJECTION,
)


def detrend_dense(z, lam: float = 100.0) -> np.ndarray:
    """Tarvainen et al. 2002 detrending by dense inversion: z - inv(I + lam^2 D2^T D2) z.

    Args:
        z: real (N,), N >= 3.
        lam: smoothing parameter.

    Returns:
        float64 (N,).
    """
    z = np.asarray(z, dtype=np.float64)
    n = z.shape[0]
    d2 = np.diff(np.eye(n), n=2, axis=0)
    a = np.eye(n) + lam**2 * (d2.T @ d2)
    return z - np.linalg.inv(a) @ z


def bandpass_scipy(x, fs, lo=0.7, hi=3.5, order=4, zero_phase=True) -> np.ndarray:
    """Butterworth band-pass along the last axis with SciPy.

    Returns:
        float64 array like x.
    """
    sos = signal.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")
    x = np.asarray(x, dtype=np.float64)
    return signal.sosfiltfilt(sos, x, axis=-1) if zero_phase else signal.sosfilt(sos, x, axis=-1)


def _window_len(fs: float, window_s: float) -> int:
    return int(np.floor(window_s * fs + 0.5))


def _green(c, fs):
    g = c[:, 1]
    return g - g.mean()


def _pos(c, fs):
    cn = c / c.mean(axis=0)
    s = np.asarray(POS_PROJECTION) @ cn.T
    sd2 = s[1].std()
    alpha = s[0].std() / sd2 if sd2 > 0 else 0.0
    h = s[0] + alpha * s[1]
    return h - h.mean()


def _chrom(c, fs):
    """de Haan & Jeanne 2013: Xf, Yf band-passed (scipy sosfiltfilt), S = Xf - alpha Yf."""
    cn = c / c.mean(axis=0) - 1.0
    sos = signal.butter(CHROM_ORDER, list(CHROM_BAND_HZ), btype="bandpass", fs=fs, output="sos")
    x = signal.sosfiltfilt(sos, cn @ np.asarray(CHROM_X))
    y = signal.sosfiltfilt(sos, cn @ np.asarray(CHROM_Y))
    return x - x.std() / y.std() * y if y.std() > 0 else x


def _chrom_nobp(c, fs):
    cn = c / c.mean(axis=0)
    x = cn @ np.asarray(CHROM_X)
    y = cn @ np.asarray(CHROM_Y)
    x = x - x.mean()
    y = y - y.mean()
    sdy = y.std()
    alpha = x.std() / sdy if sdy > 0 else 0.0
    return x - alpha * y


def _project_green(c, u):
    p = np.eye(3) - np.outer(u, u)
    y = (p @ c.T)[1]
    return y - y.mean()


def _lgi(c, fs):
    u, _, _ = np.linalg.svd(c.T, full_matrices=False)
    return _project_green(c, u[:, 0])


def _omit(c, fs):
    q, _ = np.linalg.qr(c.T)
    return _project_green(c, q[:, 0])


def _pbv(c, fs):
    cn = c / c.mean(axis=0) - 1.0
    q = cn.T @ cn
    q = q + PBV_RIDGE * np.trace(q) * np.eye(3)
    p = np.asarray(PBV_SIGNATURE, dtype=np.float64)
    p = p / np.linalg.norm(p)
    w = np.linalg.solve(q, p)
    w = w / (p @ w)
    s = cn @ w
    return s - s.mean()


_WINDOW_FUNCS = {
    "green": _green,
    "chrom": _chrom,
    "chrom_nobp": _chrom_nobp,
    "pos": _pos,
    "lgi": _lgi,
    "pbv": _pbv,
    "omit": _omit,
}
_NEEDS_POSITIVE_MEAN = {"chrom", "chrom_nobp", "pos", "pbv"}


def rppg_reference(rgb, fs: float, method: str = "pos", window_s: float = 1.6) -> np.ndarray:
    """Per-window Python loop with the same conventions as ``edge.signals.rppg.rppg_extract``.

    Args:
        rgb: (N, 3) R, G, B skin means; NaN rows allowed.
        fs: frame rate in Hz.
        method: green, chrom, chrom_nobp, pos, lgi, pbv or omit.
        window_s: window length in seconds.

    Returns:
        float64 (N,) pulse, NaN where no contributing window covers a sample.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    n = rgb.shape[0]
    if method == "chrom":  # even windows at half overlap, as the paper
        L = 2 * int(np.floor(window_s * fs / 2 + 0.5))
        hop = L // 2
    else:
        L = _window_len(fs, window_s)
        hop = 1
    hann = method in ("chrom", "chrom_nobp")
    taper = signal.get_window("hann", L, fftbins=True) if hann else np.ones(L)
    fn = _WINDOW_FUNCS[method]
    acc = np.zeros(n)
    cov = np.zeros(n, dtype=int)
    for st in range(0, n - L + 1, hop):
        c = rgb[st:st + L]
        if not np.isfinite(c).all():
            continue
        if method in _NEEDS_POSITIVE_MEAN and not (c.mean(axis=0) > 0).all():
            continue
        acc[st:st + L] += taper * fn(c, fs)
        cov[st:st + L] += 1
    acc[cov == 0] = np.nan
    return acc


def rppg_clean_reference(pulse, fs, lam=100.0, lo=0.7, hi=3.5, order=4) -> np.ndarray:
    """Dense detrend then SciPy zero-phase band-pass, with NaN gaps zero-filled and restored."""
    p = np.array(pulse, dtype=np.float64)
    gap = ~np.isfinite(p)
    p[gap] = 0.0
    out = bandpass_scipy(detrend_dense(p, lam), fs, lo, hi, order)
    out[gap] = np.nan
    return out
