"""The small frozen records that flow between stages.

Every record carries its own time and, for sampled data, its own rate: downstream code never
assumes a default rate (STYLE rule 7). Times are host monotonic nanoseconds
(``time.monotonic_ns()``) unless a field says otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One camera frame.

    Attributes:
        t_ns: capture time on the host monotonic clock, ns.
        index: frame index in its source, from 0; skipped indices mean dropped frames.
        image: uint8 BGR image, shape (H, W, 3).
        source: the URI the frame came from.
        dropped_before: frames the source dropped (live sources keep only the newest)
            between the previous delivered frame and this one.
        gap_before_s: seconds the source was not delivering before this frame (0 normally;
            > 0 after a reconnect), so a consumer can see the hole.
    """

    t_ns: int
    index: int
    image: np.ndarray
    source: str = ""
    dropped_before: int = 0
    gap_before_s: float = 0.0


@dataclass(frozen=True)
class SensorChunk:
    """A block of regularly sampled values from one sensor stream.

    Attributes:
        stream: stream name, e.g. ``"ecg"``, ``"ppg_ir"``, ``"eda"``.
        fs_hz: nominal sampling rate of the device, Hz.
        t0_ns: host monotonic time of the first sample, ns (after clock mapping).
        samples: shape (N,) or (N, C), float64 in ``units``.
        units: physical units, e.g. ``"mV"``, ``"uS"``, ``"a.u."``.
        seq: sequence number of the message that carried the chunk (-1 if none).
        device_t0_us: the device's own timestamp of the first sample, us (None if none).
        source: the URI the chunk came from.
    """

    stream: str
    fs_hz: float
    t0_ns: int
    samples: np.ndarray
    units: str = "a.u."
    seq: int = -1
    device_t0_us: int | None = None
    source: str = ""
    meta: dict = field(default_factory=dict, compare=False)
