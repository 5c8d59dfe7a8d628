"""The camera of a recording, in the camera registry: ``replay://DIR`` (or the recording
folder itself) opens the frames of an emofuse recording or a PhysRecorder folder, so a
pipeline takes a replay like any other camera. The sensor side is ``replay://DIR`` in
:mod:`firmware_bridge.sensors`.
"""
from __future__ import annotations

import dataclasses
from urllib.parse import unquote

from firmware_bridge.cameras.base import CameraOptions, CameraSource, CameraUri, parse_options
from firmware_bridge.errors import ConfigError


def is_recording_folder(path: str) -> bool:
    """True when ``path`` is a folder :func:`firmware_bridge.recording.open_recording` opens."""
    # Imported here: the recording package builds on this one (cameras.base, cameras.files),
    # so importing it at the top would be an import cycle.
    from firmware_bridge.recording import is_recording

    return is_recording(path)


class ReplayCameraSource(CameraSource):
    """Registry entry for ``replay://DIR``: opens the recording and hands back its camera
    (:meth:`firmware_bridge.recording.Recording.camera`), a
    :class:`~firmware_bridge.recording.RecordingCameraSource` or, for a PhysRecorder folder,
    its video file source.

    Options (keywords, or the URI query ``replay://DIR?realtime=1``; a keyword wins):
    ``realtime`` paces frames at their recorded times; ``origin_ns`` puts the recording's
    start at that host time, ns (0, the default, keeps the recorded times).
    """

    scheme = "replay"
    OPTIONS = frozenset({"realtime", "origin_ns"})

    @classmethod
    def from_uri(cls, uri: CameraUri, options: CameraOptions) -> CameraSource:
        from firmware_bridge.recording import open_recording  # see is_recording_folder

        target = unquote(uri.target)
        if not target:
            raise ConfigError(f"{uri.display or uri.text}: no recording folder; e.g. replay://recordings/session1")
        query = parse_options(dict(uri.query), cls.OPTIONS, uri.display or uri.text)
        default = CameraOptions()
        merged = {name: getattr(options, name) if getattr(options, name) != getattr(default, name)
                  else getattr(query, name) for name in cls.OPTIONS}
        opts = dataclasses.replace(options, **merged)
        return open_recording(target).camera(realtime=opts.realtime, origin_ns=opts.origin_ns or None)
