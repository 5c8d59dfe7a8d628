"""edge.signals exposes the fixed public names, and a function that shares its module's name
stays the function whichever submodule was imported first."""
from __future__ import annotations

import subprocess
import sys

import edge.signals as signals

NAMES = [
    "roi_mean_rgb", "face_rois", "rppg", "RppgStream", "detrend", "bandpass", "heart_rate",
    "hr_track", "tfr", "ecg_peaks", "ppg_peaks", "hrv", "eda_decompose", "eda_scr",
]


def test_public_names_are_callables():
    for name in NAMES:
        assert callable(getattr(signals, name)), name
    assert set(NAMES) <= set(signals.__all__)


def test_submodule_first_import_does_not_shadow_functions():
    code = (
        "import edge.signals.tfr, edge.signals.rppg, edge.signals.detrend, edge.signals.hrv\n"
        "import edge.signals as s\n"
        "import types\n"
        "print(all(not isinstance(getattr(s, n), types.ModuleType) "
        "for n in ('tfr', 'rppg', 'detrend', 'hrv')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
