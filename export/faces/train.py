"""Supervised + distilled training of the FaceEncoder on real still faces.

Recipe (issue 14, section 1): each still crop is repeated to the encoder's clip length (what a
still face looks like to the model: the same frame in every tubelet slice) and the pooled
feature feeds four linear heads:

- ``expression``: the 8 :data:`edge.affect.EXPRESSIONS`, cross-entropy with label smoothing
  (Szegedy et al. 2016) against the crowd-sourced label, which is noisy;
- ``distill``: the 7 FER2013 classes of the ``fer`` teacher (:mod:`export.faces.teacher`),
  KL divergence to the teacher's temperature-softened output on the *same augmented* crop
  (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network");
- ``valence`` / ``arousal``: one logit each, binary cross-entropy where Russell's mapping
  (:data:`edge.affect.VALENCE_OF`, :data:`edge.affect.AROUSAL_OF`) defines a target, each
  class weighted to half of the batch's loss (so the 0.5 threshold targets balanced accuracy).

Images are drawn with identity- and square-root-class-balanced probabilities
(:func:`export.faces.data.sampling_weights`): rare classes are kept and repeated, a person with
hundreds of photos counts once within a class. Augmentation aims at the device's domain:
grayscale photos are colourised with a random skin tint (device frames are colour), colour
ones sometimes turned gray, brightness / contrast / gamma jitter, small shifts, scales and
rotations, horizontal flips. The model is chosen on validation identities (a salted subset of
the train identities); the test identities are scored once, at the end.

Command::

    python3 -m export.faces.train --data ../shared/data/faces --out DIR --epochs N --seed 0

writes ``DIR/face_encoder.pt`` (:func:`export.pretrain.load_face_encoder` reads it; the heads
ride along under ``"heads"``), ``DIR/metrics.json`` and ``DIR/train.log``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.affect import EXPRESSIONS, balanced_accuracy, expected_calibration_error
from export.faces.data import FaceSet, load_faces, sampling_weights
from export.models.vit import FaceEncoder, encoder_preset
from export.pretrain import ENCODER_FORMAT
from firmware_bridge.errors import ConfigError

log = logging.getLogger(__name__)

TEACHER_TO_EXPR = None  # filled lazily: teacher class index -> EXPRESSIONS index

# Expressions whose valence / arousal is high or low (edge.affect), as index lists for readouts.
from edge.affect import AROUSAL_OF, VALENCE_OF  # noqa: E402

_V_HI = [EXPRESSIONS.index(e) for e, v in VALENCE_OF.items() if v == 1]
_V_LO = [EXPRESSIONS.index(e) for e, v in VALENCE_OF.items() if v == 0]
_A_HI = [EXPRESSIONS.index(e) for e, v in AROUSAL_OF.items() if v == 1]
_A_LO = [EXPRESSIONS.index(e) for e, v in AROUSAL_OF.items() if v == 0]


class AffectHeads(nn.Module):
    """Linear heads on the pooled face feature: (B, dim) -> dict of logits.

    ``expression`` (B, 8), ``distill`` (B, 7), ``valence`` (B,), ``arousal`` (B,).
    """

    def __init__(self, dim: int, n_teacher: int = 7, dropout: float = 0.1):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.expression = nn.Linear(dim, len(EXPRESSIONS))
        self.distill = nn.Linear(dim, n_teacher)
        self.va = nn.Linear(dim, 2)

    def forward(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.drop(feat)
        va = self.va(h)
        return {"expression": self.expression(h), "distill": self.distill(h),
                "valence": va[:, 0], "arousal": va[:, 1]}


def still_clip(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, 3, S, S) crops -> (B, frames, 3, S, S): the still frame repeated over the clip."""
    return x.unsqueeze(1).expand(-1, frames, -1, -1, -1)


def tie_time(encoder: FaceEncoder) -> FaceEncoder:
    """Copy the first temporal slice's position embeddings to every slice; returns ``encoder``.

    With tied positions a still clip (one crop repeated) holds 4 identical copies of each of
    the first slice's tokens. Attention over duplicated keys gives the same weighted average as
    over one copy, and LayerNorm, MLP and the mean pool act per token, so
    ``encoder(still_clip(x))`` then equals ``encoder.encode_frames(x)`` exactly, at a quarter of
    the tokens. Training on stills with ``encode_frames`` is therefore training the full clip
    model with tied temporal positions, four times cheaper.
    """
    with torch.no_grad():
        n = encoder.tokens_per_slice
        first = encoder.pos_embed[:, :n].clone()
        for k in range(1, encoder.grid[0]):
            encoder.pos_embed[:, k * n:(k + 1) * n] = first
    return encoder


def to_float(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (B, S, S, 3) RGB -> float32 (B, 3, S, S) in [0, 1]."""
    return torch.as_tensor(np.asarray(crops)).permute(0, 3, 1, 2).float() / 255.0


def augment(x: torch.Tensor, colour: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Device-domain augmentation of (B, 3, S, S) crops in [0, 1]; returns the same shape.

    ``colour`` (B,) bool marks photos that have colour. Gray photos are colourised with
    probability 0.7 by a random skin tint that keeps the luma (R >= G >= B gains); colour
    ones are turned gray with probability 0.2. Then contrast x[0.6, 1.4] around the mean,
    brightness +-0.12, gamma [0.7, 1.4], a random affine (rotation +-12 deg, scale
    [0.9, 1.12], shift +-8 % of the side) with border replication, and a horizontal flip.
    """
    b = x.shape[0]
    u = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    tint = torch.stack([torch.ones(b), 0.72 + 0.23 * u(b), 0.5 + 0.35 * u(b)], dim=1)
    tint = tint / (tint @ torch.tensor([0.299, 0.587, 0.114])).unsqueeze(1)
    colourise = (~colour) & (u(b) < 0.7)
    to_gray = colour & (u(b) < 0.2)
    x = torch.where(colourise[:, None, None, None], gray * tint[:, :, None, None], x)
    x = torch.where(to_gray[:, None, None, None], gray.expand(-1, 3, -1, -1), x)
    x = x * (1.0 + 0.06 * (u(b, 3, 1, 1) - 0.5))  # white balance
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (0.6 + 0.8 * u(b, 1, 1, 1)) + mean + 0.24 * (u(b, 1, 1, 1) - 0.5)
    x = x.clamp(0.0, 1.0) ** (0.7 + 0.7 * u(b, 1, 1, 1))
    ang = (u(b) - 0.5) * 2 * math.radians(12)
    scale = 0.9 + 0.22 * u(b)
    flip = torch.where(u(b) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, 0.16 * (u(b) - 0.5)], 1),
                         torch.stack([sin * flip, cos, 0.16 * (u(b) - 0.5)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0.0, 1.0)


def _balanced_bce(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE over the samples with target >= 0, each present class weighing half."""
    keep = target >= 0
    if not keep.any():
        return logit.sum() * 0.0
    z, y = logit[keep], target[keep].float()
    losses = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    total = 0.0
    classes = [c for c in (0.0, 1.0) if (y == c).any()]
    for c in classes:
        total = total + losses[y == c].mean()
    return total / len(classes)


def readout_from_expression(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(V+), P(A+) from 8-class expression probabilities (N, 8): the mass of the high classes
    over the mass of the classes the mapping places on that axis (edge.affect)."""
    pv = probs[:, _V_HI].sum(1) / np.maximum(probs[:, _V_HI + _V_LO].sum(1), 1e-12)
    pa = probs[:, _A_HI].sum(1) / np.maximum(probs[:, _A_HI + _A_LO].sum(1), 1e-12)
    return pv, pa


def teacher_expression_probs(teacher_probs: np.ndarray) -> np.ndarray:
    """Teacher's 7 FER2013 probabilities (N, 7) as (N, 8) in EXPRESSIONS order (contempt 0)."""
    from export.faces.teacher import TEACHER_CLASSES

    out = np.zeros((teacher_probs.shape[0], len(EXPRESSIONS)), np.float64)
    for j, name in enumerate(TEACHER_CLASSES):
        out[:, EXPRESSIONS.index(name)] = teacher_probs[:, j]
    return out


def score_va(p_v: np.ndarray, p_a: np.ndarray, fs: FaceSet) -> dict:
    """Identity-weighted balanced accuracies and ECEs (edge.affect) of P(V+), P(A+) on ``fs``."""
    out = {}
    for axis, p, y in (("valence", p_v, fs.valence), ("arousal", p_a, fs.arousal)):
        keep = y >= 0
        if keep.sum() == 0 or len(np.unique(y[keep])) < 2:
            continue
        pred = (p[keep] >= 0.5).astype(np.int64)
        out[f"{axis}_bal_acc"] = balanced_accuracy(y[keep], pred, fs.identity[keep])
        out[f"{axis}_ece"] = expected_calibration_error(p[keep], y[keep], 10, fs.identity[keep])
        out[f"{axis}_n"] = int(keep.sum())
    return out


@torch.no_grad()
def predict(encoder: FaceEncoder, heads: AffectHeads, crops: np.ndarray, batch_size: int = 128,
            frames_only: bool = False) -> dict:
    """Head outputs of still crops: {"expression": (N, 8) probs, "valence": (N,), "arousal": (N,)}
    probabilities, float64. The crop is repeated over the full clip, or with ``frames_only``
    fed through :meth:`FaceEncoder.encode_frames` (the same result once :func:`tie_time`)."""
    encoder.eval()
    heads.eval()
    ex, pv, pa = [], [], []
    for i in range(0, len(crops), batch_size):
        x = to_float(crops[i:i + batch_size])
        out = heads(encoder.encode_frames(x) if frames_only else encoder(still_clip(x, encoder.frames)))
        ex.append(out["expression"].softmax(-1).double().numpy())
        pv.append(torch.sigmoid(out["valence"]).double().numpy())
        pa.append(torch.sigmoid(out["arousal"]).double().numpy())
    return {"expression": np.concatenate(ex), "valence": np.concatenate(pv), "arousal": np.concatenate(pa)}


def evaluate(encoder: FaceEncoder, heads: AffectHeads, fs: FaceSet, frames_only: bool = False) -> dict:
    """Scores of the direct V/A heads and of the expression head's readout on ``fs``."""
    pred = predict(encoder, heads, fs.crops, frames_only=frames_only)
    out = {"heads": score_va(pred["valence"], pred["arousal"], fs)}
    ev, ea = readout_from_expression(pred["expression"])
    out["expression_readout"] = score_va(ev, ea, fs)
    out["expression_bal_acc_8"] = balanced_accuracy(fs.expression, pred["expression"].argmax(1), fs.identity)
    return out


def evaluate_synthetic(encoder: FaceEncoder, heads: AffectHeads, syn, frames_only: bool = False) -> dict:
    """Balanced accuracies of the V/A heads on generator-warped faces
    (:class:`export.faces.synthetic.SyntheticStills`), each base identity weighted equally."""
    pred = predict(encoder, heads, syn.crops, frames_only=frames_only)
    out = {}
    for axis, p, y in (("valence", pred["valence"], syn.valence), ("arousal", pred["arousal"], syn.arousal)):
        keep = y >= 0
        if keep.sum() and len(np.unique(y[keep])) == 2:
            out[f"{axis}_bal_acc"] = balanced_accuracy(y[keep], (p[keep] >= 0.5).astype(np.int64), syn.identity[keep])
    return out


def _objective(m: dict) -> float:
    h = m["heads"]
    return 0.5 * (h.get("valence_bal_acc", 0.0) + h.get("arousal_bal_acc", 0.0))


def train(fs: FaceSet, *, epochs: int = 10, batch_size: int = 64, lr: float = 8e-4, weight_decay: float = 0.05,
          seed: int = 0, preset: str = "small", distill_weight: float = 1.0, temperature: float = 2.0,
          va_weight: float = 1.0, label_smoothing: float = 0.1, class_power: float = 0.5,
          steps_per_epoch: int | None = None, max_steps: int | None = None, init: str | None = None,
          teacher=None, log_every: int = 50, time_budget_s: float | None = None,
          tied_time: bool = True, on_epoch=None, synthetic=None, synthetic_val=None,
          synthetic_fraction: float = 0.2) -> tuple[FaceEncoder, AffectHeads, dict]:
    """Train encoder + heads on ``fs``'s ``"train"`` rows, choose the epoch on its ``"val"`` rows.

    Args:
        fs: a :class:`FaceSet`; only rows with split "train" are trained on, "val" rows choose
            the best epoch (mean of valence and arousal balanced accuracy), "test" rows are
            never read here.
        epochs: passes of ``steps_per_epoch`` steps (default: one per train image / batch).
        batch_size, lr, weight_decay: AdamW with 5 % linear warm-up and cosine decay.
        distill_weight, temperature: weight and temperature of the KL term (0 weight: no
            teacher needed).
        va_weight: weight of the two valence / arousal BCE terms.
        init: optional ``face_encoder.pt`` to start the encoder from.
        teacher: a :func:`export.faces.teacher.load_teacher` model (loaded when None and
            ``distill_weight > 0``).
        max_steps: stop after this many steps in total (tests).
        time_budget_s: wall-time budget of the loop (seconds): the cosine schedule advances
            by ``max(steps done / steps planned, time used / budget)`` and training stops when
            it reaches 1, so a run on a busy machine still anneals and ends in time. Without
            it (the reproducible form) the schedule follows the step count only.
        tied_time: train through :meth:`FaceEncoder.encode_frames` with tied temporal
            positions (:func:`tie_time`; exact for still clips, 4x cheaper); the returned
            encoder is tied, so its full-clip output on a still equals what was trained.
            False: every step runs the full 8-frame clip and learns per-slice positions.
        on_epoch: callable(encoder, heads, history) after every epoch (checkpointing).
        synthetic: optional :class:`export.faces.synthetic.SyntheticStills` (generator-warped
            faces of train identities): ``synthetic_fraction`` of every batch is drawn from
            them, with the valence / arousal terms only (no expression label, no teacher).
        synthetic_val: optional held-out SyntheticStills (validation identities), scored each
            epoch for the log; the epoch is still chosen on real photos only.
    Returns:
        (encoder, heads, history) - the validation-best weights, in eval mode.
    Raises:
        ConfigError: no train rows or bad settings.
    """
    tr = fs.subset(fs.split == "train")
    va = fs.subset(fs.split == "val")
    if len(tr) == 0:
        raise ConfigError("no train rows to train on")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError("epochs and batch_size must be >= 1 and lr > 0")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    if init:
        from export.pretrain import load_face_encoder

        encoder, _ = load_face_encoder(init)
        for p in encoder.parameters():
            p.requires_grad_(True)
    else:
        encoder = FaceEncoder(**encoder_preset(preset))
    if tuple(fs.crops.shape[1:3]) != (encoder.size, encoder.size):
        raise ConfigError(f"crops are {fs.crops.shape[1:3]} but the encoder reads {encoder.size} px")
    heads = AffectHeads(encoder.dim)
    if distill_weight > 0 and teacher is None:
        from export.faces.teacher import load_teacher

        teacher = load_teacher()
    params = [p for p in list(encoder.parameters()) + list(heads.parameters())]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))
    spe = steps_per_epoch or max(1, len(tr) // batch_size)
    total = epochs * spe if max_steps is None else min(epochs * spe, max_steps)
    warm = max(1, total // 20)
    for g in opt.param_groups:
        g["base_lr"] = lr

    def progress(step_: int) -> float:
        """Fraction of the cosine schedule done: by steps, or by wall time when budgeted."""
        frac = step_ / total
        if time_budget_s:
            frac = max(frac, (time.perf_counter() - t0) / time_budget_s)
        return min(frac, 1.0)

    probs = sampling_weights(tr.expression, tr.identity, class_power)
    crops = torch.from_numpy(tr.crops)
    colour = torch.from_numpy(tr.colour)
    expr_t = torch.from_numpy(tr.expression)
    val_t, aro_t = torch.from_numpy(tr.valence), torch.from_numpy(tr.arousal)
    history = {"epochs": [], "steps": 0, "seed": seed, "train_images": len(tr), "val_images": len(va),
               "steps_per_epoch": spe, "steps_planned": total, "time_budget_s": time_budget_s}
    n_syn = 0
    if synthetic is not None and len(synthetic):
        if not 0.0 <= synthetic_fraction < 1.0:
            raise ConfigError(f"synthetic_fraction must be in [0, 1), got {synthetic_fraction}")
        if tuple(synthetic.crops.shape[1:3]) != (encoder.size, encoder.size):
            raise ConfigError(f"synthetic crops are {synthetic.crops.shape[1:3]} but the encoder reads {encoder.size} px")
        n_syn = int(round(batch_size * synthetic_fraction))
        syn_rows = np.flatnonzero((synthetic.valence >= 0) | (synthetic.arousal >= 0))
        syn_crops = torch.from_numpy(synthetic.crops)
        syn_v, syn_a = torch.from_numpy(synthetic.valence), torch.from_numpy(synthetic.arousal)
        history["synthetic_images"] = len(synthetic)
        history["synthetic_fraction"] = synthetic_fraction
    n_real = batch_size - n_syn
    best, best_state = -math.inf, None
    t0 = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        encoder.train()
        heads.train()
        run = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "va": 0.0, "n": 0}
        for _ in range(spe):
            frac = progress(step)
            if step >= total or frac >= 1.0:
                break
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * frac))
            idx = torch.from_numpy(rng.choice(len(tr), size=n_real, p=probs))
            raw, col, tv, ta = to_float(crops[idx]), colour[idx], val_t[idx], aro_t[idx]
            if n_syn:
                sidx = torch.from_numpy(rng.choice(syn_rows, size=n_syn))
                raw = torch.cat([raw, to_float(syn_crops[sidx])])
                col = torch.cat([col, torch.ones(n_syn, dtype=torch.bool)])
                tv, ta = torch.cat([tv, syn_v[sidx]]), torch.cat([ta, syn_a[sidx]])
            x = augment(raw, col, gen)
            out = heads(encoder.encode_frames(x) if tied_time else encoder(still_clip(x, encoder.frames)))
            ce = F.cross_entropy(out["expression"][:n_real], expr_t[idx], label_smoothing=label_smoothing)
            loss_va = 0.5 * (_balanced_bce(out["valence"], tv) + _balanced_bce(out["arousal"], ta))
            loss = ce + va_weight * loss_va
            kd = torch.zeros(())
            if distill_weight > 0:
                from export.faces.teacher import teacher_input

                with torch.no_grad():
                    t_logits = teacher(teacher_input((x[:n_real] * 255.0).permute(0, 2, 3, 1)), logits=True)
                kd = F.kl_div(F.log_softmax(out["distill"][:n_real] / temperature, -1),
                              F.softmax(t_logits / temperature, -1), reduction="batchmean") * temperature ** 2
                loss = loss + distill_weight * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            for k, v in (("loss", loss), ("ce", ce), ("kd", kd), ("va", loss_va)):
                run[k] += float(v.detach())
            run["n"] += 1
            if log_every and step % log_every == 0:
                n = max(run["n"], 1)
                log.info("epoch %d step %d/%d loss %.3f ce %.3f kd %.3f va %.3f lr %.2e %.0f s", epoch, step,
                         total, run["loss"] / n, run["ce"] / n, run["kd"] / n, run["va"] / n,
                         opt.param_groups[0]["lr"], time.perf_counter() - t0)
        n = max(run["n"], 1)
        rec = {"epoch": epoch, "step": step, "seconds": round(time.perf_counter() - t0, 1),
               **{k: run[k] / n for k in ("loss", "ce", "kd", "va")}}
        if len(va):
            rec["val"] = evaluate(encoder, heads, va, frames_only=tied_time)
            score = _objective(rec["val"])
        if synthetic_val is not None and len(synthetic_val):
            rec["val_synthetic"] = evaluate_synthetic(encoder, heads, synthetic_val, frames_only=tied_time)
        else:
            score = -rec["loss"]
        rec["objective"] = score
        history["epochs"].append(rec)
        log.info("epoch %d done: %s", epoch, json.dumps(rec))
        if score > best:
            best = score
            best_state = ({k: v.clone() for k, v in encoder.state_dict().items()},
                          {k: v.clone() for k, v in heads.state_dict().items()})
            history["best_epoch"] = epoch
        if on_epoch is not None:
            on_epoch(encoder, heads, history)
        if step >= total or progress(step) >= 1.0:
            break
    history["steps"] = step
    history["seconds"] = round(time.perf_counter() - t0, 1)
    history["loss_first"] = history["epochs"][0]["loss"]
    history["loss_last"] = history["epochs"][-1]["loss"]
    encoder.load_state_dict(best_state[0])
    heads.load_state_dict(best_state[1])
    if tied_time:
        tie_time(encoder)
    history["tied_time"] = tied_time
    return encoder.eval(), heads.eval(), history


def save(encoder: FaceEncoder, heads: AffectHeads, path, history: dict | None = None, extra: dict | None = None) -> Path:
    """Write a ``face_encoder.pt`` that :func:`export.pretrain.load_face_encoder` reads
    ({"format", "config", "state_dict", "history"}), plus ``"heads"`` (AffectHeads state) and
    ``"heads_config"``, ``"expressions"``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": ENCODER_FORMAT, "config": encoder.config, "state_dict": encoder.state_dict(),
            "history": history or {}, "heads": heads.state_dict(),
            "heads_config": {"dim": encoder.dim, "n_teacher": heads.distill.out_features},
            "expressions": list(EXPRESSIONS), **(extra or {})}
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_heads(path) -> AffectHeads:
    """The :class:`AffectHeads` saved with an encoder by :func:`save`, in eval mode."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    cfg = blob["heads_config"]
    heads = AffectHeads(cfg["dim"], cfg["n_teacher"])
    heads.load_state_dict(blob["heads"])
    return heads.eval()


def _teacher_scores(fs: FaceSet, teacher) -> dict:
    from export.faces.teacher import teacher_logits

    probs = torch.from_numpy(teacher_logits(teacher, fs.crops)).softmax(-1).double().numpy()
    e = teacher_expression_probs(probs)
    pv, pa = readout_from_expression(e)
    out = score_va(pv, pa, fs)
    out["expression_bal_acc_7"] = balanced_accuracy(fs.expression[fs.expression != EXPRESSIONS.index("contempt")],
                                                    e.argmax(1)[fs.expression != EXPRESSIONS.index("contempt")],
                                                    fs.identity[fs.expression != EXPRESSIONS.index("contempt")])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m export.faces.train", description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="faces folder (labels.csv, images/)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--distill-weight", type=float, default=1.0)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--class-power", type=float, default=0.5)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--init", default=None, help="face_encoder.pt to start from")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--untied-time", action="store_true",
                    help="train on full 8-frame clips with per-slice positions (4x the cost)")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--time-budget-s", type=float, default=None,
                    help="wall-time budget of the training loop: the schedule anneals by time or steps, "
                         "whichever is further, and stops at the budget (not bit-reproducible)")
    ap.add_argument("--synthetic", type=int, default=0,
                    help="also train the valence / arousal heads on N generator-warped faces of train identities "
                         "(export.faces.synthetic), so synthetic sessions' expressions are readable")
    ap.add_argument("--synthetic-fraction", type=float, default=0.2, help="share of each batch that is synthetic")
    ap.add_argument("--cache", default=None, help="crop cache .npz (default OUT/crops_<size>.npz)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(out / "train.log")])
    size = encoder_preset(args.preset)["size"]
    t0 = time.perf_counter()
    fs = load_faces(args.data, size, cache=args.cache or out / f"crops_{size}.npz")
    log.info("loaded %d crops (%s) in %.0f s; split %s", len(fs), fs.crop_fn, time.perf_counter() - t0,
             dict(zip(*np.unique(fs.split, return_counts=True))))
    from export.faces.teacher import load_teacher

    teacher = load_teacher()
    metrics = {"data": str(args.data), "crop_fn": fs.crop_fn, "args": vars(args),
               "split_images": {k: int(v) for k, v in zip(*np.unique(fs.split, return_counts=True))},
               "split_identities": {s: int(len(np.unique(fs.identity[fs.split == s]))) for s in ("train", "val", "test")}}
    metrics["teacher"] = {s: _teacher_scores(fs.subset(fs.split == s), teacher) for s in ("train", "test")}
    # emofuse faces leaves out photos where the device's detector finds no face.
    metrics["teacher"]["test_detected"] = _teacher_scores(fs.subset((fs.split == "test") & fs.detected), teacher)
    log.info("teacher: %s", json.dumps(metrics["teacher"]))

    synthetic = synthetic_val = None
    if args.synthetic > 0:
        from export.faces.synthetic import render_stills

        synthetic = render_stills(args.data, args.synthetic, size, seed=args.seed)
        synthetic_val = render_stills(args.data, max(200, args.synthetic // 10), size, seed=args.seed + 1, split="val")
        metrics["synthetic"] = {"train": len(synthetic), "val": len(synthetic_val),
                                "fraction": args.synthetic_fraction}

    def checkpoint(enc, hd, hist):
        (out / "history.json").write_text(json.dumps(hist, indent=1))

    encoder, heads, hist = train(fs, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                 preset=args.preset, distill_weight=args.distill_weight,
                                 temperature=args.temperature, class_power=args.class_power, init=args.init,
                                 teacher=teacher, max_steps=args.max_steps, time_budget_s=args.time_budget_s, tied_time=not args.untied_time,
                                 on_epoch=checkpoint, synthetic=synthetic, synthetic_val=synthetic_val,
                                 synthetic_fraction=args.synthetic_fraction)
    metrics["history"] = hist
    metrics["test"] = evaluate(encoder, heads, fs.subset(fs.split == "test"))
    metrics["test_detected"] = evaluate(encoder, heads, fs.subset((fs.split == "test") & fs.detected))
    metrics["val"] = hist["epochs"][hist["best_epoch"]].get("val")
    if synthetic_val is not None:
        metrics["val_synthetic"] = evaluate_synthetic(encoder, heads, synthetic_val)
    save(encoder, heads, out / "face_encoder.pt", hist, {"metrics": {"test": metrics["test"], "test_detected": metrics["test_detected"]}})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    log.info("test: %s", json.dumps(metrics["test"]))
    log.info("test (detected faces): %s", json.dumps(metrics["test_detected"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
