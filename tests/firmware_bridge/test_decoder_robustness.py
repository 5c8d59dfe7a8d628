"""The incremental decoder on hostile input: noise, any chunking, truncation, bit flips, loss.

Every test builds a byte stream whose right answer is known (which packets are intact,
which were lost), runs the decoder, and checks messages and counters against it.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import BadInputError
from firmware_bridge.protocol import (
    MAX_ENCODED_LEN,
    Ack,
    Command,
    Decoder,
    DeviceInfo,
    Opcode,
    SamplesMessage,
    StreamInfo,
    cobs_encode,
    crc32,
    encode,
    encode_payload,
)


def _messages(n: int, seed: int = 0, seq0: int = 0) -> list:
    """A mixed, deterministic traffic of n messages over three streams and the control path."""
    rng = np.random.default_rng(seed)
    out = []
    seqs = {1: seq0, 4: seq0, 7: seq0}
    for k in range(n):
        kind = k % 10
        if kind == 9:
            out.append(Ack(Opcode.START, 0, 0xFF, k & 0xFFFF, 1000 * k, "ok" if k % 20 else ""))
            continue
        if kind == 8:
            out.append(
                DeviceInfo((1, 0, 0), 77, "dev", (StreamInfo(1, 250_000, "mV", 0.001), StreamInfo(7, 50_000, "g", channels=3)), k, 1000 * k)
            )
            continue
        sid = (1, 4, 7)[k % 3]
        if sid == 1:
            arr = rng.integers(-3000, 3000, size=(int(rng.integers(1, 60)), 1)).astype(np.int16)
            dtype = "int16"
        elif sid == 4:
            arr = rng.normal(5.0, 1.0, size=(int(rng.integers(1, 8)), 1)).astype(np.float32)
            dtype = "float32"
        else:
            arr = rng.integers(-(2**20), 2**20, size=(int(rng.integers(1, 20)), 3)).astype(np.int32)
            dtype = "int32"
        out.append(SamplesMessage(sid, seqs[sid], 1000 * k, dtype, arr.shape[1], arr))
        seqs[sid] = (seqs[sid] + 1) & 0xFFFF
    return out


TRAFFIC = _messages(120, seed=1)
PACKETS = [encode(m) for m in TRAFFIC]
STREAM = b"".join(PACKETS)


def _feed_all(data: bytes, cuts: list[int] | None = None) -> tuple[list, Decoder]:
    dec = Decoder()
    out = []
    edges = [0] + sorted(set(c for c in (cuts or []) if 0 < c < len(data))) + [len(data)]
    for a, b in zip(edges[:-1], edges[1:]):
        out += dec.feed(data[a:b])
    return out, dec


def _accounted(dec: Decoder, total: int) -> None:
    assert dec.bytes_ok + dec.bytes_skipped + dec.pending == total
    assert dec.pending <= MAX_ENCODED_LEN


def test_clean_stream_decodes_fully():
    out, dec = _feed_all(STREAM)
    assert out == TRAFFIC
    assert (dec.frames_ok, dec.crc_errors, dec.malformed, dec.bytes_skipped) == (len(TRAFFIC), 0, 0, 0)
    assert dec.lost_messages == 0 and dec.pending == 0
    _accounted(dec, len(STREAM))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=20))
def test_random_bytes_never_raise_and_memory_stays_bounded(data, cuts):
    out, dec = _feed_all(data, cuts)
    _accounted(dec, len(data))
    assert dec.frames_ok == len(out)


def test_long_runs_without_delimiter_are_bounded_and_counted():
    dec = Decoder()
    for _ in range(50):
        assert dec.feed(b"\x5a" * 997) == []
        assert dec.pending <= MAX_ENCODED_LEN
    assert dec.malformed == 1  # one endless run is one bad frame
    out = dec.feed(b"\x00" + PACKETS[0])
    assert out == [TRAFFIC[0]]
    assert dec.malformed == 1 and dec.bytes_skipped == 50 * 997 + 1
    _accounted(dec, 50 * 997 + 1 + len(PACKETS[0]))


def test_frame_one_byte_over_the_limit_is_dropped_at_any_chunking():
    too_long = b"\x01" * (MAX_ENCODED_LEN + 1) + b"\x00"
    ok = b"\x01" * MAX_ENCODED_LEN + b"\x00"  # at the limit: kept until its delimiter, then bad COBS/CRC
    for data in (too_long, ok):
        stats = [_feed_all(data + PACKETS[1], cuts)[1].stats() for cuts in ([], [5], [MAX_ENCODED_LEN], [MAX_ENCODED_LEN + 1])]
        assert all(s == stats[0] for s in stats)
        assert stats[0]["frames_ok"] == 1 and stats[0]["malformed"] + stats[0]["crc_errors"] == 1
    _, dec = _feed_all(too_long + PACKETS[1], [MAX_ENCODED_LEN])
    assert dec.malformed == 1 and dec.frames_ok == 1 and dec.bytes_skipped == len(too_long)


def _garbage_stream(data: st.DataObject) -> bytes:
    parts = []
    for p in PACKETS[:40]:
        if data.draw(st.booleans()):
            parts.append(data.draw(st.binary(max_size=30)))
        parts.append(p[: data.draw(st.integers(1, len(p)))] if data.draw(st.integers(0, 9)) == 0 else p)
    return b"".join(parts)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_chunking_gives_the_same_messages_and_counters(data):
    stream = _garbage_stream(data)
    whole, ref = _feed_all(stream)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=60))
    chunked, dec = _feed_all(stream, cuts)
    assert chunked == whole
    assert dec.stats() == ref.stats()
    _accounted(dec, len(stream))
    # Byte at a time, the worst case for an incremental decoder.
    one, dec1 = _feed_all(stream, list(range(len(stream))))
    assert one == whole and dec1.stats() == ref.stats()


def test_truncated_frame_followed_by_flush_delimiter_loses_only_itself():
    cut = PACKETS[5][: len(PACKETS[5]) // 2]
    data = b"".join(PACKETS[:5]) + cut + b"\x00" + b"".join(PACKETS[6:])
    out, dec = _feed_all(data)
    assert out == TRAFFIC[:5] + TRAFFIC[6:]
    assert dec.crc_errors + dec.malformed == 1
    assert dec.bytes_skipped == len(cut) + 1
    _accounted(dec, len(data))


def test_truncated_frame_without_delimiter_takes_the_next_frame_with_it():
    # COBS cannot tell where a truncated frame ended, so it merges with the next one; the
    # frame after that is intact again.
    cut = PACKETS[5][:7]
    data = b"".join(PACKETS[:5]) + cut + b"".join(PACKETS[6:])
    out, dec = _feed_all(data)
    assert out == TRAFFIC[:5] + TRAFFIC[7:]
    assert dec.crc_errors + dec.malformed == 1
    assert dec.bytes_skipped == len(cut) + len(PACKETS[6])


def test_truncated_frame_at_the_end_waits_in_the_buffer():
    data = STREAM + PACKETS[0][:9]
    out, dec = _feed_all(data)
    assert out == TRAFFIC and dec.pending == 9 and dec.bytes_skipped == 0
    assert dec.feed(PACKETS[0][9:]) == [TRAFFIC[0]]


def test_garbage_between_frames():
    rng = np.random.default_rng(3)
    parts, expected, lost_bytes = [], [], 0
    for k, (p, m) in enumerate(zip(PACKETS, TRAFFIC)):
        g = rng.integers(0, 256, size=int(rng.integers(0, 40))).astype(np.uint8).tobytes() if k % 3 == 0 else b""
        parts += [g, p]
        # Garbage that does not end in 0x00 becomes the head of the next frame and spoils it.
        if g and not g.endswith(b"\x00"):
            lost_bytes += len(g) + len(p)
        else:
            expected.append(m)
            lost_bytes += len(g)
    data = b"".join(parts)
    out, dec = _feed_all(data)
    assert out == expected
    assert dec.bytes_skipped == lost_bytes
    assert len(out) > len(TRAFFIC) // 2
    _accounted(dec, len(data))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(0, len(STREAM) * 8 - 1), min_size=1, max_size=25, unique=True))
def test_bit_flips_lose_only_the_frames_they_touch(bits):
    buf = bytearray(STREAM)
    for bit in bits:
        buf[bit // 8] ^= 1 << (bit % 8)
    starts = np.cumsum([0] + [len(p) for p in PACKETS])
    flipped_bytes = {bit // 8 for bit in bits}
    damaged = set()
    for pos in flipped_bytes:
        i = int(np.searchsorted(starts, pos, side="right")) - 1
        damaged.add(i)
        if pos == starts[i + 1] - 1:
            damaged.add(i + 1)  # a flipped delimiter merges this frame with the next
    # A byte turned into 0x00 splits a frame: both parts are counted as bad frames.
    intact = [k for k in range(len(PACKETS)) if k not in damaged]
    out, dec = _feed_all(bytes(buf))
    assert out == [TRAFFIC[k] for k in intact]
    assert dec.frames_ok == len(intact)
    assert dec.bytes_skipped == len(STREAM) - sum(len(PACKETS[k]) for k in intact) - dec.pending
    # Every flip is seen: as a bad frame, or (a flipped final delimiter) as a frame still pending.
    assert dec.crc_errors + dec.malformed >= 1 or dec.pending > 0
    _accounted(dec, len(STREAM))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_damaged_payloads_are_counted_as_crc_errors_exactly(data):
    # Corrupt payload bytes *before* COBS (framing intact): every damaged frame must fail its
    # CRC, and only those.
    hit = sorted(data.draw(st.sets(st.integers(0, len(TRAFFIC) - 1), min_size=1, max_size=30)))
    parts = []
    for k, m in enumerate(TRAFFIC):
        payload = bytearray(encode_payload(m))
        if k in hit:
            n_flips = data.draw(st.integers(1, 4))
            for _ in range(n_flips):
                bit = data.draw(st.integers(0, len(payload) * 8 - 1))
                payload[bit // 8] ^= 1 << (bit % 8)
            if payload == bytearray(encode_payload(m)):
                payload[0] ^= 0x80  # the flips cancelled out; damage it for sure
        parts.append(cobs_encode(bytes(payload)) + b"\x00")
    out, dec = _feed_all(b"".join(parts))
    assert dec.crc_errors == len(hit) and dec.malformed == 0
    assert out == [m for k, m in enumerate(TRAFFIC) if k not in hit]
    assert dec.bytes_skipped == sum(len(parts[k]) for k in hit)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 0xFFFF), st.lists(st.booleans(), min_size=2, max_size=300))
def test_dropped_messages_give_exact_seq_gaps_across_the_wrap(seq0, keep):
    keep[0] = True
    msgs = [SamplesMessage(3, (seq0 + k) & 0xFFFF, 20_000 * k, "int32", 1, np.array([k], np.int32)) for k in range(len(keep))]
    sent = [m for m, kept in zip(msgs, keep) if kept]
    last_kept = max(k for k, kept in enumerate(keep) if kept)
    dropped = sum(1 for k in range(last_kept) if not keep[k])
    out, dec = _feed_all(b"".join(encode(m) for m in sent))
    assert out == sent
    assert dec.seq_gaps == {3: dropped} and dec.lost_messages == dropped
    assert dec.seq_resets == 0


def test_seq_gaps_are_per_stream():
    msgs = [
        SamplesMessage(1, 65534, 0, "int16", 1, np.zeros(1, np.int16)),
        SamplesMessage(2, 10, 0, "int16", 1, np.zeros(1, np.int16)),
        SamplesMessage(1, 2, 10, "int16", 1, np.zeros(1, np.int16)),  # 65535, 0, 1 lost
        SamplesMessage(2, 11, 10, "int16", 1, np.zeros(1, np.int16)),
        SamplesMessage(2, 15, 20, "int16", 1, np.zeros(1, np.int16)),  # 12, 13, 14 lost
    ]
    _, dec = _feed_all(b"".join(encode(m) for m in msgs))
    assert dec.seq_gaps == {1: 3, 2: 3}


def test_device_reboot_is_a_reset_not_a_loss():
    before = [SamplesMessage(1, 40_000 + k, 9_000_000 + k, "int16", 1, np.zeros(1, np.int16)) for k in range(3)]
    after = [SamplesMessage(1, k, 100 + k, "int16", 1, np.zeros(1, np.int16)) for k in range(3)]
    repeat = [after[-1]]
    out, dec = _feed_all(b"".join(encode(m) for m in before + after + repeat))
    assert len(out) == 7
    assert dec.seq_gaps == {1: 0} and dec.seq_resets == 1


def test_newer_version_is_counted_and_skipped():
    payload = bytearray(encode_payload(Command(Opcode.START)))[:-4]
    payload[0] = 2
    future = cobs_encode(bytes(payload) + crc32(bytes(payload)).to_bytes(4, "little")) + b"\x00"
    data = PACKETS[0] + future + PACKETS[1]
    out, dec = _feed_all(data)
    assert out == TRAFFIC[:2]
    assert dec.unknown_version == 1 and dec.malformed == 0 and dec.crc_errors == 0
    assert dec.bytes_skipped == len(future)


def test_lone_delimiters_are_skipped_but_are_not_errors():
    data = b"\x00\x00" + PACKETS[0] + b"\x00" + PACKETS[1]
    out, dec = _feed_all(data)
    assert out == TRAFFIC[:2]
    assert (dec.bytes_skipped, dec.crc_errors, dec.malformed) == (3, 0, 0)


def test_feed_accepts_bytes_like_and_rejects_text():
    dec = Decoder()
    assert dec.feed(bytearray(PACKETS[0])) == [TRAFFIC[0]]
    assert dec.feed(memoryview(PACKETS[1])) == [TRAFFIC[1]]
    assert dec.feed(b"") == []
    with pytest.raises(BadInputError):
        dec.feed("\x00abc")
    dec.reset()
    assert dec.stats()["frames_ok"] == 0 and dec.pending == 0
