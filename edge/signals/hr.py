"""Heart rate from a pulse signal: spectral peak, its SNR and a quality score.

The rate is the frequency of the largest periodogram peak inside the heart-rate band, refined
between bins by parabolic interpolation of the log power (Smith & Serra 1987, "PARSHL", the
quadratic-interpolation peak estimator; on a Hann window the log-power main lobe is close to
a parabola). The signal-to-noise ratio is that of de Haan & Jeanne 2013 ("Robust pulse rate
from chrominance-based rPPG", IEEE TBME 60(10)): power within +-0.1 Hz of the fundamental f0
and of its first harmonic 2 f0, against the power in the rest of the band.

The quality score maps the SNR through a logistic centred at 0 dB (equal signal and noise
power) with a 3 dB scale: q = 1 / (1 + exp(-snr_db / 3)). So -6 dB -> 0.12, 0 dB -> 0.5,
+6 dB -> 0.88; it is monotone and in [0, 1]. A window without band power (flat, all zeros, or
holding any NaN) gives hr_bpm NaN, snr_db NaN and quality 0 rather than an exception, so a
track keeps one row per window and a dropout is visible.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError

# Half-width of the de Haan & Jeanne (2013) signal template around f0 and 2 f0.
SNR_HALFWIDTH_HZ = 0.1
# Target spacing of the zero-padded FFT grid: parabolic interpolation then refines to well
# under 0.1 bpm on a clean peak, and the SNR template spans several bins.
_BIN_HZ = 0.01
_QUALITY_SCALE_DB = 3.0


class HeartRate(NamedTuple):
    """One heart-rate estimate.

    Attributes:
        hr_bpm: heart rate in beats per minute; NaN when there is no band power.
        snr_db: de Haan & Jeanne 2013 SNR in dB; NaN when there is no band power.
        quality: logistic map of ``snr_db`` into [0, 1]; 0 when there is no estimate.
    """

    hr_bpm: float
    snr_db: float
    quality: float


class HrTrack(NamedTuple):
    """Heart rate over sliding windows; all arrays float64 (K,).

    Attributes:
        t_s: window end times in s from the first sample (``(start + n_window) / fs``).
        hr_bpm, snr_db, quality: per-window values as in :class:`HeartRate`.
    """

    t_s: np.ndarray
    hr_bpm: np.ndarray
    snr_db: np.ndarray
    quality: np.ndarray


def snr_quality(snr_db):
    """Quality in [0, 1] from an SNR in dB: 1 / (1 + exp(-snr_db / 3)); NaN -> 0.

    Args:
        snr_db: float or float array, dB.

    Returns:
        float64 of the same shape.
    """
    snr = np.asarray(snr_db, dtype=np.float64)
    with np.errstate(over="ignore"):
        q = 1.0 / (1.0 + np.exp(-snr / _QUALITY_SCALE_DB))
    q = np.where(np.isfinite(snr), q, 0.0)
    return float(q) if q.ndim == 0 else q


def _check_band(fs: float, lo: float, hi: float) -> float:
    try:
        fs = float(fs)
        lo = float(lo)
        hi = float(hi)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"fs, lo and hi must be numbers: {exc}") from exc
    if not np.isfinite(fs) or fs <= 0:
        raise ConfigError(f"fs must be a positive sampling rate in Hz, got {fs}")
    if not (0 < lo < hi < fs / 2):
        raise ConfigError(f"need 0 < lo < hi < fs/2 Hz, got lo={lo}, hi={hi}, fs={fs}")
    return fs


def _nfft(n: int, fs: float) -> int:
    need = max(n, int(np.ceil(fs / _BIN_HZ)))
    return 1 << int(np.ceil(np.log2(need)))


def _hann(n: int) -> np.ndarray:
    # Periodic (DFT-even) Hann, the spectral-analysis convention (scipy get_window default).
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _flat(frames: np.ndarray) -> np.ndarray:
    """True per row when a (K, n) window is constant to float precision (or holds NaN)."""
    span = frames.max(axis=1) - frames.min(axis=1)
    scale = np.abs(frames).max(axis=1)
    # A constant window leaves only rounding residue after mean removal; its "peak" would be
    # noise, so it counts as no band power.
    return ~(span > 1e-12 * scale)


def _spectrum_stats(power, freqs, lo, hi, halfwidth_hz, flat):
    """HR, SNR and quality per row of a (K, F) one-sided power spectrum."""
    k = power.shape[0]
    hr = np.full(k, np.nan)
    snr = np.full(k, np.nan)
    band = np.flatnonzero((freqs >= lo) & (freqs <= hi))
    if band.size < 3:
        raise ConfigError(f"band {lo}..{hi} Hz holds fewer than 3 spectral bins")
    pb = power[:, band]
    fb = freqs[band]
    df = freqs[1] - freqs[0]
    total = pb.sum(axis=1)
    ok = np.isfinite(total) & (total > 0) & ~flat
    for i in np.flatnonzero(ok):
        p = pb[i]
        j = int(np.argmax(p))
        f0 = fb[j]
        if 0 < j < p.size - 1 and p[j - 1] > 0 and p[j + 1] > 0:
            a, b, c = np.log(p[j - 1]), np.log(p[j]), np.log(p[j + 1])
            den = a - 2.0 * b + c
            if den < 0:
                f0 = f0 + 0.5 * (a - c) / den * df
        sig = (np.abs(fb - f0) <= halfwidth_hz) | (np.abs(fb - 2.0 * f0) <= halfwidth_hz)
        s = p[sig].sum()
        noise = total[i] - s
        hr[i] = 60.0 * f0
        if noise <= 0:
            snr[i] = np.inf
        elif s <= 0:
            snr[i] = -np.inf
        else:
            snr[i] = 10.0 * np.log10(s / noise)
    q = snr_quality(snr)
    # An infinite SNR (a pure tone filling the template) is still a valid, perfect estimate.
    q = np.where(np.isposinf(snr), 1.0, q)
    return hr, snr, np.atleast_1d(q)


def _check_pulse(pulse) -> np.ndarray:
    x = np.asarray(pulse, dtype=np.float64) if not isinstance(pulse, np.ndarray) else pulse
    if x.ndim != 1:
        raise BadInputError(f"pulse must be 1-D (N,), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise BadInputError(f"pulse must be real numbers, got dtype {x.dtype}")
    return x.astype(np.float64, copy=False)


def heart_rate(
    pulse, fs: float, lo: float = 0.7, hi: float = 3.5, halfwidth_hz: float = SNR_HALFWIDTH_HZ
) -> HeartRate:
    """Heart rate of a pulse window from its spectral peak in the band.

    Args:
        pulse: float (N,) pulse signal (rPPG, PPG or BVP), any units; N >= 8.
        fs: sampling rate, Hz.
        lo, hi: heart-rate band, Hz (0.7-3.5 Hz = 42-210 bpm).
        halfwidth_hz: half-width of the SNR signal template around f0 and 2 f0, Hz.

    Returns:
        HeartRate(hr_bpm, snr_db, quality). The mean is removed, a periodic Hann window
        applied and the FFT zero-padded to a <= 0.01 Hz grid; the peak is refined by
        parabolic interpolation of log power. No band power (flat, zeros, any NaN) ->
        (nan, nan, 0.0).

    Raises:
        BadInputError: pulse not 1-D real or shorter than 8 samples.
        ConfigError: fs <= 0, or not 0 < lo < hi < fs/2.

    Method: periodogram peak (Smith & Serra 1987 interpolation); SNR of de Haan & Jeanne
    2013, IEEE TBME 60(10).
    """
    x = _check_pulse(pulse)
    fs = _check_band(fs, lo, hi)
    if x.size < 8:
        raise BadInputError(f"pulse needs at least 8 samples, got {x.size}")
    nfft = _nfft(x.size, fs)
    xw = (x - x.mean()) * _hann(x.size)
    power = np.abs(np.fft.rfft(xw, nfft)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / fs)
    hr, snr, q = _spectrum_stats(
        power[None, :], freqs, lo, hi, halfwidth_hz, _flat(x[None, :])
    )
    return HeartRate(float(hr[0]), float(snr[0]), float(q[0]))


def hr_track(
    pulse,
    fs: float,
    window_s: float = 10.0,
    hop_s: float = 1.0,
    lo: float = 0.7,
    hi: float = 3.5,
    halfwidth_hz: float = SNR_HALFWIDTH_HZ,
) -> HrTrack:
    """Heart rate over sliding windows of a pulse signal.

    Args:
        pulse: float (N,) pulse signal at ``fs``; needs N >= window_s * fs.
        fs: sampling rate, Hz.
        window_s: window length, s (rounded to whole samples).
        hop_s: step between window starts, s (rounded to whole samples, at least 1).
        lo, hi, halfwidth_hz: as in :func:`heart_rate`.

    Returns:
        HrTrack of float64 (K,) arrays, K = 1 + (N - n_window) // n_hop; ``t_s`` is each
        window's end, ``(start + n_window) / fs`` s after the first sample. Each window is
        estimated exactly as :func:`heart_rate` would (windows holding NaN give NaN, 0).

    Raises:
        BadInputError: pulse not 1-D real, or shorter than one window.
        ConfigError: bad fs/band, window_s or hop_s <= 0.

    Method: as :func:`heart_rate` (periodogram peak; de Haan & Jeanne 2013 SNR).
    """
    x = _check_pulse(pulse)
    fs = _check_band(fs, lo, hi)
    if not (np.isfinite(window_s) and window_s > 0 and np.isfinite(hop_s) and hop_s > 0):
        raise ConfigError(f"window_s and hop_s must be > 0, got {window_s}, {hop_s}")
    n_win = int(round(window_s * fs))
    n_hop = max(1, int(round(hop_s * fs)))
    if n_win < 8:
        raise ConfigError(f"window_s={window_s} s is under 8 samples at {fs} Hz")
    if x.size < n_win:
        raise BadInputError(
            f"pulse lasts {x.size / fs:.2f} s, shorter than one window of {window_s} s"
        )
    frames = np.lib.stride_tricks.sliding_window_view(x, n_win)[::n_hop]
    starts = np.arange(frames.shape[0]) * n_hop
    nfft = _nfft(n_win, fs)
    xw = (frames - frames.mean(axis=1, keepdims=True)) * _hann(n_win)
    power = np.abs(np.fft.rfft(xw, nfft, axis=1)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / fs)
    hr, snr, q = _spectrum_stats(power, freqs, lo, hi, halfwidth_hz, _flat(frames))
    return HrTrack((starts + n_win) / fs, hr, snr, q)
