"""The common model interface, shared branches, and the unimodal baselines.

Every emotion model is an :class:`EmotionModel`: ``forward(**inputs)`` takes the contract's
keyword tensors (only those named in ``input_names``) and returns ``(valence_logits,
arousal_logits)``, each (B, 2) over [low, high]; ``export_forward(*inputs)`` takes them
positionally in ``input_names`` order and returns the two softmax probabilities (the ONNX
outputs ``valence_prob`` and ``arousal_prob``); ``training_loss`` gives the training objective
(cross-entropy of both heads, plus whatever auxiliary losses a model adds).

Baselines (one modality each, same heads):

- ``face``: the frozen pretrained :class:`~export.models.vit.FaceEncoder` over ``face_clip`` +
  an MLP head (a linear-probe-style baseline, as VideoMAE evaluates frozen features).
- ``rppg``: a small 2-D CNN over the rPPG time-frequency image ``tfr`` (the same CNN is
  PromptFusion's prompt generator).
- ``contact``: 1-D convolutions over the ``contact`` PPG + EDA window, globally pooled, with the
  ``contact_level`` summaries concatenated before the heads.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from export.models.vit import FaceEncoder
from firmware_bridge.errors import BadInputError, ConfigError

LABELS = {"valence": ["low", "high"], "arousal": ["low", "high"]}


class EmotionModel(nn.Module):
    """Base class: config bookkeeping, export forward and the default training loss."""

    name: str = ""
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ("valence_prob", "arousal_prob")

    #: Inputs the runtime may mark absent (a presence flag of 0) instead of waiting for them.
    optional_inputs: tuple[str, ...] = ()

    def __init__(self, **config):
        super().__init__()
        # Every constructor argument, JSON-ready: build_model(name, **config) rebuilds the model.
        self.config = dict(config)
        # Softmax temperatures (valence, arousal), fitted on held-out data after training
        # (Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML); 1 = uncalibrated.
        # A buffer, so the checkpoint and the exported graph carry it.
        self.register_buffer("temperature", torch.ones(2))

    def export_forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Positional inputs in ``input_names`` order -> (valence_prob, arousal_prob), (B, 2) each."""
        if len(inputs) != len(self.input_names):
            raise BadInputError(
                f"{self.name} takes {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}"
            )
        return self.probabilities(**dict(zip(self.input_names, inputs)))

    def probabilities(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated probabilities (valence (B, 2), arousal (B, 2)): softmax of the logits divided
        by :attr:`temperature`."""
        v, a = self(**inputs)
        return torch.softmax(v / self.temperature[0], dim=-1), torch.softmax(a / self.temperature[1], dim=-1)

    def training_loss(self, inputs: dict, targets: dict, progress: float = 0.0):
        """Training objective on one batch.

        Args:
            inputs: the model's input tensors by name.
            targets: ``valence``, ``arousal`` int64 (B,) class indices (0 low, 1 high) and
                ``subject`` int64 (B,) training-subject index in [0, n_subjects).
            progress: fraction of training done, in [0, 1] (for loss schedules).
        Returns:
            (total loss scalar, {part name: float}, (valence_logits, arousal_logits)).
        """
        v, a = self(**inputs)
        lv = F.cross_entropy(v, targets["valence"])
        la = F.cross_entropy(a, targets["arousal"])
        return lv + la, {"valence": lv.item(), "arousal": la.item()}, (v, a)

    def load_face_encoder(self, state_dict: dict) -> None:
        """Load pretrained FaceEncoder weights into this model's encoder and freeze it."""
        encoder = getattr(self, "encoder", None)
        if encoder is None:
            raise ConfigError(f"model {self.name!r} has no face encoder")
        encoder.load_state_dict(state_dict)
        encoder.freeze()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class ClassHead(nn.Module):
    """Class head: BatchNorm -> [Linear -> GELU] -> Dropout -> Linear. (B, in) -> (B, n_out) logits.

    ``hidden=0`` gives a linear head (a linear probe, as VPT and VideoMAE evaluate frozen
    features): with a few hundred training windows a hidden layer mostly memorises them.
    The batch norm standardises each feature over the data (what a linear probe's feature
    scaling does): features of a frozen encoder differ little between faces, and unscaled
    they would need many more steps to separate. In eval mode it is an affine map.
    """

    def __init__(self, in_dim: int, hidden: int = 0, dropout: float = 0.1, n_out: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(in_dim)]
        if hidden:
            layers += [nn.Linear(in_dim, hidden), nn.GELU()]
        layers += [nn.Dropout(dropout), nn.Linear(hidden or in_dim, n_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TfrCNN(nn.Module):
    """Small CNN over a (B, 1, 32, 32) time-frequency image -> (B, out_dim) feature.

    Three stride-2 3x3 convolutions (32 -> 4 pixels) then a flatten and a linear layer: the
    flatten keeps *where* the energy is (rows are frequencies, so the heart rate is a row
    position), which global pooling would throw away.
    """

    def __init__(self, size: int = 32, width: int = 8, out_dim: int = 64):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GELU(),
        )
        side = size // 8
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * width * side * side, out_dim), nn.GELU())

    def forward(self, tfr: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(tfr))


class ContactCNN(nn.Module):
    """1-D CNN over (B, 2, 1920) PPG + EDA at 32 Hz -> (B, 2 * 4 * width) pooled feature.

    Strides 4, 4, 2 reach 60 steps (1 s each); mean and max pooling over time summarise
    how much the signals move (skin-conductance responses, pulse shape) over the minute.
    """

    def __init__(self, channels: int = 2, width: int = 8):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(channels, 2 * width, 9, stride=4, padding=4), nn.GELU(),
            nn.Conv1d(2 * width, 4 * width, 9, stride=4, padding=4), nn.GELU(),
            nn.Conv1d(4 * width, 4 * width, 5, stride=2, padding=2), nn.GELU(),
        )
        self.out_dim = 8 * width

    def forward(self, contact: torch.Tensor) -> torch.Tensor:
        h = self.conv(contact)
        return torch.cat([h.mean(dim=-1), h.amax(dim=-1)], dim=-1)


class FaceBaseline(EmotionModel):
    """Frozen pretrained face encoder + heads on its pooled clip feature (face only)."""

    name = "face"
    input_names = ("face_clip",)

    def __init__(self, encoder: dict | None = None, head_hidden: int = 0, dropout: float = 0.1):
        super().__init__(encoder=dict(encoder or {}), head_hidden=head_hidden, dropout=dropout)
        self.encoder = FaceEncoder(**(encoder or {})).freeze()
        d = self.encoder.dim
        self.valence_head = ClassHead(d, head_hidden, dropout)
        self.arousal_head = ClassHead(d, head_hidden, dropout)

    def forward(self, face_clip: torch.Tensor):
        f = self.encoder(face_clip)
        return self.valence_head(f), self.arousal_head(f)


class RppgBaseline(EmotionModel):
    """TFR CNN + heads (remote physiology only)."""

    name = "rppg"
    input_names = ("tfr",)

    def __init__(self, width: int = 8, feat_dim: int = 64, head_hidden: int = 0, dropout: float = 0.1):
        super().__init__(width=width, feat_dim=feat_dim, head_hidden=head_hidden, dropout=dropout)
        self.cnn = TfrCNN(32, width, feat_dim)
        self.valence_head = ClassHead(feat_dim, head_hidden, dropout)
        self.arousal_head = ClassHead(feat_dim, head_hidden, dropout)

    def forward(self, tfr: torch.Tensor):
        f = self.cnn(tfr)
        return self.valence_head(f), self.arousal_head(f)


class ContactBaseline(EmotionModel):
    """1-D CNN over contact PPG + EDA, with the level summaries concatenated before the heads."""

    name = "contact"
    input_names = ("contact", "contact_level")

    def __init__(self, width: int = 8, head_hidden: int = 0, dropout: float = 0.1):
        super().__init__(width=width, head_hidden=head_hidden, dropout=dropout)
        self.cnn = ContactCNN(2, width)
        d = self.cnn.out_dim + 2
        self.valence_head = ClassHead(d, head_hidden, dropout)
        self.arousal_head = ClassHead(d, head_hidden, dropout)

    def forward(self, contact: torch.Tensor, contact_level: torch.Tensor):
        f = torch.cat([self.cnn(contact), contact_level], dim=-1)
        return self.valence_head(f), self.arousal_head(f)
