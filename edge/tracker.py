"""Face tracking for the streaming runtime: detect now and then, follow the face in between.

OpenCV's Haar cascade (:class:`edge.face.HaarFaceDetector`, Viola & Jones 2001) costs tens of
milliseconds on a full 640x480 frame, so detecting on every frame caps the pipeline below real
time; and its box jitters by a few pixels from one detection to the next even on a still face.
Both matter for rPPG: a box that jumps or jitters moves the skin regions over the face's
texture (eyebrows, hairline, nostrils), a colour change in the heart-rate band that a printed
photo turns into a "heart rate". :class:`FaceTracker` therefore

- follows the face from frame to frame by phase correlation (Kuglin & Hines 1975, "The phase
  correlation image alignment method"; OpenCV's ``phaseCorrelate``, sub-pixel) of a small
  grey patch of the face against a template taken from the tracked box, so the box moves
  smoothly with the head and stays put on a still one (``track="phase"``; ``"hold"`` keeps
  the box still between detections);
- detects every ``detect_every`` frames (every ``lost_detect_every`` while no face is held),
  on the frame downscaled to ``detect_width``; while a face is held it searches only a
  region around it (``search_scale`` times the box, downscaled so that the face spans about
  ``search_face_px`` pixels), with a full-frame search every ``full_every`` detections so a
  new face elsewhere is not missed;
- uses a detection of the held face only to correct drift: a detection within a dead band
  (``deadband`` of the face size, centre and width) of the tracked box changes nothing; one
  beyond it moves the box there at once (a rare single step, not a periodic one) and renews
  the template; a detection that hardly overlaps the box (``snap_iou``) is another face or a
  jump, and is taken at once too;
- drops the face after ``max_missed`` failed detections in a row (the face left: a box kept
  there would average the background) and says so (:attr:`TrackState.lost`);
- with several faces picks the largest (``select="largest"``, the default) or the one
  closest to the held box (``"closest"``; the largest when none is held).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from edge.face import CONTRASTS, HaarFaceDetector
from firmware_bridge.errors import BadInputError, ConfigError

__all__ = ["SELECT", "TRACKS", "FaceTracker", "TrackState", "box_iou"]

log = logging.getLogger(__name__)

#: Ways to choose among several detected faces.
SELECT = ("largest", "closest")
#: Ways to move the box between detections.
TRACKS = ("phase", "hold")
# Side of the template at the working scale, px: enough of the face for a sub-pixel match,
# small enough to cost a fraction of a millisecond.
_PATCH_PX = 48
# A normalised correlation below this is no match (occlusion, a turned head): keep the box.
_MIN_RESPONSE = 0.6
# Search radius from one frame to the next, as a fraction of the template's side.
_MAX_STEP = 0.1
# Share of the face box (centred) the template covers: eyes, nose, mouth, no background.
_INNER = 0.7


def box_iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes, 0..1 (0 when either is empty)."""
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0 or aw <= 0 or ah <= 0 or bw <= 0 or bh <= 0:
        return 0.0
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


@dataclass(frozen=True)
class TrackState:
    """The tracker's answer for one frame.

    Attributes:
        box: (x, y, w, h) float px of the face to use on this frame, or None (no face held).
        detected: a detection ran on this frame.
        n_faces: faces that detection found (0 when none ran).
        lost: the face held until now was dropped on this frame.
        snapped: the box was moved to a detection on this frame (drift correction or another
            face), instead of following the face smoothly.
    """

    box: tuple[float, float, float, float] | None
    detected: bool = False
    n_faces: int = 0
    lost: bool = False
    snapped: bool = False


class FaceTracker:
    """Haar detection every few frames, phase-correlation tracking in between.

    Args:
        detect_every: frames between detections while a face is held (>= 1).
        lost_detect_every: frames between detections while no face is held (>= 1).
        detect_width: full-frame detection runs on the frame downscaled to this width, px.
        min_face_frac: smallest face of a full-frame search, as a fraction of the frame's
            shorter side.
        search_scale: side of the region searched around a held face, in face sizes (>= 1.2);
            0 disables the regional search (every detection is full-frame).
        search_face_px: the face's width in the downscaled search region, px (>= 24).
        full_every: every this many detections the whole frame is searched even while a face
            is held (>= 1).
        track: ``"phase"`` (follow the face between detections) or ``"hold"``.
        deadband: a detection whose centre and width differ from the tracked box by at most
            this fraction of the face size changes nothing, [0, 0.5).
        snap_iou: a detection overlapping the held box less than this is taken as a new face.
        max_missed: failed detections in a row after which the face counts as gone (>= 1).
        reanchor_every: frames after which the tracking template is taken again from the
            tracked box, following slow changes of expression and light (>= 1).
        smooth: fraction of the way to each new phase-correlation measurement the box moves,
            (0, 1] (an exponential low-pass of the track: its per-frame jitter would reach the
            colour trace).
        hysteresis_px: the box handed out is in whole pixels, and a coordinate changes only
            when the track is this far past the half pixel, [0, 1).
        select: ``"largest"`` or ``"closest"`` (see the module docstring).
        contrast: contrast normalisation of the detection image, ``"none"`` or ``"clahe"``
            (:class:`edge.face.HaarFaceDetector`; CLAHE finds dark faces in bright surrounds).
        detector: a detector with ``detect(frame_bgr) -> [(x, y, w, h), ...]`` used instead of
            the Haar cascades (then regional search uses the same detector on the region).

    Raises:
        ConfigError: a setting out of range.
        MissingDependencyError: OpenCV without its Haar cascade files.
    """

    def __init__(self, detect_every: int = 10, lost_detect_every: int = 3, detect_width: int = 320,
                 min_face_frac: float = 0.12, search_scale: float = 2.0, search_face_px: int = 72,
                 full_every: int = 6, track: str = "phase", deadband: float = 0.05, snap_iou: float = 0.3,
                 max_missed: int = 3, reanchor_every: int = 300, smooth: float = 0.3, hysteresis_px: float = 0.0,
                 select: str = "largest", contrast: str = "none", detector=None) -> None:
        for name, value in (("detect_every", detect_every), ("lost_detect_every", lost_detect_every),
                            ("full_every", full_every), ("max_missed", max_missed),
                            ("reanchor_every", reanchor_every)):
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not (0.0 <= float(hysteresis_px) < 1.0):
            raise ConfigError(f"hysteresis_px must be in [0, 1), got {hysteresis_px!r}")
        if not (0.0 < float(smooth) <= 1.0):
            raise ConfigError(f"smooth must be in (0, 1], got {smooth!r}")
        if not (0.0 <= float(deadband) < 0.5):
            raise ConfigError(f"deadband must be in [0, 0.5), got {deadband!r}")
        if not (0.0 <= float(snap_iou) <= 1.0):
            raise ConfigError(f"snap_iou must be in [0, 1], got {snap_iou!r}")
        if float(search_scale) != 0.0 and float(search_scale) < 1.2:
            raise ConfigError(f"search_scale must be 0 (off) or >= 1.2, got {search_scale!r}")
        if int(search_face_px) < 24:
            raise ConfigError(f"search_face_px must be >= 24 (the cascade's window), got {search_face_px!r}")
        if select not in SELECT:
            raise ConfigError(f"select must be one of {SELECT}, got {select!r}")
        if track not in TRACKS:
            raise ConfigError(f"track must be one of {TRACKS}, got {track!r}")
        if contrast not in CONTRASTS:
            raise ConfigError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
        self.contrast = contrast
        self.detect_every = int(detect_every)
        self.lost_detect_every = int(lost_detect_every)
        self.full_every = int(full_every)
        self.track = track
        self.deadband = float(deadband)
        self.snap_iou = float(snap_iou)
        self.max_missed = int(max_missed)
        self.reanchor_every = int(reanchor_every)
        self.smooth = float(smooth)
        self.hysteresis_px = float(hysteresis_px)
        self.select = select
        self.search_scale = float(search_scale)
        self.search_face_px = int(search_face_px)
        if detector is None:
            self._full = HaarFaceDetector(detect_width=detect_width, min_face_frac=min_face_frac, contrast=contrast)
            # In the search region the face fills about 1 / search_scale of the side: a
            # larger minimum face skips most of the cascade's pyramid levels.
            side = max(48, int(round(self.search_face_px * max(self.search_scale, 1.2))))
            frac = min(0.9, 0.6 / max(self.search_scale, 1.2))
            self._region = HaarFaceDetector(detect_width=side, min_face_frac=frac, contrast=contrast)
        else:
            self._full = self._region = detector
        self._scale = 1.0
        self._tmpl_side = 0
        self.reset()

    def reset(self) -> None:
        """Forget the held face (e.g. after a camera reconnect)."""
        self._box: np.ndarray | None = None
        self._shown: np.ndarray | None = None
        self._template: np.ndarray | None = None
        self._tmpl_offset = np.zeros(2)
        self._since_anchor = 0
        self._missed = 0
        self._since_detect = 0
        self._detections = 0
        self.frames = 0
        self.detections = 0
        self.full_searches = 0
        self.snaps = 0

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        """The box handed out now (whole pixels), or None."""
        return None if self._shown is None else tuple(float(v) for v in self._shown)

    def _show(self, snap: bool = False) -> None:
        """Whole-pixel box with hysteresis: the skin regions are cut at whole pixels, so a
        tracked position that jitters around x.5 would flip a region edge back and forth by
        a pixel every frame; a coordinate moves only once the track is ``hysteresis_px``
        past the half-pixel."""
        if self._box is None:
            self._shown = None
            return
        if snap or self._shown is None:
            self._shown = np.round(self._box)
            return
        moved = np.abs(self._box - self._shown) > 0.5 + self.hysteresis_px
        self._shown = np.where(moved, np.round(self._box), self._shown)

    # -- detection helpers --------------------------------------------------------------------
    def _choose(self, found: list) -> np.ndarray:
        boxes = np.asarray(found, dtype=np.float64).reshape(-1, 4)
        if self.select == "closest" and self._box is not None:
            centre = self._box[:2] + self._box[2:] / 2.0
            d = np.hypot(*(boxes[:, :2] + boxes[:, 2:] / 2.0 - centre).T)
            return boxes[int(np.argmin(d))]
        return boxes[int(np.argmax(boxes[:, 2] * boxes[:, 3]))]

    def _beyond_deadband(self, target: np.ndarray) -> bool:
        size = max(float(self._box[2]), float(self._box[3]), 1.0)
        shift = (target[:2] + target[2:] / 2.0) - (self._box[:2] + self._box[2:] / 2.0)
        return bool(np.hypot(*shift) > self.deadband * size
                    or abs(float(target[2]) - float(self._box[2])) > self.deadband * size)

    def _search_region(self, frame: np.ndarray) -> list:
        h, w = frame.shape[:2]
        bx, by, bw, bh = self._box
        side = max(bw, bh) * self.search_scale
        cx, cy = bx + bw / 2.0, by + bh / 2.0
        x0, y0 = int(max(0, np.floor(cx - side / 2))), int(max(0, np.floor(cy - side / 2)))
        x1, y1 = int(min(w, np.ceil(cx + side / 2))), int(min(h, np.ceil(cy + side / 2)))
        if x1 - x0 < 24 or y1 - y0 < 24:
            return []
        found = self._region.detect(frame[y0:y1, x0:x1])
        return [(fx + x0, fy + y0, fw, fh) for fx, fy, fw, fh in found]

    # -- template tracking ------------------------------------------------------------------------
    def _grey(self, frame: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray | None:
        """Blurred grey square of the frame at (x0, y0), resized to the working scale."""
        import cv2

        h, w = frame.shape[:2]
        if side < 16 or x0 < 0 or y0 < 0 or x0 + side > w or y0 + side > h:
            return None
        region = frame[y0:y0 + side, x0:x0 + side]
        grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY) if region.ndim == 3 else region
        n = int(round(side * self._scale))
        small = cv2.resize(grey, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32)
        # Sensor noise is fresh in every frame; blurring it away leaves the face's shape.
        return cv2.GaussianBlur(small, (0, 0), 1.0)

    def _anchor(self, frame: np.ndarray) -> None:
        self._template = None
        self._since_anchor = 0
        if self.track != "phase":
            return
        x, y, bw, bh = self._box
        side = int(round(_INNER * max(bw, bh)))
        self._scale = _PATCH_PX / max(side, 1)
        x0 = int(round(x + (bw - side) / 2.0))
        y0 = int(round(y + (bh - side) / 2.0))
        patch = self._grey(frame, x0, y0, side)
        if patch is None:
            return
        self._template = patch
        self._tmpl_side = side
        self._tmpl_offset = self._box[:2] - np.array([x0, y0], dtype=np.float64)

    def _follow(self, frame: np.ndarray) -> None:
        import cv2

        if self._template is None:
            self._anchor(frame)
            return
        side = self._tmpl_side
        r = max(2, int(round(_MAX_STEP * side)))  # search radius, frame px
        x0 = int(round(self._box[0] - self._tmpl_offset[0])) - r
        y0 = int(round(self._box[1] - self._tmpl_offset[1])) - r
        area = self._grey(frame, x0, y0, side + 2 * r)
        if area is None:
            return
        score = cv2.matchTemplate(area, self._template, cv2.TM_CCOEFF_NORMED)
        _, best, _, (i, j) = cv2.minMaxLoc(score)
        if best < _MIN_RESPONSE:
            return
        # Sub-pixel peak: a parabola through the best score and its neighbours, per axis.
        di = dj = 0.0
        if 0 < i < score.shape[1] - 1:
            a, b, c = score[j, i - 1], score[j, i], score[j, i + 1]
            den = a - 2 * b + c
            di = 0.5 * (a - c) / den if den < 0 else 0.0
        if 0 < j < score.shape[0] - 1:
            a, b, c = score[j - 1, i], score[j, i], score[j + 1, i]
            den = a - 2 * b + c
            dj = 0.5 * (a - c) / den if den < 0 else 0.0
        # The template's corner sits at (i + di, j + dj) working px inside the search area.
        corner = np.array([x0, y0], dtype=np.float64) + np.array([i + di, j + dj]) / self._scale
        measured = corner + self._tmpl_offset
        # Each measurement jitters by a fraction of a pixel; a box that followed it would put
        # that jitter into the colour trace, so the box follows a low-passed track (head
        # motion is mostly below the heart-rate band).
        self._box[:2] += self.smooth * (measured - self._box[:2])
        self._since_anchor += 1
        if self._since_anchor >= self.reanchor_every:
            self._anchor(frame)

    # -- the verb ---------------------------------------------------------------------------------
    def update(self, frame_bgr: np.ndarray) -> TrackState:
        """Track the face into one more frame.

        Args:
            frame_bgr: uint8 (H, W, 3) BGR frame (or (H, W) grey).

        Returns:
            :class:`TrackState` with the box to use on this frame.

        Raises:
            BadInputError: the frame is not a uint8 image.
        """
        if not isinstance(frame_bgr, np.ndarray) or frame_bgr.dtype != np.uint8 or frame_bgr.ndim not in (2, 3):
            raise BadInputError(f"frame must be a uint8 (H, W, 3) image, got "
                                f"{getattr(frame_bgr, 'dtype', type(frame_bgr).__name__)} "
                                f"{getattr(frame_bgr, 'shape', '')}")
        self.frames += 1
        held = self._box is not None
        if held and self.track == "phase":
            self._follow(frame_bgr)
        every = self.detect_every if held else self.lost_detect_every
        detected = snapped = lost = False
        n_faces = 0
        if not held or self._since_detect + 1 >= every:
            self._since_detect = 0
            detected = True
            self._detections += 1
            self.detections += 1
            regional = held and self.search_scale > 0 and (self._detections % self.full_every) != 0
            periodic_full = held and self.search_scale > 0 and not regional
            found = self._search_region(frame_bgr) if regional else self._full.detect(frame_bgr)
            if not regional:
                self.full_searches += 1
            elif not found:
                # The face may have moved out of the region: look at the whole frame before
                # counting a miss.
                found = self._full.detect(frame_bgr)
                self.full_searches += 1
            n_faces = len(found)
            if found:
                target = self._choose(found)
                self._missed = 0
                if not held:
                    self._box = target.copy()
                    self._anchor(frame_bgr)
                elif box_iou(self._box, target) < self.snap_iou or (
                        not periodic_full and self._beyond_deadband(target)):
                    # Another face, or the tracked box drifted off this one. A periodic
                    # full-frame search only switches faces: its box comes from other pyramid
                    # scales than the regional searches' and would differ by more jitter.
                    self._box = target.copy()
                    self._anchor(frame_bgr)
                    snapped = True
                    self.snaps += 1
            elif held:
                self._missed += 1
                if self._missed >= self.max_missed:
                    log.debug("face lost after %d missed detections", self._missed)
                    self._box = None
                    self._template = None
                    self._missed = 0
                    lost = True
        else:
            self._since_detect += 1
        self._show(snap=snapped or not held)
        return TrackState(self.box, detected, n_faces, lost, snapped)
