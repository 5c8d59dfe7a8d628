"""Time-domain heart-rate variability from beat positions, with artefact rejection.

Measures: Task Force of the European Society of Cardiology and the North American Society
of Pacing and Electrophysiology, "Heart rate variability: standards of measurement,
physiological interpretation and clinical use", Circulation 93(5):1043-1065, 1996 (SDNN and
RMSSD over normal-to-normal, NN, intervals).

Rejection rule (what counts as NN): an RR interval is kept when it lies within 0.27-2.0 s
(30-222 bpm) and within 20 % of the median of the in-range RR intervals around it (the 5
before, itself and the 5 after): a local-median variant of the 20 % rule of Malik M. et al.,
"Heart rate variability in relation to prognosis after myocardial infarction: selection of
optimal processing techniques", Eur. Heart J. 10:1060-1074, 1989, which compares each
interval with the previous one instead. A missed beat (double RR) or an extra detection (two
short RRs) therefore drops out instead of inflating SDNN and RMSSD.

The plain NumPy twin is ``hrv_ref`` (tests/reference/physio.py).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from edge.signals.filters import check_rate
from firmware_bridge.errors import BadInputError

__all__ = ["HRV", "hrv_time", "nn_mask"]

RR_MIN_S = 0.27
RR_MAX_S = 2.0
LOCAL_TOLERANCE = 0.20
LOCAL_HALF_WIDTH = 5


class HRV(NamedTuple):
    """Time-domain HRV of one stretch of beats.

    Attributes:
        mean_hr_bpm: 60 / mean NN interval, beats per minute.
        sdnn_ms: standard deviation (ddof=1) of the NN intervals, ms.
        rmssd_ms: root mean square of differences between successive NN intervals, ms
            (only pairs of adjacent intervals that were both kept).
        n_beats: number of beats that bound at least one kept (NN) interval.
    """

    mean_hr_bpm: float
    sdnn_ms: float
    rmssd_ms: float
    n_beats: int


@njit(cache=True, nogil=True)
def _nn_mask_core(rr_s):
    n = rr_s.size
    in_range = np.empty(n, np.bool_)
    for i in range(n):
        in_range[i] = RR_MIN_S <= rr_s[i] <= RR_MAX_S
    keep = np.zeros(n, np.bool_)
    buf = np.empty(2 * LOCAL_HALF_WIDTH + 1)
    for i in range(n):
        if not in_range[i]:
            continue
        m = 0
        for j in range(max(0, i - LOCAL_HALF_WIDTH), min(n, i + LOCAL_HALF_WIDTH + 1)):
            if in_range[j]:
                buf[m] = rr_s[j]
                m += 1
        med = np.median(buf[:m])
        keep[i] = abs(rr_s[i] - med) <= LOCAL_TOLERANCE * med
    return keep


def _validate_peaks(peaks, fs) -> tuple[np.ndarray, float]:
    p = np.asarray(peaks)
    if p.ndim != 1:
        raise BadInputError(f"peaks must be 1-D sample indices, got shape {p.shape}")
    if p.size and not (np.issubdtype(p.dtype, np.integer) or np.all(np.isfinite(p) & (p == np.round(p)))):
        raise BadInputError("peaks must be integer sample indices")
    p = p.astype(np.int64)
    if p.size and (p[0] < 0 or np.any(np.diff(p) <= 0)):
        raise BadInputError("peaks must be non-negative and strictly increasing")
    fs = check_rate(fs)
    return p, fs


def nn_mask(peaks: np.ndarray, fs: float) -> np.ndarray:
    """Which RR intervals are kept as normal-to-normal by the module's rejection rule.

    Args:
        peaks: int sample indices of beats, shape (B,), strictly increasing.
        fs: sampling rate of the indices, Hz.

    Returns:
        bool array of shape (max(B - 1, 0),): True where interval peaks[i]..peaks[i+1] is NN.

    Raises:
        BadInputError: peaks not 1-D, not integer, not strictly increasing, or bad fs.
    """
    p, fs = _validate_peaks(peaks, fs)
    if p.size < 2:
        return np.zeros(0, dtype=bool)
    return _nn_mask_core(np.diff(p) / fs)


def hrv_time(peaks: np.ndarray, fs: float) -> HRV:
    """Mean heart rate, SDNN and RMSSD from beat positions (Task Force 1996).

    Args:
        peaks: int sample indices of beats (R peaks or PPG systolic peaks), shape (B,),
            strictly increasing.
        fs: sampling rate of the indices, Hz.

    Returns:
        :class:`HRV`. Fields are NaN when they cannot be computed: all of them with fewer
        than 2 beats or no kept interval, SDNN with fewer than 2 kept intervals, RMSSD
        without two adjacent kept intervals.

    Raises:
        BadInputError: peaks not 1-D, not integer, not strictly increasing, or bad fs.
    """
    p, fs = _validate_peaks(peaks, fs)
    nan = float("nan")
    if p.size < 2:
        return HRV(nan, nan, nan, 0)
    rr_s = np.diff(p) / fs
    keep = _nn_mask_core(rr_s)
    nn = rr_s[keep]
    if nn.size == 0:
        return HRV(nan, nan, nan, 0)
    bounding = np.zeros(p.size, dtype=bool)
    bounding[:-1] |= keep
    bounding[1:] |= keep
    sdnn = float(np.std(nn, ddof=1) * 1000.0) if nn.size >= 2 else nan
    pairs = keep[:-1] & keep[1:]
    diffs = (rr_s[1:] - rr_s[:-1])[pairs]
    rmssd = float(np.sqrt(np.mean(diffs**2)) * 1000.0) if diffs.size else nan
    return HRV(float(60.0 / nn.mean()), sdnn, rmssd, int(bounding.sum()))
