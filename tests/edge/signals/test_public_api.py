"""edge.signals exposes the fixed public names lazily, and no public function shares its
module's name, so the module and the function stay apart whichever is imported first."""
from __future__ import annotations

import subprocess
import sys
import types

import edge.signals as signals

NAMES = [
    "roi_mean_rgb", "face_rois", "rppg_extract", "RppgStream", "signal_detrend", "bandpass",
    "heart_rate", "hr_track", "tfr_compute", "ecg_peaks", "ppg_peaks", "hrv_time",
    "eda_decompose", "eda_scr",
]
MODULES = ["roi", "rppg", "detrend", "filters", "hr", "hrv", "tfr", "ecg", "ppg", "eda"]


def test_public_names_are_callables():
    for name in NAMES:
        assert callable(getattr(signals, name)), name
    assert set(NAMES) <= set(signals.__all__)
    assert not set(MODULES) & set(signals.__all__)
    for name in signals.__all__:
        assert not isinstance(getattr(signals, name), types.ModuleType), name


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_package_import_loads_no_kernel_module():
    code = (
        "import sys, edge.signals\n"
        f"print(sorted(m for m in {MODULES!r} if 'edge.signals.' + m in sys.modules))\n"
    )
    assert _run(code) == "[]"


def test_submodule_first_import_keeps_modules_and_functions_apart():
    code = (
        "import types\n"
        "import edge.signals.tfr, edge.signals.rppg, edge.signals.detrend, edge.signals.hrv\n"
        "import edge.signals as s\n"
        "mods = all(isinstance(getattr(s, n), types.ModuleType) for n in ('tfr', 'rppg', 'detrend', 'hrv'))\n"
        "fns = all(callable(getattr(s, n)) and not isinstance(getattr(s, n), types.ModuleType)\n"
        "          for n in ('tfr_compute', 'rppg_extract', 'signal_detrend', 'hrv_time'))\n"
        "print(mods and fns)\n"
    )
    assert _run(code) == "True"


def test_unknown_name_is_an_attribute_error():
    try:
        signals.no_such_kernel  # noqa: B018
    except AttributeError as exc:
        assert "no_such_kernel" in str(exc)
    else:
        raise AssertionError("edge.signals.no_such_kernel resolved")
