"""The camera source interface, its options, and what finite sources share.

A :class:`CameraSource` is an iterator of :class:`~firmware_bridge.types.Frame` with
``close()`` and context-manager use. A finite source (file, image folder, synthetic camera)
ends with ``StopIteration`` and records why in ``end_reason``; a live source (V4L2, RTSP, CSI)
that stops delivering and cannot be brought back raises
:class:`~firmware_bridge.errors.SourceEndedError`. Failures to open are ``DeviceError`` (a
device) or ``BadInputError`` (a file), each one line naming the URI.

Options are parsed once, at open, into the frozen :class:`CameraOptions`; each source class
lists the option names it honours in ``OPTIONS``, so a misspelt or misplaced option is a
``ConfigError`` rather than a silently ignored keyword (the jetson-utils ``videoSource`` model:
one interface chosen by URI, options parsed once).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from firmware_bridge.errors import ConfigError
from firmware_bridge.types import Frame
from firmware_bridge.uri import (
    convert_options,
    to_bool,
    to_fourcc,
    to_int,
    to_nonneg_float,
    to_pos_float,
    to_pos_int,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraUri:
    """A camera URI split once: ``scheme`` picks the source class, ``target`` is what it opens.

    Attributes:
        text: the URI as given (credentials included; use ``display`` in messages).
        scheme: registry key: ``"v4l2"``, ``"file"``, ``"folder"``, ``"rtsp"``, ``"http"``,
            ``"https"``, ``"csi"`` or ``"sim"``.
        target: device index or path, file or folder path, sensor id, or the full network URL.
        query: ``key=value`` pairs from after ``?`` (``csi://`` and ``sim://`` only).
        display: the URI with any ``user:password@`` replaced by ``***@``.
    """

    text: str
    scheme: str
    target: str
    query: Mapping[str, str] = dataclasses.field(default_factory=dict)
    display: str = ""


def _to_timestamps(value: Any) -> str | None:
    # None = look for the sidecar CSV; "none" (or False) = ignore any CSV; else a path.
    if value is None:
        return None
    if value is False:
        return "none"
    text = str(value)
    if not text:
        raise ValueError("expected a CSV path, or 'none'")
    return text


@dataclass(frozen=True)
class CameraOptions:
    """Every option a camera source can take; each source honours the subset in its ``OPTIONS``.

    Attributes:
        realtime: finite sources only: pace delivery at the frames' timestamps (demos); the
            default delivers as fast as the consumer reads, which keeps results deterministic.
        live: video files only: play the file as if it were a camera (paced at its fps by a
            grabber thread, newest frame only, its end treated as the camera stopping).
        fps: frames per second: the rate of an image folder (default 30) or of a file without
            timestamps (default: its header); the rate asked of a V4L2/CSI camera.
        width, height: pixels asked of a V4L2 or CSI camera.
        fourcc: V4L2 pixel format to ask for, e.g. ``"MJPG"`` (many USB cameras need it for
            720p at 30 fps).
        timestamps: file/folder: path of a ``frame,timestamp`` CSV (UNIX seconds); default
            ``None`` uses ``frames_timestamp.csv`` beside the video (inside a folder) when
            present; ``"none"`` ignores it and uses fps.
        origin_ns: finite sources: ``Frame.t_ns`` of the first frame; later frames add their
            offset from it. Pass ``time.monotonic_ns()`` to put a replay on the live host clock.
        reconnect_initial_s: live sources: first wait before reopening a camera that stopped.
        reconnect_max_s: live sources: the doubling back-off stops growing here, s.
        give_up_after_s: live sources: time without frames after which reopening stops and
            ``SourceEndedError`` is raised, s (0 = give up at the first failure).
        open_timeout_s: network sources: FFMPEG connect and read timeout, s.
        flip_method: CSI: ``nvvidconv flip-method`` (0 none, 2 rotate 180, 4 horizontal
            flip, 6 vertical flip, ...).
    """

    realtime: bool = False
    live: bool = False
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    fourcc: str | None = None
    timestamps: str | None = None
    origin_ns: int = 0
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 8.0
    give_up_after_s: float = 30.0
    open_timeout_s: float = 10.0
    flip_method: int = 0


_CONVERTERS = {
    "realtime": to_bool,
    "live": to_bool,
    "fps": to_pos_float,
    "width": to_pos_int,
    "height": to_pos_int,
    "fourcc": to_fourcc,
    "timestamps": _to_timestamps,
    "origin_ns": to_int,
    "reconnect_initial_s": to_pos_float,
    "reconnect_max_s": to_pos_float,
    "give_up_after_s": to_nonneg_float,
    "open_timeout_s": to_pos_float,
    "flip_method": to_int,
}
OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(CameraOptions))
assert OPTION_NAMES == frozenset(_CONVERTERS), "every option needs a converter"


def parse_options(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> CameraOptions:
    """Check and convert raw options (keywords or URI query strings) into :class:`CameraOptions`.

    Args:
        raw: option name -> value (str values are converted: ``"true"``, ``"30"``...).
        allowed: the names the source honours.
        where: the URI, for messages.

    Returns:
        The frozen options; names not given keep their defaults.

    Raises:
        ConfigError: an unknown name, a name the source does not honour, or a bad value.
    """
    values = convert_options(raw, {name: _CONVERTERS[name] for name in allowed}, where)
    options = CameraOptions(**values)
    if options.reconnect_max_s < options.reconnect_initial_s:
        raise ConfigError(
            f"{where}: reconnect_max_s ({options.reconnect_max_s}) < reconnect_initial_s "
            f"({options.reconnect_initial_s})"
        )
    return options


class CameraSource:
    """Base of every camera source: an iterator of frames with ``close()``.

    Attributes:
        uri: the URI as shown in messages and ``Frame.source`` (credentials redacted).
        options: the parsed options.
        live: True for sources that run a grabber thread and drop frames.
        fps: nominal frame rate, Hz (0.0 when the source does not say).
        width, height: frame size in pixels (0 until known).
        end_reason: why the iteration ended (None while running).
    """

    scheme: ClassVar[str] = ""
    OPTIONS: ClassVar[frozenset[str]] = frozenset()
    live: ClassVar[bool] = False

    def __init__(self, uri: CameraUri, options: CameraOptions):
        self.uri = uri.display or uri.text
        self.options = options
        self.fps = 0.0
        self.width = 0
        self.height = 0
        self.end_reason: str | None = None
        self._closed = False

    @classmethod
    def from_uri(cls, uri: CameraUri, options: CameraOptions) -> "CameraSource":
        """Open the source; a class may hand back a variant (a live-played file)."""
        return cls(uri, options)

    def __iter__(self) -> "CameraSource":
        return self

    def __next__(self) -> Frame:
        if self._closed:
            raise StopIteration
        return self._next_frame()

    def _next_frame(self) -> Frame:
        raise NotImplementedError

    def _release(self) -> None:
        """Free what the source holds; called once by :meth:`close`."""

    def close(self) -> None:
        """Stop and free the source; later ``next()`` raises StopIteration. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.end_reason is None:
            self.end_reason = "closed"
        self._release()

    def __enter__(self) -> "CameraSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        size = f"{self.width}x{self.height}" if self.width else "size unknown"
        return f"<{type(self).__name__} {self.uri} {size} @ {self.fps:g} fps>"


class FiniteSource(CameraSource):
    """A source with a known sequence of frames and their times (file, folder, simulator).

    Subclasses implement :meth:`_read` returning ``(t_rel_ns, image)`` for the next frame, or
    ``None`` after setting ``end_reason``. Here: the time origin, the frame index and the
    optional real-time pacing.

    Attributes:
        t0_unix_s: absolute time of frame 0, UNIX seconds, when the source knows it (a
            timestamps CSV), else None. Use :meth:`unix_to_t_ns` to put other streams
            recorded with UNIX times (e.g. a BVP.csv) on the same clock as ``Frame.t_ns``.
    """

    def __init__(self, uri: CameraUri, options: CameraOptions):
        super().__init__(uri, options)
        self.t0_unix_s: float | None = None
        self._t0_unix_ns: int | None = None
        self._index = 0
        self._pace_zero_ns: int | None = None

    def _read(self) -> tuple[int, np.ndarray] | None:
        raise NotImplementedError

    def _next_frame(self) -> Frame:
        item = self._read()
        if item is None:
            self.close()
            raise StopIteration
        t_rel_ns, image = item
        if self.options.realtime:
            self._pace(t_rel_ns)
        frame = Frame(
            t_ns=self.options.origin_ns + int(t_rel_ns),
            index=self._index,
            image=image,
            source=self.uri,
        )
        self._index += 1
        return frame

    def _pace(self, t_rel_ns: int) -> None:
        # Anchored at the first delivered frame, so a slow consumer catches up instead of
        # drifting further behind with every frame.
        now = time.monotonic_ns()
        if self._pace_zero_ns is None:
            self._pace_zero_ns = now - t_rel_ns
            return
        wait_ns = self._pace_zero_ns + t_rel_ns - now
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)

    def _set_unix_t0(self, t0_unix_ns: int | None) -> None:
        self._t0_unix_ns = t0_unix_ns
        self.t0_unix_s = None if t0_unix_ns is None else t0_unix_ns / 1e9

    def unix_to_t_ns(self, unix_s: float | np.ndarray) -> int | np.ndarray:
        """Map UNIX times (s) onto this source's ``Frame.t_ns`` clock.

        Args:
            unix_s: scalar or array of UNIX times, seconds (float64).

        Returns:
            ``origin_ns + (unix_s - t0_unix_s) * 1e9`` as int (scalar) or int64 array, ns.
            Float64 UNIX seconds carry about 0.2 us of rounding at today's epoch.

        Raises:
            ConfigError: the source has no absolute time (no timestamps CSV).
        """
        if self._t0_unix_ns is None:
            raise ConfigError(f"{self.uri}: no absolute start time (no timestamps CSV)")
        t0_s, t0_frac_ns = divmod(self._t0_unix_ns, 1_000_000_000)
        # Subtract whole seconds first so the float difference stays small and exact-ish.
        rel_ns = (np.asarray(unix_s, dtype=np.float64) - t0_s) * 1e9 - t0_frac_ns
        out = self.options.origin_ns + np.rint(rel_ns).astype(np.int64)
        return int(out) if out.ndim == 0 else out
