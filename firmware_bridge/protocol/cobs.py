"""Consistent Overhead Byte Stuffing (COBS), the framing layer of the emofuse wire protocol.

COBS (Cheshire & Baker, "Consistent Overhead Byte Stuffing", IEEE/ACM Transactions on
Networking 7(2), 1999) rewrites a byte string so that it holds no 0x00 byte, at a cost of at
most one byte per 254 bytes plus one. A 0x00 can then delimit frames: a receiver that loses
sync (noise, a reset, a dropped byte) is back in sync at the next 0x00.

The encoder here emits the "always close the last block" variant, byte for byte what the C
header ``firmware_bridge/firmware/emofuse_proto.h`` produces: a run of exactly 254 non-zero
bytes at the end of the input is followed by a 0x01 code byte. The decoder accepts both that
variant and the one that omits the final 0x01.
"""
from __future__ import annotations

from firmware_bridge.errors import BadInputError

_ZERO = b"\x00"
_MAX_RUN = 254


def max_encoded_len(n: int) -> int:
    """Largest COBS encoding of ``n`` input bytes (without the 0x00 delimiter).

    Args:
        n: input length in bytes, >= 0.

    Returns:
        ``n + n // 254 + 1`` bytes: one code byte to open, plus one for every full run of 254
        non-zero bytes.

    Raises:
        BadInputError: when ``n`` is negative.
    """
    if n < 0:
        raise BadInputError(f"COBS input length must be >= 0, got {n}")
    return n + n // _MAX_RUN + 1


def cobs_encode(data: bytes | bytearray | memoryview) -> bytes:
    """COBS-encode a byte string (Cheshire & Baker 1999); the result holds no 0x00 byte.

    Args:
        data: any bytes, length n.

    Returns:
        Encoded bytes, length between n + 1 and :func:`max_encoded_len` (n); the frame
        delimiter 0x00 is *not* appended.

    Raises:
        BadInputError: when ``data`` is not bytes-like.
    """
    try:
        raw = bytes(data)
    except TypeError as exc:
        raise BadInputError(f"COBS encode needs bytes, got {type(data).__name__}") from exc
    out = bytearray()
    # Splitting on the zeros gives the runs; bytes.split is C code, so only one Python step
    # per run is paid, not one per byte.
    for run in raw.split(_ZERO):
        while len(run) >= _MAX_RUN:
            out.append(0xFF)
            out += run[:_MAX_RUN]
            run = run[_MAX_RUN:]
        out.append(len(run) + 1)
        out += run
    return bytes(out)


def cobs_decode_or_none(frame: bytes) -> bytes | None:
    """Decode one COBS frame (delimiter already removed); ``None`` when it is not valid COBS.

    The decoder's hot path: it reports failure without building an exception.

    Args:
        frame: encoded bytes, without the trailing 0x00.

    Returns:
        The decoded bytes, or None when a code byte is 0x00 or points past the end.
    """
    n = len(frame)
    if n == 0:
        return None
    parts = []
    pos = 0
    # One Python step per code byte; the copies are C-level slices.
    while pos < n:
        code = frame[pos]
        if code == 0:
            return None
        end = pos + code
        if end > n:
            return None
        parts.append(frame[pos + 1:end])
        if code != 0xFF and end < n:
            parts.append(_ZERO)
        pos = end
    return b"".join(parts)


def cobs_decode(frame: bytes | bytearray | memoryview) -> bytes:
    """Decode one COBS frame (Cheshire & Baker 1999).

    Args:
        frame: encoded bytes without the 0x00 delimiter; a single trailing 0x00 is tolerated
            and removed.

    Returns:
        The decoded bytes.

    Raises:
        BadInputError: when ``frame`` is empty, holds an inner 0x00, or a code byte points
            past its end.
    """
    try:
        raw = bytes(frame)
    except TypeError as exc:
        raise BadInputError(f"COBS decode needs bytes, got {type(frame).__name__}") from exc
    if raw.endswith(_ZERO):
        raw = raw[:-1]
    if _ZERO in raw:
        raise BadInputError("COBS frame holds a 0x00 byte before its end: two frames or corrupt data")
    out = cobs_decode_or_none(raw)
    if out is None:
        raise BadInputError(f"not a valid COBS frame ({len(raw)} bytes): a code byte points past its end")
    return out
