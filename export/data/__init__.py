"""Datasets for the emotion models: the synthetic subject-structured set and real corpora.

Every dataset is an :class:`EmotionWindows` (one ``.npz``) of windows cut by
:func:`edge.windows.windows_from_session` with the runtime's own kernels and one
:class:`edge.spec.Preprocessing` record; see docs/DATASET.md.

Names are imported lazily (PEP 562): ``import export.data`` loads neither Numba nor OpenCV.

Public API (module in brackets):
    windows_from_session, Window, Recording, Stream, EmotionWindows,
    loso_splits, kfold_subject_splits, window_shapes                       [preprocess]
    build_synth_dataset, SynthConfig, SYNTH_PRESETS, synth_trials            [synth]
    load_deap, load_mahnob, load_amigos, windows_from_corpus, TrialRecord,
    read_bdf                                                                 [corpora]
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "preprocess": ("windows_from_session", "Window", "Recording", "Stream", "EmotionWindows",
                   "loso_splits", "kfold_subject_splits", "window_shapes", "ARRAY_NAMES"),
    "synth": ("build_synth_dataset", "SynthConfig", "SYNTH_PRESETS", "synth_trials"),
    "corpora": ("load_deap", "load_mahnob", "load_amigos", "windows_from_corpus", "TrialRecord", "read_bdf",
                "CORPORA"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'export.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"export.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
