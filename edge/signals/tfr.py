"""Time-frequency images of a pulse window: the fixed-size input of the physiology model.

Two kinds, both restricted to the heart-rate band and sampled on exactly ``F`` frequencies
``linspace(lo, hi, F)`` (row 0 = ``lo``) and ``T`` time columns:

- ``"stft"``: log-power short-time Fourier spectrogram (Allen 1977, "Short term spectral
  analysis, synthesis, and modification by discrete Fourier transform", IEEE TASSP 25(3)).
  Frames of ``nperseg_s`` seconds with fractional ``overlap``, each mean-removed and Hann
  windowed (periodic), evaluated by a direct DFT at the F band frequencies (exact, no
  zero-padding grid to interpolate). Columns are linearly interpolated in time between frame
  centres, from the first frame's centre to the last one's.
- ``"cwt"``: log-power complex-Morlet scalogram (Grossmann & Morlet 1984, "Decomposition of
  Hardy functions into square integrable wavelets of constant shape", SIAM J. Math. Anal.
  15(4); the cycles parametrisation of Tallon-Baudry et al. 1997, J. Neurosci. 17(9)). At
  frequency f the wavelet is exp(2 pi i f t) exp(-t^2 / (2 s^2)) with s = n_cycles / (2 pi f)
  seconds, truncated at |t| <= 5 s. Each coefficient is divided by the sum of the Gaussian
  weights that fall inside the signal, so a unit sine gives |W| = 1/2 everywhere and the
  image does not darken at the edges. Columns sit exactly at T times from the first to the
  last sample (``linspace(0, N - 1, T) / fs``); nothing is interpolated. The pulse's mean is
  removed first.

Power is turned into dB with a floor 100 dB below the image's maximum (so silence is finite),
then normalised per image: ``"zscore"`` (default: zero mean, unit standard deviation over the
whole image; a constant image becomes all zeros), ``"minmax"`` (to [0, 1]) or ``"none"``.

Because this is a model input, :func:`tfr_params` returns every setting as a plain JSON-ready
dict, and ``tfr_compute(pulse, fs, **tfr_params(...))`` reproduces the image exactly. The sampling rate
is not part of it: it travels with the pulse.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from firmware_bridge.errors import BadInputError, ConfigError

KINDS = ("stft", "cwt")
NORMS = ("zscore", "minmax", "none")
# Per-kind settings and their defaults. A 4 s STFT frame resolves ~0.5 Hz (Hann main-lobe
# half-width 2/T) while still tracking a rate change within a 10 s window; 5 Morlet cycles
# give 0.2 Hz spectral spread at 1 Hz with a 0.8 s temporal spread.
KIND_DEFAULTS: dict[str, dict[str, float]] = {
    "stft": {"nperseg_s": 4.0, "overlap": 0.9},
    "cwt": {"n_cycles": 5.0},
}
# Morlet support in Gaussian standard deviations (exp(-12.5) ~ 4e-6 cut-off).
CWT_SUPPORT_SIGMAS = 5.0
# Dynamic range kept below the image's peak before the log.
FLOOR_DB = 100.0


def tfr_params(
    kind: str = "stft",
    shape=(64, 64),
    lo: float = 0.7,
    hi: float = 3.5,
    **params,
) -> dict:
    """Every setting that defines a TFR image, validated and with defaults filled in.

    Args:
        kind: ``"stft"`` or ``"cwt"``.
        shape: (F, T) output size, ints >= 2.
        lo, hi: band edges, Hz (0 < lo < hi).
        **params: ``norm`` ("zscore" | "minmax" | "none"); for ``"stft"``: ``nperseg_s``
            (frame length, s) and ``overlap`` (fraction in [0, 1)); for ``"cwt"``:
            ``n_cycles`` (Morlet cycles, > 0).

    Returns:
        dict with keys kind, shape ([F, T] list), lo, hi, norm and the kind's own keys; only
        str, float and list values, so ``json.dumps`` works and ``tfr_compute(pulse, fs, **d)``
        reproduces the image.

    Raises:
        ConfigError: unknown kind, norm or parameter name, or an out-of-range value.
    """
    if kind not in KINDS:
        raise ConfigError(f"tfr kind must be one of {KINDS}, got {kind!r}")
    try:
        f_rows, t_cols = (int(v) for v in shape)
        if any(int(v) != v for v in shape):
            raise ValueError
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"shape must be two ints (F, T), got {shape!r}") from exc
    if f_rows < 2 or t_cols < 2:
        raise ConfigError(f"shape must be at least (2, 2), got {shape!r}")
    lo = float(lo)
    hi = float(hi)
    if not (0 < lo < hi) or not math.isfinite(hi):
        raise ConfigError(f"need 0 < lo < hi Hz, got lo={lo}, hi={hi}")
    params = dict(params)
    norm = params.pop("norm", "zscore")
    if norm not in NORMS:
        raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")
    own = dict(KIND_DEFAULTS[kind])
    unknown = set(params) - set(own)
    if unknown:
        raise ConfigError(
            f"unknown {kind} parameter(s) {sorted(unknown)}; allowed: {sorted(own)} and norm"
        )
    for key, value in params.items():
        try:
            own[key] = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key} must be a number, got {value!r}") from exc
    if kind == "stft":
        if not (own["nperseg_s"] > 0 and math.isfinite(own["nperseg_s"])):
            raise ConfigError(f"nperseg_s must be > 0 s, got {own['nperseg_s']}")
        if not (0.0 <= own["overlap"] < 1.0):
            raise ConfigError(f"overlap must be in [0, 1), got {own['overlap']}")
    elif not (own["n_cycles"] > 0 and math.isfinite(own["n_cycles"])):
        raise ConfigError(f"n_cycles must be > 0, got {own['n_cycles']}")
    return {"kind": kind, "shape": [f_rows, t_cols], "lo": lo, "hi": hi, "norm": norm, **own}


def tfr_frequencies(shape, lo: float, hi: float) -> np.ndarray:
    """float64 (F,) row frequencies in Hz of a TFR of ``shape`` (F, T): linspace(lo, hi, F)."""
    return np.linspace(float(lo), float(hi), int(shape[0]))


def _hann(n: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _stft_power(x: np.ndarray, fs: float, p: dict) -> np.ndarray:
    f_rows, t_cols = p["shape"]
    nperseg = int(round(p["nperseg_s"] * fs))
    if nperseg < 4:
        raise ConfigError(f"nperseg_s={p['nperseg_s']} s is under 4 samples at {fs} Hz")
    if nperseg > x.size:
        raise BadInputError(
            f"pulse lasts {x.size / fs:.2f} s, shorter than one STFT frame of {p['nperseg_s']} s"
        )
    hop = max(1, int(round(nperseg * (1.0 - p["overlap"]))))
    frames = np.lib.stride_tricks.sliding_window_view(x, nperseg)[::hop]
    frames = (frames - frames.mean(axis=1, keepdims=True)) * _hann(nperseg)
    freqs = tfr_frequencies(p["shape"], p["lo"], p["hi"])
    # A direct DFT at the F band frequencies: F x nperseg complex products per frame, cheaper
    # than a zero-padded FFT fine enough to interpolate, and exact.
    phase = np.exp(-2j * np.pi * np.outer(np.arange(nperseg) / fs, freqs))
    power = np.abs(frames @ phase) ** 2  # (n_frames, F)
    centres = (np.arange(frames.shape[0]) * hop + (nperseg - 1) / 2.0) / fs
    cols = np.linspace(centres[0], centres[-1], t_cols)
    out = np.empty((f_rows, t_cols))
    for i in range(f_rows):
        out[i] = np.interp(cols, centres, power[:, i])
    return out


@njit(cache=True, nogil=True)
def _morlet_power(x, fs, freqs, centres, n_cycles, support_sigmas):
    """|W|^2 of the edge-normalised complex Morlet transform at (freq, centre) points.

    x: float64 (N,) mean-removed signal; freqs: (F,) Hz; centres: (T,) fractional sample
    positions. Phasor and Gaussian are advanced by recurrences (one complex and two real
    multiplies a sample) instead of exp/cos/sin per sample.
    """
    n = x.size
    out = np.empty((freqs.size, centres.size))
    for i in range(freqs.size):
        f = freqs[i]
        sig = n_cycles / (2.0 * math.pi * f) * fs  # Gaussian sd, samples
        half = support_sigmas * sig
        inv2s2 = 1.0 / (2.0 * sig * sig)
        step_ratio = math.exp(-2.0 * inv2s2)  # ratio of successive Gaussian ratios
        w = 2.0 * math.pi * f / fs
        rot_c = math.cos(w)
        rot_s = -math.sin(w)
        for j in range(centres.size):
            c = centres[j]
            k0 = max(0, int(math.ceil(c - half)))
            k1 = min(n - 1, int(math.floor(c + half)))
            d = k0 - c
            g = math.exp(-d * d * inv2s2)
            ratio = math.exp(-(2.0 * d + 1.0) * inv2s2)  # g[k+1] / g[k]
            pc = math.cos(w * d)
            ps = -math.sin(w * d)
            acc_re = 0.0
            acc_im = 0.0
            gsum = 0.0
            for k in range(k0, k1 + 1):
                v = x[k] * g
                acc_re += v * pc
                acc_im += v * ps
                gsum += g
                g *= ratio
                ratio *= step_ratio
                t = pc * rot_c - ps * rot_s
                ps = pc * rot_s + ps * rot_c
                pc = t
            if gsum > 0.0:
                out[i, j] = (acc_re * acc_re + acc_im * acc_im) / (gsum * gsum)
            else:
                out[i, j] = 0.0
    return out


def _cwt_power(x: np.ndarray, fs: float, p: dict) -> np.ndarray:
    freqs = tfr_frequencies(p["shape"], p["lo"], p["hi"])
    centres = np.linspace(0.0, x.size - 1.0, p["shape"][1])
    return _morlet_power(
        x - x.mean(), float(fs), freqs, centres, float(p["n_cycles"]), CWT_SUPPORT_SIGMAS
    )


def _log_normalise(power: np.ndarray, norm: str) -> np.ndarray:
    """dB with a floor FLOOR_DB under the peak, then the per-image normalisation; float32."""
    peak = float(power.max())
    floor = peak * 10.0 ** (-FLOOR_DB / 10.0) if peak > 0 else 0.0
    img = 10.0 * np.log10(np.maximum(power, floor) + 1e-300)
    if norm == "zscore":
        sd = img.std()
        img = (img - img.mean()) / sd if sd > 0 else np.zeros_like(img)
    elif norm == "minmax":
        span = img.max() - img.min()
        img = (img - img.min()) / span if span > 0 else np.zeros_like(img)
    return img.astype(np.float32)


def tfr_compute(
    pulse,
    fs: float,
    kind: str = "stft",
    shape=(64, 64),
    lo: float = 0.7,
    hi: float = 3.5,
    **params,
) -> np.ndarray:
    """Band-limited, fixed-size, normalised time-frequency image of a pulse window.

    Args:
        pulse: float (N,) pulse (e.g. cleaned rPPG) at ``fs``; finite values only.
        fs: sampling rate, Hz.
        kind, shape, lo, hi, **params: see :func:`tfr_params` (its output dict may be passed
            back as keyword arguments).

    Returns:
        float32 (F, T) image: rows are frequencies linspace(lo, hi, F) Hz (row 0 = lo),
        columns time from the start to the end of the window (see the module docstring for
        where exactly), values log power normalised per image (default z-score).

    Raises:
        BadInputError: pulse not 1-D real finite, or shorter than one STFT frame / 8 samples.
        ConfigError: bad kind/shape/band/params, or hi >= fs/2.

    Method: STFT spectrogram (Allen 1977) or complex-Morlet scalogram (Grossmann & Morlet
    1984; n_cycles parametrisation, Tallon-Baudry et al. 1997).
    """
    p = tfr_params(kind, shape, lo, hi, **params)
    x = np.asarray(pulse)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise BadInputError(f"pulse must be real 1-D (N,), got {x.dtype} {x.shape}")
    x = x.astype(np.float64, copy=False)
    if x.size < 8:
        raise BadInputError(f"pulse needs at least 8 samples, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise BadInputError("pulse holds NaN or inf; fill or drop the gap before the TFR")
    try:
        fs = float(fs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"fs must be a number, got {fs!r}") from exc
    if not (fs > 0 and math.isfinite(fs)):
        raise ConfigError(f"fs must be a positive rate in Hz, got {fs}")
    if p["hi"] >= fs / 2:
        raise ConfigError(f"hi={p['hi']} Hz must be below fs/2 = {fs / 2} Hz")
    power = _stft_power(x, fs, p) if p["kind"] == "stft" else _cwt_power(x, fs, p)
    return _log_normalise(power, p["norm"])


def warmup() -> None:
    """Compile (or load from Numba's cache) the Morlet kernel on a tiny input."""
    tfr_compute(np.sin(np.arange(64) / 3.0), 30.0, kind="cwt", shape=(4, 4))
