"""A simulated sensor board on a pseudo-terminal: the emofuse wire protocol without hardware.

:class:`SimulatedSensorBoard` opens a pseudo-terminal pair (``os.openpty``), keeps the master
end, and exposes the slave end, a real tty (``/dev/pts/N``), through a stable symbolic link
that a host opens like any serial port, e.g. with
:class:`~firmware_bridge.transports.serial.SerialSensorSource`. A thread plays ECG, PPG and
EDA (from the synthetic generator :mod:`firmware_bridge.sim`, or from recorded arrays) as
protocol messages, paced by the board's own microsecond clock, and answers commands as
``docs/protocol.md`` section 7 says a device must::

    from firmware_bridge.simdevice import SimulatedSensorBoard, synth_streams
    from firmware_bridge.transports.serial import SerialSensorSource

    with SimulatedSensorBoard(synth_streams(duration_s=30, hr_bpm=72)) as board:
        with SerialSensorSource(board.path) as source:
            chunk = source.read()

Faults of the line are injected deterministically from a seed (:class:`LineFaults`): bit
flips and dropped bytes at a per-byte rate, bursts of garbage, pauses (the board stops
sending for a while, then sends its backlog), and unplug/replug (the pty pair is closed and a
new one opened; the stable link is removed while unplugged and then re-pointed at the new
``/dev/pts/N``, the way udev keeps ``/dev/serial/by-id/...`` stable). The board behaves like
a battery-powered board behind a USB-serial bridge: while unplugged it keeps sampling, and
what it samples meanwhile is lost (``reboot_on_replug`` models a bus-powered board instead).
Every message the board makes and every fault it injects is recorded in
:class:`BoardTruth`, so a test can check a host's counters against the truth.

Speed: ``speed`` > 1 plays the recording faster. The device clock always runs in real time
(a host must be able to map it onto its own clock), so a faster playback is announced as a
proportionally higher sample rate: at ``speed=10`` a 250 Hz ECG is sent as a 2500 Hz stream
of the same samples.

The package's modules: ``streams`` (what the board plays), ``faults`` (line faults and the
ground truth) and ``board`` (the board on its pseudo-terminal); every name is reached here.
"""
from firmware_bridge.simdevice.board import SimulatedSensorBoard
from firmware_bridge.simdevice.faults import BoardTruth, LineFaults, SentMessage
from firmware_bridge.simdevice.streams import (
    NEUROKIT_COLUMNS, BoardStream, neurokit_streams, streams_from_spec, synth_streams, wfdb_streams,
)

__all__ = [
    "BoardStream",
    "BoardTruth",
    "LineFaults",
    "NEUROKIT_COLUMNS",
    "SentMessage",
    "SimulatedSensorBoard",
    "neurokit_streams",
    "streams_from_spec",
    "synth_streams",
    "wfdb_streams",
]
