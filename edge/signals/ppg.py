"""PPG systolic-peak detection: Elgendi's two-moving-averages method, compiled with Numba.

Method: Elgendi M., Norton I., Brearley M., Abbott D., Schuurmans D., "Systolic peak
detection in acceleration photoplethysmograms measured from emergency responders in
tropical conditions", PLoS ONE 8(10):e76585, 2013: band-pass 0.5-8 Hz (Butterworth, order
2, zero phase), keep the positive part and square it, compare a 111-ms moving average
(systolic peak scale) against a 667-ms one (beat scale) plus an offset of 0.02 x the mean
squared signal, keep blocks of interest at least 111 ms wide, and take each block's
maximum. One addition: two peaks closer than 300 ms (200 bpm) are one beat, and the larger
is kept.

The plain NumPy/SciPy twin is ``ppg_peaks_ref`` (tests/reference/physio.py).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from edge.signals.ecg import _design, _is_flat, _sosfiltfilt, _validate
from firmware_bridge.errors import BadInputError

__all__ = ["ppg_peaks"]

BAND_HZ = (0.5, 8.0)
PEAK_WINDOW_S = 0.111
BEAT_WINDOW_S = 0.667
BETA = 0.02
REFRACTORY_S = 0.300
MIN_FS_HZ = 20.0


@njit(cache=True, nogil=True)
def _centred_mean(y, h):
    """Mean over [i - h, i + h], samples outside the signal counted as zero."""
    n = y.size
    w = 2 * h + 1
    out = np.empty(n)
    acc = 0.0
    for i in range(min(h, n)):
        acc += y[i]
    for i in range(n):
        j = i + h
        if j < n:
            acc += y[j]
        k = i - h - 1
        if k >= 0:
            acc -= y[k]
        out[i] = max(acc, 0.0) / w
    return out


@njit(cache=True, nogil=True)
def _ppg_peaks_core(x, fs, sos, zi, pad):
    f = _sosfiltfilt(sos, zi, x, pad)
    if _is_flat(x, f):
        return np.empty(0, np.int64)
    n = f.size
    y = np.empty(n)
    for i in range(n):
        y[i] = f[i] * f[i] if f[i] > 0.0 else 0.0
    h1 = int(round(PEAK_WINDOW_S * fs / 2.0))
    h2 = int(round(BEAT_WINDOW_S * fs / 2.0))
    ma_peak = _centred_mean(y, h1)
    ma_beat = _centred_mean(y, h2)
    alpha = BETA * y.mean()
    min_width = 2 * h1 + 1
    peaks = np.empty(n // max(1, min_width) + 1, np.int64)
    m = 0
    i = 0
    while i < n:
        if ma_peak[i] > ma_beat[i] + alpha:
            start = i
            while i < n and ma_peak[i] > ma_beat[i] + alpha:
                i += 1
            if i - start >= min_width:
                best = start
                for j in range(start, i):
                    if f[j] > f[best]:
                        best = j
                peaks[m] = best
                m += 1
        else:
            i += 1
    ref = int(round(REFRACTORY_S * fs))
    out = np.empty(m, np.int64)
    k = 0
    for j in range(m):
        if k > 0 and peaks[j] - out[k - 1] < ref:
            if f[peaks[j]] > f[out[k - 1]]:
                out[k - 1] = peaks[j]
            continue
        out[k] = peaks[j]
        k += 1
    return out[:k]


def ppg_peaks(ppg: np.ndarray, fs: float) -> np.ndarray:
    """Find systolic peaks in a PPG (Elgendi et al. 2013, see module docs).

    Args:
        ppg: shape (N,), any real dtype, any units, finite; systolic peaks pointing up
            (negate an absorbance-style signal whose pulses point down).
        fs: sampling rate, Hz (>= 20).

    Returns:
        int64 array of systolic-peak sample indices (maxima of the 0.5-8 Hz band-passed
        signal), sorted and unique; empty for signals shorter than 1 s and for flat ones.

    Raises:
        BadInputError: not 1-D, not numeric, non-finite samples, or fs < 20 Hz.
    """
    x, fs = _validate(ppg, fs, "ppg")
    if fs < MIN_FS_HZ:
        raise BadInputError(f"ppg_peaks needs fs >= {MIN_FS_HZ} Hz (the band-pass reaches 8 Hz), got {fs}")
    sos, zi, pad = _design(BAND_HZ[0], BAND_HZ[1], fs)
    if x.size < max(int(fs), pad + 1):
        return np.empty(0, np.int64)
    return _ppg_peaks_core(x, fs, sos, zi, pad)
