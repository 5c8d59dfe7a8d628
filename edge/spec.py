"""The preprocessing record: every setting that changes a model input, typed and checked once.

A bundle's ``manifest.json`` holds a ``preprocessing`` object; :func:`Preprocessing.from_dict`
turns it into the frozen :class:`Preprocessing` record when the bundle loads
(:func:`edge.bundle.load_bundle`), and from then on training (``export``), calibration
(``calibrate``), the still-face scorer (``emofuse faces``), replay and the device read their
settings only from that record. Nothing downstream keeps a default of its own: a rate, a
window, a crop size, a face-box method, a skin rule or a threshold that changes what a model
sees lives here, and :data:`DEFAULT` is the one set of defaults (what ``emofuse train`` writes
into a new bundle).

Parsing is strict: an unknown key, a missing key, a value of the wrong type (``"30"`` for a
rate) or out of range is one :class:`~firmware_bridge.errors.ConfigError` naming the key's path
(``preprocessing.face.crop_size``). :meth:`Preprocessing.to_dict` gives the JSON object back,
so ``from_dict(to_dict(p)) == p``.

Why one file of about 600 lines: the record's dataclasses and their parser change together
(a new setting is one field, one parse line and one ``to_dict`` entry, side by side).

Versions: ``version`` 2 is this record. Version 1 manifests (before the record) held a
subset of the keys, with the rest fixed in code; :func:`upgrade_v1` fills those in with the
values version 1's code used, so an old bundle behaves exactly as it did. Keys added to version
2 later are optional and default to what manifests without them computed: ``rppg.roi_edges``
absent means ``"pixel"`` (:data:`DEFAULT` says ``"fractional"``), ``rppg.hr_gate`` absent means
``"snr"`` (:data:`DEFAULT` says ``"logistic"``); ``face.tracker.contrast`` absent means
``"none"``, :class:`edge.tracker.FaceTracker`'s default (:data:`DEFAULT` says ``"clahe"``, a
CLAHE retry of a detection that found no face); ``rppg.tfr_min_quality`` absent means 0 (every
formed pulse goes to the model; :data:`DEFAULT` says :data:`PULSE_MIN_QUALITY`); :meth:`Preprocessing.to_dict`
leaves such a key out while it holds that value.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.signals.hr import GATES as HR_GATES
from edge.signals.roi import FACE_ROI_FRACTIONS, ROI_EDGES, SKIN_RULE_NAMES
from edge.signals.rppg import METHODS as RPPG_METHODS
from edge.signals.tfr import tfr_params
from edge.tracker import FaceTracker
from firmware_bridge.errors import ConfigError
from firmware_bridge.resample import DEFAULT_MAX_GAP_PERIODS

__all__ = [
    "DEFAULT",
    "FACE_BOX_METHODS",
    "VERSION",
    "ContactSpec",
    "FaceSpec",
    "LevelSpec",
    "Preprocessing",
    "PulseCleanSpec",
    "RppgSpec",
    "StreamSpec",
    "TfrSpec",
    "upgrade_v1",
]

VERSION = 2

#: Ways a face box is found. ``tracker``: :class:`edge.tracker.FaceTracker` (Haar detection
#: every few frames, phase-correlation tracking in between, box smoothing) run over the frames
#: in time order from the start of the recording, with ``face.tracker`` as its settings. The
#: device runs it live; training, calibration and replay run the same tracker over the
#: recording's frames; a still image is a one-frame recording (its first detection).
FACE_BOX_METHODS = ("tracker",)

# FaceTracker's own settings that a manifest may set (its constructor's, less the injected
# detector object).
_TRACKER_KEYS = tuple(k for k in inspect.signature(FaceTracker.__init__).parameters if k not in ("self", "detector"))


# Keys added to version 2 after it shipped, with the value a manifest without them means (what
# bundles written before the key computed). rppg.roi_edges: whole-pixel regions; rppg.hr_gate:
# the logistic of the SNR alone.
_LEGACY = {"rppg.roi_edges": "pixel", "rppg.hr_gate": "snr", "rppg.tfr_min_quality": 0.0}


def _path(*parts: str) -> str:
    return "preprocessing." + ".".join(parts)


def _obj(node: Any, where: str, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> Mapping:
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where} must be an object, got {type(node).__name__}")
    unknown = sorted(set(node) - set(keys) - set(optional))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(set(keys) | set(optional))}")
    missing = [k for k in keys if k not in node]
    if missing:
        raise ConfigError(f"{where}.{missing[0]} is missing")
    return node


def _num(node: Mapping, key: str, where: str, *, lo: float | None = None, hi: float | None = None,
         lo_open: bool = False, integer: bool = False) -> float | int:
    v = node[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not float(v).is_integer()):
        raise ConfigError(f"{where}.{key} must be {'an integer' if integer else 'a number'}, got {v!r}")
    if not math.isfinite(float(v)):
        raise ConfigError(f"{where}.{key} must be finite, got {v!r}")
    if lo is not None and (float(v) < lo or (lo_open and float(v) == lo)):
        raise ConfigError(f"{where}.{key} must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and float(v) > hi:
        raise ConfigError(f"{where}.{key} must be <= {hi}, got {v!r}")
    return int(v) if integer else float(v)


def _str(node: Mapping, key: str, where: str, choices=None) -> str:
    v = node[key]
    if not isinstance(v, str):
        raise ConfigError(f"{where}.{key} must be a string, got {v!r}")
    if choices is not None and v not in choices:
        raise ConfigError(f"{where}.{key} must be one of {sorted(choices)}, got {v!r}")
    return v


def _bool(node: Mapping, key: str, where: str) -> bool:
    v = node[key]
    if not isinstance(v, bool):
        raise ConfigError(f"{where}.{key} must be true or false, got {v!r}")
    return v


@dataclass(frozen=True)
class FaceSpec:
    """How faces are found and cut (all in the frames' own pixels and the video's frame rate).

    Attributes:
        box: the face-box method, one of :data:`FACE_BOX_METHODS`.
        tracker: :class:`edge.tracker.FaceTracker` settings (name -> value), as sorted pairs.
        crop_size: side of a face crop, px (the face encoder's input side).
        crop_margin: extra border around the box on each side, as a fraction of its size
            (:func:`edge.face.crop_face`).
        clip_frames: crops in the model's ``face_clip``.
        clip_stride_frames: frames between two clip crops.
        seq_rate_hz: rate of the long ``face_seq_crops`` sequence (MVP), Hz.
        seq_frames: crops in that sequence.
        max_frame_age_periods: a slot takes the latest frame at or before its time if it is at
            most this many frame periods old (2.5: one dropped frame is bridged, two are not).
        track_warmup_s: offline paths (training, calibration) start the tracker this long
            before the pulse window (:mod:`edge.windows`); the device's tracker runs from the
            start of its stream.
    """

    box: str
    tracker: tuple
    crop_size: int
    crop_margin: float
    clip_frames: int
    clip_stride_frames: int
    seq_rate_hz: float
    seq_frames: int
    max_frame_age_periods: float
    track_warmup_s: float

    @property
    def tracker_settings(self) -> dict:
        """The tracker settings as keyword arguments of :class:`edge.tracker.FaceTracker`."""
        return dict(self.tracker)

    def clip_span_s(self, fps: float) -> float:
        """Time the face clip spans, s (derived: not a setting of its own)."""
        return (self.clip_frames - 1) * self.clip_stride_frames / float(fps)


@dataclass(frozen=True)
class PulseCleanSpec:
    """Pulse cleaning (:func:`edge.signals.rppg.rppg_clean`): smoothness-priors detrending with
    ``lam`` (Tarvainen et al. 2002), then a zero-phase Butterworth band-pass ``lo``-``hi`` Hz of
    ``order``. The band is also the heart-rate band (42-210 bpm by default)."""

    lam: float
    lo: float
    hi: float
    order: int

    def kwargs(self) -> dict:
        return {"lam": self.lam, "lo": self.lo, "hi": self.hi, "order": self.order}


@dataclass(frozen=True)
class RppgSpec:
    """The face colour, the pulse and the pulse window.

    Attributes:
        roi: region name -> (x0, y0, x1, y1) fractions of the face box, as sorted pairs
            (forehead and cheeks by default, :data:`edge.signals.roi.FACE_ROI_FRACTIONS`).
        skin: skin rule name (:data:`edge.signals.roi.SKIN_RULE_NAMES`: a fixed YCrCb box or
            ``"adaptive"``, relative to the face's own median colour; :data:`DEFAULT` says
            ``"adaptive"``, a manifest keeps the rule it names).
        method: rPPG method (:data:`edge.signals.rppg.METHODS`).
        method_window_s: the method's sliding window, s.
        pulse_window_s: the pulse window (TFR and heart rate), s.
        clean: :class:`PulseCleanSpec`.
        gap_fill: value a gap in the cleaned pulse becomes before the TFR.
        max_gap_periods: the face-colour resampler bridges gaps up to this many frame periods.
        min_valid_fraction: a pulse window is formed when at least this share of its grid has
            a face colour and at least this share of the cleaned pulse is finite.
        hr_min_face_fraction: a heart rate is reported only when the face was seen for this
            share of the pulse window.
        roi_edges: how the regions meet the pixel grid (:data:`edge.signals.roi.ROI_EDGES`):
            ``"fractional"`` (area-weighted edge pixels, regions combined by area and skin
            share; the default) or ``"pixel"`` (whole-pixel regions, pooled skin pixels). A
            manifest that does not name it gets ``"pixel"``: what every bundle trained before
            the setting existed computed.
        hr_gate: how a window's heart-rate quality is scored (:data:`edge.signals.hr.GATES`):
            ``"logistic"`` (a logistic regression over SNR, agreement of the window's halves,
            beat checks and pulse amplitude, fitted on labelled windows:
            :func:`edge.signals.hr.gate_quality`; the default) or ``"snr"`` (the logistic of the
            SNR alone, :func:`edge.signals.hr.snr_quality`). The runtime reports a heart rate
            whose quality reaches its ``min_pulse_quality``. A manifest that does not name it
            gets ``"snr"``.
        tfr_min_quality: the pulse image goes to the model only when the window's heart-rate
            quality (``hr_gate``) reaches this and the heart rate is finite; below it the
            pulse is an absent modality (zeros, presence flag 0), as without a face. The
            model then never reads a pulse the gate calls noise (a printed photo, a moving
            head): training, calibration, still images and the device apply the same rule in
            :func:`edge.preprocess.face_inputs`. 0 (what a manifest without the key means)
            forms every pulse window.
    """

    roi: tuple
    skin: str
    method: str
    method_window_s: float
    pulse_window_s: float
    clean: PulseCleanSpec
    gap_fill: float
    max_gap_periods: float
    min_valid_fraction: float
    hr_min_face_fraction: float
    roi_edges: str
    hr_gate: str
    tfr_min_quality: float = 0.0

    @property
    def roi_fractions(self) -> dict:
        """The regions as a dict name -> (x0, y0, x1, y1)."""
        return {k: tuple(v) for k, v in self.roi}


@dataclass(frozen=True)
class TfrSpec:
    """The time-frequency image (:func:`edge.signals.tfr.tfr_params` validates it).

    Attributes:
        kind: ``"stft"`` or ``"cwt"``.
        shape: (F, T) image size.
        lo, hi: band, Hz.
        norm: image normalisation.
        params: the kind's own settings, as sorted pairs (``nperseg_s``, ``overlap`` for STFT).
    """

    kind: str
    shape: tuple
    lo: float
    hi: float
    norm: str
    params: tuple

    def kwargs(self) -> dict:
        """Keyword arguments of :func:`edge.signals.tfr.tfr_compute`."""
        return {"kind": self.kind, "shape": list(self.shape), "lo": self.lo, "hi": self.hi, "norm": self.norm,
                **dict(self.params)}


@dataclass(frozen=True)
class StreamSpec:
    """One contact signal.

    Attributes:
        name: the signal (``ppg``, ``eda``, ``ecg``).
        aliases: sensor stream names that carry it, in order of preference.
        units: the units its samples must be in (``uS`` for EDA), or ``""`` for any.
    """

    name: str
    aliases: tuple
    units: str


@dataclass(frozen=True)
class ContactSpec:
    """Contact windows.

    Attributes:
        streams: the model's contact rows, in row order (names of ``signals``).
        signals: every contact signal the runtime reads (model rows and the ECG that gives the
            heart rate when no PPG is worn), as :class:`StreamSpec`.
        rate_hz: the window grid's rate, Hz.
        n_samples: grid points (``window_s * rate_hz``).
        antialias: box pre-filter before resampling down.
        invalid_value: value of an invalid sample in a model row.
        min_valid_fraction: a row counts as present with at least this share valid.
        max_gap_periods: the resampler bridges gaps up to this many sample periods.
    """

    streams: tuple
    signals: tuple
    rate_hz: float
    n_samples: int
    antialias: bool
    invalid_value: float
    min_valid_fraction: float
    max_gap_periods: float

    def signal(self, name: str) -> StreamSpec | None:
        """The :class:`StreamSpec` of a signal, or None when not declared."""
        for s in self.signals:
            if s.name == name:
                return s
        return None

    def stream_for(self, name: str, available) -> str | None:
        """The sensor stream that carries signal ``name``: the first of its aliases (in order of
        preference) among ``available`` stream names, exact match; None when none is there.
        The runtime and calibration both choose streams with this."""
        spec = self.signal(name)
        have = set(available)
        return None if spec is None else next((a for a in spec.aliases if a in have), None)


@dataclass(frozen=True)
class LevelSpec:
    """The two level summaries that z-scored contact rows lose: mean heart rate / ``hr_scale_bpm``
    and tonic EDA / ``eda_scale_us``; a heart rate needs at least ``min_beats`` beats."""

    hr_scale_bpm: float
    eda_scale_us: float
    min_beats: int


@dataclass(frozen=True)
class Preprocessing:
    """Every setting that changes a model input (see the module docstring).

    Attributes:
        version: :data:`VERSION`.
        fps: the frame grid's rate, Hz.
        window_s: the window's length, s.
        face, rppg, tfr, contact, contact_level: the sections.
    """

    version: int
    fps: float
    window_s: float
    face: FaceSpec
    rppg: RppgSpec
    tfr: TfrSpec
    contact: ContactSpec
    contact_level: LevelSpec

    # -- parsing -------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Any) -> Preprocessing:
        """Parse and check a manifest's ``preprocessing`` object.

        Args:
            d: the JSON object (version 1 objects are upgraded first, :func:`upgrade_v1`).

        Returns:
            The record.

        Raises:
            ConfigError: not an object, an unknown or missing key, a wrong type or an
                out-of-range value (the message names the key).
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"preprocessing must be an object, got {type(d).__name__}")
        version = d.get("version")
        if version == 1:
            d = upgrade_v1(d)
        elif version != VERSION:
            raise ConfigError(f"preprocessing.version {version!r} is not supported (this emofuse reads 1 and "
                              f"{VERSION})")
        top = _obj(d, "preprocessing", ("version", "fps", "window_s", "face", "rppg", "tfr", "contact",
                                        "contact_level"))
        fps = _num(top, "fps", "preprocessing", lo=1.0, hi=1000.0)
        window_s = _num(top, "window_s", "preprocessing", lo=0.0, lo_open=True, hi=3600.0)
        face = _parse_face(top["face"])
        rppg = _parse_rppg(top["rppg"], window_s)
        tfr = _parse_tfr(top["tfr"])
        contact = _parse_contact(top["contact"], window_s)
        lw = _path("contact_level")
        lv = _obj(top["contact_level"], lw, ("hr_scale_bpm", "eda_scale_us", "min_beats"))
        level = LevelSpec(_num(lv, "hr_scale_bpm", lw, lo=0.0, lo_open=True),
                          _num(lv, "eda_scale_us", lw, lo=0.0, lo_open=True),
                          _num(lv, "min_beats", lw, lo=1, integer=True))
        if face.seq_frames / face.seq_rate_hz > window_s + 1e-9:
            raise ConfigError(f"preprocessing.face: {face.seq_frames} crops at {face.seq_rate_hz} Hz do not fit in "
                              f"the {window_s} s window")
        if face.clip_span_s(fps) > window_s:
            raise ConfigError("preprocessing.face: the clip spans more than the window")
        return cls(VERSION, fps, window_s, face, rppg, tfr, contact, level)

    def to_dict(self) -> dict:
        """The JSON object a manifest holds (``from_dict(to_dict())`` gives the record back).

        A key added after version 2 is left out while it holds the value its absence means
        (:data:`_LEGACY`), so a record read from an older manifest writes that manifest's JSON
        back unchanged (and hashes as before)."""
        f, r, c = self.face, self.rppg, self.contact
        return {
            "version": self.version,
            "fps": self.fps,
            "window_s": self.window_s,
            "face": {"box": f.box, "tracker": dict(f.tracker), "crop_size": f.crop_size,
                     "crop_margin": f.crop_margin, "clip_frames": f.clip_frames,
                     "clip_stride_frames": f.clip_stride_frames, "seq_rate_hz": f.seq_rate_hz,
                     "seq_frames": f.seq_frames, "max_frame_age_periods": f.max_frame_age_periods,
                     "track_warmup_s": f.track_warmup_s},
            "rppg": {"roi": {k: list(v) for k, v in r.roi}, "skin": r.skin, "method": r.method,
                     "method_window_s": r.method_window_s, "pulse_window_s": r.pulse_window_s,
                     "clean": r.clean.kwargs(), "gap_fill": r.gap_fill, "max_gap_periods": r.max_gap_periods,
                     "min_valid_fraction": r.min_valid_fraction, "hr_min_face_fraction": r.hr_min_face_fraction,
                     **({} if r.roi_edges == _LEGACY["rppg.roi_edges"] else {"roi_edges": r.roi_edges}),
                     **({} if r.hr_gate == _LEGACY["rppg.hr_gate"] else {"hr_gate": r.hr_gate}),
                     **({} if r.tfr_min_quality == _LEGACY["rppg.tfr_min_quality"]
                        else {"tfr_min_quality": r.tfr_min_quality})},
            "tfr": self.tfr.kwargs(),
            "contact": {"streams": list(c.streams),
                        "signals": {s.name: {"aliases": list(s.aliases), "units": s.units} for s in c.signals},
                        "rate_hz": c.rate_hz, "n_samples": c.n_samples, "antialias": c.antialias,
                        "invalid_value": c.invalid_value, "min_valid_fraction": c.min_valid_fraction,
                        "max_gap_periods": c.max_gap_periods},
            "contact_level": dataclasses.asdict(self.contact_level),
        }

    def replace(self, **changes: Any) -> Preprocessing:
        """A checked copy with some settings changed, by dotted path: ``p.replace(**{"face.crop_size":
        64})`` (or top-level names: ``p.replace(fps=25.0)``).

        Raises:
            ConfigError: an unknown path or an invalid result.
        """
        d = self.to_dict()
        for dotted, value in changes.items():
            node = d
            keys = dotted.split(".")
            for k in keys[:-1]:
                if not isinstance(node.get(k), dict):
                    raise ConfigError(f"preprocessing.{dotted}: no such setting")
                node = node[k]
            if keys[-1] not in node and dotted not in _LEGACY:
                raise ConfigError(f"preprocessing.{dotted}: no such setting")
            node[keys[-1]] = value
        return Preprocessing.from_dict(d)

    # -- derived sizes -------------------------------------------------------------------------

    @property
    def n_pulse(self) -> int:
        """Points of the pulse grid (``pulse_window_s * fps``)."""
        return int(round(self.rppg.pulse_window_s * self.fps))


def _parse_face(node: Any) -> FaceSpec:
    w = _path("face")
    f = _obj(node, w, ("box", "tracker", "crop_size", "crop_margin", "clip_frames", "clip_stride_frames",
                       "seq_rate_hz", "seq_frames", "max_frame_age_periods", "track_warmup_s"))
    tw = w + ".tracker"
    tr = f["tracker"]
    if not isinstance(tr, Mapping):
        raise ConfigError(f"{tw} must be an object, got {type(tr).__name__}")
    unknown = sorted(set(tr) - set(_TRACKER_KEYS))
    if unknown:
        raise ConfigError(f"{tw}: unknown key(s) {unknown}; known: {sorted(_TRACKER_KEYS)}")
    for k, v in tr.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ConfigError(f"{tw}.{k} must be a number or a string, got {v!r}")
    # The tracker checks its own ranges; building one here turns a bad value into an error at
    # load time instead of at the first frame. A stand-in detector keeps this free of OpenCV work.
    try:
        FaceTracker(**tr, detector=object())
    except TypeError as exc:
        raise ConfigError(f"{tw}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{tw}: {exc}") from None
    return FaceSpec(
        box=_str(f, "box", w, FACE_BOX_METHODS),
        tracker=tuple(sorted(tr.items())),
        crop_size=_num(f, "crop_size", w, lo=8, hi=1024, integer=True),
        crop_margin=_num(f, "crop_margin", w, lo=0.0, hi=1.0),
        clip_frames=_num(f, "clip_frames", w, lo=1, hi=256, integer=True),
        clip_stride_frames=_num(f, "clip_stride_frames", w, lo=1, hi=1000, integer=True),
        seq_rate_hz=_num(f, "seq_rate_hz", w, lo=0.0, lo_open=True, hi=1000.0),
        seq_frames=_num(f, "seq_frames", w, lo=1, hi=100_000, integer=True),
        max_frame_age_periods=_num(f, "max_frame_age_periods", w, lo=1.0, hi=100.0),
        track_warmup_s=_num(f, "track_warmup_s", w, lo=0.0, hi=3600.0),
    )


def _parse_rppg(node: Any, window_s: float) -> RppgSpec:
    w = _path("rppg")
    r = _obj(node, w, ("roi", "skin", "method", "method_window_s", "pulse_window_s", "clean", "gap_fill",
                       "max_gap_periods", "min_valid_fraction", "hr_min_face_fraction"),
             optional=("roi_edges", "hr_gate", "tfr_min_quality"))
    roi = r["roi"]
    if not isinstance(roi, Mapping) or not roi:
        raise ConfigError(f"{w}.roi must be a non-empty object of regions")
    regions = []
    for name, box in roi.items():
        ok = (isinstance(box, (list, tuple)) and len(box) == 4
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box))
        if not ok or not (0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0):
            raise ConfigError(f"{w}.roi.{name} must be [x0, y0, x1, y1] fractions with 0 <= x0 < x1 <= 1 and "
                              f"0 <= y0 < y1 <= 1, got {box!r}")
        regions.append((str(name), tuple(float(v) for v in box)))
    cw = w + ".clean"
    c = _obj(r["clean"], cw, ("lam", "lo", "hi", "order"))
    clean = PulseCleanSpec(_num(c, "lam", cw, lo=0.0), _num(c, "lo", cw, lo=0.0, lo_open=True),
                           _num(c, "hi", cw, lo=0.0, lo_open=True), _num(c, "order", cw, lo=1, hi=10, integer=True))
    if clean.lo >= clean.hi:
        raise ConfigError(f"{cw}: lo must be below hi, got {clean.lo} and {clean.hi}")
    pulse_window_s = _num(r, "pulse_window_s", w, lo=1.0)
    if pulse_window_s > window_s:
        raise ConfigError(f"{w}.pulse_window_s {pulse_window_s} exceeds window_s {window_s}")
    return RppgSpec(
        roi=tuple(sorted(regions)),
        skin=_str(r, "skin", w, SKIN_RULE_NAMES),
        method=_str(r, "method", w, RPPG_METHODS),
        method_window_s=_num(r, "method_window_s", w, lo=0.1, hi=60.0),
        pulse_window_s=pulse_window_s,
        clean=clean,
        gap_fill=_num(r, "gap_fill", w),
        max_gap_periods=_num(r, "max_gap_periods", w, lo=1.0, hi=1000.0),
        min_valid_fraction=_num(r, "min_valid_fraction", w, lo=0.0, hi=1.0),
        hr_min_face_fraction=_num(r, "hr_min_face_fraction", w, lo=0.0, hi=1.0),
        # Absent = the whole-pixel regions that manifests written before the key always meant.
        roi_edges=_str(r, "roi_edges", w, ROI_EDGES) if "roi_edges" in r else _LEGACY["rppg.roi_edges"],
        hr_gate=_str(r, "hr_gate", w, HR_GATES) if "hr_gate" in r else _LEGACY["rppg.hr_gate"],
        tfr_min_quality=(_num(r, "tfr_min_quality", w, lo=0.0, hi=1.0) if "tfr_min_quality" in r
                         else _LEGACY["rppg.tfr_min_quality"]),
    )


def _parse_tfr(node: Any) -> TfrSpec:
    w = _path("tfr")
    if not isinstance(node, Mapping):
        raise ConfigError(f"{w} must be an object, got {type(node).__name__}")
    shape = node.get("shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 1024 for v in shape)):
        raise ConfigError(f"{w}.shape must be two integers in [2, 1024], got {shape!r}")
    for k, v in node.items():
        if k != "shape" and (isinstance(v, bool) or not isinstance(v, (int, float, str))):
            raise ConfigError(f"{w}.{k} must be a number or a string, got {v!r}")
    try:
        p = tfr_params(**node)
    except TypeError as exc:
        raise ConfigError(f"{w}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{w}: {exc}") from None
    own = {k: v for k, v in p.items() if k not in ("kind", "shape", "lo", "hi", "norm")}
    return TfrSpec(p["kind"], tuple(int(v) for v in p["shape"]), float(p["lo"]), float(p["hi"]), p["norm"],
                   tuple(sorted(own.items())))


def _parse_contact(node: Any, window_s: float) -> ContactSpec:
    w = _path("contact")
    c = _obj(node, w, ("streams", "signals", "rate_hz", "n_samples", "antialias", "invalid_value",
                       "min_valid_fraction", "max_gap_periods"))
    sw = w + ".signals"
    sig = c["signals"]
    if not isinstance(sig, Mapping):
        raise ConfigError(f"{sw} must be an object, got {type(sig).__name__}")
    signals = []
    seen: set[str] = set()
    for name, s in sig.items():
        s = _obj(s, f"{sw}.{name}", ("aliases", "units"))
        aliases = s["aliases"]
        if not (isinstance(aliases, list) and aliases and all(isinstance(a, str) and a for a in aliases)):
            raise ConfigError(f"{sw}.{name}.aliases must be a non-empty list of stream names, got {aliases!r}")
        clash = seen.intersection(aliases)
        if clash:
            raise ConfigError(f"{sw}.{name}: stream name(s) {sorted(clash)} already belong to another signal")
        seen.update(aliases)
        signals.append(StreamSpec(str(name), tuple(aliases), _str(s, "units", f"{sw}.{name}")))
    streams = c["streams"]
    names = [s.name for s in signals]
    if not (isinstance(streams, list) and all(isinstance(s, str) for s in streams)
            and len(set(streams)) == len(streams)):
        raise ConfigError(f"{w}.streams must be a list of distinct signal names, got {streams!r}")
    for s in streams:
        if s not in names:
            raise ConfigError(f"{w}.streams names {s!r}, which {sw} does not declare")
    rate = _num(c, "rate_hz", w, lo=0.0, lo_open=True, hi=10_000.0)
    n = _num(c, "n_samples", w, lo=1, hi=10_000_000, integer=True)
    if n / rate > window_s + 1e-6:
        raise ConfigError(f"{w}: {n} samples at {rate} Hz do not fit in the {window_s} s window")
    return ContactSpec(tuple(streams), tuple(signals), rate, n, _bool(c, "antialias", w),
                       _num(c, "invalid_value", w), _num(c, "min_valid_fraction", w, lo=0.0, hi=1.0),
                       _num(c, "max_gap_periods", w, lo=1.0, hi=1000.0))


# -- version 1 -------------------------------------------------------------------------------------

# What version 1's code fixed outside the manifest (commit 7627f84): the face box came from the
# live tracker on the device with FaceTracker's defaults, frames were picked up to 2.5 periods
# old, the resampler bridged 2.5 periods, a pulse window needed half its grid, a heart rate 90 %
# face, the regions were FACE_ROI_FRACTIONS, and the sensor names were the runtime's aliases.
_V1_SIGNALS = {
    "ppg": {"aliases": ["ppg", "ppg_ir", "ppg_green", "ppg_red", "bvp"], "units": ""},
    "eda": {"aliases": ["eda", "gsr"], "units": "uS"},
    "ecg": {"aliases": ["ecg"], "units": ""},
}


# Two seconds hold six detections (one every 10 frames at 30 fps) and let the box smoothing
# settle (time constant ~3 frames): after that a fresh tracker and one that has run for minutes
# give the same box to a fraction of a pixel.
_TRACK_WARMUP_S = 2.0


def upgrade_v1(d: Mapping) -> dict:
    """A version 1 ``preprocessing`` object as version 2, with the settings version 1 kept in code.

    Version 1's descriptive strings (``crop``, ``frame_pick``, ``clip_span_s``, ``roi`` as a
    function name, ``resample``, ``normalise``, the level summaries' method names) were never
    read; they are dropped.

    Raises:
        ConfigError: a section missing or not an object.
    """
    out: dict[str, Any] = {"version": VERSION}
    for key in ("fps", "window_s"):
        if key not in d:
            raise ConfigError(f"preprocessing.{key} is missing")
        out[key] = d[key]
    sections = {}
    for key in ("face", "rppg", "tfr", "contact", "contact_level"):
        node = d.get(key)
        if not isinstance(node, Mapping):
            raise ConfigError(f"preprocessing.{key} must be an object")
        sections[key] = dict(node)
    face = {k: v for k, v in sections["face"].items() if k not in ("crop", "clip_span_s", "frame_pick")}
    face.update(box="tracker", tracker={}, max_frame_age_periods=DEFAULT_MAX_GAP_PERIODS,
                track_warmup_s=_TRACK_WARMUP_S)
    rppg = {k: v for k, v in sections["rppg"].items() if k not in ("roi", "resample")}
    rppg.update(roi={k: list(v) for k, v in FACE_ROI_FRACTIONS.items()}, max_gap_periods=DEFAULT_MAX_GAP_PERIODS,
                min_valid_fraction=0.5, hr_min_face_fraction=0.9)
    contact = {k: v for k, v in sections["contact"].items() if k not in ("resample", "normalise")}
    contact.update(signals=_V1_SIGNALS, max_gap_periods=DEFAULT_MAX_GAP_PERIODS)
    level = {k: v for k, v in sections["contact_level"].items() if k not in ("hr", "eda")}
    out.update(face=face, rppg=rppg, tfr=sections["tfr"], contact=contact, contact_level=level)
    return out


#: Share of a pulse window / contact row that must hold data before the model gets it (version-2
#: records before this constant used 0.5). Training windows are always full, so a half-empty
#: pulse image or contact row (the first seconds of a session) is an input the model never saw:
#: on the real webcam clip a 5 s pulse gave P(V+) 0.009. Below it the modality is absent and the
#: model answers from the rest, as the runtime does without a sensor.
MODEL_MIN_VALID_FRACTION = 0.9


#: Heart-rate quality (the record's ``rppg.hr_gate``) a window's pulse needs before the model
#: reads it (``rppg.tfr_min_quality``), and the runtime's default ``min_pulse_quality`` for
#: reporting a heart rate: one threshold, so a pulse the device will not report is a pulse the
#: model does not see.
PULSE_MIN_QUALITY = 0.5


#: The project's default settings: what a new bundle is trained with unless told otherwise.
DEFAULT = Preprocessing.from_dict({
    "version": VERSION,
    "fps": 30.0,
    "window_s": 60.0,
    "face": {"box": "tracker", "tracker": {"contrast": "clahe"}, "crop_size": 32, "crop_margin": 0.15, "clip_frames": 8,
             "clip_stride_frames": 8, "seq_rate_hz": 2.0, "seq_frames": 120,
             "max_frame_age_periods": DEFAULT_MAX_GAP_PERIODS, "track_warmup_s": _TRACK_WARMUP_S},
    "rppg": {"roi": {k: list(v) for k, v in FACE_ROI_FRACTIONS.items()}, "skin": "adaptive", "method": "pos",
             "method_window_s": 1.6, "pulse_window_s": 10.0,
             "clean": {"lam": 100.0, "lo": 0.7, "hi": 3.5, "order": 4}, "gap_fill": 0.0,
             "max_gap_periods": DEFAULT_MAX_GAP_PERIODS, "min_valid_fraction": MODEL_MIN_VALID_FRACTION,
             "hr_min_face_fraction": 0.9, "roi_edges": "fractional", "hr_gate": "logistic",
             "tfr_min_quality": PULSE_MIN_QUALITY},
    "tfr": {"kind": "stft", "shape": [32, 32], "lo": 0.7, "hi": 3.5, "norm": "zscore", "nperseg_s": 4.0,
            "overlap": 0.9},
    "contact": {"streams": ["ppg", "eda"], "signals": _V1_SIGNALS, "rate_hz": 32.0, "n_samples": 1920,
                "antialias": True, "invalid_value": 0.0, "min_valid_fraction": MODEL_MIN_VALID_FRACTION,
                "max_gap_periods": DEFAULT_MAX_GAP_PERIODS},
    "contact_level": {"hr_scale_bpm": 100.0, "eda_scale_us": 10.0, "min_beats": 10},
})
