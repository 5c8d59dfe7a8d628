"""Incremental decoder of the emofuse wire protocol: bytes in any chunking -> messages.

A UART hands over bytes in arbitrary pieces, with noise, dropped bytes and a device that may
reset mid-frame. The decoder splits the stream at 0x00 delimiters (COBS framing, Cheshire &
Baker 1999), checks each frame's CRC-32, parses it, and keeps counters of everything it had to
throw away. It never raises on any byte input and holds at most one frame's worth of bytes.
"""
from __future__ import annotations

from firmware_bridge.errors import BadInputError
from firmware_bridge.protocol.messages import (
    MAX_ENCODED_LEN,
    FrameError,
    Message,
    SamplesMessage,
    parse_frame,
)

_SEQ_MOD = 1 << 16


class Decoder:
    """Turns a received byte stream into protocol messages, one :meth:`feed` at a time.

    Feeding the same bytes in any chunking yields the same messages in the same order and the
    same counters once the same bytes have been fed. After garbage or a damaged frame the
    decoder is in sync again at the next 0x00.

    Counters (plain int attributes, never reset except by :meth:`reset`):
        frames_ok: frames decoded into messages.
        crc_errors: frames whose CRC-32 did not match (damaged in transit).
        malformed: frames with invalid COBS, a bad length (too short, or longer than
            :data:`MAX_ENCODED_LEN`, including an unterminated run that overflowed the
            buffer), version 0, an unknown type, or fields that contradict each other.
        unknown_version: intact frames from a newer protocol version, skipped.
        bytes_ok: bytes of decoded frames, delimiters included.
        bytes_skipped: bytes fed that did not belong to a decoded frame: garbage, damaged
            frames, and empty frames (a lone 0x00 a sender may use to flush), delimiters
            included. Bytes of a decoded frame, its delimiter included, never count; bytes
            still waiting in the buffer do not count yet, so
            ``bytes_ok + bytes_skipped + pending`` is every byte fed so far.
        seq_gaps: stream id -> messages lost on that stream, from the uint16 sequence number
            with wrap-around.
        seq_resets: times a stream's device time went backwards (a device reboot); the gap
            across a reboot is not counted as loss.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False
        self._last: dict[int, tuple[int, int]] = {}
        self.frames_ok = 0
        self.crc_errors = 0
        self.malformed = 0
        self.unknown_version = 0
        self.bytes_ok = 0
        self.bytes_skipped = 0
        self.seq_gaps: dict[int, int] = {}
        self.seq_resets = 0

    def reset(self) -> None:
        """Forget buffered bytes, sequence state and counters (e.g. after reopening a port)."""
        self.__init__()

    @property
    def pending(self) -> int:
        """Bytes buffered for a frame whose delimiter has not arrived, <= MAX_ENCODED_LEN."""
        return len(self._buf)

    @property
    def lost_messages(self) -> int:
        """Messages lost over all streams (sum of :attr:`seq_gaps`)."""
        return sum(self.seq_gaps.values())

    def stats(self) -> dict[str, object]:
        """A snapshot of the counters, for logs and result metadata."""
        return {
            "frames_ok": self.frames_ok,
            "crc_errors": self.crc_errors,
            "malformed": self.malformed,
            "unknown_version": self.unknown_version,
            "bytes_ok": self.bytes_ok,
            "bytes_skipped": self.bytes_skipped,
            "seq_gaps": dict(self.seq_gaps),
            "seq_resets": self.seq_resets,
            "pending": self.pending,
        }

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Take the next received bytes and return the messages completed by them.

        Method: COBS frames delimited by 0x00 (Cheshire & Baker 1999), CRC-32 checked, as in
        ``docs/protocol.md``. Damaged frames are counted and dropped, never raised.

        Args:
            data: the bytes just read, any length (0 is fine).

        Returns:
            Messages (:class:`SamplesMessage`, :class:`DeviceInfo`, :class:`Command`,
            :class:`Ack`) in stream order; empty when no frame completed.

        Raises:
            BadInputError: only when ``data`` is not bytes-like (a programming error, not a
                transmission error).
        """
        if not isinstance(data, bytes):
            if isinstance(data, str) or not isinstance(data, (bytearray, memoryview)):
                raise BadInputError(f"Decoder.feed needs bytes, got {type(data).__name__}")
            data = bytes(data)
        out: list[Message] = []
        n = len(data)
        start = 0
        while start < n:
            end = data.find(0, start)
            if end < 0:
                self._hold(data, start, n)
                break
            if self._discarding:
                self.bytes_skipped += end - start + 1
                self._discarding = False
            elif self._buf:
                self._buf += data[start:end]
                frame = bytes(self._buf)
                self._buf.clear()
                self._frame(frame, out)
            else:
                self._frame(data[start:end], out)
            start = end + 1
        return out

    def _hold(self, data: bytes, start: int, n: int) -> None:
        """Keep an unterminated tail, or drop it once it cannot be a frame any more."""
        size = n - start
        if self._discarding:
            self.bytes_skipped += size
        elif len(self._buf) + size > MAX_ENCODED_LEN:
            # Longer than any valid frame: drop it now so memory stays bounded, and skip the
            # rest of it up to the next delimiter.
            self.malformed += 1
            self.bytes_skipped += len(self._buf) + size
            self._buf.clear()
            self._discarding = True
        else:
            self._buf += data[start:n]

    def _frame(self, frame: bytes, out: list[Message]) -> None:
        if not frame:
            self.bytes_skipped += 1
            return
        try:
            msg = parse_frame(frame)
        except FrameError as exc:
            self.bytes_skipped += len(frame) + 1
            if exc.kind == "crc":
                self.crc_errors += 1
            elif exc.kind == "version":
                self.unknown_version += 1
            else:
                self.malformed += 1
            return
        self.frames_ok += 1
        self.bytes_ok += len(frame) + 1
        if isinstance(msg, SamplesMessage):
            self._track(msg)
        out.append(msg)

    def _track(self, msg: SamplesMessage) -> None:
        sid = msg.stream_id
        last = self._last.get(sid)
        self._last[sid] = (msg.seq, msg.t_us)
        if last is None:
            self.seq_gaps.setdefault(sid, 0)
            return
        last_seq, last_t_us = last
        if msg.t_us < last_t_us:
            # uint64 device time never wraps, so time going back means the device rebooted
            # and restarted its counters: not a loss.
            self.seq_resets += 1
            return
        if msg.seq == last_seq:
            # A repeat (never sent by a conforming device); modular arithmetic would call it
            # 65535 lost messages.
            return
        self.seq_gaps[sid] = self.seq_gaps.get(sid, 0) + (msg.seq - last_seq - 1) % _SEQ_MOD
