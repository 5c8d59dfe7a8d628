"""Camera sources chosen by URI: ``open_camera(uri, **options)`` -> an iterator of Frames.

- ``"0"``, ``0``, ``/dev/video0``, ``v4l2://0``: a live V4L2 camera (:class:`V4l2Source`);
- ``clip.avi``, ``file:///data/clip.mp4``: every frame of a video file
  (:class:`VideoFileSource`; ``live=True``: played as a camera, :class:`LiveVideoFileSource`);
- ``frames/`` (a folder): its images in name order (:class:`ImageFolderSource`);
- ``rtsp://user:pw@host/stream``, ``http(s)://``: a live network stream via FFMPEG
  (:class:`NetworkSource`);
- ``csi://0?width=1280&height=720&fps=30``: a Jetson CSI camera via GStreamer
  (:class:`CsiSource`);
- ``sim://?hr_bpm=72&duration_s=30&seed=0``: the synthetic face camera (:class:`SimCameraSource`);
- ``replay://DIR`` (or a recording folder itself): the frames of a recording
  (:class:`ReplayCameraSource`, :func:`firmware_bridge.recording.open_recording`).

``SOURCES`` maps a scheme to its class: a new kind of source is one new entry. Finite sources
end with ``StopIteration`` (``end_reason`` says why); live ones keep only the newest frame,
reconnect with back-off and end with ``SourceEndedError``. See ``base.CameraOptions`` for the
options and which source honours which.

Example::

    with open_camera("../shared/data/rppg/physrecorder-v01/video_ZIP_H264.avi") as cam:
        for frame in cam:
            ...  # frame.t_ns, frame.image (H, W, 3) uint8 BGR
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from firmware_bridge.cameras.base import (
    CameraOptions,
    CameraSource,
    CameraUri,
    FiniteSource,
    parse_options,
)
from firmware_bridge.cameras.files import (
    ImageFolderSource,
    VideoFileSource,
    read_frame_timestamps,
)
from firmware_bridge.cameras.live import (
    CsiSource,
    LiveSource,
    LiveVideoFileSource,
    NetworkSource,
    V4l2Source,
    csi_pipeline,
    opencv_has_gstreamer,
    redact_url,
)
from firmware_bridge.cameras.replay import ReplayCameraSource, is_recording_folder
from firmware_bridge.cameras.sim import SimCameraSource
from firmware_bridge.errors import ConfigError
from firmware_bridge.uri import split_query, split_scheme

SOURCES: dict[str, type[CameraSource]] = {
    "v4l2": V4l2Source,
    "file": VideoFileSource,
    "folder": ImageFolderSource,
    "rtsp": NetworkSource,
    "rtsps": NetworkSource,
    "http": NetworkSource,
    "https": NetworkSource,
    "csi": CsiSource,
    "sim": SimCameraSource,
    "replay": ReplayCameraSource,
}

_NETWORK = ("rtsp", "rtsps", "http", "https")
_WITH_QUERY = ("csi", "sim", "replay")


def _local_scheme(path: str) -> str:
    if re.fullmatch(r"\d+|/dev/video\d+", path):
        return "v4l2"
    if Path(path).is_dir():
        return "replay" if is_recording_folder(path) else "folder"
    return "file"


def parse_camera_uri(uri: str | os.PathLike | int) -> CameraUri:
    """Split a camera URI into the scheme that picks its source and what that source opens.

    Bare strings: digits or ``/dev/videoN`` -> ``v4l2``; an existing folder -> ``folder``;
    anything else -> ``file`` (a missing file fails when opened, naming it).

    Args:
        uri: a URI or a path (str or path-like); an int is a V4L2 index.

    Returns:
        The parsed :class:`CameraUri`.

    Raises:
        ConfigError: an empty URI, an unknown ``scheme://``, or a malformed query.
    """
    if isinstance(uri, int) and not isinstance(uri, bool):
        uri = str(uri)  # open_camera(0), as with cv2.VideoCapture(0)
    try:
        text = os.fspath(uri)
    except TypeError:
        raise ConfigError(f"camera URI must be a string or path, got {type(uri).__name__}") from None
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("camera URI is empty")
    scheme, rest = split_scheme(text)
    if scheme is None:
        return CameraUri(text, _local_scheme(text), text, {}, text)
    if scheme in _NETWORK:
        display = redact_url(text)
        return CameraUri(text, scheme, text, {}, display)
    if scheme == "file":
        path = unquote(rest)
        return CameraUri(text, "folder" if Path(path).is_dir() else "file", path, {}, text)
    if scheme in _WITH_QUERY:
        target, query = split_query(rest, text)
        return CameraUri(text, scheme, target, query, text)
    if scheme == "v4l2":
        return CameraUri(text, scheme, rest, {}, text)
    known = ", ".join(sorted({*SOURCES, "file"} - {"folder"}))
    raise ConfigError(f"{text}: unknown camera scheme {scheme!r}; known: {known}, or a path")


def open_camera(uri: str | os.PathLike | int, **options: Any) -> CameraSource:
    """Open a camera source by URI (see the module table).

    Args:
        uri: the source; ``csi://`` takes its options in the query too.
        **options: :class:`CameraOptions` fields the chosen source honours (its ``OPTIONS``);
            a keyword overrides the same name in a ``csi://`` query.

    Returns:
        An open :class:`CameraSource`: iterate it for ``Frame`` records; ``close()`` it, or use
        it in a ``with`` block.

    Raises:
        ConfigError: unknown scheme, option not valid for the source, bad option value.
        BadInputError: a missing, unreadable or corrupt file, folder or image.
        DeviceError: a camera or stream that cannot be opened (absent, busy, unreachable) or a
            ``csi://`` URI with an OpenCV built without GStreamer.
    """
    parsed = parse_camera_uri(uri)
    cls = SOURCES[parsed.scheme]
    raw: dict[str, Any] = dict(parsed.query) if parsed.scheme == "csi" else {}
    raw.update(options)
    allowed = cls.OPTIONS
    if cls is VideoFileSource and str(raw.get("live", "")).lower() in ("1", "true", "yes", "on"):
        allowed = LiveVideoFileSource.OPTIONS
    return cls.from_uri(parsed, parse_options(raw, allowed, parsed.display))


__all__ = [
    "SOURCES",
    "CameraOptions",
    "CameraSource",
    "CameraUri",
    "CsiSource",
    "FiniteSource",
    "ImageFolderSource",
    "LiveSource",
    "LiveVideoFileSource",
    "NetworkSource",
    "ReplayCameraSource",
    "SimCameraSource",
    "V4l2Source",
    "VideoFileSource",
    "csi_pipeline",
    "open_camera",
    "opencv_has_gstreamer",
    "parse_camera_uri",
    "read_frame_timestamps",
    "redact_url",
]
