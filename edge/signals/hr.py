"""Heart rate from a pulse signal: spectral peak fused with beat-to-beat timing, SNR, quality.

Two estimates are made of each window and one is reported (``method="fused"``, the default):

1. The spectral rate: the largest periodogram peak inside the heart-rate band, refined between
   bins by parabolic interpolation of the log power (Smith & Serra 1987, "PARSHL", the
   quadratic-interpolation peak estimator; on a Hann window the log-power main lobe is close
   to a parabola) on a zero-padded FFT grid of <= 0.01 Hz.
2. The beat rate: 60 / mean inter-beat interval. The beat fiducial is the upstroke crossing of
   the pulse's local mean, the mid-upstroke point that Peralta et al. 2019 ("Optimal fiducial
   points for pulse rate variability analysis from forehead and finger photoplethysmographic
   signals", Physiol. Meas. 40(2):025007) found the most stable of the PPG fiducials. The
   local mean is the mean over one spectral period (a moving average whose span is the
   period removes the baseline without distorting a periodic wave, also at the window edges),
   then a 2nd-order zero-phase Butterworth low-pass at ``hi`` removes noise; crossings need
   hysteresis (the wave must fall below -0.3 sd between two of them) and are placed between
   samples by a cubic through four samples, the sub-sample refinement that Merri et al. 1990
   (IEEE TBME 37(1):99-106) showed fixes the timing jitter of low sampling rates.

The beat rate is trusted when at least 3 intervals cover half the window, every interval is
within 30 % of their median, and the beat rate is within 15 % of the spectral rate. It then
counts for as much as the intervals vary beyond timing noise: its weight w (hr = w beats +
(1 - w) spectral) ramps from 0 to 1 as the intervals' sd goes from 0.8 to 1.2 times the jitter
that the in-band noise floor predicts (noise sd over the upstroke slope), and is 0 when the sd
is under 1 % of the mean interval. Heart-rate variability (respiratory sinus arrhythmia)
smears and shifts a 10-s spectral peak away from the mean beat rate, while a steady rhythm in
noise is estimated best by the spectral peak, which uses every sample (on a steady synthetic
pulse in white noise the beat rate alone is up to 0.5 bpm off where the spectral peak is 0.3).
``method="spectral"`` reports the spectral rate always (the estimator before this fusion).

Gaps: non-finite samples are bridged by linear interpolation when no run of them is longer
than ``max_gap_s`` (default 1.0 s) and they are at most ``max_missing_fraction`` (default 20 %)
of the window; beat intervals that touch a gap are left out of the mean. A window with a
longer gap gives hr_bpm NaN, snr_db NaN and quality 0 (an honest "no value").

The signal-to-noise ratio is that of de Haan & Jeanne 2013 ("Robust pulse rate from
chrominance-based rPPG", IEEE TBME 60(10)): power within +-0.1 Hz of the spectral fundamental
f0 and of its first harmonic 2 f0, against the power in the rest of the band. It is computed
at the spectral peak whichever rate is reported, so the quality gate sees the same number.

The quality score maps the SNR through a logistic centred at 0 dB (equal signal and noise
power) with a 3 dB scale: q = 1 / (1 + exp(-snr_db / 3)). So -6 dB -> 0.12, 0 dB -> 0.5,
+6 dB -> 0.88; it is monotone and in [0, 1]. A window without band power (flat, all zeros, or
gaps beyond the limits) gives hr_bpm NaN, snr_db NaN and quality 0 rather than an exception, so
a track keeps one row per window and a dropout is visible.

The runtime's gate (:func:`pulse_quality`, chosen by ``preprocessing.rppg.hr_gate``) is either
that SNR logistic ("snr", what manifests without the setting get) or a logistic regression
fitted on labelled windows ("logistic"): :func:`gate_features` gives the SNR, the agreement of
the spectral rates of the window's two halves, the beat checks and the pulse amplitude, and
:func:`gate_quality` weighs them with :data:`GATE_COEF` and :data:`GATE_BIAS`, which
``bench/hr_gate.py`` fitted on synthetic sessions (face sizes, motion, light, noise, skin
tones, printed photos) and the real webcam clip. Its quality 0.5 is the operating point the fit
chose; its figures are in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from edge.signals.ecg import _design, _sosfiltfilt
from firmware_bridge.errors import BadInputError, ConfigError

# Half-width of the de Haan & Jeanne (2013) signal template around f0 and 2 f0.
SNR_HALFWIDTH_HZ = 0.1
# Target spacing of the zero-padded FFT grid: parabolic interpolation then refines to well
# under 0.1 bpm on a clean peak, and the SNR template spans several bins.
_BIN_HZ = 0.01
_QUALITY_SCALE_DB = 3.0

METHODS = ("fused", "spectral")
# Gap limits: a 1-s hole loses at most one beat at >= 60 bpm (two below), which the interval
# check below survives; more than a fifth of the window missing leaves too little to trust.
MAX_GAP_S = 1.0
MAX_MISSING_FRACTION = 0.2
# Beat acceptance (see the module notes).
_HYSTERESIS_SD = 0.3
_MIN_INTERVALS = 3
_MIN_COVERAGE = 0.5
_IBI_TOLERANCE = 0.30
_AGREE_FRACTION = 0.15
_JITTER_RAMP = (0.8, 1.2)
_STEADY_CV = 0.01


class HeartRate(NamedTuple):
    """One heart-rate estimate.

    Attributes:
        hr_bpm: heart rate in beats per minute; NaN when there is no estimate.
        snr_db: de Haan & Jeanne 2013 SNR in dB at the spectral peak; NaN without an estimate.
        quality: logistic map of ``snr_db`` into [0, 1]; 0 when there is no estimate.
        spectral_bpm: the refined spectral-peak rate, bpm (NaN without an estimate).
        beats_bpm: 60 / mean inter-beat interval of beats that passed the regularity and
            agreement checks, bpm; NaN when they did not (or ``method="spectral"``).
        n_beats: beat fiducials found in the window (0 with ``method="spectral"``).
        missing_fraction: fraction of the window's samples that were non-finite.
    """

    hr_bpm: float
    snr_db: float
    quality: float
    spectral_bpm: float = math.nan
    beats_bpm: float = math.nan
    n_beats: int = 0
    missing_fraction: float = 0.0


class HrTrack(NamedTuple):
    """Heart rate over sliding windows; all arrays (K,), float64 unless noted.

    Attributes:
        t_s: window end times in s from the first sample (``(start + n_window) / fs``).
        hr_bpm, snr_db, quality: per-window values as in :class:`HeartRate`.
        spectral_bpm, beats_bpm, n_beats (int64), missing_fraction: as in
            :class:`HeartRate`; None when the track was built without them.
    """

    t_s: np.ndarray
    hr_bpm: np.ndarray
    snr_db: np.ndarray
    quality: np.ndarray
    spectral_bpm: np.ndarray | None = None
    beats_bpm: np.ndarray | None = None
    n_beats: np.ndarray | None = None
    missing_fraction: np.ndarray | None = None


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


# -- the calibrated quality gate ------------------------------------------------------------------

#: Names of the gate's features, in the order of :func:`gate_features` and :data:`GATE_COEF`.
GATE_FEATURES = ("snr_db", "halves_log_bpm", "beats_ok", "beat_count_log", "amplitude_log")
# Clip ranges of the features, so an infinite SNR stays finite. The amplitude's top, 0.1 (10 %
# colour change), is beyond any pulse: more is motion or light, and earns no more trust.
_GATE_CLIP = ((-20.0, 30.0), (0.0, 5.0), (0.0, 1.0), (0.0, 2.0), (-5.0, -1.0))
# The two sub-windows whose spectral rates are compared: the first and the last 60 % of the window.
_HALF_FRACTION = 0.6

#: The gate's logistic regression over :data:`GATE_FEATURES`: quality = 1 / (1 + exp(-(b + w . x))).
#: Provenance: ``python -m bench.hr_gate generate --cache DIR --seeds 0-199`` then ``python -m
#: bench.hr_gate fit --cache DIR --seeds 0-199`` (2026-12-03): 1760 labelled 10 s windows of 160 synthetic
#: sessions (right = within 5 bpm of the truth; printed photos all wrong, weight 5) plus the 11
#: windows of the real webcam clip (weight 5); the fitted bias 7.7506 shifted by the operating
#: point's log-odds (p = 0.756: 0.5 above the highest training photo) so that quality 0.5 is that
#: point. Figures in docs/BENCHMARKS.md ("Heart-rate quality gate").
GATE_COEF = (1.014, -0.843, 2.231, -1.2913, 2.7585)
GATE_BIAS = 6.6209
#: Gates by name (``preprocessing.rppg.hr_gate``): "snr" is the logistic of the SNR alone
#: (:func:`snr_quality`), "logistic" the fitted regression (:func:`gate_quality`).
GATES = ("snr", "logistic")


def _band_spectrum(x: np.ndarray, fs: float, lo: float, hi: float):
    """(freqs, power) of the band of one finite window, as the spectral rate computes them."""
    nfft = _nfft(x.size, fs)
    power = np.abs(np.fft.rfft((x - x.mean()) * _hann(x.size), nfft)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / fs)
    band = (freqs >= lo) & (freqs <= hi)
    return freqs[band], power[band]


def _peak_hz(x: np.ndarray, fs: float, lo: float, hi: float) -> float:
    f, p = _band_spectrum(x, fs, lo, hi)
    return float(f[int(np.argmax(p))]) if p.size and p.max() > 0 else math.nan


def gate_features(pulse, fs: float, h: HeartRate, lo: float = 0.7, hi: float = 3.5) -> np.ndarray:
    """The quality gate's features of one pulse window (:data:`GATE_FEATURES`).

    Args:
        pulse: float (N,) the pulse window ``h`` was estimated from, at ``fs``; non-finite
            samples are bridged as :func:`heart_rate` does.
        fs: sampling rate, Hz.
        h: :func:`heart_rate` of ``pulse`` (fused method, same band).
        lo, hi: heart-rate band, Hz.

    Returns:
        float64 (5,): ``snr_db`` (de Haan & Jeanne 2013 SNR, dB); ``halves_log_bpm``
        (log(1 + |difference|, bpm) of the spectral rates of the window's first and last 60 %:
        a pulse keeps its rate, a noise peak wanders); ``beats_ok`` (1 when the beat rate
        passed its regularity and agreement checks); ``beat_count_log`` (|log| of the beats
        found over those the spectral rate predicts); ``amplitude_log`` (log10 of the pulse's
        standard deviation: an rPPG pulse from :func:`edge.signals.rppg.rppg_extract` is in
        units of relative colour change, and a face without blood volume changes - a printed
        photo - leaves only the camera's noise, well below a live face). Each is clipped to a
        finite range. A window without an estimate gives the features of silence (SNR -20 dB,
        far-apart halves, no beats, amplitude 1e-5).

    Raises:
        BadInputError: pulse not 1-D real.
        ConfigError: bad fs or band.

    Method: the SNR of de Haan & Jeanne 2013 (IEEE TBME 60(10)) with this project's own
    features beside it, chosen on labelled windows (``bench/hr_gate.py``); their weights are
    :data:`GATE_COEF`.
    """
    x = _check_pulse(pulse)
    fs = _check_band(fs, lo, hi)
    lims = np.array(_GATE_CLIP)
    silence = np.array([lims[0, 0], lims[1, 1], 0.0, lims[3, 1], lims[4, 0]])
    f_spec = h.spectral_bpm / 60.0
    if not math.isfinite(f_spec):
        return silence
    xf, _, _ = _fill_gaps(x, fs, MAX_GAP_S, MAX_MISSING_FRACTION)
    if xf is None:
        return silence
    m = int(round(_HALF_FRACTION * xf.size))
    a, b = _peak_hz(xf[:m], fs, lo, hi), _peak_hz(xf[-m:], fs, lo, hi)
    halves = math.log1p(60.0 * abs(a - b)) if math.isfinite(a) and math.isfinite(b) else lims[1, 1]
    expected = f_spec * xf.size / fs
    count = abs(math.log(h.n_beats / expected)) if h.n_beats > 0 else lims[3, 1]
    sd = float(xf.std())
    amplitude = math.log10(sd) if sd > 0 else lims[4, 0]
    out = np.array([h.snr_db, halves, float(math.isfinite(h.beats_bpm)), count, amplitude])
    return np.clip(out, lims[:, 0], lims[:, 1])


def gate_quality(features, coef=None, bias: float | None = None) -> float:
    """The fitted gate's quality in [0, 1] of one window's :func:`gate_features`.

    Args:
        features: float (5,) from :func:`gate_features`.
        coef, bias: the regression (default :data:`GATE_COEF`, :data:`GATE_BIAS`).

    Returns:
        1 / (1 + exp(-(bias + coef . features))); 0.5 is the operating point the fit chose.

    Raises:
        BadInputError: features not (5,) finite.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.shape != (len(GATE_FEATURES),) or not np.all(np.isfinite(x)):
        raise BadInputError(f"gate features must be {len(GATE_FEATURES)} finite numbers, got {x!r}")
    w = np.asarray(GATE_COEF if coef is None else coef, dtype=np.float64)
    z = float(GATE_BIAS if bias is None else bias) + float(w @ x)
    return 1.0 / (1.0 + math.exp(-min(max(z, -700.0), 700.0)))


def pulse_quality(pulse, fs: float, h: HeartRate, gate: str = "logistic", lo: float = 0.7,
                  hi: float = 3.5) -> float:
    """A window's heart-rate quality in [0, 1] by the named gate (what the runtime compares with
    its ``min_pulse_quality``).

    Args:
        pulse: float (N,) the pulse window, at ``fs`` Hz.
        fs: sampling rate, Hz.
        h: :func:`heart_rate` of ``pulse`` over ``lo``-``hi`` Hz.
        gate: a name of :data:`GATES`: "logistic" (:func:`gate_quality` of
            :func:`gate_features`) or "snr" (``h.quality``, :func:`snr_quality`).
        lo, hi: heart-rate band, Hz.

    Returns:
        Quality; 0.0 for a window without an estimate.

    Raises:
        ConfigError: unknown gate, bad fs or band.
        BadInputError: pulse not 1-D real.
    """
    if gate not in GATES:
        raise ConfigError(f"unknown heart-rate gate {gate!r}; choose from {GATES}")
    if not math.isfinite(h.hr_bpm):
        return 0.0
    if gate == "snr":
        return float(h.quality)
    return gate_quality(gate_features(pulse, fs, h, lo, hi))


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


def _check_options(method: str, max_gap_s: float, max_missing_fraction: float) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown heart-rate method {method!r}; choose from {METHODS}")
    try:
        g, m = float(max_gap_s), float(max_missing_fraction)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"max_gap_s and max_missing_fraction must be numbers: {exc}") from exc
    if not (math.isfinite(g) and g >= 0 and 0 <= m < 1):
        raise ConfigError(
            f"need max_gap_s >= 0 s and 0 <= max_missing_fraction < 1, got {max_gap_s}, "
            f"{max_missing_fraction}"
        )


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


def _fill_gaps(x: np.ndarray, fs: float, max_gap_s: float, max_missing_fraction: float):
    """(filled copy or None when the gaps are beyond the limits, gap mask or None, fraction)."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x, None, 0.0
    fraction = float(bad.mean())
    if bad.all() or fraction > max_missing_fraction + 1e-12:
        return None, bad, fraction
    edges = np.diff(np.r_[0, bad.view(np.int8), 0])
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    if runs.max() > max_gap_s * fs + 1e-9:
        return None, bad, fraction
    good = np.flatnonzero(~bad)
    xf = x.copy()
    # Linear inside the window; np.interp holds the nearest value across a gap at either end.
    xf[bad] = np.interp(np.flatnonzero(bad), good, x[good])
    return xf, bad, fraction


@njit(cache=True, nogil=True)
def _period_mean(x, period):
    """Mean of x over one period (samples, fractional) centred on each sample, the span shifted
    inward at the ends so it always covers a whole period of the window."""
    n = x.size
    c = np.empty(n + 1)
    c[0] = 0.0
    for i in range(n):
        c[i + 1] = c[i] + x[i]
    span = min(period, float(n))
    out = np.empty(n)
    for i in range(n):
        a = min(max(i + 0.5 - 0.5 * span, 0.0), n - span)
        b = a + span
        ia = int(a)
        ib = int(b)
        s = c[min(ib, n)] - c[ia] - (a - ia) * x[ia]
        if ib < n:
            s += (b - ib) * x[ib]
        out[i] = s / span
    return out


@njit(cache=True, nogil=True)
def _upcrossings(y, h):
    """Upward zero crossings of y (fractional sample times) and the slope there (per sample).

    A crossing counts only after y has been below -h since the previous one (hysteresis); its
    time is the root, between the two samples that bracket it, of the cubic through the four
    samples around it (Newton steps from the linear estimate).
    """
    n = y.size
    t = np.empty(n)
    s = np.empty(n)
    m = 0
    armed = False
    for i in range(n - 1):
        if y[i] < -h:
            armed = True
        if armed and y[i] < 0.0 <= y[i + 1]:
            u = -y[i] / (y[i + 1] - y[i])
            slope = y[i + 1] - y[i]
            if i >= 1 and i + 2 < n:
                p0, p1, p2, p3 = y[i - 1], y[i], y[i + 1], y[i + 2]
                a1 = -p0 / 3.0 - p1 / 2.0 + p2 - p3 / 6.0
                a2 = p0 / 2.0 - p1 + p2 / 2.0
                a3 = -p0 / 6.0 + p1 / 2.0 - p2 / 2.0 + p3 / 6.0
                for _ in range(4):
                    f = p1 + u * (a1 + u * (a2 + u * a3))
                    d = a1 + u * (2.0 * a2 + 3.0 * u * a3)
                    if d <= 0.0:
                        break
                    u = min(max(u - f / d, 0.0), 1.0)
                d = a1 + u * (2.0 * a2 + 3.0 * u * a3)
                if d > 0.0:
                    slope = d
            t[m] = i + u
            s[m] = slope
            m += 1
            armed = False
    return t[:m], s[:m]


def _beat_rate(xf, gaps, fs, hi, f_spec_hz, noise_var):
    """(beats_bpm or NaN, n_beats, weight of the beat rate in [0, 1]) for one gap-filled
    window; see the module notes."""
    n = xf.size
    period = fs / f_spec_hz
    if n < 2.0 * period:
        return math.nan, 0, 0.0
    x = xf - xf.mean()
    y = x - _period_mean(x, period)
    sos, zi, pad = _design(0.0, hi, fs, 2, "low")
    if n <= pad:
        return math.nan, 0, 0.0
    y = _sosfiltfilt(sos, zi, y, pad)
    sd = float(y.std())
    if not sd > 0:
        return math.nan, 0, 0.0
    tk, sk = _upcrossings(y, _HYSTERESIS_SD * sd)
    if tk.size < _MIN_INTERVALS + 1:
        return math.nan, int(tk.size), 0.0
    ibi = np.diff(tk)
    if gaps is not None:
        # An interval touching a bridged gap may hold a missed or invented beat: leave it out.
        cg = np.r_[0, np.cumsum(gaps)]
        a = np.clip(np.floor(tk[:-1]).astype(np.int64) - 1, 0, n)
        b = np.clip(np.ceil(tk[1:]).astype(np.int64) + 2, 0, n)
        ibi = ibi[cg[b] - cg[a] == 0]
    if ibi.size < _MIN_INTERVALS or ibi.sum() < _MIN_COVERAGE * n:
        return math.nan, int(tk.size), 0.0
    med = float(np.median(ibi))
    if np.any(np.abs(ibi - med) > _IBI_TOLERANCE * med):
        return math.nan, int(tk.size), 0.0
    mean_ibi = float(ibi.mean())
    beats_bpm = 60.0 * fs / mean_ibi
    if abs(beats_bpm - 60.0 * f_spec_hz) > _AGREE_FRACTION * 60.0 * f_spec_hz:
        return math.nan, int(tk.size), 0.0
    return beats_bpm, int(tk.size), _beat_weight(ibi, mean_ibi, sk, noise_var)


def _beat_weight(ibi, mean_ibi, slopes, noise_var) -> float:
    """True when the intervals vary by more than 1 % of their mean and by more than 1.2 times
    the timing jitter that the noise explains (else the rhythm is steady, or noise-driven)."""
    sd_ibi = float(ibi.std(ddof=1))
    # Jitter of one crossing: noise sd over the slope there; an interval adds two of them.
    jitter = math.sqrt(2.0 * noise_var * float(np.mean(1.0 / slopes**2)))
    if not sd_ibi > _STEADY_CV * mean_ibi:
        return 0.0
    if not jitter > 0:
        return 1.0
    lo_r, hi_r = _JITTER_RAMP
    return min(max((sd_ibi / jitter - lo_r) / (hi_r - lo_r), 0.0), 1.0)


def _noise_var(band_power, wsum2, fs, hi) -> float:
    """Variance of the in-band noise, from the spectrum's floor.

    The lower quartile of the band's bins is taken as the noise floor: the pulse's peaks
    (fundamental and harmonic, with the sidebands that heart-rate variability spreads around
    them) can fill half of the 0.7-3.5 Hz bins of a 10-s window, and the quartile ignores them.
    A periodogram bin of white noise of variance s2 has mean s2 * sum(w^2) (w the taper) and,
    being chi-square with 2 degrees of freedom, a lower quartile ln(4/3) times that; the
    low-passed noise then holds s2 * 2 hi / fs. Noise that is not white is counted at the
    level it has between the peaks.
    """
    floor = float(np.percentile(band_power, 25.0)) / math.log(4.0 / 3.0)
    return floor / wsum2 * 2.0 * hi / fs


def _window(x, fs, lo, hi, halfwidth_hz, method, max_gap_s, max_missing_fraction) -> HeartRate:
    """One window's estimate; ``heart_rate`` and every ``hr_track`` window go through here."""
    xf, gaps, missing = _fill_gaps(x, fs, max_gap_s, max_missing_fraction)
    if xf is None:
        return HeartRate(math.nan, math.nan, 0.0, math.nan, math.nan, 0, missing)
    nfft = _nfft(xf.size, fs)
    xw = (xf - xf.mean()) * _hann(xf.size)
    power = np.abs(np.fft.rfft(xw, nfft)) ** 2
    freqs = np.fft.rfftfreq(nfft, 1.0 / fs)
    hr, snr, q = _spectrum_stats(power[None, :], freqs, lo, hi, halfwidth_hz, _flat(xf[None, :]))
    spec_bpm, snr_db, quality = float(hr[0]), float(snr[0]), float(q[0])
    if method == "spectral" or not math.isfinite(spec_bpm):
        return HeartRate(spec_bpm, snr_db, quality, spec_bpm, math.nan, 0, missing)
    band = (freqs >= lo) & (freqs <= hi)
    noise_var = _noise_var(power[band], float(np.sum(_hann(xf.size) ** 2)), fs, hi)
    beats_bpm, n_beats, w = _beat_rate(xf, gaps, fs, hi, spec_bpm / 60.0, noise_var)
    hr_bpm = w * beats_bpm + (1.0 - w) * spec_bpm if w > 0 else spec_bpm
    return HeartRate(hr_bpm, snr_db, quality, spec_bpm, beats_bpm, n_beats, missing)


def heart_rate(
    pulse,
    fs: float,
    lo: float = 0.7,
    hi: float = 3.5,
    halfwidth_hz: float = SNR_HALFWIDTH_HZ,
    *,
    method: str = "fused",
    max_gap_s: float = MAX_GAP_S,
    max_missing_fraction: float = MAX_MISSING_FRACTION,
) -> HeartRate:
    """Heart rate of a pulse window: spectral peak fused with beat-to-beat timing.

    Args:
        pulse: float (N,) pulse signal (rPPG, PPG or BVP), any units, systolic peaks up; N >= 8.
            Non-finite samples are gaps (see ``max_gap_s``).
        fs: sampling rate, Hz.
        lo, hi: heart-rate band, Hz (0.7-3.5 Hz = 42-210 bpm).
        halfwidth_hz: half-width of the SNR signal template around f0 and 2 f0, Hz.
        method: "fused" (default: the beat rate, weighted against the spectral rate by how
            far the intervals vary beyond timing noise, where beats are regular and agree
            with the spectral peak; else the spectral rate) or "spectral" (the spectral rate
            always).
        max_gap_s: longest run of non-finite samples that is bridged by linear interpolation, s.
        max_missing_fraction: largest fraction of non-finite samples that is bridged.

    Returns:
        HeartRate(hr_bpm, snr_db, quality, spectral_bpm, beats_bpm, n_beats,
        missing_fraction). The spectral rate: mean removed, periodic Hann window, FFT
        zero-padded to a <= 0.01 Hz grid, peak refined by parabolic interpolation of log power.
        No band power (flat, zeros) or gaps beyond the limits -> hr_bpm and snr_db NaN,
        quality 0.0.

    Raises:
        BadInputError: pulse not 1-D real or shorter than 8 samples.
        ConfigError: fs <= 0, not 0 < lo < hi < fs/2, unknown method, bad gap limits.

    Method: periodogram peak (Smith & Serra 1987 interpolation); SNR of de Haan & Jeanne
    2013, IEEE TBME 60(10); beat fiducial of Peralta et al. 2019, Physiol. Meas. 40(2), timed
    between samples as Merri et al. 1990, IEEE TBME 37(1) (module notes).
    """
    x = _check_pulse(pulse)
    fs = _check_band(fs, lo, hi)
    _check_options(method, max_gap_s, max_missing_fraction)
    if x.size < 8:
        raise BadInputError(f"pulse needs at least 8 samples, got {x.size}")
    return _window(x, fs, lo, hi, halfwidth_hz, method, max_gap_s, max_missing_fraction)


def hr_track(
    pulse,
    fs: float,
    window_s: float = 10.0,
    hop_s: float = 1.0,
    lo: float = 0.7,
    hi: float = 3.5,
    halfwidth_hz: float = SNR_HALFWIDTH_HZ,
    *,
    method: str = "fused",
    max_gap_s: float = MAX_GAP_S,
    max_missing_fraction: float = MAX_MISSING_FRACTION,
) -> HrTrack:
    """Heart rate over sliding windows of a pulse signal.

    Args:
        pulse: float (N,) pulse signal at ``fs``; needs N >= window_s * fs. Non-finite
            samples are gaps.
        fs: sampling rate, Hz.
        window_s: window length, s (rounded to whole samples).
        hop_s: step between window starts, s (rounded to whole samples, at least 1).
        lo, hi, halfwidth_hz, method, max_gap_s, max_missing_fraction: as in
            :func:`heart_rate`.

    Returns:
        HrTrack of (K,) arrays, K = 1 + (N - n_window) // n_hop; ``t_s`` is each window's
        end, ``(start + n_window) / fs`` s after the first sample. Each window is estimated
        exactly as :func:`heart_rate` would (a window whose gaps exceed the limits gives NaN,
        quality 0).

    Raises:
        BadInputError: pulse not 1-D real, or shorter than one window.
        ConfigError: bad fs/band, window_s or hop_s <= 0, unknown method, bad gap limits.

    Method: as :func:`heart_rate`.
    """
    x = _check_pulse(pulse)
    fs = _check_band(fs, lo, hi)
    _check_options(method, max_gap_s, max_missing_fraction)
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
    starts = np.arange(0, x.size - n_win + 1, n_hop)
    rows = [
        _window(x[s : s + n_win], fs, lo, hi, halfwidth_hz, method, max_gap_s, max_missing_fraction)
        for s in starts
    ]
    cols = list(zip(*rows))
    f64 = [np.asarray(c, dtype=np.float64) for c in cols]
    return HrTrack(
        (starts + n_win) / fs, f64[0], f64[1], f64[2], f64[3], f64[4],
        np.asarray(cols[5], dtype=np.int64), f64[6],
    )
