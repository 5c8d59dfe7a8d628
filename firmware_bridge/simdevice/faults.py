"""Faults the simulated board injects into its line (:class:`LineFaults`, deterministic from a
seed) and the ground truth it records of everything it sent and did (:class:`BoardTruth`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.errors import ConfigError
from firmware_bridge.protocol.messages import Command


@dataclass(frozen=True)
class LineFaults:
    """Faults the board injects into what it sends, deterministic given ``seed``.

    Attributes:
        bit_flip_rate: probability, per byte sent, that one of its bits is flipped.
        drop_rate: probability, per byte sent, that it is lost.
        garbage_rate: probability, per packet, that a burst of 1-48 random non-zero bytes and
            a 0x00 goes out before it (line noise that the receiver sees as one bad frame).
        pause_every_s: host seconds between pauses (None: never). During a pause the board
            sends nothing and queues its messages; it sends the backlog when the pause ends.
        pause_s: length of each pause, s.
        unplug_every_s: host seconds of connection between unplugs (None: never).
        unplug_s: how long the board stays unplugged, s.
        seed: seeds every random fault stream.

    Raises:
        ConfigError: a rate outside [0, 1] or a non-positive period.
    """

    bit_flip_rate: float = 0.0
    drop_rate: float = 0.0
    garbage_rate: float = 0.0
    pause_every_s: float | None = None
    pause_s: float = 0.5
    unplug_every_s: float | None = None
    unplug_s: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("bit_flip_rate", "drop_rate", "garbage_rate"):
            value = getattr(self, name)
            if not (np.isfinite(value) and 0.0 <= value <= 1.0):
                raise ConfigError(f"{name} must be within 0-1, got {value!r}")
        for name in ("pause_every_s", "unplug_every_s"):
            value = getattr(self, name)
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be > 0 or None, got {value!r}")
        for name in ("pause_s", "unplug_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")


@dataclass
class SentMessage:
    """One message the board made, and what became of it on the line.

    Attributes:
        kind: ``"samples"``, ``"info"`` or ``"ack"``.
        stream_id: the header's stream id.
        seq: the header's seq.
        t_us: the header's device time, us.
        raw: for samples, the raw values sent, shape (n, channels), the stream's dtype.
        written: every byte of the packet went onto the line (perhaps altered by faults).
        damaged: written with a flipped or dropped byte (its delimiter included).
        intact: written unaltered, right after an intact delimiter: a correct receiver
            decodes it.
        lost: why it was not written: ``"unplugged"``, ``"overflow"`` (the host did not
            read) or ``"closed"``; empty when written.
    """

    kind: str
    stream_id: int
    seq: int
    t_us: int
    raw: np.ndarray | None = field(default=None, repr=False)
    written: bool = False
    damaged: bool = False
    intact: bool = False
    lost: str = ""


@dataclass
class BoardTruth:
    """What the board did, for tests to compare with what a host saw.

    Attributes:
        messages: every message made, in order (kept only with ``record_messages``).
        commands: every intact command received.
        messages_made: messages made (samples, info, acks).
        frames_written: packets written whole onto the line.
        frames_damaged: written packets with a flipped or dropped byte (delimiter included).
        frames_intact: written packets a correct receiver must decode (see
            :attr:`SentMessage.intact`).
        bytes_written: bytes put on the line, garbage included.
        bytes_flipped, bytes_dropped: bytes with a flipped bit; bytes left out.
        garbage_bursts, garbage_bytes: noise bursts and their bytes (terminators included).
        messages_lost_unplugged: messages made while unplugged (never sent).
        bytes_overflowed: bytes dropped because the host did not read them.
        unplugs, pauses: how many of each happened.
        samples_made: stream name -> sample instants made.
    """

    messages: list[SentMessage] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    messages_made: int = 0
    frames_written: int = 0
    frames_damaged: int = 0
    frames_intact: int = 0
    bytes_written: int = 0
    bytes_flipped: int = 0
    bytes_dropped: int = 0
    garbage_bursts: int = 0
    garbage_bytes: int = 0
    messages_lost_unplugged: int = 0
    bytes_overflowed: int = 0
    unplugs: int = 0
    pauses: int = 0
    samples_made: dict[str, int] = field(default_factory=dict)

    def samples_sent(self, stream_id: int) -> list[SentMessage]:
        """The samples messages of one stream, in order (needs ``record_messages``)."""
        return [m for m in self.messages if m.kind == "samples" and m.stream_id == stream_id]
