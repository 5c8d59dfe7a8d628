"""What the runtime hands out every hop: one frozen :class:`Result`, and why a value is unknown.

A :class:`Result` is the pipeline's only output record (STYLE rule 7): the writers of
:mod:`edge.outputs` (JSON lines, CSV, callback, LSL, annotated video, session report) and the
``emofuse run / replay / demo`` commands all consume it. Its JSON form is stable: keys in the
field order below, floats rounded to fixed decimals, NaN as ``null``; so a deterministic replay
gives byte-identical JSON lines (timings, which are never deterministic, can be left out:
:meth:`Result.to_json`).

Quality gating (issue 6, section 1): a quantity the pipeline cannot vouch for is ``None`` (JSON
``null``), never a number, and :attr:`Result.reasons` says why, with the values of
:class:`Reason`. ``status`` is ``"ok"`` when every quantity the session can produce is known,
else ``"unknown"``.
"""
from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = ["JSON_FIELDS", "Reason", "Result", "STATUS_OK", "STATUS_UNKNOWN"]

STATUS_OK = "ok"
STATUS_UNKNOWN = "unknown"


class Reason(str, enum.Enum):
    """Why a result holds ``None`` instead of a number (JSON: the value string).

    Members:
        WARMING_UP: the window is not full yet (less than ``pulse_window_s`` of video for the
            heart rate, or ``window_s`` for the emotion model).
        NO_FACE: no face on the window's last frame, or missing for more than a tenth of
            the pulse window (heart rate), or in a frame the model's face input needs.
        LOW_PULSE_QUALITY: a face is there, but its colour trace holds no clear pulse (SNR
            quality below the threshold): e.g. a printed photo, heavy motion, poor light.
        NO_CONTACT_SENSOR: the model needs contact signals and the session has no contact
            sensor (no PPG / EDA stream).
        CONTACT_GAP: a contact stream has a hole: samples lost, sensor unplugged, or not
            enough valid samples in the window.
        CONTACT_UNITS: a contact stream is not in the units the bundle's preprocessing declares
            for it (EDA in microsiemens), so its model row and its reported values are left out.
        MODEL_INPUT_MISSING: the emotion model's inputs could not be formed (a modality it
            needs is absent); the specific cause is listed beside it.

    A pipeline without a bundle produces no valence / arousal; that is not a reason (the
    session cannot produce them), so its results can still be ``"ok"``.
    """

    WARMING_UP = "warming_up"
    NO_FACE = "no_face"
    LOW_PULSE_QUALITY = "low_pulse_quality"
    NO_CONTACT_SENSOR = "no_contact_sensor"
    CONTACT_GAP = "contact_gap"
    CONTACT_UNITS = "contact_units"
    MODEL_INPUT_MISSING = "model_input_missing"

    def __str__(self) -> str:
        return self.value


# Decimals kept in JSON per field: enough for the quantity, few enough that float noise below
# them (thread count, summation order) does not change the text.
_DECIMALS = {
    "t_s": 3, "hr_bpm": 2, "hr_quality": 3, "hr_snr_db": 2, "contact_hr_bpm": 2,
    "contact_sdnn_ms": 1, "contact_rmssd_ms": 1, "eda_tonic_us": 3, "valence_prob": 4,
    "arousal_prob": 4, "face_box": 1, "latency_ms": 3,
}


def _round(value: Any, decimals: int) -> Any:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return [_round(v, decimals) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _round(value[k], decimals) for k in sorted(value)}
    f = float(value)
    if not math.isfinite(f):
        return None
    out = round(f, decimals)
    return 0.0 if out == 0 else out  # no "-0.0" in the text


@dataclass(frozen=True)
class Result:
    """One hop of the pipeline: heart rate, contact physiology, valence / arousal, and why not.

    Times are seconds on the session clock: for a replay, the recording's own time (frame 0 of
    a PhysRecorder clip at 0); for a live run, seconds since the first frame.

    Attributes:
        t_s: end of the window this result describes, s (the hop boundary).
        seq: result number, from 0.
        status: ``"ok"`` or ``"unknown"`` (see the module docstring).
        reasons: :class:`Reason` values (strings), sorted, no duplicates; empty when ok.
        face_present: a face box is held on the window's last frame.
        face_box: (x, y, w, h) px of the face in the window's last frame, or None.
        hr_bpm: remote (rPPG) heart rate over the last ``pulse_window_s``, beats/min, or None.
        hr_quality: its quality in [0, 1] (the record's ``rppg.hr_gate``:
            :func:`edge.signals.hr.pulse_quality`), or None without a face. Reported even when
            below the gate, so a consumer sees how far off it was.
        hr_snr_db: the window's SNR (one of the gate's features), dB (de Haan & Jeanne 2013), or None.
        contact_present: at least one contact stream (ECG, PPG or EDA) delivers data.
        contact_hr_bpm: heart rate from the contact sensor (ECG R peaks if an ECG stream
            exists, else PPG systolic peaks), beats/min, over the last ``pulse_window_s`` (10 s,
            the span of ``hr_bpm``), or None.
        contact_sdnn_ms, contact_rmssd_ms: time-domain HRV of the same beats, ms, or None.
        eda_tonic_us: tonic skin-conductance level over the contact window, uS, or None.
        eda_scr_count: skin-conductance responses with onset in the contact window, or None.
        valence_prob, arousal_prob: model probabilities of [low, high], or None.
        valence, arousal: the more probable label (``"low"`` / ``"high"``), or None.
        modalities: the modalities the model's answer came from, ``+``-joined in
            :data:`edge.preprocess.MODALITIES` order (``"face+pulse+ppg+eda+hr_level+eda_level"``,
            ``"face"`` for a face alone), or None when the model did not run.
        latency_ms: stage name -> milliseconds for this result (see
            :data:`edge.pipeline.STAGES`); ``window`` is the time from the arrival of the
            window's last frame to this result.
        frames: frames processed since the previous result.
        frames_dropped: frames dropped as stale since the start (live mode), total.
        pulse: float32 (N,) the cleaned rPPG pulse of the pulse window at ``pulse_fs_hz``, for
            plots; None without one. Not part of the JSON.
        pulse_fs_hz: the pulse's sampling rate, Hz (the manifest's ``fps``).
        tfr: float32 (F, T) the TFR image given to the model (z-scored log power), or None.
            Not part of the JSON.
        window: the :class:`edge.preprocess.Window` of model inputs, when the pipeline was
            asked to keep them (``keep_windows=True``), else None. Not part of the JSON.
    """

    t_s: float
    seq: int
    status: str
    reasons: tuple[str, ...]
    face_present: bool
    face_box: tuple[float, float, float, float] | None = None
    hr_bpm: float | None = None
    hr_quality: float | None = None
    hr_snr_db: float | None = None
    contact_present: bool = False
    contact_hr_bpm: float | None = None
    contact_sdnn_ms: float | None = None
    contact_rmssd_ms: float | None = None
    eda_tonic_us: float | None = None
    eda_scr_count: int | None = None
    valence_prob: tuple[float, float] | None = None
    arousal_prob: tuple[float, float] | None = None
    valence: str | None = None
    arousal: str | None = None
    modalities: str | None = None
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    frames: int = 0
    frames_dropped: int = 0
    pulse: np.ndarray | None = field(default=None, repr=False, compare=False)
    pulse_fs_hz: float | None = field(default=None, repr=False, compare=False)
    tfr: np.ndarray | None = field(default=None, repr=False, compare=False)
    window: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Normalise so that equal results compare and serialise equally.
        object.__setattr__(self, "reasons", tuple(sorted({str(Reason(r)) for r in self.reasons})))
        if self.status not in (STATUS_OK, STATUS_UNKNOWN):
            raise ValueError(f"status must be {STATUS_OK!r} or {STATUS_UNKNOWN!r}, got {self.status!r}")
        object.__setattr__(self, "latency_ms", dict(sorted(dict(self.latency_ms).items())))

    @property
    def ok(self) -> bool:
        """True when ``status`` is ``"ok"``."""
        return self.status == STATUS_OK

    def to_dict(self, latency: bool = True) -> dict[str, Any]:
        """The JSON fields as plain values, in :data:`JSON_FIELDS` order.

        Args:
            latency: include ``latency_ms`` (timings differ from run to run; leave them out
                for byte-identical replays).

        Returns:
            dict: floats rounded per field, NaN as None, tuples as lists, ``reasons`` a list of
            strings.
        """
        out: dict[str, Any] = {}
        for name in JSON_FIELDS:
            if name == "latency_ms" and not latency:
                continue
            value = getattr(self, name)
            if name in _DECIMALS:
                value = _round(value, _DECIMALS[name])
            elif name == "reasons":
                value = list(value)
            elif isinstance(value, (bool, np.bool_)):
                value = bool(value)
            elif isinstance(value, (int, np.integer)):
                value = int(value)
            out[name] = value
        return out

    def to_json(self, latency: bool = True) -> str:
        """One line of JSON (no newline) with a stable key order.

        Args:
            latency: include ``latency_ms`` (see :meth:`to_dict`).

        Returns:
            Compact JSON text: ``{"t_s":12.0,"seq":11,"status":"ok",...}``.
        """
        return json.dumps(self.to_dict(latency=latency), separators=(",", ":"), allow_nan=False)


#: Fields written to JSON / CSV, in order (``pulse``, ``pulse_fs_hz``, ``tfr`` and
#: ``window`` are for plots and tests and stay out).
JSON_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Result) if f.name not in ("pulse", "pulse_fs_hz", "tfr", "window")
)
