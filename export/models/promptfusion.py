"""PromptFusion: subject-invariant cross-modal prompt tuning of a frozen facial ViT.

Luo, Li, Song, Liu & Cheng 2026, "Adaptive Physical-Facial Representation Fusion via
Subject-Invariant Cross-Modal Prompt Tuning for Video-Based Emotion Recognition" (arXiv
2605.05694). What the paper does, at this repository's (edge) scale:

- The facial ViT (:class:`~export.models.vit.FaceEncoder`, pretrained as a masked
  autoencoder) stays **frozen**: its tubelet tokens and every block keep their weights.
- The rPPG pulse's time-frequency image (TFR) goes through a small CNN, the **prompt
  generator**, which emits ``n_prompts`` modality-complementary prompt tokens **for every
  layer**. Deep prompt tuning (Jia et al. 2022, "Visual Prompt Tuning", ECCV, VPT-deep): before
  block ``l`` the layer's prompts are prepended to the face tokens; after the block the prompt
  outputs are dropped and replaced by layer ``l + 1``'s prompts. Each layer's prompts are a
  learned per-layer embedding plus a TFR-conditioned offset.
- A **decoupled shared-specific adapter** (DSSA) follows every block. Both branches are
  bottleneck adapters (Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP",
  ICML). The *shared* branch adapts the token stream (its up-projection starts at zero, so
  training starts from the frozen encoder's function) and is pushed to be subject-invariant
  by a subject classifier behind a gradient reversal layer (Ganin & Lempitsky 2015,
  "Unsupervised Domain Adaptation by Backpropagation", ICML); the *specific* branch is a side
  branch trained to carry subject identity by its own subject classifier, and an
  orthogonality loss between the two branches' features keeps identity out of the shared
  one. Decoupling as in Domain Separation Networks (Bousmalis et al. 2016, NeurIPS): the
  private (specific) features serve the training losses only, so inference skips them.
  This split of roles is our reading of the paper's DSSA (the abstract does not say whether
  the specific branch also feeds the prediction).
- Only prompts, the prompt generator, adapters and heads train. Heads (valence, arousal,
  two classes each) read the concatenation of the mean face token and the mean prompt
  token after the last block and the encoder's (frozen) final norm.

``promptfusion_noinv`` (:class:`PromptFusionNoInv`) is the ablation: the same prompts and
plain (shared-only) adapters, without the gradient reversal, the specific branch, the
subject classifiers or the orthogonality loss.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from export.models.baselines import ClassHead, EmotionModel, TfrCNN
from export.models.vit import FaceEncoder
from firmware_bridge.errors import ConfigError


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by ``-scale`` (Ganin & Lempitsky 2015).

    Used only in the training losses, never in the exported graph.
    """
    return _GradReverse.apply(x, float(scale))


def dann_schedule(progress: float, gamma: float = 10.0) -> float:
    """GRL strength 2 / (1 + exp(-gamma p)) - 1 for training progress p in [0, 1] (Ganin et al.
    2016, JMLR 17): the adversary's gradient fades in while its classifier is still noise."""
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def orthogonality_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius norm of the cross-correlation of two feature sets (DSN's difference
    loss, Bousmalis et al. 2016), on centred, L2-normalised rows, divided by the batch size.

    Args:
        a, b: float32 (B, D) features of the same samples. Returns a scalar >= 0, zero when
        every column of ``a`` is orthogonal (over the batch) to every column of ``b``.
    """
    a = F.normalize(a - a.mean(dim=0, keepdim=True), dim=1, eps=1e-6)
    b = F.normalize(b - b.mean(dim=0, keepdim=True), dim=1, eps=1e-6)
    return (a.transpose(0, 1) @ b).pow(2).sum() / a.shape[0]


class Adapter(nn.Module):
    """Bottleneck adapter D -> r -> D (Houlsby et al. 2019). (B, N, D) -> (B, N, D) (the update)."""

    def __init__(self, dim: int, bottleneck: int, zero_init: bool):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, dim)
        if zero_init:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class SharedSpecificAdapter(nn.Module):
    """One layer's DSSA: a shared adapter on the stream and (optionally) a specific side branch."""

    def __init__(self, dim: int, bottleneck: int, specific: bool):
        super().__init__()
        self.shared = Adapter(dim, bottleneck, zero_init=True)
        self.specific = Adapter(dim, bottleneck, zero_init=False) if specific else None

    def forward(self, x: torch.Tensor, aux: bool = False):
        """Returns (updated tokens, pooled shared update (B, D) or None, pooled specific (B, D) or None)."""
        s = self.shared(x)
        if not aux:
            return x + s, None, None
        p = self.specific(x).mean(dim=1) if self.specific is not None else None
        return x + s, s.mean(dim=1), p


class PromptGenerator(nn.Module):
    """TFR (B, 1, 32, 32) -> prompts (B, depth, n_prompts, dim): learned base + TFR offset."""

    def __init__(self, depth: int, n_prompts: int, dim: int, width: int = 8, hidden: int = 64):
        super().__init__()
        self.depth, self.n_prompts, self.dim = depth, n_prompts, dim
        self.cnn = TfrCNN(32, width, hidden)
        self.to_prompts = nn.Linear(hidden, depth * n_prompts * dim)
        self.base = nn.Parameter(torch.zeros(1, depth, n_prompts, dim))
        nn.init.trunc_normal_(self.base, std=0.02)
        nn.init.normal_(self.to_prompts.weight, std=0.02)
        nn.init.zeros_(self.to_prompts.bias)

    def forward(self, tfr: torch.Tensor) -> torch.Tensor:
        offset = self.to_prompts(self.cnn(tfr)).reshape(-1, self.depth, self.n_prompts, self.dim)
        return self.base + offset


class PromptFusion(EmotionModel):
    """Frozen facial ViT + TFR-generated deep prompts + decoupled shared-specific adapters.

    Args:
        n_subjects: number of training subjects (size of the subject classifiers; training
            only, the exported graph does not use them).
        encoder: FaceEncoder keyword arguments (contract defaults when empty).
        n_prompts: prompt tokens per layer (4).
        bottleneck: adapter bottleneck width (16).
        prompt_width, prompt_hidden: the prompt generator CNN's width and feature size.
        head_hidden, dropout: head sizes.
        adv_weight, specific_weight, orth_weight: weights of the adversarial (GRL) subject
            loss, the specific branch's subject loss and the orthogonality loss.

    forward(face_clip (B, 8, 3, 32, 32) in [0, 1], tfr (B, 1, 32, 32)) -> (valence_logits,
    arousal_logits), each float32 (B, 2).
    """

    name = "promptfusion"
    input_names = ("face_clip", "tfr")
    invariant = True

    def __init__(
        self,
        n_subjects: int = 2,
        encoder: dict | None = None,
        n_prompts: int = 4,
        bottleneck: int = 16,
        prompt_width: int = 8,
        prompt_hidden: int = 64,
        head_hidden: int = 0,
        dropout: float = 0.1,
        adv_weight: float = 0.1,
        specific_weight: float = 0.1,
        orth_weight: float = 0.1,
    ):
        super().__init__(
            n_subjects=int(n_subjects), encoder=dict(encoder or {}), n_prompts=n_prompts,
            bottleneck=bottleneck, prompt_width=prompt_width, prompt_hidden=prompt_hidden,
            head_hidden=head_hidden, dropout=dropout, adv_weight=adv_weight,
            specific_weight=specific_weight, orth_weight=orth_weight,
        )
        self.encoder = FaceEncoder(**(encoder or {})).freeze()
        d, depth = self.encoder.dim, len(self.encoder.blocks)
        self.n_prompts = n_prompts
        self.prompts = PromptGenerator(depth, n_prompts, d, prompt_width, prompt_hidden)
        self.adapters = nn.ModuleList(
            SharedSpecificAdapter(d, bottleneck, specific=self.invariant) for _ in range(depth)
        )
        self.valence_head = ClassHead(2 * d, head_hidden, dropout)
        self.arousal_head = ClassHead(2 * d, head_hidden, dropout)
        if self.invariant:
            if n_subjects < 1:
                raise ConfigError(f"the subject classifiers need n_subjects >= 1, got {n_subjects}")
            # MLP subject classifiers: a linear adversary is too easy to fool (Ganin et al. 2016).
            self.shared_subject = ClassHead(depth * d, 64, 0.0, n_subjects)
            self.specific_subject = ClassHead(depth * d, 64, 0.0, n_subjects)
        self.adv_weight, self.specific_weight, self.orth_weight = adv_weight, specific_weight, orth_weight

    def features(self, face_clip: torch.Tensor, tfr: torch.Tensor, aux: bool = False):
        """Pooled fused feature (B, 2*dim) and, when ``aux``, per-layer pooled shared/specific lists."""
        enc = self.encoder
        prompts = self.prompts(tfr)
        face = enc.tokens(face_clip)
        n_p = self.n_prompts
        shared, specific = [], []
        x = face
        for layer, blk in enumerate(enc.blocks):
            x = blk(torch.cat([prompts[:, layer], face], dim=1))
            x, s, p = self.adapters[layer](x, aux)
            shared.append(s)
            specific.append(p)
            face = x[:, n_p:]
        x = enc.norm(x)
        feat = torch.cat([x[:, n_p:].mean(dim=1), x[:, :n_p].mean(dim=1)], dim=-1)
        return feat, shared, specific

    def forward(self, face_clip: torch.Tensor, tfr: torch.Tensor):
        feat, _, _ = self.features(face_clip, tfr)
        return self.valence_head(feat), self.arousal_head(feat)

    def training_loss(self, inputs: dict, targets: dict, progress: float = 0.0):
        """Emotion cross-entropies plus, for the invariant model, the DSSA losses:
        ``adv_weight`` * CE(subject | GRL(shared)) with the DANN ramp, ``specific_weight`` *
        CE(subject | specific) and ``orth_weight`` * mean over layers of the orthogonality loss."""
        feat, shared, specific = self.features(inputs["face_clip"], inputs["tfr"], aux=self.invariant)
        v, a = self.valence_head(feat), self.arousal_head(feat)
        lv = F.cross_entropy(v, targets["valence"])
        la = F.cross_entropy(a, targets["arousal"])
        total = lv + la
        parts = {"valence": lv.item(), "arousal": la.item()}
        if self.invariant:
            subject = targets["subject"]
            s_all = torch.cat(shared, dim=-1)
            p_all = torch.cat(specific, dim=-1)
            l_adv = F.cross_entropy(self.shared_subject(grad_reverse(s_all, dann_schedule(progress))), subject)
            l_spec = F.cross_entropy(self.specific_subject(p_all), subject)
            l_orth = torch.stack([orthogonality_loss(s, p) for s, p in zip(shared, specific)]).mean()
            total = total + self.adv_weight * l_adv + self.specific_weight * l_spec + self.orth_weight * l_orth
            parts.update(subject_adv=l_adv.item(), subject_specific=l_spec.item(), orth=l_orth.item())
        return total, parts, (v, a)


class PromptFusionNoInv(PromptFusion):
    """Ablation of :class:`PromptFusion` without the invariance machinery: shared-only
    adapters, no gradient reversal, no specific branch, no subject or orthogonality losses."""

    name = "promptfusion_noinv"
    invariant = False

    def __init__(self, n_subjects: int = 0, **kwargs):
        kwargs.pop("adv_weight", None)
        kwargs.pop("specific_weight", None)
        kwargs.pop("orth_weight", None)
        super().__init__(n_subjects=n_subjects, adv_weight=0.0, specific_weight=0.0, orth_weight=0.0, **kwargs)
