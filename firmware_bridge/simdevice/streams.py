"""What the simulated board plays: :class:`BoardStream` and the makers of its streams (the
synthetic generator, a NeuroKit CSV, a WFDB record, a command-line spec).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.formats.wfdb import read_header, read_signals
from firmware_bridge.protocol.messages import STREAM_IDS, STREAMS
from firmware_bridge.sim import synth_session


_NUMPY_DTYPES = {"int16": np.int16, "int32": np.int32, "float32": np.float32}
_MAX_RATE_HZ = 100_000.0


@dataclass(frozen=True, eq=False)
class BoardStream:
    """One stream the board plays: physical values at their own rate, and how they are sent.

    Attributes:
        name: a standard stream name (``"ecg"``, ``"ppg_ir"``, ``"eda"``, ...; see
            ``firmware_bridge.protocol.STREAMS``).
        values: float64 physical values, shape (N,) or (N, C); NaN allowed (the stream is
            then sent as float32 so that NaN survives).
        fs_hz: rate of ``values``, Hz (> 0).
        units: physical units; None takes the registry's default for ``name``.
        dtype: raw type on the wire, ``"int16"``, ``"int32"`` or ``"float32"``; None picks
            int16, or float32 when ``values`` holds NaN.

    Raises:
        BadInputError: unknown name, empty or non-numeric values, +-inf, or a bad rate.
    """

    name: str
    values: np.ndarray = field(repr=False)
    fs_hz: float
    units: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        if self.name not in STREAM_IDS:
            raise BadInputError(f"unknown stream name {self.name!r}; known: {', '.join(STREAM_IDS)}")
        try:
            v = np.array(self.values, dtype=np.float64)
        except (TypeError, ValueError):
            raise BadInputError(f"{self.name}: values must be numeric") from None
        if v.ndim == 1:
            v = v[:, None]
        if v.ndim != 2 or v.shape[0] == 0 or not 1 <= v.shape[1] <= 255:
            raise BadInputError(
                f"{self.name}: values must have shape (N,) or (N, C) with N >= 1, got {np.shape(self.values)}")
        if np.any(np.isinf(v)):
            raise BadInputError(f"{self.name}: values hold +-inf")
        if np.all(np.isnan(v)):
            raise BadInputError(f"{self.name}: values are all NaN")
        if not (np.isfinite(self.fs_hz) and 0 < self.fs_hz <= _MAX_RATE_HZ):
            raise BadInputError(f"{self.name}: fs_hz must be within 0-{_MAX_RATE_HZ:g} Hz, got {self.fs_hz!r}")
        dtype = self.dtype or ("float32" if np.isnan(v).any() else "int16")
        if dtype not in _NUMPY_DTYPES:
            raise BadInputError(f"{self.name}: dtype must be int16, int32 or float32, got {dtype!r}")
        if dtype != "float32" and np.isnan(v).any():
            raise BadInputError(f"{self.name}: values hold NaN, which {dtype} cannot carry; use float32")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "fs_hz", float(self.fs_hz))
        if self.units is None:
            object.__setattr__(self, "units", STREAMS[STREAM_IDS[self.name]].units)

    @property
    def channels(self) -> int:
        """Channels per sample instant."""
        return int(self.values.shape[1])

    @property
    def duration_s(self) -> float:
        """Length of the recording, s."""
        return self.values.shape[0] / self.fs_hz


def synth_streams(duration_s: float = 60.0, hr_bpm: float = 72.0, seed: int = 0, **config: object) -> list[BoardStream]:
    """ECG, finger PPG and EDA of one synthetic subject, from :func:`firmware_bridge.sim.synth_session`.

    The generator's models: ECGSYN-like beats (McSharry et al. 2003), Gaussian pulse waves
    (Rubins 2008), Bateman skin-conductance responses (Benedek & Kaernbach 2010); see
    docs/SIMULATOR.md.

    Args:
        duration_s: length, s.
        hr_bpm: heart rate, beats/min (constant, or knots ``((t_s, bpm), ...)``).
        seed: the generator's seed.
        **config: other :class:`firmware_bridge.sim.SimConfig` fields (e.g. ``fs_ecg_hz``).

    Returns:
        ``[ecg (mV), ppg_ir (a.u.), eda (uS)]`` at the config's rates.

    Raises:
        ConfigError: a setting out of range.
    """
    s = synth_session(duration_s=duration_s, hr_bpm=hr_bpm, seed=seed, **config)
    return [
        BoardStream("ecg", s.ecg.values, s.ecg.fs_hz, s.ecg.units),
        BoardStream("ppg_ir", s.ppg.values, s.ppg.fs_hz, s.ppg.units),
        BoardStream("eda", s.eda.values, s.eda.fs_hz, s.eda.units),
    ]


#: NeuroKit2 example-data column -> (stream, units). The photosensor is an event marker, not
#: a body signal; it is not played.
NEUROKIT_COLUMNS = {"ECG": ("ecg", "mV"), "PPG": ("ppg_ir", "a.u."), "EDA": ("eda", "uS"), "RSP": ("resp", "a.u.")}


def neurokit_streams(path: str | Path, fs_hz: float = 100.0) -> list[BoardStream]:
    """The body signals of a NeuroKit2 example CSV (``ECG``, ``PPG``, ``EDA``, ``RSP`` columns).

    Args:
        path: the CSV file (header row, one row per sample).
        fs_hz: its sampling rate, Hz (the CSV does not say; the example files are 100 Hz).

    Returns:
        One :class:`BoardStream` per known column present, in :data:`NEUROKIT_COLUMNS` order.

    Raises:
        BadInputError: unreadable file, or no known column in it.
    """
    path = Path(path)
    try:
        table = np.genfromtxt(path, delimiter=",", names=True, dtype=np.float64, encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise BadInputError(f"cannot read NeuroKit CSV {path}: {exc}") from None
    names = table.dtype.names or ()
    out = [BoardStream(stream, table[col], fs_hz, units)
           for col, (stream, units) in NEUROKIT_COLUMNS.items() if col in names]
    if not out:
        raise BadInputError(f"{path}: no column among {', '.join(NEUROKIT_COLUMNS)} (found {', '.join(names)})")
    return out


def wfdb_streams(record: str | Path, channel: int = 0) -> list[BoardStream]:
    """One ECG lead of a WFDB record (e.g. MIT-BIH ``.../100``) as the board's ECG stream.

    Args:
        record: record path without extension, or its ``.hea`` file.
        channel: which signal of the record, from 0.

    Returns:
        ``[ecg]`` in the record's physical units (mV for MIT-BIH) at its rate.

    Raises:
        BadInputError: unreadable or corrupt record, or no such channel.
    """
    signals, fs_hz, _ = read_signals(record)
    if not 0 <= channel < signals.shape[1]:
        raise BadInputError(f"{record}: no channel {channel} (the record has {signals.shape[1]})")
    units = read_header(record).signals[channel].units or "mV"
    return [BoardStream("ecg", signals[:, channel], fs_hz, units)]


def streams_from_spec(
    spec: str, *, hr_bpm: float = 72.0, duration_s: float = 300.0, seed: int = 0
) -> list[BoardStream]:
    """Streams named by a source spec, as the ``emofuse simulate --source`` flag takes it.

    Args:
        spec: ``"synth"``, ``"neurokit:PATH.csv"`` or ``"wfdb:RECORD"``.
        hr_bpm, duration_s, seed: for ``synth`` only.

    Returns:
        The board streams.

    Raises:
        ConfigError: an unknown kind of spec.
        BadInputError: an unreadable recording.
    """
    kind, _, arg = spec.partition(":")
    if kind == "synth" and not arg:
        return synth_streams(duration_s=duration_s, hr_bpm=hr_bpm, seed=seed)
    if kind == "neurokit" and arg:
        return neurokit_streams(arg)
    if kind == "wfdb" and arg:
        return wfdb_streams(arg)
    raise ConfigError(f"unknown source {spec!r}: use synth, neurokit:FILE.csv or wfdb:RECORD")
