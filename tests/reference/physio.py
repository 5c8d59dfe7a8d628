"""Plain NumPy/SciPy references for the contact-physiology kernels.

Each function here follows the same published method and the same rules as its Numba
kernel, written for reading rather than speed: SciPy does the filtering and peak finding,
Python loops do the decisions. Tests compare kernel and reference (each test states its
tolerance).

- :func:`ecg_peaks_ref` - :func:`edge.signals.ecg.ecg_peaks` (Pan & Tompkins 1985).
- :func:`ppg_peaks_ref` - :func:`edge.signals.ppg.ppg_peaks` (Elgendi et al. 2013).
- :func:`hrv_ref` - :func:`edge.signals.hrv.hrv_time` (Task Force 1996 time-domain HRV).
- :func:`eda_decompose_ref`, :func:`eda_scr_ref` - :mod:`edge.signals.eda`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy import signal as sps

__all__ = [
    "eda_decompose_ref",
    "eda_scr_ref",
    "ecg_peaks_ref",
    "hrv_ref",
    "ppg_peaks_ref",
]

# Constants are restated rather than imported so that a change to a kernel's rule shows up
# as a kernel-versus-reference test failure instead of silently moving both.
_ECG_BAND_HZ = (5.0, 15.0)
_MWI_S = 0.150
_REFRACTORY_S = 0.200
_TWAVE_S = 0.360
_SLOPE_HALF_S = 0.075
_SEARCH_S = 0.100
_RAW_SEARCH_S = 0.025
_LEARN_S = 8.0
_EARLY_FRAC = 0.60
_EARLY_GAIN = 0.70
_EXTRA_GAP = 0.8
_EXTRA_SUM = 1.3
_LOST_RR = 4.0


class _RegularRR:
    """Pan-Tompkins RR averages: all recent RRs, and the recent "regular" ones."""

    def __init__(self, fs: float):
        self.all = [0.8 * fs] * 8
        self.regular = [0.8 * fs] * 8
        self.avg = 0.8 * fs
        self.irregular = 0

    def add(self, rr: float) -> None:
        self.all = self.all[1:] + [rr]
        if 0.92 * self.avg < rr < 1.16 * self.avg:
            self.regular = self.regular[1:] + [rr]
            self.avg = float(np.median(self.regular))
            self.irregular = 0
        elif self.irregular + 1 >= 8:
            self.regular = list(self.all)
            self.avg = float(np.median(self.all))
            self.irregular = 0
        else:
            self.irregular += 1


def _pt_decide_reference(cidx, cval, cslope, fs, spki, npki):
    ref = int(round(_REFRACTORY_S * fs))
    twave = int(round(_TWAVE_S * fs))
    rr = _RegularRR(fs)
    thr1 = npki + 0.25 * (spki - npki)
    thr2 = 0.5 * thr1
    chosen: list[int] = []
    last, last_slope, first_pending, last_decay = 0, 0.0, 0, 0

    def accept(j: int, weight: float) -> None:
        nonlocal spki, last, last_slope, first_pending
        spki = weight * cval[j] + (1 - weight) * spki
        if chosen:
            rr.add(cidx[j] - last)
        chosen.append(j)
        last, last_slope, first_pending = cidx[j], cslope[j], j + 1

    for c, ic in enumerate(cidx):
        for _ in range(2):
            if ic - last <= 1.66 * rr.avg:
                break
            soon = max(twave, _EARLY_FRAC * rr.avg)
            pending = [j for j in range(first_pending, c) if not chosen or cidx[j] - last > soon]
            pending = [j for j in pending if cval[j] > thr2]
            if not pending:
                if ic - last > _LOST_RR * rr.avg and ic - last_decay > rr.avg:
                    spki *= 0.5
                    last_decay = ic
                    thr1 = npki + 0.25 * (spki - npki)
                    thr2 = 0.5 * thr1
                break
            accept(max(pending, key=lambda j: cval[j]), 0.25)
            thr1 = npki + 0.25 * (spki - npki)
            thr2 = 0.5 * thr1
        if chosen and ic - last < ref:
            continue
        v = cval[c]
        early = bool(chosen) and ic - last < max(twave, _EARLY_FRAC * rr.avg)
        if v > thr1 and not (early and (cslope[c] < 0.5 * last_slope or v < _EARLY_GAIN * spki)):
            accept(c, 0.125)
        else:
            npki = 0.125 * v + 0.875 * npki
        thr1 = npki + 0.25 * (spki - npki)
        thr2 = 0.5 * thr1
    return np.asarray(chosen, dtype=np.int64)


def _drop_extra_beats_reference(pos, val):
    pos = [int(p) for p in pos]
    m = len(pos)
    keep = np.ones(m, dtype=bool)
    if m < 4:
        return keep
    gaps = np.diff(pos)
    rr_local = []
    for k in range(m):
        window = np.sort(gaps[max(0, k - 8) : min(m - 1, k + 8)])
        rr_local.append(window[(3 * (window.size - 1)) // 4])
    alive = list(range(m))
    for k in np.argsort(val, kind="quicksort"):
        i = alive.index(k)
        if i == 0 or i == len(alive) - 1:
            continue
        g1, g2 = pos[k] - pos[alive[i - 1]], pos[alive[i + 1]] - pos[k]
        rr = rr_local[k]
        if g1 < _EXTRA_GAP * rr and g2 < _EXTRA_GAP * rr and g1 + g2 < _EXTRA_SUM * rr:
            keep[k] = False
            alive.pop(i)
    return keep


def ecg_peaks_ref(ecg: np.ndarray, fs: float) -> np.ndarray:
    """SciPy twin of :func:`edge.signals.ecg.ecg_peaks` (Pan & Tompkins 1985, adapted).

    Args:
        ecg: shape (N,), finite, any units.
        fs: sampling rate, Hz (>= 40).

    Returns:
        int64 R-peak sample indices, sorted and unique.

    Raises:
        ValueError: from SciPy on unusable input (the reference does not validate).
    """
    x = np.asarray(ecg, dtype=np.float64)
    sos = sps.butter(2, _ECG_BAND_HZ, btype="band", fs=fs, output="sos")
    if x.size < int(0.5 * fs) or x.size <= 15:
        return np.empty(0, np.int64)
    f = sps.sosfiltfilt(sos, x)
    if np.abs(f).max() <= 1e-9 * np.abs(x).max():  # flat: nothing but rounding noise
        return np.empty(0, np.int64)
    d = np.zeros_like(f)
    d[2:-2] = (2.0 * (f[3:-1] - f[1:-3]) + f[4:] - f[:-4]) * (fs / 8.0)
    w = 2 * int(round(_MWI_S * fs / 2.0)) + 1
    mwi = np.convolve(d * d, np.ones(w) / w, mode="same")

    cidx = sps.argrelextrema(mwi, np.greater_equal)[0]
    # argrelextrema's ">=" on both sides would keep plateaus; the kernel wants "rise, then not rise".
    cidx = cidx[(cidx > 0) & (cidx < mwi.size - 1)]
    cidx = cidx[mwi[cidx - 1] < mwi[cidx]]
    cval = mwi[cidx]
    h = int(round(_SLOPE_HALF_S * fs))
    cslope = ndimage.maximum_filter1d(np.abs(d), size=2 * h + 1, mode="constant")[cidx]

    sec = max(1, int(round(fs)))
    learn = min(x.size, int(_LEARN_S * fs))
    nwin = learn // sec
    spki = mwi[:learn].max() if nwin < 1 else np.median(mwi[: nwin * sec].reshape(nwin, sec).max(axis=1))
    npki = 0.5 * mwi[:learn].mean()

    chosen = _pt_decide_reference(cidx, cval, cslope, fs, spki, npki)
    if chosen.size == 0:
        return np.empty(0, np.int64)
    hw = int(round(_SEARCH_S * fs))
    windows = [f[max(0, q - hw) : q + hw + 1] for q in cidx[chosen]]
    votes = sum(1 if w_.max() >= -w_.min() else -1 for w_ in windows)
    sign = 1.0 if votes >= 0 else -1.0
    coarse = np.array([max(0, q - hw) + int(np.argmax(sign * w_)) for q, w_ in zip(cidx[chosen], windows)])
    coarse = coarse[_drop_extra_beats_reference(coarse, cval[chosen])]
    hr = max(1, int(round(_RAW_SEARCH_S * fs)))
    peaks = []
    for c in coarse:
        lo = max(0, c - hr)
        peaks.append(lo + int(np.argmax(sign * x[lo : c + hr + 1])))
    ref = int(round(_REFRACTORY_S * fs))
    kept: list[int] = []
    for p in peaks:
        if kept and p - kept[-1] < ref:
            if sign * x[p] > sign * x[kept[-1]]:
                kept[-1] = p
            continue
        kept.append(p)
    return np.sort(np.asarray(kept, dtype=np.int64))


def ppg_peaks_ref(ppg: np.ndarray, fs: float) -> np.ndarray:
    """SciPy twin of :func:`edge.signals.ppg.ppg_peaks` (Elgendi et al. 2013).

    Args:
        ppg: shape (N,), finite, systolic peaks up.
        fs: sampling rate, Hz (>= 20).

    Returns:
        int64 systolic-peak sample indices, sorted.
    """
    x = np.asarray(ppg, dtype=np.float64)
    if x.size < int(fs) or x.size <= 15:
        return np.empty(0, np.int64)
    sos = sps.butter(2, (0.5, 8.0), btype="band", fs=fs, output="sos")
    f = sps.sosfiltfilt(sos, x)
    if np.abs(f).max() <= 1e-9 * np.abs(x).max():
        return np.empty(0, np.int64)
    y = np.where(f > 0, f * f, 0.0)
    h1 = int(round(0.111 * fs / 2.0))
    h2 = int(round(0.667 * fs / 2.0))
    ma_peak = np.convolve(y, np.ones(2 * h1 + 1) / (2 * h1 + 1), mode="same")
    ma_beat = np.convolve(y, np.ones(2 * h2 + 1) / (2 * h2 + 1), mode="same")
    above = ma_peak > ma_beat + 0.02 * y.mean()
    edges = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    peaks = [a + int(np.argmax(f[a:b])) for a, b in zip(starts, stops) if b - a >= 2 * h1 + 1]
    ref = int(round(0.300 * fs))
    kept: list[int] = []
    for p in peaks:
        if kept and p - kept[-1] < ref:
            if f[p] > f[kept[-1]]:
                kept[-1] = p
            continue
        kept.append(p)
    return np.asarray(kept, dtype=np.int64)


def hrv_ref(peaks: np.ndarray, fs: float) -> tuple[float, float, float, int]:
    """Python twin of :func:`edge.signals.hrv.hrv_time` (Task Force 1996, local-median 20 % rule).

    Args:
        peaks: int beat sample indices, strictly increasing.
        fs: their sampling rate, Hz.

    Returns:
        ``(mean_hr_bpm, sdnn_ms, rmssd_ms, n_beats)`` with the kernel's NaN conventions.
    """
    nan = float("nan")
    p = [int(v) for v in peaks]
    if len(p) < 2:
        return nan, nan, nan, 0
    rr = [(b - a) / fs for a, b in zip(p[:-1], p[1:])]
    in_range = [0.27 <= r <= 2.0 for r in rr]
    keep = []
    for i, r in enumerate(rr):
        around = [rr[j] for j in range(max(0, i - 5), min(len(rr), i + 6)) if in_range[j]]
        keep.append(in_range[i] and abs(r - float(np.median(around))) <= 0.2 * float(np.median(around)))
    nn = [r for r, k in zip(rr, keep) if k]
    if not nn:
        return nan, nan, nan, 0
    beats = {i for i, k in enumerate(keep) if k} | {i + 1 for i, k in enumerate(keep) if k}
    sdnn = float(np.std(nn, ddof=1) * 1000.0) if len(nn) >= 2 else nan
    diffs = [rr[i + 1] - rr[i] for i in range(len(rr) - 1) if keep[i] and keep[i + 1]]
    rmssd = float(np.sqrt(np.mean(np.square(diffs))) * 1000.0) if diffs else nan
    return 60.0 / float(np.mean(nn)), sdnn, rmssd, len(beats)


def eda_decompose_ref(eda: np.ndarray, fs: float, window_s: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """SciPy twin of :func:`edge.signals.eda.eda_decompose` (running median of ~4-Hz block means).

    Args:
        eda: skin conductance, shape (N,), microsiemens.
        fs: sampling rate, Hz.
        window_s: running-median window, s.

    Returns:
        ``(tonic, phasic)``, float64 arrays of shape (N,), microsiemens.
    """
    x = np.asarray(eda, dtype=np.float64)
    block = max(1, int(round(fs / 4.0)))
    starts = np.arange(0, x.size, block)
    means = np.add.reduceat(x, starts) / np.diff(np.append(starts, x.size))
    centres = 0.5 * (starts + np.minimum(starts + block, x.size) - 1)
    half = max(1, int(round(window_s * fs / block / 2.0)))
    med = ndimage.median_filter(means, size=2 * half + 1, mode="nearest")
    tonic = np.interp(np.arange(x.size, dtype=np.float64), centres, med)
    return tonic, x - tonic


def eda_scr_ref(eda: np.ndarray, fs: float, min_amplitude_us: float = 0.02):
    """SciPy twin of :func:`edge.signals.eda.eda_scr` (trough-to-peak on the 1-Hz low-passed EDA).

    Args:
        eda: skin conductance, shape (N,), microsiemens.
        fs: sampling rate, Hz.
        min_amplitude_us: smallest response, microsiemens.

    Returns:
        ``(onsets, peaks, amplitudes_us)`` arrays.
    """
    x = np.asarray(eda, dtype=np.float64)

    def lowpass(cutoff_hz: float) -> np.ndarray:
        if fs <= 2.5 * cutoff_hz or x.size <= 9:  # sosfiltfilt needs more samples than its padding
            return x.copy()
        return sps.sosfiltfilt(sps.butter(2, cutoff_hz, btype="low", fs=fs, output="sos"), x)

    def crossing(sig: np.ndarray, lo: int, hi: int, level: float) -> float:
        reached = np.flatnonzero(sig[lo : hi + 1] >= level)
        if reached.size == 0:
            return float(hi)
        i = lo + int(reached[0])
        if i == lo or sig[i] == sig[i - 1]:
            return float(i)
        return i - 1 + (level - sig[i - 1]) / (sig[i] - sig[i - 1])

    s, fast = lowpass(1.0), lowpass(5.0)
    h = 0.25 * min_amplitude_us
    # Zig-zag: a leg ends when the signal comes back from its extreme by more than h.
    points: list[tuple[int, int]] = []
    lo = hi = 0
    direction, ext = 0, 0
    for i in range(1, s.size):
        if direction == 0:
            lo = i if s[i] < s[lo] else lo
            hi = i if s[i] > s[hi] else hi
            if s[i] - s[lo] > h:
                points.append((lo, -1))
                direction, ext = 1, i
            elif s[hi] - s[i] > h:
                points.append((hi, 1))
                direction, ext = -1, i
        elif direction == 1:
            if s[i] > s[ext]:
                ext = i
            elif s[ext] - s[i] > h:
                points.append((ext, 1))
                direction, ext = -1, i
        else:
            if s[i] < s[ext]:
                ext = i
            elif s[i] - s[ext] > h:
                points.append((ext, -1))
                direction, ext = 1, i
    if direction == 1:
        points.append((ext, 1))
    onsets, peaks, amps = [], [], []
    for (t0, k0), (t1, k1) in zip(points[:-1], points[1:]):
        if k0 != -1 or k1 != 1 or t1 - t0 < 2:
            continue
        slope = np.diff(s[t0 : t1 + 1])
        steepest = t0 + int(np.argmax(slope))
        on = steepest
        while on > t0 and s[on] - s[on - 1] > 0.10 * slope.max():
            on -= 1
        amp = s[t1] - s[on]
        t10 = crossing(fast, on, t1, s[on] + 0.1 * amp)
        rise_10_90_s = (crossing(fast, on, t1, s[on] + 0.9 * amp) - t10) / fs
        if amp >= min_amplitude_us and 0.5 <= (t1 - on) / fs <= 5.0 and rise_10_90_s >= 0.2:
            onsets.append(on)
            peaks.append(t1)
            amps.append(amp)
    return np.asarray(onsets, np.int64), np.asarray(peaks, np.int64), np.asarray(amps, np.float64)
