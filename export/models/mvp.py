"""MVP: long-window fusion of per-frame facial features and raw contact physiology.

Strizhkova et al. 2024, "MVP: Multimodal Emotion Recognition based on Video and Physiological
Signals" (ECCV 2024 workshops, arXiv 2501.03103). What the paper does, at edge scale:

- Long inputs (here 60 s): the video as a sequence of features from a frozen, MAE-pretrained
  video backbone (the paper uses VideoMAE features; here the frozen
  :class:`~export.models.vit.FaceEncoder`'s pooled feature of one face crop every 0.5 s,
  ``face_feats`` (B, 120, 64)), and the raw physiological signals (``contact``: PPG and EDA,
  (B, 2, 1920) at 32 Hz) tokenised by 1-D convolutions. Both sequences become one token per
  ``pool`` x 0.5 s (default 1 s: 60 tokens each, aligned in time): face features are averaged
  in pairs, the convolutions stride 4 x 8. Halving the tokens quarters the attention cost on
  the device; a second of resolution is still far finer than the emotions being tracked.
- Each modality first gets its own self-attention layer, then the modalities are fused
  mid-way by cross-attention layers in which the physiological tokens are the queries and
  the facial tokens the keys and values, as in the paper.
- Heads for valence and arousal read the mean fused token and the mean facial token.
  Deviation, stated: the ``contact_level`` summaries (mean heart rate / 100, tonic EDA / 10)
  are concatenated before the heads, because the per-window z-scoring of ``contact`` removes
  the levels that arousal moves.

The face encoder is not part of this module: on the device ``face_feats`` come frame by frame
from ``face_encoder.onnx``; :func:`face_feats_from_crops` computes them the same way here.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from export.models.baselines import ClassHead, EmotionModel
from export.models.vit import Block, CrossBlock, FaceEncoder
from firmware_bridge.errors import BadInputError, ConfigError


class MVP(EmotionModel):
    """Cross-attention fusion of face-feature and contact-signal token sequences.

    Args:
        feat_dim: face feature size (64, the encoder's dim).
        n_tokens: face features per window (120 = 60 s at 2 Hz).
        pool: face features averaged per token (2: one token per second).
        contact_len: contact samples per window (1920 = 60 s at 32 Hz).
        dim, heads: token width and attention heads (64, 4).
        self_depth: self-attention layers per modality before fusion (1).
        cross_depth: cross-attention fusion layers (2).
        head_hidden, dropout: head sizes.

    forward(face_feats (B, 120, 64), contact (B, 2, 1920), contact_level (B, 2)) ->
    (valence_logits, arousal_logits), each float32 (B, 2).
    """

    name = "mvp"
    input_names = ("face_feats", "contact", "contact_level")

    def __init__(
        self,
        feat_dim: int = 64,
        n_tokens: int = 120,
        pool: int = 2,
        contact_len: int = 1920,
        dim: int = 64,
        heads: int = 4,
        self_depth: int = 1,
        cross_depth: int = 2,
        mlp_ratio: float = 2.0,
        head_hidden: int = 0,
        dropout: float = 0.1,
    ):
        super().__init__(
            feat_dim=feat_dim, n_tokens=n_tokens, pool=pool, contact_len=contact_len, dim=dim, heads=heads,
            self_depth=self_depth, cross_depth=cross_depth, mlp_ratio=mlp_ratio,
            head_hidden=head_hidden, dropout=dropout,
        )
        if pool not in (1, 2, 4) or n_tokens % pool:
            raise ConfigError(f"pool must be 1, 2 or 4 and divide n_tokens ({n_tokens}), got {pool}")
        if contact_len != 16 * n_tokens:
            raise ConfigError(
                f"contact_len {contact_len} must be 16 x n_tokens ({n_tokens}): one face feature per 16 samples"
            )
        self.feat_dim, self.pool, self.n_out = feat_dim, pool, n_tokens // pool
        self.face_in = nn.Sequential(nn.LayerNorm(feat_dim), nn.Linear(feat_dim, dim))
        self.phys_in = nn.Sequential(
            nn.Conv1d(2, dim // 2, 9, stride=4, padding=4), nn.GELU(),
            nn.Conv1d(dim // 2, dim, 4 * pool + 1, stride=4 * pool, padding=2 * pool),
        )
        self.face_pos = nn.Parameter(torch.zeros(1, self.n_out, dim))
        self.phys_pos = nn.Parameter(torch.zeros(1, self.n_out, dim))
        nn.init.trunc_normal_(self.face_pos, std=0.02)
        nn.init.trunc_normal_(self.phys_pos, std=0.02)
        self.face_self = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(self_depth))
        self.phys_self = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(self_depth))
        self.cross = nn.ModuleList(CrossBlock(dim, heads, mlp_ratio) for _ in range(cross_depth))
        self.norm = nn.LayerNorm(dim)
        self.valence_head = ClassHead(2 * dim + 2, head_hidden, dropout)
        self.arousal_head = ClassHead(2 * dim + 2, head_hidden, dropout)

    def forward(self, face_feats: torch.Tensor, contact: torch.Tensor, contact_level: torch.Tensor):
        if self.pool > 1:
            face_feats = face_feats.reshape(-1, self.n_out, self.pool, self.feat_dim).mean(dim=2)
        face = self.face_in(face_feats) + self.face_pos
        phys = self.phys_in(contact).transpose(1, 2) + self.phys_pos
        for blk in self.face_self:
            face = blk(face)
        for blk in self.phys_self:
            phys = blk(phys)
        for blk in self.cross:
            phys = blk(phys, face)
        feat = torch.cat([self.norm(phys).mean(dim=1), self.norm(face).mean(dim=1), contact_level], dim=-1)
        return self.valence_head(feat), self.arousal_head(feat)


@torch.no_grad()
def face_feats_from_crops(encoder: FaceEncoder, crops: np.ndarray, batch: int = 512,
                          device: str | torch.device = "cpu") -> np.ndarray:
    """MVP's ``face_feats`` from stored face crops, exactly as face_encoder.onnx computes them.

    Args:
        encoder: the frozen pretrained FaceEncoder (put in eval mode here).
        crops: uint8 (N, T, 32, 32, 3) RGB crops (the dataset's ``face_seq_crops``), or
            (T, 32, 32, 3) for one window.
        batch: crops per encoder call.
    Returns:
        float32 (N, T, dim) (or (T, dim)): ``encoder.encode_frames`` of each crop / 255.
    Raises:
        BadInputError: crops of the wrong rank or dtype.
    """
    arr = np.asarray(crops)
    single = arr.ndim == 4
    if single:
        arr = arr[None]
    if arr.ndim != 5 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise BadInputError(f"crops must be uint8 (N, T, H, W, 3), got {arr.dtype} {arr.shape}")
    encoder.eval()
    n, t = arr.shape[:2]
    flat = arr.reshape(n * t, *arr.shape[2:])
    out = np.empty((n * t, encoder.dim), np.float32)
    for i in range(0, n * t, batch):
        x = torch.from_numpy(flat[i:i + batch]).to(device).permute(0, 3, 1, 2).float() / 255.0
        out[i:i + batch] = encoder.encode_frames(x).cpu().numpy()
    out = out.reshape(n, t, encoder.dim)
    return out[0] if single else out
