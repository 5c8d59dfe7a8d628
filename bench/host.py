"""Facts about the machine and this process that every benchmark reports beside its figures.

CPU model, clock, SIMD width and cores; resident memory; CPU time per thread; pinning to one
core (the speed targets are stated for one core). Linux ``/proc`` is read where it exists;
elsewhere a figure is NaN or missing rather than an error.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["host_description", "host_facts", "pin_one_core", "proc_memory_mb", "thread_cpu_s"]


def host_description() -> str:
    """One line: CPU model, cores available to this process, Python, NumPy and Numba versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import numba

    return (
        f"{cpu}; {cores} core(s) available to this process; Python {platform.python_version()}; "
        f"numpy {np.__version__}; numba {numba.__version__}"
    )


def host_facts() -> dict[str, Any]:
    """CPU model, clock, SIMD width and core count of this machine, Python and library versions."""
    cpu, mhz, flags = platform.processor() or platform.machine(), None, ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and cpu in ("", platform.machine(), platform.processor()):
                cpu = value.strip()
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "flags" and not flags:
                flags = value
    except (OSError, ValueError):
        pass
    simd = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("numba", "cv2", "onnxruntime"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cpu_ghz": round(mhz / 1000.0, 3) if mhz else None, "simd_bits": simd,
            "cores": os.cpu_count(), "load_avg_1min": None if load is None else round(load[0], 2),
            "versions": versions}


def proc_memory_mb() -> dict[str, float]:
    """``VmRSS`` (resident now) and ``VmHWM`` (resident peak) of this process, MB (10^6 bytes)."""
    out = {"rss_mb": float("nan"), "hwm_mb": float("nan")}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss_mb"] = int(line.split()[1]) * 1024 / 1e6
            elif line.startswith("VmHWM:"):
                out["hwm_mb"] = int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return out


def thread_cpu_s() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every thread of this process: native id -> (name, s).

    Python threads get their ``threading`` name; threads Python did not start (OpenCV's and
    ONNX Runtime's pools) are named ``native``. Read from ``/proc/self/task/*/stat`` (clock
    ticks), so preemption by other threads or processes does not count, unlike wall time.
    """
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # Fields after the command name start at "state" (field 3): utime is 14, stime 15.
        cpu = (int(fields[11]) + int(fields[12])) / tick
        out[int(tid)] = (names.get(int(tid), "native"), cpu)
    return out


def pin_one_core() -> int | None:
    """Pin this process to the first core it may use; returns that core, or None where the OS
    cannot pin."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = sorted(os.sched_getaffinity(0))[0]
    os.sched_setaffinity(0, {core})
    return core
