"""The C99 header against the Python side: C-built packets decode in Python byte for byte, and
Python-built commands parse in C. Skipped, with the reason, where no C compiler is installed."""
from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from firmware_bridge.protocol import (
    ALL_STREAMS,
    Ack,
    Command,
    Decoder,
    DeviceInfo,
    Opcode,
    SamplesMessage,
    Status,
    StreamInfo,
    cobs_encode,
    crc32,
    decode,
    encode,
    encode_payload,
)

FIRMWARE = REPO / "firmware_bridge" / "firmware"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
STRICT = ["-Wconversion", "-Wsign-conversion", "-Wshadow", "-Wcast-qual", "-Wstrict-prototypes"]


def _compiler() -> str:
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no C compiler (cc, gcc or clang) on PATH: the C99 header is not checked")


def _build(sources: list[Path], out: Path, extra: list[str] = ()) -> Path:
    cmd = [_compiler(), *CFLAGS, *extra, f"-I{FIRMWARE}", *map(str, sources), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"
    return out


# ---------------------------------------------------------------------------------------------
# example_stream.c: what it must print, spelled out again in Python.


def _expected_example() -> list:
    t0 = 5_000_000_000
    info = DeviceInfo(
        (1, 2, 3),
        0xC0FFEE01,
        "emofuse-devkit",
        (
            StreamInfo(1, 250_000, "mV", 0.001, 0.0, 1, "int16"),
            StreamInfo(2, 100_000, "a.u.", 1.0, 0.0, 1, "int32"),
            StreamInfo(3, 100_000, "a.u.", 1.0, 0.0, 1, "int32"),
            StreamInfo(4, 4_000, "uS", 1.0, 0.0, 1, "float32"),
            StreamInfo(5, 1_000, "degC", 0.0078125, 0.0, 1, "int16"),
            StreamInfo(6, 25_000, "a.u.", 1.0, -512.0, 1, "int16"),
            StreamInfo(7, 50_000, "g", 0.000244140625, 0.0, 3, "int16"),
        ),
        0,
        t0,
    )
    out = [info]
    for block, seq in enumerate((65534, 65535, 0)):
        ecg = (np.arange(10) + block * 10) * 37 - 300
        out.append(SamplesMessage(1, seq, t0 + block * 40_000, "int16", 1, ecg.astype(np.int16)))
    out.append(SamplesMessage(2, 7, t0, "int32", 1, (100_000 * np.arange(8) - 2_000_000_000).astype(np.int32)))
    out.append(SamplesMessage(3, 0, t0, "int32", 1, np.full(64, 0x01010101, np.int32)))
    eda = np.array([2.5, -0.0, np.nan, 1.0e-3], np.float32)
    out.append(SamplesMessage(4, 1, t0 + 250_000, "float32", 1, eda))
    out.append(SamplesMessage(5, 2, (1 << 64) - 1, "int16", 1, np.array([4672], np.int16)))
    out.append(SamplesMessage(6, 3, 0, "int16", 1, np.array([0, 1, -1, 32767, -32768], np.int16)))
    i = np.arange(12)
    accel = np.where(i % 3 == 2, 4096, 17 * i - 100).astype(np.int16).reshape(4, 3)
    out.append(SamplesMessage(7, 4, t0, "int16", 3, accel))
    out.append(SamplesMessage(1, 1, t0 + 120_000, "int16", 1, (np.arange(501) * 131 + 1).astype(np.int16)))
    out.append(Ack(Opcode.START, Status.OK, ALL_STREAMS, 42, t0 + 1))
    out.append(Ack(Opcode.SET_RATE, Status.BAD_RATE, 4, 43, t0 + 2, "rate 0 mHz"))
    out.append(Command(Opcode.SET_RATE, 1, 44, 500_000, 123))
    return out


@pytest.fixture(scope="module")
def example_output(tmp_path_factory) -> bytes:
    exe = _build([FIRMWARE / "example_stream.c"], tmp_path_factory.mktemp("c") / "example_stream")
    res = subprocess.run([str(exe)], capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout


def test_c_example_stream_decodes_to_the_expected_messages(example_output):
    expected = _expected_example()
    dec = Decoder()
    assert dec.feed(example_output) == expected
    assert (dec.frames_ok, dec.crc_errors, dec.malformed, dec.bytes_skipped) == (len(expected), 0, 0, 1)
    assert dec.seq_gaps[1] == 0  # 65534, 65535, 0 across the wrap, then 1


def test_c_packets_are_byte_identical_to_python_packets(example_output):
    # Same COBS variant, same CRC, same layout: not merely decodable, identical.
    assert example_output == b"\x00" + b"".join(encode(m) for m in _expected_example())


def test_header_compiles_with_strict_warnings(tmp_path):
    _build([FIRMWARE / "example_stream.c"], tmp_path / "strict", STRICT)


# ---------------------------------------------------------------------------------------------
# A device's command receiver, in C, fed with Python-encoded bytes.

PROBE_C = r"""
#include <stdio.h>
#include "emofuse_proto.h"

static void hex(const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i) printf("%02x", p[i]);
    printf("\n");
}

int main(void)
{
    static uint8_t all[1 << 16];
    uint8_t ack[EMOFUSE_ACK_PACKET_LEN];
    emofuse_rx rx;
    emofuse_command cmd;
    size_t n = fread(all, 1u, sizeof all, stdin), i;
    emofuse_rx_init(&rx);
    printf("CRC %08lx %08lx\n", (unsigned long)emofuse_crc32((const uint8_t *)"123456789", 9u),
           (unsigned long)emofuse_crc32(all, n));
    /* Over-long reasons: 70 bytes of 2-byte characters, and 1 + 64 bytes, which a plain cut
     * at 64 bytes would split inside a character. */
    hex(ack, emofuse_build_ack(ack, sizeof ack, 1u, 1u, 1u, 1u, 5u,
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"));
    hex(ack, emofuse_build_ack(ack, sizeof ack, 1u, 1u, 2u, 1u, 5u,
        "a\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
        "\xc3\xa9\xc3\xa9"));
    for (i = 0; i < n; ++i) {
        int rc = emofuse_rx_push(&rx, all[i], &cmd);
        if (rc == EMOFUSE_RX_COMMAND) {
            uint8_t status = cmd.opcode >= EMOFUSE_OP_START && cmd.opcode <= EMOFUSE_OP_GET_INFO
                                 ? EMOFUSE_STATUS_OK : EMOFUSE_STATUS_UNKNOWN_OPCODE;
            size_t m = emofuse_build_ack(ack, sizeof ack, cmd.opcode, cmd.stream_id, cmd.seq, 777u, status,
                                         status ? "unknown opcode" : NULL);
            printf("CMD %u %u %u %llu %lu\n", cmd.opcode, cmd.stream_id, cmd.seq,
                   (unsigned long long)cmd.t_us, (unsigned long)cmd.rate_mhz);
            printf("ACK ");
            hex(ack, m);
        } else if (rc < 0) {
            printf("ERR %d\n", rc);
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE_C)
    return _build([d / "probe.c"], d / "probe")


def _run_probe(exe: Path, data: bytes) -> list[str]:
    res = subprocess.run([str(exe)], input=data, capture_output=True, timeout=30)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout.decode().splitlines()


def _framed(payload: bytes) -> bytes:
    return cobs_encode(payload + crc32(payload).to_bytes(4, "little")) + b"\x00"


def test_c_parses_python_commands_and_rejects_bad_frames(probe):
    commands = [
        Command(Opcode.START, ALL_STREAMS, 0),
        Command(Opcode.STOP, 3, 1, 0, 12345),
        Command(Opcode.SET_RATE, 1, 65535, (1 << 32) - 1, (1 << 64) - 1),
        Command(Opcode.GET_INFO, 0, 2),
        Command(0x42, 7, 3),
    ]
    damaged = bytearray(encode_payload(Command(Opcode.START, 1, 9)))
    damaged[14] ^= 0x10
    version2 = bytearray(encode_payload(Command(Opcode.START)))[:-4]
    version2[0] = 2
    not_a_command = encode(Ack(Opcode.START, Status.OK, 1, 0))  # short enough for the buffer
    stream = (
        b"\x00\x00"
        + encode(commands[0])
        + b"\x17\x99"  # line noise: merges with the next command, which is lost
        + encode(commands[1])
        + encode(commands[1])
        + cobs_encode(bytes(damaged)) + b"\x00"
        + b"\x55" * 100 + b"\x00"  # longer than any command: overflow
        + _framed(bytes(version2))
        + not_a_command
        + b"".join(encode(c) for c in commands[2:])
    )
    lines = _run_probe(probe, stream)
    assert lines[0] == f"CRC cbf43926 {zlib.crc32(stream):08x}"
    assert decode(bytes.fromhex(lines[1])).detail == "é" * 32
    assert decode(bytes.fromhex(lines[2])).detail == "a" + "é" * 31
    cmds = [ln for ln in lines if ln.startswith("CMD")]
    errs = [ln for ln in lines if ln.startswith("ERR")]
    acks = [decode(bytes.fromhex(ln.split()[1])) for ln in lines if ln.startswith("ACK")]
    received = commands  # the first copy of commands[1] was lost to the noise
    assert cmds == [f"CMD {c.opcode} {c.stream_id} {c.seq} {c.t_us} {c.rate_mhz}" for c in received]
    # Noise + command is longer than any command frame (-2), then CRC, overflow, version, type.
    assert errs == ["ERR -2", "ERR -3", "ERR -2", "ERR -4", "ERR -5"]
    assert [(a.opcode, a.stream_id, a.seq, a.t_us) for a in acks] == [(c.opcode, c.stream_id, c.seq, 777) for c in received]
    assert [a.status for a in acks] == [Status.OK] * 4 + [Status.UNKNOWN_OPCODE]
    assert acks[-1].detail == "unknown opcode"


def test_c_crc_equals_python_crc_on_random_data(probe):
    data = np.random.default_rng(5).integers(1, 256, size=5000).astype(np.uint8).tobytes()
    assert _run_probe(probe, data)[0] == f"CRC cbf43926 {crc32(data):08x}"


def test_c_under_address_and_undefined_behaviour_sanitizers(tmp_path, probe):
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]
    (tmp_path / "t.c").write_text("int main(void) { return 0; }\n")
    try:
        trial = _build([tmp_path / "t.c"], tmp_path / "t", flags)
        ok = subprocess.run([str(trial)], capture_output=True, timeout=30).returncode == 0
    except AssertionError:
        ok = False
    if not ok:
        pytest.skip("this compiler or machine cannot build or run sanitized programs")
    exe = _build([FIRMWARE / "example_stream.c"], tmp_path / "example_san", flags)
    res = subprocess.run([str(exe)], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert res.stdout == b"\x00" + b"".join(encode(m) for m in _expected_example())
    (tmp_path / "probe.c").write_text(PROBE_C)
    san_probe = _build([tmp_path / "probe.c"], tmp_path / "probe_san", flags)
    noise = np.random.default_rng(9).integers(0, 256, size=20000).astype(np.uint8).tobytes()
    res = subprocess.run([str(san_probe)], input=noise + b"\x00" + encode(Command(Opcode.STOP)), capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    assert b"CMD 2 255 0 0 0" in res.stdout
