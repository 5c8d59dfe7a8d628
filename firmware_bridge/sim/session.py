"""A synthetic recording session: face video, ECG, PPG and EDA from the same heart beats.

``synth_session(SimConfig(...))`` computes all physiological signals at once (cheap: a
10-minute session is a few hundred thousand samples) and renders camera frames lazily, on
demand, so a long high-resolution session never holds its frames in memory. The session is the
stand-in for real devices in tests and in the demo; its ground truth (beat times, R-peak
indices, true heart rate, SCR onsets, face box, BVP) is exposed next to the signals.

Randomness: every component draws from its own stream derived from ``seed``, so changing one
setting (say the sensor noise) leaves the others (the beats, the motion) unchanged.
See docs/SIMULATOR.md for the generative model and the physiology behind each default.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from functools import cached_property

import numpy as np

from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.sim import physio
from firmware_bridge.sim.expression import EXPRESSION_LIMIT, FaceAppearance, expression_trajectory
from firmware_bridge.sim.face import PBV_RGB, FaceRenderer, Motion
from firmware_bridge.sim.faces import face_library, tone_pulse_factors

__all__ = ["SimConfig", "SyntheticSession", "Trace", "synth_session"]

# Independent random streams, one per component (see module docstring).
_STREAM_BEATS, _STREAM_ECG, _STREAM_PPG, _STREAM_EDA, _STREAM_MOTION, _STREAM_LIGHT, _STREAM_CLOCK = range(1, 8)
# The identity and skin tone chosen from the seed when they are not given.
_STREAM_FACE = 8


@dataclass(frozen=True)
class SimConfig:
    """Every setting of a synthetic session. Defaults: a still adult at rest, in good light,
    filmed by a typical webcam, with a chest ECG, a finger PPG and palm EDA.

    Session:
        duration_s: length, s.
        seed: seeds every random stream; equal configs give byte-equal sessions.

    Heart:
        hr_bpm: heart rate, beats/min: a constant, or knots ``((t_s, bpm), ...)`` interpolated
            linearly (held beyond the ends). 20-250 bpm.
        hrv_sdnn_ms: SDNN of the beat intervals at a constant 70 bpm, ms (0 = metronome).
            Healthy adults at rest, 5 min: 50 +- 16 ms (Nunan et al. 2010). The fluctuation
            is constant in bpm (about 4 bpm std at 50 ms), so SDNN falls as RR**2 at higher
            rates (Sacha & Pluta 2008).
        hrv_lf_hf_ratio: LF (~0.1 Hz) to HF (respiratory) power ratio of the variability.
            0.5 as in ECGSYN (McSharry et al. 2003).
        resp_rate_hz: respiration rate, Hz (0.25 = 15 breaths/min); sets the RSA frequency.

    ECG (chest lead, mV):
        fs_ecg_hz: sampling rate, Hz.
        ecg_snr_db: signal-to-noise ratio of added realistic noise (baseline wander, muscle,
            electrode motion; MIT-BIH NST definition), dB; None = clean.

    PPG (finger, arbitrary units, more blood = larger):
        fs_ppg_hz: sampling rate, Hz.
        ppg_delay_s: R peak to finger systolic peak, s (pulse arrival time).
        ppg_noise: Gaussian noise std, in units of the systolic peak height.

    EDA (palm, microsiemens):
        fs_eda_hz: sampling rate, Hz.
        eda_tonic_us: mean tonic skin-conductance level, uS (typical 2-20).
        eda_drift_us: std of the slow tonic drift (periods 1-10 min), uS.
        scr_onsets_s: onsets (start of rise) of evoked skin-conductance responses, s.
        scr_amplitudes_us: their amplitudes (onset to peak), uS; one per onset, or one value
            for all.
        scr_tau_rise_s, scr_tau_decay_s: Bateman time constants, s: rise to peak in 1.2 s,
            half recovery 2.2 s after the peak with the defaults.
        scr_spontaneous_per_min: rate of non-specific (spontaneous) SCRs, per minute (1-3 at
            rest), with log-normal amplitudes of median 0.1 uS.
        eda_noise_us: Gaussian measurement noise std, uS.

    Camera and face:
        fps: nominal frame rate, Hz.
        frame_jitter_s: std of each frame's time around its nominal i / fps, s (clipped to
            +-0.4 / fps so frames stay ordered).
        frame_size: (width, height) px.
        face_scale: face-box height / frame height.
        face_center: face-box centre as fractions (x, y) of the frame.
        bvp_delay_s: R peak to face systolic peak, s (the face is nearer the heart than a finger).
        pulse_amplitude: systolic relative darkening of the skin in green (0.003 = 0.3 %;
            real faces 0.1-0.5 %); red and blue follow the Pbv signature. 0 = a printed photo.
        motion_px: std of the head's translation on each axis, px.
        motion_scale_pct: std of the head's scale change, % (moving to and from the camera).
        motion_band_hz: frequency band of the head motion, Hz.
        illumination_pct: largest deviation of the global light level from nominal, %: half a
            linear ramp over the session, half a slow random wobble (0.01-0.1 Hz).
        flicker_pct, flicker_hz: amplitude (%) and frequency (Hz) of a sinusoidal light
            flicker (e.g. mains flicker aliased by the frame rate); 0 = none.
        noise_sigma: per-pixel Gaussian sensor noise at unit sensor gain, grey levels (auto-
            exposure's gain above 1 multiplies it).
        auto_exposure: the camera meters the face (face-priority, see
            :func:`~firmware_bridge.sim.face.auto_exposure_gain`) and sets a gain that moves it
            part of the way to mid-grey, held for the session; False = the fixed exposure of
            the tone swatches (the renderer before auto-exposure).
        jpeg_quality: JPEG quality 1-100 applied to every frame, None = uncompressed.

    Expression and appearance (see :mod:`firmware_bridge.sim.expression`):
        expression_valence: facial valence in [-1, 1]: > 0 smiles (mouth corners up, cheeks
            raised), < 0 frowns (corners down, brows lowered and drawn together); a constant or
            knots ``((t_s, value), ...)`` interpolated linearly. 0 = the photo's own face.
        expression_arousal: facial arousal in [-1, 1]: > 0 raises the brows and widens the
            eyes, < 0 lowers the lids; a constant or knots.
        expressivity: how strongly this person shows it (0 = poker face, 1 = nominal, up to
            3); the rendered intensity is expressivity x value, clipped to +-1.5.
        face_appearance: the subject's look: skin tone, background tint, face proportions,
            landmark offsets (:class:`~firmware_bridge.sim.expression.FaceAppearance`).

    Identity and skin tone (see :mod:`firmware_bridge.sim.faces`):
        faces: a folder of face photos (``labels.csv`` with ``file,expression,identity`` and
            the images, or just images); None = the astronaut photo.
        identity: which identity of ``faces``: an index 0..n-1 into its sorted identities, an
            identity label or a file name; None = chosen from ``seed``. Needs ``faces``.
        skin_tone: Monk Skin Tone 1 (lightest) to 10 (darkest) that colourises the face, the
            pulse's strength per channel following it; None = the astronaut's own colours, or
            for a face photo a tone chosen from ``seed``.

    Raises (on construction):
        ConfigError: any setting out of range.
    """

    duration_s: float = 30.0
    seed: int = 0
    hr_bpm: float | tuple[tuple[float, float], ...] = 70.0
    hrv_sdnn_ms: float = 50.0
    hrv_lf_hf_ratio: float = 0.5
    resp_rate_hz: float = 0.25
    fs_ecg_hz: float = 250.0
    ecg_snr_db: float | None = None
    fs_ppg_hz: float = 100.0
    ppg_delay_s: float = 0.2
    ppg_noise: float = 0.0
    fs_eda_hz: float = 32.0
    eda_tonic_us: float = 5.0
    eda_drift_us: float = 0.2
    scr_onsets_s: tuple[float, ...] = ()
    scr_amplitudes_us: float | tuple[float, ...] = 0.5
    scr_tau_rise_s: float = 0.75
    scr_tau_decay_s: float = 2.0
    scr_spontaneous_per_min: float = 0.0
    eda_noise_us: float = 0.0
    fps: float = 30.0
    frame_jitter_s: float = 0.0
    frame_size: tuple[int, int] = (640, 480)
    face_scale: float = 0.35
    face_center: tuple[float, float] = (0.5, 0.45)
    bvp_delay_s: float = 0.15
    pulse_amplitude: float = 0.003
    motion_px: float = 1.0
    motion_scale_pct: float = 0.5
    motion_band_hz: tuple[float, float] = (0.05, 0.5)
    illumination_pct: float = 2.0
    flicker_pct: float = 0.0
    flicker_hz: float = 0.0
    noise_sigma: float = 2.0
    auto_exposure: bool = True
    jpeg_quality: int | None = None
    expression_valence: float | tuple[tuple[float, float], ...] = 0.0
    expression_arousal: float | tuple[tuple[float, float], ...] = 0.0
    expressivity: float = 1.0
    face_appearance: FaceAppearance = field(default_factory=FaceAppearance)
    faces: str | None = None
    identity: int | str | None = None
    skin_tone: int | None = None

    def __post_init__(self) -> None:
        # Lists become tuples so a config stays hashable and truly frozen.
        def fix(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        try:
            physio.hr_trajectory(self.hr_bpm)  # validates the rate or the knots' shape
            if np.ndim(self.hr_bpm) > 0:
                fix("hr_bpm", tuple((float(t), float(b)) for t, b in self.hr_bpm))  # type: ignore[union-attr]
            else:
                fix("hr_bpm", float(self.hr_bpm))  # type: ignore[arg-type]
            fix("scr_onsets_s", tuple(float(v) for v in self.scr_onsets_s))
            if np.ndim(self.scr_amplitudes_us) > 0:
                fix("scr_amplitudes_us", tuple(float(v) for v in self.scr_amplitudes_us))  # type: ignore[union-attr]
            fix("frame_size", tuple(int(v) for v in self.frame_size))
            fix("face_center", tuple(float(v) for v in self.face_center))
            fix("motion_band_hz", tuple(float(v) for v in self.motion_band_hz))
            for name in ("expression_valence", "expression_arousal"):
                spec = getattr(self, name)
                expression_trajectory(spec, name)  # validates the value or the knots
                if np.ndim(spec) > 0:
                    fix(name, tuple((float(t), float(v)) for t, v in spec))
                else:
                    fix(name, float(spec))
            if self.faces is not None:
                fix("faces", str(self.faces))
            if isinstance(self.identity, float) and self.identity == int(self.identity):
                fix("identity", int(self.identity))
            if isinstance(self.skin_tone, float) and self.skin_tone == int(self.skin_tone):
                fix("skin_tone", int(self.skin_tone))
            if isinstance(self.face_appearance, dict):
                fix("face_appearance", FaceAppearance(**self.face_appearance))
            if not isinstance(self.face_appearance, FaceAppearance):
                raise ConfigError(f"SimConfig: face_appearance must be a FaceAppearance, got "
                                  f"{type(self.face_appearance).__name__}")
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"SimConfig: malformed setting ({exc})") from exc
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(f"SimConfig: {what}")

        for name, (lo, hi) in _RANGES.items():
            v = getattr(self, name)
            need(bool(np.isfinite(v)) and lo <= v <= hi, f"{name} must be within {lo}-{hi}, got {v}")
        need(self.duration_s > 0, f"duration_s must be > 0, got {self.duration_s}")
        need(int(self.seed) == self.seed, f"seed must be a non-negative integer, got {self.seed}")
        need(self.ecg_snr_db is None or bool(np.isfinite(self.ecg_snr_db)),
             f"ecg_snr_db must be finite or None, got {self.ecg_snr_db}")
        need(self.ecg_snr_db is None or self.duration_s >= 1.5, "ecg_snr_db needs duration_s >= 1.5 s")
        need(self.eda_drift_us < self.eda_tonic_us, "eda_drift_us must be below eda_tonic_us")
        need(all(np.isfinite(self.scr_onsets_s)), "scr_onsets_s must be finite")
        amps = np.atleast_1d(np.asarray(self.scr_amplitudes_us, dtype=np.float64))
        need(amps.size in (1, len(self.scr_onsets_s)) or not self.scr_onsets_s,
             f"scr_amplitudes_us needs one value or one per onset ({len(self.scr_onsets_s)}), got {amps.size}")
        need(bool(np.all(amps >= 0) and np.all(amps <= 20)), "scr_amplitudes_us must be within 0-20 uS")
        need(self.scr_tau_rise_s < self.scr_tau_decay_s, "scr_tau_rise_s must be below scr_tau_decay_s")
        need(self.frame_jitter_s <= 1.0 / self.fps, "frame_jitter_s must be within 0 and 1/fps")
        need(len(self.frame_size) == 2 and min(self.frame_size) >= 64,
             f"frame_size must be (width, height) of at least 64 px, got {self.frame_size}")
        need(len(self.face_center) == 2 and all(0 <= v <= 1 for v in self.face_center),
             f"face_center must be fractions (x, y) in 0-1, got {self.face_center}")
        lo, hi = self.motion_band_hz
        need(0 <= lo < hi <= self.fps / 2, "motion_band_hz must be (low, high) with 0 <= low < high <= fps/2")
        need(isinstance(self.auto_exposure, (bool, np.bool_)), f"auto_exposure must be True or False, got "
             f"{self.auto_exposure!r}")
        need(self.jpeg_quality is None or 1 <= self.jpeg_quality <= 100,
             f"jpeg_quality must be 1-100 or None, got {self.jpeg_quality}")
        need(self.skin_tone is None or (isinstance(self.skin_tone, (int, np.integer))
                                        and not isinstance(self.skin_tone, bool) and 1 <= self.skin_tone <= 10),
             f"skin_tone must be a Monk Skin Tone 1-10 or None, got {self.skin_tone!r}")
        need(self.identity is None or self.faces is not None,
             "identity needs faces (a folder of face photos); without it the face is the astronaut")
        need(self.identity is None or (isinstance(self.identity, (int, str, np.integer))
                                       and not isinstance(self.identity, bool)),
             f"identity must be an index, an identity label or a file name, got {self.identity!r}")
        need(not isinstance(self.identity, (int, np.integer)) or self.identity >= 0,
             f"identity index must be >= 0, got {self.identity}")


# Allowed (inclusive) range of each scalar setting; the units are in the names.
_RANGES: dict[str, tuple[float, float]] = {
    "duration_s": (0.0, 86400.0),
    "seed": (0, 2**63 - 1),
    "hrv_sdnn_ms": (0.0, 300.0),
    "hrv_lf_hf_ratio": (0.0, 100.0),
    "resp_rate_hz": (0.05, 1.0),
    "fs_ecg_hz": (50.0, 10000.0),
    "fs_ppg_hz": (10.0, 10000.0),
    "ppg_delay_s": (0.0, 0.6),
    "ppg_noise": (0.0, 10.0),
    "fs_eda_hz": (1.0, 10000.0),
    "eda_tonic_us": (0.1, 100.0),
    "eda_drift_us": (0.0, 100.0),
    "scr_tau_rise_s": (0.01, 60.0),
    "scr_tau_decay_s": (0.01, 60.0),
    "scr_spontaneous_per_min": (0.0, 30.0),
    "eda_noise_us": (0.0, 10.0),
    "fps": (1.0, 1000.0),
    "frame_jitter_s": (0.0, 1.0),
    "face_scale": (0.05, 1.0),
    "bvp_delay_s": (0.0, 0.6),
    "pulse_amplitude": (0.0, 0.05),
    "motion_px": (0.0, 100.0),
    "motion_scale_pct": (0.0, 20.0),
    "illumination_pct": (0.0, 50.0),
    "flicker_pct": (0.0, 50.0),
    "flicker_hz": (0.0, 1000.0),
    "noise_sigma": (0.0, 100.0),
    "expressivity": (0.0, 3.0),
}


@dataclass(frozen=True, eq=False)
class Trace:
    """A regularly sampled signal with its rate: sample i is at ``i / fs_hz`` s.

    Attributes:
        name: stream name (``"ecg"``, ``"ppg"``, ``"eda"``).
        values: float64 samples, shape (N,), read-only, in ``units``.
        fs_hz: sampling rate, Hz.
        units: physical units (``"mV"``, ``"a.u."``, ``"uS"``).
    """

    name: str
    values: np.ndarray = field(repr=False)
    fs_hz: float
    units: str

    @property
    def t_s(self) -> np.ndarray:
        """Sample times, s, float64 shape (N,)."""
        return np.arange(self.values.size) / self.fs_hz

    def __len__(self) -> int:
        return int(self.values.size)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


class SyntheticSession:
    """A synthetic session; build it with :func:`synth_session`.

    Signals (all sharing t = 0 at the session start):
        ecg, ppg, eda: :class:`Trace` (mV, a.u., uS).
        r_peak_idx: int64 (K,) ECG sample index of each beat in ``beat_times_s``; -1 for a
            beat in the last half sample, past the record.
        ppg_peak_idx: int64 (K,) PPG sample index nearest each beat's finger systolic peak
            (beat time + ppg_delay_s); -1 where that falls outside the record.
        beat_times_s: float64 (K,) R-peak times within [0, duration_s), s.
        scr_onsets_s, scr_amplitudes_us: float64 (M,) every SCR actually placed (evoked and
            spontaneous), sorted by onset, s and uS.

    Video:
        n_frames (== len(session)), frame_times_s (float64 (n_frames,), s), bvp (float64
        (n_frames,), face blood volume at the frame times, dimensionless, larger = more blood:
        the skin is darker then), frame(i), frames(), face_box(i), skin_mask(i), motion(i),
        illumination(i), expression(i).

    Face truth:
        face_truth: dict with ``identity`` (label, or ``"astronaut"``), ``photo`` (file name),
            ``identity_index`` (None for the astronaut), ``face_box_detected`` (the Haar
            cascade found the photo's box; False = the canonical box), ``skin_tone`` (Monk 1-10
            or None), ``skin_tone_scale``, ``pulse_amplitude`` (green, as configured) and
            ``pulse_amplitude_rgb`` (the relative darkening per channel at bvp = 1 on this tone).

    Raises (on construction):
        ConfigError: the faces folder is missing or empty, or the identity is not in it.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = c = config
        rng = lambda stream: np.random.default_rng([c.seed, stream])  # noqa: E731
        self._all_beats = physio.beat_times(
            c.duration_s, c.hr_bpm, c.hrv_sdnn_ms, c.resp_rate_hz, rng(_STREAM_BEATS), c.hrv_lf_hf_ratio
        )
        inside = (self._all_beats >= 0.0) & (self._all_beats < c.duration_s)
        self.beat_times_s = _readonly(self._all_beats[inside])
        self._hr_target = physio.hr_trajectory(c.hr_bpm)

        n_ecg = int(np.floor(c.duration_s * c.fs_ecg_hz))
        ecg = physio.ecg_from_beats(self._all_beats, c.fs_ecg_hz, n_ecg)
        idx = np.round(self.beat_times_s * c.fs_ecg_hz).astype(np.int64)
        self.r_peak_idx = _readonly(np.where(idx < n_ecg, idx, -1))
        if c.ecg_snr_db is not None:
            # Imported here: sim.noise loads scipy.signal (over 1 s), wanted only with ECG noise.
            from firmware_bridge.sim.noise import add_noise

            qrs = self.r_peak_idx[self.r_peak_idx >= 0]
            noise_seed = int(rng(_STREAM_ECG).integers(2**31))
            ecg = add_noise(ecg, c.fs_ecg_hz, c.ecg_snr_db, seed=noise_seed, qrs=qrs)
        self.ecg = Trace("ecg", _readonly(ecg), float(c.fs_ecg_hz), "mV")

        n_ppg = int(np.floor(c.duration_s * c.fs_ppg_hz))
        ppg_t = np.arange(n_ppg) / c.fs_ppg_hz
        ppg = physio.pulse_from_beats(self._all_beats, ppg_t, c.ppg_delay_s)
        if c.ppg_noise > 0:
            ppg = ppg + c.ppg_noise * rng(_STREAM_PPG).standard_normal(n_ppg)
        self.ppg = Trace("ppg", _readonly(ppg), float(c.fs_ppg_hz), "a.u.")
        idx = np.round((self.beat_times_s + c.ppg_delay_s) * c.fs_ppg_hz).astype(np.int64)
        self.ppg_peak_idx = _readonly(np.where(idx < n_ppg, idx, -1))

        self._resolve_face(rng(_STREAM_FACE))
        self._make_eda(rng(_STREAM_EDA))
        self._make_video(rng(_STREAM_MOTION), rng(_STREAM_LIGHT), rng(_STREAM_CLOCK))

    # -- identity and tone -------------------------------------------------------------------
    def _resolve_face(self, rng: np.random.Generator) -> None:
        c = self.config
        # Draw both even when given, so that giving one leaves the other's choice unchanged.
        draw_identity, draw_tone = rng.random(), int(rng.integers(1, 11))
        self._photo = None
        truth: dict = {"identity": "astronaut", "photo": "skimage.data.astronaut", "identity_index": None,
                       "face_box_detected": True}
        tone = c.skin_tone
        if c.faces is not None:
            library = face_library(c.faces)
            index = int(draw_identity * len(library)) if c.identity is None else library.index_of(c.identity)
            self._photo = library.photo(index)
            truth = {"identity": self._photo.identity, "photo": self._photo.file, "identity_index": index,
                     "face_box_detected": self._photo.detected}
            if tone is None:
                tone = draw_tone
        self.skin_tone = tone
        factors = (1.0, 1.0, 1.0) if tone is None else tone_pulse_factors(tone)
        truth.update(
            skin_tone=tone,
            skin_tone_scale="Monk Skin Tone (1 lightest - 10 darkest)",
            pulse_amplitude=float(c.pulse_amplitude),
            pulse_amplitude_rgb=[float(c.pulse_amplitude * f * w / PBV_RGB[1]) for f, w in zip(factors, PBV_RGB)],
        )
        self.face_truth = truth

    # -- EDA -------------------------------------------------------------------------------
    def _make_eda(self, rng: np.random.Generator) -> None:
        c = self.config
        n = int(np.floor(c.duration_s * c.fs_eda_hz))
        t = np.arange(n) / c.fs_eda_hz
        onsets = np.asarray(c.scr_onsets_s, dtype=np.float64)
        amps = np.broadcast_to(np.asarray(c.scr_amplitudes_us, dtype=np.float64), onsets.shape)
        drift = physio.smooth_random(rng, (1.0 / 600.0, 1.0 / 60.0))
        n_spont = rng.poisson(c.scr_spontaneous_per_min * c.duration_s / 60.0)
        spont_on = rng.uniform(-10.0, c.duration_s, n_spont)
        # Non-specific SCRs are mostly small: log-normal around 0.1 uS (Dawson et al. 2007).
        spont_amp = 0.1 * np.exp(0.5 * rng.standard_normal(n_spont))
        all_on = np.concatenate([onsets, spont_on])
        all_amp = np.concatenate([amps, spont_amp])
        order = np.argsort(all_on, kind="stable")
        self.scr_onsets_s = _readonly(all_on[order])
        self.scr_amplitudes_us = _readonly(all_amp[order])
        tonic = c.eda_tonic_us + c.eda_drift_us * drift(t)
        eda = physio.eda_from_scrs(t, tonic, self.scr_onsets_s, self.scr_amplitudes_us,
                                   c.scr_tau_rise_s, c.scr_tau_decay_s)
        if c.eda_noise_us > 0:
            eda = eda + c.eda_noise_us * rng.standard_normal(n)
        # Skin conductance cannot go negative, whatever the noise.
        self.eda = Trace("eda", _readonly(np.maximum(eda, 0.01)), float(c.fs_eda_hz), "uS")

    # -- video -----------------------------------------------------------------------------
    def _make_video(self, rng_motion: np.random.Generator, rng_light: np.random.Generator,
                    rng_clock: np.random.Generator) -> None:
        c = self.config
        n = int(np.floor(c.duration_s * c.fps))
        t = np.arange(n) / c.fps
        if c.frame_jitter_s > 0:
            t = t + np.clip(c.frame_jitter_s * rng_clock.standard_normal(n), -0.4 / c.fps, 0.4 / c.fps)
            t[0] = max(t[0], 0.0)
        self.frame_times_s = _readonly(t)
        self.n_frames = n
        self.bvp = _readonly(physio.pulse_from_beats(self._all_beats, t, c.bvp_delay_s))
        mx = physio.smooth_random(rng_motion, c.motion_band_hz)
        my = physio.smooth_random(rng_motion, c.motion_band_hz)
        ms = physio.smooth_random(rng_motion, c.motion_band_hz)
        self._dx = _readonly(c.motion_px * mx(t))
        self._dy = _readonly(c.motion_px * my(t))
        self._scale = _readonly(1.0 + c.motion_scale_pct / 100.0 * ms(t))
        wobble = physio.smooth_random(rng_light, (0.01, 0.1))
        # wobble has unit variance; /3 keeps it (nearly always) within +-1 so that
        # illumination_pct bounds the deviation.
        u = 0.5 * (2.0 * t / c.duration_s - 1.0) + 0.5 * np.clip(wobble(t) / 3.0, -1.0, 1.0)
        gain = 1.0 + c.illumination_pct / 100.0 * u
        gain = gain + c.flicker_pct / 100.0 * np.sin(2.0 * np.pi * c.flicker_hz * t)
        self._gain = _readonly(gain)
        # Deterministic functions of time only (no random stream): adding an expression leaves
        # every other component of the session unchanged.
        self._valence = _readonly(np.clip(c.expressivity * expression_trajectory(c.expression_valence)(t),
                                          -EXPRESSION_LIMIT, EXPRESSION_LIMIT))
        self._arousal = _readonly(np.clip(c.expressivity * expression_trajectory(c.expression_arousal)(t),
                                          -EXPRESSION_LIMIT, EXPRESSION_LIMIT))

    @cached_property
    def _renderer(self) -> FaceRenderer:
        c = self.config
        return FaceRenderer(c.frame_size, c.face_scale, c.face_center, c.pulse_amplitude,
                            c.noise_sigma, c.jpeg_quality, c.seed, appearance=c.face_appearance,
                            photo=self._photo, skin_tone=self.skin_tone, auto_exposure=c.auto_exposure)

    @property
    def exposure_gain(self) -> float:
        """The auto-exposure gain the camera holds for this session, code-value units (1.0 with
        ``auto_exposure`` off); builds the renderer on first use."""
        return self._renderer.exposure_gain

    def __len__(self) -> int:
        return self.n_frames

    def _check_index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < self.n_frames:
            raise BadInputError(f"frame index must be an integer in 0..{self.n_frames - 1}, got {i!r}")
        return int(i)

    def motion(self, i: int) -> Motion:
        """The subject's rigid motion in frame i: translation px and scale about the face centre."""
        i = self._check_index(i)
        return Motion(float(self._dx[i]), float(self._dy[i]), float(self._scale[i]))

    def illumination(self, i: int) -> float:
        """Global light gain in frame i (1 = nominal)."""
        return float(self._gain[self._check_index(i)])

    def expression(self, i: int) -> tuple[float, float]:
        """Rendered (valence, arousal) intensities in frame i: expressivity x the programmed
        values, clipped to +-1.5 (0, 0 = the photo's own face)."""
        i = self._check_index(i)
        return float(self._valence[i]), float(self._arousal[i])

    def frame(self, i: int) -> np.ndarray:
        """Render frame i: uint8 BGR, shape (H, W, 3); the same bytes whenever it is asked for.

        Raises:
            BadInputError: i is not an integer in 0..n_frames-1.
        """
        i = self._check_index(i)
        return self._renderer.render(i, float(self.bvp[i]), float(self._gain[i]), self.motion(i),
                                     self.expression(i))

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Iterate over frames start..stop-1 (uint8 BGR (H, W, 3)), rendered one at a time;
        pair them with ``frame_times_s[start:stop]`` for their times."""
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        for i in range(int(start), stop):
            yield self.frame(i)

    def face_box(self, i: int, exact: bool = False) -> tuple:
        """Ground-truth face box of frame i, (x, y, w, h) px, in the Haar frontal-face convention
        (mid-forehead to chin); it may extend past the frame edge. Rounded to ints, or with
        ``exact`` floats that follow the image's sub-pixel motion."""
        return self._renderer.face_box(self.motion(i), exact)

    def skin_mask(self, i: int) -> np.ndarray:
        """Pulsating-skin weights of frame i: float32 (H, W) in [0, 1]."""
        return self._renderer.skin_mask(self.motion(i), self.expression(i))

    # -- heart-rate truth --------------------------------------------------------------------
    def hr_at(self, t_s: float | np.ndarray) -> np.ndarray:
        """True instantaneous heart rate, bpm (float64, shape of ``t_s``): 60 / RR of the
        generated beats, placed at interval midpoints and interpolated (HRV included)."""
        return physio.hr_from_beats(self._all_beats, t_s)

    def hr_target_at(self, t_s: float | np.ndarray) -> np.ndarray:
        """The programmed heart-rate trajectory, bpm, before heart-rate variability."""
        return self._hr_target(np.asarray(t_s, dtype=np.float64))

    def mean_hr_bpm(self, t0_s: float, t1_s: float) -> float:
        """Mean heart rate over [t0_s, t1_s), bpm: beats in the window per unit time, counted
        fractionally at the edges (what a spectral estimator over that window should find).

        Raises:
            BadInputError: t1_s <= t0_s.
        """
        if not t1_s > t0_s:
            raise BadInputError(f"need t1_s > t0_s, got {t0_s}, {t1_s}")
        # Fractional beat count = difference of the beat phase (interpolated beat number).
        b = self._all_beats
        k = np.arange(b.size, dtype=np.float64)
        phase = np.interp([t0_s, t1_s], b, k)
        return float(60.0 * (phase[1] - phase[0]) / (t1_s - t0_s))


def synth_session(config: SimConfig | None = None, **overrides: object) -> SyntheticSession:
    """Build a synthetic session.

    Args:
        config: the settings (default ``SimConfig()``).
        **overrides: fields to change on ``config``, e.g. ``synth_session(hr_bpm=90)``.

    Returns:
        A :class:`SyntheticSession`; its signals are computed now, its frames on demand.

    Raises:
        ConfigError: an unknown field or a setting out of range.
    """
    config = SimConfig() if config is None else config
    if overrides:
        known = {f.name for f in fields(SimConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown SimConfig fields: {', '.join(unknown)}")
        config = replace(config, **overrides)  # type: ignore[arg-type]
    return SyntheticSession(config)
