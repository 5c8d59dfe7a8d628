"""Self-supervised pretraining of the facial encoder: a VideoMAE-style masked autoencoder.

Tong et al. 2022, "VideoMAE: Masked Autoencoders are Data-Efficient Learners for
Self-Supervised Video Pre-Training" (NeurIPS), after He et al. 2022, "Masked Autoencoders Are
Scalable Vision Learners" (CVPR): tube masking at a high ratio (0.75 of the spatial cells,
the same cells in every temporal slice), the encoder sees only the visible tubelets, a
light decoder reconstructs the hidden ones' per-patch-normalised pixels.

Labels are never used. The clips are the dataset's ``face_clip`` windows plus, when asked,
extra 8-frame clips cut from ``face_seq_crops`` (consecutive crops 0.5 s apart: the same
faces over the whole minute, so more expressions per subject), with flips, small shifts and
brightness jitter. Which subjects' clips are used is the caller's choice: training pretrains
on the training subjects of each fold only, so a held-out subject's face is never seen.
Sized to finish in about a minute on two CPU cores.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from export.models.vit import FaceEncoder, MaskedAutoencoder
from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)

ENCODER_FORMAT = "emofuse-face-encoder/1"


def clips_for_pretraining(face_clip: np.ndarray, face_seq_crops: np.ndarray | None = None,
                          frames: int = 8, seq_stride: int = 8) -> np.ndarray:
    """Pool of uint8 clips (M, frames, S, S, 3) for MAE pretraining.

    Args:
        face_clip: uint8 (N, frames, H, W, 3) window clips.
        face_seq_crops: optional uint8 (N, T, H, W, 3) per-window crop sequences; every
            ``seq_stride`` crops start one more clip of ``frames`` consecutive crops.
    Raises:
        BadInputError: wrong dtype or shape.
    """
    clips = np.asarray(face_clip)
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[1] != frames or clips.shape[-1] != 3:
        raise BadInputError(f"face_clip must be uint8 (N, {frames}, H, W, 3), got {clips.dtype} {clips.shape}")
    pool = [clips]
    if face_seq_crops is not None:
        seq = np.asarray(face_seq_crops)
        if seq.dtype != np.uint8 or seq.ndim != 5 or seq.shape[2:] != clips.shape[2:]:
            raise BadInputError(f"face_seq_crops must be uint8 (N, T, H, W, 3), got {seq.dtype} {seq.shape}")
        for start in range(0, seq.shape[1] - frames + 1, seq_stride):
            pool.append(seq[:, start:start + frames])
    return np.ascontiguousarray(np.concatenate(pool, axis=0))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, shift by up to 2 px and brightness/contrast jitter; (B, T, 3, H, W)."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None, None], x.flip(-1), x)
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    x = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    gain = 1.0 + 0.2 * (torch.rand(b, 1, 1, 1, 1, generator=gen) - 0.5)
    bias = 0.1 * (torch.rand(b, 1, 1, 1, 1, generator=gen) - 0.5)
    return (x * gain + bias).clamp(0.0, 1.0)


def pretrain_face_encoder(
    clips: np.ndarray,
    *,
    steps: int = 400,
    batch_size: int = 32,
    lr: float = 1.5e-3,
    weight_decay: float = 0.05,
    mask_ratio: float = 0.75,
    seed: int = 0,
    encoder_config: dict | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[FaceEncoder, dict]:
    """Train a FaceEncoder as a masked autoencoder on face clips.

    Args:
        clips: uint8 (M, 8, S, S, 3) RGB clips (see :func:`clips_for_pretraining`), S the
            encoder's crop side (``encoder_config["size"]``, 32 by default).
        steps: optimiser steps (AdamW, cosine learning-rate decay after a 5 % warm-up).
        batch_size, lr, weight_decay: optimiser settings.
        mask_ratio: fraction of spatial cells hidden in every slice (VideoMAE: 0.9; 0.75 here
            because a 4x4 grid with 90 % hidden leaves one or two cells).
        seed: seeds initialisation, batches, masks and augmentation.
        encoder_config: FaceEncoder keyword arguments (contract defaults when None).
        device: torch device.
        progress: show a tqdm bar.
    Returns:
        (the encoder, in eval mode, NOT yet frozen; history {"loss_first", "loss_last",
        "steps", "seconds", "n_clips", "mask_ratio"}), where losses are the mean over the
        first / last 10 % of steps.
    Raises:
        BadInputError: clips of the wrong dtype or shape, or none.
        ConfigError: steps or batch size < 1.
    """
    arr = np.asarray(clips)
    side = int((encoder_config or {}).get("size", 32))
    if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[2:] != (side, side, 3) or arr.shape[0] == 0:
        raise BadInputError(f"clips must be uint8 (M, T, {side}, {side}, 3) with M > 0 for this encoder, "
                            f"got {arr.dtype} {arr.shape}")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    encoder = FaceEncoder(**(encoder_config or {}))
    mae = MaskedAutoencoder(encoder, mask_ratio=mask_ratio).to(device)
    opt = torch.optim.AdamW(mae.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + np.cos(np.pi * min(i, steps) / steps))
    )
    # (M, T, H, W, 3) uint8 -> (M, T, 3, H, W) float in [0, 1], kept on the host.
    data = torch.from_numpy(arr).permute(0, 1, 4, 2, 3).contiguous()
    losses = []
    t0 = time.perf_counter()
    mae.train()
    bar = tqdm(range(steps), desc="pretrain face encoder (MAE)", disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
        x = _augment(data[idx].float() / 255.0, gen).to(device)
        loss = mae(x, generator=gen if str(device) == "cpu" else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    k = max(1, steps // 10)
    history = {
        "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
        "steps": steps, "seconds": round(time.perf_counter() - t0, 1), "n_clips": int(arr.shape[0]),
        "mask_ratio": mask_ratio, "seed": seed,
    }
    log.info("MAE pretraining: loss %.3f -> %.3f in %.0f s",
             history["loss_first"], history["loss_last"], history["seconds"])
    return encoder.eval().cpu(), history


def save_face_encoder(encoder: FaceEncoder, path, history: dict | None = None) -> Path:
    """Write ``face_encoder.pt``: {"format", "config", "state_dict", "history"}; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": ENCODER_FORMAT, "config": encoder.config,
                "state_dict": encoder.state_dict(), "history": history or {}}, path)
    return path


def load_face_encoder(path) -> tuple[FaceEncoder, dict]:
    """Read a file written by :func:`save_face_encoder`; the encoder comes back frozen, in eval mode.

    Raises:
        BadInputError: missing, unreadable or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"face encoder {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise BadInputError(f"face encoder {path} is unreadable: {exc}") from exc
    if not isinstance(blob, dict) or blob.get("format") != ENCODER_FORMAT:
        raise BadInputError(f"{path} is not an {ENCODER_FORMAT} file")
    cfg = dict(blob["config"])
    cfg["tubelet"] = tuple(cfg["tubelet"])
    encoder = FaceEncoder(**cfg)
    encoder.load_state_dict(blob["state_dict"])
    return encoder.freeze().eval(), blob.get("history", {})
