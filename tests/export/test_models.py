"""Models of export.models: shapes, where gradients flow, the invariance losses, ONNX export."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.models import (  # noqa: E402
    MODELS, FaceEncoder, FrameEncoderExport, MaskedAutoencoder, build_model, count_flops,
    count_parameters, example_inputs, export_module, face_feats_from_crops, grad_reverse,
)
from export.models.promptfusion import dann_schedule, orthogonality_loss  # noqa: E402
from export.pretrain import clips_for_pretraining, pretrain_face_encoder  # noqa: E402
from firmware_bridge.errors import BadInputError, ConfigError  # noqa: E402

ALL = sorted(MODELS)


def _model(name: str):
    torch.manual_seed(0)
    return build_model(name, **({"n_subjects": 3} if name == "promptfusion" else {}))


def _targets(b: int) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"valence": torch.randint(0, 2, (b,), generator=g), "arousal": torch.randint(0, 2, (b,), generator=g),
            "subject": torch.arange(b) % 3}


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes_and_probabilities(name):
    model = _model(name).eval()
    x = example_inputs(model, batch=3)
    v, a = model(**dict(zip(model.input_names, x)))
    assert v.shape == (3, 2) and a.shape == (3, 2)
    pv, pa = model.export_forward(*x)
    np.testing.assert_allclose(pv.sum(-1).detach().numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(pa.detach().numpy(), torch.softmax(a, -1).detach().numpy(), atol=1e-6)
    # Each sample's output depends on its own inputs only (no batch mixing).
    v1, _ = model(**dict(zip(model.input_names, (t[:1] for t in x))))
    np.testing.assert_allclose(v1.detach().numpy(), v[:1].detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("name", ["promptfusion", "promptfusion_noinv", "face"])
def test_frozen_encoder_gets_no_gradients_but_trainable_parts_do(name):
    model = _model(name).train()
    x = dict(zip(model.input_names, example_inputs(model, batch=4)))
    loss, parts, _ = model.training_loss(x, _targets(4), progress=0.5)
    loss.backward()
    for pname, p in model.encoder.named_parameters():
        assert not p.requires_grad and p.grad is None, pname
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("valence_head.") for n in got)
    if name.startswith("promptfusion"):
        # Gradients reach the prompt generator through the frozen blocks.
        assert any(n.startswith("prompts.cnn.") for n in got)
        assert any(n.startswith("prompts.base") for n in got)
        assert any(".shared.up." in n for n in got)


def test_grad_reverse_flips_and_scales_the_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    w = torch.randn(5, 3)
    (grad_reverse(x, 0.7) * w).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), -0.7 * w.numpy(), rtol=1e-6)
    y = torch.randn(5, 3)
    assert torch.equal(grad_reverse(y, 2.0), y)
    assert dann_schedule(0.0) == 0.0 and 0.99 < dann_schedule(1.0) <= 1.0
    assert dann_schedule(0.2) < dann_schedule(0.5)


def test_adversarial_subject_loss_pushes_shared_features_against_the_classifier():
    """With only the GRL loss, the shared adapter ascends the subject loss the classifier descends."""
    model = _model("promptfusion").train()
    model.valence_head.requires_grad_(False)
    x = dict(zip(model.input_names, example_inputs(model, batch=6)))
    t = _targets(6)
    feat, shared, _ = model.features(x["face_clip"], x["tfr"], aux=True)
    s_all = torch.cat(shared, -1)
    plain = torch.nn.functional.cross_entropy(model.shared_subject(s_all), t["subject"])
    g_plain = torch.autograd.grad(plain, model.adapters[-1].shared.up.weight, retain_graph=True)[0]
    rev = torch.nn.functional.cross_entropy(model.shared_subject(grad_reverse(s_all, 1.0)), t["subject"])
    g_rev = torch.autograd.grad(rev, model.adapters[-1].shared.up.weight)[0]
    assert g_plain.abs().sum() > 0
    np.testing.assert_allclose(g_rev.numpy(), -g_plain.numpy(), atol=1e-7)


def test_invariance_losses_present_only_in_the_invariant_model():
    inv, noinv = _model("promptfusion").train(), _model("promptfusion_noinv").train()
    x = dict(zip(inv.input_names, example_inputs(inv, batch=4)))
    _, parts_inv, _ = inv.training_loss(x, _targets(4), 0.3)
    _, parts_no, _ = noinv.training_loss(x, _targets(4), 0.3)
    assert {"subject_adv", "subject_specific", "orth"} <= set(parts_inv)
    assert set(parts_no) == {"valence", "arousal"}
    assert not hasattr(noinv, "shared_subject") and noinv.adapters[0].specific is None
    # Same inference graph size: the specific branch and subject heads are training-only.
    assert count_parameters(inv)["inference"] == count_parameters(noinv)["inference"]
    with pytest.raises(ConfigError):
        build_model("promptfusion", n_subjects=0)


def test_orthogonality_loss_is_zero_for_orthogonal_and_positive_for_equal_features():
    a = torch.zeros(4, 4)
    b = torch.zeros(4, 4)
    a[0, 0], a[1, 0] = 1.0, -1.0   # varies along column 0 only
    b[2, 1], b[3, 1] = 1.0, -1.0   # varies along column 1 only, on other samples
    assert float(orthogonality_loss(a, b)) < 1e-10
    c = torch.randn(8, 6)
    assert float(orthogonality_loss(c, c)) > 0.5


def test_build_model_rejects_unknown_names_and_config():
    with pytest.raises(ConfigError):
        build_model("resnet")
    with pytest.raises(ConfigError):
        build_model("rppg", no_such_arg=1)
    model = _model("promptfusion")
    rebuilt = build_model("promptfusion", **model.config)
    rebuilt.load_state_dict(model.state_dict())  # the config fully describes the architecture


def _onnx_roundtrip(module, inputs, input_names, output_names):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, inputs, buf, dynamo=False, opset_version=17, input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={n: {0: "batch"} for n in (*input_names, *output_names)},
        )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
    return ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ALL)
def test_onnx_export_runs_in_onnxruntime_at_batch_1_and_4(name):
    model = _model(name)
    wrapped = export_module(model)
    session = _onnx_roundtrip(wrapped, example_inputs(model, 2), model.input_names, model.output_names)
    assert [i.name for i in session.get_inputs()] == list(model.input_names)
    for batch in (1, 4):
        x = example_inputs(model, batch, seed=batch)
        got = session.run(list(model.output_names), {n: t.numpy() for n, t in zip(model.input_names, x)})
        with torch.no_grad():
            ref = wrapped(*x)
        for g, r in zip(got, ref):
            assert g.shape == (batch, 2)
            np.testing.assert_allclose(g, r.numpy(), atol=1e-5)


def test_face_encoder_frame_export_matches_encode_frames():
    torch.manual_seed(0)
    enc = FaceEncoder().eval()
    session = _onnx_roundtrip(FrameEncoderExport(enc), (torch.rand(2, 3, 32, 32),), ["face_crop"], ["face_feat"])
    x = torch.rand(4, 3, 32, 32)
    (got,) = session.run(None, {"face_crop": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, enc.encode_frames(x).numpy(), atol=1e-5)


def test_face_feats_from_crops_equals_encode_frames_on_each_crop():
    torch.manual_seed(0)
    enc = FaceEncoder().eval()
    crops = np.random.default_rng(0).integers(0, 256, (2, 5, 32, 32, 3), dtype=np.uint8)
    feats = face_feats_from_crops(enc, crops, batch=3)
    assert feats.shape == (2, 5, 64) and feats.dtype == np.float32
    with torch.no_grad():
        one = enc.encode_frames(torch.from_numpy(crops[1, 4]).permute(2, 0, 1)[None].float() / 255)
    np.testing.assert_allclose(feats[1, 4], one[0].numpy(), atol=1e-5)
    with pytest.raises(BadInputError):
        face_feats_from_crops(enc, crops.astype(np.float32))


def test_tube_mask_hides_the_same_cells_in_every_slice_at_the_ratio():
    mae = MaskedAutoencoder(FaceEncoder(), mask_ratio=0.75)
    mask = mae.tube_mask(5, torch.Generator().manual_seed(0))
    assert mask.shape == (5, 64)
    slices = mask.reshape(5, 4, 16)
    assert torch.equal(slices, slices[:, :1].expand_as(slices))
    assert (mask.sum(1) == 48).all()
    # patchify puts tubelet (t, y, x) at token t*16 + y*4 + x, matching the Conv3d token order.
    clip = torch.rand(1, 8, 3, 32, 32)
    patches = mae.patchify(clip)
    np.testing.assert_allclose(patches[0, 1 * 16 + 2 * 4 + 3].reshape(2, 3, 8, 8).numpy(),
                               clip[0, 2:4, :, 16:24, 24:32].numpy())


def test_mae_pretraining_lowers_the_reconstruction_loss():
    rng = np.random.default_rng(0)
    # Still, blocky clips: every tubelet holds a 2x2 pattern of 4-pixel blocks.
    base = rng.integers(0, 256, (32, 1, 8, 8, 3)).astype(np.uint8)
    clips = np.repeat(np.repeat(np.repeat(base, 8, 1), 4, 2), 4, 3)
    # A 16-crop sequence adds clips starting at crops 0 and 8.
    pool = clips_for_pretraining(clips, np.concatenate([clips, clips], axis=1))
    assert pool.shape == (32 * 3, 8, 32, 32, 3)
    enc, hist = pretrain_face_encoder(pool, steps=20, batch_size=8, seed=0, progress=False)
    assert hist["loss_last"] < 0.9 * hist["loss_first"]
    assert isinstance(enc, FaceEncoder)
    with pytest.raises(BadInputError):
        pretrain_face_encoder(pool.astype(np.float32), steps=1, progress=False)


def test_flops_are_counted_and_fusion_costs_at_least_its_face_branch():
    flops = {n: count_flops(_model(n)) for n in ("promptfusion", "face", "rppg")}
    assert all(f > 0 for f in flops.values())
    assert flops["promptfusion"] > flops["face"] > flops["rppg"]
