"""Bluetooth LE heart-rate straps (Polar H10, Garmin HRM, Wahoo TICKR...): GATT Heart Rate Service.

The strap notifies the Heart Rate Measurement characteristic (0x2A37) about once a second with
the current rate and the RR intervals (beat-to-beat times) measured since the last
notification. :func:`parse_heart_rate_measurement` decodes one notification (Bluetooth SIG,
Heart Rate Service 1.0 and the GATT Specification Supplement, "Heart Rate Measurement");
:class:`BleHeartRateSource` connects with bleak and yields the values as SensorChunk records on
the host monotonic clock.

``BleHeartRateSource`` is written against bleak's documented API (``BleakClient(address,
disconnected_callback=..., timeout=...)``, ``connect``, ``start_notify(uuid, callback(sender,
data))``, ``stop_notify``, ``disconnect``; bleak >= 0.21) and has not run against a real strap
on the project machine, which has no Bluetooth.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import struct
import threading
import time
from dataclasses import dataclass

import numpy as np

from firmware_bridge.errors import (
    BadInputError,
    ConfigError,
    DeviceError,
    SourceEndedError,
    require,
)
from firmware_bridge.types import SensorChunk

log = logging.getLogger(__name__)

HEART_RATE_SERVICE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"

_HR_UINT16 = 0x01
_CONTACT_DETECTED = 0x02
_CONTACT_SUPPORTED = 0x04
_ENERGY_PRESENT = 0x08
_RR_PRESENT = 0x10
#: RR intervals are counted in 1/1024 s.
RR_UNITS_PER_S = 1024.0


@dataclass(frozen=True)
class HeartRateMeasurement:
    """One decoded Heart Rate Measurement notification.

    Attributes:
        hr_bpm: heart rate the strap reports, beats/min (int; 0 can mean no contact).
        contact_supported: whether the strap reports skin contact at all.
        contact_detected: skin contact, or None when ``contact_supported`` is False.
        energy_expended_kj: cumulative energy expended, kJ, or None when absent (straps send
            it only now and then).
        rr_s: RR intervals since the previous notification, oldest first, seconds (resolution
            1/1024 s); empty when none.
    """

    hr_bpm: int
    contact_supported: bool
    contact_detected: bool | None
    energy_expended_kj: int | None
    rr_s: tuple[float, ...]


def parse_heart_rate_measurement(data: bytes | bytearray | memoryview) -> HeartRateMeasurement:
    """Decode the GATT Heart Rate Measurement characteristic (UUID 0x2A37).

    Layout (little-endian): flags byte (bit 0: rate is uint16, else uint8; bit 1: contact
    detected; bit 2: contact status supported; bit 3: energy expended uint16 kJ present;
    bit 4: RR intervals present, uint16 in 1/1024 s each, to the end; bits 5-7 reserved and
    ignored), then the rate, the energy if present, the RR intervals if present.
    Source: Bluetooth SIG, Heart Rate Service Specification 1.0 (2011), section 3.1.1, and
    the GATT Specification Supplement.

    Args:
        data: the notification payload, bytes.

    Returns:
        The :class:`HeartRateMeasurement`.

    Raises:
        BadInputError: empty or too short for its flags, an odd number of RR bytes, or bytes
            left over that the flags do not account for.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadInputError(f"heart-rate measurement must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise BadInputError("heart-rate measurement is empty (expected a flags byte)")
    flags = raw[0]
    pos = 1
    hr_size = 2 if flags & _HR_UINT16 else 1
    need = pos + hr_size + (2 if flags & _ENERGY_PRESENT else 0)
    if len(raw) < need:
        raise BadInputError(
            f"heart-rate measurement of {len(raw)} bytes is too short for flags 0x{flags:02x} "
            f"(needs {need}): {raw.hex()}"
        )
    hr_bpm = struct.unpack_from("<H" if hr_size == 2 else "<B", raw, pos)[0]
    pos += hr_size
    energy = None
    if flags & _ENERGY_PRESENT:
        energy = struct.unpack_from("<H", raw, pos)[0]
        pos += 2
    rest = len(raw) - pos
    rr: tuple[float, ...] = ()
    if flags & _RR_PRESENT:
        if rest % 2:
            raise BadInputError(
                f"heart-rate measurement has {rest} RR bytes, not a whole number of uint16: "
                f"{raw.hex()}"
            )
        rr = tuple(v / RR_UNITS_PER_S for v in struct.unpack_from(f"<{rest // 2}H", raw, pos))
    elif rest:
        raise BadInputError(
            f"heart-rate measurement has {rest} byte(s) its flags 0x{flags:02x} do not "
            f"account for: {raw.hex()}"
        )
    supported = bool(flags & _CONTACT_SUPPORTED)
    detected = bool(flags & _CONTACT_DETECTED) if supported else None
    return HeartRateMeasurement(int(hr_bpm), supported, detected, energy, rr)


def heart_rate_chunks(
    m: HeartRateMeasurement, t_ns: int, source: str = "", seq: int = -1
) -> list[SensorChunk]:
    """Turn one measurement into SensorChunk records on the host clock.

    ``"hr"``: samples (1,) float64, bpm, ``fs_hz=1.0`` (straps notify about once a second;
    the Heart Rate Service fixes no rate), ``t0_ns=t_ns``; ``meta`` holds
    ``contact_detected`` and ``energy_expended_kj``.
    ``"rr"`` (only when the notification carries RR intervals): samples (K,) float64, s,
    ``fs_hz=0.0`` because beats are events, not regular samples. The last interval is taken
    to end at the notification (the strap sends right after a beat; the radio adds some tens
    of ms), so beat k ends at ``t_ns - sum(rr_s[k+1:])``: ``meta["beat_t_ns"]`` holds those
    times (int64, (K,)) and ``t0_ns`` the first.

    Args:
        m: the decoded measurement.
        t_ns: host monotonic time the notification arrived, ns.
        source: URI of the strap, e.g. ``"ble://AA:BB:CC:DD:EE:FF"``.
        seq: notification counter.

    Returns:
        ``[hr_chunk]`` or ``[hr_chunk, rr_chunk]``.
    """
    hr = SensorChunk(
        stream="hr",
        fs_hz=1.0,
        t0_ns=int(t_ns),
        samples=np.array([float(m.hr_bpm)]),
        units="bpm",
        seq=seq,
        source=source,
        meta={"contact_detected": m.contact_detected, "energy_expended_kj": m.energy_expended_kj},
    )
    if not m.rr_s:
        return [hr]
    rr = np.asarray(m.rr_s, dtype=np.float64)
    after_ns = np.rint(np.cumsum(rr[::-1]) * 1e9).astype(np.int64)[::-1]  # time from beat k's end
    beat_t_ns = int(t_ns) - np.concatenate([after_ns[1:], [0]])
    rr_chunk = SensorChunk(
        stream="rr",
        fs_hz=0.0,
        t0_ns=int(beat_t_ns[0]),
        samples=rr,
        units="s",
        seq=seq,
        source=source,
        meta={"beat_t_ns": beat_t_ns},
    )
    return [hr, rr_chunk]


_STOP = object()


class BleHeartRateSource:
    """Connect to a BLE heart-rate strap and iterate its SensorChunk records.

    bleak's asyncio loop runs in a background thread; notifications are stamped with
    ``time.monotonic_ns()`` on arrival, decoded, and queued. Iterating yields an ``"hr"`` chunk
    per notification, followed by an ``"rr"`` chunk when it carried RR intervals (see
    :func:`heart_rate_chunks`). A malformed notification is logged and skipped
    (``bad_notifications`` counts them).

    Args:
        address: the strap's Bluetooth address (``AA:BB:CC:DD:EE:FF``; a UUID on macOS).
        timeout_s: for connecting, and the longest wait for a notification, s.

    Raises:
        MissingDependencyError: bleak is not installed (extra ``sensors``).
        ConfigError: empty address or a timeout not > 0.
        DeviceError: the strap cannot be connected within ``timeout_s`` (or, while iterating,
            sends nothing for ``timeout_s``).
        SourceEndedError: while iterating, the strap disconnected.
    """

    def __init__(self, address: str, timeout_s: float = 20.0):
        self._bleak = require("bleak", "sensors", "BLE heart-rate straps")
        if not isinstance(address, str) or not address.strip():
            raise ConfigError(f"BLE address must be a non-empty string, got {address!r}")
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {timeout_s}")
        self.address = address.strip()
        self.timeout_s = float(timeout_s)
        self.source = f"ble://{self.address}"
        self.bad_notifications = 0
        self._seq = 0
        self._queue: queue.Queue = queue.Queue()
        self._connected = threading.Event()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_async: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"ble {self.address}", daemon=True)
        self._thread.start()
        # Wait for the connection or its failure, whichever comes first.
        deadline = time.monotonic() + self.timeout_s + 5.0
        while self._thread.is_alive() and time.monotonic() < deadline:
            if self._connected.wait(0.05):
                break
        if not self._connected.is_set():
            error = self._pending_error()
            self.close()
            raise error or DeviceError(
                f"cannot connect to heart-rate strap {self.address} within {self.timeout_s:g} s"
            )

    def _pending_error(self) -> Exception | None:
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return None
        return item if isinstance(item, Exception) else None

    # -- background thread -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._session())
        except Exception as exc:  # a foreign library at a hardware boundary: report, don't die
            if self._connected.is_set():
                error: Exception = SourceEndedError(
                    f"heart-rate strap {self.address}: {type(exc).__name__}: {exc}"
                )
            else:
                error = DeviceError(
                    f"cannot connect to heart-rate strap {self.address}: "
                    f"{type(exc).__name__}: {exc}"
                )
            error.__cause__ = exc
            self._queue.put(error)
        finally:
            self._queue.put(_STOP)

    async def _session(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_async = asyncio.Event()
        disconnected = asyncio.Event()
        if self._closed:
            return
        client = self._bleak.BleakClient(
            self.address,
            disconnected_callback=lambda _client: disconnected.set(),
            timeout=self.timeout_s,
        )
        await client.connect()
        try:
            await client.start_notify(HEART_RATE_MEASUREMENT_UUID, self._on_notify)
            self._connected.set()
            log.info("%s: connected, heart-rate notifications on", self.source)
            waiters = [
                asyncio.ensure_future(self._stop_async.wait()),
                asyncio.ensure_future(disconnected.wait()),
            ]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if disconnected.is_set() and not self._stop_async.is_set():
                self._queue.put(SourceEndedError(f"heart-rate strap {self.address} disconnected"))
        finally:
            if not disconnected.is_set():
                try:
                    await client.stop_notify(HEART_RATE_MEASUREMENT_UUID)
                finally:
                    await client.disconnect()

    def _on_notify(self, _sender: object, data: bytearray) -> None:
        t_ns = time.monotonic_ns()
        try:
            m = parse_heart_rate_measurement(data)
        except BadInputError as exc:
            self.bad_notifications += 1
            log.warning("%s: skipped a notification: %s", self.source, exc)
            return
        for chunk in heart_rate_chunks(m, t_ns, self.source, self._seq):
            self._queue.put(chunk)
        self._seq += 1

    # -- consumer side ---------------------------------------------------------------------
    def __iter__(self) -> "BleHeartRateSource":
        return self

    def __next__(self) -> SensorChunk:
        if self._closed:
            raise StopIteration
        try:
            item = self._queue.get(timeout=self.timeout_s)
        except queue.Empty:
            raise DeviceError(
                f"heart-rate strap {self.address} sent nothing for {self.timeout_s:g} s"
            ) from None
        if item is _STOP:
            self._closed = True
            raise StopIteration
        if isinstance(item, Exception):
            self._closed = True
            raise item
        return item

    def close(self) -> None:
        """Stop notifications, disconnect and end the thread. Idempotent."""
        self._closed = True
        loop, stop = self._loop, self._stop_async
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop finished between the check and the call
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=self.timeout_s)

    def __enter__(self) -> "BleHeartRateSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
