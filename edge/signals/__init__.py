"""The signal kernels: face video to pulse, heart rate and TFR; contact ECG / PPG / EDA to beats.

Training, calibration and the device runtime all call these same functions, so a model sees
the same inputs everywhere.

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

# Imported eagerly on purpose: three public functions share their module's name (rppg, tfr,
# detrend). With lazy loading, whichever submodule import ran first would decide whether
# ``edge.signals.tfr`` is the function or the module. Importing compiles nothing: each kernel
# compiles, or loads its Numba cache, on its first call.
from edge.signals.detrend import detrend
from edge.signals.ecg import ecg_peaks
from edge.signals.eda import SCR, eda_decompose, eda_scr
from edge.signals.filters import BandpassStream, bandpass, butter_sos
from edge.signals.hr import HeartRate, HrTrack, heart_rate, hr_track
from edge.signals.hrv import HRV, hrv
from edge.signals.ppg import ppg_peaks
from edge.signals.roi import face_rgb, face_rois, face_stats, roi_mean_rgb, roi_stats
from edge.signals.rppg import METHODS, RppgStream, rppg, rppg_clean
from edge.signals.tfr import tfr, tfr_frequencies, tfr_params

__all__ = [
    "HRV", "METHODS", "SCR", "BandpassStream", "HeartRate", "HrTrack", "RppgStream",
    "bandpass", "butter_sos", "detrend", "ecg_peaks", "eda_decompose", "eda_scr", "face_rgb",
    "face_rois", "face_stats", "heart_rate", "hr_track", "hrv", "ppg_peaks", "roi_mean_rgb",
    "roi_stats", "rppg", "rppg_clean", "tfr", "tfr_frequencies", "tfr_params",
]
