"""The annotated video output: each camera frame with the face box, the latest pulse and the
valence / arousal bars drawn on it (OpenCV, imported when the writer opens).
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.outputs.base import Writer, _attr, _finite_or_none, _is_ok, _prob_high, _reason_words
from firmware_bridge.errors import BadInputError, ConfigError, DeviceError



def _frames_of(frame: Any) -> list[np.ndarray]:
    """The BGR images in ``frame`` (an image, a Frame, a sequence of either, or None)."""
    if frame is None:
        return []
    if isinstance(frame, np.ndarray):
        return [frame] if frame.ndim == 3 else list(frame)  # (N, H, W, 3) stacks too
    if hasattr(frame, "image"):
        return [frame.image]
    if isinstance(frame, (list, tuple)):
        return [f.image if hasattr(f, "image") else f for f in frame]
    raise BadInputError(f"frame must be an image, a Frame or a sequence of them, got {type(frame).__name__}")


class _PulseHistory:
    """The rPPG pulse over the session, stitched from overlapping windows: each window adds
    only its samples later than the last one kept (windows overlap by window - hop)."""

    def __init__(self, keep_s: float | None = None) -> None:
        self.t_s: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.fs_hz: float | None = None
        self.keep_s = keep_s  # None: the whole session (the report); else only the newest part
        self._last_t = -math.inf

    def add(self, result: Any, extras: dict) -> None:
        if extras.get("pulse") is not None:
            pulse, fs = extras["pulse"], extras.get("pulse_fs_hz")
        else:
            pulse, fs = _attr(result, "pulse"), _attr(result, "pulse_fs_hz")
        if pulse is None:
            return
        pulse = np.asarray(pulse, dtype=np.float64).ravel()
        fs = _finite_or_none(fs)
        if fs is None or fs <= 0:
            raise BadInputError(f"a pulse needs its sampling rate > 0 Hz, got {fs!r}")
        t = extras.get("pulse_t_s")
        if t is None:
            t_end = _finite_or_none(_attr(result, "t_s")) or 0.0
            t = t_end - (pulse.size - 1 - np.arange(pulse.size)) / fs
        else:
            t = np.asarray(t, dtype=np.float64).ravel()
            if t.shape != pulse.shape:
                raise BadInputError(f"extras['pulse_t_s'] has shape {t.shape}, pulse has {pulse.shape}")
        # Samples before the session began are the window's padding, not pulse.
        keep = (t > self._last_t + 0.5 / fs) & (t >= -0.5 / fs)
        if np.any(keep):
            self.t_s.append(t[keep])
            self.values.append(pulse[keep])
            self._last_t = float(t[keep][-1])
        self.fs_hz = fs
        if self.keep_s is not None:
            while len(self.t_s) > 1 and self._last_t - float(self.t_s[1][0]) >= self.keep_s:
                del self.t_s[0], self.values[0]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.values:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self.t_s), np.concatenate(self.values)

    def tail(self, seconds: float) -> np.ndarray:
        """The last ``seconds`` of pulse (only the newest few windows are joined)."""
        out: list[np.ndarray] = []
        n = 0
        need = int(seconds * (self.fs_hz or 30.0))
        for v in reversed(self.values):
            out.append(v)
            n += v.size
            if n >= need:
                break
        if not out:
            return np.zeros(0)
        return np.concatenate(out[::-1])[-need:]


#: BGR colours of the overlay.
_GREEN = (80, 200, 60)
_AMBER = (0, 170, 255)
_WHITE = (255, 255, 255)
_GREY = (150, 150, 150)
_PANEL = (30, 30, 30)


class AnnotatedVideoWriter(Writer):
    """The camera video with the results drawn on it (OpenCV: MPEG-4 ``mp4v`` in an .mp4, or
    intra-frame MJPEG in any other file, e.g. an .avi).

    Each frame shows the face box (green when the result is ``ok``, amber when ``unknown``),
    the last ``trace_s`` seconds of the rPPG pulse as a trace, the rPPG and contact heart
    rates (or ``--`` and the reason), and valence / arousal as two bars of P(high). The
    overlay shows the newest result, so a frame is annotated with what was known when it
    was delivered. An .mp4 is small (FFmpeg's MPEG-4 in OpenCV's wheels); MJPEG needs no
    FFmpeg and every frame is a key frame, so a file cut short by a crash still plays up to its
    last frame.

    Two ways to feed it: ``write(result, frames)`` with the frames of each hop, or
    ``Pipeline(..., on_frame=writer.on_frame)``, which hands it every frame with its box and
    the newest result from the pipeline's face thread (then call ``close()`` after the run).
    Calls are serialised by a lock, so both may come from different threads.

    Args:
        path: the file to write: ``.mp4`` for MPEG-4, anything else (``.avi``) for MJPEG.
        fps: frame rate written into the file, Hz.
        quality: JPEG quality, 1-100 (MJPEG only).
        trace_s: length of the pulse trace, s.
        frame_size: (width, height) px of the output; None takes the first frame's size.
            Frames of another size are resized.

    Raises:
        ConfigError: bad settings.
        DeviceError: OpenCV cannot open the file for writing.
    """

    name = "video"

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, quality: int = 90,
                 trace_s: float = 5.0, frame_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if not (math.isfinite(fps) and fps > 0):
            raise ConfigError(f"fps must be > 0, got {fps!r}")
        if not (1 <= int(quality) <= 100):
            raise ConfigError(f"quality must be in 1..100, got {quality!r}")
        if not (trace_s > 0):
            raise ConfigError(f"trace_s must be > 0, got {trace_s!r}")
        self.path = Path(path)
        self.fps = float(fps)
        self.quality = int(quality)
        self.trace_s = float(trace_s)
        self.frame_size = tuple(int(v) for v in frame_size) if frame_size else None
        self.n_frames = 0
        self._vw = None
        self._result: Any = None
        self._pulse = _PulseHistory(keep_s=self.trace_s)
        self._trace: np.ndarray = np.zeros(0)
        self._lock = threading.RLock()

    # -- writer verbs ----------------------------------------------------------------------
    def write(self, result: Any, frame: Any = None, extras: dict | None = None) -> None:
        with self._lock:
            super().write(result, frame, extras)

    def _set_result(self, result: Any, extras: dict) -> None:
        self._result = result
        self._pulse.add(result, extras)
        self._trace = self._pulse.tail(self.trace_s)

    def on_frame(self, event: Any) -> None:
        """Annotate and append one frame from a pipeline's ``on_frame`` hook.

        Args:
            event: an :class:`edge.pipeline.FrameEvent` (``frame``, ``box``, ``result``): the
                frame is drawn with its own face box and the newest result.

        Raises:
            BadInputError: a closed writer or a bad image.
        """
        with self._lock:
            result = getattr(event, "result", None)
            if result is not None and result is not self._result:
                self._set_result(result, {})
            frame = event.frame
            self.write_frame(frame.image if hasattr(frame, "image") else frame, getattr(event, "box", None))

    def _write(self, result: Any, frame: Any, extras: dict) -> None:
        self._set_result(result, extras)
        images = _frames_of(frame)
        boxes = extras.get("face_boxes")
        if boxes is not None and len(boxes) != len(images):
            raise BadInputError(f"extras['face_boxes'] has {len(boxes)} entries for {len(images)} frames")
        for i, image in enumerate(images):
            box = boxes[i] if boxes is not None else _attr(result, "face_box")
            self.write_frame(image, box)

    def write_frame(self, image: np.ndarray, face_box: Sequence[float] | None = None) -> None:
        """Annotate one BGR frame with the newest result and append it to the video.

        For callers that hand frames over one at a time between results.

        Args:
            image: uint8 (H, W, 3) BGR.
            face_box: (x, y, w, h) px of the face in this frame, or None.

        Raises:
            BadInputError: not a uint8 (H, W, 3) image, or the writer is closed.
        """
        with self._lock:
            self._write_frame(image, face_box)

    def _write_frame(self, image: np.ndarray, face_box) -> None:
        if self._closed:
            raise BadInputError("the video writer is closed")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise BadInputError(f"frames must be uint8 (H, W, 3) BGR, got {image.dtype} {image.shape}")
        cv2 = _cv2()
        if self._vw is None:
            self._open(image.shape[1], image.shape[0])
        w, h = self.frame_size
        canvas = image.copy() if image.shape[1] == w and image.shape[0] == h else cv2.resize(image, (w, h))
        if face_box is not None and (image.shape[1], image.shape[0]) != (w, h):
            sx, sy = w / image.shape[1], h / image.shape[0]
            x, y, bw, bh = face_box
            face_box = (x * sx, y * sy, bw * sx, bh * sy)
        self._draw(canvas, face_box)
        self._vw.write(canvas)
        self.n_frames += 1

    def _open(self, width: int, height: int) -> None:
        cv2 = _cv2()
        if self.frame_size is None:
            self.frame_size = (width, height)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeviceError(f"cannot create {self.path.parent}: {exc.strerror or exc}") from exc
        if self.path.suffix.lower() == ".mp4":
            # MPEG-4 Part 2 through the FFmpeg that OpenCV's wheels bundle (H.264 is not in them):
            # about a tenth of MJPEG's size for the demo, but a file cut short by a crash may
            # not play. OpenCV sets its bitrate from the frame size and rate.
            vw = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                 self.frame_size)
            if not vw.isOpened():
                raise DeviceError(f"this OpenCV cannot write MPEG-4 (mp4v) to {self.path} (no FFmpeg?); "
                                  "write an .avi instead (MJPEG, needs no FFmpeg)")
        else:
            # OpenCV's own MJPEG muxer: present in every build, no FFmpeg needed.
            vw = cv2.VideoWriter(str(self.path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), self.fps,
                                 self.frame_size, [cv2.VIDEOWRITER_PROP_QUALITY, self.quality])
            if not vw.isOpened():
                raise DeviceError(f"OpenCV cannot write an MJPEG video to {self.path}")
        self._vw = vw

    def close(self) -> None:
        with self._lock:
            super().close()

    def _close(self) -> None:
        if self._vw is not None:
            self._vw.release()
            self._vw = None

    # -- drawing ---------------------------------------------------------------------------
    def _draw(self, img: np.ndarray, face_box) -> None:
        cv2 = _cv2()
        h, w = img.shape[:2]
        r = self._result
        ok = _is_ok(r)
        colour = _GREEN if ok else _AMBER
        scale = max(0.4, w / 1280.0)
        thick = max(1, int(round(w / 640.0)))
        font = cv2.FONT_HERSHEY_SIMPLEX
        if face_box is not None and (r is None or _attr(r, "face_present", True)):
            x, y, bw, bh = (int(round(float(v))) for v in face_box)
            cv2.rectangle(img, (x, y), (x + bw, y + bh), colour, thick + 1)

        # Top-left panel: times and heart rates.
        panel_h = int(70 * scale / 0.5)
        cv2.rectangle(img, (0, 0), (min(w, int(340 * scale / 0.5)), panel_h), _PANEL, -1)
        line_h = int(22 * scale / 0.5)
        if r is None:
            lines = ["waiting for the first window"]
        else:
            t_s = _finite_or_none(_attr(r, "t_s"))
            hr = _finite_or_none(_attr(r, "hr_bpm"))
            q = _finite_or_none(_attr(r, "hr_quality"))
            chr_ = _finite_or_none(_attr(r, "contact_hr_bpm"))
            hr_txt = f"HR {hr:5.1f} bpm" if hr is not None else "HR  --"
            if q is not None:
                hr_txt += f"  q {q:.2f}"
            lines = [f"t {t_s:7.1f} s" if t_s is not None else "t  --", hr_txt]
            if chr_ is not None:
                lines[0] += f"   contact {chr_:5.1f} bpm"
            if not ok:
                lines.append(f"unknown: {_reason_words(r)}")
        for i, text in enumerate(lines[:3]):
            cv2.putText(img, text, (8, line_h * (i + 1) - 4), font, scale, _WHITE if i < 2 else _AMBER,
                        thick, cv2.LINE_AA)

        # Bottom strip: pulse trace.
        strip_h = max(24, h // 8)
        y0 = h - strip_h
        img[y0:, :] = (img[y0:, :].astype(np.uint16) // 3).astype(np.uint8)  # darken, keep context
        trace = self._trace
        if trace.size >= 2 and np.all(np.isfinite(trace)):
            lo, hi = float(trace.min()), float(trace.max())
            span = hi - lo if hi > lo else 1.0
            xs = np.linspace(0, w - 1, trace.size)
            ys = y0 + 3 + (1.0 - (trace - lo) / span) * (strip_h - 6)
            pts = np.stack([xs, ys], axis=1).round().astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(img, [pts], False, colour, thick, cv2.LINE_AA)
        cv2.putText(img, "pulse", (6, y0 + int(16 * scale / 0.5)), font, scale * 0.8, _GREY, 1, cv2.LINE_AA)

        # Right: valence / arousal bars of P(high), filled from the bottom, on a 0 - 0.5 - 1
        # scale (ticks and numbers left of the bars; the 0.5 line is the decision threshold),
        # each bar's value printed under it.
        bar_w = max(10, w // 32)
        bar_h = max(40, h // 3)
        bottom = y0 - 10 - line_h
        small = scale * 0.7
        x_first = w - 2 * (bar_w + 10)
        for frac, tick in ((1.0, "1"), (0.5, ".5"), (0.0, "0")):
            y = bottom - int(round(frac * bar_h))
            cv2.line(img, (x_first - 4, y), (w - 10, y), _GREY, 1)
            (tw, th), _ = cv2.getTextSize(tick, font, small, 1)
            cv2.putText(img, tick, (x_first - 6 - tw, y + th // 2), font, small, _GREY, 1, cv2.LINE_AA)
        for k, (label, key) in enumerate((("V", "valence_prob"), ("A", "arousal_prob"))):
            x1 = w - (2 - k) * (bar_w + 10)
            cv2.rectangle(img, (x1, bottom - bar_h), (x1 + bar_w, bottom), _GREY, 1)
            p = _prob_high(_attr(r, key)) if r is not None else None
            if p is not None:
                top = bottom - int(round(np.clip(p, 0.0, 1.0) * bar_h))
                cv2.rectangle(img, (x1 + 1, top), (x1 + bar_w - 1, bottom - 1), colour, -1)
            value = "--" if p is None else f"{p:.2f}"[1:] if p < 1 else "1.0"
            cv2.putText(img, value, (x1 - 2, bottom + line_h - 4), font, small, _WHITE, 1, cv2.LINE_AA)
            cv2.putText(img, label, (x1, bottom - bar_h - 6), font, scale, _WHITE, thick, cv2.LINE_AA)
        cv2.putText(img, "P(high)", (x_first - 6, bottom - bar_h - 6 - line_h), font, small, _GREY, 1,
                    cv2.LINE_AA)


def _cv2():
    import cv2

    return cv2
