"""Sensor sources chosen by URI: ``open_sensor(uri, **options)`` -> an iterator of SensorChunk.

==============================================  ============================================
URI                                             source
==============================================  ============================================
``serial:///dev/ttyUSB0?baud=921600``           a board speaking the emofuse wire protocol
``/dev/ttyACM0``, a pty or its stable link      (:class:`~firmware_bridge.transports.serial.SerialSensorSource`)
``ble://AA:BB:CC:DD:EE:FF``                     BLE heart-rate strap (:class:`~firmware_bridge.transports.ble.BleHeartRateSource`)
``lsl://MyECG``, ``lsl://?type=ECG``            a Lab Streaming Layer stream (:class:`~firmware_bridge.transports.lsl.LslSource`)
``replay://DIR``, or DIR itself                 the sensor streams of a recording (:func:`firmware_bridge.recording.open_recording`)
``sim://?hr_bpm=72&duration_s=30&seed=0``       ECG, PPG and EDA of the synthetic subject (:class:`SimSensorSource`)
==============================================  ============================================

:data:`SENSOR_SCHEMES` maps a scheme to how it is opened and which options it takes: a new
kind of sensor is one new entry (the jetson-utils ``videoSource`` model the cameras follow).
Options come from the URI query or as keywords (a keyword wins); each scheme checks them, so
a misspelt option is a :class:`~firmware_bridge.errors.ConfigError`, not silently ignored.

Every source is an iterator of :class:`~firmware_bridge.types.SensorChunk` with ``close()``
and context-manager use; chunks carry their stream name, rate, units, ``seq`` and host
monotonic ``t0_ns``. ``sim://`` takes the same query as the ``sim://`` camera, so
``open_camera("sim://?seed=3")`` and ``open_sensor("sim://?seed=3")`` are the same subject,
on the same clock when both get the same ``origin_ns``.

Example::

    with open_sensor("serial:///dev/ttyUSB0?baud=921600&streams=ecg,eda") as sensor:
        for chunk in sensor:
            ...  # chunk.stream, chunk.fs_hz, chunk.t0_ns, chunk.samples
"""
from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.cameras.sim import sim_config_from_query
from firmware_bridge.errors import ConfigError
from firmware_bridge.recording import open_recording
from firmware_bridge.sim import synth_session
from firmware_bridge.transports.ble import BleHeartRateSource
from firmware_bridge.transports.lsl import LslSource
from firmware_bridge.transports.serial import DEFAULT_BAUDRATE, SerialSensorSource
from firmware_bridge.types import SensorChunk
from firmware_bridge.uri import (
    convert_options,
    split_query,
    split_scheme,
    to_bool,
    to_int,
    to_names,
    to_nonneg_int,
    to_opt_pos_float,
    to_pos_float,
    to_pos_int,
    to_text,
)

__all__ = [
    "SENSOR_SCHEMES",
    "SensorScheme",
    "SensorUri",
    "SimSensorSource",
    "open_sensor",
    "parse_sensor_uri",
]

@dataclass(frozen=True)
class SensorUri:
    """A sensor URI split once.

    Attributes:
        text: the URI as given.
        scheme: registry key (``"serial"``, ``"ble"``, ``"lsl"``, ``"replay"``, ``"sim"``).
        target: what the scheme opens: a port path, a BLE address, an LSL stream name, a
            folder ("" when the URI names none).
        query: ``key=value`` pairs after ``?``, as text.
    """

    text: str
    scheme: str
    target: str
    query: Mapping[str, str] = field(default_factory=dict)


# -- the synthetic sensor -----------------------------------------------------------------------
class SimSensorSource:
    """ECG (mV), PPG (a.u.) and EDA (uS) of a synthetic session, as SensorChunk records.

    Each stream is cut into chunks of ``chunk_s`` seconds (sample k of the session at
    ``origin_ns + k / fs_hz``, rounded to the ns), numbered by ``seq`` from 0 per stream, and
    the streams are merged in the order their chunks' last samples are taken (ties: stream
    name), as a board sends them. ``realtime=True`` delivers each chunk when its last sample's
    time comes: on the host clock when ``origin_ns`` is given (so a camera opened with the
    same ``origin_ns`` runs in step), else counted from the first chunk. The models behind the
    signals: :mod:`firmware_bridge.sim` (ECGSYN-like beats, McSharry et al. 2003; Bateman
    SCRs, Benedek & Kaernbach 2010).

    Args:
        session: a ``firmware_bridge.sim.SyntheticSession``.
        streams: which of ``"ecg"``, ``"ppg"``, ``"eda"`` (default all).
        chunk_s: seconds of samples per chunk (> 0).
        realtime: pace delivery (see above); False delivers as fast as read, deterministically.
        origin_ns: host time of the session's t = 0, ns; None puts it at 0.
        source: the URI written into each chunk.

    Raises:
        ConfigError: an unknown stream name or a chunk length not > 0.
    """

    STREAMS = ("ecg", "ppg", "eda")

    def __init__(self, session: Any, streams: tuple[str, ...] | None = None, chunk_s: float = 0.1,
                 realtime: bool = False, origin_ns: int | None = None, source: str = "sim://"):
        names = self.STREAMS if streams is None else tuple(streams)
        bad = [s for s in names if s not in self.STREAMS]
        if bad or not names:
            raise ConfigError(f"{source}: unknown sim stream(s) {', '.join(bad) or '(none given)'}; "
                              f"valid: {', '.join(self.STREAMS)}")
        if not (np.isfinite(chunk_s) and chunk_s > 0):
            raise ConfigError(f"{source}: chunk_s must be > 0, got {chunk_s!r}")
        self.session = session
        self.streams = names
        self.chunk_s = float(chunk_s)
        self.realtime = bool(realtime)
        self.source = source
        self.origin_ns = 0 if origin_ns is None else int(origin_ns)
        self._host_paced = origin_ns is not None
        self._wall_zero: int | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.end_reason: str | None = None
        self._it = self._merged()

    def _chunks(self, name: str) -> Iterator[tuple[int, str, int, SensorChunk]]:
        trace = getattr(self.session, name)
        fs = float(trace.fs_hz)
        per = max(1, int(round(self.chunk_s * fs)))
        values = np.asarray(trace.values, dtype=np.float64)
        for seq, start in enumerate(range(0, values.shape[0], per)):
            x = values[start:start + per].copy()
            t0 = self.origin_ns + int(round(start * 1e9 / fs))
            t_last = self.origin_ns + int(round((start + x.shape[0] - 1) * 1e9 / fs))
            chunk = SensorChunk(stream=name, fs_hz=fs, t0_ns=t0, samples=x, units=trace.units,
                                seq=seq, source=self.source)
            yield (t_last, name, seq, chunk)

    def _merged(self) -> Iterator[tuple[int, str, int, SensorChunk]]:
        import heapq

        return heapq.merge(*(self._chunks(s) for s in self.streams))

    def __iter__(self) -> "SimSensorSource":
        return self

    def __next__(self) -> SensorChunk:
        with self._lock:
            if self._closed:
                raise StopIteration
            try:
                t_last, _, _, chunk = next(self._it)
            except StopIteration:
                self.end_reason = "end of simulated session"
                self._closed = True
                raise
        if self.realtime:
            self._pace(t_last)
        return chunk

    def _pace(self, t_last_ns: int) -> None:
        if self._host_paced:
            due = t_last_ns
        else:
            if self._wall_zero is None:
                self._wall_zero = time.monotonic_ns() - (t_last_ns - self.origin_ns)
            due = self._wall_zero + (t_last_ns - self.origin_ns)
        while not self._closed:
            wait = due - time.monotonic_ns()
            if wait <= 0:
                return
            time.sleep(min(wait / 1e9, 0.1))  # short naps so that close() ends a wait quickly

    def close(self) -> None:
        """Stop; later ``next()`` raises StopIteration. Idempotent."""
        self._closed = True
        if self.end_reason is None:
            self.end_reason = "closed"

    def __enter__(self) -> "SimSensorSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SimSensorSource {self.source} streams={list(self.streams)}>"


# -- the openers -------------------------------------------------------------------------------
def _open_serial(uri: SensorUri, opts: dict[str, Any]):
    if not uri.target:
        raise ConfigError(f"{uri.text}: no serial port; e.g. serial:///dev/ttyUSB0")
    if "baud" in opts and "baudrate" in opts:
        raise ConfigError(f"{uri.text}: give baud or baudrate, not both")
    baud = opts.pop("baud", opts.pop("baudrate", DEFAULT_BAUDRATE))
    return SerialSensorSource(uri.target, baud, **opts)


def _open_ble(uri: SensorUri, opts: dict[str, Any]):
    if not uri.target:
        raise ConfigError(f"{uri.text}: no device address; e.g. ble://AA:BB:CC:DD:EE:FF")
    return BleHeartRateSource(uri.target, **opts)


def _open_lsl(uri: SensorUri, opts: dict[str, Any]):
    name = uri.target or None
    if name is None and "type" not in opts:
        raise ConfigError(f"{uri.text}: name a stream (lsl://NAME) or a type (lsl://?type=ECG)")
    return LslSource(name=name, **opts)


def _open_replay(uri: SensorUri, opts: dict[str, Any]):
    if not uri.target:
        raise ConfigError(f"{uri.text}: no recording folder; e.g. replay://recordings/session1")
    rec = open_recording(uri.target)
    return rec.sensors(opts.get("streams"), realtime=opts.get("realtime", False),
                       origin_ns=opts.get("origin_ns"))


_SIM_OPTIONS = {"streams", "chunk_s", "realtime", "origin_ns"}


def _open_sim(uri: SensorUri, opts: dict[str, Any]):
    # The query's remaining keys are the generator's settings, as for the sim:// camera.
    config = sim_config_from_query({k: v for k, v in uri.query.items() if k not in _SIM_OPTIONS}, uri.text)
    return SimSensorSource(synth_session(config), streams=opts.get("streams"),
                           chunk_s=opts.get("chunk_s", 0.1), realtime=opts.get("realtime", False),
                           origin_ns=opts.get("origin_ns"), source=uri.text)


@dataclass(frozen=True)
class SensorScheme:
    """How one URI scheme is opened.

    Attributes:
        opener: ``(SensorUri, converted options) -> source``.
        options: option name -> converter (text or typed value -> value; raises ValueError).
        example: a URI shown in error messages.
        query_free: query keys the scheme reads itself (not options): ``sim://`` settings.
    """

    opener: Callable[[SensorUri, dict[str, Any]], Any]
    options: Mapping[str, Callable[[Any], Any]]
    example: str
    query_free: bool = False


#: Scheme -> how it opens. Options by scheme:
#: serial: baud (or baudrate), streams (comma list), reconnect, reconnect_timeout_s,
#: latency_ns, max_queue; ble: timeout_s; lsl: type, timeout_s, stream, max_samples;
#: replay: streams, realtime, origin_ns; sim: streams, chunk_s, realtime, origin_ns, and
#: any SimConfig field in the query.
SENSOR_SCHEMES: dict[str, SensorScheme] = {
    "serial": SensorScheme(_open_serial, {
        "baud": to_pos_int, "baudrate": to_pos_int, "streams": to_names,
        "reconnect": to_bool, "reconnect_timeout_s": to_opt_pos_float,
        "latency_ns": to_nonneg_int, "max_queue": to_pos_int,
    }, "serial:///dev/ttyUSB0?baud=921600"),
    "ble": SensorScheme(_open_ble, {"timeout_s": to_pos_float}, "ble://AA:BB:CC:DD:EE:FF"),
    "lsl": SensorScheme(_open_lsl, {
        "type": to_text, "timeout_s": to_pos_float, "stream": to_text, "max_samples": to_pos_int,
    }, "lsl://NAME or lsl://?type=ECG"),
    "replay": SensorScheme(_open_replay, {
        "streams": to_names, "realtime": to_bool, "origin_ns": to_int,
    }, "replay://recordings/session1"),
    "sim": SensorScheme(_open_sim, {
        "streams": to_names, "chunk_s": to_pos_float, "realtime": to_bool, "origin_ns": to_int,
    }, "sim://?hr_bpm=72&duration_s=30", query_free=True),
}


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def parse_sensor_uri(uri: str | os.PathLike) -> SensorUri:
    """Split a sensor URI into the scheme that picks its source and what that source opens.

    Bare paths: a character device (``/dev/ttyUSB0``, ``/dev/pts/3``, a stable link to one)
    or any ``/dev/tty*`` / ``/dev/serial/*`` / ``/dev/cu.*`` name -> ``serial``; an existing
    folder -> ``replay``.

    Args:
        uri: a URI or a path (str or path-like).

    Returns:
        The parsed :class:`SensorUri`.

    Raises:
        ConfigError: an empty URI, an unknown scheme (the message lists the valid ones), a
            bare path that is neither a serial port nor a folder, or a malformed query.
    """
    text = os.fspath(uri)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("sensor URI is empty")
    valid = ", ".join(f"{k}://" for k in SENSOR_SCHEMES)
    scheme, rest = split_scheme(text)
    if scheme is None:
        path = text
        if re.match(r"^/dev/(tty|serial/|cu\.|pts/)", path) or _is_char_device(path):
            return SensorUri(text, "serial", path, {})
        if Path(path).is_dir():
            return SensorUri(text, "replay", path, {})
        raise ConfigError(f"{text}: not a sensor URI (no scheme, not a serial port, not a recording "
                          f"folder); valid schemes: {valid}")
    if scheme not in SENSOR_SCHEMES:
        raise ConfigError(f"{text}: unknown sensor scheme {scheme!r}; valid: {valid}, or a serial "
                          f"port path or a recording folder")
    target, query = split_query(rest, text)
    return SensorUri(text, scheme, target, query)


def open_sensor(uri: str | os.PathLike, **options: Any):
    """Open a sensor source by URI (see the module table).

    Args:
        uri: the source; options may also be given in its query (``?baud=115200``).
        **options: the scheme's options (see :data:`SENSOR_SCHEMES`); a keyword overrides
            the same name in the query.

    Returns:
        An open source: iterate it for :class:`SensorChunk` records; ``close()`` it, or use
        it in a ``with`` block.

    Raises:
        ConfigError: unknown scheme, an option the scheme does not take, or a bad value.
        MissingDependencyError: the scheme's library (pyserial, bleak, pylsl) is missing.
        DeviceError: the device cannot be opened (absent port, no strap, no LSL stream).
        BadInputError: ``replay://`` of a folder that is not a recording.
    """
    parsed = parse_sensor_uri(uri)
    scheme = SENSOR_SCHEMES[parsed.scheme]
    raw: dict[str, Any] = {}
    for key, value in parsed.query.items():
        if scheme.query_free and key not in scheme.options:
            continue  # the scheme reads these settings from the query itself
        raw[key] = value
    raw.update(options)
    return scheme.opener(parsed, convert_options(raw, scheme.options, parsed.text))
