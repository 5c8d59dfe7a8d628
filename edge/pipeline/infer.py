"""Inference and gating: a window in, a :class:`~edge.results.Result` out.

For each window (:class:`~edge.pipeline.windows.WindowJob`) the stage forms the face half
(pulse, TFR, crops: :func:`edge.preprocess.face_inputs`) and the contact half
(:func:`edge.preprocess.contact_inputs` on the sensor rings), measures the heart rates, HRV
and EDA the result reports, and runs the bundle's model when every input it takes is a full
window. Each half says for itself which of its model inputs it could form and why not
(:class:`InputStatus`); the gate joins them.

Gating (:class:`edge.results.Reason`): the rPPG heart rate is reported when the face was seen
for ``rppg.hr_min_face_fraction`` of the pulse window (90 % by default) and the quality of the
record's gate (``rppg.hr_gate``: :func:`edge.signals.hr.pulse_quality`) reaches
``min_pulse_quality``; the contact values need ``contact_min_s`` of signal
ending at the window's end, in the units the record declares, judged by its longest gap and its
measured share: holes up to :data:`CONTACT_BRIDGE_MAX_S` (or the record's
``contact.max_gap_periods`` of a slow stream, whichever is longer) are interpolated across,
marked and counted (a lost 20 ms packet does not restart the count), a longer hole ends the
stretch, and at least :data:`CONTACT_MIN_MEASURED_FRACTION` of it must be measured, not
bridged. The model runs only on full windows of every input it takes (training never saw
partial ones).
"""
from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.engine import open_engine
from edge.engine.base import graph_specs
from edge.pipeline.windows import SensorStore, WindowJob
from edge.preprocess import (
    Window,
    contact_inputs,
    crops_to_nchw,
    ecg_level_hr,
    face_inputs,
    face_plan,
    MODALITIES,
    model_feeds,
    modality_flags,
    needs_ecg_level,
)
from edge.results import STATUS_OK, STATUS_UNKNOWN, Reason, Result
from edge.signals import roi, rppg, tfr
from edge.signals.ecg import ecg_peaks
from edge.signals.eda import eda_decompose, eda_scr
from edge.signals.hr import heart_rate, pulse_quality
from edge.signals.hrv import hrv_time
from edge.signals.ppg import ppg_peaks
from edge.spec import Preprocessing

__all__ = ["CONTACT_BRIDGE_MAX_S", "CONTACT_MIN_MEASURED_FRACTION", "Engines", "Inference", "InputStatus",
           "recent_heart_rate", "warm_kernels"]

# Longest hole in a contact stream the reported physiology interpolates across, s: a few lost
# 20 ms packets of a serial board in a row (issue 13, item 2). Only the reported values
# (heart rate, HRV, EDA) use it; the model's contact rows keep the record's
# contact.max_gap_periods and min_valid_fraction.
CONTACT_BRIDGE_MAX_S = 0.1
# Share of a reported value's stretch of contact signal that must be measured, not bridged.
CONTACT_MIN_MEASURED_FRACTION = 0.9

# Beats a contact heart rate needs at least.
_MIN_CONTACT_BEATS = 5
# ppg_peaks needs >= 20 Hz; a slow PPG (a 20 Hz finger oximeter) is resampled up to this.
_MIN_PPG_RATE_HZ = 50.0


def recent_heart_rate(peaks: np.ndarray, n_samples: int, fs: float, span_s: float, fallback: float) -> float:
    """Mean heart rate of the beats in the last ``span_s`` of a segment (the contact heart rate
    the pipeline reports), or ``fallback`` when that span holds fewer than 5 beats with valid
    intervals.

    Args:
        peaks: int (K,) beat sample indices in the segment (ascending).
        n_samples: segment length, samples.
        fs: sampling rate, Hz.
        span_s: how far back from the segment's end, s.
        fallback: the value to return when the span is too short of beats, bpm.

    Returns:
        Heart rate, bpm (Task Force 1996 mean of the NN intervals, :func:`edge.signals.hrv.hrv_time`).
    """
    recent = peaks[peaks >= n_samples - int(round(span_s * fs))]
    h = hrv_time(recent, fs)
    if h.n_beats >= _MIN_CONTACT_BEATS and math.isfinite(h.mean_hr_bpm):
        return float(h.mean_hr_bpm)
    return float(fallback)


def warm_kernels(p: Preprocessing) -> None:
    """Compile (or load from Numba's cache) every kernel the stages run, so the first window
    does not wait for a compiler."""
    for kernels in (roi, rppg, tfr):
        kernels.warmup()
    n = p.n_pulse + 2
    t = np.arange(n) / p.fps
    rgb = np.column_stack([120 + np.sin(6 * t), 100 + np.cos(6 * t), 80 + np.sin(3 * t)])
    plan = face_plan(t, t[-1] + 1.0 / p.fps, p)
    face_inputs(plan, t, rgb[plan.pulse_idx], [None] * len(plan.clip_idx), [None] * len(plan.seq_idx), p)
    rate, m = p.contact.rate_hz, p.contact.n_samples
    y = np.sin(np.arange(m) / rate * 2 * np.pi * 1.2) + 5.0
    contact_inputs({"ppg": (y, np.ones(m, bool)), "eda": (y, np.ones(m, bool))}, p)
    ecg = np.sin(np.arange(2500) / 250.0 * 2 * np.pi * 1.2)
    # Sensor windows reach the kernels as read-only views, which Numba types apart from
    # writable arrays: warm both, or the first full window pays a second compile.
    ecg_ro, y_ro = ecg.copy(), y.copy()
    ecg_ro.flags.writeable = y_ro.flags.writeable = False
    for e, v in ((ecg, y), (ecg_ro, y_ro)):
        ecg_peaks(e, 250.0)
        ppg_peaks(v, max(rate, 20.0))
        eda_scr(v, rate)
        eda_decompose(v, rate)
    hrv_time(np.arange(0, 600, 25), 25.0)


class Engines:
    """The bundle's model and, for models that take ``face_feats``, its face encoder.

    Args:
        bundle: a loaded :class:`edge.bundle.Bundle`.
        backend, precision: as :func:`edge.engine.open_engine`.
        threads: ONNX Runtime intra-op threads per engine.

    Raises:
        as :func:`edge.engine.open_engine`.
    """

    def __init__(self, bundle, backend: str, precision: str, threads: int) -> None:
        ort = {"intra_op_threads": threads, "inter_op_threads": 1}
        self.bundle = bundle
        self.encoder = None
        self.model = open_engine(bundle, backend, precision, **ort)
        self.model.activate()
        self.input_names = [s.name for s in bundle.inputs]
        self.optional = {s.name for s in bundle.inputs if s.optional}
        if "face_feats" in self.input_names:
            self.encoder = open_engine(bundle, backend, precision, role="face_encoder", **ort)
            self.encoder.activate()
            ins, outs = graph_specs(bundle, "face_encoder")
            self._enc_in, self._enc_out = ins[0].name, outs[0].name
        labels = bundle.manifest.labels or {}
        self.labels = {k: list(labels.get(k) or ["low", "high"]) for k in ("valence", "arousal")}
        self._feat_cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    def warmup(self) -> None:
        self.model.warmup(2)
        if self.encoder is not None:
            self.encoder.warmup(2)

    def face_feats(self, seq_fids: list, seq_crops: list) -> np.ndarray:
        """float32 (seq_frames, D) encoder features of a window's sequence crops; a frame's
        features are computed once and reused by the windows that share it."""
        todo = [(fid, crop) for fid, crop in zip(seq_fids, seq_crops) if fid not in self._feat_cache]
        if todo:
            out = self.encoder.run({self._enc_in: crops_to_nchw(np.stack([c for _, c in todo]))})[self._enc_out]
            for (fid, _), feat in zip(todo, out):
                self._feat_cache[fid] = np.asarray(feat, dtype=np.float32)
        feats = np.stack([self._feat_cache[fid] for fid in seq_fids])
        keep = set(seq_fids)
        for fid in list(self._feat_cache):
            if fid not in keep:
                del self._feat_cache[fid]
        return feats

    def modalities(self, window: Window) -> str:
        """The modalities behind this window's answer: with a ``present`` input, the flagged ones
        (:func:`edge.preprocess.modality_flags`); without, the ones its inputs carry."""
        if "present" in self.input_names:
            flags = modality_flags(window)
            return "+".join(m for m, f in zip(MODALITIES, flags) if f)
        carried = {"face_clip": ("face",), "face_feats": ("face",), "tfr": ("pulse",), "contact": ("ppg", "eda"),
                   "contact_level": ("hr_level", "eda_level")}
        have = {m for n in self.input_names for m in carried.get(n, ())}
        return "+".join(m for m in MODALITIES if m in have)

    def run(self, window: Window, feats) -> dict[str, tuple[float, ...]]:
        """Class probabilities per head (``valence``, ``arousal``)."""
        out = self.model.run(model_feeds(window, self.input_names, feats))
        return {k: tuple(float(v) for v in out[f"{k}_prob"][0]) for k in ("valence", "arousal")}

    def metadata(self) -> dict:
        out = {"engine": dict(self.model.metadata)}
        if self.encoder is not None:
            out["face_encoder"] = dict(self.encoder.metadata)
        return out

    def close(self) -> None:
        for eng in (self.model, self.encoder):
            if eng is not None:
                eng.deactivate()


@dataclass
class InputStatus:
    """Which model inputs one half of a window could form: input name -> the reasons it could
    not (an empty set: formed)."""

    missing: dict[str, set] = field(default_factory=dict)

    def reasons_for(self, names) -> set:
        out: set = set()
        for name in names:
            out |= self.missing.get(name, set())
        return out


@dataclass
class _Settings:
    min_pulse_quality: float
    contact_window_s: float
    contact_min_s: float
    contact_tail_s: float
    keep_windows: bool


class Inference:
    """Forms a window's inputs, measures, gates and runs the model.

    Args:
        p: the preprocessing record.
        store: the sensor rings.
        engines: the :class:`Engines`, or None (signals only).
        has_camera: whether the session has video.
        min_pulse_quality, contact_window_s, contact_min_s, contact_tail_s, keep_windows: as
            :class:`edge.pipeline.PipelineOptions`.
    """

    def __init__(self, p: Preprocessing, store: SensorStore, engines: Engines | None, has_camera: bool, *,
                 min_pulse_quality: float, contact_window_s: float, contact_min_s: float, contact_tail_s: float,
                 keep_windows: bool) -> None:
        self.p, self.store, self.engines, self.has_camera = p, store, engines, has_camera
        self.s = _Settings(min_pulse_quality, contact_window_s, contact_min_s, contact_tail_s, keep_windows)
        # The contact heart rate spans the rPPG rate's window, so the two agree while the rate changes.
        self.hr_span_s = min(p.rppg.pulse_window_s, contact_window_s)

    def compute(self, job: WindowJob, wait_ms: float, frames_dropped: int) -> Result:
        """The :class:`~edge.results.Result` of one window."""
        started = time.perf_counter()
        lat = dict(job.latency)
        lat["wait"] = wait_ms
        reasons: set[Reason] = set()
        fi, face_status, hr = self._face(job, lat, reasons)
        t1 = time.perf_counter()
        ci, contact_status = self._contact(job.t_end_ns, self.engines.input_names if self.engines else ())
        lat["contact"] = (time.perf_counter() - t1) * 1e3
        t1 = time.perf_counter()
        physio = self._physio(job.t_end_ns, reasons)
        lat["physio"] = (time.perf_counter() - t1) * 1e3
        window = self._window(fi, ci)
        probs = None
        modalities = None
        if self.engines is not None:
            # Inputs the bundle marks optional do not hold the model back: they go in as zeros
            # with their presence flag 0 (edge.preprocess.modality_flags).
            names = [n for n in self.engines.input_names if n not in self.engines.optional]
            missing = face_status.reasons_for(names) | contact_status.reasons_for(names)
            if missing:
                reasons |= missing | {Reason.MODEL_INPUT_MISSING}
            else:
                feats = None
                if self.engines.encoder is not None:
                    t1 = time.perf_counter()
                    feats = self.engines.face_feats(job.seq_fids, job.seq_crops)
                    lat["encoder"] = (time.perf_counter() - t1) * 1e3
                t1 = time.perf_counter()
                probs = self.engines.run(window, feats)
                lat["engine"] = (time.perf_counter() - t1) * 1e3
                modalities = self.engines.modalities(window)
        done = time.perf_counter()
        lat["compute"] = (done - started) * 1e3
        if job.arrival_s is not None:
            lat["window"] = (done - job.arrival_s) * 1e3
        va = {k: (None, None) if probs is None else
              (probs[k], self.engines.labels[k][int(np.argmax(probs[k]))]) for k in ("valence", "arousal")}
        pulse = fi.pulse.pulse if fi is not None and fi.pulse.ok else None
        return Result(
            t_s=job.t_s, seq=job.seq, status=STATUS_OK if not reasons else STATUS_UNKNOWN,
            reasons=tuple(reasons), face_present=job.box_last is not None,
            face_box=None if job.box_last is None else tuple(float(v) for v in job.box_last),
            hr_bpm=hr[0], hr_quality=hr[1], hr_snr_db=hr[2], **physio,
            valence_prob=va["valence"][0], arousal_prob=va["arousal"][0],
            valence=va["valence"][1], arousal=va["arousal"][1], modalities=modalities,
            latency_ms=lat, frames=job.frames, frames_dropped=frames_dropped,
            pulse=None if pulse is None else pulse.astype(np.float32),
            pulse_fs_hz=self.p.fps if pulse is not None else None,
            tfr=fi.tfr if fi is not None and fi.pulse.ok else None,
            window=window if self.s.keep_windows else None,
        )

    # -- face half ------------------------------------------------------------------------------
    def _face(self, job: WindowJob, lat: dict, reasons: set):
        """The face inputs, which of them formed, and the rPPG heart rate (hr, quality, snr)."""
        p = self.p
        status = InputStatus()
        hr: tuple = (None, None, None)
        if not self.has_camera:
            status.missing = {k: {Reason.NO_FACE} for k in ("face_clip", "tfr", "face_feats")}
            return None, status, hr
        fi = None
        if job.plan is not None:
            fi = face_inputs(job.plan, job.frame_t, job.pulse_rgb, job.clip_crops, job.seq_crops, p, timings=lat)
        pulse_ok = fi is not None and fi.pulse.ok
        # A model input is warming up until its span of video exists, then needs every frame.
        need = {"face_clip": (p.face.clip_span_s(p.fps) + 1.0 / p.fps,
                              fi is not None and all(c is not None for c in job.clip_crops)),
                "tfr": (p.rppg.pulse_window_s, pulse_ok),
                "face_feats": (p.window_s, fi is not None and all(c is not None for c in job.seq_crops))}
        for name, (span_s, ok) in need.items():
            if job.t_s < span_s - 1e-9:
                status.missing[name] = {Reason.WARMING_UP}
            elif not ok:
                status.missing[name] = {Reason.NO_FACE}
            elif name == "tfr" and fi.pulse_gated:
                status.missing[name] = {Reason.LOW_PULSE_QUALITY}
        if job.t_s < p.rppg.pulse_window_s - 1e-9:
            reasons.add(Reason.WARMING_UP)
        elif job.box_last is None or not pulse_ok or fi.pulse.valid_fraction < p.rppg.hr_min_face_fraction:
            reasons.add(Reason.NO_FACE)
        else:
            # face_inputs already scored the window when the record gates the pulse image.
            h = fi.hr if fi.hr is not None else heart_rate(fi.pulse.pulse, p.fps, p.rppg.clean.lo, p.rppg.clean.hi)
            snr = h.snr_db if math.isfinite(h.snr_db) else None
            quality = fi.quality if fi.quality is not None else \
                pulse_quality(fi.pulse.pulse, p.fps, h, p.rppg.hr_gate, p.rppg.clean.lo, p.rppg.clean.hi)
            if math.isfinite(h.hr_bpm) and quality >= self.s.min_pulse_quality:
                hr = (h.hr_bpm, quality, snr)
            else:
                hr = (None, quality, snr)
                reasons.add(Reason.LOW_PULSE_QUALITY)
        return fi, status, hr

    # -- contact half ---------------------------------------------------------------------------
    def _contact(self, t_end_ns: int, model_inputs=()):
        """The model's contact tensors and whether the model's contact inputs formed."""
        p, store = self.p, self.store
        pc = p.contact
        grids, wrong_units = {}, []
        have = {}
        for name in pc.streams:
            stream = store.stream_for(name, t_end_ns)
            have[name] = stream is not None
            if stream is None:
                continue
            if not store.units_ok(name, stream):
                wrong_units.append(name)
                continue
            w = store.window(stream, t_end_ns, pc.n_samples / pc.rate_hz, pc.rate_hz, antialias=pc.antialias)
            if w.samples.ndim != 1:
                continue  # a multi-channel stream is not a contact row
            grids[name] = (np.asarray(w.samples), np.asarray(w.valid))
        ecg_hr = math.nan
        ecg = store.stream_for("ecg", t_end_ns)
        if ecg is not None and needs_ecg_level(grids, p):
            w = store.window(ecg, t_end_ns, p.window_s, store.fs_hz(ecg))
            t_rel = (w.t_ns - t_end_ns) / 1e9
            ecg_hr = ecg_level_hr(t_rel, w.samples, t_rel[0], 0.0, p.contact_level.min_beats)
        eda = store.stream_for("eda", t_end_ns)
        ci = contact_inputs(grids, p, eda_units=store.units.get(eda) if eda else None, ecg_hr_bpm=ecg_hr)

        # The model's contact inputs are judged as one: a model that takes only the level
        # summaries can use an ECG heart rate where there is no PPG.
        status = InputStatus()
        taken = [n for n in ("contact", "contact_level") if n in model_inputs]
        if taken:
            level_only = "contact" not in taken
            first = store.first_sample_ns(t_end_ns)
            full = first is not None and (t_end_ns - first) / 1e9 >= p.window_s - 1e-9
            ok = ("contact" not in taken or bool(np.all(ci.contact_present))) and \
                ("contact_level" not in taken or bool(np.all(ci.level_present)))
            if not any(have.values()) and not (level_only and ecg is not None):
                why = Reason.NO_CONTACT_SENSOR
            elif not full:
                why = Reason.WARMING_UP
            elif ok:
                why = None
            elif wrong_units:
                why = Reason.CONTACT_UNITS
            else:
                why = Reason.CONTACT_GAP if all(have.values()) or level_only else Reason.NO_CONTACT_SENSOR
            if why is not None:
                status.missing = {n: {why} for n in taken}
        return ci, status

    def _latest_run(self, stream: str, t_end_ns: int, seconds: float, rate: float):
        """The newest stretch of a stream's window with no hole longer than the bridging limit
        (the module docstring), or why there is none."""
        fs = self.store.fs_hz(stream)
        bridge_s = max(CONTACT_BRIDGE_MAX_S, self.p.contact.max_gap_periods / fs if fs else 0.0)
        w = self.store.window(stream, t_end_ns, seconds, rate, bridge_s=bridge_s)
        valid = np.asarray(w.valid)
        if valid.ndim != 1 or np.asarray(w.samples).ndim != 1:
            return None, None
        if not valid.any():
            return None, Reason.CONTACT_GAP
        last = int(np.flatnonzero(valid)[-1])
        if (valid.size - 1 - last) / rate > self.s.contact_tail_s:
            return None, Reason.CONTACT_GAP
        holes = np.flatnonzero(~valid[:last + 1])
        start = int(holes[-1]) + 1 if holes.size else 0
        if (last + 1 - start) / rate < self.s.contact_min_s:
            # A stream that has just begun is warming up; one that had data before the hole
            # has a gap.
            return None, Reason.CONTACT_GAP if valid[:start].any() else Reason.WARMING_UP
        if w.bridged is not None and 1.0 - float(np.mean(w.bridged[start:last + 1])) < CONTACT_MIN_MEASURED_FRACTION:
            return None, Reason.CONTACT_GAP
        return np.asarray(w.samples[start:last + 1], dtype=np.float64), None

    def _physio(self, t_end_ns: int, reasons: set) -> dict:
        """The reported contact heart rate, HRV and EDA of the window (reasons added in place)."""
        store = self.store
        out: dict[str, Any] = {"contact_present": False, "contact_hr_bpm": None, "contact_sdnn_ms": None,
                               "contact_rmssd_ms": None, "eda_tonic_us": None, "eda_scr_count": None}
        heart, kind = store.stream_for("ecg", t_end_ns), "ecg"
        if heart is None:
            heart, kind = store.stream_for("ppg", t_end_ns), "ppg"
        if heart is not None:
            fs = store.fs_hz(heart)
            rate = fs if kind == "ecg" else max(fs, _MIN_PPG_RATE_HZ)
            seg, why = self._latest_run(heart, t_end_ns, self.s.contact_window_s, rate)
            if why is not None:
                reasons.add(why)
            if seg is not None:
                out["contact_present"] = True
                peaks = ecg_peaks(seg, rate) if kind == "ecg" else ppg_peaks(seg, rate)
                h = hrv_time(peaks, rate)
                if h.n_beats >= _MIN_CONTACT_BEATS and math.isfinite(h.mean_hr_bpm):
                    out["contact_hr_bpm"] = recent_heart_rate(peaks, seg.size, rate, self.hr_span_s, h.mean_hr_bpm)
                    out["contact_sdnn_ms"] = h.sdnn_ms if math.isfinite(h.sdnn_ms) else None
                    out["contact_rmssd_ms"] = h.rmssd_ms if math.isfinite(h.rmssd_ms) else None
                else:
                    reasons.add(Reason.CONTACT_GAP)
        eda = store.stream_for("eda", t_end_ns)
        if eda is not None:
            fs = store.fs_hz(eda)
            seg, why = self._latest_run(eda, t_end_ns, self.s.contact_window_s, fs)
            if why is not None:
                reasons.add(why)
            if seg is not None:
                out["contact_present"] = True
                if not store.units_ok("eda", eda) or store.units.get(eda) != "uS":
                    # eda_tonic_us is in microsiemens: other units cannot be reported as such.
                    reasons.add(Reason.CONTACT_UNITS)
                elif fs >= 1.0:
                    tonic, _ = eda_decompose(seg, fs)
                    out["eda_tonic_us"] = float(tonic.mean())
                    out["eda_scr_count"] = int(eda_scr(seg, fs).onsets.size)
        return out

    def _window(self, fi, ci) -> Window | None:
        if fi is None and ci is None:
            return None
        p = self.p
        s, n_clip, n_seq = p.face.crop_size, p.face.clip_frames, p.face.seq_frames
        return Window(
            face_clip=fi.face_clip if fi is not None else np.zeros((n_clip, s, s, 3), np.uint8),
            tfr=fi.tfr if fi is not None else np.zeros(tuple(p.tfr.shape), np.float32),
            contact=ci.contact, contact_level=ci.contact_level,
            face_seq_crops=fi.face_seq_crops if fi is not None else np.zeros((n_seq, s, s, 3), np.uint8),
            face_present=bool(fi.face_present) if fi is not None else False,
            contact_present=ci.contact_present, level_present=ci.level_present)
