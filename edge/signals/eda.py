"""Electrodermal activity: tonic/phasic decomposition and skin-conductance responses (SCRs).

Decomposition: median smoothing. The tonic level is a running median of the skin
conductance over ``window_s`` (default 10 s), long enough that an SCR (rise 0.5-5 s,
recovery of a few seconds) is an outlier inside the window; the phasic part is the rest.
This is the median variant of the smoothing decompositions reviewed by Boucsein W.,
"Electrodermal Activity", 2nd ed., Springer 2012, and the "smoothmedian" method of
NeuroKit2 (Makowski D. et al., "NeuroKit2: a Python toolbox for neurophysiological signal
processing", Behav. Res. Methods 53:1689-1696, 2021). To keep it cheap the median runs on
block means at about 4 Hz and is interpolated back to the input rate (EDA holds nothing
faster than ~1 Hz).

SCRs: the trough-to-peak method (Boucsein 2012; Dawson M.E., Schell A.M.,
Filion D.L., "The electrodermal system", Handbook of Psychophysiology, 2007) on the EDA
low-passed at 1 Hz (Butterworth, order 2, zero phase): turning points are found with a
hysteresis of a quarter of ``min_amplitude_us`` (so sensor noise cannot split a rise); for
each rise, the onset is moved forward to where the slope first reaches 10 % of the rise's
steepest slope (so a slow tonic drift before the response is not counted); a response
counts when its amplitude (peak minus onset level) is at least ``min_amplitude_us`` and its
rise time (onset to peak) is 0.5-5 s - faster rises are artefacts (electrode pressure,
movement), slower ones tonic drift. Because the 1-Hz smoothing stretches an electrode step
to about a second, steps are also tested on the EDA low-passed at 5 Hz: its 10-90 % rise
over the response must take at least 0.2 s (a Bateman-shaped SCR takes ~0.7 s, a step
~0.1 s; below 10 Hz sampling this test cannot tell them apart).

Plain NumPy/SciPy twins: ``eda_decompose_ref`` (tests/reference/physio.py) and
``eda_scr_ref`` (tests/reference/physio.py).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from edge.signals.ecg import _design, _sosfiltfilt, _validate
from firmware_bridge.errors import BadInputError

__all__ = ["SCR", "eda_decompose", "eda_scr"]

TONIC_WINDOW_S = 10.0
BLOCK_HZ = 4.0
SMOOTH_HZ = 1.0
FAST_SMOOTH_HZ = 5.0
MIN_RISE_10_90_S = 0.2
HYSTERESIS_FRAC = 0.25
ONSET_SLOPE_FRAC = 0.10
MIN_RISE_S = 0.5
MAX_RISE_S = 5.0
MIN_FS_HZ = 1.0


class SCR(NamedTuple):
    """Skin-conductance responses, one entry per response, in time order.

    Attributes:
        onsets: int64 sample indices where each response starts rising.
        peaks: int64 sample indices of each response's maximum.
        amplitudes_us: float64 peak minus onset level, microsiemens.
    """

    onsets: np.ndarray
    peaks: np.ndarray
    amplitudes_us: np.ndarray


def _block_size(fs: float) -> int:
    return max(1, int(round(fs / BLOCK_HZ)))


@njit(cache=True, nogil=True)
def _tonic_core(x, block, half):
    n = x.size
    nb = (n + block - 1) // block
    means = np.empty(nb)
    centres = np.empty(nb)
    for b in range(nb):
        lo, hi = b * block, min(n, (b + 1) * block)
        means[b] = x[lo:hi].mean()
        centres[b] = 0.5 * (lo + hi - 1)
    med = np.empty(nb)
    buf = np.empty(2 * half + 1)
    for b in range(nb):
        # Edge blocks repeat (scipy.ndimage 'nearest'), so the median stays centred.
        for k in range(2 * half + 1):
            j = min(max(b - half + k, 0), nb - 1)
            buf[k] = means[j]
        med[b] = np.median(buf)
    return np.interp(np.arange(n).astype(np.float64), centres, med)


def eda_decompose(
    eda: np.ndarray, fs: float, window_s: float = TONIC_WINDOW_S
) -> tuple[np.ndarray, np.ndarray]:
    """Split skin conductance into tonic level and phasic activity by median smoothing
    (Boucsein 2012; NeuroKit2's "smoothmedian"; see the module docs).

    Args:
        eda: skin conductance, shape (N,), microsiemens, finite.
        fs: sampling rate, Hz (>= 1).
        window_s: running-median window, s (> 0); responses much shorter than it end up
            in the phasic part.

    Returns:
        ``(tonic, phasic)``: float64 arrays of shape (N,), microsiemens, with
        ``tonic + phasic == eda`` (to rounding).

    Raises:
        BadInputError: not 1-D, not numeric, non-finite, fs < 1 Hz, or window_s <= 0.
    """
    x, fs = _validate(eda, fs, "eda")
    if fs < MIN_FS_HZ:
        raise BadInputError(f"eda_decompose needs fs >= {MIN_FS_HZ} Hz, got {fs}")
    if not (np.isfinite(window_s) and window_s > 0):
        raise BadInputError(f"window_s must be > 0 s, got {window_s}")
    if x.size == 0:
        return x.copy(), x.copy()
    block = _block_size(fs)
    half = max(1, int(round(window_s * fs / block / 2.0)))
    tonic = _tonic_core(x, block, half)
    return tonic, x - tonic


@njit(cache=True, nogil=True)
def _turning_points(s, h):
    """Alternating troughs (-1) and peaks (+1) of s, each reversal larger than h (zig-zag)."""
    n = s.size
    idx = np.empty(n + 1, np.int64)
    kind = np.empty(n + 1, np.int64)
    m = 0
    direction = 0  # 0 undecided, +1 rising, -1 falling
    lo_i = 0
    hi_i = 0
    ext = 0  # the extreme of the current leg, not yet confirmed
    for i in range(1, n):
        if direction == 0:
            if s[i] < s[lo_i]:
                lo_i = i
            if s[i] > s[hi_i]:
                hi_i = i
            if s[i] - s[lo_i] > h:
                idx[m] = lo_i
                kind[m] = -1
                m += 1
                direction = 1
                ext = i
            elif s[hi_i] - s[i] > h:
                idx[m] = hi_i
                kind[m] = 1
                m += 1
                direction = -1
                ext = i
        elif direction == 1:
            if s[i] > s[ext]:
                ext = i
            elif s[ext] - s[i] > h:
                idx[m] = ext
                kind[m] = 1
                m += 1
                direction = -1
                ext = i
        else:
            if s[i] < s[ext]:
                ext = i
            elif s[i] - s[ext] > h:
                idx[m] = ext
                kind[m] = -1
                m += 1
                direction = 1
                ext = i
    if direction == 1:
        # A response still rising or at its peak when the signal ends.
        idx[m] = ext
        kind[m] = 1
        m += 1
    return idx[:m], kind[:m]


@njit(cache=True, nogil=True)
def _crossing(s, lo, hi, level):
    """First time (fractional sample) in [lo, hi] where s reaches level; hi if never."""
    for i in range(lo, hi + 1):
        if s[i] >= level:
            if i == lo or s[i] == s[i - 1]:
                return float(i)
            return i - 1 + (level - s[i - 1]) / (s[i] - s[i - 1])
    return float(hi)


@njit(cache=True, nogil=True)
def _scr_core(s, fast, fs, min_amp, h):
    idx, kind = _turning_points(s, h)
    n_tp = idx.size
    onsets = np.empty(n_tp, np.int64)
    peaks = np.empty(n_tp, np.int64)
    amps = np.empty(n_tp)
    m = 0
    for k in range(n_tp - 1):
        if kind[k] != -1 or kind[k + 1] != 1:
            continue
        t0, t1 = idx[k], idx[k + 1]
        if t1 - t0 < 2:
            continue
        steepest = t0
        best = -np.inf
        for i in range(t0, t1):
            g = s[i + 1] - s[i]
            if g > best:
                best = g
                steepest = i
        on = steepest
        while on > t0 and s[on] - s[on - 1] > ONSET_SLOPE_FRAC * best:
            on -= 1
        amp = s[t1] - s[on]
        rise_s = (t1 - on) / fs
        if amp < min_amp or rise_s < MIN_RISE_S or rise_s > MAX_RISE_S:
            continue
        t10 = _crossing(fast, on, t1, s[on] + 0.1 * amp)
        t90 = _crossing(fast, on, t1, s[on] + 0.9 * amp)
        if (t90 - t10) / fs < MIN_RISE_10_90_S:
            continue
        onsets[m] = on
        peaks[m] = t1
        amps[m] = amp
        m += 1
    return onsets[:m], peaks[:m], amps[:m]


def _smooth(x: np.ndarray, fs: float, cutoff_hz: float) -> np.ndarray:
    if fs <= 2.5 * cutoff_hz:
        return x.copy()  # already holds nothing much faster than the cutoff
    sos, zi, pad = _design(0.0, cutoff_hz, fs, btype="low")
    if x.size <= pad:
        return x.copy()
    return _sosfiltfilt(sos, zi, x, pad)


def eda_scr(eda: np.ndarray, fs: float, min_amplitude_us: float = 0.02) -> SCR:
    """Find skin-conductance responses by the trough-to-peak method (Boucsein 2012;
    Dawson et al. 2007), with onset, amplitude and rise-time rules (see the module docs).

    Args:
        eda: skin conductance, shape (N,), microsiemens, finite (raw or tonic+phasic; the
            tonic level does not matter to trough-to-peak amplitudes).
        fs: sampling rate, Hz (>= 1).
        min_amplitude_us: smallest response counted, microsiemens (> 0); 0.01-0.05 is usual.

    Returns:
        :class:`SCR` with onsets and peaks (int64 sample indices, onset < peak, rise time
        0.5-5 s, 10-90 % rise >= 0.2 s) and amplitudes_us (float64, >= min_amplitude_us), in time order.

    Raises:
        BadInputError: not 1-D, not numeric, non-finite, fs < 1 Hz, or min_amplitude_us <= 0.
    """
    x, fs = _validate(eda, fs, "eda")
    if fs < MIN_FS_HZ:
        raise BadInputError(f"eda_scr needs fs >= {MIN_FS_HZ} Hz, got {fs}")
    if not (np.isfinite(min_amplitude_us) and min_amplitude_us > 0):
        raise BadInputError(f"min_amplitude_us must be > 0, got {min_amplitude_us}")
    if x.size < 3:
        empty = np.empty(0, np.int64)
        return SCR(empty, empty.copy(), np.empty(0))
    s = _smooth(x, fs, SMOOTH_HZ)
    fast = _smooth(x, fs, FAST_SMOOTH_HZ)
    min_amp = float(min_amplitude_us)
    onsets, peaks, amps = _scr_core(s, fast, fs, min_amp, HYSTERESIS_FRAC * min_amp)
    return SCR(onsets, peaks, amps)
