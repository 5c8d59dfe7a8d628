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


def test_conv_stem_keeps_the_token_grid_and_the_still_fast_path_is_exact():
    from export.models.vit import FaceEncoder, encoder_preset

    torch.manual_seed(2)
    cfg = encoder_preset("small")
    assert cfg["stem"] == "conv"
    enc = FaceEncoder(**cfg).eval()
    clip = torch.rand(2, 8, 3, 64, 64)
    assert enc.tokens(clip).shape == (2, 64, 192)  # 4 x 4 x 4 tokens, as the patch embedding
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        slow = enc.forward_tokens(enc.tokens(x.unsqueeze(1).expand(-1, 2, -1, -1, -1))).mean(1)
        assert (enc.encode_frames(x) - slow).abs().max() < 1e-5
    # The stem reads the frames of a tubelet separately: swapping two frames changes the tokens.
    swapped = clip[:, [1, 0, 2, 3, 4, 5, 6, 7]]
    with torch.no_grad():
        assert (enc.tokens(clip)[:, :16] - enc.tokens(swapped)[:, :16]).abs().max() > 1e-4
    # The config round-trips (load_face_encoder rebuilds from it); patch configs keep no key.
    assert FaceEncoder(**enc.config).config == enc.config
    assert "stem" not in FaceEncoder(**{k: v for k, v in cfg.items() if k != "stem"}).config


def test_conv_stem_rejects_what_it_cannot_build():
    from export.models.vit import FaceEncoder
    from firmware_bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown encoder stem 'deep'"):
        FaceEncoder(stem="deep")
    with pytest.raises(ConfigError, match="square power-of-two tubelets"):
        FaceEncoder(size=60, tubelet=(2, 12, 12), stem="conv")


def test_synthetic_stills_label_by_the_generators_sign_and_train_with_the_photos(tmp_path):
    from export.faces.data import FaceSet
    from export.faces.synthetic import LABEL_MARGIN, render_stills
    from export.faces.train import evaluate_synthetic
    from export.models.vit import FaceEncoder, encoder_preset

    syn = render_stills(None, 12, 64, seed=3)  # the astronaut only: works in any clone
    assert syn.crops.shape == (12, 64, 64, 3) and syn.crops.dtype == np.uint8
    v = syn.intensity[:, 0]
    assert ((syn.valence == 1) == (v > LABEL_MARGIN)).all() and ((syn.valence == 0) == (v < -LABEL_MARGIN)).all()
    assert set(syn.identity) == {"astronaut"} and syn.detected.mean() > 0.5
    assert np.array_equal(render_stills(None, 12, 64, seed=3).crops, syn.crops)
    # Mixed into the photo recipe: the photo rows come from a tiny FaceSet of synthetic crops
    # labelled as photos (only the shapes matter here), the synthetic rows add V/A targets.
    n = 16
    fs = FaceSet(crops=np.repeat(syn.crops[:8], 2, axis=0), expression=np.arange(n) % 8,
                 identity=np.asarray([f"p{i % 5}" for i in range(n)]), files=np.asarray([f"{i}.jpg" for i in range(n)]),
                 split=np.asarray(["train"] * 12 + ["val"] * 4), colour=np.ones(n, bool), detected=np.ones(n, bool),
                 crop_fn="test")
    enc, heads, hist = train(fs, epochs=1, steps_per_epoch=3, batch_size=10, seed=0, distill_weight=0.0,
                             log_every=0, synthetic=syn, synthetic_val=syn, synthetic_fraction=0.3)
    assert hist["synthetic_images"] == 12 and hist["steps"] == 3
    assert set(hist["epochs"][0]["val_synthetic"]) <= {"valence_bal_acc", "arousal_bal_acc"}
    assert set(evaluate_synthetic(enc, heads, syn)) <= {"valence_bal_acc", "arousal_bal_acc"}


def test_synthetic_stills_from_a_faces_folder_use_train_or_val_identities_only(shared_data):
    from export.faces.data import assign_split
    from export.faces.synthetic import render_stills
    from firmware_bridge.errors import ConfigError

    tr = render_stills(shared_data / "faces", 30, 64, seed=0, astronaut_share=0.0)
    va = render_stills(shared_data / "faces", 10, 64, seed=0, astronaut_share=0.0, split="val")
    assert {assign_split(i) for i in tr.identity} == {"train"}
    assert {assign_split(i) for i in va.identity} == {"val"}
    assert sorted(set(tr.tone)) != [0] and tr.tone.min() >= 1
    with pytest.raises(ConfigError, match="not 'test'"):
        render_stills(shared_data / "faces", 3, 64, split="test")
