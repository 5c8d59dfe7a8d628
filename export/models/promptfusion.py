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

from export.models.baselines import ClassHead, ContactCNN, EmotionModel, TfrCNN
from export.models.vit import FaceEncoder
from firmware_bridge.errors import ConfigError

#: Presence flags of PromptFusionMM's ``present`` input (edge.preprocess.MODALITIES).
N_FLAGS = 6


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
        x, shared, specific = self._blocks(enc.tokens(face_clip), self.prompts(tfr), aux)
        n_p = self.n_prompts
        feat = torch.cat([x[:, n_p:].mean(dim=1), x[:, :n_p].mean(dim=1)], dim=-1)
        return feat, shared, specific

    def _blocks(self, face: torch.Tensor, prompts: torch.Tensor, aux: bool):
        """The frozen blocks with layer-wise prompts (VPT-deep) and the DSSA after each: final-norm
        tokens (B, n_prompts + N, D), prompts first, and the per-layer shared / specific lists."""
        n_p = self.n_prompts
        shared, specific = [], []
        x = face
        for layer, blk in enumerate(self.encoder.blocks):
            x = blk(torch.cat([prompts[:, layer], face], dim=1))
            x, s, p = self.adapters[layer](x, aux)
            shared.append(s)
            specific.append(p)
            face = x[:, n_p:]
        return self.encoder.norm(x), shared, specific

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


class PromptFusionMM(PromptFusion):
    """emofuse's variant of :class:`PromptFusion`: every modality, none required.

    Not the paper's model (which reads the face clip and the rPPG TFR only): the prompts are
    conditioned on the contact sensor's PPG / EDA rows and level summaries too, and every
    input after the face clip comes with a presence flag, so one graph answers from whatever
    is there - a face alone, a face and its pulse, or a face with a worn sensor.

    - ``present`` (B, 6) float flags in :data:`edge.preprocess.MODALITIES` order: face, pulse
      (the TFR), PPG row, EDA row, heart-rate level, EDA level. Each input is multiplied by its
      flag inside the graph, so an absent input is ignored whatever its values.
    - Prompts: learned base + flag(pulse) * TFR offset + a contact offset computed from the
      gated contact rows, levels and flags (zero-initialised, like the TFR offset's output).
    - Face: a missing face replaces the pooled face token by a learned "absent" token.
    - Heads read [pooled face token, pooled prompt token, flags].
    - Training: modality dropout (Neverova et al. 2016, "ModDrop: Adaptive Multi-Modal Gesture
      Recognition", IEEE TPAMI 38(8)) drops each present modality group with its own
      probability (face ``drop_face``, pulse ``drop_pulse``, contact ``drop_contact``), never
      all of them, so the heads learn every subset. Within a kept contact group the rows are
      dropped with ``drop_rows`` (the runtime has the levels after 10 s but the rows only once
      90 % of a 60 s window exists, so a worn sensor's first ~54 s are levels alone) and each
      channel - PPG row and heart-rate level, EDA row and level - with ``drop_channel`` (a
      sensor with one of the two). Targets of -1 (a still photo whose
      expression says nothing about arousal, say) and subjects of -1 (photos are not training
      subjects) are left out of their losses.

    forward(face_clip (B, 8, 3, S, S), tfr (B, 1, 32, 32), contact (B, 2, 1920),
    contact_level (B, 2), present (B, 6)) -> (valence_logits, arousal_logits), (B, 2) each.
    """

    name = "promptfusion_mm"
    input_names = ("face_clip", "tfr", "contact", "contact_level", "present")
    #: Inputs the runtime may mark absent (flag 0) instead of waiting for them.
    optional_inputs = ("tfr", "contact", "contact_level")

    def __init__(self, n_subjects: int = 2, encoder: dict | None = None, contact_width: int = 8,
                 drop_face: float = 0.15, drop_pulse: float = 0.3, drop_contact: float = 0.4,
                 drop_rows: float = 0.35, drop_channel: float = 0.15, **kwargs):
        super().__init__(n_subjects=n_subjects, encoder=encoder, **kwargs)
        self.config.update(contact_width=contact_width, drop_face=drop_face, drop_pulse=drop_pulse,
                           drop_contact=drop_contact, drop_rows=drop_rows, drop_channel=drop_channel)
        d, depth = self.encoder.dim, len(self.encoder.blocks)
        self.contact_cnn = ContactCNN(2, contact_width)
        self.contact_to_prompts = nn.Linear(self.contact_cnn.out_dim + 2 + N_FLAGS, depth * self.n_prompts * d)
        nn.init.zeros_(self.contact_to_prompts.weight)
        nn.init.zeros_(self.contact_to_prompts.bias)
        self.face_absent = nn.Parameter(torch.zeros(1, d))
        head_in = 2 * d + N_FLAGS
        self.valence_head = ClassHead(head_in, self.config["head_hidden"], self.config["dropout"])
        self.arousal_head = ClassHead(head_in, self.config["head_hidden"], self.config["dropout"])
        self.drops = (float(drop_face), float(drop_pulse), float(drop_contact))
        self.contact_drops = (float(drop_rows), float(drop_channel))
        # Softmax temperatures (valence, arousal) per set of modalities: :attr:`temperature`
        # for the face alone (fitted on real photos), :attr:`temperature_pulse` when the rPPG
        # pulse joins without a contact sensor, :attr:`temperature_physio` when a contact row or
        # level is present; the last two fitted on subjects the model never saw (export.train:
        # the cross-validation's held-out windows, with and without their contact inputs).
        self.register_buffer("temperature_pulse", torch.ones(2))
        self.register_buffer("temperature_physio", torch.ones(2))

    def probabilities(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated probabilities: the logits divided by :attr:`temperature` when only the face
        is present, by :attr:`temperature_pulse` with the pulse but no contact input, by
        :attr:`temperature_physio` with any contact input."""
        v, a = self(**inputs)
        present = inputs["present"]
        contact = (present[:, 2:].amax(dim=1, keepdim=True) > 0).to(v.dtype)
        pulse = (present[:, 1:2] > 0).to(v.dtype) * (1.0 - contact)
        face = 1.0 - contact - pulse
        t = face * self.temperature + pulse * self.temperature_pulse + contact * self.temperature_physio
        return torch.softmax(v / t[:, 0:1], dim=-1), torch.softmax(a / t[:, 1:2], dim=-1)

    def _prompts(self, tfr, contact, contact_level, present):
        pulse = present[:, 1:2]
        rows = contact * present[:, 2:4, None]
        level = contact_level * present[:, 4:6]
        offset_tfr = self.prompts.to_prompts(self.prompts.cnn(tfr * pulse[:, :, None, None]))
        c = torch.cat([self.contact_cnn(rows), level, present], dim=-1)
        offset = pulse * offset_tfr + self.contact_to_prompts(c)
        p = self.prompts
        return p.base + offset.reshape(-1, p.depth, p.n_prompts, p.dim)

    def features_mm(self, face_clip, tfr, contact, contact_level, present, aux: bool = False):
        """Pooled fused feature (B, 2*dim + 6) and, when ``aux``, per-layer shared/specific lists."""
        face_flag = present[:, 0:1]
        face = self.encoder.tokens(face_clip * face_flag[:, :, None, None, None])
        x, shared, specific = self._blocks(face, self._prompts(tfr, contact, contact_level, present), aux)
        n_p = self.n_prompts
        pooled_face = face_flag * x[:, n_p:].mean(dim=1) + (1.0 - face_flag) * self.face_absent
        feat = torch.cat([pooled_face, x[:, :n_p].mean(dim=1), present], dim=-1)
        return feat, shared, specific

    def forward(self, face_clip, tfr, contact, contact_level, present):
        feat, _, _ = self.features_mm(face_clip, tfr, contact, contact_level, present)
        return self.valence_head(feat), self.arousal_head(feat)

    def modality_dropout(self, present: torch.Tensor) -> torch.Tensor:
        """Flags with modality groups dropped at random (training only); at least one group stays."""
        b = present.shape[0]
        drop_face, drop_pulse, drop_contact = self.drops
        drop_rows, drop_channel = self.contact_drops
        # The groups, then the patterns inside the contact group that the runtime produces:
        # levels without rows (a sensor's first ~54 s), one channel without the other (a
        # PPG-only or EDA-only sensor).
        drops = (([0], drop_face), ([1], drop_pulse), ([2, 3, 4, 5], drop_contact),
                 ([2, 3], drop_rows), ([2, 4], drop_channel), ([3, 5], drop_channel))
        out = present.clone()
        for cols, p in drops:
            drop = torch.rand(b, device=present.device) < p
            out[:, cols] = torch.where(drop[:, None], torch.zeros_like(out[:, cols]), out[:, cols])
        left = (out[:, 0] + out[:, 1] + out[:, 2:].amax(dim=1)) > 0
        return torch.where(left[:, None], out, present)

    def training_loss(self, inputs: dict, targets: dict, progress: float = 0.0):
        """Masked emotion cross-entropies (targets -1 ignored) plus the DSSA losses on the
        samples that belong to a training subject (subject >= 0), after modality dropout."""
        present = self.modality_dropout(inputs["present"]) if self.training else inputs["present"]
        feat, shared, specific = self.features_mm(inputs["face_clip"], inputs["tfr"], inputs["contact"],
                                                  inputs["contact_level"], present, aux=self.invariant)
        v, a = self.valence_head(feat), self.arousal_head(feat)
        total = v.new_zeros(())
        parts = {}
        for task, logits in (("valence", v), ("arousal", a)):
            t = targets[task]
            if (t >= 0).any():
                loss = F.cross_entropy(logits, t, ignore_index=-1, weight=targets.get(f"{task}_weight"))
                total = total + loss
                parts[task] = loss.item()
        subject = targets["subject"]
        mine = subject >= 0
        if self.invariant and int(mine.sum()) >= 2:
            s_all = torch.cat(shared, dim=-1)[mine]
            p_all = torch.cat(specific, dim=-1)[mine]
            l_adv = F.cross_entropy(self.shared_subject(grad_reverse(s_all, dann_schedule(progress))), subject[mine])
            l_spec = F.cross_entropy(self.specific_subject(p_all), subject[mine])
            l_orth = torch.stack([orthogonality_loss(s[mine], p[mine]) for s, p in zip(shared, specific)]).mean()
            total = total + self.adv_weight * l_adv + self.specific_weight * l_spec + self.orth_weight * l_orth
            parts.update(subject_adv=l_adv.item(), subject_specific=l_spec.item(), orth=l_orth.item())
        return total, parts, (v, a)
