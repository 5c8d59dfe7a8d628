"""The emofuse sensor wire protocol: COBS-framed, CRC-32-checked little-endian messages.

The specification is ``docs/protocol.md``; the firmware side is the header-only C99 file
``firmware_bridge/firmware/emofuse_proto.h``. Python side::

    from firmware_bridge.protocol import Decoder, SamplesMessage, encode
    packet = encode(msg)              # bytes, ending in 0x00
    messages = Decoder().feed(chunk)  # any chunking of the byte stream
"""
from firmware_bridge.protocol.cobs import cobs_decode, cobs_encode, max_encoded_len
from firmware_bridge.protocol.crc import CRC32_CHECK, crc32
from firmware_bridge.protocol.decoder import Decoder
from firmware_bridge.protocol.messages import (
    ALL_STREAMS,
    HEADER_LEN,
    MAX_ENCODED_LEN,
    MAX_FRAME_LEN,
    MAX_PAYLOAD_LEN,
    MAX_SAMPLE_BYTES,
    NO_STREAM,
    PROTOCOL_VERSION,
    SAMPLE_TYPES,
    STREAM_IDS,
    STREAMS,
    Ack,
    Command,
    DeviceInfo,
    FrameError,
    Message,
    MsgType,
    Opcode,
    SamplesMessage,
    Status,
    StreamInfo,
    StreamSpec,
    decode,
    encode,
    encode_payload,
    stream_id,
    stream_name,
)

__all__ = [
    "ALL_STREAMS", "CRC32_CHECK", "HEADER_LEN", "MAX_ENCODED_LEN", "MAX_FRAME_LEN", "MAX_PAYLOAD_LEN",
    "MAX_SAMPLE_BYTES", "NO_STREAM", "PROTOCOL_VERSION", "SAMPLE_TYPES", "STREAM_IDS", "STREAMS",
    "Ack", "Command", "Decoder", "DeviceInfo", "FrameError", "Message", "MsgType", "Opcode",
    "SamplesMessage", "Status", "StreamInfo", "StreamSpec", "cobs_decode", "cobs_encode", "crc32",
    "decode", "encode", "encode_payload", "max_encoded_len", "stream_id", "stream_name",
]
