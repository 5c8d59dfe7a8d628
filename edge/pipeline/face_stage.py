"""The face stage: per frame, the face box, the ROI skin colour and the face crop.

Everything it does to a frame is what training does to a recorded frame: the box from
:class:`edge.tracker.FaceTracker` with the record's ``face.tracker`` settings
(:func:`edge.preprocess.track_faces` runs the same tracker over a recording), the colour from
:func:`edge.preprocess.face_colour` (the record's ROI regions and skin rule) and the crop from
:func:`edge.preprocess.face_crop` (its crop size and margin).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.pipeline.windows import FaceRec
from edge.preprocess import face_colour, face_crop
from edge.results import Result
from edge.spec import Preprocessing
from edge.tracker import FaceTracker
from firmware_bridge.types import Frame

__all__ = ["FaceStage", "FrameEvent"]


@dataclass(frozen=True)
class FrameEvent:
    """What the face stage saw in one frame, for per-frame consumers (the annotated video).

    Attributes:
        frame: the camera frame.
        box: (x, y, w, h) face box used on it, or None.
        t_s: the frame's time on the session clock, s.
        result: the newest result produced so far (None before the first); in live mode it
            may lag the frame by a hop or two.
    """

    frame: Frame
    box: tuple[float, float, float, float] | None
    t_s: float
    result: Result | None


class FaceStage:
    """Measures frames: track, ROI colour, crop.

    Args:
        p: the preprocessing record.
        tracker: an object with ``update(frame_bgr) -> state`` with ``state.box`` (default a
            :class:`edge.tracker.FaceTracker` with ``p.face.tracker_settings``).
        crops: cut the model's face crops (a run without a model, whose windows are not kept,
            needs none: ``FaceRec.crop`` is then None).

    Attributes:
        frames, faced, coloured: frames measured, frames with a face box, frames whose ROI
            gave a skin colour.
    """

    def __init__(self, p: Preprocessing, tracker: Any = None, crops: bool = True) -> None:
        self.p = p
        self.tracker = tracker if tracker is not None else FaceTracker(**p.face.tracker_settings)
        self.crops = bool(crops)
        self._fid = 0
        self.frames = self.faced = self.coloured = 0

    def measure(self, frame: Frame, read_ms: float) -> FaceRec:
        """One frame's :class:`~edge.pipeline.windows.FaceRec`, with its stage times.

        Args:
            frame: a camera frame (uint8 BGR (H, W, 3)).
            read_ms: the time the camera took to deliver it, ms.

        Raises:
            BadInputError: a frame that is not uint8 (H, W, 3).
        """
        t0 = time.perf_counter()
        box = self.tracker.update(frame.image).box
        t1 = time.perf_counter()
        if box is not None:
            rgb = face_colour(frame.image, box, self.p)
            t2 = time.perf_counter()
            crop = face_crop(frame.image, box, self.p) if self.crops else None
            self.faced += 1
            self.coloured += bool(np.isfinite(rgb[0]))
        else:
            rgb = np.full(3, np.nan)
            t2 = time.perf_counter()
            crop = None
        t3 = time.perf_counter()
        rec = FaceRec(int(frame.t_ns), self._fid, rgb, crop, box,
                      {"read": read_ms, "track": (t1 - t0) * 1e3, "roi": (t2 - t1) * 1e3, "crop": (t3 - t2) * 1e3})
        self._fid += 1
        self.frames += 1
        return rec

    def stats(self) -> dict | None:
        """The tracker's counters (frames, detections, full searches), when it keeps them."""
        t = self.tracker
        if not hasattr(t, "detections"):
            return None
        return {"frames": t.frames, "detections": t.detections, "full_searches": getattr(t, "full_searches", None)}
