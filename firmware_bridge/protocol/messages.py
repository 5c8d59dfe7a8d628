"""Messages of the emofuse sensor wire protocol, and their encoding to framed packets.

The byte layout is specified in ``docs/protocol.md`` (the document a firmware author reads);
this module and ``firmware_bridge/firmware/emofuse_proto.h`` implement it. In short, a packet
on the wire is ``COBS(payload) + b"\\x00"`` (Cheshire & Baker 1999), and a payload is a 13-byte
little-endian header (version, type, stream id, uint16 sequence number, uint64 device time in
microseconds), a body that depends on the type, and a CRC-32/ISO-HDLC of everything before it.

Length (about 700 lines) on purpose: the message records, their encoders and their parsers are
one byte layout, message type by message type, as docs/protocol.md and emofuse_proto.h set it
out; split into encode and decode files, each layout would be read in two places.
"""
from __future__ import annotations

import math
import operator
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Union

import numpy as np

from firmware_bridge.errors import BadInputError
from firmware_bridge.protocol.cobs import cobs_decode_or_none, cobs_encode, max_encoded_len
from firmware_bridge.protocol.crc import crc32

PROTOCOL_VERSION = 1
HEADER_LEN = 13
CRC_LEN = 4
MIN_PAYLOAD_LEN = HEADER_LEN + CRC_LEN
MAX_PAYLOAD_LEN = 1024
MAX_ENCODED_LEN = max_encoded_len(MAX_PAYLOAD_LEN)
MAX_FRAME_LEN = MAX_ENCODED_LEN + 1
SAMPLES_HEADER_LEN = 4
MAX_SAMPLE_BYTES = MAX_PAYLOAD_LEN - MIN_PAYLOAD_LEN - SAMPLES_HEADER_LEN
COMMAND_BODY_LEN = 5
MAX_NAME_BYTES = 32
MAX_UNITS_BYTES = 16
MAX_DETAIL_BYTES = 64

NO_STREAM = 0x00
ALL_STREAMS = 0xFF

_HEADER = struct.Struct("<BBBHQ")
_SAMPLES_HEAD = struct.Struct("<BBH")
_INFO_HEAD = struct.Struct("<BBBIB")
_STREAM_INFO = struct.Struct("<BBBIffB")
_COMMAND = struct.Struct("<BI")
_ACK_HEAD = struct.Struct("<BBB")
_CRC = struct.Struct("<I")


class MsgType(IntEnum):
    """Message type byte. The high bit marks host-to-device messages."""

    SAMPLES = 0x01
    DEVICE_INFO = 0x02
    ACK = 0x03
    COMMAND = 0x81


class Opcode(IntEnum):
    """Host-to-device command codes."""

    START = 0x01
    STOP = 0x02
    SET_RATE = 0x03
    GET_INFO = 0x04


class Status(IntEnum):
    """Result codes in an :class:`Ack`."""

    OK = 0
    UNKNOWN_OPCODE = 1
    BAD_STREAM = 2
    BAD_RATE = 3
    BUSY = 4
    FAILED = 5


#: Sample type name -> wire code.
SAMPLE_TYPES: dict[str, int] = {"int16": 1, "int32": 2, "float32": 3}
_WIRE_DTYPES: dict[int, np.dtype] = {1: np.dtype("<i2"), 2: np.dtype("<i4"), 3: np.dtype("<f4")}
_TYPE_NAMES: dict[int, str] = {code: name for name, code in SAMPLE_TYPES.items()}


@dataclass(frozen=True)
class StreamSpec:
    """A standard stream: its wire id, name, default units and channel count."""

    stream_id: int
    name: str
    units: str
    channels: int = 1


#: Registry of the standard streams, wire id -> spec. Ids 0x08-0x7F are reserved for future
#: standard streams, 0x80-0xFE are free for vendor streams, 0x00 and 0xFF are not streams.
STREAMS: dict[int, StreamSpec] = {
    spec.stream_id: spec
    for spec in (
        StreamSpec(0x01, "ecg", "mV"),
        StreamSpec(0x02, "ppg_red", "a.u."),
        StreamSpec(0x03, "ppg_ir", "a.u."),
        StreamSpec(0x04, "eda", "uS"),
        StreamSpec(0x05, "skin_temp", "degC"),
        StreamSpec(0x06, "resp", "a.u."),
        StreamSpec(0x07, "accel", "g", channels=3),
    )
}
#: Stream name -> wire id, the inverse of :data:`STREAMS`.
STREAM_IDS: dict[str, int] = {spec.name: sid for sid, spec in STREAMS.items()}


def stream_id(name: str) -> int:
    """Wire id of a standard stream.

    Args:
        name: a name from :data:`STREAMS`, e.g. ``"ecg"``.

    Returns:
        The stream id, an int in [1, 7].

    Raises:
        BadInputError: for a name that is not a standard stream.
    """
    try:
        return STREAM_IDS[name]
    except KeyError:
        raise BadInputError(f"unknown stream name {name!r}; known: {', '.join(STREAM_IDS)}") from None


def stream_name(sid: int) -> str:
    """Name of a stream id: the registry name, or ``"stream_0xNN"`` for a vendor/reserved id.

    Args:
        sid: stream id in [0, 255].

    Returns:
        The stream name.
    """
    spec = STREAMS.get(sid)
    return spec.name if spec is not None else f"stream_0x{sid:02x}"


def _uint(name: str, value: int, bits: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise BadInputError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not 0 <= v < (1 << bits):
        raise BadInputError(f"{name} must be in [0, {(1 << bits) - 1}], got {v}")
    return v


def _text(name: str, value: str, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise BadInputError(f"{name} must be a str, got {type(value).__name__}")
    if len(value.encode("utf-8")) > max_bytes:
        raise BadInputError(f"{name} {value!r} is longer than {max_bytes} UTF-8 bytes")
    return value


def _float32(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BadInputError(f"{name} must be a number, got {value!r}") from None
    f32 = float(np.float32(v)) if math.isfinite(v) and abs(v) <= 3.4028234663852886e38 else math.inf
    if not math.isfinite(f32):
        raise BadInputError(f"{name} must be a finite float32, got {v}")
    return f32


def _known(enum: type[IntEnum], value: int) -> int:
    """The enum member for a known code, the plain int for a code from a newer peer."""
    return enum(value) if value in enum._value2member_map_ else value


@dataclass(frozen=True, eq=False)
class SamplesMessage:
    """A block of raw samples from one stream (device to host).

    Attributes:
        stream_id: stream id in [0, 255] (see :data:`STREAMS`).
        seq: per-stream sequence number, uint16, wraps 65535 -> 0.
        t_us: device time of the *first* sample of the block, us since device boot, uint64.
        dtype: ``"int16"``, ``"int32"`` or ``"float32"``: the raw sample type.
        channels: channels per sample instant, 1-255 (3 for the accelerometer).
        samples: raw values, shape (n, channels), of ``dtype``; a 1-D array is accepted when
            ``channels == 1``. Stored read-only (copied when the caller's array is writable).
            Physical value = raw * gain + offset, from the stream's :class:`StreamInfo`.

    Raises:
        BadInputError: on a field out of range, a dtype/shape mismatch, or more than
            :data:`MAX_SAMPLE_BYTES` bytes of samples.
    """

    stream_id: int
    seq: int
    t_us: int
    dtype: str
    channels: int
    samples: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "stream_id", _uint("stream_id", self.stream_id, 8))
        object.__setattr__(self, "seq", _uint("seq", self.seq, 16))
        object.__setattr__(self, "t_us", _uint("t_us", self.t_us, 64))
        if self.dtype not in SAMPLE_TYPES:
            raise BadInputError(f"dtype must be one of {sorted(SAMPLE_TYPES)}, got {self.dtype!r}")
        channels = _uint("channels", self.channels, 8)
        if channels == 0:
            raise BadInputError("channels must be >= 1")
        object.__setattr__(self, "channels", channels)
        arr = self.samples
        if not isinstance(arr, np.ndarray):
            raise BadInputError(f"samples must be a numpy array, got {type(arr).__name__}")
        if arr.dtype != np.dtype(self.dtype):
            raise BadInputError(f"samples have dtype {arr.dtype}, message says {self.dtype}")
        if arr.ndim == 1 and channels == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != channels:
            raise BadInputError(f"samples must have shape (n, {channels}), got {arr.shape}")
        if arr.nbytes > MAX_SAMPLE_BYTES or arr.shape[0] > 0xFFFF:
            raise BadInputError(
                f"{arr.shape[0]}x{channels} {self.dtype} samples take {arr.nbytes} bytes; "
                f"one message holds at most {MAX_SAMPLE_BYTES}"
            )
        if arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.array(arr, order="C", copy=True)
            arr.flags.writeable = False
        object.__setattr__(self, "samples", arr)

    @property
    def n_samples(self) -> int:
        """Sample instants in the block (rows of ``samples``)."""
        return int(self.samples.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SamplesMessage):
            return NotImplemented
        # Bytes, not values: float32 NaN payloads must survive a round trip bit for bit.
        return (
            (self.stream_id, self.seq, self.t_us, self.dtype, self.channels, self.samples.shape)
            == (other.stream_id, other.seq, other.t_us, other.dtype, other.channels, other.samples.shape)
            and self.samples.tobytes() == other.samples.tobytes()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"SamplesMessage(stream_id={self.stream_id}, seq={self.seq}, t_us={self.t_us}, "
            f"dtype={self.dtype!r}, channels={self.channels}, n_samples={self.n_samples})"
        )


@dataclass(frozen=True)
class StreamInfo:
    """How one stream of a device is sampled and scaled, as announced in :class:`DeviceInfo`.

    Attributes:
        stream_id: stream id in [0, 255].
        rate_mhz: nominal sample rate in millihertz, uint32 (250 Hz -> 250000).
        units: physical units after scaling, UTF-8, at most 16 bytes, e.g. ``"mV"``.
        gain: physical units per raw count; stored as float32 (rounded on construction).
        offset: physical value of a raw 0, in ``units``; stored as float32.
        channels: channels per sample instant, 1-255.
        dtype: raw sample type, ``"int16"``, ``"int32"`` or ``"float32"``.

    Raises:
        BadInputError: on a field out of range or a non-finite gain/offset.
    """

    stream_id: int
    rate_mhz: int
    units: str
    gain: float = 1.0
    offset: float = 0.0
    channels: int = 1
    dtype: str = "int16"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stream_id", _uint("stream_id", self.stream_id, 8))
        object.__setattr__(self, "rate_mhz", _uint("rate_mhz", self.rate_mhz, 32))
        _text("units", self.units, MAX_UNITS_BYTES)
        object.__setattr__(self, "gain", _float32("gain", self.gain))
        object.__setattr__(self, "offset", _float32("offset", self.offset))
        channels = _uint("channels", self.channels, 8)
        if channels == 0:
            raise BadInputError("channels must be >= 1")
        object.__setattr__(self, "channels", channels)
        if self.dtype not in SAMPLE_TYPES:
            raise BadInputError(f"dtype must be one of {sorted(SAMPLE_TYPES)}, got {self.dtype!r}")

    @property
    def fs_hz(self) -> float:
        """Nominal sample rate, Hz."""
        return self.rate_mhz / 1000.0

    @property
    def name(self) -> str:
        """Stream name from :data:`STREAMS` (``"stream_0xNN"`` for a vendor id)."""
        return stream_name(self.stream_id)

    def to_physical(self, raw: np.ndarray) -> np.ndarray:
        """Scale raw samples to physical units: ``raw * gain + offset``.

        Args:
            raw: raw samples of any shape and numeric dtype (e.g. ``SamplesMessage.samples``).

        Returns:
            float64 array of the same shape, in ``units``.
        """
        return np.asarray(raw, dtype=np.float64) * self.gain + self.offset


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is and how each of its streams is sampled (device to host).

    Sent by the device after boot, on :attr:`Opcode.GET_INFO`, and after a successful
    :attr:`Opcode.SET_RATE`.

    Attributes:
        firmware_version: (major, minor, patch), each in [0, 255].
        device_id: device serial number, uint32.
        name: device model name, UTF-8, at most 32 bytes.
        streams: one :class:`StreamInfo` per stream the device offers, distinct ids.
        seq: header sequence number (a counter of info messages), uint16.
        t_us: device time when sent, us since boot, uint64.

    Raises:
        BadInputError: on a field out of range, repeated stream ids, or a message larger than
            :data:`MAX_PAYLOAD_LEN`.
    """

    firmware_version: tuple[int, int, int]
    device_id: int
    name: str
    streams: tuple[StreamInfo, ...]
    seq: int = 0
    t_us: int = 0

    def __post_init__(self) -> None:
        version = tuple(self.firmware_version)
        if len(version) != 3:
            raise BadInputError(f"firmware_version must be (major, minor, patch), got {version!r}")
        object.__setattr__(self, "firmware_version", tuple(_uint("firmware_version", v, 8) for v in version))
        object.__setattr__(self, "device_id", _uint("device_id", self.device_id, 32))
        _text("name", self.name, MAX_NAME_BYTES)
        streams = tuple(self.streams)
        if not all(isinstance(s, StreamInfo) for s in streams):
            raise BadInputError("streams must be StreamInfo records")
        ids = [s.stream_id for s in streams]
        if len(set(ids)) != len(ids):
            raise BadInputError(f"stream ids repeat in device info: {ids}")
        if len(streams) > 255:
            raise BadInputError(f"at most 255 streams, got {len(streams)}")
        object.__setattr__(self, "streams", streams)
        object.__setattr__(self, "seq", _uint("seq", self.seq, 16))
        object.__setattr__(self, "t_us", _uint("t_us", self.t_us, 64))
        size = MIN_PAYLOAD_LEN + _INFO_HEAD.size + len(self.name.encode("utf-8")) + 1 + sum(
            _STREAM_INFO.size + len(s.units.encode("utf-8")) for s in streams
        )
        if size > MAX_PAYLOAD_LEN:
            raise BadInputError(f"device info needs {size} bytes; a payload holds at most {MAX_PAYLOAD_LEN}")

    def stream(self, key: int | str) -> StreamInfo:
        """The :class:`StreamInfo` of a stream, by id or by name.

        Raises:
            BadInputError: when the device does not announce that stream.
        """
        sid = stream_id(key) if isinstance(key, str) else key
        for s in self.streams:
            if s.stream_id == sid:
                return s
        raise BadInputError(f"device {self.name!r} announces no stream {key!r}")


@dataclass(frozen=True)
class Command:
    """A host-to-device command.

    Attributes:
        opcode: an :class:`Opcode` (a plain int in [0, 255] is kept for codes this host does
            not know, so a device can answer :attr:`Status.UNKNOWN_OPCODE`).
        stream_id: target stream, or :data:`ALL_STREAMS` (0xFF) for START/STOP of all;
            :data:`NO_STREAM` for GET_INFO.
        seq: host command counter, uint16; the device's :class:`Ack` repeats it.
        rate_mhz: new rate for SET_RATE, mHz, uint32; 0 for other opcodes.
        t_us: host time when sent, us, uint64 (informative; 0 is fine).

    Raises:
        BadInputError: on a field out of range.
    """

    opcode: int
    stream_id: int = ALL_STREAMS
    seq: int = 0
    rate_mhz: int = 0
    t_us: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "opcode", _known(Opcode, _uint("opcode", self.opcode, 8)))
        object.__setattr__(self, "stream_id", _uint("stream_id", self.stream_id, 8))
        object.__setattr__(self, "seq", _uint("seq", self.seq, 16))
        object.__setattr__(self, "rate_mhz", _uint("rate_mhz", self.rate_mhz, 32))
        object.__setattr__(self, "t_us", _uint("t_us", self.t_us, 64))


@dataclass(frozen=True)
class Ack:
    """The device's answer to a :class:`Command`.

    Attributes:
        opcode: the command's opcode, echoed.
        status: a :class:`Status` (a plain int for codes this host does not know).
        stream_id: the command's stream id, echoed.
        seq: the command's seq, echoed, so the host can pair answers with commands.
        t_us: device time when the command was handled, us since boot, uint64.
        detail: optional human-readable reason, UTF-8, at most 64 bytes.

    Raises:
        BadInputError: on a field out of range.
    """

    opcode: int
    status: int
    stream_id: int
    seq: int
    t_us: int = 0
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "opcode", _known(Opcode, _uint("opcode", self.opcode, 8)))
        object.__setattr__(self, "status", _known(Status, _uint("status", self.status, 8)))
        object.__setattr__(self, "stream_id", _uint("stream_id", self.stream_id, 8))
        object.__setattr__(self, "seq", _uint("seq", self.seq, 16))
        object.__setattr__(self, "t_us", _uint("t_us", self.t_us, 64))
        _text("detail", self.detail, MAX_DETAIL_BYTES)

    @property
    def ok(self) -> bool:
        """True when the command succeeded."""
        return self.status == Status.OK


Message = Union[SamplesMessage, DeviceInfo, Command, Ack]


# ---------------------------------------------------------------------------------------------
# Encoding


def _body_samples(msg: SamplesMessage) -> tuple[int, int, int, bytes]:
    wire = msg.samples.astype(_WIRE_DTYPES[SAMPLE_TYPES[msg.dtype]], copy=False)
    body = _SAMPLES_HEAD.pack(SAMPLE_TYPES[msg.dtype], msg.channels, msg.n_samples) + wire.tobytes()
    return MsgType.SAMPLES, msg.stream_id, msg.seq, body


def _body_info(msg: DeviceInfo) -> tuple[int, int, int, bytes]:
    name = msg.name.encode("utf-8")
    parts = [_INFO_HEAD.pack(*msg.firmware_version, msg.device_id, len(name)), name, bytes([len(msg.streams)])]
    for s in msg.streams:
        units = s.units.encode("utf-8")
        parts.append(
            _STREAM_INFO.pack(s.stream_id, SAMPLE_TYPES[s.dtype], s.channels, s.rate_mhz, s.gain, s.offset, len(units))
        )
        parts.append(units)
    return MsgType.DEVICE_INFO, NO_STREAM, msg.seq, b"".join(parts)


def _body_command(msg: Command) -> tuple[int, int, int, bytes]:
    return MsgType.COMMAND, msg.stream_id, msg.seq, _COMMAND.pack(msg.opcode, msg.rate_mhz)


def _body_ack(msg: Ack) -> tuple[int, int, int, bytes]:
    detail = msg.detail.encode("utf-8")
    return MsgType.ACK, msg.stream_id, msg.seq, _ACK_HEAD.pack(msg.opcode, msg.status, len(detail)) + detail


_ENCODERS: dict[type, Callable[..., tuple[int, int, int, bytes]]] = {
    SamplesMessage: _body_samples,
    DeviceInfo: _body_info,
    Command: _body_command,
    Ack: _body_ack,
}


def encode_payload(msg: Message) -> bytes:
    """The un-framed payload of a message: header, body and CRC-32, before COBS.

    Args:
        msg: a :class:`SamplesMessage`, :class:`DeviceInfo`, :class:`Command` or :class:`Ack`.

    Returns:
        Payload bytes, :data:`MIN_PAYLOAD_LEN` to :data:`MAX_PAYLOAD_LEN` long.

    Raises:
        BadInputError: when ``msg`` is not a protocol message.
    """
    encoder = _ENCODERS.get(type(msg))
    if encoder is None:
        raise BadInputError(f"cannot encode a {type(msg).__name__}; expected one of {[t.__name__ for t in _ENCODERS]}")
    msg_type, sid, seq, body = encoder(msg)
    head = _HEADER.pack(PROTOCOL_VERSION, msg_type, sid, seq, msg.t_us) + body
    return head + _CRC.pack(crc32(head))


def encode(msg: Message) -> bytes:
    """Encode a message as one framed packet, ready to write to the wire.

    Method: payload = header + body + CRC-32/ISO-HDLC; packet = COBS(payload) + 0x00
    (Cheshire & Baker 1999). Layout in ``docs/protocol.md``.

    Args:
        msg: a :class:`SamplesMessage`, :class:`DeviceInfo`, :class:`Command` or :class:`Ack`.

    Returns:
        The packet, including its trailing 0x00, at most :data:`MAX_FRAME_LEN` bytes.

    Raises:
        BadInputError: when ``msg`` is not a protocol message.
    """
    return cobs_encode(encode_payload(msg)) + b"\x00"


# ---------------------------------------------------------------------------------------------
# Decoding


class FrameError(BadInputError):
    """A frame that cannot be decoded; ``kind`` is ``"malformed"``, ``"crc"`` or ``"version"``."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


def _parse_samples(p: bytes, sid: int, seq: int, t_us: int) -> SamplesMessage:
    if len(p) < HEADER_LEN + SAMPLES_HEADER_LEN + CRC_LEN:
        raise FrameError("malformed", f"samples payload of {len(p)} bytes is too short")
    code, channels, n = _SAMPLES_HEAD.unpack_from(p, HEADER_LEN)
    wire = _WIRE_DTYPES.get(code)
    if wire is None:
        raise FrameError("malformed", f"unknown sample type {code}")
    if channels == 0:
        raise FrameError("malformed", "samples message with 0 channels")
    count = n * channels
    start = HEADER_LEN + SAMPLES_HEADER_LEN
    if start + count * wire.itemsize != len(p) - CRC_LEN:
        raise FrameError(
            "malformed", f"{n}x{channels} samples of {wire.itemsize} bytes do not fill a {len(p)}-byte payload"
        )
    raw = np.frombuffer(p, dtype=wire, count=count, offset=start).reshape(n, channels)
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
        raw.flags.writeable = False
    return SamplesMessage(sid, seq, t_us, _TYPE_NAMES[code], channels, raw)


def _take_text(p: bytes, pos: int, n: int, what: str) -> tuple[str, int]:
    end = pos + n
    if end > len(p) - CRC_LEN:
        raise FrameError("malformed", f"{what} runs past the end of the payload")
    try:
        return p[pos:end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise FrameError("malformed", f"{what} is not UTF-8") from None


def _parse_info(p: bytes, sid: int, seq: int, t_us: int) -> DeviceInfo:
    end = len(p) - CRC_LEN
    if HEADER_LEN + _INFO_HEAD.size > end:
        raise FrameError("malformed", "device info too short")
    major, minor, patch, device_id, name_len = _INFO_HEAD.unpack_from(p, HEADER_LEN)
    name, pos = _take_text(p, HEADER_LEN + _INFO_HEAD.size, name_len, "device name")
    if pos >= end:
        raise FrameError("malformed", "device info ends before its stream count")
    n_streams = p[pos]
    pos += 1
    streams = []
    for _ in range(n_streams):
        if pos + _STREAM_INFO.size > end:
            raise FrameError("malformed", "device info ends inside a stream record")
        s_id, code, channels, rate_mhz, gain, offset, units_len = _STREAM_INFO.unpack_from(p, pos)
        units, pos = _take_text(p, pos + _STREAM_INFO.size, units_len, "units")
        if code not in _TYPE_NAMES:
            raise FrameError("malformed", f"unknown sample type {code} for stream {s_id}")
        streams.append(StreamInfo(s_id, rate_mhz, units, gain, offset, channels, _TYPE_NAMES[code]))
    if pos != end:
        raise FrameError("malformed", f"{end - pos} stray bytes after the device info")
    if sid != NO_STREAM:
        raise FrameError("malformed", f"device info with stream id {sid}")
    return DeviceInfo((major, minor, patch), device_id, name, tuple(streams), seq, t_us)


def _parse_command(p: bytes, sid: int, seq: int, t_us: int) -> Command:
    if len(p) != MIN_PAYLOAD_LEN + COMMAND_BODY_LEN:
        raise FrameError("malformed", f"command payload must be {MIN_PAYLOAD_LEN + COMMAND_BODY_LEN} bytes, got {len(p)}")
    opcode, rate_mhz = _COMMAND.unpack_from(p, HEADER_LEN)
    return Command(opcode, sid, seq, rate_mhz, t_us)


def _parse_ack(p: bytes, sid: int, seq: int, t_us: int) -> Ack:
    if len(p) < MIN_PAYLOAD_LEN + _ACK_HEAD.size:
        raise FrameError("malformed", "ack too short")
    opcode, status, n = _ACK_HEAD.unpack_from(p, HEADER_LEN)
    detail, pos = _take_text(p, HEADER_LEN + _ACK_HEAD.size, n, "ack detail")
    if pos != len(p) - CRC_LEN:
        raise FrameError("malformed", "stray bytes after the ack detail")
    return Ack(opcode, status, sid, seq, t_us, detail)


_PARSERS: dict[int, Callable[[bytes, int, int, int], Message]] = {
    MsgType.SAMPLES: _parse_samples,
    MsgType.DEVICE_INFO: _parse_info,
    MsgType.COMMAND: _parse_command,
    MsgType.ACK: _parse_ack,
}


def parse_payload(payload: bytes) -> Message:
    """Check and parse one un-framed payload (COBS already removed).

    The CRC is checked before the version, so that only frames that arrived intact count as
    coming from a newer protocol version.

    Args:
        payload: header + body + CRC bytes.

    Returns:
        The message.

    Raises:
        FrameError: kind ``"crc"`` on a CRC mismatch, ``"version"`` for a version newer than
            :data:`PROTOCOL_VERSION`, ``"malformed"`` for anything else that is wrong.
    """
    n = len(payload)
    if n < 1 + CRC_LEN:
        raise FrameError("malformed", f"frame of {n} bytes is shorter than a version byte and a CRC")
    if n > MAX_PAYLOAD_LEN:
        raise FrameError("malformed", f"payload of {n} bytes is longer than {MAX_PAYLOAD_LEN}")
    if crc32(payload[:-CRC_LEN]) != _CRC.unpack_from(payload, n - CRC_LEN)[0]:
        raise FrameError("crc", "CRC-32 mismatch")
    version = payload[0]
    if version > PROTOCOL_VERSION:
        raise FrameError("version", f"protocol version {version} is newer than {PROTOCOL_VERSION}")
    if version != PROTOCOL_VERSION:
        raise FrameError("malformed", f"protocol version {version} does not exist")
    if n < MIN_PAYLOAD_LEN:
        raise FrameError("malformed", f"payload of {n} bytes is shorter than a header and a CRC")
    _, msg_type, sid, seq, t_us = _HEADER.unpack_from(payload, 0)
    parser = _PARSERS.get(msg_type)
    if parser is None:
        raise FrameError("malformed", f"unknown message type 0x{msg_type:02x}")
    try:
        return parser(payload, sid, seq, t_us)
    except FrameError:
        raise
    except (BadInputError, struct.error) as exc:
        raise FrameError("malformed", f"invalid message fields: {exc}") from None


def parse_frame(frame: bytes) -> Message:
    """Decode one COBS frame (without its 0x00 delimiter) into a message.

    Raises:
        FrameError: as :func:`parse_payload`, and kind ``"malformed"`` for invalid COBS or a
            frame longer than :data:`MAX_ENCODED_LEN`.
    """
    if len(frame) > MAX_ENCODED_LEN:
        raise FrameError("malformed", f"frame of {len(frame)} bytes is longer than {MAX_ENCODED_LEN}")
    payload = cobs_decode_or_none(frame)
    if payload is None:
        raise FrameError("malformed", "invalid COBS encoding")
    return parse_payload(payload)


def decode(packet: bytes | bytearray | memoryview) -> Message:
    """Decode exactly one packet, as made by :func:`encode`, into its message.

    For a byte stream (many packets, noise, partial reads) use
    :class:`firmware_bridge.protocol.decoder.Decoder` instead.

    Args:
        packet: one COBS frame; its trailing 0x00 delimiter may be present or not.

    Returns:
        The message.

    Raises:
        BadInputError: (a :class:`FrameError`) when the packet is not one valid frame; the
            message says why (CRC, version, COBS, length, field).
    """
    try:
        raw = bytes(packet)
    except TypeError:
        raise BadInputError(f"decode needs bytes, got {type(packet).__name__}") from None
    if raw.endswith(b"\x00"):
        raw = raw[:-1]
    if b"\x00" in raw:
        raise FrameError("malformed", "packet holds more than one frame (a 0x00 before its end)")
    return parse_frame(raw)
