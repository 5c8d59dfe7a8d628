"""Lab Streaming Layer inlets: any LSL stream (ECG, PPG, EDA, EEG...) as SensorChunk records.

LSL stamps each sample on the sender's ``local_clock()``; ``inlet.time_correction()`` is the
offset that maps the sender's clock onto this machine's LSL clock (estimated by liblsl from
NTP-like round trips, refreshed in the background). This module adds that, then the offset
between LSL's clock and ``time.monotonic_ns()`` (measured here by bracketing one with the
other), so every sample lands on the host monotonic clock the cameras use (Kothe et al.,
"The Lab Streaming Layer for synchronized multimodal recording", 2024; liblsl docs,
"Time synchronization").

pylsl needs the liblsl shared library; both come with ``pip install 'emofuse[sensors]'`` on
common platforms (on a Jetson, build liblsl for aarch64 or install the conda package).
"""
from __future__ import annotations

import logging
import time
from types import ModuleType

import numpy as np

from firmware_bridge.errors import (
    ConfigError,
    DeviceError,
    MissingDependencyError,
    SourceEndedError,
    require,
)
from firmware_bridge.types import SensorChunk

log = logging.getLogger(__name__)

_PURPOSE = "LSL streams"
#: How often the sender-to-local clock offset is asked again, s (liblsl refreshes it every ~5 s).
CORRECTION_REFRESH_S = 2.0


def import_pylsl(purpose: str = _PURPOSE) -> ModuleType:
    """Import pylsl, or raise one MissingDependencyError naming the extra (or the missing liblsl).

    The one place pylsl is imported: the LSL inlets here and the results outlet in
    ``edge.outputs`` both call it.

    Args:
        purpose: what needs pylsl, for the message (e.g. "the LSL results outlet").

    Returns:
        the pylsl module.

    Raises:
        MissingDependencyError: pylsl is not installed, or it is but cannot load liblsl
            (pylsl raises RuntimeError then, not ImportError).
    """
    try:
        return require("pylsl", "sensors", purpose)
    except (RuntimeError, OSError) as exc:
        raise MissingDependencyError(
            f"{purpose}: pylsl is installed but its liblsl library failed to load: {exc} "
            "(pip install 'emofuse[sensors]', or set PYLSL_LIB to liblsl's path)"
        ) from exc


def lsl_to_monotonic_offset_ns(local_clock, tries: int = 7) -> int:
    """Offset to add to ``local_clock() * 1e9`` to get ``time.monotonic_ns()``, ns.

    Each try reads the monotonic clock before and after one ``local_clock()`` call and takes
    the midpoint; the try with the shortest bracket wins (the Cristian / NTP minimum-delay
    rule), so a preempted read does not skew the result.

    Args:
        local_clock: a callable returning seconds (pylsl.local_clock).
        tries: number of brackets.

    Returns:
        The offset, int ns (about 0 on Linux, where both read CLOCK_MONOTONIC).
    """
    best = None
    for _ in range(max(1, tries)):
        before = time.monotonic_ns()
        lsl_ns = local_clock() * 1e9
        after = time.monotonic_ns()
        width = after - before
        if best is None or width < best[0]:
            best = (width, (before + after) / 2.0 - lsl_ns)
    return int(round(best[1]))


class LslSource:
    """Resolve one LSL stream and iterate its samples as SensorChunk records on the host clock.

    Each chunk: ``samples`` float64 (N,) for one channel or (N, C); ``fs_hz`` the stream's
    nominal rate (0.0 = irregular); ``t0_ns`` the first sample's host monotonic time;
    ``meta["t_ns"]`` int64 (N,) every sample's host time; ``device_t0_us`` the first
    sample's sender timestamp, us; ``units`` the first channel's ``unit`` from the stream
    description (``"a.u."`` if none).

    Args:
        name: stream name to match (``None``: any).
        type: stream type to match, e.g. ``"ECG"`` (``None``: any).
        timeout_s: longest wait to find the stream, and for data while iterating, s.
        stream: name for ``SensorChunk.stream`` (default: the LSL type, lower case, else the
            name).
        max_samples: largest chunk returned at once.

    Raises:
        MissingDependencyError: pylsl or liblsl missing (extra ``sensors``).
        ConfigError: timeout not > 0, or a string (marker) stream, not supported yet.
        DeviceError: no matching stream within ``timeout_s``.
        SourceEndedError: while iterating, no samples for ``timeout_s``.
    """

    def __init__(
        self,
        name: str | None = None,
        type: str | None = None,  # noqa: A002 - LSL's own word for it
        timeout_s: float = 5.0,
        stream: str | None = None,
        max_samples: int = 1024,
    ):
        self._lsl = lsl = import_pylsl()
        if not timeout_s > 0 or int(max_samples) < 1:
            raise ConfigError(
                f"LSL: need timeout_s > 0 and max_samples >= 1, got {timeout_s}, {max_samples}"
            )
        self.timeout_s = float(timeout_s)
        self.max_samples = int(max_samples)
        wanted = " and ".join(f"{k}='{v}'" for k, v in (("name", name), ("type", type)) if v)
        infos = self._resolve(lsl, name, type, wanted)
        if not infos:
            raise DeviceError(
                f"no LSL stream{(' with ' + wanted) if wanted else ''} found within "
                f"{self.timeout_s:g} s (is the sender running, on this network?)"
            )
        if len(infos) > 1:
            log.warning(
                "%d LSL streams match %s; using %s (%s)",
                len(infos), wanted or "anything", infos[0].name(), infos[0].source_id(),
            )
        info = infos[0]
        if info.channel_format() == lsl.cf_string:
            raise ConfigError(
                f"LSL stream '{info.name()}' carries strings (markers): not supported yet"
            )
        self._inlet = lsl.StreamInlet(info, max_chunklen=0, recover=True)
        try:
            self._inlet.open_stream(timeout=self.timeout_s)
            full = self._inlet.info(timeout=self.timeout_s)
            correction_s = self._inlet.time_correction(timeout=self.timeout_s)
        except (RuntimeError, TimeoutError) as exc:
            # Older pylsl raises its own TimeoutError (a RuntimeError), newer the built-in one.
            raise DeviceError(
                f"LSL stream '{info.name()}' found but not answering within "
                f"{self.timeout_s:g} s: {exc.__class__.__name__}: {exc}"
            ) from exc
        self.name = full.name()
        self.type = full.type()
        self.fs_hz = float(full.nominal_srate())
        self.n_channels = int(full.channel_count())
        self.units = self._first_unit(full)
        self.stream = stream or (self.type.lower() if self.type else self.name)
        self.source = f"lsl://{self.name}"
        self._offset_ns = lsl_to_monotonic_offset_ns(lsl.local_clock)
        self._correction_s = float(correction_s)
        self._correction_at = time.monotonic()
        self._seq = 0
        self._last_data = time.monotonic()
        self._closed = False

    def _resolve(self, lsl: ModuleType, name, type_, wanted: str) -> list:
        if name and type_:
            return lsl.resolve_bypred(wanted, 1, self.timeout_s)
        if name:
            return lsl.resolve_byprop("name", name, 1, self.timeout_s)
        if type_:
            return lsl.resolve_byprop("type", type_, 1, self.timeout_s)
        return lsl.resolve_streams(self.timeout_s)

    @staticmethod
    def _first_unit(info) -> str:
        try:
            unit = info.desc().child("channels").child("channel").child_value("unit")
        except Exception:  # descriptions are free-form XML; a missing node is normal
            return "a.u."
        return unit or "a.u."

    @property
    def time_correction_s(self) -> float:
        """The latest sender-to-local clock offset, s (added to LSL timestamps)."""
        return self._correction_s

    def _refresh_correction(self) -> None:
        if time.monotonic() - self._correction_at >= CORRECTION_REFRESH_S:
            try:
                self._correction_s = self._inlet.time_correction(timeout=0.5)
            except (RuntimeError, TimeoutError):
                pass  # keep the previous estimate; liblsl retries on its own
            self._correction_at = time.monotonic()

    def __iter__(self) -> "LslSource":
        return self

    def __next__(self) -> SensorChunk:
        if self._closed:
            raise StopIteration
        while True:
            samples, stamps = self._inlet.pull_chunk(timeout=0.2, max_samples=self.max_samples)
            if stamps:
                break
            if time.monotonic() - self._last_data > self.timeout_s:
                raise SourceEndedError(f"{self.source}: no samples for {self.timeout_s:g} s")
        self._last_data = time.monotonic()
        self._refresh_correction()
        stamps_s = np.asarray(stamps, dtype=np.float64)
        values = np.asarray(samples, dtype=np.float64)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        t_ns = np.rint((stamps_s + self._correction_s) * 1e9).astype(np.int64) + self._offset_ns
        chunk = SensorChunk(
            stream=self.stream,
            fs_hz=self.fs_hz,
            t0_ns=int(t_ns[0]),
            samples=values,
            units=self.units,
            seq=self._seq,
            device_t0_us=int(round(stamps_s[0] * 1e6)),
            source=self.source,
            meta={"t_ns": t_ns, "time_correction_s": self._correction_s},
        )
        self._seq += 1
        return chunk

    def close(self) -> None:
        """Close the inlet. Idempotent."""
        if not self._closed:
            self._closed = True
            self._inlet.close_stream()

    def __enter__(self) -> "LslSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
