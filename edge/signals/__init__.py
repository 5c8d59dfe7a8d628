"""The signal kernels: face video to pulse, heart rate and TFR; contact ECG / PPG / EDA to beats.

Training, calibration and the device runtime all call these same functions, so a model sees
the same inputs everywhere. Names are imported lazily (PEP 562) so that ``import
edge.signals`` does not load Numba or compile anything; each kernel compiles (or loads its
cache) on its first call.

Public API (module in brackets):
    roi_mean_rgb, roi_stats, face_rois, face_rgb, face_stats   [roi]
    rppg, rppg_clean, RppgStream, METHODS                        [rppg]
    detrend                                                      [detrend]
    bandpass, butter_sos, BandpassStream                         [filters]
    heart_rate, hr_track, HeartRate, HrTrack                     [hr]
    tfr, tfr_params, tfr_frequencies                             [tfr]
    ecg_peaks [ecg], ppg_peaks [ppg], hrv, HRV [hrv], eda_decompose, eda_scr, SCR [eda]
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "roi": ("roi_mean_rgb", "roi_stats", "face_rois", "face_rgb", "face_stats"),
    "rppg": ("rppg", "rppg_clean", "RppgStream", "METHODS"),
    "detrend": ("detrend",),
    "filters": ("bandpass", "butter_sos", "BandpassStream"),
    "hr": ("heart_rate", "hr_track", "HeartRate", "HrTrack"),
    "tfr": ("tfr", "tfr_params", "tfr_frequencies"),
    "ecg": ("ecg_peaks",),
    "ppg": ("ppg_peaks",),
    "hrv": ("hrv", "HRV"),
    "eda": ("eda_decompose", "eda_scr", "SCR"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'edge.signals' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edge.signals.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
