"""Irregular timestamps to a fixed-rate grid, with the holes marked, never bridged.

:func:`resample_to_grid` is the one resampler of emofuse: training, replay and the runtime
all call it, so that a model sees the same interpolation and the same gap rule everywhere.

A grid point is *valid* only when real samples lie close on both sides of it. Points before
the first sample, after the last one, or inside a hole longer than ``max_gap_s`` (or across a
sample flagged in ``breaks``) are invalid and hold NaN: the caller decides what a hole means,
the resampler never fills one in.
"""
from __future__ import annotations

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError

__all__ = ["resample_to_grid", "METHODS", "DEFAULT_MAX_GAP_PERIODS"]

#: Default ``max_gap_s`` in source sample periods (median spacing): one lost sample
#: (a 2-period hole) is bridged, two lost samples (3 periods) are not.
DEFAULT_MAX_GAP_PERIODS = 2.5

# Grid points within this fraction of a source period outside the data still count as
# inside: t_start + k / rate rounds, and a grid point meant to sit on the last sample must
# not fall off it by 1e-15 s.
_EDGE_TOL_PERIODS = 1e-6


def _interp_linear(t, x, tg, idx):
    """Straight line between the two neighbouring samples."""
    t0, t1 = t[idx], t[idx + 1]
    w = ((tg - t0) / (t1 - t0))[:, None]
    return x[idx] * (1.0 - w) + x[idx + 1] * w


def _interp_nearest(t, x, tg, idx):
    """The closer of the two neighbouring samples (ties go to the earlier one)."""
    later = (t[idx + 1] - tg) < (tg - t[idx])
    return x[idx + later]


def _interp_previous(t, x, tg, idx):
    """The latest sample at or before the grid point (zero-order hold)."""
    on_next = tg >= t[idx + 1]
    return x[idx + on_next]


#: Interpolation methods by name; each maps (t, x (N, C), grid, interval index) -> (n, C).
METHODS = {
    "linear": _interp_linear,
    "nearest": _interp_nearest,
    "previous": _interp_previous,
}


def _check_inputs(t_s, x, rate_hz, t_start_s, n, max_gap_s, method, breaks, antialias):
    t = np.asarray(t_s)
    if t.ndim != 1:
        raise BadInputError(f"t_s must be 1-D, got shape {t.shape}")
    if t.dtype.kind not in "iuf":
        raise BadInputError(f"t_s must be real numbers, got dtype {t.dtype}")
    t = t.astype(np.float64)
    if not np.all(np.isfinite(t)):
        raise BadInputError("t_s holds NaN or inf")
    xa = np.asarray(x)
    if xa.ndim not in (1, 2):
        raise BadInputError(f"x must have shape (N,) or (N, C), got {xa.shape}")
    if xa.dtype.kind not in "biuf":
        raise BadInputError(f"x must be real numbers, got dtype {xa.dtype}")
    if xa.shape[0] != t.shape[0]:
        raise BadInputError(f"t_s has {t.shape[0]} timestamps but x has {xa.shape[0]} samples")
    if xa.ndim == 2 and xa.shape[1] == 0:
        raise BadInputError("x has zero channels")
    xa = xa.astype(np.float64)
    if np.any(np.isinf(xa)):
        raise BadInputError("x holds inf; mark missing samples with NaN instead")
    if t.size > 1 and np.any(np.diff(t) < 0):
        first = int(np.argmax(np.diff(t) < 0))
        raise BadInputError(
            f"t_s must be sorted (non-decreasing): t_s[{first + 1}] = {t[first + 1]!r} < "
            f"t_s[{first}] = {t[first]!r}; sort t_s and x together first"
        )
    if isinstance(rate_hz, bool) or not np.isscalar(rate_hz) or not np.isfinite(rate_hz) or rate_hz <= 0:
        raise ConfigError(f"rate_hz must be a finite number > 0, got {rate_hz!r}")
    if isinstance(t_start_s, bool) or not np.isscalar(t_start_s) or not np.isfinite(t_start_s):
        raise BadInputError(f"t_start_s must be a finite number, got {t_start_s!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"n must be an integer >= 0, got {n!r}")
    if max_gap_s is not None and (isinstance(max_gap_s, bool) or not np.isscalar(max_gap_s)
                                  or not np.isfinite(max_gap_s) or max_gap_s <= 0):
        raise ConfigError(f"max_gap_s must be None or a finite number > 0, got {max_gap_s!r}")
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if antialias and method != "linear":
        raise ConfigError(f"antialias=True works with method='linear' only, not {method!r}")
    if breaks is not None:
        b = np.asarray(breaks)
        if b.dtype != np.bool_ or b.shape != t.shape:
            raise BadInputError(f"breaks must be a bool array of shape {t.shape}, got "
                                f"{b.dtype} {b.shape}")
        breaks = b
    return t, xa, breaks


def _merge_duplicates(t, x2, breaks):
    """Average the samples that share a timestamp; a break on any of them is kept."""
    uniq, start, counts = np.unique(t, return_index=True, return_counts=True)
    if uniq.size == t.size:
        return t, x2, breaks
    sums = np.add.reduceat(x2, start, axis=0)
    x_out = sums / counts[:, None]
    b_out = None if breaks is None else np.logical_or.reduceat(breaks, start)
    return uniq, x_out, b_out


def _box_average(t, x2, a, b):
    """Mean of the piecewise-linear interpolant of (t, x2) over [a, b], per row.

    The exact integral of the interpolant, from its running integral: within an interval
    the interpolant is linear, so its integral is quadratic in the offset.
    """
    dt = np.diff(t)
    # Removing the mean keeps the running integral small, so that subtracting two values
    # of it does not lose precision on signals with a large offset (raw PPG counts).
    mean = x2.mean(axis=0)
    xc = x2 - mean
    area = 0.5 * (xc[:-1] + xc[1:]) * dt[:, None]
    cum = np.vstack([np.zeros((1, xc.shape[1])), np.cumsum(area, axis=0)])

    def running(tq):
        i = np.clip(np.searchsorted(t, tq, side="right") - 1, 0, t.size - 2)
        u = np.clip(tq - t[i], 0.0, dt[i])[:, None]
        slope = (xc[i + 1] - xc[i]) / dt[i][:, None]
        return cum[i] + xc[i] * u + 0.5 * slope * u * u

    return (running(b) - running(a)) / (b - a)[:, None] + mean


def resample_to_grid(
    t_s,
    x,
    rate_hz: float,
    t_start_s: float,
    n: int,
    max_gap_s: float | None = None,
    method: str = "linear",
    antialias: bool = False,
    breaks=None,
    max_gap_periods: float = DEFAULT_MAX_GAP_PERIODS,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample irregularly timed samples onto the grid ``t_start_s + k / rate_hz``, k = 0..n-1.

    Rules:

    * Samples with NaN in any channel are missing: they are dropped before interpolating,
      so a run of them becomes a hole like any other.
    * Samples that share a timestamp are averaged.
    * A grid point is valid when it lies within the data (first to last remaining sample)
      and the interval of samples around it is at most ``max_gap_s`` long and does not end
      on a sample flagged in ``breaks``; a grid point that falls exactly on a sample is
      always valid. Fewer than two remaining samples: nothing is valid.
    * Invalid points hold NaN in ``y``; a hole is never bridged.

    Interpolation (``method``): ``"linear"`` (straight line between the neighbours),
    ``"nearest"`` or ``"previous"`` (zero-order hold, for labels and step signals).

    Anti-aliasing: off by default, so that ``y`` is the plain interpolant. With
    ``antialias=True`` and a grid slower than the source (median source rate > ``rate_hz``),
    each grid value is instead the mean of the linear interpolant over the box
    ``[t - 0.5 / rate_hz, t + 0.5 / rate_hz]``: a moving-average low-pass whose first null
    is at ``rate_hz``, i.e. at twice the new Nyquist frequency (a simple boxcar, about -13 dB
    sidelobes: enough against broadband noise folding in, not a sharp filter; low-pass
    first with a proper FIR for that). A point is then valid only when its whole box lies
    in the data with no hole in it. With a grid at or above the source rate, antialias
    changes nothing.

    Args:
        t_s: (N,) sample times, s, sorted non-decreasing (any real dtype; float64 inside,
            so pass times relative to a nearby origin, not Unix seconds, when sub-us
            precision matters).
        x: (N,) or (N, C) sample values (real dtype; NaN marks a missing sample).
        rate_hz: grid rate, Hz, > 0.
        t_start_s: time of grid point 0, s, same origin as ``t_s``.
        n: number of grid points, >= 0.
        max_gap_s: longest interval between samples still interpolated across, s. Default
            ``max_gap_periods`` times the median spacing of the samples.
        method: a key of :data:`METHODS`.
        antialias: average over the grid spacing before sampling when downsampling.
        breaks: optional (N,) bool, True where a sample starts a new run, e.g. after lost
            packets: the interval that ends on it is a hole whatever its length.
        max_gap_periods: the default gap limit in source periods (a bundle's
            ``preprocessing.rppg.max_gap_periods`` / ``contact.max_gap_periods``).

    Returns:
        ``(y, valid)``: ``y`` float64 of shape (n,) for 1-D ``x`` or (n, C) for 2-D ``x``,
        NaN where not valid; ``valid`` bool (n,).

    Raises:
        BadInputError: ``t_s`` not 1-D, not finite or not sorted; ``x`` of the wrong shape
            or dtype, or holding inf; ``breaks`` of the wrong shape or dtype.
        ConfigError: ``rate_hz``, ``n``, ``max_gap_s`` or ``method`` out of range.

    Method: linear interpolation on a uniform grid with explicit missing-data masks; the
    box pre-filter is the moving-average decimator (Oppenheim & Schafer, Discrete-Time
    Signal Processing, 3rd ed., section 4.6, downsampling with a low-pass prefilter).
    """
    t, xa, brk = _check_inputs(t_s, x, rate_hz, t_start_s, n, max_gap_s, method, breaks, antialias)
    one_d = xa.ndim == 1
    x2 = xa[:, None] if one_d else xa
    n_ch = x2.shape[1]
    y = np.full((int(n), n_ch), np.nan)
    valid = np.zeros(int(n), dtype=bool)

    keep = ~np.any(np.isnan(x2), axis=1)
    if not np.all(keep):
        if brk is not None:
            # A break on a dropped sample moves to the next kept one.
            run = np.cumsum(keep) - keep  # index among kept samples of the next kept one
            moved = np.zeros(int(keep.sum()) + 1, dtype=bool)
            np.logical_or.at(moved, run[brk], True)
            brk = moved[:-1]
        t, x2 = t[keep], x2[keep]
    t, x2, brk = _merge_duplicates(t, x2, brk)

    if t.size >= 2 and n > 0:
        dt = np.diff(t)
        period = float(np.median(dt))
        gap = float(max_gap_s) if max_gap_s is not None else float(max_gap_periods) * period
        hole = dt > gap
        if brk is not None:
            hole |= brk[1:]
        tol = _EDGE_TOL_PERIODS * period
        tg = float(t_start_s) + np.arange(int(n)) / float(rate_hz)
        inside = (tg >= t[0] - tol) & (tg <= t[-1] + tol)
        tg_in = np.clip(tg, t[0], t[-1])
        idx = np.clip(np.searchsorted(t, tg_in, side="right") - 1, 0, t.size - 2)
        on_sample = (np.abs(tg_in - t[idx]) <= tol) | (np.abs(tg_in - t[idx + 1]) <= tol)
        ok = inside & (~hole[idx] | on_sample)
        if antialias and 1.0 / period > float(rate_hz):
            half = 0.5 / float(rate_hz)
            a, b = tg - half, tg + half
            boxed = (a >= t[0] - tol) & (b <= t[-1] + tol)
            ia = np.clip(np.searchsorted(t, a, side="right") - 1, 0, t.size - 2)
            ib = np.clip(np.searchsorted(t, b, side="left") - 1, 0, t.size - 2)
            holes_before = np.concatenate([[0], np.cumsum(hole)])
            ok = boxed & (holes_before[ib + 1] - holes_before[ia] == 0)
            if np.any(ok):
                y[ok] = _box_average(t, x2, a[ok], b[ok])
        elif np.any(ok):
            y[ok] = METHODS[method](t, x2, tg_in[ok], idx[ok])
        valid = ok

    return (y[:, 0] if one_d else y), valid
