"""The signal kernels: face video to pulse, heart rate and TFR; contact ECG / PPG / EDA to beats.

Training, calibration and the device runtime all call these same functions, so a model sees
the same inputs everywhere.

Public API (module in brackets):
    roi_mean_rgb, roi_stats, face_rois, face_rgb, face_stats   [roi]
    rppg_extract, rppg_clean, RppgStream, METHODS                [rppg]
    signal_detrend                                               [detrend]
    bandpass, butter_sos, BandpassStream                         [filters]
    heart_rate, hr_track, HeartRate, HrTrack                     [hr]
    tfr_compute, tfr_params, tfr_frequencies                     [tfr]
    ecg_peaks [ecg], ppg_peaks [ppg], hrv_time, HRV [hrv], eda_decompose, eda_scr, SCR [eda]

Names are loaded on first use (PEP 562), so ``import edge.signals`` loads no kernel module.
Functions are named ``modality_verb`` and no public name is also a module name, so
``edge.signals.tfr`` is always the module and ``edge.signals.tfr_compute`` always the function,
whichever was imported first.
"""

from __future__ import annotations

import importlib

#: Public name -> the submodule that defines it.
_EXPORTS = {
    "roi_mean_rgb": "roi", "roi_stats": "roi", "face_rois": "roi", "face_rgb": "roi",
    "face_stats": "roi",
    "rppg_extract": "rppg", "rppg_clean": "rppg", "RppgStream": "rppg", "METHODS": "rppg",
    "signal_detrend": "detrend",
    "bandpass": "filters", "butter_sos": "filters", "BandpassStream": "filters",
    "heart_rate": "hr", "hr_track": "hr", "HeartRate": "hr", "HrTrack": "hr",
    "tfr_compute": "tfr", "tfr_params": "tfr", "tfr_frequencies": "tfr",
    "ecg_peaks": "ecg", "ppg_peaks": "ppg", "hrv_time": "hrv", "HRV": "hrv",
    "eda_decompose": "eda", "eda_scr": "eda", "SCR": "eda",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edge.signals' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"edge.signals.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
