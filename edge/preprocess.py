"""Model inputs from raw window data: the one torch-free preprocessing of training and device.

Everything here is configured by one :class:`edge.spec.Preprocessing` record (parsed from a
bundle manifest's ``preprocessing`` object when the bundle loads; :data:`edge.spec.DEFAULT` for
new models): no rate, window, crop size, face-box method or threshold is written twice. Training (``export.data``) cuts windows from whole recordings;
the runtime (:mod:`edge.pipeline`) from its ring buffers; both go through these functions, so
a model sees the same numbers on the device as in training (tested to 1e-6 on a replayed
synthetic session, tests/edge/test_preprocess.py).

The steps (shapes for the default settings):

- face (:func:`face_plan`, :func:`face_inputs`): which frames a window needs: 8 crops every
  8th frame over the last 2 s (``face_clip``), one crop every 0.5 s over 60 s
  (``face_seq_crops``, from which MVP's ``face_feats`` are computed by the facial encoder), and
  the frames of the last 10 s (the pulse window). Crops are :func:`edge.face.crop_face`; each
  pulse frame contributes :func:`edge.signals.roi.face_rgb` (forehead + cheek skin means),
  put on the ``fps`` grid by :func:`firmware_bridge.resample.resample_to_grid`, then
  :func:`edge.signals.rppg.rppg_extract` (POS, Wang et al. 2017), :func:`edge.signals.rppg.rppg_clean`
  and :func:`edge.signals.tfr.tfr_compute` (STFT image, Allen 1977);
- contact (:func:`resample_contact`, :func:`contact_inputs`): PPG and EDA on the 32 Hz grid of
  the 60 s window, z-scored over their valid samples (invalid samples 0), plus the two level
  summaries z-scoring removes: mean heart rate (:func:`edge.signals.ppg.ppg_peaks` +
  :func:`edge.signals.hrv.hrv_time` on that same 32 Hz PPG, Elgendi et al. 2013; ECG R peaks when
  there is no PPG) / 100, and the tonic EDA mean (:func:`edge.signals.eda.eda_decompose`) / 10;
- tensors (:func:`model_feeds`): the contract's float32 batch arrays by ONNX input name.

Times are float64 seconds on one clock shared by frames and samples; a window is
``[t_end_s - window_s, t_end_s)``.

Why one file of more than 600 lines: it is the one path from raw window data to model inputs
that training, calibration, still photos and the device share; keeping every step of it in one
module is what lets a reader check that nothing differs between them.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.face import crop_face
from edge.signals.ecg import ecg_peaks
from edge.signals.eda import eda_decompose
from edge.signals.hr import HeartRate, heart_rate, pulse_quality
from edge.signals.hrv import hrv_time
from edge.signals.ppg import ppg_peaks
from edge.signals.roi import face_rgb
from edge.signals.rppg import rppg_clean, rppg_extract
from edge.signals.tfr import tfr_compute
from edge.spec import Preprocessing
from edge.tracker import FaceTracker
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.resample import resample_to_grid

__all__ = [
    "ContactInputs",
    "FaceInputs",
    "FacePlan",
    "MODALITIES",
    "PulseWindow",
    "Window",
    "check_preprocessing",
    "face_colour",
    "face_crop",
    "track_faces",
    "contact_inputs",
    "crops_to_nchw",
    "ecg_level_hr",
    "face_inputs",
    "face_plan",
    "modality_flags",
    "needs_ecg_level",
    "modality_flags_batch",
    "model_feeds",
    "pulse_from_rgb",
    "resample_contact",
    "tfr_image",
]

def check_preprocessing(p: Any) -> Preprocessing:
    """Check that ``p`` is the typed preprocessing record (settings are parsed once, when a
    bundle loads or a dataset is made, never here).

    Returns:
        ``p`` itself.

    Raises:
        ConfigError: ``p`` is not an :class:`edge.spec.Preprocessing` (a plain dict must go
            through :meth:`edge.spec.Preprocessing.from_dict` first).
    """
    if not isinstance(p, Preprocessing):
        raise ConfigError(f"preprocessing must be an edge.spec.Preprocessing record, got {type(p).__name__} "
                          "(parse a manifest's dict with Preprocessing.from_dict)")
    return p


# -- faces: the one way every path finds and cuts them ------------------------------------------


def track_faces(frames, p: Preprocessing) -> list:
    """Face boxes of a sequence of frames by the record's face-box method, as the device finds them.

    ``face.box == "tracker"``: a fresh :class:`edge.tracker.FaceTracker` with
    ``face.tracker`` settings fed every frame in time order, exactly what the runtime does from
    the first frame of a stream; a still image is a one-frame sequence.

    Args:
        frames: iterable of uint8 (H, W, 3) BGR frames in time order.
        p: the preprocessing record.

    Returns:
        One entry per frame: the box (x, y, w, h) float px, or None where no face is held.

    Raises:
        BadInputError: a frame that is not uint8 (H, W, 3).
        ConfigError: not a record.
    """
    check_preprocessing(p)
    tracker = FaceTracker(**p.face.tracker_settings)
    return [tracker.update(frame).box for frame in frames]


def face_crop(frame_bgr: np.ndarray, box, p: Preprocessing) -> np.ndarray:
    """The model's face crop of one frame: :func:`edge.face.crop_face` at the record's size and margin.

    Returns:
        uint8 (crop_size, crop_size, 3) RGB.

    Raises:
        BadInputError: as :func:`edge.face.crop_face`.
    """
    return crop_face(frame_bgr, box, p.face.crop_size, p.face.crop_margin)


def face_colour(frame_bgr: np.ndarray, box, p: Preprocessing) -> np.ndarray:
    """Mean skin colour of the record's face regions (``rppg.roi``) by its skin rule, with the
    record's region edges (``rppg.roi_edges``: fractional or whole-pixel).

    Returns:
        float64 (3,) R, G, B (NaN when no skin pixel).

    Raises:
        BadInputError: as :func:`edge.signals.roi.face_rgb`.
    """
    return face_rgb(frame_bgr, box, skin=p.rppg.skin, regions=p.rppg.roi_fractions, edges=p.rppg.roi_edges)


# -- the window record ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Window:
    """One window's model inputs, before batching (shapes for the default preprocessing).

    Attributes:
        face_clip: uint8 (8, 32, 32, 3) RGB crops over the last 2 s (zeros where no face).
        tfr: float32 (32, 32) rPPG time-frequency image of the last 10 s (zeros without face).
        contact: float32 (2, 1920) z-scored PPG and EDA at 32 Hz, 0 where invalid.
        contact_level: float32 (2,) mean HR / 100 and tonic EDA / 10 (0 where not available).
        face_seq_crops: uint8 (120, 32, 32, 3) one crop every 0.5 s over the window.
        face_present: the video exists, the face was found in every cropped frame and the
            pulse window was formed (see :func:`face_inputs`).
        contact_present: bool (2,) each contact row has at least ``min_valid_fraction`` of
            its samples valid.
        level_present: bool (2,) each level summary could be computed.
    """

    face_clip: np.ndarray
    tfr: np.ndarray
    contact: np.ndarray
    contact_level: np.ndarray
    face_seq_crops: np.ndarray
    face_present: bool
    contact_present: np.ndarray
    level_present: np.ndarray


# -- face ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FacePlan:
    """Which frames one window needs, as indices into the caller's frame-time array.

    Attributes:
        clip_idx: int64 (clip_frames,) frame per ``face_clip`` slot, -1 where no frame at or
            before the slot's time is recent enough (see :func:`face_plan`).
        seq_idx: int64 (seq_frames,) the same for ``face_seq_crops``.
        pulse_idx: int64 (K,) frames that bracket the pulse grid (one period of slack
            before it), in time order.
        t_grid0_s: time of pulse-grid point 0, s.
        n_pulse: pulse-grid points (``round(pulse_window_s * fps)``).
    """

    clip_idx: np.ndarray
    seq_idx: np.ndarray
    pulse_idx: np.ndarray
    t_grid0_s: float
    n_pulse: int

    def wanted(self) -> list[int]:
        """Sorted unique frame indices the plan reads (clip, sequence and pulse frames)."""
        both = np.concatenate([self.pulse_idx, self.clip_idx[self.clip_idx >= 0], self.seq_idx[self.seq_idx >= 0]])
        return sorted(set(int(i) for i in both))


def _latest_frames(frame_t: np.ndarray, targets: np.ndarray, max_age_s: float) -> np.ndarray:
    # The frame a camera would be showing at each target time: the latest one at or before
    # it (1 us of slack for float rounding), if it is at most max_age_s old; else -1. Causal,
    # so the runtime never waits for a frame after the slot.
    if frame_t.size == 0:
        return np.full(targets.shape, -1, np.int64)
    j = np.searchsorted(frame_t, targets + 1e-6, side="right") - 1
    ok = (j >= 0) & (targets - frame_t[np.clip(j, 0, None)] <= max_age_s)
    return np.where(ok, j, -1).astype(np.int64)


def face_plan(frame_t_s, t_end_s: float, p: Preprocessing, period_s: float | None = None) -> FacePlan:
    """The frames a window ending at ``t_end_s`` needs, by their times.

    The last grid point sits one frame period (``1 / fps``) before the window's end, on the
    window's last frame. Clip slot k (of ``clip_frames``) is at ``last - (clip_frames - 1 - k)
    * clip_stride_frames / fps``; sequence slot k at ``last - (seq_frames - 1 - k) /
    seq_rate_hz``; each takes the latest frame at or before its time (what a camera would be
    showing then), provided it is at most ``face.max_frame_age_periods`` (2.5) frame periods old:
    on a regular video that is always the frame of the slot's own period; on a webcam that
    drops a frame now and then (a 2-period gap) the slot keeps the frame before the drop, as
    the resampler bridges one lost sample and no more
    (``rppg.max_gap_periods``). The pulse grid is
    ``round(pulse_window_s * fps)`` points at ``fps`` ending at ``t_end_s``.

    Args:
        frame_t_s: float64 (N,) frame times, s, sorted.
        t_end_s: end of the window, s.
        p: the preprocessing record (:class:`edge.spec.Preprocessing`).
        period_s: the frame period used for the tolerances, s; default the median frame
            interval of ``frame_t_s`` (a caller holding only part of a recording passes the
            whole recording's, so that both sides agree).

    Returns:
        The :class:`FacePlan`.

    Raises:
        BadInputError: frame times not 1-D, not finite or not sorted.
        ConfigError: ``p`` is not a preprocessing record.
    """
    check_preprocessing(p)
    t = np.asarray(frame_t_s, dtype=np.float64)
    if t.ndim != 1 or not np.all(np.isfinite(t)) or (t.size > 1 and np.any(np.diff(t) < 0)):
        raise BadInputError("frame_t_s must be 1-D, finite and sorted")
    fps = p.fps
    n_clip, n_seq = p.face.clip_frames, p.face.seq_frames
    if period_s is None:
        period_s = float(np.median(np.diff(t))) if t.size > 1 else 1.0 / fps
    last = float(t_end_s) - 1.0 / fps
    max_age = p.face.max_frame_age_periods * max(float(period_s), 1.0 / fps) + 1e-6
    clip_t = last - (n_clip - 1 - np.arange(n_clip)) * p.face.clip_stride_frames / fps
    seq_t = last - (n_seq - 1 - np.arange(n_seq)) / p.face.seq_rate_hz
    n_pulse = p.n_pulse
    t_grid0 = float(t_end_s) - n_pulse / fps
    pulse_idx = np.nonzero((t >= t_grid0 - float(period_s) - 1e-9) & (t < float(t_end_s)))[0].astype(np.int64)
    return FacePlan(_latest_frames(t, clip_t, max_age), _latest_frames(t, seq_t, max_age), pulse_idx, t_grid0,
                    n_pulse)


@dataclass(frozen=True, eq=False)
class PulseWindow:
    """The cleaned rPPG pulse of one pulse window.

    Attributes:
        pulse: float64 (n_pulse,) cleaned pulse at ``fps``, gaps filled with ``gap_fill``
            (zeros by default); None when the window could not be formed.
        ok: the window was formed (enough face and finite pulse; see :func:`pulse_from_rgb`).
        valid_fraction: share of the grid with a face colour behind it, 0..1.
    """

    pulse: np.ndarray | None
    ok: bool
    valid_fraction: float


def pulse_from_rgb(frame_t_s, rgb, t_grid0_s: float, p: Preprocessing) -> PulseWindow:
    """The pulse window: face colours on the ``fps`` grid, rPPG, cleaning, gap fill.

    Args:
        frame_t_s: float64 (K,) times of the pulse frames (:attr:`FacePlan.pulse_idx`), s.
        rgb: float64 (K, 3) their :func:`edge.signals.roi.face_rgb` means (NaN rows where no
            face or no skin).
        t_grid0_s: :attr:`FacePlan.t_grid0_s`.
        p: the preprocessing record (:class:`edge.spec.Preprocessing`).

    Returns:
        :class:`PulseWindow`: formed when at least half the grid is valid and at least half
        the cleaned pulse is finite; NaN samples then become ``rppg.gap_fill``.

    Raises:
        BadInputError: mismatched or malformed arrays.
        ConfigError: ``p`` is not a preprocessing record.

    Method: linear resampling with gap masks (``resample_to_grid``), POS (Wang et al. 2017,
    IEEE TBME 64(7)) or the manifest's method, smoothness-priors detrending (Tarvainen et
    al. 2002) and a zero-phase Butterworth band-pass (``rppg_clean``).
    """
    check_preprocessing(p)
    pr = p.rppg
    fps = p.fps
    n_pulse = p.n_pulse
    t = np.asarray(frame_t_s, dtype=np.float64)
    x = np.asarray(rgb, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or t.shape != (x.shape[0],):
        raise BadInputError(f"frame_t_s (K,) and rgb (K, 3) must match, got {t.shape} and {x.shape}")
    if t.size < 2:
        return PulseWindow(None, False, 0.0)
    grid, valid = resample_to_grid(t, x, fps, float(t_grid0_s), n_pulse, max_gap_periods=pr.max_gap_periods)
    fraction = float(valid.mean()) if valid.size else 0.0
    if fraction < pr.min_valid_fraction:
        return PulseWindow(None, False, fraction)
    pulse = rppg_extract(grid, fps, pr.method, pr.method_window_s)
    pulse = rppg_clean(pulse, fps, **pr.clean.kwargs())
    if np.isfinite(pulse).mean() < pr.min_valid_fraction:
        return PulseWindow(None, False, fraction)
    # The TFR needs finite samples: a gap becomes zero pulse (no power).
    pulse = np.where(np.isfinite(pulse), pulse, pr.gap_fill)
    return PulseWindow(pulse, True, fraction)


def tfr_image(pulse, p: Preprocessing) -> np.ndarray:
    """The model's TFR image of a (gap-filled) pulse window.

    Args:
        pulse: float64 (n_pulse,) from :attr:`PulseWindow.pulse`, at ``fps``.
        p: the preprocessing record (its ``tfr`` section gives the image settings).

    Returns:
        float32 (F, T) image (default (32, 32) z-scored log power over 0.7-3.5 Hz).

    Raises:
        BadInputError, ConfigError: as :func:`edge.signals.tfr.tfr_compute`.

    Method: STFT spectrogram (Allen 1977) or Morlet scalogram, per the manifest.
    """
    check_preprocessing(p)
    return tfr_compute(np.asarray(pulse, dtype=np.float64), p.fps, **p.tfr.kwargs()).astype(np.float32)


@dataclass(frozen=True, eq=False)
class FaceInputs:
    """The face half of a window.

    Attributes:
        face_clip: uint8 (clip_frames, S, S, 3).
        tfr: float32 (F, T) (zeros when the pulse window was not formed).
        face_seq_crops: uint8 (seq_frames, S, S, 3).
        face_present: every clip and sequence slot had a face crop and the pulse window was
            formed.
        pulse: the :class:`PulseWindow`.
        hr: the pulse window's :func:`edge.signals.hr.heart_rate` when the record gates the
            pulse image (``rppg.tfr_min_quality`` > 0) and the window was formed, else None.
        quality: its :func:`edge.signals.hr.pulse_quality` by ``rppg.hr_gate`` (None as ``hr``).
        pulse_gated: the window was formed but its quality is below ``rppg.tfr_min_quality``
            (or its heart rate is not finite), so ``tfr`` is zeros: the pulse is absent.
    """

    face_clip: np.ndarray
    tfr: np.ndarray
    face_seq_crops: np.ndarray
    face_present: bool
    pulse: PulseWindow
    hr: HeartRate | None = None
    quality: float | None = None
    pulse_gated: bool = False


def face_inputs(plan: FacePlan, frame_t_s, pulse_rgb, clip_crops: Sequence, seq_crops: Sequence,
                p: Preprocessing, timings: dict | None = None) -> FaceInputs:
    """Assemble the face tensors of a window from its planned frames.

    Args:
        plan: from :func:`face_plan`.
        frame_t_s: float64 (N,) the frame times ``plan`` indexes.
        pulse_rgb: float64 (len(plan.pulse_idx), 3) ``face_rgb`` of each pulse frame (NaN
            rows without a face).
        clip_crops: one item per clip slot: uint8 (S, S, 3) ``crop_face`` of the slot's frame,
            or None (no frame, or no face in it).
        seq_crops: the same per sequence slot.
        p: the preprocessing record (:class:`edge.spec.Preprocessing`).
        timings: optional dict that receives the milliseconds spent in ``"pulse"`` (resampling,
            rPPG, cleaning) and ``"tfr"``.

    Returns:
        :class:`FaceInputs`; missing crops stay zeros.

    Raises:
        BadInputError: wrong counts, shapes or dtypes.
        ConfigError: ``p`` is not a preprocessing record.
    """
    check_preprocessing(p)
    s = p.face.crop_size
    n_clip, n_seq = p.face.clip_frames, p.face.seq_frames
    if len(clip_crops) != n_clip or len(seq_crops) != n_seq:
        raise BadInputError(f"need {n_clip} clip and {n_seq} sequence crops, got {len(clip_crops)} and "
                            f"{len(seq_crops)}")
    found = True
    out = []
    for crops, n in ((clip_crops, n_clip), (seq_crops, n_seq)):
        arr = np.zeros((n, s, s, 3), np.uint8)
        for k, crop in enumerate(crops):
            if crop is None:
                found = False
                continue
            c = np.asarray(crop)
            if c.dtype != np.uint8 or c.shape != (s, s, 3):
                raise BadInputError(f"a face crop must be uint8 ({s}, {s}, 3), got {c.dtype} {c.shape}")
            arr[k] = c
        out.append(arr)
    t = np.asarray(frame_t_s, dtype=np.float64)
    started = time.perf_counter()
    pulse = pulse_from_rgb(t[plan.pulse_idx], pulse_rgb, plan.t_grid0_s, p)
    mid = time.perf_counter()
    f_rows, t_cols = p.tfr.shape
    h = quality = None
    gated = False
    if pulse.ok and p.rppg.tfr_min_quality > 0.0:
        # The pulse the heart-rate gate calls noise is not shown to the model (rppg.tfr_min_quality).
        h = heart_rate(pulse.pulse, p.fps, p.rppg.clean.lo, p.rppg.clean.hi)
        quality = pulse_quality(pulse.pulse, p.fps, h, p.rppg.hr_gate, p.rppg.clean.lo, p.rppg.clean.hi)
        gated = not (math.isfinite(h.hr_bpm) and quality >= p.rppg.tfr_min_quality)
    if pulse.ok and not gated:
        image = tfr_image(pulse.pulse, p)
    else:
        image = np.zeros((f_rows, t_cols), np.float32)
    if timings is not None:
        timings["pulse"] = (mid - started) * 1e3
        timings["tfr"] = (time.perf_counter() - mid) * 1e3
    return FaceInputs(out[0], image, out[1], bool(found and pulse.ok), pulse, h, quality, gated)


# -- contact -------------------------------------------------------------------------------------


def resample_contact(t_s, values, t_end_s: float, p: Preprocessing, breaks=None) -> tuple[np.ndarray, np.ndarray]:
    """One contact stream on the window's grid (``n_samples`` at ``rate_hz`` ending at ``t_end_s``).

    The runtime gets the same grid from :meth:`firmware_bridge.buffers.StreamBuffers.window`
    (which calls the same resampler on its ring buffer); training calls this on whole
    recordings.

    Args:
        t_s: float64 (N,) sample times, s, sorted.
        values: float64 (N,) samples (NaN = missing).
        t_end_s: end of the window, s.
        p: the preprocessing record (:class:`edge.spec.Preprocessing`).
        breaks: optional bool (N,) True where a sample starts a new run (lost packets).

    Returns:
        ``(y, valid)``: float64 (n_samples,) NaN where invalid, bool (n_samples,).

    Raises:
        BadInputError, ConfigError: as :func:`firmware_bridge.resample.resample_to_grid`.

    Method: linear interpolation with gap masks and an optional box anti-alias pre-filter
    (``resample_to_grid``).
    """
    check_preprocessing(p)
    pc = p.contact
    rate, n = pc.rate_hz, pc.n_samples
    return resample_to_grid(t_s, values, rate, float(t_end_s) - n / rate, n, max_gap_periods=pc.max_gap_periods,
                            antialias=pc.antialias, breaks=breaks)


def needs_ecg_level(grids: Mapping, p: Preprocessing) -> bool:
    """Whether a window's heart-rate level must come from the ECG: its PPG row is missing or
    valid for less than ``contact.min_valid_fraction`` (the rule :func:`contact_inputs`
    applies to the row). The runtime and training both ask this before paying for ECG peaks.

    Args:
        grids: stream name -> ``(y, valid)`` on the window grid, as for :func:`contact_inputs`.
        p: the preprocessing record.
    """
    g = grids.get("ppg")
    return g is None or float(np.asarray(g[1], bool).mean()) < p.contact.min_valid_fraction


def ecg_level_hr(t_s, values, t0_s: float, t_end_s: float, min_beats: int) -> float:
    """Mean heart rate from ECG R peaks within ``[t0_s, t_end_s)``: the level summary used when
    a window has no PPG.

    Args:
        t_s: float64 (N,) sample times, s (regular).
        values: float64 (N,) ECG, mV (NaN = missing, dropped).
        t0_s, t_end_s: the window, s.
        min_beats: fewer beats give NaN.

    Returns:
        Mean HR in bpm (:func:`edge.signals.hrv.hrv_time` ``mean_hr_bpm``), or NaN.

    Method: Pan & Tompkins 1985 R peaks (:func:`edge.signals.ecg.ecg_peaks`); Task Force 1996.
    """
    t = np.asarray(t_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    inside = (t >= t0_s) & (t < t_end_s) & np.isfinite(v)
    if inside.sum() < 2:
        return math.nan
    fs = 1.0 / float(np.median(np.diff(t[inside])))
    h = hrv_time(ecg_peaks(v[inside], fs), fs)
    return h.mean_hr_bpm if h.n_beats >= int(min_beats) else math.nan


@dataclass(frozen=True, eq=False)
class ContactInputs:
    """The contact half of a window.

    Attributes:
        contact: float32 (len(streams), n_samples) z-scored rows, ``invalid_value`` where invalid.
        contact_present: bool (len(streams),) row had at least ``min_valid_fraction`` valid.
        contact_level: float32 (2,) HR / hr_scale_bpm, tonic EDA / eda_scale_us (0 when absent).
        level_present: bool (2,).
        ppg_hr_bpm: the HR behind ``contact_level[0]`` (NaN when absent), bpm.
        eda_tonic_us: the tonic mean behind ``contact_level[1]`` (NaN when absent), uS.
    """

    contact: np.ndarray
    contact_present: np.ndarray
    contact_level: np.ndarray
    level_present: np.ndarray
    ppg_hr_bpm: float
    eda_tonic_us: float


def contact_inputs(grids: Mapping[str, tuple[np.ndarray, np.ndarray] | None], p: Preprocessing, *,
                   eda_units: str | None = "uS", ecg_hr_bpm: float = math.nan) -> ContactInputs:
    """Normalise the contact rows of a window and compute their level summaries.

    Args:
        grids: stream name (``preprocessing.contact.streams``, e.g. ``"ppg"``, ``"eda"``) ->
            ``(y, valid)`` on the window grid (:func:`resample_contact`), or None / absent
            when the stream does not exist.
        p: the preprocessing record (:class:`edge.spec.Preprocessing`).
        eda_units: the EDA stream's units; the tonic level is computed only when they are the
            units ``contact.signals`` declares for EDA (microsiemens).
        ecg_hr_bpm: HR from ECG (:func:`ecg_level_hr`), used for the level when there is no
            usable PPG row; NaN when none.

    Returns:
        :class:`ContactInputs`.

    Raises:
        BadInputError: a grid of the wrong length.
        ConfigError: ``p`` is not a preprocessing record.

    Method: per-window z-scores; PPG peaks after Elgendi et al. 2013 (PLoS ONE 8(10)) and HRV
    after the Task Force 1996; EDA tonic/phasic decomposition (:func:`edge.signals.eda.eda_decompose`).
    """
    check_preprocessing(p)
    pc, pl = p.contact, p.contact_level
    rate, n = pc.rate_hz, pc.n_samples
    names = list(pc.streams)
    rows = np.zeros((len(names), n), np.float32)
    present = np.zeros(len(names), bool)
    level = np.zeros(2, np.float32)
    level_ok = np.zeros(2, bool)
    usable: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for r, name in enumerate(names):
        g = grids.get(name)
        if g is None:
            continue
        y, valid = np.asarray(g[0], dtype=np.float64), np.asarray(g[1], dtype=bool)
        if y.shape != (n,) or valid.shape != (n,):
            raise BadInputError(f"contact grid {name!r} must be ({n},), got {y.shape} / {valid.shape}")
        if valid.mean() < pc.min_valid_fraction:
            continue
        usable[name] = (y, valid)
        mean, std = float(y[valid].mean()), float(y[valid].std())
        z = (y - mean) / std if std > 1e-12 else np.zeros(n)
        rows[r] = np.where(valid, z, pc.invalid_value).astype(np.float32)
        present[r] = True

    hr_bpm = math.nan
    if "ppg" in usable:
        y, valid = usable["ppg"]
        # Gaps held at the mean are flat: no peak there, and an interval across the gap is
        # rejected by hrv's NN rule.
        filled = np.where(valid, y, y[valid].mean())
        h = hrv_time(ppg_peaks(filled, rate), rate)
        if h.n_beats >= pl.min_beats:
            hr_bpm = h.mean_hr_bpm
    elif math.isfinite(ecg_hr_bpm):
        hr_bpm = float(ecg_hr_bpm)
    if math.isfinite(hr_bpm):
        level[0], level_ok[0] = hr_bpm / pl.hr_scale_bpm, True
    tonic_us = math.nan
    eda_spec = pc.signal("eda")
    if "eda" in usable and eda_spec is not None and eda_units == eda_spec.units:
        y, valid = usable["eda"]
        tonic, _ = eda_decompose(np.where(valid, y, y[valid].mean()), rate)
        tonic_us = float(tonic[valid].mean())
        level[1], level_ok[1] = tonic_us / pl.eda_scale_us, True
    return ContactInputs(rows, present, level, level_ok, hr_bpm, tonic_us)


# -- tensors -------------------------------------------------------------------------------------

#: The modalities a window may carry, in the order of a model's ``present`` input: the face
#: (every face-clip slot has a crop), the pulse (its TFR was formed), the contact PPG and EDA
#: rows, and the heart-rate and tonic-EDA levels.
MODALITIES = ("face", "pulse", "ppg", "eda", "hr_level", "eda_level")


def modality_flags(window: Window) -> np.ndarray:
    """Which modalities a window holds: float32 (6,) 1 / 0 in :data:`MODALITIES` order.

    The face counts when every ``face_clip`` slot holds a crop (a crop that is not all zeros:
    missing slots are zeros, see :func:`face_inputs`), the pulse when its TFR was formed (a
    formed image is z-scored, never all zeros); the contact rows and levels by their own
    ``contact_present`` / ``level_present`` flags. Training, calibration, still images and the
    device all derive the flags with :func:`modality_flags_batch`.
    """
    return modality_flags_batch(np.asarray(window.face_clip)[None], np.asarray(window.tfr)[None],
                                np.asarray(window.contact_present)[None], np.asarray(window.level_present)[None])[0]


def modality_flags_batch(face_clip, tfr, contact_present, level_present) -> np.ndarray:
    """:func:`modality_flags` of N windows at once.

    Args:
        face_clip: uint8 (N, clip_frames, S, S, 3); tfr: (N, F, T); contact_present: bool
            (N, rows >= 2); level_present: bool (N, 2).

    Returns:
        float32 (N, 6).
    """
    clip = np.asarray(face_clip)
    n = clip.shape[0]
    face = clip.reshape(n, clip.shape[1], -1).any(axis=2).all(axis=1) if clip.ndim >= 3 else np.zeros(n, bool)
    pulse = np.asarray(tfr).reshape(n, -1).any(axis=1)
    rows = np.asarray(contact_present, bool).reshape(n, -1)
    levels = np.asarray(level_present, bool).reshape(n, -1)
    return np.column_stack([face, pulse, rows[:, 0], rows[:, 1], levels[:, 0], levels[:, 1]]).astype(np.float32)


def crops_to_nchw(crops) -> np.ndarray:
    """uint8 RGB crops (..., H, W, 3) -> float32 (M, 3, H, W) in [0, 1]: the face encoder's
    ``face_crop`` input (and, per clip, the models' ``face_clip`` layout).

    Raises:
        BadInputError: not uint8 with 3 channels last.
    """
    a = np.asarray(crops)
    if a.dtype != np.uint8 or a.ndim < 3 or a.shape[-1] != 3:
        raise BadInputError(f"crops must be uint8 (..., H, W, 3), got {a.dtype} {a.shape}")
    flat = a.reshape(-1, *a.shape[-3:])
    return np.ascontiguousarray(flat.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def model_feeds(window: Window, input_names: Sequence[str], face_feats=None) -> dict[str, np.ndarray]:
    """The contract's input tensors of one window, batch 1, by ONNX input name.

    Args:
        window: the :class:`Window`.
        input_names: the model's inputs (the manifest's ``inputs`` names), any subset of
            ``face_clip``, ``tfr``, ``contact``, ``contact_level``, ``face_feats``.
        face_feats: float32 (seq_frames, D) per-crop features of ``window.face_seq_crops``
            from the bundle's ``face_encoder`` graph; needed only for ``face_feats``.

    Returns:
        dict name -> float32 array: ``face_clip`` (1, 8, 3, 32, 32) in [0, 1]; ``tfr``
        (1, 1, 32, 32); ``contact`` (1, 2, 1920); ``contact_level`` (1, 2); ``face_feats``
        (1, 120, 64).

    Raises:
        ConfigError: an unknown input name, or ``face_feats`` asked for without features.
    """
    out: dict[str, np.ndarray] = {}
    for name in input_names:
        if name == "face_clip":
            clip = np.asarray(window.face_clip)
            out[name] = crops_to_nchw(clip).reshape(1, clip.shape[0], 3, clip.shape[1], clip.shape[2])
        elif name == "tfr":
            out[name] = np.ascontiguousarray(window.tfr, dtype=np.float32)[None, None]
        elif name in ("contact", "contact_level"):
            out[name] = np.ascontiguousarray(getattr(window, name), dtype=np.float32)[None]
        elif name == "present":
            out[name] = modality_flags(window)[None]
        elif name == "face_feats":
            if face_feats is None:
                raise ConfigError("the model takes face_feats: run the bundle's face_encoder on face_seq_crops")
            out[name] = np.ascontiguousarray(face_feats, dtype=np.float32)[None]
        else:
            raise ConfigError(f"unknown model input {name!r}; known: face_clip, tfr, contact, contact_level, "
                              "present, face_feats")
    return out
