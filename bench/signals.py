"""Benchmarks of the signal kernels against NumPy/SciPy baselines (``emofuse bench signals``).

Every case times a kernel and, where one exists, baselines on the same input, after a first
call whose time is reported apart (the Numba compile, or the cache load when the cache is
warm). The baselines are library routines (SciPy's ``solveh_banded`` and ``sosfiltfilt``,
``cv2.mean``) and the small textbook forms kept here (:func:`numpy_pos_vectorised`,
:func:`detrend_dense`); the tests' plain-Python references (``tests/reference/``) are not
shipped, so cases that only had those as a baseline report the kernel alone.

The MIT-BIH row reads record 100 from a data folder (``--data``, else ``$EMOFUSE_DATA``, else
``../shared/data`` from the current directory); a row that cannot run is reported through
``on_skip`` with the reason, never dropped silently. The figures go in docs/BENCHMARKS.md;
nothing here is asserted by tests.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bench.host import host_description
from edge.signals import (
    detrend as detrend_mod, ecg as ecg_mod, eda as eda_mod, filters, hr, ppg as ppg_mod, roi, rppg,
    tfr,
)
from firmware_bridge.errors import MissingDependencyError
from firmware_bridge.formats import wfdb
from firmware_bridge.sim import SimConfig, synth_session

__all__ = ["Case", "default_data_dir", "detrend_dense", "format_table", "host_description",
           "numpy_pos_vectorised", "run_signal_benchmarks", "synthetic_rgb"]

FS_VIDEO_HZ = 30.0
#: Environment variable naming the data folder (the layout of ``../shared/data``).
DATA_ENV = "EMOFUSE_DATA"
#: MIT-BIH Arrhythmia Database record 100 (WFDB header and signal) inside the data folder.
MITDB_100 = Path("ecg") / "mitdb-100" / "100"


@dataclass
class Case:
    name: str
    kernel: Callable[[], object]
    baselines: dict[str, Callable[[], object]]
    unit: str = "call"  # what one call processes, for the throughput column


def default_data_dir() -> Path:
    """The data folder when ``--data`` is not given: ``$EMOFUSE_DATA``, else ``../shared/data``
    relative to the current directory (the layout of a checkout beside ``shared/``)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path.cwd().parent / "shared" / "data"


def _time(fn: Callable[[], object], repeat: int, budget_s: float = 5.0) -> float:
    """Median wall time of ``fn`` in seconds over up to ``repeat`` runs within a time budget."""
    times = []
    t_start = time.perf_counter()
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - t_start > budget_s and len(times) >= 3:
            break
    return float(np.median(times))


def _first_call(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def synthetic_rgb(n: int, fs: float, hr_bpm: float = 72.0, seed: int = 0) -> np.ndarray:
    """A face-skin RGB trace (N, 3) with a 0.3 % pulse along the PBV direction, drift and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / fs
    pulse = np.sin(2 * np.pi * hr_bpm / 60.0 * t)
    skin = np.array([170.0, 120.0, 100.0])
    pbv = np.array([0.33, 0.77, 0.53])
    illum = 1.0 + 0.02 * np.sin(2 * np.pi * 0.05 * t)
    rgb = skin * illum[:, None] * (1.0 + 0.003 * pulse[:, None] * pbv)
    return rgb + rng.normal(0.0, 0.05, size=rgb.shape)


def numpy_pos_vectorised(rgb: np.ndarray, fs: float, window_s: float = 1.6) -> np.ndarray:
    """POS (Wang et al. 2017) vectorised over all windows at once, the NumPy way of pyVHR-style
    tools: a (W, L, 3) stack of sliding windows, then overlap-add. The speed baseline."""
    from numpy.lib.stride_tricks import sliding_window_view

    L = int(np.floor(window_s * fs + 0.5))
    win = sliding_window_view(rgb, L, axis=0).transpose(0, 2, 1)  # (W, L, 3)
    cn = win / win.mean(axis=1, keepdims=True)
    s0 = cn[..., 1] - cn[..., 2]
    s1 = -2.0 * cn[..., 0] + cn[..., 1] + cn[..., 2]
    sd1 = s1.std(axis=1, keepdims=True)
    alpha = np.divide(s0.std(axis=1, keepdims=True), sd1, out=np.zeros_like(sd1), where=sd1 > 0)
    h = s0 + alpha * s1
    h -= h.mean(axis=1, keepdims=True)
    out = np.zeros(rgb.shape[0])
    idx = np.arange(h.shape[0])[:, None] + np.arange(L)[None, :]
    np.add.at(out, idx, h)
    return out


def detrend_dense(z: np.ndarray, lam: float = 100.0) -> np.ndarray:
    """Smoothness-priors detrending (Tarvainen et al. 2002) the textbook way: the dense
    inverse of ``I + lam^2 D2' D2`` applied to ``z``, O(N^3) time and O(N^2) memory. The slow
    baseline the banded kernel is stated against.

    Args:
        z: float (N,), N >= 3.
        lam: smoothing parameter (the kernel's default 100 at 30 fps).

    Returns:
        float64 (N,): ``z`` minus its trend.
    """
    z = np.asarray(z, dtype=np.float64)
    n = z.size
    d2 = np.zeros((n - 2, n))
    rows = np.arange(n - 2)
    d2[rows, rows], d2[rows, rows + 1], d2[rows, rows + 2] = 1.0, -2.0, 1.0
    return z - np.linalg.inv(np.eye(n) + lam**2 * (d2.T @ d2)) @ z


def _sosfiltfilt_bandpass(x: np.ndarray, fs: float, lo: float = 0.7, hi: float = 3.5) -> np.ndarray:
    """SciPy's zero-phase 4th-order Butterworth band-pass, the settings of ``filters.bandpass``."""
    from scipy import signal

    return signal.sosfiltfilt(signal.butter(4, [lo, hi], btype="bandpass", fs=fs, output="sos"), x)


def _rppg_cases(length_s: float, dense_max_s: float) -> list[Case]:
    from scipy.linalg import solveh_banded

    fs = FS_VIDEO_HZ
    n = int(length_s * fs)
    rgb = synthetic_rgb(n, fs)
    raw = rppg.rppg_extract(rgb, fs, "pos")
    pulse = rppg.rppg_clean(raw, fs)
    dense_ok = length_s <= dense_max_s

    def banded_scipy(z, lam=100.0):
        # I + lam^2 D2'D2 in upper banded form, solved by SciPy's LAPACK banded Cholesky.
        m = z.size
        d2 = np.zeros((3, m))
        main = np.full(m, 6.0)
        main[[0, -1]] = 1.0
        main[[1, -2]] = 5.0
        off1 = np.full(m - 1, -4.0)
        off1[[0, -1]] = -2.0
        d2[2] = 1.0 + lam**2 * main
        d2[1, 1:] = lam**2 * off1
        d2[0, 2:] = lam**2
        return z - solveh_banded(d2, z)

    chain_baselines = {"numpy-vectorised POS alone": lambda: numpy_pos_vectorised(rgb, fs)}
    if dense_ok:
        chain_baselines["numpy POS + dense detrend + sosfiltfilt"] = lambda: _sosfiltfilt_bandpass(
            detrend_dense(numpy_pos_vectorised(rgb, fs)), fs
        )
    detrend_baselines = {"scipy solveh_banded": lambda: banded_scipy(raw)}
    if dense_ok:
        detrend_baselines["dense inverse (O(N^3))"] = lambda: detrend_dense(raw)
    cases = [
        Case("pos+detrend+bandpass", lambda: rppg.rppg_clean(rppg.rppg_extract(rgb, fs, "pos"), fs), chain_baselines),
        Case("detrend", lambda: detrend_mod.signal_detrend(raw), detrend_baselines),
        Case("bandpass", lambda: filters.bandpass(raw, fs), {"scipy sosfiltfilt": lambda: _sosfiltfilt_bandpass(raw, fs)}),
        Case("heart_rate", lambda: hr.heart_rate(pulse, fs), {}),
    ]
    for method in rppg.METHODS:
        if method == "pos":
            continue
        cases.append(
            Case(f"rppg {method}", (lambda m=method: rppg.rppg_extract(rgb, fs, m)), {})
        )
    for kind in ("stft", "cwt"):
        params = tfr.tfr_params(kind=kind)
        cases.append(Case(f"tfr {kind}", (lambda p=params: tfr.tfr_compute(pulse, fs, **p)), {}))
    return cases


def _physio_cases(length_s: float) -> list[Case]:
    session = synth_session(SimConfig(duration_s=length_s, hr_bpm=72.0, seed=1))
    ecg, fs_ecg = session.ecg.values, session.ecg.fs_hz
    ppg, fs_ppg = session.ppg.values, session.ppg.fs_hz
    eda, fs_eda = session.eda.values, session.eda.fs_hz
    return [
        Case("ecg_peaks (synthetic)", lambda: ecg_mod.ecg_peaks(ecg, fs_ecg),
             {}),
        Case("ppg_peaks", lambda: ppg_mod.ppg_peaks(ppg, fs_ppg),
             {}),
        Case("eda_scr", lambda: eda_mod.eda_scr(eda, fs_eda),
             {}),
    ]


def _fixed_cases(data_dir: Path, on_skip: Callable[[str], None]) -> list[tuple[str, Case]]:
    """Cases whose size is fixed by the target: a 162x162 face box, the 30-minute MIT-BIH record
    (from ``data_dir``; when it is not there, ``on_skip`` is told why and the row is left out)."""
    import cv2

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    frame[100:262, 200:362] = (110, 140, 190)  # a skin-coloured block (BGR) inside the box
    frame[100:262, 200:362] += rng.integers(0, 12, size=(162, 162, 3), dtype=np.uint8)
    box = (200, 100, 162, 162)
    x, y, w, h = box
    cases = [
        ("162x162 box", Case(
            "roi_mean_rgb skin", lambda: roi.roi_mean_rgb(frame, box, skin=True),
            {"cv2.mean, no skin mask": lambda: cv2.mean(frame[y:y + h, x:x + w])},
            unit="box")),
    ]
    record = Path(data_dir) / MITDB_100
    missing = [f for f in (record.with_suffix(".hea"), record.with_suffix(".dat")) if not f.is_file()]
    if missing:
        on_skip(f"skipped mitdb row: {missing[0]} not found")
    else:
        try:
            signals, fs, _names = wfdb.read_signals(record)
        except MissingDependencyError as exc:  # the record is there, the wfdb package is not
            on_skip(f"skipped mitdb row: {exc}")
            return cases
        mlii = np.ascontiguousarray(signals[:, 0])
        cases.append(("MIT-BIH 100, 30 min", Case("ecg_peaks", lambda: ecg_mod.ecg_peaks(mlii, fs), {})))
    return cases


def _measure(case: Case, size: str, repeat: int, first: dict[str, float]) -> dict:
    if case.name not in first:
        first[case.name] = _first_call(case.kernel)
    t_kernel = _time(case.kernel, repeat)
    row = {
        "case": case.name,
        "size": size,
        "kernel_ms": round(t_kernel * 1e3, 4),
        "first_call_ms": round(first[case.name] * 1e3, 1),
        "per_s": round(1.0 / t_kernel, 1) if t_kernel > 0 else None,
        "unit": case.unit,
        "baselines": {},
    }
    for name, fn in case.baselines.items():
        fn()  # warm-up (imports, caches)
        t_base = _time(fn, max(3, repeat // 3))
        row["baselines"][name] = {"ms": round(t_base * 1e3, 4), "speedup": round(t_base / t_kernel, 1)}
    return row


def run_signal_benchmarks(lengths_s=(10.0, 60.0, 300.0), repeat: int = 15, dense_max_s: float = 60.0,
                          data_dir: str | os.PathLike | None = None,
                          on_skip: Callable[[str], None] | None = None) -> list[dict]:
    """Run every case.

    Args:
        lengths_s: signal lengths of the length-dependent cases, s.
        repeat: timed runs per kernel (the median is reported; baselines get a third of them).
        dense_max_s: longest signal the O(N^3) dense-detrend baselines are run on, s.
        data_dir: the data folder holding ``ecg/mitdb-100/100.{hea,dat}`` (None:
            :func:`default_data_dir`).
        on_skip: called with one line for each row that cannot run and why (None: ignored).

    Returns:
        One dict per (case, size): ``case``, ``size``, ``kernel_ms``, ``first_call_ms``,
        ``per_s``, ``unit`` and ``baselines`` (name -> ``ms``, ``speedup`` = baseline / kernel).
    """
    first: dict[str, float] = {}
    rows = []
    data = Path(data_dir) if data_dir is not None else default_data_dir()
    for size, case in _fixed_cases(data, on_skip or (lambda _line: None)):
        rows.append(_measure(case, size, repeat, first))
    for length_s in lengths_s:
        for case in _rppg_cases(length_s, dense_max_s) + _physio_cases(length_s):
            rows.append(_measure(case, f"{length_s:g} s", repeat, first))
    return rows


def format_table(rows: list[dict], host: str) -> str:
    """The rows of :func:`run_signal_benchmarks` as a text table under a host line."""
    lines = [
        f"host: {host}",
        "first call = compile, or Numba cache load when the cache is warm (run with --cold for a true cold start)",
        "",
        f"{'case':<24} {'size':<20} {'kernel ms':>10} {'per s':>10} {'first ms':>9}  baselines (ms, kernel speed-up)",
    ]
    for r in rows:
        base = "; ".join(f"{k}: {v['ms']:.3f} ({v['speedup']}x)" for k, v in r["baselines"].items()) or "-"
        lines.append(
            f"{r['case']:<24} {r['size']:<20} {r['kernel_ms']:>10.4f} {r['per_s']:>10.1f} "
            f"{r['first_call_ms']:>9.1f}  {base}"
        )
    return "\n".join(lines) + "\n"
