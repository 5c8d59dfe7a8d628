"""The wire protocol's pieces: CRC parameters, COBS, message round trips, validation, docs."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from helpers import REPO
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from firmware_bridge.errors import BadInputError
from firmware_bridge.protocol import (
    ALL_STREAMS,
    MAX_ENCODED_LEN,
    MAX_FRAME_LEN,
    MAX_PAYLOAD_LEN,
    MAX_SAMPLE_BYTES,
    STREAM_IDS,
    STREAMS,
    Ack,
    Command,
    Decoder,
    DeviceInfo,
    FrameError,
    Opcode,
    SamplesMessage,
    Status,
    StreamInfo,
    cobs_decode,
    cobs_encode,
    decode,
    encode,
    encode_payload,
    max_encoded_len,
    stream_id,
    stream_name,
)
from firmware_bridge.protocol.cobs import cobs_decode_or_none
from firmware_bridge.protocol.crc import CRC32_CHECK, crc32, crc32_bitwise
from firmware_bridge.protocol.messages import HEADER_LEN, _CRC, _HEADER

# ---------------------------------------------------------------------------------------------
# Strategies: every message type over its full field ranges (seq wrap, u64 time extremes,
# all sample types, 1-255 channels, blocks up to the largest that fits in one packet).

U16 = st.integers(0, 0xFFFF)
U64 = st.integers(0, (1 << 64) - 1)
ITEM = {"int16": 2, "int32": 4, "float32": 4}


@st.composite
def samples_messages(draw) -> SamplesMessage:
    dtype = draw(st.sampled_from(sorted(ITEM)))
    channels = draw(st.sampled_from([1, 1, 2, 3, 8, 255]))
    max_n = MAX_SAMPLE_BYTES // (channels * ITEM[dtype])
    n = draw(st.integers(0, min(max_n, 40)) | st.just(max_n))
    arr = draw(hnp.arrays(np.dtype(dtype), (n, channels)))
    return SamplesMessage(draw(st.integers(0, 255)), draw(U16), draw(U64), dtype, channels, arr)


def _short_text(max_bytes: int):
    return st.text(max_size=max_bytes).filter(lambda s: len(s.encode("utf-8")) <= max_bytes)


FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def stream_infos(draw, sid: int) -> StreamInfo:
    return StreamInfo(
        sid,
        draw(st.integers(0, (1 << 32) - 1)),
        draw(_short_text(16)),
        draw(FLOAT32),
        draw(FLOAT32),
        draw(st.integers(1, 255)),
        draw(st.sampled_from(sorted(ITEM))),
    )


@st.composite
def device_infos(draw) -> DeviceInfo:
    ids = draw(st.lists(st.integers(0, 255), unique=True, max_size=8))
    streams = tuple(draw(stream_infos(sid)) for sid in ids)
    return DeviceInfo(
        (draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(st.integers(0, 255))),
        draw(st.integers(0, (1 << 32) - 1)),
        draw(_short_text(32)),
        streams,
        draw(U16),
        draw(U64),
    )


commands = st.builds(
    Command, st.integers(0, 255), st.integers(0, 255), U16, st.integers(0, (1 << 32) - 1), U64
)
acks = st.builds(
    Ack, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), U16, U64, _short_text(64)
)
messages = st.one_of(samples_messages(), device_infos(), commands, acks)


# ---------------------------------------------------------------------------------------------
# CRC


def test_crc_check_value_matches_the_stated_parameters():
    assert crc32(b"123456789") == CRC32_CHECK == 0xCBF43926
    assert crc32_bitwise(b"123456789") == CRC32_CHECK


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=16))
def test_crc_fast_equals_bitwise_and_continues(a, b):
    assert crc32(a + b) == crc32_bitwise(a + b)
    assert crc32(b, crc32(a)) == crc32(a + b)


# ---------------------------------------------------------------------------------------------
# COBS


@pytest.mark.parametrize(
    "raw, encoded",
    [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
        (bytes(range(0, 256)), b"\x01\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    ],
)
def test_cobs_known_vectors(raw, encoded):
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_cobs_decoder_accepts_the_variant_without_a_final_code():
    run = bytes(range(1, 255))
    assert cobs_decode(b"\xff" + run) == run


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=1200) | st.lists(st.sampled_from([b"\x00", b"\x01" * 253, b"\x07" * 254]), max_size=8).map(b"".join))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(raw):
    enc = cobs_encode(raw)
    assert 0 not in enc
    assert len(raw) + 1 <= len(enc) <= max_encoded_len(len(raw))
    assert cobs_decode(enc) == raw


@pytest.mark.parametrize("bad", [b"", b"\x05\x11\x22", b"\x03\x11\x00\x22", b"\x02\x11\x09"])
def test_cobs_rejects_invalid_frames(bad):
    with pytest.raises(BadInputError):
        cobs_decode(bad)


def test_cobs_decode_or_none_is_total():
    assert cobs_decode_or_none(b"") is None
    assert cobs_decode_or_none(b"\x00") is None
    assert cobs_decode_or_none(b"\x04\x01") is None


# ---------------------------------------------------------------------------------------------
# Round trips


@settings(max_examples=250, deadline=None)
@given(messages)
def test_every_message_round_trips(msg):
    packet = encode(msg)
    assert packet.endswith(b"\x00") and packet.index(0) == len(packet) - 1
    assert len(packet) <= MAX_FRAME_LEN
    assert decode(packet) == msg
    assert decode(packet[:-1]) == msg
    assert Decoder().feed(packet) == [msg]


@settings(max_examples=40, deadline=None)
@given(samples_messages())
def test_samples_decode_to_readonly_native_arrays_of_the_same_bits(msg):
    out = decode(encode(msg))
    assert out.samples.dtype == np.dtype(msg.dtype) and out.samples.dtype.isnative
    assert out.samples.shape == (msg.n_samples, msg.channels)
    assert not out.samples.flags.writeable
    assert out.samples.tobytes() == msg.samples.tobytes()


def test_samples_payload_layout_is_interleaved_little_endian():
    accel = np.array([[1, -2, 3], [4, 5, -32768]], dtype=np.int16)
    payload = encode_payload(SamplesMessage(7, 0x1234, 0x0102030405060708, "int16", 3, accel))
    assert payload[:HEADER_LEN] == bytes.fromhex("01 01 07 34 12 08 07 06 05 04 03 02 01")
    assert payload[HEADER_LEN:HEADER_LEN + 4] == bytes([1, 3, 2, 0])
    assert np.frombuffer(payload[HEADER_LEN + 4:-4], "<i2").tolist() == [1, -2, 3, 4, 5, -32768]
    assert _CRC.unpack(payload[-4:])[0] == crc32(payload[:-4])


def test_extremes_round_trip():
    edge = [
        SamplesMessage(255, 65535, (1 << 64) - 1, "int32", 1, np.array([-(2**31), 2**31 - 1], np.int32)),
        SamplesMessage(0, 0, 0, "float32", 2, np.array([[np.nan, -0.0], [np.inf, -np.inf]], np.float32)),
        SamplesMessage(1, 1, 1, "int16", 1, np.zeros((MAX_SAMPLE_BYTES // 2, 1), np.int16)),
        SamplesMessage(1, 2, 2, "int16", 1, np.zeros((0, 1), np.int16)),
        Command(0xEE, 0, 0, (1 << 32) - 1, (1 << 64) - 1),
        Ack(0xEE, 0xEE, ALL_STREAMS, 65535, 0, "é" * 32),
    ]
    for msg in edge:
        assert decode(encode(msg)) == msg


def test_largest_device_info_fits_and_one_more_stream_does_not():
    streams = [StreamInfo(i, 1000, "x" * 16, 1.0, 0.0, 1, "int16") for i in range(30)]
    info = DeviceInfo((1, 0, 0), 1, "n" * 32, tuple(streams))
    assert len(encode_payload(info)) <= MAX_PAYLOAD_LEN
    assert decode(encode(info)) == info
    with pytest.raises(BadInputError, match="at most 1024"):
        DeviceInfo((1, 0, 0), 1, "n" * 32, tuple(streams) + (StreamInfo(200, 1, "x" * 16),))


def test_unknown_codes_are_kept_as_ints_known_ones_as_enums():
    assert decode(encode(Command(Opcode.START))).opcode is Opcode.START
    ack = decode(encode(Ack(0x42, 0x99, 1, 3)))
    assert ack.opcode == 0x42 and not isinstance(ack.opcode, Opcode)
    assert ack.status == 0x99 and not isinstance(ack.status, Status) and not ack.ok
    assert Ack(Opcode.STOP, Status.OK, 1, 3).ok


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "make",
    [
        lambda: SamplesMessage(1, 65536, 0, "int16", 1, np.zeros(3, np.int16)),
        lambda: SamplesMessage(1, 0, -1, "int16", 1, np.zeros(3, np.int16)),
        lambda: SamplesMessage(1, 0, 1 << 64, "int16", 1, np.zeros(3, np.int16)),
        lambda: SamplesMessage(256, 0, 0, "int16", 1, np.zeros(3, np.int16)),
        lambda: SamplesMessage(1, 0, 0, "int16", 1, np.zeros(3, np.float64)),
        lambda: SamplesMessage(1, 0, 0, "uint8", 1, np.zeros(3, np.uint8)),
        lambda: SamplesMessage(1, 0, 0, "int16", 2, np.zeros(4, np.int16)),
        lambda: SamplesMessage(1, 0, 0, "int16", 3, np.zeros((4, 2), np.int16)),
        lambda: SamplesMessage(1, 0, 0, "int16", 0, np.zeros((4, 0), np.int16)),
        lambda: SamplesMessage(1, 0, 0, "int16", 1, [1, 2, 3]),
        lambda: SamplesMessage(1, 0, 0, "int16", 1, np.zeros(MAX_SAMPLE_BYTES // 2 + 1, np.int16)),
        lambda: SamplesMessage(1, 0.5, 0, "int16", 1, np.zeros(3, np.int16)),
        lambda: StreamInfo(1, 1000, "mV", gain=math.nan),
        lambda: StreamInfo(1, 1000, "mV", offset=1e39),
        lambda: StreamInfo(1, 1000, "x" * 17),
        lambda: StreamInfo(1, -1, "mV"),
        lambda: StreamInfo(1, 1000, "mV", channels=0),
        lambda: StreamInfo(1, 1000, "mV", dtype="int8"),
        lambda: DeviceInfo((1, 2), 1, "dev", ()),
        lambda: DeviceInfo((1, 2, 3), 1, "d" * 33, ()),
        lambda: DeviceInfo((1, 2, 3), 1, "dev", (StreamInfo(1, 1, "a"), StreamInfo(1, 2, "b"))),
        lambda: Command(256),
        lambda: Command(Opcode.SET_RATE, rate_mhz=1 << 32),
        lambda: Ack(1, 0, 1, 1, detail="d" * 65),
        lambda: encode("not a message"),
        lambda: decode("not bytes"),
    ],
)
def test_bad_fields_raise_bad_input(make):
    with pytest.raises(BadInputError):
        make()


def test_samples_are_copied_so_the_caller_cannot_change_a_message():
    arr = np.arange(6, dtype=np.int16)
    msg = SamplesMessage(1, 0, 0, "int16", 1, arr)
    arr[0] = 99
    assert msg.samples[0, 0] == 0
    with pytest.raises(ValueError):
        msg.samples[0, 0] = 5


def test_gain_and_offset_are_rounded_to_float32_so_round_trips_are_exact():
    info = StreamInfo(1, 250_000, "mV", gain=0.1, offset=1 / 3)
    assert info.gain == float(np.float32(0.1)) and info.offset == float(np.float32(1 / 3))
    assert decode(encode(DeviceInfo((0, 1, 0), 7, "d", (info,)))).streams == (info,)


def test_decode_explains_what_is_wrong():
    good = encode_payload(Command(Opcode.START, seq=9))
    bad_crc = bytearray(good)
    bad_crc[13] ^= 0x40
    with pytest.raises(FrameError, match="CRC") as err:
        decode(cobs_encode(bytes(bad_crc)) + b"\x00")
    assert err.value.kind == "crc"

    def framed(payload: bytes) -> bytes:
        return cobs_encode(payload + _CRC.pack(crc32(payload)))

    with pytest.raises(FrameError, match="newer") as err:
        decode(framed(b"\x02" + good[1:-4]))
    assert err.value.kind == "version"
    for payload, reason in [
        (b"\x00" + good[1:-4], "version 0"),
        (good[:2] + b"\x7f" + good[3:-4], None),  # stream id is free-form: must decode
        (bytes([1, 0x55]) + good[2:-4], "unknown message type"),
        (good[:-5], "command payload must be 22"),
        (_HEADER.pack(1, 1, 1, 0, 0) + bytes([1, 1, 3, 0, 0, 0]), "do not fill"),
        (_HEADER.pack(1, 1, 1, 0, 0) + bytes([9, 1, 0, 0]), "unknown sample type"),
        (_HEADER.pack(1, 3, 1, 0, 0) + bytes([1, 0, 5, 0x41]), "past the end"),
        (_HEADER.pack(1, 3, 1, 0, 0) + bytes([1, 0, 1, 0xFF]), "not UTF-8"),
        (_HEADER.pack(1, 2, 0, 0, 0) + bytes([1, 2, 3, 0, 0, 0, 0, 0, 0, 0x2A]), "stray"),
        (_HEADER.pack(1, 2, 0, 0, 0) + bytes([1, 2, 3, 0, 0, 0, 0, 0, 1]), "inside a stream record"),
        (_HEADER.pack(1, 2, 5, 0, 0) + bytes([1, 2, 3, 0, 0, 0, 0, 0, 0]), "stream id 5"),
    ]:
        if reason is None:
            assert decode(framed(payload)).stream_id == 0x7F
            continue
        with pytest.raises(FrameError, match=reason) as err:
            decode(framed(payload))
        assert err.value.kind == "malformed"
    with pytest.raises(FrameError, match="more than one frame"):
        decode(encode(Command(1)) + encode(Command(2)))
    with pytest.raises(FrameError, match="longer than"):
        decode(b"\x01" * (MAX_ENCODED_LEN + 1))


# ---------------------------------------------------------------------------------------------
# Registry and scaling


def test_stream_registry_names_units_and_ids():
    expected = {
        "ecg": "mV", "ppg_red": "a.u.", "ppg_ir": "a.u.", "eda": "uS",
        "skin_temp": "degC", "resp": "a.u.", "accel": "g",
    }
    assert {spec.name: spec.units for spec in STREAMS.values()} == expected
    for name in expected:
        assert stream_name(stream_id(name)) == name
        assert STREAMS[STREAM_IDS[name]].name == name
    assert STREAMS[stream_id("accel")].channels == 3
    assert stream_name(0x80) == "stream_0x80"
    with pytest.raises(BadInputError, match="unknown stream"):
        stream_id("heart")


def test_scaling_to_physical_units():
    info = StreamInfo(stream_id("skin_temp"), 1000, "degC", gain=0.0078125, offset=-10.0)
    raw = np.array([[0], [4672], [-1280]], np.int16)
    np.testing.assert_array_equal(info.to_physical(raw), [[-10.0], [26.5], [-20.0]])
    assert info.fs_hz == 1.0 and info.name == "skin_temp"
    dev = DeviceInfo((1, 0, 0), 1, "d", (info,))
    assert dev.stream("skin_temp") is info and dev.stream(5) is info
    with pytest.raises(BadInputError):
        dev.stream("ecg")


# ---------------------------------------------------------------------------------------------
# The worked examples of docs/protocol.md are what the code produces.


def _doc_example(name: str) -> bytes:
    text = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    m = re.search(rf"<!-- worked-example: {name} -->\s*```\s*\n([0-9a-f ]+)\n```", text)
    assert m, f"worked example {name!r} not found in docs/protocol.md"
    return bytes.fromhex(m.group(1))


def test_docs_worked_examples_match_the_encoder():
    samples = SamplesMessage(1, 7, 1_000_000, "int16", 1, np.array([100, -2, 0], np.int16))
    assert _doc_example("samples") == encode(samples)
    assert _doc_example("command") == encode(Command(Opcode.SET_RATE, 1, 5, 500_000, 0))
    assert _doc_example("ack") == encode(Ack(Opcode.SET_RATE, Status.OK, 1, 5, 2_000_000))


def _ends_in_a_full_run(raw: bytes) -> bool:
    last = raw.split(b"\x00")[-1]
    return len(last) > 0 and len(last) % 254 == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200) | st.lists(st.sampled_from([b"\x00", b"\x01" * 253, b"\x07" * 254, b"\x09"]),
                                           max_size=8).map(b"".join))
def test_cobs_matches_the_cobs_package(raw):
    # Our COBS must match the firmware's C header byte for byte, so it stays ours; the `cobs`
    # package (dev extra) is the independent reference. Decoders agree both ways; encodings are
    # equal except after a final run of a multiple of 254 bytes, where ours (like the C header)
    # writes the closing code 0x01 that the package leaves out (both decoders accept either).
    cobs = pytest.importorskip("cobs.cobs", reason="the cobs package (dev extra) is the reference")
    ours, theirs = cobs_encode(raw), cobs.encode(raw)
    assert cobs.decode(ours) == raw and cobs_decode(theirs) == raw
    if _ends_in_a_full_run(raw):
        assert ours == theirs + b"\x01"
    else:
        assert ours == theirs
