"""The simulated board itself: :class:`SimulatedSensorBoard`, its pseudo-terminal and stable link,
its device clock, the thread that plays streams and answers commands, and the line it writes.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import tempfile
import threading
import time
import tty
from collections import deque
from pathlib import Path

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError, DeviceError
from firmware_bridge.protocol.decoder import Decoder
from firmware_bridge.protocol.messages import (
    ALL_STREAMS, MAX_SAMPLE_BYTES, NO_STREAM, STREAM_IDS, Ack, Command, DeviceInfo, Opcode, SamplesMessage,
    Status, StreamInfo, encode,
)
from firmware_bridge.simdevice.faults import BoardTruth, LineFaults, SentMessage
from firmware_bridge.simdevice.streams import _NUMPY_DTYPES, BoardStream, synth_streams

log = logging.getLogger(__name__)

_SEQ_MOD = 1 << 16
_INT_LIMITS = {"int16": 32000.0, "int32": 2.0e9}  # full scale used, a little inside the type's range
# Highest rate SET_RATE accepts: a 5-min recording resampled to it still fits in memory easily.
_MAX_SET_RATE_HZ = 20_000.0
_GARBAGE_MAX_BYTES = 48
# Longest the board waits for a host that does not read before it drops bytes (a UART does
# not wait at all; a little patience keeps a busy host from losing data in tests).
_WRITE_PATIENCE_S = 0.25
# Longest the board sleeps between looks at its schedule and its input, s.
_TICK_S = 0.005


class _Stream:
    """Playback state of one stream (board thread only)."""

    def __init__(self, spec: BoardStream, speed: float, block_s: float) -> None:
        self.spec = spec
        self.sid = STREAM_IDS[spec.name]
        self.block_s = block_s
        self.speed = speed
        if spec.dtype == "float32":
            self.gain, self.offset = 1.0, 0.0
        else:
            lo, hi = float(np.nanmin(spec.values)), float(np.nanmax(spec.values))
            half = (hi - lo) / 2.0
            # Gain and offset travel as float32: quantize with exactly the values the host gets.
            self.offset = float(np.float32((hi + lo) / 2.0))
            full = _INT_LIMITS[spec.dtype]
            self.gain = float(np.float32(half / full if half > 0 else max(abs(lo), 1.0) / full))
            # The rounded offset may push an extreme a hair past full scale; widen to cover it.
            reach = max(hi - self.offset, self.offset - lo)
            if reach / self.gain > full:
                self.gain = float(np.nextafter(np.float32(reach / full), np.float32(np.inf)))
        self.seq = 0
        self.running = False
        self.pos = 0
        self.anchor_us = 0.0
        self.anchor_pos = 0
        self._set_content(spec.values, spec.fs_hz * speed)

    def _set_content(self, values: np.ndarray, rate_hz: float) -> None:
        self.rate_mhz = int(round(rate_hz * 1000.0))
        self.fs_hz = self.rate_mhz / 1000.0
        if self.spec.dtype == "float32":
            self.raw = values.astype(np.float32)
        else:
            limit = np.iinfo(_NUMPY_DTYPES[self.spec.dtype])
            q = np.round((values - self.offset) / self.gain)
            self.raw = np.clip(q, limit.min, limit.max).astype(_NUMPY_DTYPES[self.spec.dtype])
        itemsize = self.raw.itemsize * self.spec.channels
        self.block = int(np.clip(round(self.fs_hz * self.block_s), 1, MAX_SAMPLE_BYTES // itemsize))

    @property
    def done(self) -> bool:
        return self.pos >= self.raw.shape[0]

    def info(self) -> StreamInfo:
        return StreamInfo(self.sid, self.rate_mhz, self.spec.units, self.gain, self.offset,
                          self.spec.channels, self.spec.dtype)

    def set_rate(self, rate_mhz: int) -> None:
        """Resample the recording (linear interpolation) so it plays at ``rate_mhz``."""
        content_fs = rate_mhz / 1000.0 / self.speed
        src = self.spec.values
        t_src = np.arange(src.shape[0]) / self.spec.fs_hz
        t_new = np.arange(int(np.floor(self.spec.duration_s * content_fs))) / content_fs
        t_new = t_new if t_new.size else np.zeros(1)
        new = np.column_stack([np.interp(t_new, t_src, src[:, c]) for c in range(src.shape[1])])
        played_s = self.pos / (self.fs_hz / self.speed)
        self._set_content(new, rate_mhz / 1000.0)
        self.rate_mhz = int(rate_mhz)
        self.fs_hz = self.rate_mhz / 1000.0
        self.pos = min(int(round(played_s * content_fs)), self.raw.shape[0])

    def anchor(self, device_us: float) -> None:
        self.anchor_us, self.anchor_pos = device_us, self.pos

    def sample_us(self, index: int) -> float:
        return self.anchor_us + (index - self.anchor_pos) * 1e6 / self.fs_hz

    def next_due_us(self) -> float:
        """Device time at which the next block's last sample is taken."""
        last = min(self.pos + self.block, self.raw.shape[0]) - 1
        return self.sample_us(last)


class SimulatedSensorBoard:
    """A sensor board on a pseudo-terminal that speaks the emofuse wire protocol.

    Behaviour follows docs/protocol.md section 7: at boot a lone 0x00 and a DEVICE_INFO; all
    streams stopped until START; every intact command gets one ACK (GET_INFO and a successful
    SET_RATE are followed by a DEVICE_INFO); per-stream seq counts across STOP/START. Each
    stream is sent in blocks of ``block_s`` seconds, a block when the board's clock passes
    its last sample; the first sample of the block is stamped in ``t_us``. The device clock
    counts microseconds from ``clock_start_us`` at boot, at ``1 + drift_ppm * 1e-6`` us per
    host us. SET_RATE resamples the recording by linear interpolation.

    Args:
        streams: what to play; at most one per stream name. None plays
            :func:`synth_streams` (60 s, 72 bpm).
        speed: playback speed (> 0); the announced rates scale with it (module docstring).
        block_s: seconds of samples per message (the protocol allows up to 0.1).
        drift_ppm: device clock rate error, ppm (positive: the device clock runs fast).
        clock_start_us: device clock at boot, us.
        loop: start the recording again at its end; False stops each stream there
            (:meth:`wait_finished` then returns).
        autostart: stream without waiting for START (a board with no command input).
        faults: line faults to inject; None for a clean line.
        link_path: where to keep the stable link to the current ``/dev/pts/N``; None makes
            one in a new temporary folder (removed by :meth:`close`).
        reboot_on_replug: after a replug the board has rebooted (bus powered): clock, seq
            and streams start afresh, as at boot. False: it kept running on its battery.
        record_messages: keep every message in :attr:`truth` (memory grows with time; the
            counters are kept either way).
        device_id, name: what the DEVICE_INFO says.

    Raises:
        ConfigError: a setting out of range, or two streams with the same name.
        DeviceError: no pseudo-terminal could be opened, or the link cannot be made.
    """

    def __init__(
        self,
        streams: list[BoardStream] | None = None,
        *,
        speed: float = 1.0,
        block_s: float = 0.02,
        drift_ppm: float = 0.0,
        clock_start_us: int = 1_000_000,
        loop: bool = False,
        autostart: bool = False,
        faults: LineFaults | None = None,
        link_path: str | Path | None = None,
        reboot_on_replug: bool = False,
        record_messages: bool = True,
        device_id: int = 0x5EED0001,
        name: str = "emofuse-sim",
    ) -> None:
        if not (np.isfinite(speed) and 0 < speed <= 1000):
            raise ConfigError(f"speed must be within 0-1000, got {speed!r}")
        if not (np.isfinite(block_s) and 0 < block_s <= 0.1):
            raise ConfigError(f"block_s must be within 0-0.1 s (docs/protocol.md section 9), got {block_s!r}")
        if not (np.isfinite(drift_ppm) and abs(drift_ppm) <= 10000):
            raise ConfigError(f"drift_ppm must be within +-10000, got {drift_ppm!r}")
        if isinstance(clock_start_us, bool) or not isinstance(clock_start_us, (int, np.integer)) or clock_start_us < 0:
            raise ConfigError(f"clock_start_us must be a non-negative integer, got {clock_start_us!r}")
        specs = synth_streams(duration_s=60.0) if streams is None else list(streams)
        if not specs or not all(isinstance(s, BoardStream) for s in specs):
            raise ConfigError("streams must be a non-empty list of BoardStream")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError(f"each stream name at most once, got {names}")
        self.speed = float(speed)
        self.drift_ppm = float(drift_ppm)
        self.clock_start_us = int(clock_start_us)
        self.loop = bool(loop)
        self.autostart = bool(autostart)
        self.faults = faults or LineFaults()
        self.reboot_on_replug = bool(reboot_on_replug)
        self.record_messages = bool(record_messages)
        self.device_id = int(device_id)
        self.name = name
        self.truth = BoardTruth(samples_made={s.name: 0 for s in specs})
        self._streams = {st.sid: st for st in (_Stream(s, self.speed, float(block_s)) for s in specs)}
        try:  # a name or id the wire cannot carry fails here, not later in the board's thread
            DeviceInfo((0, 1, 0), self.device_id, self.name, tuple(st.info() for st in self._streams.values()))
        except BadInputError as exc:
            raise ConfigError(f"simulated board: {exc}") from None

        seeds = np.random.SeedSequence(int(self.faults.seed)).spawn(3)
        self._rng_flip, self._rng_drop, self._rng_garbage = (np.random.default_rng(s) for s in seeds)

        self._own_dir: Path | None = None
        if link_path is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="emofuse-sim-"))
            link_path = self._own_dir / "ttyEMOFUSE0"
        self.path = str(link_path)
        self.pty_path = ""
        self._master: int | None = None
        self._slave: int | None = None
        self._cmd_decoder = Decoder()
        self._synced = True
        self._overflowing = False
        self._backlog: deque[tuple[bytes, SentMessage]] = deque()
        self._info_seq = 0
        self._requests: deque[tuple[str, float]] = deque()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self.error: BaseException | None = None

        t0 = time.monotonic_ns()
        f = self.faults
        self._next_pause_ns = None if f.pause_every_s is None else t0 + int(f.pause_every_s * 1e9)
        self._pause_end_ns: int | None = None
        self._next_unplug_ns = None if f.unplug_every_s is None else t0 + int(f.unplug_every_s * 1e9)
        self._replug_ns: int | None = None
        self._plug()
        self._boot(t0)
        self._thread = threading.Thread(target=self._run, name="simulated-board", daemon=True)
        self._thread.start()

    # -- public API ------------------------------------------------------------------------
    def __enter__(self) -> SimulatedSensorBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def plugged(self) -> bool:
        """True while the pseudo-terminal exists and the stable link points at it."""
        return self._master is not None

    @property
    def streams(self) -> dict[str, StreamInfo]:
        """Stream name -> what the board announces now (rate, units, gain, offset)."""
        return {st.spec.name: st.info() for st in self._streams.values()}

    def device_time_us(self, host_ns: int | None = None) -> int:
        """The board's clock, us, at host monotonic time ``host_ns`` (now when None)."""
        host_ns = time.monotonic_ns() if host_ns is None else host_ns
        return int(self._device_us(host_ns))

    def unplug(self, for_s: float) -> None:
        """Pull the cable now and put it back after ``for_s`` seconds.

        Raises:
            ConfigError: ``for_s`` not > 0.
        """
        if not (np.isfinite(for_s) and for_s > 0):
            raise ConfigError(f"for_s must be > 0, got {for_s!r}")
        self._requests.append(("unplug", float(for_s)))

    def pause(self, for_s: float) -> None:
        """Stop sending now for ``for_s`` seconds (messages queue and go out afterwards).

        Raises:
            ConfigError: ``for_s`` not > 0.
        """
        if not (np.isfinite(for_s) and for_s > 0):
            raise ConfigError(f"for_s must be > 0, got {for_s!r}")
        self._requests.append(("pause", float(for_s)))

    def wait_finished(self, timeout_s: float | None = None) -> bool:
        """Wait until every stream has played to its end (never, with ``loop``).

        Returns:
            True when finished, False on timeout.

        Raises:
            DeviceError: the board's thread failed.
        """
        done = self._finished.wait(timeout_s)
        if self.error is not None:
            raise DeviceError(f"simulated board failed: {self.error}") from self.error
        return done

    def close(self) -> None:
        """Stop the board, close the pseudo-terminal and remove the link. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        for _, rec in self._backlog:
            rec.lost = "closed"
        self._backlog.clear()
        self._unplug_now(count=False)
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    # -- pseudo-terminal ---------------------------------------------------------------------
    def _plug(self) -> None:
        try:
            master, slave = os.openpty()
        except OSError as exc:
            raise DeviceError(f"cannot open a pseudo-terminal: {exc.strerror or exc}") from exc
        # Raw mode: no echo, no CR/LF translation, no line buffering; the protocol is binary.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.pty_path = os.ttyname(slave)
        link = Path(self.path)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        try:
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(self.pty_path, tmp)
            os.replace(tmp, link)  # atomic: a host never sees a half-made link
        except OSError as exc:
            self._unplug_now(count=False)
            raise DeviceError(f"cannot make the link {link} -> {self.pty_path}: {exc.strerror or exc}") from exc
        self._cmd_decoder = Decoder()
        self._synced = True
        self._overflowing = False
        log.info("simulated board plugged in at %s -> %s", self.path, self.pty_path)

    def _unplug_now(self, count: bool = True) -> None:
        try:
            if Path(self.path).is_symlink():
                os.unlink(self.path)
        except OSError:
            pass  # already gone
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if count and self._master is not None:
            self.truth.unplugs += 1
            log.info("simulated board unplugged from %s", self.path)
        self._master = self._slave = None

    # -- device clock and boot ---------------------------------------------------------------
    def _device_us(self, host_ns: int) -> float:
        return self._boot_dev_us + (host_ns - self._boot_host_ns) / 1000.0 * (1.0 + self.drift_ppm * 1e-6)

    def _host_ns(self, device_us: float) -> int:
        return self._boot_host_ns + int((device_us - self._boot_dev_us) * 1000.0 / (1.0 + self.drift_ppm * 1e-6))

    def _boot(self, host_ns: int) -> None:
        self._boot_host_ns = host_ns
        self._boot_dev_us = float(self.clock_start_us)
        self._info_seq = 0
        now_us = self._device_us(host_ns)
        for st in self._streams.values():
            st.seq = 0
            st.running = self.autostart
            st.anchor(now_us)
        self._write_raw(b"\x00")
        self._send_info(host_ns)

    # -- thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                now = time.monotonic_ns()
                self._requests_and_schedule(now)
                wait_s = self._emit_due(now)
                if self._master is not None and self._pause_end_ns is None:
                    self._flush_backlog()
                if self._master is not None:
                    try:
                        ready, _, _ = select.select([self._master], [], [], wait_s)
                    except (OSError, ValueError):
                        ready = []
                    if ready:
                        self._read_commands(time.monotonic_ns())
                else:
                    self._stop.wait(wait_s)
        except Exception as exc:  # noqa: BLE001 - kept for wait_finished() to raise in the caller
            log.exception("simulated board thread failed")
            self.error = exc
            self._finished.set()

    def _requests_and_schedule(self, now: int) -> None:
        f = self.faults
        while self._requests:
            kind, for_s = self._requests.popleft()
            if kind == "unplug" and self._master is not None:
                self._do_unplug(now, for_s)
            elif kind == "pause" and self._pause_end_ns is None:
                self._pause_end_ns = now + int(for_s * 1e9)
                self.truth.pauses += 1
        if self._next_unplug_ns is not None and now >= self._next_unplug_ns and self._master is not None:
            self._next_unplug_ns = None
            self._do_unplug(now, f.unplug_s)
        if self._replug_ns is not None and now >= self._replug_ns:
            self._replug_ns = None
            self._plug()
            if self.reboot_on_replug:
                self._boot(now)
            if f.unplug_every_s is not None:
                self._next_unplug_ns = now + int(f.unplug_every_s * 1e9)
        if self._next_pause_ns is not None and now >= self._next_pause_ns and self._pause_end_ns is None:
            self._pause_end_ns = now + int(f.pause_s * 1e9)
            self._next_pause_ns = self._pause_end_ns + int(f.pause_every_s * 1e9)
            self.truth.pauses += 1
        if self._pause_end_ns is not None and now >= self._pause_end_ns:
            self._pause_end_ns = None

    def _do_unplug(self, now: int, for_s: float) -> None:
        self._unplug_now()
        for _, rec in self._backlog:
            rec.lost = "unplugged"
            self.truth.messages_lost_unplugged += 1
        self._backlog.clear()
        self._replug_ns = now + int(for_s * 1e9)

    def _emit_due(self, now: int) -> float:
        """Send every block whose last sample the clock has passed; seconds to the next one.

        Blocks go out in the order of their due times across streams (ties by stream id),
        whatever the thread's timing, so the packet sequence, and with it every injected
        fault, is the same on every run with the same seed.
        """
        now_us = self._device_us(now)
        while True:
            due = [(st.next_due_us(), sid) for sid, st in self._streams.items() if st.running and not st.done]
            if not due:
                break
            due_us, sid = min(due)
            if due_us > now_us:
                break
            st = self._streams[sid]
            start = st.pos
            stop = min(start + st.block, st.raw.shape[0])
            msg = SamplesMessage(sid, st.seq, int(round(st.sample_us(start))), st.spec.dtype,
                                 st.spec.channels, st.raw[start:stop])
            st.seq = (st.seq + 1) % _SEQ_MOD
            st.pos = stop
            self.truth.samples_made[st.spec.name] += stop - start
            self._send(msg, "samples", raw=msg.samples)
            if st.done and self.loop:
                st.pos = 0
                st.anchor_pos -= st.raw.shape[0]
        if all(st.done for st in self._streams.values()):
            self._finished.set()
        if not due:
            return _TICK_S
        return float(np.clip((self._host_ns(min(due)[0]) - now) / 1e9, 0.0, _TICK_S))

    def _read_commands(self, now: int) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:
                return  # no host has the port open
            raise
        for msg in self._cmd_decoder.feed(data):
            if isinstance(msg, Command):
                self.truth.commands.append(msg)
                self._answer(msg, now)

    def _answer(self, cmd: Command, now: int) -> None:
        now_us = self._device_us(now)
        op, sid = cmd.opcode, cmd.stream_id
        status, detail, info_after = Status.OK, "", False
        if op in (Opcode.START, Opcode.STOP):
            targets = list(self._streams.values()) if sid == ALL_STREAMS else (
                [self._streams[sid]] if sid in self._streams else None)
            if targets is None:
                status, detail = Status.BAD_STREAM, f"no stream 0x{sid:02x}"
            else:
                for st in targets:
                    if op == Opcode.START and not st.running:
                        st.running = True
                        st.anchor(now_us)
                    elif op == Opcode.STOP:
                        st.running = False
        elif op == Opcode.SET_RATE:
            st = self._streams.get(sid)
            if st is None:
                status, detail = Status.BAD_STREAM, f"no stream 0x{sid:02x}"
            elif not 0 < cmd.rate_mhz <= _MAX_SET_RATE_HZ * 1000:
                status, detail = Status.BAD_RATE, f"rate must be within 0-{_MAX_SET_RATE_HZ:g} Hz"
            else:
                st.set_rate(cmd.rate_mhz)
                st.anchor(now_us)
                info_after = True
        elif op == Opcode.GET_INFO:
            info_after = True
        else:
            status, detail = Status.UNKNOWN_OPCODE, f"opcode 0x{int(op):02x}"
        self._send(Ack(op, status, sid, cmd.seq, int(now_us), detail), "ack")
        if info_after:
            self._send_info(now)

    def _send_info(self, now: int) -> None:
        info = DeviceInfo((0, 1, 0), self.device_id, self.name,
                          tuple(st.info() for st in self._streams.values()),
                          self._info_seq, int(self._device_us(now)))
        self._info_seq = (self._info_seq + 1) % _SEQ_MOD
        self._send(info, "info")

    # -- the line ----------------------------------------------------------------------------
    def _send(self, msg: object, kind: str, raw: np.ndarray | None = None) -> None:
        rec = SentMessage(kind, getattr(msg, "stream_id", NO_STREAM), msg.seq, msg.t_us, raw)
        self.truth.messages_made += 1
        if self.record_messages:
            self.truth.messages.append(rec)
        packet = encode(msg)
        if self._master is None:
            rec.lost = "unplugged"
            self.truth.messages_lost_unplugged += 1
        elif self._pause_end_ns is not None or self._backlog:
            self._backlog.append((packet, rec))
        else:
            self._transmit(packet, rec)

    def _flush_backlog(self) -> None:
        while self._backlog and self._master is not None:
            packet, rec = self._backlog.popleft()
            self._transmit(packet, rec)

    def _transmit(self, packet: bytes, rec: SentMessage) -> None:
        f = self.faults
        t = self.truth
        if f.garbage_rate > 0 and self._rng_garbage.random() < f.garbage_rate:
            n = int(self._rng_garbage.integers(1, _GARBAGE_MAX_BYTES + 1))
            burst = self._rng_garbage.integers(1, 256, n, dtype=np.uint8).tobytes() + b"\x00"
            if self._write_raw(burst) == len(burst):
                t.garbage_bursts += 1
                t.garbage_bytes += len(burst)
                self._synced = True
        wire = np.frombuffer(packet, dtype=np.uint8).copy()
        damaged = False
        if f.bit_flip_rate > 0:
            hit = np.flatnonzero(self._rng_flip.random(wire.size) < f.bit_flip_rate)
            if hit.size:
                bits = self._rng_flip.integers(0, 8, hit.size)
                wire[hit] ^= (1 << bits).astype(np.uint8)
                t.bytes_flipped += int(hit.size)
                damaged = True
        if f.drop_rate > 0:
            keep = self._rng_drop.random(wire.size) >= f.drop_rate
            n_drop = int(wire.size - keep.sum())
            if n_drop:
                wire = wire[keep]
                t.bytes_dropped += n_drop
                damaged = True
        data = wire.tobytes()
        written = self._write_raw(data)
        if written < len(data):
            rec.lost = "overflow"
            self._synced = False
            return
        rec.written = True
        t.frames_written += 1
        if damaged:
            rec.damaged = True
            t.frames_damaged += 1
        rec.intact = self._synced and not damaged
        t.frames_intact += rec.intact
        # A receiver is in sync for the next packet only if the line's last byte is a 0x00.
        self._synced = bool(data) and data[-1] == 0 or (not data and self._synced)

    def _write_raw(self, data: bytes) -> int:
        """Write to the master end; returns the bytes written (short when the host stalls)."""
        done = 0
        deadline = time.monotonic() + (0.0 if self._overflowing else _WRITE_PATIENCE_S)
        while done < len(data) and self._master is not None:
            try:
                done += os.write(self._master, data[done:])
                self._overflowing = False
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                break
            select.select([], [self._master], [], min(left, _TICK_S))
        if done < len(data):
            self._overflowing = True
            self.truth.bytes_overflowed += len(data) - done
        self.truth.bytes_written += done
        return done
