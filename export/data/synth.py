"""The synthetic, subject-structured emotion dataset.

Subjects, each with their own face, physiology and idiosyncrasies, watch trials whose
self-reported valence and arousal (1-9) drive the simulated face and body
(:mod:`firmware_bridge.sim`): valence mostly the facial expression, arousal mostly the
physiology (heart rate up, HRV down, more and larger skin-conductance responses, a higher
tonic level), each with noise and a small cross-talk, so that a model fusing face and
physiology should beat either alone. Each trial gives one window (its last 60 s), cut by
:func:`export.data.preprocess.windows_from_session` with the runtime's own kernels.

The generative model and its references are in docs/DATASET.md. Face boxes come from the
generator's truth; the device finds them with the Haar detector instead.

Determinism: every subject and trial draws from its own ``numpy.random.default_rng`` stream
derived from ``seed``, so the dataset is identical whatever the number of workers.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.affect import identity_split
from edge.spec import DEFAULT, Preprocessing
from export.data.preprocess import EmotionWindows, Window, windows_from_session
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.sim import FaceAppearance, SimConfig, synth_session
from firmware_bridge.sim.faces import MONK_SKIN_TONES, face_library
from firmware_bridge.sim.physio import smooth_random

__all__ = ["GENERATOR_VERSION", "SYNTH_PRESETS", "SynthConfig", "SynthTrial", "build_synth_dataset", "synth_trials",
           "with_overrides"]

log = logging.getLogger(__name__)

#: Bumped whenever the generator changes what it produces: part of the cache key.
#: 3: subjects never take a real-face test identity.
#: 4: the renderer's camera auto-exposure; 48 subjects in the default preset.
GENERATOR_VERSION = "emofuse-synth/4"

#: Named sizes: ``default`` is the contract's dataset; ``tiny`` is for tests (one trial per
#: valence x arousal quadrant, four subjects); ``small`` for quick experiments.
SYNTH_PRESETS: dict[str, dict[str, int]] = {
    "default": {"n_subjects": 48, "trials_per_subject": 8},
    "small": {"n_subjects": 8, "trials_per_subject": 8},
    "tiny": {"n_subjects": 4, "trials_per_subject": 4},
}


@dataclass(frozen=True)
class SynthConfig:
    """Every setting of the synthetic dataset (see docs/DATASET.md for the model).

    Size and seeds:
        n_subjects, trials_per_subject: dataset size (labels balanced per subject over the
            four valence x arousal quadrants).
        seed: seeds everything.

    Trial timing and camera:
        window_s: analysed window, s (the contract's 60 s).
        lead_in_s: simulated before the window so filters and the resampler have data at
            its start, s.
        frame_size: (width, height) px; small, the face filling most of it.
        face_scale: mean face-box height / frame height.

    Identity and skin tone:
        faces: a folder of face photos (``firmware_bridge.sim.faces.FaceLibrary``: e.g.
            ``../shared/data/faces``); each subject gets its own identity (distinct while there
            are enough, a seeded permutation of the folder's neutral identities outside the
            real-face test split, :func:`edge.affect.identity_split`). None = every
            subject is the astronaut photo. Either way subjects' skin tones are spread over the
            10 Monk tones (a seeded rotation: tone = 1 + (subject + offset) mod 10).

    Labels (self-reports 1-9, high when > 5):
        low_range, high_range: uniform ranges of the low and high scores. Latent intensities
            are z = (score - 5) / 4 in [-1, 1].

    Face (valence mostly):
        face_valence_gain: expression valence per unit z_valence.
        face_arousal_gain: expression arousal (brows, eyes) per unit z_arousal (cross-talk).
        expression_noise: sd of the trial's shown-vs-felt valence mismatch.
        expression_wander: sd of the slow within-trial wander of the expression.
        rest_expression_sd: sd of the subject's resting expression (a cheerful or glum face
            at rest: an idiosyncrasy that tells nothing about the trial).

    Physiology (arousal mostly):
        hr_arousal_bpm: heart-rate change per unit z_arousal (scaled by the subject's
            reactivity).
        hr_valence_bpm: cross-talk: heart-rate change per unit z_valence (pleasant stimuli
            accelerate, unpleasant decelerate; Lang et al. 1993).
        hr_trial_sd_bpm: sd of a trial's heart-rate offset unrelated to the labels.
        hrv_arousal_frac: SDNN falls by this fraction per unit z_arousal.
        scr_rate_per_min: subjects' base SCR rate range (uniform), per minute.
        scr_arousal_log: SCR rate multiplied by exp(this x z_arousal).
        scr_amp_arousal_log: SCR amplitude multiplied by exp(this x z_arousal).
        tonic_arousal_frac: tonic EDA rises by this fraction per unit z_arousal.
    """

    n_subjects: int = 24
    trials_per_subject: int = 8
    seed: int = 0
    window_s: float = 60.0
    lead_in_s: float = 2.0
    frame_size: tuple[int, int] = (128, 128)
    face_scale: float = 0.55
    low_range: tuple[float, float] = (1.0, 4.8)
    high_range: tuple[float, float] = (5.2, 9.0)
    face_valence_gain: float = 0.85
    face_arousal_gain: float = 0.3
    expression_noise: float = 0.3
    expression_wander: float = 0.15
    rest_expression_sd: float = 0.25
    hr_arousal_bpm: float = 8.0
    hr_valence_bpm: float = 2.0
    hr_trial_sd_bpm: float = 3.0
    hrv_arousal_frac: float = 0.3
    scr_rate_per_min: tuple[float, float] = (1.0, 3.0)
    scr_arousal_log: float = 0.8
    scr_amp_arousal_log: float = 0.5
    tonic_arousal_frac: float = 0.2
    faces: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "frame_size", tuple(int(v) for v in self.frame_size))
            object.__setattr__(self, "low_range", tuple(float(v) for v in self.low_range))
            object.__setattr__(self, "high_range", tuple(float(v) for v in self.high_range))
            object.__setattr__(self, "scr_rate_per_min", tuple(float(v) for v in self.scr_rate_per_min))
            if self.faces is not None:
                object.__setattr__(self, "faces", str(self.faces))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"SynthConfig: malformed setting ({exc})") from exc
        if int(self.n_subjects) != self.n_subjects or self.n_subjects < 1:
            raise ConfigError(f"n_subjects must be an integer >= 1, got {self.n_subjects}")
        if int(self.trials_per_subject) != self.trials_per_subject or self.trials_per_subject < 1:
            raise ConfigError(f"trials_per_subject must be an integer >= 1, got {self.trials_per_subject}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed}")
        if self.window_s != DEFAULT.window_s:
            raise ConfigError(f"window_s must be the preprocessing window, {DEFAULT.window_s} s")
        low_ok = 1.0 <= self.low_range[0] < self.low_range[1] <= 5.0
        if not low_ok or not 5.0 < self.high_range[0] < self.high_range[1] <= 9.0:
            raise ConfigError("low_range must lie within 1-5 and high_range within (5, 9], each (low, high)")
        if not 0 <= self.lead_in_s <= 30:
            raise ConfigError(f"lead_in_s must be within 0-30 s, got {self.lead_in_s}")
        if not 0.2 <= self.face_scale <= 0.8:
            raise ConfigError(f"face_scale must be within 0.2-0.8, got {self.face_scale}")
        if not 0 <= self.scr_rate_per_min[0] <= self.scr_rate_per_min[1] <= 20:
            raise ConfigError(f"scr_rate_per_min must be (low, high) within 0-20, got {self.scr_rate_per_min}")


@dataclass(frozen=True)
class SynthTrial:
    """One trial: its labels, the simulator settings that realise them, and the truth.

    Attributes:
        subject, trial: ids (0-based).
        valence, arousal: self-reports, 1-9.
        sim: the :class:`firmware_bridge.sim.SimConfig` of the trial (window = its last
            ``window_s`` seconds).
        truth: JSON-ready dict of the latent quantities (programmed heart rate, SCR count, mean
            expression intensities, ...), for tests and analysis only.
    """

    subject: int
    trial: int
    valence: float
    arousal: float
    sim: Any
    truth: dict


def _identity_and_tone(cfg: SynthConfig, subject: int) -> tuple[int | None, int]:
    """A subject's identity index in ``cfg.faces`` (None: the astronaut) and Monk skin tone."""
    rng = np.random.default_rng([cfg.seed, 0x1DE47])
    offset = int(rng.integers(10))
    tone = 1 + (subject + offset) % 10
    if cfg.faces is None:
        return None, tone

    lib = face_library(cfg.faces)
    # Identities of the real-face test split (edge.affect.identity_split) never become synthetic
    # subjects: a model trained on the corpus must not have seen the people it is scored on.
    pool = [i for i, (_, ident) in enumerate(lib.entries) if identity_split(ident) != "test"] or list(range(len(lib)))
    # A seeded permutation: distinct identities for up to len(pool) subjects, then they repeat.
    return int(pool[int(rng.permutation(len(pool))[subject % len(pool)])]), tone


#: Least red / blue ratio of a subject's skin after its per-channel shift (Monk 1's swatch
#: has 1.08; Monk 3-10 are 1.19-1.86).
MIN_SKIN_RED_BLUE = 1.06


def _subject_params(cfg: SynthConfig, subject: int) -> dict:
    """A subject's fixed traits: identity, skin tone, appearance, physiology baselines,
    reactivity, expressivity."""
    rng = np.random.default_rng([cfg.seed, 0x5B1EC7, subject])
    identity, tone = _identity_and_tone(cfg, subject)
    # Skin: the Monk tone sets lightness and hue (SimConfig.skin_tone); a small per-channel
    # shift on top makes two subjects of one tone differ. (Drawn as before, so the other
    # traits keep their values.)
    rng.uniform(0.88, 1.1)
    skin = [float(np.clip(g, 0.9, 1.1)) for g in (1.0 + rng.normal(0, 0.03, 3))]
    # The shift keeps the face a skin colour: red above blue by at least MIN_SKIN_RED_BLUE. The
    # lightest swatches are nearly neutral (Monk 1: R / B = 1.08), and a bluish shift turned a
    # face grey (Cr = Cb), a colour no camera shows skin in (skin's redness is blood's).
    r, _, b = MONK_SKIN_TONES[tone]
    if skin[0] * r < MIN_SKIN_RED_BLUE * skin[2] * b:
        skin[2] = skin[0] * r / (MIN_SKIN_RED_BLUE * b)
    skin = tuple(skin)
    appearance = FaceAppearance(
        skin_tone_rgb=skin,
        wall_tone_rgb=tuple(float(v) for v in rng.uniform(0.7, 1.3, 3)),
        width_scale=float(rng.uniform(0.92, 1.08)),
        height_scale=float(rng.uniform(0.94, 1.06)),
        eye_spacing=float(rng.uniform(-0.8, 0.8)),
        mouth_width=float(rng.uniform(-0.8, 0.8)),
        brow_height=float(rng.uniform(-0.6, 0.6)),
    )
    return {
        "identity": identity,
        "skin_tone": tone,
        "appearance": appearance,
        "face_scale": float(cfg.face_scale * rng.uniform(0.93, 1.07)),
        "face_center": (float(0.5 + rng.normal(0, 0.02)), float(0.5 + rng.normal(0, 0.02))),
        # Expressivity: log-normal around 1 (some people barely show what they feel).
        "expressivity": float(np.clip(np.exp(rng.normal(0.0, 0.35)), 0.4, 1.8)),
        "rest_valence": float(np.clip(rng.normal(0.0, cfg.rest_expression_sd), -0.6, 0.6)),
        "rest_arousal": float(np.clip(rng.normal(0.0, 0.15), -0.4, 0.4)),
        # Resting physiology (healthy adults; Nunan et al. 2010 for HRV, Dawson et al. 2007
        # for the skin-conductance level).
        "hr_bpm": float(rng.uniform(58.0, 86.0)),
        "hrv_sdnn_ms": float(rng.uniform(30.0, 70.0)),
        "resp_rate_hz": float(rng.uniform(0.2, 0.3)),
        "eda_tonic_us": float(np.clip(5.0 * np.exp(rng.normal(0.0, 0.45)), 1.5, 20.0)),
        "scr_rate_per_min": float(rng.uniform(*cfg.scr_rate_per_min)),
        "scr_amp_us": float(np.clip(0.3 * np.exp(rng.normal(0.0, 0.4)), 0.08, 1.2)),
        "reactivity": float(rng.uniform(0.6, 1.4)),
        # Idiosyncrasies of the sensors on this person: PPG pulse arrival time and noise,
        # facial pulse strength.
        "ppg_delay_s": float(rng.uniform(0.15, 0.3)),
        "ppg_noise": float(rng.uniform(0.01, 0.05)),
        "pulse_amplitude": float(rng.uniform(0.0025, 0.0045)),
    }


def _labels(cfg: SynthConfig, subject: int) -> list[tuple[float, float]]:
    """Balanced (valence, arousal) scores of a subject's trials, in a random order."""
    rng = np.random.default_rng([cfg.seed, 0x1ABE1, subject])
    quadrants = [(vh, ah) for vh in (0, 1) for ah in (0, 1)]
    n = cfg.trials_per_subject
    # Whole rounds of the four quadrants, the remainder drawn without repetition.
    picks = quadrants * (n // 4) + [quadrants[i] for i in rng.permutation(4)[: n % 4]]
    picks = [picks[i] for i in rng.permutation(n)]

    def score(high: int) -> float:
        lo, hi = cfg.high_range if high else cfg.low_range
        return float(np.round(rng.uniform(lo, hi), 2))

    return [(score(vh), score(ah)) for vh, ah in picks]


def _smooth(rng: np.random.Generator, t: np.ndarray, band_hz: tuple[float, float]) -> np.ndarray:
    return smooth_random(rng, band_hz)(t)


def synth_trials(config: SynthConfig | None = None) -> list[SynthTrial]:
    """The trials of a synthetic dataset, with their simulator settings (nothing rendered).

    Args:
        config: the dataset settings (default ``SynthConfig()``).

    Returns:
        ``n_subjects * trials_per_subject`` :class:`SynthTrial`, subject-major.

    Raises:
        ConfigError: an invalid setting.
    """
    cfg = SynthConfig() if config is None else config
    duration = cfg.lead_in_s + cfg.window_s
    trials = []
    for subject in range(cfg.n_subjects):
        sp = _subject_params(cfg, subject)
        for trial, (valence, arousal) in enumerate(_labels(cfg, subject)):
            rng = np.random.default_rng([cfg.seed, 0x7121A1, subject, trial])
            zv, za = (valence - 5.0) / 4.0, (arousal - 5.0) / 4.0

            # Face: the shown valence is the felt one times a gain, plus a trial-level
            # mismatch, on top of the subject's resting face; it comes and goes in bouts
            # (an envelope) and wanders slowly. Arousal shows weakly in brows and eyes.
            shown_v = cfg.face_valence_gain * zv + rng.normal(0.0, cfg.expression_noise)
            shown_a = cfg.face_arousal_gain * za + rng.normal(0.0, 0.5 * cfg.expression_noise)
            tk = np.arange(0.0, duration + 1.0, 1.0)
            envelope = np.clip(0.7 + 0.3 * _smooth(rng, tk, (0.02, 0.2)), 0.3, 1.0)
            v_knots = np.clip(sp["rest_valence"] + shown_v * envelope
                              + cfg.expression_wander * _smooth(rng, tk, (0.02, 0.3)), -1.0, 1.0)
            a_knots = np.clip(sp["rest_arousal"] + shown_a * envelope
                              + 0.5 * cfg.expression_wander * _smooth(rng, tk, (0.02, 0.3)), -1.0, 1.0)

            # Heart: arousal raises the rate (scaled by reactivity), valence a little; a
            # trial offset and a slow drift (knots every 10 s) tell nothing about the labels.
            hr0 = (sp["hr_bpm"] + sp["reactivity"] * cfg.hr_arousal_bpm * za + cfg.hr_valence_bpm * zv
                   + rng.normal(0.0, cfg.hr_trial_sd_bpm))
            hk = np.arange(0.0, duration + 10.0, 10.0)
            hr_knots = np.clip(hr0 + rng.normal(0.0, 1.5, hk.size), 45.0, 140.0)
            sdnn = float(np.clip(sp["hrv_sdnn_ms"] * (1.0 - cfg.hrv_arousal_frac * za) * np.exp(rng.normal(0, 0.1)),
                                 8.0, 150.0))

            # Skin: SCRs as a Poisson process whose rate and size grow with arousal (Dawson
            # et al. 2007; Boucsein 2012), on a tonic level that rises with arousal.
            rate = sp["scr_rate_per_min"] * math.exp(cfg.scr_arousal_log * za)
            n_scr = int(rng.poisson(rate * (duration + 10.0) / 60.0))
            onsets = np.sort(rng.uniform(-10.0, duration, n_scr))
            amps = np.clip(sp["scr_amp_us"] * math.exp(cfg.scr_amp_arousal_log * za)
                           * np.exp(rng.normal(0.0, 0.4, n_scr)), 0.02, 5.0)
            tonic = float(sp["eda_tonic_us"] * (1.0 + cfg.tonic_arousal_frac * za) * np.exp(rng.normal(0, 0.08)))

            sim = SimConfig(
                duration_s=duration,
                seed=int(rng.integers(2**31)),
                hr_bpm=tuple((float(t), float(b)) for t, b in zip(hk, hr_knots)),
                hrv_sdnn_ms=sdnn,
                resp_rate_hz=sp["resp_rate_hz"],
                ppg_delay_s=sp["ppg_delay_s"],
                ppg_noise=sp["ppg_noise"],
                eda_tonic_us=tonic,
                eda_drift_us=0.05 * tonic,
                scr_onsets_s=tuple(float(v) for v in onsets),
                scr_amplitudes_us=tuple(float(v) for v in amps) if n_scr else 0.5,
                eda_noise_us=0.01,
                frame_size=cfg.frame_size,
                face_scale=sp["face_scale"],
                face_center=sp["face_center"],
                pulse_amplitude=sp["pulse_amplitude"],
                motion_px=float(rng.uniform(0.2, 1.2)),
                motion_scale_pct=0.5,
                illumination_pct=float(rng.uniform(1.0, 5.0)),
                noise_sigma=float(rng.uniform(1.5, 3.0)),
                expression_valence=tuple((float(t), float(v)) for t, v in zip(tk, v_knots)),
                expression_arousal=tuple((float(t), float(v)) for t, v in zip(tk, a_knots)),
                expressivity=sp["expressivity"],
                face_appearance=sp["appearance"],
                faces=cfg.faces,
                identity=sp["identity"],
                skin_tone=sp["skin_tone"],
            )
            in_window = (onsets >= cfg.lead_in_s) & (onsets < duration)
            truth = {
                "hr_bpm": float(np.mean(hr_knots)),
                "hrv_sdnn_ms": sdnn,
                "scr_in_window": int(in_window.sum()),
                "eda_tonic_us": tonic,
                "expression_valence": float(np.mean(v_knots) * sp["expressivity"]),
                "expression_arousal": float(np.mean(a_knots) * sp["expressivity"]),
                "expressivity": sp["expressivity"],
                "skin_tone": sp["skin_tone"],
                "identity_index": sp["identity"],
            }
            trials.append(SynthTrial(subject, trial, valence, arousal, sim, truth))
    return trials


def _init_worker() -> None:
    # One OpenCV thread per worker process: the pool already uses the cores, and OpenCV's
    # own threads would only contend with it.
    import cv2

    cv2.setNumThreads(1)


def _render_trial(item: tuple[SynthTrial, dict]) -> Window:
    trial, preprocessing = item
    return windows_from_session(synth_session(trial.sim), preprocessing, t_end_s=trial.sim.duration_s)


def _cache_key(cfg: SynthConfig, preprocessing: Preprocessing) -> str:
    blob = json.dumps({"generator": GENERATOR_VERSION, "config": asdict(cfg), "preprocessing": preprocessing.to_dict()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_synth_dataset(
    n_subjects: int | None = None,
    trials_per_subject: int | None = None,
    seed: int = 0,
    workers: int = 1,
    cache_dir: str | Path | None = None,
    *,
    preset: str = "default",
    faces: str | Path | None = None,
    config: SynthConfig | None = None,
    preprocessing: Preprocessing | None = None,
    progress: bool = False,
) -> EmotionWindows:
    """Build (or load from the cache) the synthetic emotion dataset.

    Args:
        n_subjects: number of subjects (default: the preset's, 48 for ``"default"``).
        trials_per_subject: trials per subject (default: the preset's, 8 for ``"default"``).
        seed: seeds subjects, labels, trials and rendering; same arguments = same bytes.
        workers: processes rendering trials in parallel (1 = in this process). The result
            does not depend on it.
        cache_dir: if given, the dataset is read from / written to
            ``cache_dir/synth-<hash>.npz``, the hash covering the generator version, every
            setting and the preprocessing record.
        preset: a key of :data:`SYNTH_PRESETS` (``"default"``, ``"small"``, ``"tiny"``).
        faces: a folder of face photos giving each subject an identity (``SynthConfig.faces``);
            None = the astronaut for everyone (skin tones still vary).
        config: full settings; when given, n_subjects / trials_per_subject / seed / preset /
            faces are ignored.
        preprocessing: the model-input settings (default :data:`edge.spec.DEFAULT`), e.g. with another
            ``face.crop_size`` for a larger face encoder (:func:`export.train.preprocessing_for`).
        progress: show a tqdm progress bar.

    Returns:
        :class:`~export.data.preprocess.EmotionWindows` with one window per trial, its
        ``meta`` holding the generator config, preprocessing, seeds, per-subject traits and
        per-trial truth.

    Raises:
        ConfigError: an unknown preset or invalid setting, or a faces folder that is missing or
            holds no photo.

    Method: see docs/DATASET.md (generative model) and :mod:`export.data.preprocess`.
    """
    if config is None:
        if preset not in SYNTH_PRESETS:
            raise ConfigError(f"unknown synthetic preset {preset!r}; choose one of {sorted(SYNTH_PRESETS)}")
        size = dict(SYNTH_PRESETS[preset])
        if n_subjects is not None:
            size["n_subjects"] = n_subjects
        if trials_per_subject is not None:
            size["trials_per_subject"] = trials_per_subject
        config = SynthConfig(seed=seed, faces=None if faces is None else str(faces), **size)
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    preprocessing = DEFAULT if preprocessing is None else preprocessing
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"synth-{_cache_key(config, preprocessing)}.npz"
        if cache_path.is_file():
            try:
                data = EmotionWindows.load(cache_path)
                log.info("synthetic dataset loaded from cache %s", cache_path)
                return data
            except BadInputError as exc:
                log.warning("ignoring unreadable cache file (%s); rebuilding", exc)

    trials = synth_trials(config)
    started = time.perf_counter()
    items = [(t, preprocessing) for t in trials]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="synthetic trials", unit="trial")
    windows: list[Window] = []
    if workers == 1:
        for item in items:
            windows.append(_render_trial(item))
            if bar is not None:
                bar.update()
    else:
        # spawn, not fork: the caller may hold torch or OpenMP threads, which fork can deadlock.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=int(workers), mp_context=ctx, initializer=_init_worker) as pool:
            for window in pool.map(_render_trial, items, chunksize=max(1, len(items) // (8 * int(workers)))):
                windows.append(window)
                if bar is not None:
                    bar.update()
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - started
    log.info("synthetic dataset: %d trials rendered in %.1f s with %d worker(s)", len(items), elapsed, workers)

    subjects = sorted({t.subject for t in trials})
    coverage = _coverage(windows, trials)
    if coverage["face"] < MIN_FACE_COVERAGE:
        # The device's own tracker and pulse rules cut these windows: a face it cannot find, or
        # a pulse window it cannot form, trains the model on absent inputs instead.
        log.warning("synthetic dataset: only %.0f %% of windows have a face and %.0f %% a pulse image; subjects "
                    "without a face in any window: %s", 100 * coverage["face"], 100 * coverage["pulse"],
                    coverage["subjects_without_face"] or "none")
    meta = {
        "source": "synthetic",
        "generator": GENERATOR_VERSION,
        "config": asdict(config),
        "preprocessing": preprocessing.to_dict(),
        "seeds": {"seed": config.seed},
        "face_boxes": f"the record's face.box method ({preprocessing.face.box}), as the device finds them",
        "coverage": coverage,
        "subjects": [_subject_summary(config, s) for s in subjects],
        "truth": [dict(t.truth, subject=t.subject, trial=t.trial) for t in trials],
        "build_s": round(elapsed, 2),
    }
    data = EmotionWindows.from_windows(
        windows, [t.valence for t in trials], [t.arousal for t in trials], [t.subject for t in trials],
        [t.trial for t in trials], meta,
    )
    if cache_path is not None:
        data.save(cache_path)
    return data


#: Share of a synthetic dataset's windows that should hold a face (the device's tracker found
#: it in every sampled frame and the pulse window formed); below it the build warns.
MIN_FACE_COVERAGE = 0.9


def _coverage(windows: list[Window], trials: list[SynthTrial]) -> dict:
    """Which windows hold a face and a pulse image, overall and by skin tone."""
    face = np.array([bool(w.face_present) for w in windows])
    pulse = np.array([bool(np.any(w.tfr)) for w in windows])
    tones = np.array([int(t.truth.get("skin_tone", 0)) for t in trials])
    subj = np.array([t.subject for t in trials])
    by_tone = {str(k): {"face": round(float(face[tones == k].mean()), 3), "pulse": round(float(pulse[tones == k].mean()), 3)}
               for k in sorted(set(tones.tolist()))}
    without = sorted(int(s) for s in np.unique(subj) if not face[subj == s].any())
    return {"face": round(float(face.mean()), 4) if face.size else 0.0,
            "pulse": round(float(pulse.mean()), 4) if pulse.size else 0.0,
            "by_skin_tone": by_tone, "subjects_without_face": without}


def _subject_summary(cfg: SynthConfig, subject: int) -> dict:
    sp = _subject_params(cfg, subject)
    out = {k: v for k, v in sp.items() if k != "appearance"}
    out["appearance"] = asdict(sp["appearance"])
    out["subject"] = subject
    if cfg.faces is None:
        out["identity"], out["photo"] = "astronaut", "skimage.data.astronaut"
    else:
        out["photo"], out["identity"] = face_library(cfg.faces).entries[sp["identity"]]
    out["identity_index"] = sp["identity"]
    out["skin_tone_scale"] = "Monk Skin Tone (1 lightest - 10 darkest)"
    return out


def with_overrides(config: SynthConfig, **overrides: Any) -> SynthConfig:
    """A copy of ``config`` with some fields changed (e.g. from a command line's
    ``synth:subjects=12,...``).

    Raises:
        ConfigError: an unknown field or invalid value.
    """
    unknown = sorted(set(overrides) - {f.name for f in fields(SynthConfig)})
    if unknown:
        raise ConfigError(f"unknown SynthConfig fields: {', '.join(unknown)}")
    return replace(config, **overrides)
