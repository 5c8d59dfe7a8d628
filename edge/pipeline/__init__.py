"""The streaming runtime: camera frames and contact samples in, a :class:`~edge.results.Result` every hop.

::

    camera ─> [frame source] ─frames─> [face stage] ─FaceRec─> [window assembly] ─windows─> [inference ─> results
               sources.py      (queue)  face_stage.py           windows.py        (queue)   and gating]  (queue)
                                        track, ROI colour,      hop cut, frames             infer.py
                                        crop                    face_plan picks      ▲
    sensors ─> [sensor sources] ──────────────────────────────> [sensor store] ──────┘
               sources.py        admitted by the one clock      rings, names, units
                                 (SensorSync, windows.py)

    Pipeline (runner.py): opens the stages, starts and stops their threads, counts.

Each bracket with a thread of its own is a stage (frame source, face stage with window
assembly, each sensor source, inference); the arrows marked (queue) are bounded queues. Every
rate, window, crop, ROI, skin rule, gap limit, coverage gate and contact stream name comes from
the bundle's :class:`edge.spec.Preprocessing` record, through the same :mod:`edge.preprocess`
functions training uses; :class:`PipelineOptions` holds what changes no model input (mode,
hop, queues, gating thresholds of the reported values, recording).

Modes:

- ``"replay"``: every frame is processed; a sensor delivers no further than ``sensor_lead_s``
  past the window being formed, and a window is formed once every sensor has delivered past
  its end, so the same recording gives the same results, byte for byte in their JSON (without
  the timings). A gap in the video or in a sensor stream stalls nothing: its windows come out
  unknown and the run carries on.
- ``"live"``: sources run on their own clocks; when the face stage falls behind, the oldest
  waiting frames are dropped and counted (``Result.frames_dropped``), so results stay current.

Without a camera the hop clock follows the sensors (contact-only sessions).

The pulse is computed per window from the window's colour trace (resampled, POS, cleaned),
exactly as training computes it, rather than by a streaming filter: a continuous stream would
differ from the training windows at each window's start. The cost is under a millisecond per
hop for a 10 s window.

Example::

    with Pipeline("clip.avi", ["replay://rec1"], bundle="default") as pipe:
        for result in pipe.results():
            print(result.to_json())
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.bundle import Bundle, load_bundle
from firmware_bridge.errors import ConfigError

__all__ = [
    "DEFAULT_BUNDLE_DIR",
    "MODES",
    "STAGES",
    "FrameEvent",
    "Pipeline",
    "PipelineOptions",
    "default_bundle_dir",
    "format_summary",
    "recent_heart_rate",
    "resolve_bundle",
]

#: Stage names in ``Result.latency_ms``: per frame (mean over the hop's frames) ``read``
#: (camera delivery, video decoding included; for a paced or live camera also the wait for
#: the next frame), ``track``, ``roi``, ``crop``; per window
#: ``assemble`` (picking the window's frames), ``wait`` (replay: waiting for sensors),
#: ``pulse``, ``tfr``, ``contact`` (model contact tensors), ``physio`` (contact heart rate,
#: HRV, EDA), ``encoder`` (MVP facial features), ``engine`` (the model), ``compute`` (all of
#: the inference stage) and ``window`` (from the moment the face stage has taken in the
#: window's last frame to the result: waiting for the next frame, queueing and compute).
STAGES = ("read", "track", "roi", "crop", "assemble", "wait", "pulse", "tfr", "contact", "physio",
          "encoder", "engine", "compute", "window")

#: Where the package's default bundle lives (``bundle="default"``).
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent.parent / "default_bundle"


def default_bundle_dir() -> Path:
    """:data:`DEFAULT_BUNDLE_DIR`. Raises ConfigError when it is not installed."""
    if not (DEFAULT_BUNDLE_DIR / "manifest.json").is_file():
        raise ConfigError(f"the default bundle is not installed ({DEFAULT_BUNDLE_DIR}); rebuild it with "
                          "scripts/build_default_bundle.sh, or pass a bundle folder")
    return DEFAULT_BUNDLE_DIR


def resolve_bundle(bundle: Any):
    """The :class:`edge.bundle.Bundle` a pipeline runs, from what a user passes.

    Args:
        bundle: ``None`` or ``"none"`` (no model), ``"default"`` (the package's bundle in
            :data:`DEFAULT_BUNDLE_DIR`), a bundle folder (str or Path), or a loaded
            :class:`edge.bundle.Bundle`.

    Returns:
        The validated bundle (hashes checked, preprocessing parsed into its record), or None.

    Raises:
        ConfigError: the default bundle is not installed, an unknown schema version or a
            manifest field is invalid (including its preprocessing).
        BadInputError: a missing folder or file, a corrupt manifest or a hash mismatch.
    """
    if bundle is None or (isinstance(bundle, str) and bundle.lower() == "none"):
        return None
    if isinstance(bundle, str) and bundle == "default":
        bundle = default_bundle_dir()
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)


# The stages import resolve_bundle from here, so they come after it.
from edge.pipeline.face_stage import FrameEvent  # noqa: E402
from edge.pipeline.infer import recent_heart_rate  # noqa: E402
from edge.pipeline.runner import MODES, Pipeline, PipelineOptions, format_summary  # noqa: E402
