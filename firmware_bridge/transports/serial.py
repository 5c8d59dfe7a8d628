"""Serial transport: sensor chunks from a board that speaks the emofuse wire protocol on a UART.

A USB-serial adapter (``/dev/ttyUSB0``, ``/dev/ttyACM0``, a stable ``/dev/serial/by-id/...``
link) or the simulated board's pseudo-terminal (:mod:`firmware_bridge.simdevice`) is opened
with pyserial, the board is asked for its device info and told to start, and a background
thread reads bytes, feeds :class:`~firmware_bridge.protocol.decoder.Decoder`, maps device
timestamps onto the host monotonic clock with :class:`~firmware_bridge.clock.ClockSync` and
queues one :class:`~firmware_bridge.types.SensorChunk` per samples message::

    from firmware_bridge.transports.serial import SerialSensorSource

    with SerialSensorSource("/dev/ttyUSB0") as source:
        for chunk in source:          # SensorChunk: stream, fs_hz, t0_ns, samples (physical units)
            ...

When the port goes away (cable pulled: the read fails, or the device node disappears) the
thread closes it, logs a warning and reopens the same path with exponential back-off. The
board keeps sampling while the link is down, so the first chunk of a stream after the gap
shows it: its ``seq`` jumps and ``meta["lost_before"]`` / ``meta["gap_before_s"]`` say how
many messages and how many seconds of samples were lost. :meth:`SerialSensorSource.stats`
holds the decoder's counters (CRC errors, malformed frames, sequence gaps), bytes read and
reconnects.

pyserial is an optional dependency (extra ``sensors``), imported when a source is made.

Length (about 630 lines) on purpose: nearly all of it is :class:`SerialSensorSource`, one
port's life (open, handshake, reader thread, command retries, reconnect), whose parts share
its lock and state and would not stand alone.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np

from firmware_bridge.clock import ClockSync
from firmware_bridge.errors import (
    BadInputError,
    ConfigError,
    DeviceError,
    SourceEndedError,
    require,
)
from firmware_bridge.protocol.decoder import Decoder
from firmware_bridge.protocol.messages import (
    ALL_STREAMS,
    NO_STREAM,
    Ack,
    Command,
    DeviceInfo,
    Opcode,
    SamplesMessage,
    StreamInfo,
    encode,
    stream_id,
)
from firmware_bridge.types import SensorChunk

__all__ = ["DEFAULT_BAUDRATE", "SerialSensorSource", "open_serial_port"]

log = logging.getLogger(__name__)

#: 921600 baud moves about 92 kB/s: ECG at 1 kHz, two PPG channels at 500 Hz and EDA at 32 Hz
#: in int16 with framing overhead use under a tenth of it.
DEFAULT_BAUDRATE = 921600

_SEQ_MOD = 1 << 16
# Bytes asked of one read() call at most; more is simply read on the next turn of the loop.
_READ_MAX = 1 << 16
# Command retry rule of docs/protocol.md section 8: same seq after 250 ms, at most 3 times.
_RESEND_NS = 250_000_000
_MAX_RESENDS = 3


def _serial_module():
    return require("serial", "sensors", "serial sensor boards")


def _reason(exc: BaseException) -> str:
    """The OS reason of a failure (``"No such file or directory"``), without the prefixes
    pyserial wraps around it; the exception's text when there is none."""
    seen: BaseException | None = exc
    while seen is not None:
        strerror = getattr(seen, "strerror", None)
        if isinstance(strerror, str) and strerror and "could not open port" not in strerror:
            return strerror
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def open_serial_port(port: str, baudrate: int = DEFAULT_BAUDRATE, timeout_s: float = 0.05):
    """Open a serial port in raw 8N1 mode with pyserial.

    Args:
        port: device path, e.g. ``"/dev/ttyUSB0"`` or a pseudo-terminal's ``/dev/pts/N``.
        baudrate: line rate, baud (ignored by pseudo-terminals and USB CDC-ACM boards).
        timeout_s: read timeout, s: a read returns what arrived within it.

    Returns:
        An open ``serial.Serial``.

    Raises:
        MissingDependencyError: pyserial is not installed.
        DeviceError: the port does not exist, is busy, or cannot be configured; one line
            naming the port and the reason.
    """
    serial = _serial_module()
    try:
        return serial.Serial(port, baudrate=baudrate, timeout=timeout_s, write_timeout=1.0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DeviceError(f"cannot open serial port {port}: {_reason(exc)}") from exc


class SerialSensorSource:
    """Sensor chunks from a board on a serial port, speaking the emofuse wire protocol.

    Opening the source opens the port (failing at once if it cannot), asks the board for its
    :class:`~firmware_bridge.protocol.messages.DeviceInfo` (rates, units, gain and offset of
    every stream), sends START, and starts a reader thread. Each samples message becomes one
    :class:`SensorChunk`:

    - ``stream``, ``fs_hz``, ``units`` from the device info (a message that arrives before the
      info is held, bounded, until it comes; the info is asked for again every
      ``info_timeout_s`` until it does);
    - ``samples``: float64 ``raw * gain + offset``, shape (N,) for one channel, (N, C) else;
    - ``t0_ns``: host monotonic time of the first sample, from the device timestamp mapped by
      :class:`ClockSync` (minimum filtering and a Theil-Sen line, Moon et al., IEEE INFOCOM
      1999), which is fed each message's *last* sample time (when the board sent it) against
      its arrival time;
    - ``seq``, ``device_t0_us`` from the message header; ``source`` ``"serial://<port>"``;
    - ``meta``: ``lost_before`` (messages of this stream lost just before this one, from the
      uint16 sequence number), ``gap_before_s`` (device seconds between the end of the
      previous chunk of this stream and the start of this one: 0 when nothing was lost),
      ``device_reset`` (the device clock went back: a reboot) and ``reconnects`` so far.

    On a read error or a vanished port the reader reconnects to the same path with
    exponential back-off from ``backoff_s[0]`` to ``backoff_s[1]``; after
    ``reconnect_timeout_s`` without success the source ends (:meth:`read` then raises
    :class:`SourceEndedError`). A frame cut in half by the unplug counts as one damaged
    frame in the decoder's counters.

    Chunks wait in a queue of at most ``max_queue`` chunks; when the consumer falls that far
    behind the oldest are dropped and counted (``stats()["chunks_dropped"]``).

    Args:
        port: device path (e.g. ``"/dev/ttyUSB0"``, ``"/dev/serial/by-id/..."``, the
            simulated board's stable link).
        baudrate: line rate, baud, > 0.
        streams: names of the streams to start and deliver (e.g. ``("ecg", "eda")``); None
            starts all streams the board has.
        read_timeout_s: longest a read blocks, s; bounds how fast :meth:`close` returns.
        info_timeout_s: how long to wait for the device info before asking again, s.
        reconnect: reopen the port after it is lost; False ends the source instead.
        backoff_s: (first, longest) wait between reconnect attempts, s.
        reconnect_timeout_s: give up after this long without a connection, s; None retries
            for ever.
        max_queue: chunks held for the consumer at most.
        latency_ns: known constant transport delay, ns, passed to :class:`ClockSync`.
        clock: a :class:`ClockSync` to use (e.g. with other settings); None makes one.

    Raises:
        MissingDependencyError: pyserial is not installed.
        ConfigError: a setting out of range or an unknown stream name.
        DeviceError: the port cannot be opened.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = DEFAULT_BAUDRATE,
        *,
        streams: Sequence[str] | None = None,
        read_timeout_s: float = 0.05,
        info_timeout_s: float = 1.0,
        reconnect: bool = True,
        backoff_s: tuple[float, float] = (0.05, 2.0),
        reconnect_timeout_s: float | None = None,
        max_queue: int = 10000,
        latency_ns: int = 0,
        clock: ClockSync | None = None,
    ) -> None:
        if not isinstance(port, str) or not port:
            raise ConfigError(f"port must be a non-empty path, got {port!r}")
        if isinstance(baudrate, bool) or not isinstance(baudrate, (int, np.integer)) or baudrate <= 0:
            raise ConfigError(f"baudrate must be a positive integer, got {baudrate!r}")
        for name, value in (("read_timeout_s", read_timeout_s), ("info_timeout_s", info_timeout_s)):
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if np.shape(backoff_s) != (2,) or not 0 < backoff_s[0] <= backoff_s[1] or not np.isfinite(backoff_s[1]):
            raise ConfigError(f"backoff_s must be (first, longest) with 0 < first <= longest, got {backoff_s!r}")
        if reconnect_timeout_s is not None and not (np.isfinite(reconnect_timeout_s) and reconnect_timeout_s > 0):
            raise ConfigError(f"reconnect_timeout_s must be > 0 or None, got {reconnect_timeout_s!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, (int, np.integer)) or max_queue < 1:
            raise ConfigError(f"max_queue must be an integer >= 1, got {max_queue!r}")
        if isinstance(streams, str):
            streams = (streams,)
        try:
            self._stream_ids = None if streams is None else tuple(stream_id(s) for s in streams)
        except BadInputError as exc:
            raise ConfigError(str(exc)) from None
        self._serial_mod = _serial_module()
        self.port = port
        self.baudrate = int(baudrate)
        self.source = f"serial://{port}"
        self.read_timeout_s = float(read_timeout_s)
        self.info_timeout_s = float(info_timeout_s)
        self.reconnect = bool(reconnect)
        self.backoff_s = (float(backoff_s[0]), float(backoff_s[1]))
        self.reconnect_timeout_s = reconnect_timeout_s
        self.clock = clock if clock is not None else ClockSync(latency_ns=latency_ns, name=port)

        self.decoder = Decoder()
        self.device_info: DeviceInfo | None = None
        self._infos: dict[int, StreamInfo] = {}
        self._pending: deque[tuple[SamplesMessage, int]] = deque(maxlen=max(64, int(max_queue)))
        self._last: dict[int, tuple[int, int]] = {}  # stream id -> (seq, device us after its last sample)
        self._queue: deque[SensorChunk] = deque()
        self._max_queue = int(max_queue)
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._acks: dict[int, Ack] = {}
        self._unacked: dict[int, list] = {}  # seq -> [command, last sent ns, resends]
        self._cmd_seq = 0
        self._stop = threading.Event()
        self._closed = False
        self._ended: str | None = None
        self._info_asked_ns = 0

        self.bytes_read = 0
        self.reconnects = 0
        self.disconnects = 0
        self.chunks = 0
        self.chunks_dropped = 0
        self.pending_dropped = 0
        self.acks_failed = 0
        self.commands_unanswered = 0
        self.down_s = 0.0

        self._serial = open_serial_port(port, self.baudrate, self.read_timeout_s)
        try:
            self._greet()
        except DeviceError:
            self._close_port()
            raise
        self._thread = threading.Thread(target=self._run, name=f"serial-{port}", daemon=True)
        self._thread.start()

    # -- public API ------------------------------------------------------------------------
    def __enter__(self) -> SerialSensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> SerialSensorSource:
        return self

    def __next__(self) -> SensorChunk:
        """The next chunk, waiting as long as it takes.

        Raises:
            StopIteration: after :meth:`close`, once the queued chunks are read.
            SourceEndedError: the port was lost and not regained (or ``reconnect`` is off).
        """
        try:
            chunk = self.read(timeout_s=None)
        except SourceEndedError:
            if self._ended == "closed":
                raise StopIteration from None
            raise
        return chunk  # never None: read() without a timeout returns a chunk or raises

    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return self._serial is not None

    def read(self, timeout_s: float | None = 1.0) -> SensorChunk | None:
        """The next chunk, waiting up to ``timeout_s`` seconds (None: until one comes).

        Returns:
            A :class:`SensorChunk`, or None when none arrived in time.

        Raises:
            SourceEndedError: the source was closed, or the port was lost and not regained,
                and every queued chunk has been read.
        """
        deadline = None if timeout_s is None else time.monotonic() + max(0.0, float(timeout_s))
        with self._cond:
            while not self._queue:
                if self._ended is not None:
                    raise SourceEndedError(f"{self.source}: {self._ended}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(timeout=left if left is not None else 0.5)
            return self._queue.popleft()

    def command(self, opcode: int, stream: str | int = ALL_STREAMS, rate_hz: float = 0.0,
                timeout_s: float | None = 1.0) -> Ack | None:
        """Send a command to the board and wait for its acknowledgement.

        Unanswered commands are resent with the same ``seq`` every 250 ms, at most 3 times
        (docs/protocol.md, section 8).

        Args:
            opcode: an :class:`~firmware_bridge.protocol.messages.Opcode`.
            stream: target stream name or id (:data:`ALL_STREAMS` for all).
            rate_hz: new rate for ``SET_RATE``, Hz.
            timeout_s: how long to wait for the :class:`Ack`, s; None sends without waiting.

        Returns:
            The board's :class:`Ack` (check ``ack.ok``), or None when not waiting.

        Raises:
            DeviceError: the port is down, or no acknowledgement came in time.
            BadInputError: an unknown stream name or an out-of-range rate.
        """
        sid = stream_id(stream) if isinstance(stream, str) else int(stream)
        rate_mhz = int(round(float(rate_hz) * 1000.0))
        seq = self._send(Command(opcode, sid, 0, rate_mhz))
        if timeout_s is None:
            return None
        deadline = time.monotonic() + float(timeout_s)
        with self._cond:
            while seq not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    name = getattr(Opcode, "_value2member_map_", {}).get(opcode, opcode)
                    raise DeviceError(f"{self.source}: no answer to {getattr(name, 'name', name)} "
                                      f"within {timeout_s} s")
                self._cond.wait(timeout=left)
            return self._acks.pop(seq)

    def set_rate(self, stream: str, fs_hz: float, timeout_s: float = 1.0) -> None:
        """Ask the board to sample ``stream`` at ``fs_hz``; later chunks carry the new rate.

        Raises:
            ConfigError: the board refused the rate (its reason is in the message).
            DeviceError: the port is down or the board did not answer.
        """
        ack = self.command(Opcode.SET_RATE, stream, fs_hz, timeout_s=timeout_s)
        if not ack.ok:
            raise ConfigError(f"{self.source}: board refused {fs_hz} Hz for {stream}: "
                              f"{getattr(ack.status, 'name', ack.status)} {ack.detail}".rstrip())

    def stats(self) -> dict[str, object]:
        """Counters for logs and result metadata: the decoder's (``frames_ok``,
        ``crc_errors``, ``malformed``, ``bytes_skipped``, ``seq_gaps`` ...) plus
        ``bytes_read``, ``chunks``, ``chunks_dropped``, ``pending_dropped`` (samples
        messages dropped waiting for device info), ``reconnects``, ``disconnects``,
        ``down_s`` (seconds without a port), ``connected``, ``port``, ``baudrate`` and the
        clock's ``drift_ppm``."""
        out: dict[str, object] = dict(self.decoder.stats())
        out.update(
            port=self.port,
            baudrate=self.baudrate,
            connected=self.connected,
            bytes_read=self.bytes_read,
            chunks=self.chunks,
            chunks_dropped=self.chunks_dropped,
            pending_dropped=self.pending_dropped,
            reconnects=self.reconnects,
            disconnects=self.disconnects,
            down_s=self.down_s,
            acks_failed=self.acks_failed,
            commands_unanswered=self.commands_unanswered,
            drift_ppm=self.clock.drift_ppm,
        )
        return out

    def close(self) -> None:
        """Tell the board to stop, stop the reader thread and close the port. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._stop.is_set():
            try:
                self._send(Command(Opcode.STOP, ALL_STREAMS, 0))
            except DeviceError:
                pass  # the board is gone already; nothing to stop
        self._stop.set()
        ser = self._serial
        if ser is not None:
            try:
                ser.cancel_read()
            except Exception:  # noqa: BLE001 - only a wake-up; join below still bounds the wait
                pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._close_port()
        self._end("closed")

    # -- reader thread ---------------------------------------------------------------------
    def _run(self) -> None:
        serial_exc = self._serial_mod.SerialException
        while not self._stop.is_set():
            ser = self._serial
            if ser is None:
                if not self._reconnect_loop():
                    return
                continue
            try:
                waiting = ser.in_waiting
                data = ser.read(min(max(1, waiting), _READ_MAX))
            except (serial_exc, OSError, TypeError, AttributeError) as exc:
                # TypeError/AttributeError: pyserial touching a handle that close() just
                # dropped from another thread.
                if self._stop.is_set():
                    return
                self._lost(exc)
                continue
            host_ns = time.monotonic_ns()
            if data:
                self.bytes_read += len(data)
                for msg in self.decoder.feed(data):
                    self._handle(msg, host_ns)
            if self.device_info is None and host_ns - self._info_asked_ns > self.info_timeout_s * 1e9:
                try:
                    self._send(Command(Opcode.GET_INFO, NO_STREAM, 0))
                except DeviceError:
                    pass  # the read of the next turn will see the lost port
            self._resend_unanswered(host_ns)

    def _lost(self, exc: BaseException) -> None:
        self.disconnects += 1
        log.warning("%s: port lost (%s); %s", self.source, _reason(exc),
                    "reconnecting" if self.reconnect else "ending")
        self._close_port()
        # A frame cut off by the unplug must not glue onto the first bytes after the
        # reconnect; a delimiter ends it (it counts as one damaged frame).
        if self.decoder.pending:
            self.decoder.feed(b"\x00")
        # What comes back on this path may be another board: hold its samples until it has
        # said what they are.
        self.device_info = None
        self._infos = {}
        if not self.reconnect:
            self._end(f"port lost ({_reason(exc)})")
            self._stop.set()

    def _reconnect_loop(self) -> bool:
        """Reopen the port with back-off; False when giving up or closing."""
        t_lost = time.monotonic()
        wait = self.backoff_s[0]
        attempts = 0
        while not self._stop.is_set():
            attempts += 1
            try:
                ser = open_serial_port(self.port, self.baudrate, self.read_timeout_s)
            except DeviceError as exc:
                down = time.monotonic() - t_lost
                if self.reconnect_timeout_s is not None and down >= self.reconnect_timeout_s:
                    log.error("%s: giving up after %.1f s and %d attempts: %s", self.source, down, attempts, exc)
                    self.down_s += down
                    self._end(f"port lost and not regained within {self.reconnect_timeout_s} s ({exc})")
                    self._stop.set()
                    return False
                log.debug("%s: reconnect attempt %d failed: %s; next in %.2f s", self.source, attempts, exc, wait)
                self._stop.wait(wait)
                wait = min(2.0 * wait, self.backoff_s[1])
                continue
            self._serial = ser
            self.down_s += time.monotonic() - t_lost
            self.reconnects += 1
            log.warning("%s: reconnected after %.2f s (%d attempts, reconnect %d)",
                        self.source, time.monotonic() - t_lost, attempts, self.reconnects)
            try:
                self._greet()
            except DeviceError as exc:
                self._lost(exc)
            return True
        return False

    def _greet(self) -> None:
        """Ask for the device info and start the wanted streams."""
        with self._write_lock:
            self._unacked.clear()  # commands to the previous connection are moot
        self._send(Command(Opcode.GET_INFO, NO_STREAM, 0))
        for sid in self._stream_ids or (ALL_STREAMS,):
            self._send(Command(Opcode.START, sid, 0))

    def _send(self, cmd: Command) -> int:
        """Number and write a command, and remember it until its ACK comes; returns its seq."""
        with self._write_lock:
            self._cmd_seq = (self._cmd_seq + 1) % _SEQ_MOD
            cmd = Command(cmd.opcode, cmd.stream_id, self._cmd_seq, cmd.rate_mhz, time.monotonic_ns() // 1000)
            now = time.monotonic_ns()
            if cmd.opcode == Opcode.GET_INFO:
                self._info_asked_ns = now
            self._write(cmd)
            self._unacked[cmd.seq] = [cmd, now, 0]
            return cmd.seq

    def _write(self, cmd: Command) -> None:
        ser = self._serial
        if ser is None:
            raise DeviceError(f"{self.source}: port is not connected")
        try:
            ser.write(encode(cmd))
            ser.flush()
        except (self._serial_mod.SerialException, OSError, TypeError, AttributeError) as exc:
            raise DeviceError(f"{self.source}: write failed: {_reason(exc)}") from exc

    def _resend_unanswered(self, now_ns: int) -> None:
        with self._write_lock:
            for seq, entry in list(self._unacked.items()):
                cmd, sent_ns, resends = entry
                if now_ns - sent_ns < _RESEND_NS:
                    continue
                if resends >= _MAX_RESENDS:
                    del self._unacked[seq]
                    self.commands_unanswered += 1
                    log.warning("%s: %s (seq %d) unanswered after %d resends", self.source,
                                getattr(cmd.opcode, "name", cmd.opcode), seq, resends)
                    continue
                try:
                    self._write(cmd)
                except DeviceError:
                    return  # the read of the next turn will see the lost port
                entry[1], entry[2] = now_ns, resends + 1

    def _close_port(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except Exception:  # noqa: BLE001 - closing a dead port may fail in many ways; it is closed either way
                pass

    def _end(self, reason: str) -> None:
        with self._cond:
            if self._ended is None:
                self._ended = reason
            self._cond.notify_all()

    # -- messages --------------------------------------------------------------------------
    def _handle(self, msg: object, host_ns: int) -> None:
        if isinstance(msg, SamplesMessage):
            info = self._infos.get(msg.stream_id)
            if info is None:
                if self._stream_ids is None or msg.stream_id in self._stream_ids:
                    if len(self._pending) == self._pending.maxlen:
                        self.pending_dropped += 1
                    self._pending.append((msg, host_ns))
                return
            self._emit(msg, info, host_ns)
        elif isinstance(msg, DeviceInfo):
            self._take_info(msg, host_ns)
        elif isinstance(msg, Ack):
            if not msg.ok:
                self.acks_failed += 1
                log.warning("%s: board answered %s to command %s (seq %d): %s", self.source,
                            getattr(msg.status, "name", msg.status), getattr(msg.opcode, "name", msg.opcode),
                            msg.seq, msg.detail)
            with self._write_lock:
                self._unacked.pop(msg.seq, None)
            with self._cond:
                self._acks[msg.seq] = msg
                while len(self._acks) > 64:  # answers nobody waited for
                    self._acks.pop(next(iter(self._acks)))
                self._cond.notify_all()
        # Commands from the far end (an echoing line, a second host) carry nothing for us.

    def _take_info(self, info: DeviceInfo, host_ns: int) -> None:
        first = self.device_info is None
        self.device_info = info
        self._infos = {s.stream_id: s for s in info.streams}
        log.log(logging.INFO if first else logging.DEBUG, "%s: device %r id %d firmware %s: %s",
                self.source, info.name, info.device_id, ".".join(map(str, info.firmware_version)),
                ", ".join(f"{s.name} {s.fs_hz:g} Hz {s.units}" for s in info.streams))
        held, self._pending = list(self._pending), deque(maxlen=self._pending.maxlen)
        for msg, t_ns in held:
            s = self._infos.get(msg.stream_id)
            if s is None:
                self.pending_dropped += 1
                log.warning("%s: samples on stream %d that the device info does not announce; dropped",
                            self.source, msg.stream_id)
                continue
            self._emit(msg, s, t_ns)
        # After the held samples: the clock must see device times in the order they were sent.
        self.clock.update(info.t_us, host_ns)

    def _emit(self, msg: SamplesMessage, info: StreamInfo, host_ns: int) -> None:
        if self._stream_ids is not None and msg.stream_id not in self._stream_ids:
            return
        if msg.channels != info.channels or info.rate_mhz == 0:
            self.pending_dropped += 1
            log.warning("%s: %s message with %d channels at %g Hz contradicts the device info; dropped",
                        self.source, info.name, msg.channels, info.fs_hz)
            return
        n = msg.n_samples
        step_us = 1e6 / info.fs_hz
        # The board sends a block once its last sample is taken: that instant, not the first
        # sample's, is what the arrival time bounds from below.
        self.clock.update(msg.t_us + int(round(max(n - 1, 0) * step_us)), host_ns)
        end_us = msg.t_us + int(round(n * step_us))
        lost, gap_s, reset = 0, 0.0, False
        last = self._last.get(msg.stream_id)
        if last is not None:
            last_seq, last_end_us = last
            if msg.t_us + step_us < last_end_us:
                reset = True
            else:
                lost = (msg.seq - last_seq - 1) % _SEQ_MOD
                gap_s = (msg.t_us - last_end_us) / 1e6
        self._last[msg.stream_id] = (msg.seq, end_us)
        samples = info.to_physical(msg.samples)
        if info.channels == 1:
            samples = samples[:, 0]
        chunk = SensorChunk(
            stream=info.name,
            fs_hz=info.fs_hz,
            t0_ns=int(self.clock.to_host_ns(msg.t_us)),
            samples=samples,
            units=info.units,
            seq=msg.seq,
            device_t0_us=msg.t_us,
            source=self.source,
            meta={"lost_before": lost, "gap_before_s": gap_s, "device_reset": reset,
                  "reconnects": self.reconnects},
        )
        if lost:
            log.info("%s: %s lost %d messages (%.3f s) before seq %d", self.source, info.name, lost, gap_s, msg.seq)
        with self._cond:
            if len(self._queue) >= self._max_queue:
                self._queue.popleft()
                self.chunks_dropped += 1
            self._queue.append(chunk)
            self.chunks += 1
            self._cond.notify_all()
