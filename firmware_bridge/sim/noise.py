"""Realistic ECG noise: baseline wander, muscle artefact and electrode motion, at a set SNR.

The three kinds are the ones of the MIT-BIH Noise Stress Test Database (Moody, Muldrow &
Mark, "A noise stress test for arrhythmia detectors", Computers in Cardiology 11:381-384,
1984), synthesised here because the recorded noise cannot ship with the package:

- ``"bw"`` baseline wander: a respiration-like oscillation (0.1-0.5 Hz, its rate and depth
  drifting slowly, with a second harmonic) plus a slow random drift (< 0.05 Hz).
- ``"ma"`` muscle artefact (EMG): Gaussian noise band-limited to 20-150 Hz (upper edge capped
  at 0.45 fs) under a bursty amplitude envelope (contractions lasting 0.3-2.5 s).
- ``"em"`` electrode motion, the hardest kind for QRS detectors: baseline steps that
  recover exponentially (electrode polarisation, 0.2-2 s), QRS-like transients (Gaussian
  bumps and damped 2-15 Hz oscillations, 30-250 ms) and 0.5-10 Hz band-limited wobble, all
  present throughout at a low level and three times stronger during random motion
  episodes of 2-12 s.

These are models of the NST noise, not its recordings: detector figures obtained with them
compare detectors with each other, not with results published on the NST database. The
em model is deliberately harsh (its transients are shaped like QRS complexes).

SNR follows the NST (``nst(1)`` of the WFDB software): signal power S = A**2 / 8 where A is
the 5 %-trimmed mean of QRS peak-to-peak amplitudes on the clean ECG (the power of a sine of
that peak-to-peak amplitude); noise power N = R**2 where R is the 5 %-trimmed mean of the
noise's RMS over 1-s windows, each window's mean removed; SNR = 10 log10(S / N) dB. Without
beat positions, A is measured in 1.5-s windows instead of around each beat (each window
holds at least one QRS at heart rates >= 40 bpm).

This module is in the bottom layer: it uses NumPy and SciPy only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import signal as sps

from firmware_bridge.errors import BadInputError, ConfigError

__all__ = ["NOISE_KINDS", "add_noise", "ecg_noise", "nst_noise_power", "nst_signal_power"]

NOISE_KINDS: tuple[str, ...] = ("bw", "ma", "em")


def _check_fs(fs: float) -> float:
    fs = float(fs)
    if not np.isfinite(fs) or fs < 50.0:
        raise ConfigError(f"ECG noise needs a sampling rate >= 50 Hz, got {fs}")
    return fs


def _trimmed_mean(values: np.ndarray, cut: float = 0.05) -> float:
    v = np.sort(values)
    k = int(cut * v.size)
    return float(v[k : v.size - k].mean()) if v.size - 2 * k > 0 else float(v.mean())


def nst_noise_power(noise: np.ndarray, fs: float) -> float:
    """Noise power as the NST measures it (Moody et al. 1984; WFDB ``nst(1)``): the squared
    5 %-trimmed mean of the RMS of 1-s windows, each window's mean removed.

    Args:
        noise: shape (N,), any units; at least 1 s long.
        fs: sampling rate, Hz.

    Returns:
        Power in units squared (float).

    Raises:
        BadInputError: shorter than one second, or not finite.
    """
    x = np.asarray(noise, dtype=np.float64)
    w = int(round(fs))
    if x.ndim != 1 or x.size < w or not np.all(np.isfinite(x)):
        raise BadInputError(
            f"noise must be a finite 1-D array of at least 1 s ({w} samples), got shape {x.shape}"
        )
    win = x[: (x.size // w) * w].reshape(-1, w)
    rms = np.sqrt(np.mean((win - win.mean(axis=1, keepdims=True)) ** 2, axis=1))
    return _trimmed_mean(rms) ** 2


def nst_signal_power(ecg: np.ndarray, fs: float, qrs: np.ndarray | None = None) -> float:
    """ECG signal power as the NST defines it (Moody et al. 1984; WFDB ``nst(1)``):
    (5 %-trimmed mean QRS peak-to-peak amplitude)**2 / 8.

    Args:
        ecg: clean ECG, shape (N,), e.g. mV.
        fs: sampling rate, Hz.
        qrs: optional int sample indices of QRS complexes (e.g. reference beat annotations);
            each peak-to-peak amplitude is then measured within +-60 ms of the beat. Without
            them, peak-to-peak amplitudes are measured in consecutive 1.5-s windows.

    Returns:
        Power in the ECG's units squared.

    Raises:
        BadInputError: not 1-D finite, shorter than 1.5 s, or qrs indices out of range.
    """
    x = np.asarray(ecg, dtype=np.float64)
    w = int(round(1.5 * fs))
    if x.ndim != 1 or x.size < w or not np.all(np.isfinite(x)):
        raise BadInputError(
            f"ecg must be a finite 1-D array of at least 1.5 s ({w} samples), got shape {x.shape}"
        )
    if qrs is None:
        win = x[: (x.size // w) * w].reshape(-1, w)
        pp = win.max(axis=1) - win.min(axis=1)
    else:
        q = np.asarray(qrs, dtype=np.int64)
        if q.size == 0 or q.min() < 0 or q.max() >= x.size:
            raise BadInputError(f"qrs indices must be non-empty and within [0, {x.size}), got {q.size}")
        h = max(1, int(round(0.06 * fs)))
        pp = np.array([np.ptp(x[max(0, k - h) : k + h + 1]) for k in q])
    return _trimmed_mean(pp) ** 2 / 8.0


def _lowpass_noise(rng: np.random.Generator, n: int, fs: float, cutoff_hz: float) -> np.ndarray:
    """Unit-variance Gaussian noise low-passed at cutoff_hz (zero phase)."""
    sos = sps.butter(2, cutoff_hz, btype="low", fs=fs, output="sos")
    y = sps.sosfiltfilt(sos, rng.standard_normal(n + 2 * int(fs / cutoff_hz)))[int(fs / cutoff_hz) :][:n]
    return y / (y.std() + 1e-300)


def _baseline_wander(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    t = np.arange(n) / fs
    f0 = rng.uniform(0.15, 0.4)
    # Breathing rate and depth drift over tens of seconds.
    f_inst = f0 * (1.0 + 0.2 * _lowpass_noise(rng, n, fs, 0.02).clip(-2.5, 2.5) / 2.5)
    phase = 2 * np.pi * np.cumsum(f_inst) / fs + rng.uniform(0, 2 * np.pi)
    depth = np.exp(0.3 * _lowpass_noise(rng, n, fs, 0.03))
    resp = depth * (np.sin(phase) + 0.3 * np.sin(2 * phase + rng.uniform(0, 2 * np.pi)))
    # Slow drift: integrated noise, low-passed so it stays below the respiration band.
    drift = np.cumsum(rng.standard_normal(n)) / np.sqrt(fs)
    drift = drift - np.polyval(np.polyfit(t, drift, 1), t)
    drift = sps.sosfiltfilt(sps.butter(2, 0.05, fs=fs, output="sos"), drift)
    drift *= resp.std() / (drift.std() + 1e-300)
    return resp + drift


def _bursts(rng: np.random.Generator, n: int, fs: float, rate_hz: float, dur_s: tuple[float, float],
            gain: tuple[float, float]) -> np.ndarray:
    """Sum of Hann-shaped bursts at Poisson times: an amplitude envelope >= 0."""
    env = np.zeros(n)
    for _ in range(rng.poisson(rate_hz * n / fs)):
        length = max(2, int(rng.uniform(*dur_s) * fs))
        start = int(rng.integers(-length // 2, n))
        shape = rng.uniform(*gain) * np.hanning(length)
        lo, hi = max(0, start), min(n, start + length)
        if hi > lo:
            env[lo:hi] += shape[lo - start : hi - start]
    return env


def _muscle(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    lo, hi = 20.0, min(150.0, 0.45 * fs)
    sos = sps.butter(4, [lo, hi], btype="band", fs=fs, output="sos")
    emg = sps.sosfilt(sos, rng.standard_normal(n + int(fs)))[int(fs) :]
    emg /= emg.std() + 1e-300
    tone = 0.35 * np.exp(0.4 * _lowpass_noise(rng, n, fs, 0.1))
    env = tone + _bursts(rng, n, fs, rate_hz=0.25, dur_s=(0.3, 2.5), gain=(1.0, 4.0))
    return env * emg


def _motion_intensity(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    """Artefact intensity over time: a steady level of fidgeting (0.5) plus motion episodes
    (2-12 s long, 2-20 s apart) that triple it, with smoothed edges."""
    mask = np.zeros(n)
    i = int(rng.uniform(0, 8) * fs)
    while i < n:
        length = int(rng.uniform(2, 12) * fs)
        mask[i : i + length] = 1.0
        i += length + int(rng.uniform(2, 20) * fs)
    return 0.5 + sps.sosfiltfilt(sps.butter(1, 1.0, fs=fs, output="sos"), mask)


def _electrode_motion(rng: np.random.Generator, n: int, fs: float) -> np.ndarray:
    out = np.zeros(n)
    level = _motion_intensity(rng, n, fs)
    t_rel = np.arange(int(13 * fs)) / fs

    def event_times(rate_hz: float) -> np.ndarray:
        # Poisson events whose rate follows the intensity (thinning).
        peak = rate_hz * level.max()
        cand = np.sort(rng.uniform(0, n, rng.poisson(peak * n / fs)).astype(np.int64))
        return cand[rng.uniform(size=cand.size) < rate_hz * level[cand] / peak]

    # Baseline steps that the electrode's polarisation then drags back (time constant 0.2-2 s).
    for k in event_times(0.15):
        tau = rng.uniform(0.2, 2.0)
        m = min(n - k, int(6 * tau * fs))
        out[k : k + m] += rng.choice([-1, 1]) * rng.uniform(0.5, 2.0) * np.exp(-t_rel[:m] / tau)
    # QRS-like transients: the artefacts that fool detectors.
    for k in event_times(0.4):
        amp = rng.choice([-1, 1]) * rng.uniform(0.3, 1.5)
        if rng.uniform() < 0.5:
            width = rng.uniform(0.015, 0.08)
            m = int(8 * width * fs)
            tt = (np.arange(m) - m / 2) / fs
            shape = np.exp(-0.5 * (tt / width) ** 2)
        else:
            f, d = rng.uniform(2.0, 15.0), rng.uniform(0.03, 0.25)
            m = int(5 * d * fs)
            shape = np.sin(2 * np.pi * f * t_rel[:m]) * np.exp(-t_rel[:m] / d)
        lo, hi = k, min(n, k + shape.size)
        out[lo:hi] += amp * shape[: hi - lo]
    # Irregular wobble in the ECG band (0.5-10 Hz), following the intensity.
    sos = sps.butter(2, [0.5, min(10.0, 0.4 * fs)], btype="band", fs=fs, output="sos")
    band = sps.sosfiltfilt(sos, rng.standard_normal(n))
    out += 0.5 * level * band / (band.std() + 1e-300)
    return out


_GENERATORS = {"bw": _baseline_wander, "ma": _muscle, "em": _electrode_motion}


def _rng_for(seed: int | None, kind: str) -> np.random.Generator:
    # One independent stream per kind, so "bw" with seed 3 is the same alone or in a mix.
    streams = np.random.SeedSequence(seed).spawn(len(NOISE_KINDS))
    return np.random.default_rng(streams[NOISE_KINDS.index(kind)])


def ecg_noise(n: int, fs: float, kind: str, seed: int | None = None) -> np.ndarray:
    """Synthesise n samples of one kind of ECG noise, scaled to unit NST noise power
    (the three kinds of the MIT-BIH Noise Stress Test, Moody et al. 1984; see module docs).

    Args:
        n: number of samples (>= 1 s worth).
        fs: sampling rate, Hz (>= 50).
        kind: ``"bw"`` (baseline wander), ``"ma"`` (muscle artefact) or ``"em"`` (electrode
            motion); see the module docstring for what each contains.
        seed: seed for NumPy's default generator; equal seeds give equal noise.

    Returns:
        float64 array of shape (n,), dimensionless, with :func:`nst_noise_power` == 1.

    Raises:
        ConfigError: unknown kind, n shorter than 1 s, or fs < 50 Hz.
    """
    fs = _check_fs(fs)
    if kind not in _GENERATORS:
        raise ConfigError(f"unknown ECG noise kind {kind!r}; choose from {NOISE_KINDS}")
    if int(n) != n or n < int(round(fs)):
        raise ConfigError(f"n must be an integer of at least 1 s ({int(round(fs))} samples), got {n}")
    x = _GENERATORS[kind](_rng_for(seed, kind), int(n), fs)
    return x / np.sqrt(nst_noise_power(x, fs))


def add_noise(
    ecg: np.ndarray,
    fs: float,
    snr_db: float,
    kinds: Sequence[str] = NOISE_KINDS,
    seed: int | None = None,
    qrs: np.ndarray | None = None,
) -> np.ndarray:
    """Add a mix of ECG noise kinds to a clean ECG at a given signal-to-noise ratio, defined as
    in the MIT-BIH Noise Stress Test (Moody et al. 1984).

    Each kind is generated at unit NST noise power and summed with equal weight; the sum is
    then scaled so that ``10 log10(S / N) == snr_db`` with S from :func:`nst_signal_power`
    on the clean ECG and N from :func:`nst_noise_power` on the scaled mix (module docstring).

    Args:
        ecg: clean ECG, shape (N,), float, any units (the noise takes the same units).
        fs: sampling rate, Hz (>= 50).
        snr_db: signal-to-noise ratio, dB (NST definition; 12, 6 and 0 dB are the NST's
            standard levels).
        kinds: non-empty subset of ``("bw", "ma", "em")``.
        seed: seed for the noise; equal seeds give equal noise.
        qrs: optional beat sample indices for measuring S around each QRS.

    Returns:
        float64 array of shape (N,): ecg + noise.

    Raises:
        BadInputError: ecg not 1-D finite or shorter than 1.5 s.
        ConfigError: unknown or empty kinds, non-finite snr_db, or fs < 50 Hz.
    """
    fs = _check_fs(fs)
    x = np.asarray(ecg, dtype=np.float64)
    if not np.isfinite(snr_db):
        raise ConfigError(f"snr_db must be finite, got {snr_db}")
    kinds = tuple(kinds)
    if not kinds or len(set(kinds)) != len(kinds):
        raise ConfigError(f"kinds must be a non-empty set of {NOISE_KINDS}, got {kinds}")
    s_power = nst_signal_power(x, fs, qrs)
    mix = sum(ecg_noise(x.size, fs, k, seed) for k in kinds)
    gain = np.sqrt(s_power / (nst_noise_power(mix, fs) * 10.0 ** (snr_db / 10.0)))
    return x + gain * mix
