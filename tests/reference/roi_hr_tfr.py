"""Reference (OpenCV/NumPy/SciPy) versions of the ROI, heart-rate and TFR kernels.

Written for clarity, each along a different route from the kernel it checks:

- :func:`roi_mean_rgb_ref`: crop copy, ``cv2.cvtColor`` to YCrCb, ``cv2.inRange`` mask, NumPy
  mean. Equal to ``edge.signals.roi.roi_mean_rgb`` within 1e-9 (the mask is bit-identical;
  only the float division order differs).
- :func:`heart_rate_ref`: ``scipy.signal.periodogram`` with a Hann window and the same
  zero-padding, then the same peak interpolation and SNR template.
- :func:`tfr_stft_ref`: ``scipy.signal.zoom_fft`` (chirp-z) at the band frequencies of each
  SciPy-Hann-windowed frame. :func:`tfr_cwt_ref`: dense NumPy evaluation of the truncated,
  edge-normalised Morlet sum. Both match ``edge.signals.tfr.tfr_compute`` within 1e-4 absolute on the
  z-scored float32 image (float32 rounding of values of a few units, plus the kernel's
  recurrences, ~1e-12 relative on power).
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import signal

from edge.signals.roi import DEFAULT_SKIN_RULE, SKIN_RULES


def roi_mean_rgb_ref(frame_bgr: np.ndarray, box, skin: bool | str = True) -> np.ndarray:
    """Mean R, G, B (float64 (3,)) of the skin pixels in box (x, y, w, h).

    ``skin``: True (the default rule), False (no mask) or a name in ``roi.SKIN_RULES``.
    """
    height, width = frame_bgr.shape[:2]
    x, y, w, h = (int(round(float(v))) for v in box)
    x0, x1 = np.clip([x, x + w], 0, width)
    y0, y1 = np.clip([y, y + h], 0, height)
    crop = np.ascontiguousarray(frame_bgr[y0:y1, x0:x1])
    if crop.size == 0:
        return np.full(3, np.nan)
    if skin:
        cr_lo, cr_hi, cb_lo, cb_hi = SKIN_RULES[DEFAULT_SKIN_RULE if skin is True else skin]
        ycrcb = cv2.cvtColor(crop, cv2.COLOR_BGR2YCrCb)
        mask = cv2.inRange(ycrcb, (0, cr_lo, cb_lo), (255, cr_hi, cb_hi)) > 0
    else:
        mask = np.ones(crop.shape[:2], dtype=bool)
    if not mask.any():
        return np.full(3, np.nan)
    return crop[mask][:, ::-1].astype(np.float64).mean(axis=0)


def heart_rate_ref(pulse, fs: float, lo: float = 0.7, hi: float = 3.5, halfwidth_hz: float = 0.1):
    """(hr_bpm, snr_db) by scipy.signal.periodogram; NaNs when the band holds no power."""
    x = np.asarray(pulse, dtype=np.float64)
    nfft = 1 << int(np.ceil(np.log2(max(x.size, int(np.ceil(fs / 0.01))))))
    if not np.all(np.isfinite(x)) or np.ptp(x) == 0:
        return np.nan, np.nan
    freqs, power = signal.periodogram(x, fs, window="hann", nfft=nfft, detrend="constant")
    band = (freqs >= lo) & (freqs <= hi)
    fb, pb = freqs[band], power[band]
    j = int(np.argmax(pb))
    f0 = fb[j]
    if 0 < j < pb.size - 1:
        a, b, c = np.log(pb[j - 1 : j + 2])
        if a - 2 * b + c < 0:
            f0 += 0.5 * (a - c) / (a - 2 * b + c) * (freqs[1] - freqs[0])
    sig = (np.abs(fb - f0) <= halfwidth_hz) | (np.abs(fb - 2 * f0) <= halfwidth_hz)
    return 60.0 * f0, 10.0 * np.log10(pb[sig].sum() / pb[~sig].sum())


def _normalise(power: np.ndarray, norm: str, floor_db: float = 100.0) -> np.ndarray:
    img = 10.0 * np.log10(np.maximum(power, power.max() / 10.0 ** (floor_db / 10.0)) + 1e-300)
    if norm == "zscore":
        return (img - img.mean()) / img.std()
    if norm == "minmax":
        return (img - img.min()) / (img.max() - img.min())
    return img


def tfr_stft_ref(pulse, fs: float, params: dict) -> np.ndarray:
    """float64 (F, T) STFT image for a ``tfr_params`` dict of kind "stft"."""
    x = np.asarray(pulse, dtype=np.float64)
    f_rows, t_cols = params["shape"]
    nperseg = int(round(params["nperseg_s"] * fs))
    hop = max(1, int(round(nperseg * (1.0 - params["overlap"]))))
    win = signal.get_window("hann", nperseg)  # periodic Hann
    starts = np.arange(0, x.size - nperseg + 1, hop)
    power = np.empty((starts.size, f_rows))
    for m, s in enumerate(starts):
        frame = signal.detrend(x[s : s + nperseg], type="constant") * win
        spec = signal.zoom_fft(frame, [params["lo"], params["hi"]], m=f_rows, fs=fs, endpoint=True)
        power[m] = np.abs(spec) ** 2
    centres = (starts + (nperseg - 1) / 2.0) / fs
    cols = np.linspace(centres[0], centres[-1], t_cols)
    image = np.stack([np.interp(cols, centres, power[:, i]) for i in range(f_rows)])
    return _normalise(image, params["norm"])


def tfr_cwt_ref(pulse, fs: float, params: dict, support_sigmas: float = 5.0) -> np.ndarray:
    """float64 (F, T) Morlet image for a ``tfr_params`` dict of kind "cwt"."""
    x = np.asarray(pulse, dtype=np.float64)
    x = x - x.mean()
    f_rows, t_cols = params["shape"]
    freqs = np.linspace(params["lo"], params["hi"], f_rows)
    centres = np.linspace(0.0, x.size - 1.0, t_cols)
    lag = np.arange(x.size)[None, :] - centres[:, None]  # (T, N) samples
    power = np.empty((f_rows, t_cols))
    for i, f in enumerate(freqs):
        sd = params["n_cycles"] / (2 * np.pi * f) * fs
        gauss = np.exp(-(lag**2) / (2 * sd**2)) * (np.abs(lag) <= support_sigmas * sd)
        coef = (x * gauss * np.exp(-2j * np.pi * f * lag / fs)).sum(axis=1) / gauss.sum(axis=1)
        power[i] = np.abs(coef) ** 2
    return _normalise(power, params["norm"])
