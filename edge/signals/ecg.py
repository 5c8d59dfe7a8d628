"""ECG R-peak detection: a Pan-Tompkins detector compiled with Numba.

Method: Pan J., Tompkins W.J., "A real-time QRS detection algorithm", IEEE Trans. Biomed.
Eng. 32(3):230-236, 1985 (band-pass, derivative, squaring, moving-window integration, two
adaptive thresholds, searchback for missed beats, T-wave discrimination by slope), adapted
to offline use at any sampling rate:

- the band-pass is a 5-15 Hz Butterworth filter (order 2) run forward and backward, and the
  derivative and the 150-ms integration window are centred, so no delay has to be undone;
- the thresholds start from the median of the per-second maxima of the first 8 s rather
  than from the first 2 s alone, so one artefact at the start cannot blind the detector;
- the RR averages are medians, and the "regular RR" average falls back to the plain one
  after 8 irregular beats, so a sudden change of heart rate does not freeze the searchback
  interval;
- PT's T-wave rule is widened against artefacts: a peak sooner than max(360 ms, 0.6 x the
  regular RR) after the last beat must have half its slope *and* 70 % of the running QRS
  peak level; searchback ignores such early peaks too;
- after 4 regular RRs without any beat, even at the searchback level, the QRS level estimate
  is halved once per RR, so a sudden drop of the QRS amplitude (electrode moved, hands
  regripping a steering-wheel ECG) does not blind the detector for good;
- offline look-ahead: a detection whose gaps to both neighbours are under 0.8 of the local
  RR and together under 1.3 of it is dropped (weakest first), since a true premature beat
  is followed by a pause;
- each detection is moved to the R extremum: first the extremum of the band-passed signal
  within +-100 ms with the recording's dominant QRS polarity (majority vote, so inverted
  leads work), then the extremum of the raw signal within +-25 ms of it.

With these rules record 100 of the MIT-BIH Arrhythmia Database is detected without error,
and beats stay found under the NST-style noise of :mod:`firmware_bridge.sim.noise` (see the
tests for the figures). Interpolated ectopic beats (no pause after them) would be dropped by
the look-ahead rule.

The plain NumPy/SciPy twin is ``ecg_peaks_ref`` (tests/reference/physio.py).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

from edge.signals.filters import _sosfiltfilt_1d, check_rate
from firmware_bridge.errors import BadInputError

__all__ = ["ecg_peaks"]

BAND_HZ = (5.0, 15.0)
MWI_S = 0.150
REFRACTORY_S = 0.200
TWAVE_S = 0.360
SLOPE_HALF_S = 0.075
SEARCH_S = 0.100
RAW_SEARCH_S = 0.025
LEARN_S = 8.0
EARLY_FRAC = 0.60
EARLY_GAIN = 0.70
EXTRA_GAP = 0.80
EXTRA_SUM = 1.30
LOST_RR = 4.0
MIN_FS_HZ = 40.0
FLAT_RATIO = 1e-9


@lru_cache(maxsize=32)
def _design(low_hz: float, high_hz: float, fs: float, order: int = 2, btype: str = "band"):
    """SOS, sosfilt_zi and the padding length scipy.signal.sosfiltfilt would use."""
    wn = [low_hz, high_hz] if btype == "band" else (high_hz if btype == "low" else low_hz)
    # Imported here: scipy.signal costs ~76 MB and ~0.9 s at import, and the design runs once
    # per (band, rate) thanks to the cache.
    from scipy import signal as sps

    sos = sps.butter(order, wn, btype=btype, fs=fs, output="sos")
    zi = sps.sosfilt_zi(sos)
    ntaps = 2 * sos.shape[0] + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    return np.ascontiguousarray(sos), np.ascontiguousarray(zi), 3 * ntaps


@njit(cache=True, nogil=True)
def _sosfiltfilt(sos, zi, x, pad):
    """Zero-phase filtering with scipy.signal.sosfiltfilt's odd-extension padding and initial
    states (the shared kernel in filters.py), so kernel and reference agree to rounding.
    ``pad`` is the padding ``_design`` computed; the shared kernel derives the same value."""
    out = np.empty(x.size)
    _sosfiltfilt_1d(sos, zi, x, out)
    return out


@njit(cache=True, nogil=True)
def _pt_features(f, fs):
    """Centred 5-point derivative of the band-passed ECG and its squared, integrated energy."""
    n = f.size
    d = np.empty(n)
    d[: min(2, n)] = 0.0
    d[max(0, n - 2) :] = 0.0
    scale = fs / 8.0
    for i in range(2, n - 2):
        d[i] = (2.0 * (f[i + 1] - f[i - 1]) + f[i + 2] - f[i - 2]) * scale
    h = int(round(MWI_S * fs / 2.0))
    w = 2 * h + 1
    mwi = np.empty(n)
    acc = 0.0
    # Running sum of d**2 over [i - h, i + h]; samples outside the signal count as zero.
    for i in range(min(h, n)):
        acc += d[i] * d[i]
    for i in range(n):
        j = i + h
        if j < n:
            acc += d[j] * d[j]
        k = i - h - 1
        if k >= 0:
            acc -= d[k] * d[k]
        mwi[i] = max(acc, 0.0) / w
    return d, mwi


@njit(cache=True, nogil=True)
def _local_maxima(y):
    n = y.size
    idx = np.empty(n // 2 + 1, np.int64)
    m = 0
    for i in range(1, n - 1):
        if y[i - 1] < y[i] and y[i] >= y[i + 1]:
            idx[m] = i
            m += 1
    return idx[:m]


@njit(cache=True, nogil=True)
def _window_absmax(d, centres, half):
    out = np.empty(centres.size)
    n = d.size
    for k in range(centres.size):
        c = centres[k]
        m = 0.0
        for i in range(max(0, c - half), min(n, c + half + 1)):
            a = abs(d[i])
            if a > m:
                m = a
        out[k] = m
    return out


@njit(cache=True, nogil=True)
def _initial_levels(mwi, fs):
    """Signal and noise peak levels from the learning period (up to LEARN_S)."""
    n = mwi.size
    sec = max(1, int(round(fs)))
    learn = min(n, int(LEARN_S * fs))
    nwin = learn // sec
    if nwin < 1:
        spki = mwi[:learn].max()
    else:
        maxima = np.empty(nwin)
        for k in range(nwin):
            maxima[k] = mwi[k * sec : (k + 1) * sec].max()
        spki = np.median(maxima)
    npki = 0.5 * mwi[:learn].mean()
    return spki, npki


@njit(cache=True, nogil=True)
def _update_rr(rr, rr1, k1, rr2, k2, rr_avg2, irregular):
    """Pan-Tompkins' "regular RR" average, with medians so one missed or extra beat cannot
    drag it; after 8 irregular beats in a row it restarts from the recent RRs (a new rate).
    rr1 and rr2 are rings of the last 8 RRs and regular RRs; k1, k2 count their writes."""
    rr1[k1 % 8] = rr
    k1 += 1
    if 0.92 * rr_avg2 < rr < 1.16 * rr_avg2:
        rr2[k2 % 8] = rr
        return k1, k2 + 1, np.median(rr2), 0
    if irregular + 1 >= 8:
        rr2[:] = rr1
        return k1, k1, np.median(rr1), 0  # same ring phase, so the oldest goes first
    return k1, k2, rr_avg2, irregular + 1


@njit(cache=True, nogil=True)
def _pt_decide(cidx, cval, cslope, fs, spki, npki):
    """Pan-Tompkins decision rules over the integrated-energy peaks; returns the indices
    (into cidx) of the peaks taken as QRS complexes."""
    ncand = cidx.size
    ref = int(round(REFRACTORY_S * fs))
    twave = int(round(TWAVE_S * fs))
    rr1 = np.full(8, 0.8 * fs)
    rr2 = np.full(8, 0.8 * fs)
    k1 = 0
    k2 = 0
    irregular = 0
    rr_avg2 = 0.8 * fs
    thr1 = npki + 0.25 * (spki - npki)
    thr2 = 0.5 * thr1
    chosen = np.empty(ncand, np.int64)
    nd = 0
    last = 0
    last_slope = 0.0
    first_pending = 0
    last_decay = 0
    for c in range(ncand):
        ic = cidx[c]
        for _sb in range(2):
            # Searchback: no beat for 1.66 regular RR -> take the largest skipped peak above thr2.
            if ic - last <= 1.66 * rr_avg2:
                break
            best = -1
            bestv = thr2
            soon = max(twave, EARLY_FRAC * rr_avg2)
            for j in range(first_pending, c):
                if (nd == 0 or cidx[j] - last > soon) and cval[j] > bestv:
                    best = j
                    bestv = cval[j]
            if best < 0:
                # Nothing even at the searchback level for a long time: the QRS got smaller
                # (electrode moved, grip changed). Halve the signal level, once per RR.
                if ic - last > LOST_RR * rr_avg2 and ic - last_decay > rr_avg2:
                    spki *= 0.5
                    last_decay = ic
                    thr1 = npki + 0.25 * (spki - npki)
                    thr2 = 0.5 * thr1
                break
            spki = 0.25 * cval[best] + 0.75 * spki
            if nd > 0:
                rr = cidx[best] - last
                k1, k2, rr_avg2, irregular = _update_rr(rr, rr1, k1, rr2, k2, rr_avg2, irregular)
            chosen[nd] = best
            nd += 1
            last = cidx[best]
            last_slope = cslope[best]
            first_pending = best + 1
            thr1 = npki + 0.25 * (spki - npki)
            thr2 = 0.5 * thr1
        if nd > 0 and ic - last < ref:
            continue
        v = cval[c]
        is_qrs = False
        if v > thr1:
            early = nd > 0 and ic - last < max(twave, EARLY_FRAC * rr_avg2)
            if early and (cslope[c] < 0.5 * last_slope or v < EARLY_GAIN * spki):
                is_qrs = False  # a T wave or an artefact: too soon and too weak
            else:
                is_qrs = True
        if is_qrs:
            spki = 0.125 * v + 0.875 * spki
            if nd > 0:
                rr = ic - last
                k1, k2, rr_avg2, irregular = _update_rr(rr, rr1, k1, rr2, k2, rr_avg2, irregular)
            chosen[nd] = c
            nd += 1
            last = ic
            last_slope = cslope[c]
            first_pending = c + 1
        else:
            npki = 0.125 * v + 0.875 * npki
        thr1 = npki + 0.25 * (spki - npki)
        thr2 = 0.5 * thr1
    return chosen[:nd]


@njit(cache=True, nogil=True)
def _coarse_positions(f, qrs, fs):
    """Extremum of the band-passed ECG near each detection, with the dominant polarity."""
    n = f.size
    m = qrs.size
    hw = int(round(SEARCH_S * fs))
    votes = 0
    for k in range(m):
        lo, hi = max(0, qrs[k] - hw), min(n, qrs[k] + hw + 1)
        seg = f[lo:hi]
        votes += 1 if seg.max() >= -seg.min() else -1
    sign = 1.0 if votes >= 0 else -1.0
    out = np.empty(m, np.int64)
    for k in range(m):
        lo, hi = max(0, qrs[k] - hw), min(n, qrs[k] + hw + 1)
        best = lo
        for i in range(lo, hi):
            if sign * f[i] > sign * f[best]:
                best = i
        out[k] = best
    return out, sign


@njit(cache=True, nogil=True)
def _drop_extra_beats(pos, val):
    """Remove detections that split one RR interval into two short ones.

    A detection whose gaps to both neighbours are under EXTRA_GAP of the local RR and whose
    two gaps together stay under EXTRA_SUM of it sits where no beat is due: an artefact
    (premature beats are followed by a pause, so their gaps add up to more). Weakest first,
    so a strong QRS next to a weak artefact survives. The local RR is the 75th percentile of
    the 16 surrounding intervals, which stays a true RR while under a quarter are split.
    """
    m = pos.size
    keep = np.ones(m, np.bool_)
    if m < 4:
        return keep
    gaps = np.diff(pos).astype(np.float64)
    rr_local = np.empty(m)
    buf = np.empty(16)
    for k in range(m):
        lo, hi = max(0, k - 8), min(m - 1, k + 8)
        nb = hi - lo
        for i in range(nb):  # insertion sort: 16 values
            v = gaps[lo + i]
            j = i
            while j > 0 and buf[j - 1] > v:
                buf[j] = buf[j - 1]
                j -= 1
            buf[j] = v
        rr_local[k] = buf[(3 * (nb - 1)) // 4]
    prv = np.arange(m) - 1
    nxt = np.arange(m) + 1
    for k in np.argsort(val):
        p, q = prv[k], nxt[k]
        if p < 0 or q >= m:
            continue
        g1, g2 = pos[k] - pos[p], pos[q] - pos[k]
        rr = rr_local[k]
        if g1 < EXTRA_GAP * rr and g2 < EXTRA_GAP * rr and g1 + g2 < EXTRA_SUM * rr:
            keep[k] = False
            nxt[p] = q
            prv[q] = p
    return keep


@njit(cache=True, nogil=True)
def _refine(x, pos, sign, fs):
    """Move each coarse position to the raw extremum within +-RAW_SEARCH_S, then drop
    duplicates closer than the refractory period (keeping the larger)."""
    n = x.size
    m = pos.size
    hr = max(1, int(round(RAW_SEARCH_S * fs)))
    ref = int(round(REFRACTORY_S * fs))
    keep = np.empty(m, np.int64)
    nk = 0
    for k in range(m):
        lo, hi = max(0, pos[k] - hr), min(n, pos[k] + hr + 1)
        r = lo
        for i in range(lo, hi):
            if sign * x[i] > sign * x[r]:
                r = i
        if nk > 0 and r - keep[nk - 1] < ref:
            if sign * x[r] > sign * x[keep[nk - 1]]:
                keep[nk - 1] = r
            continue
        keep[nk] = r
        nk += 1
    return np.sort(keep[:nk])


@njit(cache=True, nogil=True)
def _is_flat(x, f):
    """True when the band-passed signal is rounding noise next to the input's level (a
    constant or lead-off signal): relative thresholds would otherwise chase that noise."""
    return np.abs(f).max() <= FLAT_RATIO * np.abs(x).max()


@njit(cache=True, nogil=True)
def _ecg_peaks_core(x, fs, sos, zi, pad):
    f = _sosfiltfilt(sos, zi, x, pad)
    if _is_flat(x, f):
        return np.empty(0, np.int64)
    d, mwi = _pt_features(f, fs)
    cidx = _local_maxima(mwi)
    cval = np.empty(cidx.size)
    for k in range(cidx.size):
        cval[k] = mwi[cidx[k]]
    cslope = _window_absmax(d, cidx, int(round(SLOPE_HALF_S * fs)))
    spki, npki = _initial_levels(mwi, fs)
    chosen = _pt_decide(cidx, cval, cslope, fs, spki, npki)
    if chosen.size == 0:
        return np.empty(0, np.int64)
    pos, sign = _coarse_positions(f, cidx[chosen], fs)
    keep = _drop_extra_beats(pos, cval[chosen])
    return _refine(x, pos[keep], sign, fs)


def _validate(ecg, fs, what: str) -> tuple[np.ndarray, float]:
    try:
        x = np.ascontiguousarray(ecg, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{what} must be a numeric array ({exc})") from None
    if x.ndim != 1:
        raise BadInputError(f"{what} must be 1-D, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise BadInputError(f"{what} holds NaN or infinite samples; interpolate or cut them first")
    fs = check_rate(fs)
    return x, fs


def ecg_peaks(ecg: np.ndarray, fs: float) -> np.ndarray:
    """Find R peaks in a single-lead ECG (Pan & Tompkins 1985, adapted: see module docs).

    Works on either QRS polarity and on noisy ambulatory ECG; baseline wander needs no
    prior removal. A refractory period of 200 ms separates beats.

    Args:
        ecg: shape (N,), any real dtype, any units (e.g. mV); finite.
        fs: sampling rate, Hz (>= 40).

    Returns:
        int64 array of R-peak sample indices, sorted and unique; empty for signals shorter
        than 0.5 s and for flat ones (no 5-15 Hz content above 1e-9 of the signal's level).

    Raises:
        BadInputError: not 1-D, not numeric, non-finite samples, or fs < 40 Hz.
    """
    x, fs = _validate(ecg, fs, "ecg")
    if fs < MIN_FS_HZ:
        raise BadInputError(f"ecg_peaks needs fs >= {MIN_FS_HZ} Hz (the band-pass reaches 15 Hz), got {fs}")
    sos, zi, pad = _design(BAND_HZ[0], BAND_HZ[1], fs)
    if x.size < max(int(0.5 * fs), pad + 1):
        return np.empty(0, np.int64)
    return _ecg_peaks_core(x, fs, sos, zi, pad)
