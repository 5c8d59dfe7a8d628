"""Real still faces mixed into the fused model's training, and probability calibration.

A fused model that only ever saw synthetic people learns what the generator's expression warps
look like, not what real faces do. :func:`still_training_set` turns the labelled photos of a
faces folder (``../shared/data/faces`` layout: ``labels.csv`` + ``images/``) into face-only
training samples of the same model: each photo's crop, cut by :func:`edge.stills.still_face`
exactly as ``emofuse faces`` and the device cut faces, repeated to the face clip; the pulse
and contact inputs zero with their presence flags 0 (:func:`edge.preprocess.modality_flags`);
valence and arousal targets from Russell's circumplex (:data:`edge.affect.VALENCE_OF`,
:data:`edge.affect.AROUSAL_OF`), -1 where the expression says nothing about an axis. Photos
without a detected face are left out (the device would not score them either). Identities are
split by :func:`edge.affect.identity_split` (test people are never used) and the training
people again into fit / validation (:func:`export.faces.data.assign_split`, the split the real-face
encoder was trained with, so the validation people are new to it too).

:func:`fit_temperature` fits the softmax temperature of each head on held-out samples (Guo et
al. 2017, "On Calibration of Modern Neural Networks", ICML); the model keeps it in its
``temperature`` buffer, so the checkpoint and the exported ONNX graph apply it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge.preprocess import MODALITIES
from edge.spec import Preprocessing
from export.faces.data import load_faces
from firmware_bridge.errors import BadInputError

log = logging.getLogger(__name__)

__all__ = ["LazyRows", "StillSet", "fit_temperature", "mix_inputs", "still_training_set"]


class LazyRows:
    """Rows computed on indexing: ``rows[idx]`` -> ndarray (len(idx), ...). Lets 7,000 photos be
    face clips of 8 frames without holding 8 float copies of each in memory."""

    def __init__(self, n: int, make) -> None:
        self.n, self.make = int(n), make

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> np.ndarray:
        return self.make(np.arange(self.n)[idx])


@dataclass
class StillSet:
    """Face-only samples from still photos.

    Attributes:
        crops: uint8 (N, S, S, 3) RGB face crops.
        valence, arousal: int64 (N,) 1 high, 0 low, -1 undefined for that expression.
        identity: (N,) person names.
        part: (N,) ``"fit"`` or ``"val"``.
    """

    crops: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    identity: np.ndarray
    part: np.ndarray

    def subset(self, mask) -> StillSet:
        return StillSet(self.crops[mask], self.valence[mask], self.arousal[mask], self.identity[mask],
                        self.part[mask])

    def __len__(self) -> int:
        return int(self.valence.size)


def still_training_set(root, p: Preprocessing, cache=None) -> StillSet:
    """The labelled photos of the *train* identities as face-only samples (see the module docstring).

    Args:
        root: the faces folder.
        p: the preprocessing record (its crop size and margin; faces by its tracker).
        cache: optional ``.npz`` path for the cut crops (:func:`export.faces.data.load_faces`).

    Raises:
        BadInputError: missing or unreadable folder; no usable photo.
    """
    fs = load_faces(Path(root), size=p.face.crop_size, cache=cache)
    split = np.asarray(fs.split)
    keep = np.asarray(fs.detected, bool) & (split != "test")
    if not keep.any():
        raise BadInputError(f"{root}: no photo of a training identity with a detected face")
    part = np.where(split == "val", "val", "fit")
    out = StillSet(np.asarray(fs.crops), np.asarray(fs.valence), np.asarray(fs.arousal), np.asarray(fs.identity),
                   part).subset(keep)
    log.info("stills: %d photos (%d fit, %d val) of training identities", len(out), int((out.part == "fit").sum()),
             int((out.part == "val").sum()))
    return out


def still_inputs(stills: StillSet, input_names, p: Preprocessing) -> dict:
    """Model inputs of still samples (lazy face clips, zero absent inputs, presence flags)."""
    frames, n = p.face.clip_frames, len(stills)
    flags = np.zeros(len(MODALITIES), np.float32)
    flags[MODALITIES.index("face")] = 1.0
    crops = stills.crops

    def clips(idx):
        x = crops[idx].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        return np.ascontiguousarray(np.repeat(x[:, None], frames, axis=1))

    shapes = {"tfr": (1, *p.tfr.shape), "contact": (len(p.contact.streams), p.contact.n_samples), "contact_level": (2,)}
    out = {}
    for name in input_names:
        if name == "face_clip":
            out[name] = LazyRows(n, clips)
        elif name == "present":
            out[name] = LazyRows(n, lambda idx: np.repeat(flags[None], len(idx), axis=0))
        elif name in shapes:
            shape = shapes[name]
            out[name] = LazyRows(n, lambda idx, shape=shape: np.zeros((len(idx), *shape), np.float32))
        else:
            raise BadInputError(f"a still photo cannot feed model input {name!r}")
    return out


def mix_inputs(a: dict, b: dict) -> dict:
    """Inputs of two sample sets one after the other (name -> rows), without copying either."""
    out = {}
    for name in a:
        first, second = a[name], b[name]
        n1 = len(first)

        def make(idx, first=first, second=second, n1=n1):
            idx = np.asarray(idx)
            sec = idx >= n1
            got = [(~sec, np.asarray(first[idx[~sec]])) if (~sec).any() else None,
                   (sec, np.asarray(second[idx[sec] - n1])) if sec.any() else None]
            got = [g for g in got if g is not None]
            rows = np.empty((idx.size, *got[0][1].shape[1:]), got[0][1].dtype)
            for mask, part in got:
                rows[mask] = part
            return rows

        out[name] = LazyRows(n1 + len(second), make)
    return out


@torch.no_grad()
def fit_temperature(logits: np.ndarray, targets: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The softmax temperature T > 0 minimising the (weighted) negative log-likelihood of
    ``softmax(logits / T)`` on held-out samples (targets -1 are left out).

    Args:
        logits: float (N, C); targets: int (N,); weights: optional float (N,) sample weights.

    Returns:
        T, clipped to [0.05, 20]; 1.0 when no sample has a target.
    """
    z = torch.as_tensor(np.asarray(logits, np.float64))
    t = torch.as_tensor(np.asarray(targets, np.int64))
    ok = t >= 0
    if not bool(ok.any()):
        return 1.0
    z, t = z[ok], t[ok]
    w = torch.ones(len(t), dtype=torch.float64) if weights is None else torch.as_tensor(np.asarray(weights)[ok.numpy()],
                                                                                        dtype=torch.float64)
    grid = torch.exp(torch.linspace(np.log(0.05), np.log(20.0), 400, dtype=torch.float64))
    nll = torch.stack([(w * torch.nn.functional.cross_entropy(z / g, t, reduction="none")).sum() for g in grid])
    return float(grid[int(torch.argmin(nll))])
