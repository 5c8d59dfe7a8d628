"""CRC-32 of the emofuse wire protocol.

The checksum is CRC-32/ISO-HDLC, the CRC of Ethernet, zlib and PNG (ITU-T V.42; parameters
as catalogued by Williams, "A Painless Guide to CRC Error Detection Algorithms", 1993):

=========  ==========================================
width      32
poly       0x04C11DB7 (0xEDB88320 bit-reversed)
init       0xFFFFFFFF
refin      true
refout     true
xorout     0xFFFFFFFF
check      0xCBF43926 (CRC of the ASCII bytes "123456789")
=========  ==========================================

A CRC-32 over frames of at most 1 KiB detects every burst error up to 32 bits and every
error of up to 3 flipped bits; a random corruption slips through with probability 2**-32.
"""
from __future__ import annotations

import zlib

CRC32_WIDTH = 32
CRC32_POLY = 0x04C11DB7
CRC32_POLY_REFLECTED = 0xEDB88320
CRC32_INIT = 0xFFFFFFFF
CRC32_XOROUT = 0xFFFFFFFF
CRC32_CHECK = 0xCBF43926


def crc32(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32/ISO-HDLC of ``data`` (zlib's implementation).

    Args:
        data: the bytes to check.
        crc: a previous result, to continue a CRC over several pieces (0 to start).

    Returns:
        The CRC as an int in [0, 2**32).
    """
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def crc32_bitwise(data: bytes | bytearray | memoryview) -> int:
    """CRC-32/ISO-HDLC computed bit by bit from its stated parameters.

    A slow reference that spells out the parameters above, the same way the C header does:
    tests check it against :func:`crc32` and the check value.

    Args:
        data: the bytes to check.

    Returns:
        The CRC as an int in [0, 2**32).
    """
    crc = CRC32_INIT
    for byte in bytes(data):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (CRC32_POLY_REFLECTED if crc & 1 else 0)
    return crc ^ CRC32_XOROUT
