"""Live camera sources: V4L2 devices, network streams, Jetson CSI cameras, a file played live.

A live source runs a grabber thread that reads the capture as fast as the camera delivers and
keeps only the newest frame: a slow consumer gets the latest picture (low latency) and
``Frame.dropped_before`` says how many it missed; ``Frame.index`` counts every grabbed frame, so
index gaps equal the drops. ``Frame.t_ns`` is the host monotonic time right after ``grab()``
returned.

When the camera stops delivering (a read fails: USB unplugged, stream cut), the thread releases
it and reopens it with exponential back-off (``reconnect_initial_s`` doubling up to
``reconnect_max_s``). The first frame after the hole carries ``gap_before_s`` = time between the
last frame before and the first frame after, so the consumer sees the hole. After
``give_up_after_s`` without frames the source raises ``SourceEndedError``. Opening the camera
the first time is not retried: a missing device is a ``DeviceError`` at once.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from firmware_bridge.cameras.base import CameraOptions, CameraSource, CameraUri
from firmware_bridge.cameras.files import open_video_file
from firmware_bridge.errors import ConfigError, DeviceError, SourceEndedError
from firmware_bridge.types import Frame

log = logging.getLogger(__name__)

_LIVE_OPTIONS = frozenset({"reconnect_initial_s", "reconnect_max_s", "give_up_after_s"})


def _grey_to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class LiveSource(CameraSource):
    """Base of live sources: the grabber thread, newest-frame slot, drops, reconnect, gaps.

    Subclasses implement :meth:`_try_open` (a fresh opened ``cv2.VideoCapture``, or None when
    the device is not there now) and :meth:`_open_failure` (the one-line DeviceError message
    for the first open).

    Attributes:
        reconnects: successful reopenings so far.
        frames_grabbed: frames the grabber read (delivered + dropped + one pending).
    """

    live = True
    #: nanoseconds between frames the grabber waits for (a file played live); None = camera.
    _period_ns: int | None = None

    def _start(self) -> None:
        cap = self._try_open()
        if cap is None:
            raise DeviceError(self._open_failure())
        self._describe(cap)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._slot: tuple[int, int, np.ndarray] | None = None
        self._pending_dropped = 0
        self._pending_gap_s = 0.0
        self._error: SourceEndedError | None = None
        self._crash: BaseException | None = None
        self._last_grab_ns = time.monotonic_ns()
        self.reconnects = 0
        self.frames_grabbed = 0
        self._thread = threading.Thread(
            target=self._grab_loop, args=(cap,), name=f"grab {self.uri}", daemon=True
        )
        self._thread.start()

    # -- what subclasses provide ---------------------------------------------------------
    def _try_open(self) -> cv2.VideoCapture | None:
        raise NotImplementedError

    def _open_failure(self) -> str:
        raise NotImplementedError

    def _describe(self, cap: cv2.VideoCapture) -> None:
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if np.isfinite(fps) and fps > 0 else 0.0

    # -- grabber thread ------------------------------------------------------------------
    def _grab(self, cap: cv2.VideoCapture, due_ns: int | None) -> tuple[int, np.ndarray] | None:
        if due_ns is not None:
            wait_ns = due_ns - time.monotonic_ns()
            if wait_ns > 0 and self._stop.wait(wait_ns / 1e9):
                return None
        try:
            if not cap.grab():
                return None
            t_ns = time.monotonic_ns()
            ok, image = cap.retrieve()
        except cv2.error as exc:
            log.warning("%s: capture error: %s", self.uri, str(exc).strip().splitlines()[-1])
            return None
        if not ok or image is None:
            return None
        return t_ns, _grey_to_bgr(image)

    def _grab_loop(self, cap: cv2.VideoCapture | None) -> None:
        last_t_ns: int | None = None
        lost = False
        due_ns = time.monotonic_ns() if self._period_ns else None
        try:
            while not self._stop.is_set():
                if cap is None:
                    cap = self._reconnect(last_t_ns)
                    if cap is None:
                        return
                    due_ns = time.monotonic_ns() if self._period_ns else None
                got = self._grab(cap, due_ns)
                if self._stop.is_set():
                    return
                if got is None:
                    cap.release()
                    cap = None
                    lost = True
                    log.warning("%s: stopped delivering frames; reconnecting", self.uri)
                    continue
                t_ns, image = got
                if due_ns is not None:
                    due_ns += self._period_ns
                gap_s = (t_ns - last_t_ns) / 1e9 if lost and last_t_ns is not None else 0.0
                lost = False
                last_t_ns = t_ns
                with self._cond:
                    if self._slot is not None:
                        self._pending_dropped += 1
                    self._pending_gap_s += gap_s
                    self._slot = (t_ns, self.frames_grabbed, image)
                    self.frames_grabbed += 1
                    self._last_grab_ns = t_ns
                    self._cond.notify_all()
        except BaseException as exc:  # a bug: hand it, traceback and all, to the consumer
            self._crash = exc
            raise
        finally:
            if cap is not None:
                cap.release()
            with self._cond:
                self._cond.notify_all()

    def _reconnect(self, last_t_ns: int | None) -> cv2.VideoCapture | None:
        opt = self.options
        lost_ns = last_t_ns if last_t_ns is not None else time.monotonic_ns()
        delay_s = opt.reconnect_initial_s
        attempts = 0
        while True:
            waited_s = (time.monotonic_ns() - lost_ns) / 1e9
            if waited_s >= opt.give_up_after_s:
                with self._cond:
                    self._error = SourceEndedError(
                        f"{self.uri}: stopped delivering frames; gave up after {waited_s:.1f} s "
                        f"and {attempts} failed reopen attempt(s) (give_up_after_s="
                        f"{opt.give_up_after_s:g})"
                    )
                    self.end_reason = str(self._error)
                    self._cond.notify_all()
                return None
            if self._stop.wait(min(delay_s, opt.give_up_after_s - waited_s)):
                return None
            attempts += 1
            cap = self._try_open()
            if cap is not None:
                self.reconnects += 1
                log.warning("%s: reopened after %d attempt(s)", self.uri, attempts)
                return cap
            delay_s = min(delay_s * 2.0, opt.reconnect_max_s)

    # -- consumer side -------------------------------------------------------------------
    def _next_frame(self) -> Frame:
        # A capture stuck inside read() cannot be interrupted; past this the consumer stops
        # waiting and reports the source as ended rather than hanging forever.
        stall_ns = int((self.options.give_up_after_s + self.options.reconnect_max_s + 10.0) * 1e9)
        wait_from_ns = time.monotonic_ns()
        with self._cond:
            while self._slot is None:
                if self._error is not None:
                    raise self._error
                if self._crash is not None:
                    raise self._crash
                if self._stop.is_set() or not self._thread.is_alive():
                    raise StopIteration
                now = time.monotonic_ns()
                if now - max(self._last_grab_ns, wait_from_ns) > stall_ns:
                    stall_s = stall_ns / 1e9
                    self.end_reason = f"{self.uri}: no frame for {stall_s:g} s (capture stuck)"
                    raise SourceEndedError(self.end_reason)
                self._cond.wait(timeout=0.25)
            t_ns, index, image = self._slot
            frame = Frame(
                t_ns=t_ns,
                index=index,
                image=image,
                source=self.uri,
                dropped_before=self._pending_dropped,
                gap_before_s=self._pending_gap_s,
            )
            self._slot = None
            self._pending_dropped = 0
            self._pending_gap_s = 0.0
        return frame

    def _release(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is None:
            return
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        thread.join(timeout=5.0)
        if thread.is_alive():
            log.warning("%s: grabber thread still blocked in read(); left as daemon", self.uri)


# ---------------------------------------------------------------------------------------
class LiveVideoFileSource(LiveSource):
    """A video file played as if it were a camera (demos, and testing the live machinery).

    The grabber reads at the file's fps (or ``fps``), keeps the newest frame and counts drops
    like a camera. Reaching the end of the file counts as the camera stopping: the file is
    reopened with back-off and plays again from the start (a gap is reported), so a file that
    stays plays in a loop; one moved away makes the source give up after ``give_up_after_s``.
    """

    scheme = "file"
    OPTIONS = frozenset({"live", "fps"}) | _LIVE_OPTIONS

    def __init__(self, uri: CameraUri, options: CameraOptions):
        super().__init__(uri, options)
        self.path = Path(uri.target)
        probe = open_video_file(self.path)  # BadInputError for a missing or corrupt file
        header_fps = probe.get(cv2.CAP_PROP_FPS)
        probe.release()
        fps = options.fps or (header_fps if np.isfinite(header_fps) and header_fps > 0 else 30.0)
        self._period_ns = round(1e9 / fps)  # the grabber needs it before its first read
        self._start()
        self.fps = float(fps)

    def _try_open(self) -> cv2.VideoCapture | None:
        if not self.path.is_file():
            return None
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _open_failure(self) -> str:
        return f"cannot open video file {self.path}"


# ---------------------------------------------------------------------------------------
def _v4l2_backend() -> int:
    return cv2.CAP_V4L2 if cv2.videoio_registry.hasBackend(cv2.CAP_V4L2) else cv2.CAP_ANY


class V4l2Source(LiveSource):
    """A local camera: a V4L2 index (``"0"``) or node (``/dev/video0``), or ``v4l2://0``.

    Opened with OpenCV's V4L2 backend where it exists (any backend elsewhere), with a
    one-frame driver buffer so ``read()`` returns the current picture. On Linux a missing
    ``/dev/videoN`` is reported at once, without asking OpenCV.
    """

    scheme = "v4l2"
    OPTIONS = frozenset({"fps", "width", "height", "fourcc"}) | _LIVE_OPTIONS

    def __init__(self, uri: CameraUri, options: CameraOptions):
        super().__init__(uri, options)
        match = re.fullmatch(r"(?:/dev/video)?(\d+)", uri.target)
        if match is None:
            raise ConfigError(f"{uri.display}: expected a camera index or /dev/videoN")
        self.index = int(match.group(1))
        self.device_path = Path(f"/dev/video{self.index}")
        self._start()

    def _device_present(self) -> bool:
        # Only Linux has the node to check; elsewhere OpenCV has to try.
        return not sys.platform.startswith("linux") or self.device_path.exists()

    def _try_open(self) -> cv2.VideoCapture | None:
        if not self._device_present():
            return None
        cap = cv2.VideoCapture(self.index, _v4l2_backend())
        if not cap.isOpened():
            cap.release()
            return None
        opt = self.options
        if opt.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*opt.fourcc))
        if opt.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, opt.width)
        if opt.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, opt.height)
        if opt.fps:
            cap.set(cv2.CAP_PROP_FPS, opt.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    def _open_failure(self) -> str:
        if not self._device_present():
            return (
                f"no camera at {self.device_path} (the node does not exist; "
                "`emofuse devices` lists the cameras found)"
            )
        return (
            f"cannot open camera {self.device_path} (busy in another program, no permission "
            "(is the user in group 'video'?), or not a capture node)"
        )


# ---------------------------------------------------------------------------------------
def redact_url(url: str) -> str:
    """The URL with ``user:password@`` replaced by ``***@`` (for logs and Frame.source)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


class NetworkSource(LiveSource):
    """A network stream (``rtsp://``, ``http(s)://`` MJPEG or HLS) through OpenCV's FFMPEG.

    Connect and read use ``open_timeout_s``. FFMPEG's RTSP transport can be forced with the
    environment variable ``OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp"`` (UDP drops
    packets over Wi-Fi). Credentials in the URL never appear in messages or frames.
    """

    scheme = "rtsp"
    OPTIONS = frozenset({"open_timeout_s"}) | _LIVE_OPTIONS

    def __init__(self, uri: CameraUri, options: CameraOptions):
        super().__init__(uri, options)
        if not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
            raise DeviceError(
                f"{self.uri}: network streams need OpenCV with FFMPEG; this cv2 "
                f"{cv2.__version__} has none (pip install opencv-python-headless)"
            )
        self.url = uri.target
        self._start()

    def _try_open(self) -> cv2.VideoCapture | None:
        timeout_ms = int(self.options.open_timeout_s * 1000)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms,
        ]
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _open_failure(self) -> str:
        return (
            f"cannot open stream {self.uri} within {self.options.open_timeout_s:g} s "
            "(unreachable host, wrong path or credentials, or unsupported codec)"
        )


# ---------------------------------------------------------------------------------------
def opencv_has_gstreamer() -> bool:
    """Whether the imported cv2 can run GStreamer pipelines (needed for ``csi://``).

    Reads the ``GStreamer:`` line of ``cv2.getBuildInformation()``; a GStreamer videoio
    plugin loaded at run time also counts. PyPI wheels say NO; JetPack's OpenCV says YES.
    """
    match = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    if match is not None and match.group(1).upper() == "YES":
        return True
    return bool(cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER))


def csi_pipeline(
    sensor_id: int = 0,
    width: int = 1280,
    height: int = 720,
    fps: float = 30.0,
    flip_method: int = 0,
) -> str:
    """GStreamer pipeline for a Jetson CSI camera delivering BGR frames to OpenCV's appsink.

    ``nvarguscamerasrc`` (the Argus ISP) outputs NV12 in NVMM (GPU) memory; ``nvvidconv``
    copies to CPU memory as BGRx (and flips); ``videoconvert`` drops the x. The appsink keeps
    one buffer and drops older ones, so OpenCV always reads the newest frame (NVIDIA's
    accelerated GStreamer guide, and the jetson-utils ``gstCamera`` pipeline).

    Args:
        sensor_id: CSI port, ``sensor-id`` of nvarguscamerasrc (0, 1...).
        width, height: sensor mode size, pixels (it must be a mode the sensor offers).
        fps: frame rate, Hz; written as a fraction (29.97 -> 2997/100).
        flip_method: nvvidconv flip-method, 0..7.

    Returns:
        The pipeline string for ``cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)``.

    Raises:
        ConfigError: negative sensor id, size or rate not positive, flip_method outside 0..7.
    """
    if int(sensor_id) < 0 or int(width) <= 0 or int(height) <= 0 or not fps > 0:
        raise ConfigError(
            f"csi pipeline: bad sensor_id={sensor_id}, width={width}, height={height} or fps={fps}"
        )
    if not 0 <= int(flip_method) <= 7:
        raise ConfigError(f"csi pipeline: flip_method={flip_method} outside 0..7")
    rate = Fraction(fps).limit_denominator(1001)
    return (
        f"nvarguscamerasrc sensor-id={int(sensor_id)} ! "
        f"video/x-raw(memory:NVMM), width=(int){int(width)}, height=(int){int(height)}, "
        f"format=(string)NV12, framerate=(fraction){rate.numerator}/{rate.denominator} ! "
        f"nvvidconv flip-method={int(flip_method)} ! "
        f"video/x-raw, width=(int){int(width)}, height=(int){int(height)}, format=(string)BGRx ! "
        "videoconvert ! video/x-raw, format=(string)BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


class CsiSource(LiveSource):
    """A Jetson CSI camera, ``csi://N`` (query: ``?width=1280&height=720&fps=30&flip_method=0``).

    Needs OpenCV built with GStreamer (JetPack's); see :func:`csi_pipeline`.
    """

    scheme = "csi"
    OPTIONS = frozenset({"fps", "width", "height", "flip_method"}) | _LIVE_OPTIONS
    DEFAULT_SIZE = (1280, 720)

    def __init__(self, uri: CameraUri, options: CameraOptions):
        super().__init__(uri, options)
        if not re.fullmatch(r"\d+", uri.target):
            raise ConfigError(f"{uri.display}: expected csi://N with N the sensor id, e.g. csi://0")
        if not opencv_has_gstreamer():
            raise DeviceError(
                f"{uri.display} needs OpenCV built with GStreamer, and this cv2 "
                f"{cv2.__version__} ({Path(cv2.__file__).parent}) has none: on a Jetson use "
                "JetPack's OpenCV (pip uninstall opencv-python-headless; reinstall emofuse with "
                "EMOFUSE_SYSTEM_OPENCV=1; see README 'On a Jetson')"
            )
        self.pipeline = csi_pipeline(
            int(uri.target),
            options.width or self.DEFAULT_SIZE[0],
            options.height or self.DEFAULT_SIZE[1],
            options.fps or 30.0,
            options.flip_method,
        )
        self._start()

    def _try_open(self) -> cv2.VideoCapture | None:
        cap = cv2.VideoCapture(self.pipeline, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _open_failure(self) -> str:
        probe = self.pipeline.replace("appsink", "fakesink")
        return (
            f"cannot open {self.uri} (no sensor on that port, nvargus-daemon not running, or "
            f"an unsupported mode): gst-launch-1.0 '{probe}' shows the cause"
        )
