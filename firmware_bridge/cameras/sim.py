"""The synthetic camera, ``sim://?hr_bpm=72&duration_s=30&seed=0``: frames of a simulated face.

Query parameters are :class:`firmware_bridge.sim.SimConfig` fields by name (``width`` and
``height`` set ``frame_size``). Values are Python literals: ``hr_bpm=72``,
``hr_bpm=((0,60),(30,120))``, ``scr_onsets_s=(5,15)``, ``jpeg_quality=none``. Frames are
rendered when asked for, so a long session costs no memory.
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Any, Mapping

import numpy as np

from firmware_bridge.cameras.base import CameraOptions, CameraUri, FiniteSource, parse_options
from firmware_bridge.errors import ConfigError
from firmware_bridge.sim import SimConfig, synth_session

_ALIASES = ("width", "height")


def _literal(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text  # a plain word; SimConfig's own checks judge it


def sim_config_from_query(query: Mapping[str, str], where: str = "sim://") -> Any:
    """Build a ``SimConfig`` from ``sim://`` query parameters.

    Args:
        query: field name -> value text (Python literal, or none/true/false).
        where: the URI, for messages.

    Returns:
        The frozen ``firmware_bridge.sim.SimConfig``.

    Raises:
        ConfigError: an unknown name (the message lists the valid ones), a value of the wrong
            kind, or a setting SimConfig rejects.
    """
    fields = {f.name: f for f in dataclasses.fields(SimConfig)}
    unknown = sorted(set(query) - set(fields) - set(_ALIASES))
    if unknown:
        valid = ", ".join(sorted([*fields, *_ALIASES]))
        raise ConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
    values: dict[str, Any] = {}
    for name, text in query.items():
        if name in _ALIASES:
            continue
        value = _literal(text)
        # Keep float fields float ("hr_bpm=72" is a float rate, not an int).
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(fields[name].default, float) and is_int:
            value = float(value)
        values[name] = value
    if any(a in query for a in _ALIASES):
        if "frame_size" in query:
            raise ConfigError(f"{where}: give frame_size or width/height, not both")
        width, height = SimConfig().frame_size
        try:
            width = int(query.get("width", width))
            height = int(query.get("height", height))
        except ValueError:
            raise ConfigError(f"{where}: width and height must be whole numbers") from None
        values["frame_size"] = (width, height)
    try:
        return SimConfig(**values)
    except (TypeError, ValueError) as exc:  # ConfigError is a ValueError too
        raise ConfigError(f"{where}: {exc}") from None


class SimCameraSource(FiniteSource):
    """Frames of a :func:`firmware_bridge.sim.synth_session`, with their simulated times.

    ``Frame.t_ns = origin_ns + frame_times_s[i] * 1e9``: the session's t = 0 (where its ECG,
    PPG and EDA also start) sits at ``origin_ns``, so the sensors of the same session line up.

    Attributes:
        session: the ``SyntheticSession`` (its ECG/PPG/EDA, face boxes, true heart rate).
    """

    scheme = "sim"
    OPTIONS = frozenset({"realtime", "origin_ns"})

    def __init__(self, uri: CameraUri, options: CameraOptions, session: Any = None):
        super().__init__(uri, options)
        if session is None:
            session = synth_session(sim_config_from_query(uri.query, uri.display))
        self.session = session
        self.fps = float(session.config.fps)
        self.width, self.height = (int(v) for v in session.config.frame_size)
        self._times_ns = np.rint(np.asarray(session.frame_times_s) * 1e9).astype(np.int64)

    @classmethod
    def from_session(cls, session: Any, **options: Any) -> "SimCameraSource":
        """Stream an existing session (e.g. one whose sensors a simulated board also streams).

        Args:
            session: a ``firmware_bridge.sim.SyntheticSession``.
            **options: ``realtime``, ``origin_ns``.

        Raises:
            ConfigError: an option this source does not take.
        """
        uri = CameraUri("sim://session", "sim", "", {}, "sim://session")
        return cls(uri, parse_options(options, cls.OPTIONS, uri.display), session=session)

    def _read(self) -> tuple[int, np.ndarray] | None:
        i = self._index
        if i >= len(self.session):
            self.end_reason = f"end of simulated session after {i} frames"
            return None
        return int(self._times_ns[i]), self.session.frame(i)
