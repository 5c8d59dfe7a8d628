"""A few steps of the real-face recipe (export.faces.train) on a handful of real photos."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.faces.data import assign_split, load_faces, read_labels
from export.faces.train import (
    AffectHeads, augment, load_heads, readout_from_expression, save, still_clip, tie_time, to_float, train,
)
from export.pretrain import load_face_encoder


def test_augment_keeps_range_and_shape_and_colourises_gray():
    gen = torch.Generator().manual_seed(0)
    gray = torch.rand(32, 1, 16, 16).expand(-1, 3, -1, -1).contiguous()
    out = augment(gray, torch.zeros(32, dtype=torch.bool), gen)
    assert out.shape == gray.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    spread = (out.max(1).values - out.min(1).values).mean(dim=(1, 2))
    assert (spread > 0.02).sum() >= 10  # most gray photos came out coloured


def test_readout_from_expression_uses_only_the_mapped_classes():
    p = np.zeros((2, 8))
    p[0, [1, 2]] = [0.3, 0.1]  # happiness .3, sadness .1 -> P(V+) .75
    p[0, 0] = 0.6  # neutral: valence left out
    p[1, [3, 0]] = [0.2, 0.2]  # anger vs neutral -> P(A+) .5
    pv, pa = readout_from_expression(p)
    assert pv[0] == pytest.approx(0.75)
    assert pa[1] == pytest.approx(0.5)


def test_a_few_steps_on_real_photos_reduce_the_loss(shared_data, tmp_path):
    torch.set_num_threads(1)
    root = shared_data / "faces"
    rows = read_labels(root)
    # a handful of train photos of both valence sides
    pick = [r["file"] for r in rows if assign_split(r["identity"]) == "train" and r["expression"] == "happiness"][:8]
    pick += [r["file"] for r in rows if assign_split(r["identity"]) == "train"
             and r["expression"] in ("sadness", "anger")][:8]
    small = load_faces(root, 64, files=pick)
    assert len(small) == 16 and set(small.split) == {"train"}
    x = still_clip(to_float(small.crops), 8)
    y = torch.from_numpy(small.expression)

    def loss_of(enc, heads):
        enc.eval(), heads.eval()
        with torch.no_grad():
            return float(F.cross_entropy(heads(enc(x))["expression"], y))

    torch.manual_seed(0)
    from export.faces.train import FaceEncoder, encoder_preset

    enc0 = tie_time(FaceEncoder(**encoder_preset("small")))
    heads0 = AffectHeads(enc0.dim)
    before = loss_of(enc0, heads0)
    enc, heads, hist = train(small, epochs=1, steps_per_epoch=12, batch_size=8, lr=1e-3, seed=0,
                             distill_weight=0.0, log_every=0)
    after = loss_of(enc, heads)
    assert hist["steps"] == 12
    assert after < before - 0.2
    path = save(enc, heads, tmp_path / "face_encoder.pt", hist)
    enc2, _ = load_face_encoder(path)  # the fusion training's loader
    heads2 = load_heads(path)
    assert loss_of(enc2, heads2) == pytest.approx(after, abs=1e-5)


def test_tied_time_makes_the_full_still_clip_equal_the_single_slice():
    from export.faces.train import FaceEncoder, encoder_preset

    torch.manual_seed(1)
    enc = FaceEncoder(**encoder_preset("small")).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = (enc(still_clip(x, 8)) - enc.encode_frames(x)).abs().max()
        tie_time(enc)
        after = (enc(still_clip(x, 8)) - enc.encode_frames(x)).abs().max()
    assert before > 1e-3  # untied positions: the clip is not the single slice
    assert after < 1e-5
