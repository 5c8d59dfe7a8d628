"""emofuse's emotion models: registry, construction, checkpoints, size and cost.

``MODELS`` maps the contract's names to classes: ``promptfusion`` and ``promptfusion_noinv``
(:mod:`export.models.promptfusion`), ``mvp`` (:mod:`export.models.mvp`), and the unimodal
baselines ``face``, ``rppg``, ``contact`` (:mod:`export.models.baselines`). Every model takes
keyword tensors named as in ``INPUT_SPECS`` (only those in its ``input_names``) and returns
``(valence_logits, arousal_logits)``; :func:`export_module` wraps one for ONNX export
(positional inputs in ``input_names`` order -> ``valence_prob``, ``arousal_prob``).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from export.models.baselines import (
    LABELS, ContactBaseline, EmotionModel, FaceBaseline, RppgBaseline,
)
from export.models.mvp import MVP, face_feats_from_crops
from export.models.promptfusion import PromptFusion, PromptFusionMM, PromptFusionNoInv, grad_reverse
from export.models.vit import ENCODER_PRESETS, FaceEncoder, FrameEncoderExport, MaskedAutoencoder, encoder_preset
from firmware_bridge.errors import BadInputError, ConfigError

CHECKPOINT_FORMAT = "emofuse-ckpt/1"

MODELS: dict[str, type[EmotionModel]] = {
    cls.name: cls
    for cls in (PromptFusion, PromptFusionNoInv, PromptFusionMM, MVP, FaceBaseline, RppgBaseline, ContactBaseline)
}
# Models whose face input goes through the frozen pretrained FaceEncoder.
USES_FACE_ENCODER = frozenset({"promptfusion", "promptfusion_noinv", "promptfusion_mm", "face", "mvp"})

# The contract's model inputs: shape without the batch dimension, dtype, meaning.
INPUT_SPECS: dict[str, dict] = {
    "face_clip": {
        "shape": [8, 3, 32, 32], "dtype": "float32",
        "meaning": "8 RGB face crops in [0, 1], every 8th frame at 30 fps over the window's last 2 s",
    },
    "tfr": {
        "shape": [1, 32, 32], "dtype": "float32",
        "meaning": "edge.signals.tfr image (z-scored log power) of the cleaned rPPG pulse over the last 10 s",
    },
    "contact": {
        "shape": [2, 1920], "dtype": "float32",
        "meaning": "PPG (row 0) and EDA (row 1), 60 s at 32 Hz, z-scored per window, invalid samples 0",
    },
    "contact_level": {
        "shape": [2], "dtype": "float32",
        "meaning": "window mean PPG heart rate (bpm / 100) and tonic EDA (uS / 10)",
    },
    "present": {
        "shape": [6], "dtype": "float32",
        "meaning": "presence flags (1 present, 0 absent) of face, pulse (tfr), PPG row, EDA row, heart-rate level, "
                   "EDA level (edge.preprocess.MODALITIES); an absent input is ignored whatever its values",
    },
    "face_feats": {
        "shape": [120, 64], "dtype": "float32",
        "meaning": "face_encoder features of one face crop every 0.5 s over 60 s",
    },
}
OUTPUT_SPECS: dict[str, dict] = {
    "valence_prob": {"shape": [2], "dtype": "float32", "meaning": "softmax over valence [low, high]"},
    "arousal_prob": {"shape": [2], "dtype": "float32", "meaning": "softmax over arousal [low, high]"},
}

__all__ = [
    "CHECKPOINT_FORMAT", "ENCODER_PRESETS", "PromptFusionMM", "INPUT_SPECS", "LABELS", "MODELS", "OUTPUT_SPECS", "USES_FACE_ENCODER",
    "EmotionModel", "ExportModule", "FaceEncoder", "FrameEncoderExport", "MaskedAutoencoder",
    "build_model", "count_flops", "encoder_preset", "input_shape", "count_parameters", "example_inputs", "export_module",
    "face_encoder_from_checkpoint", "face_feats_from_crops", "grad_reverse", "load_checkpoint",
]


def build_model(name: str, **config) -> EmotionModel:
    """A fresh model by registry name.

    Args:
        name: one of ``MODELS``.
        **config: the model's constructor arguments (a checkpoint's ``config`` rebuilds it).
    Returns:
        the model (its face encoder, if any, frozen and randomly initialised until
        :meth:`EmotionModel.load_face_encoder` or ``load_state_dict``).
    Raises:
        ConfigError: unknown name or bad arguments.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad config for model {name!r}: {exc}") from exc


class ExportModule(nn.Module):
    """``forward(*inputs)`` = ``model.export_forward``: what ``torch.onnx.export`` traces."""

    def __init__(self, model: EmotionModel):
        super().__init__()
        self.model = model
        self.input_names = tuple(model.input_names)
        self.output_names = tuple(model.output_names)

    def forward(self, *inputs: torch.Tensor):
        return self.model.export_forward(*inputs)


def export_module(model: EmotionModel) -> ExportModule:
    """Wrap ``model`` (put in eval mode) for ONNX export with the contract's I/O names."""
    model.eval()
    return ExportModule(model).eval()


def input_shape(model_or_names, name: str) -> tuple[int, ...]:
    """Shape of input ``name`` without the batch dimension: :data:`INPUT_SPECS`' (the ``tiny``
    encoder's contract), or, given a model, sized by its face encoder (``face_clip`` crop side)
    or face feature width (``face_feats``)."""
    shape = list(INPUT_SPECS[name]["shape"])
    encoder = getattr(model_or_names, "encoder", None)
    if name == "face_clip" and isinstance(encoder, FaceEncoder):
        shape = [encoder.frames, 3, encoder.size, encoder.size]
    elif name == "face_feats" and hasattr(model_or_names, "feat_dim"):
        shape[-1] = int(model_or_names.feat_dim)
    return tuple(shape)


def example_inputs(model_or_names, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random tensors of the contract's shapes for a model's inputs (in ``input_names`` order).

    Values follow each input's range: ``face_clip`` uniform [0, 1], ``contact_level`` around
    (0.7, 0.5), the rest standard normal. For shapes, tracing and tests, not for accuracy.
    """
    names = getattr(model_or_names, "input_names", model_or_names)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name in names:
        shape = (batch, *input_shape(model_or_names, name))
        if name == "face_clip":
            out.append(torch.rand(shape, generator=gen))
        elif name == "contact_level":
            out.append(torch.tensor([0.7, 0.5]) + 0.1 * torch.randn(shape, generator=gen))
        elif name == "present":
            out.append(torch.ones(shape))
        else:
            out.append(torch.randn(shape, generator=gen))
    return tuple(out)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"total", "trainable", "inference"} parameter counts. ``inference`` leaves out
    training-only parts (PromptFusion's subject classifiers and specific adapters)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train_only = 0
    for name, p in model.named_parameters():
        if name.startswith(("shared_subject.", "specific_subject.")) or ".specific." in name:
            train_only += p.numel()
    return {"total": total, "trainable": trainable, "inference": total - train_only}


def count_flops(model: EmotionModel, batch: int = 1) -> int:
    """Floating-point operations of one exported forward pass (2 per multiply-accumulate,
    matmuls and convolutions only, counted by ``torch.utils.flop_counter``) at ``batch``."""
    from torch.utils.flop_counter import FlopCounterMode

    wrapped = export_module(model)
    inputs = example_inputs(model, batch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        wrapped(*inputs)
    return int(counter.get_total_flops())


def load_checkpoint(path, map_location: str | torch.device = "cpu") -> tuple[EmotionModel, dict]:
    """Rebuild a trained model from an ``emofuse-ckpt/1`` file.

    Returns:
        (model in eval mode with the trained weights, the checkpoint dict).
    Raises:
        BadInputError: missing or unreadable file, or not an emofuse checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise BadInputError(f"checkpoint {path} is unreadable: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise BadInputError(f"{path} is not an {CHECKPOINT_FORMAT} checkpoint")
    model = build_model(ckpt["model"], **ckpt["config"])
    state = dict(ckpt["state_dict"])
    state.setdefault("temperature", torch.ones(2))  # checkpoints from before calibration
    for name in ("temperature_pulse", "temperature_physio"):
        if name in model.state_dict():
            # Checkpoints from before the per-modality temperatures: the face-only one throughout.
            state.setdefault(name, state["temperature"].clone())
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BadInputError(f"checkpoint {path}: weights do not fit model {ckpt['model']!r}: {exc}") from exc
    if ckpt["model"] in USES_FACE_ENCODER and hasattr(model, "encoder"):
        model.encoder.freeze()
    return model.eval(), ckpt


def face_encoder_from_checkpoint(ckpt: dict) -> FaceEncoder | None:
    """The frozen FaceEncoder stored in a checkpoint's ``face_encoder`` entry (MVP), or None."""
    state = ckpt.get("face_encoder")
    if state is None:
        return None
    encoder = FaceEncoder(**ckpt.get("face_encoder_config", {}))
    encoder.load_state_dict(state)
    return encoder.freeze().eval()
