"""BLE heart-rate straps: the 0x2A37 decoder against hand-built notifications, and the source."""
from __future__ import annotations

import asyncio
import importlib.util
import itertools
import struct
import sys
import types

import numpy as np
import pytest

from firmware_bridge.errors import (
    BadInputError,
    DeviceError,
    MissingDependencyError,
    SourceEndedError,
)
from firmware_bridge.transports.ble import (
    HEART_RATE_MEASUREMENT_UUID,
    BleHeartRateSource,
    HeartRateMeasurement,
    heart_rate_chunks,
    parse_heart_rate_measurement,
)


def encode(hr: int, *, wide: bool, contact: int, energy: int | None, rr: list[int] | None) -> bytes:
    """Build a notification the way a strap does (contact: the two status bits, 0..3)."""
    flags = (0x01 if wide else 0) | (contact << 1) | (0x08 if energy is not None else 0)
    flags |= 0x10 if rr is not None else 0
    out = struct.pack("<BH" if wide else "<BB", flags, hr)
    if energy is not None:
        out += struct.pack("<H", energy)
    for value in rr or []:
        out += struct.pack("<H", value)
    return out


@pytest.mark.parametrize(
    "wide, contact, energy, n_rr",
    list(itertools.product([False, True], [0, 1, 2, 3], [None, 4321], [None, 0, 1, 4])),
)
def test_every_flag_combination(wide, contact, energy, n_rr):
    hr = 301 if wide else 200  # 200 > 127 checks unsigned uint8; 301 needs uint16
    rr_raw = None if n_rr is None else [700 + 97 * k for k in range(n_rr)]
    data = encode(hr, wide=wide, contact=contact, energy=energy, rr=rr_raw)
    m = parse_heart_rate_measurement(data)
    assert m.hr_bpm == hr
    # Status bits (bit 2 supported, bit 1 detected): 0 and 1 mean "not supported".
    assert m.contact_supported is (contact >= 2)
    assert m.contact_detected == {0: None, 1: None, 2: False, 3: True}[contact]
    assert m.energy_expended_kj == energy
    assert m.rr_s == tuple(v / 1024 for v in (rr_raw or []))


def test_known_notifications():
    # A Polar H10 style packet: RR present, 8-bit rate 75, one RR of 862/1024 s.
    m = parse_heart_rate_measurement(bytes.fromhex("104b5e03"))
    assert m == HeartRateMeasurement(75, False, None, None, (862 / 1024,))
    # uint16 rate 0x0106 = 262 bpm, contact supported and detected, reserved bits 5-7 set.
    m = parse_heart_rate_measurement(bytearray.fromhex("e70601"))
    assert (m.hr_bpm, m.contact_supported, m.contact_detected) == (262, True, True)
    assert parse_heart_rate_measurement(memoryview(b"\x10\x3c\x00\x04")).rr_s == (1.0,)


@pytest.mark.parametrize(
    "data, why",
    [
        (b"", "empty"),
        (b"\x01\x48", "too short"),  # uint16 rate needs two bytes
        (b"\x00", "too short"),
        (b"\x08\x48\x10", "too short"),  # energy needs two bytes
        (b"\x10\x48\x00\x04\x01", "RR bytes"),  # odd RR payload
        (b"\x00\x48\x00", "do not account"),  # trailing byte without a flag
        ("1048", "must be bytes"),
        (16, "must be bytes"),
    ],
)
def test_malformed_notifications(data, why):
    with pytest.raises(BadInputError, match=why):
        parse_heart_rate_measurement(data)


def test_chunks_put_beats_on_the_host_clock():
    m = HeartRateMeasurement(70, True, True, None, (0.8, 0.9))
    hr, rr = heart_rate_chunks(m, 10_000_000_000, source="ble://x", seq=4)
    assert (hr.stream, hr.units, hr.t0_ns) == ("hr", "bpm", 10_000_000_000)
    assert (hr.seq, hr.source) == (4, "ble://x")
    assert hr.samples.tolist() == [70.0] and hr.fs_hz > 0 and hr.meta["contact_detected"] is True
    assert (rr.stream, rr.units, rr.fs_hz) == ("rr", "s", 0.0)
    assert rr.samples.tolist() == [0.8, 0.9]
    # The last interval ends at the notification; the one before ends 0.9 s earlier.
    assert rr.meta["beat_t_ns"].tolist() == [9_100_000_000, 10_000_000_000]
    assert rr.t0_ns == 9_100_000_000
    assert len(heart_rate_chunks(HeartRateMeasurement(70, False, None, None, ()), 0)) == 1


@pytest.mark.skipif(importlib.util.find_spec("bleak") is not None, reason="bleak is installed here")
def test_missing_bleak_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"bleak.*emofuse\[sensors\]"):
        BleHeartRateSource("AA:BB:CC:DD:EE:FF")


def _fake_bleak(notifications: list[bytes], fail_connect: bool = False) -> types.ModuleType:
    """A stand-in with the parts of bleak's documented client API the source uses.

    bleak cannot run without a Bluetooth adapter; this checks the source's own thread,
    queue and error handling, not bleak.
    """

    class BleakClient:
        def __init__(self, address, disconnected_callback=None, timeout=10.0):
            self.address, self.timeout = address, timeout
            self._on_disconnect = disconnected_callback

        async def connect(self):
            if fail_connect:
                raise asyncio.TimeoutError("device not found")

        async def start_notify(self, uuid, callback):
            assert uuid == HEART_RATE_MEASUREMENT_UUID

            async def feed():
                for data in notifications:
                    await asyncio.sleep(0.005)
                    callback(None, bytearray(data))
                self._on_disconnect(self)  # the strap walks out of range

            self._task = asyncio.ensure_future(feed())

        async def stop_notify(self, uuid):
            pass

        async def disconnect(self):
            pass

    module = types.ModuleType("bleak")
    module.BleakClient = BleakClient
    return module


def test_source_streams_notifications_then_reports_the_disconnect(monkeypatch):
    packets = [b"\x06\x48", b"\x10", b"\x16\x49\x00\x04\x00\x03"]  # the middle one is malformed
    monkeypatch.setitem(sys.modules, "bleak", _fake_bleak(packets))
    chunks = []
    with BleHeartRateSource("AA:BB:CC:DD:EE:FF", timeout_s=2.0) as strap:
        with pytest.raises(SourceEndedError, match="disconnected"):
            for chunk in strap:
                chunks.append(chunk)
        assert strap.bad_notifications == 1
    assert [c.stream for c in chunks] == ["hr", "hr", "rr"]
    assert [c.samples[0] for c in chunks[:2]] == [72.0, 73.0]
    np.testing.assert_allclose(chunks[2].samples, [1.0, 0.75])
    assert chunks[0].t0_ns < chunks[1].t0_ns and chunks[1].seq == chunks[2].seq == 1
    assert chunks[0].source == "ble://AA:BB:CC:DD:EE:FF"


def test_source_connect_failure_is_a_device_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bleak", _fake_bleak([], fail_connect=True))
    with pytest.raises(DeviceError, match="cannot connect.*AA:BB.*device not found"):
        BleHeartRateSource("AA:BB:CC:DD:EE:FF", timeout_s=1.0)
