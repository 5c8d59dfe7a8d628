"""Smoothness-priors detrending in O(N) time and memory.

Tarvainen, Ranta-aho & Karjalainen 2002, "An advanced detrending method with application to
HRV analysis", IEEE TBME 49(2): the trend of z is the regularised least-squares fit

    trend = (I + lam^2 D2^T D2)^-1 z,     detrended = z - trend,

with D2 the (N-2, N) second-difference matrix. Popular toolboxes form the N x N matrix and
invert it densely (O(N^3) time, O(N^2) memory: 26 MB and about a second for a 60 s trace at
30 fps). The matrix is symmetric positive definite and pentadiagonal, so this module factors it
as L D L^T on its five diagonals (L unit lower triangular with two sub-diagonals) and solves
in O(N). The result matches the dense reference to about 1e-10 relative (tested).

As a filter it is a high-pass whose -3 dB point is near fs / (2 pi sqrt(lam)) Hz: with the
default lam=100 that is about 0.48 Hz at 30 fps, below the 0.7 Hz pulse band edge.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from firmware_bridge.errors import BadInputError, ConfigError


@njit(cache=True, nogil=True)
def _detrend_core(z, lam2, out):
    """out = z - (I + lam2 * D2^T D2)^-1 z by a banded L D L^T solve (needs N >= 3)."""
    n = z.shape[0]
    # Diagonals of A = I + lam2 * D2^T D2: a0[i] = A[i,i], a1[i] = A[i,i+1], a2[i] = A[i,i+2],
    # accumulated row by row of D2 = [1, -2, 1] so that every N >= 3 is handled alike.
    a0 = np.ones(n)
    a1 = np.zeros(n)
    a2 = np.zeros(n)
    for k in range(n - 2):
        a0[k] += lam2
        a0[k + 1] += 4.0 * lam2
        a0[k + 2] += lam2
        a1[k] -= 2.0 * lam2
        a1[k + 1] -= 2.0 * lam2
        a2[k] += lam2
    # A = L D L^T: d the pivots, l1[i] = L[i,i-1], l2[i] = L[i,i-2]. No pivoting is needed:
    # A is symmetric positive definite, so every pivot d[i] >= 1.
    d = np.empty(n)
    l1 = np.zeros(n)
    l2 = np.zeros(n)
    d[0] = a0[0]
    l1[1] = a1[0] / d[0]
    d[1] = a0[1] - l1[1] * l1[1] * d[0]
    for i in range(2, n):
        l2[i] = a2[i - 2] / d[i - 2]
        l1[i] = (a1[i - 1] - l2[i] * l1[i - 1] * d[i - 2]) / d[i - 1]
        d[i] = a0[i] - l1[i] * l1[i] * d[i - 1] - l2[i] * l2[i] * d[i - 2]
    # Forward (L y = z), diagonal (D w = y), backward (L^T s = w); s is the trend.
    s = np.empty(n)
    s[0] = z[0]
    s[1] = z[1] - l1[1] * s[0]
    for i in range(2, n):
        s[i] = z[i] - l1[i] * s[i - 1] - l2[i] * s[i - 2]
    for i in range(n):
        s[i] /= d[i]
    s[n - 2] -= l1[n - 1] * s[n - 1]
    for i in range(n - 3, -1, -1):
        s[i] -= l1[i + 1] * s[i + 1] + l2[i + 2] * s[i + 2]
    for i in range(n):
        out[i] = z[i] - s[i]


def signal_detrend(x, lam: float = 100.0) -> np.ndarray:
    """Remove the slow trend of a signal by smoothness priors (Tarvainen et al. 2002).

    Args:
        x: real array (N,), N >= 3, all finite (fill NaN gaps first; rppg_clean does).
        lam: smoothing parameter lambda, > 0 and finite. Larger keeps more of the slow
            variation in the output; the high-pass -3 dB point is near fs / (2 pi sqrt(lam)).

    Returns:
        float64 (N,) detrended signal ``z - (I + lam^2 D2^T D2)^-1 z``, in the units of x.

    Raises:
        BadInputError: x not 1-D, not real, non-finite, or shorter than 3 samples (with fewer
            than 3 samples there is no second difference and the trend is the signal itself).
        ConfigError: lam not finite or not > 0.
    """
    try:
        lam = float(lam)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"detrend lam must be a real number ({exc})") from exc
    if not math.isfinite(lam) or lam <= 0:
        raise ConfigError(f"detrend lam must be finite and > 0, got {lam}")
    try:
        z = np.ascontiguousarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"detrend input must be a real numeric array ({exc})") from exc
    if z.ndim != 1:
        raise BadInputError(f"detrend input must be 1-D (N,), got shape {z.shape}")
    if z.shape[0] < 3:
        raise BadInputError(f"detrend needs at least 3 samples, got {z.shape[0]}")
    if not np.isfinite(z).all():
        raise BadInputError("detrend input holds NaN or infinite samples; fill the gaps first")
    out = np.empty_like(z)
    _detrend_core(z, lam * lam, out)
    return out
