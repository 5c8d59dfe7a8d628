"""Subject-independent training and evaluation of the emotion models.

Protocol (what :func:`train` does):

1. Cross-validation over subjects: ``loso`` (leave one subject out) or ``kfold-subject`` (k
   folds of whole subjects, seeded). A test subject is never seen in any way while its fold
   trains: the facial encoder is MAE-pretrained on the fold's training subjects' clips only,
   and early stopping watches a validation split of the *training* subjects
   (``val_fraction`` of them, at least one).
2. Per fold: train with AdamW on the model's trainable parameters, keep the weights of the
   epoch with the lowest validation loss (valence + arousal cross-entropy), stop after
   ``patience`` epochs without improvement, and score the held-out subjects: accuracy and
   macro-F1 for valence and arousal. Metrics are reported as mean and standard deviation over
   folds.
3. The checkpoint (``checkpoint.pt``) is a *final model trained on all subjects* after the
   cross-validation, for the median of the folds' best epoch counts, with an encoder
   pretrained on all subjects' clips. Its ``metrics`` are the cross-validation estimates
   (the final model itself has no held-out data).

Everything is seeded (Python, NumPy, torch) from ``seed``; the same command gives the same
numbers on the same machine (CPU). A GPU is used when present and recorded. Training-time
augmentation is off unless asked for (:func:`augment_batch`; it hurt on the synthetic set).
Measured results and the commands that reproduce them: docs/RESULTS.md.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.preprocess import modality_flags_batch
from edge.spec import DEFAULT, Preprocessing
from export.models import (
    CHECKPOINT_FORMAT, LABELS, MODELS, USES_FACE_ENCODER, EmotionModel, FaceEncoder,
    build_model, count_flops, count_parameters, encoder_preset, face_feats_from_crops,
)
from export.faces.data import sampling_weights
from export.mixed import fit_temperature, mix_inputs, still_inputs, still_training_set
from export.pretrain import clips_for_pretraining, load_face_encoder, pretrain_face_encoder, save_face_encoder
from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)

PROTOCOLS = ("loso", "kfold-subject")
TASKS = ("valence", "arousal")
#: Held-out windows re-scored with part of their inputs removed (present flags zeroed), as the
#: runtime meets them: no contact sensor (face + pulse), and a sensor's first ~54 s (its levels,
#: not yet its rows). Suffix of the out-of-fold keys -> flag columns (edge.preprocess.MODALITIES).
REDUCED_CASES = {"_no_contact": (2, 3, 4, 5), "_levels_only": (2, 3)}


@dataclass
class TrainConfig:
    """Settings of one training run (all recorded in the checkpoint).

    Attributes:
        model: registry name (``export.models.MODELS``).
        protocol: ``"loso"`` or ``"kfold-subject"``.
        folds: folds for ``kfold-subject``.
        epochs: maximum epochs per fit.
        patience: early-stopping patience in epochs.
        batch_size, lr, weight_decay: AdamW settings.
        val_fraction: fraction of the training subjects held out for early stopping.
        pretrain_steps: MAE steps of the facial encoder per fold (models that use it).
        seed: global seed.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        threads: torch CPU threads (0 = torch's default). One thread is faster when other
            processes share the cores: torch's threads then wait on each other.
        final: also train the final all-subject model and write the checkpoint.
        augment: random training-time augmentation (:func:`augment_batch`).
        model_config: extra constructor arguments for the model.
        encoder: face encoder size, a key of ``export.models.ENCODER_PRESETS`` (``tiny``, the
            contract's 32x32 crops; ``small``, 64x64 crops, the default bundle's). The
            training windows must be cut with the same crop side
            (:func:`preprocessing_for`).
        progress: tqdm bars.
        face_encoder: path of a pretrained face encoder (``face_encoder.pt``, e.g. from
            ``python3 -m export.faces.train`` on real photos) used, frozen, in every fold and in
            the final model instead of MAE-pretraining one on the synthetic clips.
        stills: a faces folder (``labels.csv`` + ``images/``) whose training identities'
            photos join the final model's training as face-only samples (models with a
            ``present`` input; :mod:`export.mixed`), and whose validation identities fit its
            softmax temperatures.
        stills_per_epoch: still samples drawn per epoch (identity- and class-balanced).
    """

    model: str
    protocol: str = "kfold-subject"
    folds: int = 6
    epochs: int = 40
    patience: int = 8
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    val_fraction: float = 0.2
    pretrain_steps: int = 1000
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    final: bool = True
    augment: bool = False
    model_config: dict = field(default_factory=dict)
    encoder: str = "tiny"
    progress: bool = True
    face_encoder: str = ""
    stills: str = ""
    stills_per_epoch: int = 1024

    def validate(self) -> None:
        """Raises ConfigError for an unknown model/protocol or out-of-range numbers."""
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose from {', '.join(sorted(MODELS))}")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1 or self.folds < 2:
            raise ConfigError("epochs, patience and batch size must be >= 1 and folds >= 2")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr <= 0 or self.pretrain_steps < 1 or self.threads < 0:
            raise ConfigError("lr must be > 0, pretrain_steps >= 1 and threads >= 0")
        encoder_preset(self.encoder)
        if self.stills and "present" not in MODELS[self.model].input_names:
            raise ConfigError(f"--stills needs a model with a 'present' input (promptfusion_mm), not {self.model!r}")
        if self.face_encoder and not Path(self.face_encoder).is_file():
            raise BadInputError(f"face encoder {self.face_encoder} does not exist")

    def encoder_config(self) -> dict:
        """FaceEncoder keyword arguments of ``encoder`` (JSON-ready)."""
        cfg = encoder_preset(self.encoder)
        cfg["tubelet"] = list(cfg["tubelet"])
        return cfg


def preprocessing_for(encoder: str = "tiny") -> Preprocessing:
    """The model-input settings for a face encoder size: :data:`edge.spec.DEFAULT` with
    ``face.crop_size`` set to the encoder's crop side. Raises ConfigError for an unknown size."""
    return DEFAULT.replace(**{"face.crop_size": int(encoder_preset(encoder)["size"])})


def check_crop_size(windows, cfg: "TrainConfig") -> None:
    """Raises ConfigError when the windows' face crops do not fit ``cfg.encoder``."""
    if cfg.model not in USES_FACE_ENCODER:
        return
    want = int(encoder_preset(cfg.encoder)["size"])
    got = int(np.asarray(windows.face_clip).shape[-2])
    if got != want:
        raise ConfigError(f"the windows hold {got}x{got} face crops but encoder {cfg.encoder!r} reads "
                          f"{want}x{want}: cut them with export.train.preprocessing_for({cfg.encoder!r})")


# ----------------------------------------------------------------------------- utilities

def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU (logged); raises ConfigError for cuda without one."""
    if name == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        log.info("training on %s", dev)
        return dev
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but torch sees no CUDA GPU")
    return torch.device(name)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = 2) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class absent from
    both truth and prediction counts as F1 = 1 (nothing to get wrong), as scikit-learn's
    ``zero_division=1``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    scores = []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        scores.append(1.0 if denom == 0 else 2.0 * tp / denom)
    return float(np.mean(scores))


def classification_metrics(targets: dict, preds: dict) -> dict:
    """{"valence_acc", "valence_f1", "arousal_acc", "arousal_f1"} from int class arrays."""
    out = {}
    for task in TASKS:
        y, p = np.asarray(targets[task]), np.asarray(preds[task])
        out[f"{task}_acc"] = float(np.mean(y == p)) if y.size else float("nan")
        out[f"{task}_f1"] = macro_f1(y, p)
    return out


def summarise_folds(folds: list[dict]) -> dict:
    """Mean and (population) standard deviation over folds of every metric."""
    keys = [k for k in folds[0] if k.endswith(("_acc", "_f1"))]
    return {k: {"mean": float(np.mean([f[k] for f in folds])), "std": float(np.std([f[k] for f in folds]))}
            for k in keys}


def subject_splits(subjects: np.ndarray, protocol: str, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, test_idx) window index pairs per fold; every subject is tested exactly once.

    Uses the dataset package's ``loso_splits`` / ``kfold_subject_splits``.
    """
    from export.data import kfold_subject_splits, loso_splits

    if protocol == "loso":
        return list(loso_splits(subjects))
    n_subj = np.unique(subjects).size
    if folds > n_subj:
        raise ConfigError(f"{folds} folds but only {n_subj} subjects")
    return list(kfold_subject_splits(subjects, folds, seed))


def validation_split(subjects: np.ndarray, train_idx: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training windows by subject into (fit_idx, val_idx): ``fraction`` of the training
    subjects (at least one, leaving at least one) go to validation."""
    subj = np.unique(subjects[train_idx])
    if subj.size < 2:
        raise ConfigError("early stopping needs at least 2 training subjects")
    n_val = min(max(1, int(round(fraction * subj.size))), subj.size - 1)
    rng = np.random.default_rng(seed)
    val_subj = rng.choice(subj, n_val, replace=False)
    is_val = np.isin(subjects[train_idx], val_subj)
    return train_idx[~is_val], train_idx[is_val]


def data_fingerprint(windows) -> str:
    """Short hash of a dataset's meta and label arrays (keys caches of pretrained encoders)."""
    h = hashlib.sha256()
    # Build timings change between identical builds; they must not change the key.
    meta = {k: v for k, v in windows.meta.items() if k not in ("build_s",)}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name in ("subject", "trial", "valence", "arousal"):
        h.update(np.ascontiguousarray(getattr(windows, name)).tobytes())
    h.update(np.ascontiguousarray(windows.face_clip[:, 0, ::8, ::8]).tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- data

CORPUS_KINDS = ("deap", "mahnob", "amigos")
_SYNTH_KEYS = {"preset": str, "subjects": int, "trials": int, "seed": int, "faces": str}


def parse_data_spec(spec: str) -> tuple[str, dict | str]:
    """Split a ``--data`` value into (kind, options).

    ``synth`` / ``synth:preset=tiny,subjects=6,trials=4,seed=1`` -> ("synth", {...});
    ``deap:DIR`` (also ``mahnob``, ``amigos``) -> (kind, "DIR"); ``PATH.npz`` -> ("npz", "PATH.npz").

    Raises:
        ConfigError: unknown kind, option or malformed value.
    """
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    if spec.endswith(".npz") and kind not in ("synth", *CORPUS_KINDS):
        return "npz", spec
    if kind == "synth":
        opts: dict = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = item.partition("=")
            if not eq or key not in _SYNTH_KEYS:
                raise ConfigError(f"bad synth option {item!r}; use {', '.join(k + '=' for k in _SYNTH_KEYS)}")
            try:
                opts[key] = _SYNTH_KEYS[key](value)
            except ValueError as exc:
                raise ConfigError(f"bad value for synth option {key}: {value!r}") from exc
        return "synth", opts
    if kind in CORPUS_KINDS:
        if not rest:
            raise ConfigError(f"--data {kind}: needs a folder, e.g. {kind}:/data/{kind}")
        return kind, rest
    raise ConfigError(f"unknown data spec {spec!r}; use synth[:...], deap:DIR, mahnob:DIR, amigos:DIR or FILE.npz")


def load_dataset(spec: str, cache_dir=None, workers: int = 1, progress: bool = False,
                 preprocessing: Preprocessing | None = None):
    """An ``EmotionWindows`` from a ``--data`` spec (see :func:`parse_data_spec`).

    Synthetic sets are built by ``export.data.build_synth_dataset`` (cached under
    ``cache_dir``); corpora are read by ``export.data.corpora`` and cut into the contract's
    windows by its ``windows_from_corpus``; both with ``preprocessing`` (default
    :data:`edge.spec.DEFAULT`). A ``.npz`` is read by ``EmotionWindows.load`` as it was made.

    Raises:
        ConfigError: bad spec. BadInputError: missing or unreadable data.
    """
    kind, opts = parse_data_spec(spec)
    if kind == "synth":
        from export.data import build_synth_dataset

        return build_synth_dataset(
            n_subjects=opts.get("subjects"), trials_per_subject=opts.get("trials"), seed=opts.get("seed", 0),
            workers=workers, cache_dir=cache_dir, preset=opts.get("preset", "default"), progress=progress,
            preprocessing=preprocessing, faces=opts.get("faces"),
        )
    if kind == "npz":
        from export.data import EmotionWindows

        return EmotionWindows.load(opts)
    return _load_corpus(kind, opts, preprocessing)


# ----------------------------------------------------------------------------- inputs

def window_inputs(windows, input_names, face_encoder: FaceEncoder | None = None,
                  idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The contract's model inputs, as float32 arrays, for windows of an ``EmotionWindows``.

    Args:
        windows: the dataset.
        input_names: which inputs to build (a model's ``input_names``).
        face_encoder: the frozen encoder, needed for ``face_feats`` (MVP).
        idx: optional window indices (default all).
    Returns:
        {name: float32 array (N, ...)}: face_clip (N, 8, 3, 32, 32) in [0, 1], tfr (N, 1, 32, 32),
        contact (N, 2, 1920), contact_level (N, 2), face_feats (N, 120, 64).
    Raises:
        ConfigError: ``face_feats`` asked for without an encoder, or an unknown name.
    """
    sel = slice(None) if idx is None else np.asarray(idx)
    out = {}
    for name in input_names:
        if name == "face_clip":
            clip = np.asarray(windows.face_clip[sel])
            out[name] = np.ascontiguousarray(clip.transpose(0, 1, 4, 2, 3), dtype=np.float32) / np.float32(255.0)
        elif name == "tfr":
            out[name] = np.ascontiguousarray(windows.tfr[sel], dtype=np.float32)[:, None]
        elif name in ("contact", "contact_level"):
            out[name] = np.ascontiguousarray(getattr(windows, name)[sel], dtype=np.float32)
        elif name == "present":
            out[name] = modality_flags_batch(windows.face_clip[sel], windows.tfr[sel], windows.contact_present[sel],
                                             windows.level_present[sel])
        elif name == "face_feats":
            if face_encoder is None:
                raise ConfigError("face_feats need the pretrained face encoder")
            out[name] = face_feats_from_crops(face_encoder, np.asarray(windows.face_seq_crops[sel]))
        else:
            raise ConfigError(f"unknown model input {name!r}")
    return out


def _targets(windows, idx: np.ndarray, subject_map: dict | None = None) -> dict[str, np.ndarray]:
    t = {"valence": np.asarray(windows.valence_high[idx], np.int64),
         "arousal": np.asarray(windows.arousal_high[idx], np.int64)}
    subj = np.asarray(windows.subject[idx])
    t["subject"] = np.array([subject_map.get(int(s), 0) for s in subj] if subject_map else np.zeros(len(idx)), np.int64)
    return t


# ----------------------------------------------------------------------------- encoder

class EncoderCache:
    """Pretrained face encoders keyed by (data, training subjects, settings), in memory and on disk."""

    def __init__(self, cache_dir: Path | None, fingerprint: str, steps: int, seed: int, progress: bool,
                 device: torch.device, encoder_config: dict | None = None, pretrained: str = ""):
        self.dir = Path(cache_dir) if cache_dir else None
        self.fingerprint, self.steps, self.seed, self.progress, self.device = fingerprint, steps, seed, progress, device
        self.encoder_config = dict(encoder_config or encoder_preset("tiny"))
        self.memory: dict[str, tuple[FaceEncoder, dict]] = {}
        self.pretrained = str(pretrained or "")

    def get(self, windows, subjects: np.ndarray) -> tuple[FaceEncoder, dict]:
        """Encoder pretrained on the clips of ``subjects`` only (frozen, eval mode); or the
        given pretrained encoder (``pretrained``), which saw none of the synthetic subjects."""
        if self.pretrained:
            if "pretrained" not in self.memory:
                enc, hist = load_face_encoder(self.pretrained)
                hist = dict(hist or {}, subjects="none (pretrained on real photos)", source=str(self.pretrained))
                self.memory["pretrained"] = (enc.freeze().eval(), hist)
            return self.memory["pretrained"]
        subj = sorted(int(s) for s in np.unique(subjects))
        ident = [self.fingerprint, subj, self.steps, self.seed]
        if json.dumps(self.encoder_config, sort_keys=True) != json.dumps(encoder_preset("tiny"), sort_keys=True):
            ident.append(self.encoder_config)  # (keys of tiny encoders cached before presets existed stay valid)
        key = hashlib.sha256(json.dumps(ident, default=list).encode()).hexdigest()[:16]
        if key in self.memory:
            return self.memory[key]
        path = self.dir / f"face_encoder_{key}.pt" if self.dir else None
        if path is not None and path.is_file():
            enc, hist = load_face_encoder(path)
        else:
            mask = np.isin(windows.subject, subj)
            clips = clips_for_pretraining(windows.face_clip[mask], windows.face_seq_crops[mask])
            enc, hist = pretrain_face_encoder(clips, steps=self.steps, seed=self.seed, device=self.device,
                                              encoder_config=self.encoder_config, progress=self.progress)
            hist["subjects"] = subj
            enc.freeze()
            if path is not None:
                save_face_encoder(enc, path, hist)
        self.memory[key] = (enc, hist)
        return enc, hist


# ----------------------------------------------------------------------------- fitting

def _model_config(cfg: TrainConfig, n_subjects: int) -> dict:
    config = dict(cfg.model_config)
    params = inspect.signature(MODELS[cfg.model].__init__).parameters
    if "n_subjects" in params:
        config["n_subjects"] = int(n_subjects)
    if cfg.model in USES_FACE_ENCODER:
        # The face encoder's size: inside the model (PromptFusion, the face baseline) or, for
        # MVP, the width of the face features its separate encoder produces.
        # (A model that forwards **kwargs to PromptFusion takes ``encoder`` too.)
        if "encoder" in params or any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
            config.setdefault("encoder", cfg.encoder_config())
        elif "feat_dim" in params:
            config.setdefault("feat_dim", int(cfg.encoder_config()["dim"]))
    return config


def _batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen).numpy()
    # A last batch of one sample would make the orthogonality and subject losses degenerate.
    for i in range(0, n, batch_size):
        b = order[i:i + batch_size]
        if b.size >= 2 or n < 2:
            yield b


def _to_device(arrays: dict, idx, device) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v[idx])).to(device) for k, v in arrays.items()}


def augment_batch(inputs: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Training-time augmentation of a batch (new tensors; the inputs are not modified).

    - ``face_clip``: brightness gain 0.85-1.15 and a per-channel tint of +-0.04 (lighting and
      skin-tone changes between people and sessions). Flips and shifts are left out: at
      32 x 32 pixels with 8-pixel tubelets they moved the mouth corners across tubelets and
      cost the face baseline about 5 points of valence accuracy;
    - ``tfr``, ``contact``, ``face_feats``: additive Gaussian noise (sd 0.1, 0.05, 0.05 of
      their unit-scale values).
    ``contact_level`` is left alone (it is a measured level, not an appearance).

    Off by default: on the synthetic set even this photometric jitter lowered held-out
    valence accuracy (face model 0.755 -> 0.734; with flips and shifts too, PromptFusion
    0.68 -> 0.49), see docs/RESULTS.md.
    """
    out = dict(inputs)
    if "face_clip" in inputs:
        x = inputs["face_clip"]
        b = x.shape[0]
        gain = 0.85 + 0.3 * torch.rand(b, 1, 1, 1, 1, generator=gen)
        tint = 0.08 * (torch.rand(b, 1, 3, 1, 1, generator=gen) - 0.5)
        out["face_clip"] = (x * gain.to(x.device) + tint.to(x.device)).clamp(0.0, 1.0)
    for name, sd in (("tfr", 0.1), ("contact", 0.05), ("face_feats", 0.05)):
        if name in inputs:
            x = inputs[name]
            out[name] = x + sd * torch.randn(x.shape, generator=gen).to(x.device)
    return out


@torch.no_grad()
def predict(model: EmotionModel, inputs: dict[str, np.ndarray], batch_size: int = 64,
            device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """Softmax probabilities {"valence": (N, 2), "arousal": (N, 2)} of a model on input arrays."""
    model.eval()
    n = len(next(iter(inputs.values())))
    out = {"valence": [], "arousal": []}
    for i in range(0, n, batch_size):
        idx = np.arange(i, min(n, i + batch_size))
        v, a = model.probabilities(**_to_device(inputs, idx, device))
        out["valence"].append(v.cpu().numpy())
        out["arousal"].append(a.cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros((0, 2), np.float32) for k, v in out.items()}


def _eval_loss(model, inputs, targets, device) -> float:
    probs = predict(model, inputs, device=device)
    eps = 1e-7
    loss = 0.0
    for task in TASKS:
        t = np.asarray(targets[task])
        ok = t >= 0  # -1: no target for this task (a still photo's expression off the axis)
        if not ok.any():
            continue
        p = probs[task][np.nonzero(ok)[0], t[ok]]
        loss += float(-np.mean(np.log(np.clip(p, eps, 1.0))))
    return loss


def fit(model: EmotionModel, train_inputs: dict, train_targets: dict, cfg: TrainConfig,
        device: torch.device, val_inputs: dict | None = None, val_targets: dict | None = None,
        epochs: int | None = None, desc: str = "train", seed: int = 0,
        sample_weights: np.ndarray | None = None, epoch_size: int | None = None) -> dict:
    """Train ``model`` in place; with validation data, early-stop and restore the best epoch.

    Args:
        train_inputs / val_inputs: {name: float32 array (N, ...)}.
        train_targets / val_targets: {"valence", "arousal", "subject": int64 (N,)}.
        epochs: epoch count (default ``cfg.epochs``).
        sample_weights: optional (N,) weights: each epoch then draws ``epoch_size`` samples
            with replacement in proportion to them, instead of a permutation of all N.
    Returns:
        history {"best_epoch" (1-based), "epochs_run", "val_loss" list, "train_loss" list, "seconds"}.
    """
    from tqdm.auto import tqdm

    model.to(device)
    gen = torch.Generator().manual_seed(seed)
    params = model.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(train_targets["valence"])
    tt = {k: torch.from_numpy(v).to(device) for k, v in train_targets.items()}
    epochs = epochs or cfg.epochs
    best, best_epoch, since_best = float("inf"), epochs, 0
    best_state = None
    hist = {"train_loss": [], "val_loss": []}
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not cfg.progress, leave=False)
    for epoch in bar:
        model.train()
        losses = []
        if sample_weights is None:
            batches = list(_batches(n, cfg.batch_size, gen))
        else:
            draw = torch.multinomial(torch.as_tensor(sample_weights, dtype=torch.float64), int(epoch_size or n),
                                     replacement=True, generator=gen).numpy()
            batches = [draw[i:i + cfg.batch_size] for i in range(0, draw.size, cfg.batch_size)
                       if draw[i:i + cfg.batch_size].size >= 2]
        n_batches = max(1, len(batches))
        for step, b in enumerate(batches):
            progress = (epoch + step / n_batches) / epochs
            batch = _to_device(train_inputs, b, device)
            if cfg.augment:
                batch = augment_batch(batch, gen)
            loss, _, _ = model.training_loss(batch, {k: v[b] for k, v in tt.items()}, progress)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(loss.item())
        hist["train_loss"].append(float(np.mean(losses)))
        if val_inputs is not None:
            vl = _eval_loss(model, val_inputs, val_targets, device)
            hist["val_loss"].append(vl)
            if vl < best - 1e-4:
                best, best_epoch, since_best = vl, epoch + 1, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
            bar.set_postfix(train=f"{hist['train_loss'][-1]:.3f}", val=f"{vl:.3f}")
            if since_best >= cfg.patience:
                break
        else:
            bar.set_postfix(train=f"{hist['train_loss'][-1]:.3f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    hist.update(best_epoch=int(best_epoch), epochs_run=epoch + 1, seconds=round(time.perf_counter() - t0, 1))
    return hist


def _prepare_model(cfg: TrainConfig, n_subjects: int, encoder: FaceEncoder | None) -> EmotionModel:
    model = build_model(cfg.model, **_model_config(cfg, n_subjects))
    if encoder is not None and hasattr(model, "encoder"):
        model.load_face_encoder(encoder.state_dict())
    return model


def cross_validate(windows, cfg: TrainConfig, cache_dir: Path | None = None) -> dict:
    """Subject-independent cross-validation of ``cfg.model`` on ``windows``.

    Returns:
        {"folds": [per-fold metrics and history], "summary": {metric: {"mean", "std"}},
         "best_epochs": [...], "device": str}
    """
    from tqdm.auto import tqdm

    cfg.validate()
    device = resolve_device(cfg.device)
    subjects = np.asarray(windows.subject)
    splits = subject_splits(subjects, cfg.protocol, cfg.folds, cfg.seed)
    uses_encoder = cfg.model in USES_FACE_ENCODER
    check_crop_size(windows, cfg)
    cache = EncoderCache(cache_dir, data_fingerprint(windows), cfg.pretrain_steps, cfg.seed, cfg.progress, device,
                         cfg.encoder_config(), cfg.face_encoder)
    names = MODELS[cfg.model].input_names
    folds = []
    # Out-of-fold probabilities (each window by the fold model that never saw its subject).
    n_all = subjects.size
    oof: dict[str, np.ndarray] = {f"{task}{suffix}": np.full((n_all, 2), np.nan)
                                  for task in TASKS for suffix in ("",) + tuple(REDUCED_CASES)}
    oof["held_out"] = np.zeros(n_all, bool)
    for k, (train_idx, test_idx) in enumerate(tqdm(splits, desc=f"{cfg.model} folds", disable=not cfg.progress)):
        seed_everything(cfg.seed + 1000 * (k + 1))
        encoder, enc_hist = cache.get(windows, subjects[train_idx]) if uses_encoder else (None, None)
        fit_idx, val_idx = validation_split(subjects, train_idx, cfg.val_fraction, cfg.seed + k)
        smap = {int(s): i for i, s in enumerate(np.unique(subjects[fit_idx]))}
        inputs = window_inputs(windows, names, encoder)
        model = _prepare_model(cfg, len(smap), encoder)
        hist = fit(model, {n: v[fit_idx] for n, v in inputs.items()}, _targets(windows, fit_idx, smap), cfg,
                   device, {n: v[val_idx] for n, v in inputs.items()}, _targets(windows, val_idx),
                   desc=f"fold {k + 1}/{len(splits)}", seed=cfg.seed + k)
        held_in = {n: v[test_idx] for n, v in inputs.items()}
        probs = predict(model, held_in, device=device)
        tgt = _targets(windows, test_idx)
        for task in TASKS:
            oof[task][test_idx] = probs[task]
        oof["held_out"][test_idx] = True
        metrics = classification_metrics(tgt, {t: probs[t].argmax(1) for t in TASKS})
        if "present" in names:
            # The same held-out windows with part of their contact inputs removed, as the runtime
            # sees them (modality dropout trained the model for both): no sensor (face + pulse),
            # and a sensor's first ~54 s, its levels without its rows.
            for suffix, flags in REDUCED_CASES.items():
                bare = dict(held_in, present=held_in["present"].copy())
                bare["present"][:, list(flags)] = 0.0
                bare_probs = predict(model, bare, device=device)
                for task in TASKS:
                    oof[f"{task}{suffix}"][test_idx] = bare_probs[task]
                part = classification_metrics(tgt, {t: bare_probs[t].argmax(1) for t in TASKS})
                metrics.update({f"{suffix[1:]}_{name}": value for name, value in part.items()})
        metrics.update(
            fold=k, test_subjects=sorted(int(s) for s in np.unique(subjects[test_idx])),
            val_subjects=sorted(int(s) for s in np.unique(subjects[val_idx])),
            n_train=int(fit_idx.size), n_val=int(val_idx.size), n_test=int(test_idx.size),
            best_epoch=hist["best_epoch"], epochs_run=hist["epochs_run"], seconds=hist["seconds"],
            encoder_loss=None if enc_hist is None or "loss_first" not in enc_hist
            else [enc_hist["loss_first"], enc_hist["loss_last"]],
            # A list of subject ids, or a sentence for an encoder pretrained elsewhere.
            encoder_subjects=None if enc_hist is None else
            (enc_hist["subjects"] if isinstance(enc_hist["subjects"], str) else list(enc_hist["subjects"])),
        )
        log.info("fold %d: %s", k, {m: round(metrics[m], 3) for m in metrics if m.endswith(("_acc", "_f1"))})
        folds.append(metrics)
    if "present" in names:
        oof["present"] = window_inputs(windows, ("present",), None)["present"]
    return {"folds": folds, "summary": summarise_folds(folds),
            "best_epochs": [f["best_epoch"] for f in folds], "device": str(device), "_cache": cache, "_oof": oof}


def fit_physio_temperature(model: EmotionModel, oof: dict, windows) -> dict | None:
    """Set ``model.temperature_physio`` and ``model.temperature_pulse`` (valence, arousal) from
    the cross-validation's held-out windows (export.mixed.fit_temperature on their out-of-fold
    log-probabilities): windows with a contact input as they are, for the first; windows with
    the pulse, their contact inputs removed, for the second.

    The final model is trained on every subject, so no subject is left to calibrate it on; the
    folds' models, trained the same way on the other subjects, show how over-confident this
    recipe is on people it never saw (cross-validated calibration, as in Platt 1999 and
    scikit-learn's ``CalibratedClassifierCV(ensemble=False)``). Real photos calibrate the
    face-only case (:func:`train_final`).

    Returns:
        {"contact": {"valence": T, "arousal": T, "n": N}, "pulse": {...}, "data": ...}, or None
        for a model without these temperatures; a case with no held-out window keeps T = the
        face-only temperature.
    """
    if not hasattr(model, "temperature_physio") or "present" not in oof:
        return None
    present = np.asarray(oof["present"])
    held = oof["held_out"]
    contact = held & (present[:, 2:].max(axis=1) > 0)
    levels = held & (present[:, 4:].max(axis=1) > 0)
    # The contact temperature covers both patterns the runtime gives it: rows and levels, and
    # levels alone (a sensor's first ~54 s); older out-of-fold records lack the second.
    cases = {"contact": ([(contact, "")] + ([(levels, "_levels_only")] if "valence_levels_only" in oof else []),
                         "temperature_physio"),
             "pulse": ([(held & (present[:, 1] > 0), "_no_contact")], "temperature_pulse")}
    out: dict[str, Any] = {}
    for case, (parts, buffer) in cases.items():
        temps = getattr(model, buffer)
        n_rows = sum(int(rows.sum()) for rows, _ in parts)
        if not n_rows:
            temps[:] = model.temperature
            continue
        fitted: dict[str, Any] = {"n": n_rows}
        for k, task in enumerate(TASKS):
            z = np.concatenate([np.log(np.clip(oof[task + suffix][rows], 1e-7, 1.0)) for rows, suffix in parts])
            t = np.concatenate([_targets(windows, np.flatnonzero(rows))[task] for rows, _ in parts])
            fitted[task] = fit_temperature(z, t)
            temps[k] = fitted[task]
        out[case] = fitted
        log.info("%s temperatures: valence %.3f, arousal %.3f", case, fitted["valence"], fitted["arousal"])
    out["data"] = ("held-out synthetic windows of the subject cross-validation (contact: as they are and with their "
                   "contact rows removed; pulse: their contact inputs removed)")
    return out


def train_final(windows, cfg: TrainConfig, epochs: int,
                cache: EncoderCache | None = None) -> tuple[EmotionModel, FaceEncoder | None, dict]:
    """Train the deployable model on every subject for ``epochs`` epochs (no held-out data).

    Returns:
        (model in eval mode on the CPU, its frozen face encoder or None, fit history).
    """
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    subjects = np.asarray(windows.subject)
    encoder = None
    if cfg.model in USES_FACE_ENCODER:
        check_crop_size(windows, cfg)
        cache = cache or EncoderCache(None, data_fingerprint(windows), cfg.pretrain_steps, cfg.seed,
                                      cfg.progress, device, cfg.encoder_config(), cfg.face_encoder)
        encoder, _ = cache.get(windows, subjects)
    all_idx = np.arange(subjects.size)
    smap = {int(s): i for i, s in enumerate(np.unique(subjects))}
    names = MODELS[cfg.model].input_names
    inputs = window_inputs(windows, names, encoder)
    targets = _targets(windows, all_idx, smap)
    model = _prepare_model(cfg, len(smap), encoder)
    if not cfg.stills:
        hist = fit(model, inputs, targets, cfg, device, epochs=epochs, desc="final model", seed=cfg.seed)
        return model.cpu().eval(), encoder, hist
    # Real photos join as face-only samples: each epoch draws every synthetic window about once
    # (as the cross-validation's epochs do, so the folds' best epoch count and their held-out
    # calibration carry over) plus ``stills_per_epoch`` photos balanced by identity and class.
    # (Drawing the two sources half and half showed each synthetic window ~16 times an epoch:
    # the model memorised their pulse images.)
    stills_cache = None if cache is None or cache.dir is None else cache.dir / f"stills_{cfg.encoder}.npz"
    stills = still_training_set(cfg.stills, windows.preprocessing, cache=stills_cache)
    fit_part, val_part = stills.subset(stills.part == "fit"), stills.subset(stills.part == "val")
    s_in = still_inputs(fit_part, names, windows.preprocessing)
    mixed = mix_inputs(inputs, s_in)
    n_w, n_s = subjects.size, len(fit_part)
    mixed_targets = {
        "valence": np.concatenate([targets["valence"], fit_part.valence]),
        "arousal": np.concatenate([targets["arousal"], fit_part.arousal]),
        "subject": np.concatenate([targets["subject"], np.full(n_s, -1, np.int64)]),
    }
    weights, epoch_size = mixed_epoch(n_w, still_sampling_weights(fit_part), cfg.stills_per_epoch)
    hist = fit(model, mixed, mixed_targets, cfg, device, epochs=epochs, desc="final model (+stills)", seed=cfg.seed,
               sample_weights=weights, epoch_size=epoch_size)
    hist["stills"] = {"fit": n_s, "val": len(val_part), "per_epoch": epoch_size - n_w}
    hist["temperature"] = calibrate_temperature(model, still_inputs(val_part, names, windows.preprocessing),
                                                {"valence": val_part.valence, "arousal": val_part.arousal},
                                                still_sampling_weights(val_part), device)
    model.calibration_record = {"method": "temperature scaling (Guo et al. 2017), weighted NLL",
                                "data": f"{len(val_part)} photos of held-out training identities of {cfg.stills}",
                                **hist["temperature"]}
    return model.cpu().eval(), encoder, hist


def mixed_epoch(n_windows: int, still_weights: np.ndarray, stills_per_epoch: int) -> tuple[np.ndarray, int]:
    """Sampling weights and epoch size of a final model trained on synthetic windows and photos.

    Args:
        n_windows: synthetic windows (first in the mixed arrays).
        still_weights: float (n_stills,) relative weights of the photos (after the windows).
        stills_per_epoch: photos drawn per epoch (at most 8 x their number).

    Returns:
        (weights (n_windows + n_stills,) summing to 1, epoch size): each epoch then draws every
        synthetic window once on average and ``stills_per_epoch`` photos in proportion to
        ``still_weights``.
    """
    w = np.asarray(still_weights, np.float64)
    epoch_size = max(n_windows, 1) + min(int(stills_per_epoch), 8 * w.size)
    share = n_windows / epoch_size
    stills = (1.0 - share) * w / w.sum() if w.size else w
    return np.concatenate([np.full(n_windows, share / max(n_windows, 1)), stills]), epoch_size


def still_sampling_weights(stills) -> np.ndarray:
    """Per-photo weights: every identity counts once within its expression class, and classes
    by the square root of their size (rare negative expressions are drawn far more often than
    their share, without one photo of contempt dominating)."""
    expr = np.array([f"{v}:{a}" for v, a in zip(stills.valence, stills.arousal)])
    return np.asarray(sampling_weights(expr, stills.identity), np.float64)


@torch.no_grad()
def calibrate_temperature(model: EmotionModel, inputs: dict, targets: dict, weights: np.ndarray | None,
                          device: torch.device) -> dict:
    """Fit and set ``model.temperature`` (valence, arousal) on held-out samples (export.mixed.fit_temperature).

    Returns:
        {"valence": T, "arousal": T, "n": {"valence": n, "arousal": n}}.
    """
    model.eval()
    n = len(next(iter(inputs.values())))
    logits = {"valence": [], "arousal": []}
    for i in range(0, n, 64):
        idx = np.arange(i, min(n, i + 64))
        v, a = model(**_to_device(inputs, idx, device))
        logits["valence"].append(v.cpu().numpy())
        logits["arousal"].append(a.cpu().numpy())
    out = {"n": {}}
    for k, task in enumerate(TASKS):
        z = np.concatenate(logits[task]) if logits[task] else np.zeros((0, 2))
        t = np.asarray(targets[task])
        out[task] = fit_temperature(z, t, weights)
        out["n"][task] = int((t >= 0).sum())
        model.temperature[k] = out[task]
    log.info("temperatures: valence %.3f, arousal %.3f", out["valence"], out["arousal"])
    return out


# ----------------------------------------------------------------------------- top level

def _versions() -> dict:
    import onnx  # noqa: F401 - recorded for the bundle

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "onnx": sys.modules["onnx"].__version__}


def build_checkpoint(model: EmotionModel, encoder: FaceEncoder | None, windows, cfg: TrainConfig,
                     data: dict, metrics: dict, protocol: dict) -> dict:
    """The ``emofuse-ckpt/1`` dict of the issue-4 contract for a trained model."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model": cfg.model,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "preprocessing": windows.preprocessing.to_dict(),
        "calibration": getattr(model, "calibration_record", None),
        "labels": LABELS,
        "data": data,
        "metrics": metrics,
        "protocol": protocol,
        "seed": cfg.seed,
        "versions": _versions(),
        # MVP takes features, not pixels: the device needs the encoder on its own
        # (face_encoder.onnx); other models carry theirs inside state_dict.
        "face_encoder": None if encoder is None or cfg.model != "mvp" else
        {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "face_encoder_config": None if encoder is None else encoder.config,
        "train_config": asdict(cfg),
    }


def train(windows, cfg: TrainConfig, out_dir, data_spec: str = "", cache_dir=None) -> dict:
    """Cross-validate, train the final model and write ``out_dir``:

    - ``metrics.json``: per-fold and summary metrics, config, params, FLOPs, timings;
    - ``checkpoint.pt``: the final all-subject model (``emofuse-ckpt/1``), unless ``cfg.final`` is False;
    - ``face_encoder.pt``: its pretrained encoder (models that use one).

    Returns the metrics.json content.
    Raises:
        ConfigError: bad settings; BadInputError: unusable dataset.
    """
    cfg.validate()
    n = len(np.asarray(windows.subject))
    if n == 0:
        raise BadInputError("the dataset has no windows")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    cache_dir = Path(cache_dir) if cache_dir else out / "cache"
    cv = cross_validate(windows, cfg, cache_dir)
    cache = cv.pop("_cache")
    oof = cv.pop("_oof")
    protocol = {
        "name": cfg.protocol, "folds": len(cv["folds"]), "val_fraction": cfg.val_fraction,
        "early_stopping": f"lowest validation loss on held-out training subjects, patience {cfg.patience}",
        "final_model": "trained on all subjects for the median of the folds' best epochs",
    }
    data = {"spec": data_spec, "n_windows": n, "n_subjects": int(np.unique(windows.subject).size),
            "fingerprint": data_fingerprint(windows), "meta": windows.meta}
    report = {
        "model": cfg.model, "protocol": protocol, "summary": cv["summary"], "folds": cv["folds"],
        "device": cv["device"], "train_config": asdict(cfg), "data": {k: v for k, v in data.items() if k != "meta"},
    }
    if cfg.final:
        epochs = max(1, int(round(float(np.median(cv["best_epochs"])))))
        model, encoder, hist = train_final(windows, cfg, epochs, cache)
        physio = fit_physio_temperature(model, oof, windows)
        if physio is not None:
            record = dict(getattr(model, "calibration_record", None) or {})
            record["physiology"] = {"method": "temperature scaling on out-of-fold predictions", **physio}
            model.calibration_record = record
        metrics = {"cross_validation": cv["summary"], "folds": cv["folds"]}
        ckpt = build_checkpoint(model, encoder, windows, cfg, data, metrics, protocol)
        torch.save(ckpt, out / "checkpoint.pt")
        if encoder is not None:
            save_face_encoder(encoder, out / "face_encoder.pt", {"subjects": "all"})
        report["final"] = {"epochs": epochs, "seconds": hist["seconds"], "checkpoint": str(out / "checkpoint.pt")}
        report["params"] = count_parameters(model)
        report["flops"] = count_flops(model)
    else:
        probe = build_model(cfg.model, **_model_config(cfg, 2))
        report["params"], report["flops"] = count_parameters(probe), count_flops(probe)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _load_corpus(kind: str, spec: str, preprocessing: Preprocessing | None = None):
    """Windows of a real corpus: ``DIR`` or ``DIR,videos=VIDEO_DIR`` (``export.data.corpora``).

    DEAP and AMIGOS take their face videos from ``videos=`` (else ``DIR/face_video`` when it
    exists; without videos the face inputs are zero and ``face_present`` is False);
    MAHNOB-HCI sessions carry their own videos.
    """
    from export.data import corpora

    folder, _, extra = spec.partition(",videos=")
    root = Path(folder)
    videos = Path(extra) if extra else (root / "face_video" if (root / "face_video").is_dir() else None)
    if kind == "deap":
        records = corpora.load_deap(root, video_dir=videos)
    elif kind == "amigos":
        records = corpora.load_amigos(root, video_dir=videos)
    else:
        records = corpora.load_mahnob(root, with_video=True)
    return corpora.windows_from_corpus(records, preprocessing)
