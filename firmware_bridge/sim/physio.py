"""Synthetic physiology driven by one set of heart beats: beat times, ECG, PPG, face BVP, EDA.

Everything cardiac is placed at the same beat times, so an ECG R peak, the finger PPG's
systolic peak and the face pulse seen by the camera belong to the same beat, each with its
own physiological delay. That shared truth is what lets a test check a kernel against an
answer it knows.

- Beats: a heart-rate trajectory (constant, or knots interpolated linearly) modulated by heart
  rate variability with the two-peak spectrum of ECGSYN (McSharry, Clifford, Tarassenko &
  Smith 2003, "A dynamical model for generating synthetic electrocardiogram signals", IEEE
  TBME 50(3):289-294): a high-frequency part at the respiration rate (respiratory sinus
  arrhythmia) and a low-frequency part around 0.1 Hz (Mayer waves), scaled to a target SDNN
  at 70 bpm; the fluctuation is constant in bpm, so SDNN falls as RR**2 at higher rates.
- ECG: each beat is a sum of five Gaussians (P, Q, R, S, T), the time-domain form of ECGSYN's
  phase-space Gaussians; QRS timing is fixed, the T wave scales with sqrt(RR) as the QT
  interval does (Bazett 1920, "An analysis of the time-relations of electrocardiograms",
  Heart 7:353-370) and the P wave with RR**0.25 (the PR interval shortens little with rate).
- PPG and face BVP: each beat is a systolic wave (a Gaussian with a faster rise than fall) plus
  a smaller diastolic wave, the two-Gaussian pulse decomposition of Rubins 2008 ("Finger and
  ear photoplethysmogram waveform analysis by fitting with Gaussians", Med Biol Eng Comput
  46:1271-1276), its systolic peak a pulse-arrival delay after the R peak.
- EDA: a tonic level with slow drift plus skin-conductance responses, each the Bateman
  function (difference of two exponentials) used as the SCR impulse response by Benedek &
  Kaernbach 2010 ("Decomposition of skin conductance data by means of nonnegative
  deconvolution", Psychophysiology 47:647-658).

All functions are plain NumPy (this module is in the bottom layer) and deterministic given a
``numpy.random.Generator``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError

__all__ = [
    "HRV_REF_BPM",
    "bateman",
    "beat_times",
    "ecg_from_beats",
    "eda_from_scrs",
    "hr_from_beats",
    "hr_trajectory",
    "pulse_from_beats",
    "smooth_random",
]

# ECG waves at RR = 1 s: (name, centre s relative to R, width sigma s, amplitude mV, centre
# exponent, width exponent). Lead-II-like amplitudes; a centre or width scales as RR**exponent.
# The QRS waves are narrow enough (5 sigma from one another's centres) that the R peak stays
# exactly at the beat time.
_ECG_WAVES = (
    ("P", -0.200, 0.022, 0.15, 0.25, 0.0),
    ("Q", -0.030, 0.008, -0.10, 0.0, 0.0),
    ("R", 0.000, 0.009, 1.00, 0.0, 0.0),
    ("S", 0.030, 0.009, -0.25, 0.0, 0.0),
    ("T", 0.300, 0.050, 0.30, 0.5, 0.5),
)

# Pulse shape at RR = 1 s, relative to the systolic peak: rise and fall widths of the systolic
# wave, then the diastolic wave's delay, width and relative amplitude (Rubins 2008 fits give a
# diastolic wave at 0.3-0.5 of the systolic amplitude, 0.25-0.35 s after it). All scale with
# sqrt(RR): the ejection period shortens with heart rate.
_PULSE_RISE_S = 0.07
_PULSE_FALL_S = 0.12
_DIASTOLIC_DELAY_S = 0.28
_DIASTOLIC_WIDTH_S = 0.10
_DIASTOLIC_AMP = 0.40

# Beats kept before 0 s and after the end, so waveforms are complete at both edges.
_MARGIN_S = 2.0
# The varied rate is kept within this factor range of the programmed one, so extreme HRV
# settings cannot give a negative or absurd interval.
_RATE_FACTOR_RANGE = (0.6, 1.6)
# The rate at which ``hrv_sdnn_ms`` is the SDNN (a resting adult).
HRV_REF_BPM = 70.0


def _check_1d(name: str, x: np.ndarray | Sequence[float]) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or not np.all(np.isfinite(a)):
        raise BadInputError(f"{name} must be a finite 1-D array, got shape {a.shape}")
    return a


def hr_trajectory(hr_bpm: float | Sequence[tuple[float, float]]) -> Callable[[np.ndarray], np.ndarray]:
    """The programmed heart rate as a function of time (before heart rate variability).

    Args:
        hr_bpm: a constant rate in beats/min, or knots ``((t_s, bpm), ...)`` with increasing
            t_s; the rate is interpolated linearly between knots and held beyond the ends.

    Returns:
        A function mapping times (s, array-like) to rates (bpm, float64 array of the same shape).

    Raises:
        ConfigError: a rate outside 20-250 bpm, knot times not increasing, or malformed knots.
    """
    if np.ndim(hr_bpm) == 0:
        rate = float(hr_bpm)  # type: ignore[arg-type]
        if not 20.0 <= rate <= 250.0:
            raise ConfigError(f"hr_bpm must be within 20-250 bpm, got {rate}")
        return lambda t: np.full(np.shape(t), rate)
    knots = np.asarray(hr_bpm, dtype=np.float64)
    if knots.ndim != 2 or knots.shape[1] != 2 or knots.shape[0] < 1 or not np.all(np.isfinite(knots)):
        raise ConfigError(f"hr_bpm knots must be ((t_s, bpm), ...), got shape {knots.shape}")
    if np.any(np.diff(knots[:, 0]) <= 0):
        raise ConfigError("hr_bpm knot times must be strictly increasing")
    if np.any((knots[:, 1] < 20.0) | (knots[:, 1] > 250.0)):
        raise ConfigError("hr_bpm knot rates must be within 20-250 bpm")
    tk, hk = knots[:, 0].copy(), knots[:, 1].copy()
    return lambda t: np.interp(np.asarray(t, dtype=np.float64), tk, hk)


def smooth_random(
    rng: np.random.Generator, band_hz: tuple[float, float], n_components: int = 16
) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth random process with unit variance, band-limited to ``band_hz``.

    A sum of sinusoids with random frequencies (uniform in the band) and phases: a standard way
    to synthesise a stationary Gaussian-like process with a given spectrum (Rice 1944,
    "Mathematical analysis of random noise", Bell Syst Tech J 23:282-332). Being a closed-form
    function of time it can be evaluated at any times, in any order, with the same result,
    which is what random access to frames needs.

    Args:
        rng: the generator that draws the frequencies and phases.
        band_hz: (low, high) frequency band, Hz, 0 <= low < high.
        n_components: number of sinusoids.

    Returns:
        A function mapping times (s, array-like) to values (float64, same shape); the variance
        over a long time is 1 (each sinusoid has amplitude sqrt(2 / n_components)).

    Raises:
        ConfigError: an invalid band or component count.
    """
    lo, hi = float(band_hz[0]), float(band_hz[1])
    if not 0.0 <= lo < hi or n_components < 1:
        raise ConfigError(f"smooth_random needs 0 <= low < high and n >= 1, got {band_hz}, {n_components}")
    freqs = rng.uniform(lo, hi, n_components)
    phases = rng.uniform(0.0, 2.0 * np.pi, n_components)
    amp = np.sqrt(2.0 / n_components)

    def value(t: np.ndarray) -> np.ndarray:
        ta = np.asarray(t, dtype=np.float64)
        out = np.zeros(ta.shape)
        for f, p in zip(freqs, phases):
            out += np.sin(2.0 * np.pi * f * ta + p)
        return amp * out

    return value


def beat_times(
    duration_s: float,
    hr_bpm: float | Sequence[tuple[float, float]],
    hrv_sdnn_ms: float,
    resp_rate_hz: float,
    rng: np.random.Generator,
    lf_hf_ratio: float = 0.5,
    margin_s: float = _MARGIN_S,
) -> np.ndarray:
    """Heart-beat (R-peak) times following a rate trajectory, with ECGSYN-like HRV.

    The instantaneous rate is ``hr(t) + sigma_bpm * (hf(t) + lf(t))`` and each interval is
    ``RR_k = 60 / rate(t_k)``: ``hf`` is respiratory sinus arrhythmia, a sinusoid at
    ``resp_rate_hz`` (the rate rises on inspiration); ``lf`` is a smooth random process in
    0.04-0.15 Hz (Mayer waves). Their variances are split by ``lf_hf_ratio``: the two-peak RR
    spectrum of McSharry et al. 2003 (their defaults: LF at 0.1 Hz, HF at the respiration
    rate, LF/HF = 0.5). The fluctuation is constant in bpm, so the interval spread shrinks as
    RR**2 when the rate rises (dRR = RR**2 dHR / 60; Sacha & Pluta 2008, "Alterations of an
    average heart rate change heart rate variability due to mathematical reasons", Int J
    Cardiol 128:444-447): ``hrv_sdnn_ms`` is the SDNN at :data:`HRV_REF_BPM` (70 bpm).

    Args:
        duration_s: session length, s (> 0).
        hr_bpm: constant rate or knots ``((t_s, bpm), ...)``, see :func:`hr_trajectory`.
        hrv_sdnn_ms: SDNN of the beat intervals at a constant 70 bpm, ms (>= 0; healthy
            adults at rest: about 30-70 ms over 5 min).
        resp_rate_hz: respiration rate, Hz (0.05-1).
        rng: generator for the RSA phase and the LF process.
        lf_hf_ratio: LF/HF power ratio of the variability (>= 0).
        margin_s: beats are also generated this far before 0 s and after ``duration_s`` so
            that waveforms built from them are complete at the edges.

    Returns:
        float64 array of beat times, s, strictly increasing, spanning
        ``[-margin_s, duration_s + margin_s]``.

    Raises:
        ConfigError: a parameter out of range.
    """
    if not duration_s > 0:
        raise ConfigError(f"duration_s must be > 0, got {duration_s}")
    if not 0.0 <= hrv_sdnn_ms <= 300.0:
        raise ConfigError(f"hrv_sdnn_ms must be within 0-300 ms, got {hrv_sdnn_ms}")
    if not 0.05 <= resp_rate_hz <= 1.0:
        raise ConfigError(f"resp_rate_hz must be within 0.05-1 Hz, got {resp_rate_hz}")
    if not lf_hf_ratio >= 0:
        raise ConfigError(f"lf_hf_ratio must be >= 0, got {lf_hf_ratio}")
    hr = hr_trajectory(hr_bpm)
    rr_ref_s = 60.0 / HRV_REF_BPM
    sigma_bpm = 60.0 * hrv_sdnn_ms / 1000.0 / rr_ref_s**2
    hf_var = sigma_bpm**2 / (1.0 + lf_hf_ratio)
    lf_sd = np.sqrt(sigma_bpm**2 - hf_var)
    # A sinusoid of amplitude a has variance a**2 / 2.
    rsa_amp = np.sqrt(2.0 * hf_var)
    rsa_phase = rng.uniform(0.0, 2.0 * np.pi)
    lf = smooth_random(rng, (0.04, 0.15))
    start = -margin_s - rng.uniform(0.0, 1.0) * 60.0 / float(hr(np.array(0.0)))
    stop = duration_s + margin_s
    beats = [start]
    t = start
    while t < stop:
        target = float(hr(np.array(t)))
        rate = target + rsa_amp * np.sin(2.0 * np.pi * resp_rate_hz * t + rsa_phase) + lf_sd * float(lf(np.array(t)))
        rate = min(max(rate, _RATE_FACTOR_RANGE[0] * target), _RATE_FACTOR_RANGE[1] * target)
        t = t + 60.0 / rate
        beats.append(t)
    return np.asarray(beats)


def hr_from_beats(beats_s: np.ndarray, t_s: np.ndarray | float) -> np.ndarray:
    """Instantaneous heart rate from beat times: 60 / RR placed at each interval's midpoint,
    linearly interpolated (held beyond the first and last midpoints).

    Args:
        beats_s: beat times, s, shape (K,), K >= 2, increasing.
        t_s: query times, s, scalar or any shape.

    Returns:
        float64 rates, bpm, same shape as ``t_s``.

    Raises:
        BadInputError: fewer than two beats or beats not increasing.
    """
    b = _check_1d("beats_s", beats_s)
    if b.size < 2 or np.any(np.diff(b) <= 0):
        raise BadInputError("beats_s needs at least two strictly increasing beat times")
    rr = np.diff(b)
    return np.interp(np.asarray(t_s, dtype=np.float64), b[:-1] + rr / 2.0, 60.0 / rr)


def _overlap_add(
    t_s: np.ndarray, beats_s: np.ndarray, shape: Callable[[np.ndarray, np.ndarray], np.ndarray],
    before: int, after: int,
) -> np.ndarray:
    # Every sample gets the waveforms of the few beats around it (the last `before` beats at or
    # before it and the next `after`): vectorised over samples, no per-beat Python loop.
    rr = np.diff(beats_s, prepend=beats_s[0] - (beats_s[1] - beats_s[0]))
    j = np.searchsorted(beats_s, t_s, side="right") - 1
    out = np.zeros(t_s.shape)
    for m in range(-before + 1, after + 1):
        k = j + m
        ok = (k >= 0) & (k < beats_s.size)
        kc = np.clip(k, 0, beats_s.size - 1)
        out += np.where(ok, shape(t_s - beats_s[kc], rr[kc]), 0.0)
    return out


def _ecg_beat(dt: np.ndarray, rr: np.ndarray) -> np.ndarray:
    out = np.zeros(dt.shape)
    for _, mu, sigma, amp, mu_exp, sigma_exp in _ECG_WAVES:
        m = mu * rr**mu_exp
        s = sigma * rr**sigma_exp
        out += amp * np.exp(-0.5 * ((dt - m) / s) ** 2)
    return out


def ecg_from_beats(beats_s: np.ndarray, fs_hz: float, n_samples: int) -> np.ndarray:
    """A clean ECG with one P-QRS-T complex per beat, R peak exactly at each beat time.

    Method: ECGSYN's Gaussian wave model (McSharry et al. 2003) laid out in time; T-wave
    position and width scale with sqrt(RR) (Bazett 1920), P-wave position with RR**0.25; RR is
    the interval before the beat. Amplitudes are lead-II-like: R 1.0 mV, S -0.25, Q -0.1,
    P 0.15, T 0.3 mV.

    Args:
        beats_s: R-peak times, s, shape (K,), increasing, K >= 2; should extend past both ends
            of the record (as :func:`beat_times` does) for complete edge complexes.
        fs_hz: sampling rate, Hz (> 0).
        n_samples: number of samples; sample i is at ``i / fs_hz`` s.

    Returns:
        float64 ECG, mV, shape (n_samples,).

    Raises:
        BadInputError: bad beats; ConfigError: bad fs_hz or n_samples.
    """
    b = _check_1d("beats_s", beats_s)
    if b.size < 2 or np.any(np.diff(b) <= 0):
        raise BadInputError("beats_s needs at least two strictly increasing beat times")
    if not fs_hz > 0 or n_samples < 0:
        raise ConfigError(f"need fs_hz > 0 and n_samples >= 0, got {fs_hz}, {n_samples}")
    t = np.arange(int(n_samples)) / float(fs_hz)
    # T waves reach ~0.6 s after their beat: at up to 250 bpm that is 3 beats back.
    return _overlap_add(t, b, _ecg_beat, before=4, after=2)


def _pulse_beat(dt: np.ndarray, rr: np.ndarray, delay_s: float) -> np.ndarray:
    k = np.sqrt(rr)
    x = dt - delay_s
    sigma = np.where(x < 0.0, _PULSE_RISE_S * k, _PULSE_FALL_S * k)
    systolic = np.exp(-0.5 * (x / sigma) ** 2)
    diastolic = _DIASTOLIC_AMP * np.exp(-0.5 * ((x - _DIASTOLIC_DELAY_S * k) / (_DIASTOLIC_WIDTH_S * k)) ** 2)
    return systolic + diastolic


def pulse_from_beats(beats_s: np.ndarray, t_s: np.ndarray, delay_s: float) -> np.ndarray:
    """Blood-volume pulse at arbitrary times: one systolic + diastolic wave per beat.

    Method: two-Gaussian pulse decomposition (Rubins 2008): a systolic wave peaking
    ``delay_s`` after the R peak (the pulse arrival time), rising faster than it falls, and a
    diastolic wave 0.28 sqrt(RR) s later at 0.4 of its height. Used for the finger PPG (at the
    sensor's sample times) and for the face BVP (at the camera's frame times, jittered or not).

    Args:
        beats_s: R-peak times, s, shape (K,), increasing, K >= 2.
        t_s: times to evaluate at, s, 1-D.
        delay_s: R peak to systolic peak, s (0-0.6).

    Returns:
        float64 blood volume, dimensionless (0 at end-diastole of a slow beat, about 1 at the
        systolic peak; more blood = larger), shape of ``t_s``.

    Raises:
        BadInputError: bad beats or times; ConfigError: delay out of range.
    """
    b = _check_1d("beats_s", beats_s)
    t = _check_1d("t_s", t_s)
    if b.size < 2 or np.any(np.diff(b) <= 0):
        raise BadInputError("beats_s needs at least two strictly increasing beat times")
    if not 0.0 <= delay_s <= 0.6:
        raise ConfigError(f"pulse delay must be within 0-0.6 s, got {delay_s}")
    # The wave spans delay - 0.35 s .. delay + 0.8 s around its beat.
    return _overlap_add(t, b, lambda dt, rr: _pulse_beat(dt, rr, delay_s), before=6, after=2)


def bateman(t_s: np.ndarray, tau_rise_s: float, tau_decay_s: float) -> np.ndarray:
    """The Bateman function normalised to a peak of 1, zero before t = 0.

    ``exp(-t / tau_decay) - exp(-t / tau_rise)``: the skin-conductance response to one
    sudomotor burst (Benedek & Kaernbach 2010). Its peak is at
    ``tau_r tau_d ln(tau_d / tau_r) / (tau_d - tau_r)`` (1.2 s for 0.75 / 2 s).

    Args:
        t_s: time since onset, s, any shape.
        tau_rise_s: rise time constant, s (> 0).
        tau_decay_s: decay time constant, s (> tau_rise_s).

    Returns:
        float64 array of the shape of ``t_s``, in [0, 1].

    Raises:
        ConfigError: time constants not 0 < rise < decay.
    """
    if not 0.0 < tau_rise_s < tau_decay_s:
        raise ConfigError(f"need 0 < tau_rise_s < tau_decay_s, got {tau_rise_s}, {tau_decay_s}")
    t = np.asarray(t_s, dtype=np.float64)
    t_peak = tau_rise_s * tau_decay_s * np.log(tau_decay_s / tau_rise_s) / (tau_decay_s - tau_rise_s)
    peak = np.exp(-t_peak / tau_decay_s) - np.exp(-t_peak / tau_rise_s)
    tp = np.maximum(t, 0.0)
    return np.where(t > 0.0, (np.exp(-tp / tau_decay_s) - np.exp(-tp / tau_rise_s)) / peak, 0.0)


def eda_from_scrs(
    t_s: np.ndarray,
    tonic_us: np.ndarray | float,
    onsets_s: Sequence[float],
    amplitudes_us: Sequence[float],
    tau_rise_s: float = 0.75,
    tau_decay_s: float = 2.0,
) -> np.ndarray:
    """Skin conductance: a tonic level plus one Bateman-shaped response per onset.

    Args:
        t_s: sample times, s, 1-D.
        tonic_us: tonic skin-conductance level, microsiemens: scalar or an array like ``t_s``.
        onsets_s: response onsets (start of the rise), s, shape (M,).
        amplitudes_us: response amplitudes (onset to peak), microsiemens, shape (M,), >= 0.
        tau_rise_s, tau_decay_s: Bateman time constants, s (Benedek & Kaernbach 2010).

    Returns:
        float64 conductance, microsiemens, shape of ``t_s``. Overlapping responses add.

    Raises:
        BadInputError: onsets and amplitudes of different lengths, negative or non-finite.
    """
    t = _check_1d("t_s", t_s)
    on = _check_1d("onsets_s", onsets_s)
    amp = _check_1d("amplitudes_us", amplitudes_us)
    if on.shape != amp.shape:
        raise BadInputError(f"{on.size} SCR onsets but {amp.size} amplitudes")
    if np.any(amp < 0):
        raise BadInputError("SCR amplitudes must be >= 0 microsiemens")
    out = np.broadcast_to(np.asarray(tonic_us, dtype=np.float64), t.shape).copy()
    for o, a in zip(on, amp):
        out += a * bateman(t - o, tau_rise_s, tau_decay_s)
    return out
