"""emofuse export: every model kind, briefly trained on the tiny synthetic set, exports to a
bundle that edge.bundle loads, whose graphs match torch within 1e-4 on real windows; a
tampered graph fails parity and leaves nothing behind."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edge.bundle import load_bundle, sha256_file  # noqa: E402
from export import bundle as bundle_mod  # noqa: E402
from export import onnx_export  # noqa: E402
from export.bundle import parity_indices, write_bundle  # noqa: E402
from export.commands import export as export_cmd  # noqa: E402
from export.models import MODELS, USES_FACE_ENCODER  # noqa: E402
from export.onnx_export import (  # noqa: E402
    PARITY_TOLERANCE,
    ParityError,
    check_graph,
    check_parity,
    onnx_session,
    run_onnx,
    torch_probabilities,
)
from firmware_bridge.errors import BadInputError, ConfigError  # noqa: E402
from helpers import parse_command  # noqa: E402

N_PARITY = 4
ALL_MODELS = ("promptfusion", "promptfusion_noinv", "promptfusion_mm", "mvp", "face", "rppg", "contact")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: a second intra-op thread only waits for a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny synthetic preset cut to 2 subjects (8 windows, every valence x arousal
    quadrant per subject), saved as .npz: (windows, data spec)."""
    from export.data.synth import build_synth_dataset

    root = tmp_path_factory.mktemp("tiny")
    windows = build_synth_dataset(preset="tiny", n_subjects=2, cache_dir=root / "cache")
    path = root / "tiny.npz"
    windows.save(path)
    return windows, str(path)


@pytest.fixture(scope="module")
def checkpoints(tiny, tmp_path_factory):
    """name -> checkpoint.pt of that model trained for 2 epochs (a few optimiser steps) on the
    tiny set, in the format `emofuse train` writes. One encoder, MAE-pretrained for 2 small
    steps, serves every face model."""
    from export.pretrain import clips_for_pretraining, pretrain_face_encoder
    from export.train import TrainConfig, build_checkpoint, data_fingerprint, train_final

    windows, spec = tiny
    root = tmp_path_factory.mktemp("ckpt")
    clips = clips_for_pretraining(windows.face_clip, windows.face_seq_crops)
    encoder, _ = pretrain_face_encoder(clips, steps=2, batch_size=4, progress=False)
    encoder.freeze()

    class OneEncoder:  # stands in for export.train.EncoderCache (600 MAE steps)
        def get(self, windows, subjects):
            return encoder, {}

    cache = OneEncoder()
    out = {}
    for name in ALL_MODELS:
        cfg = TrainConfig(model=name, epochs=2, batch_size=8, pretrain_steps=2, device="cpu",
                          progress=False)
        model, enc, _ = train_final(windows, cfg, epochs=2, cache=cache)
        data = {"spec": spec, "n_windows": len(windows), "fingerprint": data_fingerprint(windows)}
        metrics = {"cross_validation": {"valence_acc": {"mean": 0.5, "std": 0.0}}}
        ckpt = build_checkpoint(model, enc, windows, cfg, data, metrics, {"name": "loso"})
        path = root / f"{name}.pt"
        torch.save(ckpt, path)
        out[name] = path
    return out


def _no_leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_model_registry_is_the_one_the_brief_names():
    assert set(MODELS) == set(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_export_each_model_kind(name, tiny, checkpoints, tmp_path):
    from export.models import face_encoder_from_checkpoint, load_checkpoint
    from export.train import window_inputs

    windows, spec = tiny
    out = tmp_path / "bundle"
    written = write_bundle(checkpoints[name], out, parity_windows=N_PARITY)
    assert _no_leftovers(tmp_path, "bundle") == []

    b = load_bundle(out, check_graphs=True)  # hashes + graph I/O against the manifest
    m = b.manifest
    model, ckpt = load_checkpoint(checkpoints[name])
    assert m.model_name == name and written.manifest == m
    assert [s.name for s in m.inputs] == list(model.input_names)
    assert [s.name for s in m.outputs] == ["valence_prob", "arousal_prob"]
    assert all(s.shape[0] == "batch" and s.dtype == "float32" for s in m.inputs)
    assert m.preprocessing == windows.preprocessing
    assert m.preprocessing.to_dict() == ckpt["preprocessing"]
    assert m.labels == {"valence": ["low", "high"], "arousal": ["low", "high"]}
    assert m.export["opset"] == 17 and m.export["torch"] == torch.__version__
    assert m.training["checkpoint_sha256"] == sha256_file(checkpoints[name])
    assert m.training["data"]["spec"] == spec  # parity defaulted to the training data
    assert m.parity.passed and m.parity.n_windows == N_PARITY
    assert m.parity.max_abs_diff <= PARITY_TOLERANCE
    assert m.parity.details["same_data_as_training"] is True
    for fname, f in m.files.items():
        assert sha256_file(out / fname) == f.sha256
    for path in m.files:
        graph = onnx.load(str(out / path))
        assert {o.domain or "ai.onnx": o.version for o in graph.opset_import}["ai.onnx"] == 17
    is_mvp = "face_feats" in model.input_names
    assert (b.face_encoder_path is not None) == is_mvp
    assert ("face_encoder.onnx" in m.files) == is_mvp

    # Independently of the exporter's own check: ONNX Runtime vs torch on other real windows,
    # at a batch size the graph was never traced or checked at.
    idx = np.array([1, 4, 6])
    encoder = face_encoder_from_checkpoint(ckpt) if is_mvp else None
    feeds = window_inputs(windows, model.input_names, encoder, idx)
    ref = torch_probabilities(model, feeds)
    ort_feeds = dict(feeds)
    if is_mvp:
        crops = windows.face_seq_crops[idx]
        x = crops.reshape(-1, *crops.shape[2:]).transpose(0, 3, 1, 2).astype(np.float32) / 255
        enc = onnx_session(b.face_encoder_path)
        feats = run_onnx(enc, {"face_crop": x})["face_feat"].reshape(feeds["face_feats"].shape)
        assert np.max(np.abs(feats - feeds["face_feats"])) < 1e-4
        ort_feeds["face_feats"] = feats
    got = run_onnx(onnx_session(b.model_path), ort_feeds)
    for o in ("valence_prob", "arousal_prob"):
        assert got[o].shape == (3, 2)
        np.testing.assert_allclose(got[o].sum(axis=1), 1.0, atol=1e-5)
        assert np.max(np.abs(got[o] - ref[o])) <= PARITY_TOLERANCE
    # A briefly trained model is not constant: parity compares outputs that differ per window.
    assert np.ptp(ref["valence_prob"][:, 1]) + np.ptp(ref["arousal_prob"][:, 1]) > 1e-6


def _tamper(path, scale=0.05, seed=0):
    """Add noise to every float weight of an ONNX file, in place."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 1:
            init.CopyFrom(numpy_helper.from_array(
                (arr + scale * rng.standard_normal(arr.shape)).astype(np.float32), init.name))
    onnx.save(model, str(path))


@pytest.mark.parametrize("name", ["rppg", "mvp"])
def test_tampered_graph_fails_parity_and_leaves_no_bundle(name, checkpoints, tmp_path,
                                                          monkeypatch):
    real = bundle_mod.export_face_encoder if name == "mvp" else bundle_mod.export_model

    def export_then_tamper(*args, **kwargs):
        path = real(*args, **kwargs)
        _tamper(path)
        return path

    target = "export_face_encoder" if name == "mvp" else "export_model"
    monkeypatch.setattr(bundle_mod, target, export_then_tamper)
    out = tmp_path / "bundle"
    with pytest.raises(ParityError) as e:
        write_bundle(checkpoints[name], out, parity_windows=N_PARITY)
    msg = str(e.value)
    assert "\n" not in msg and "tolerance" in msg and f"{name}.pt" in msg
    assert not out.exists()
    assert _no_leftovers(tmp_path, "bundle") == []


def test_tampered_copy_of_a_good_graph(tiny, checkpoints, tmp_path):
    """The parity check itself, on a copy of an exported graph with perturbed weights."""
    from export.models import load_checkpoint
    from export.train import window_inputs

    windows, _ = tiny
    b = write_bundle(checkpoints["contact"], tmp_path / "good", parity_windows=N_PARITY)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b.model_path.read_bytes())
    _tamper(bad)
    model, _ = load_checkpoint(checkpoints["contact"])
    feeds = window_inputs(windows, model.input_names, None, np.arange(len(windows)))
    ref = torch_probabilities(model, feeds)
    good = check_parity(ref, run_onnx(onnx_session(b.model_path), feeds))
    broken = check_parity(ref, run_onnx(onnx_session(bad), feeds))
    assert good.passed and good.n_windows == len(windows)
    assert not broken.passed and broken.max_abs_diff > 10 * PARITY_TOLERANCE
    with pytest.raises(ParityError):
        onnx_export.require_parity(broken, "copy")
    # Swapping the tampered graph into the bundle is caught by its recorded hash.
    b.model_path.write_bytes(bad.read_bytes())
    with pytest.raises(BadInputError, match="sha256"):
        load_bundle(b.root)


def test_existing_output_needs_force(checkpoints, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        write_bundle(checkpoints["rppg"], out, parity_windows=2)
    assert (out / "keep.txt").read_text() == "mine"
    b = write_bundle(checkpoints["rppg"], out, parity_windows=2, overwrite=True)
    assert not (out / "keep.txt").exists() and b.model_path.is_file()
    assert _no_leftovers(tmp_path, "b") == []


def test_data_with_other_preprocessing_is_refused(tiny, checkpoints, tmp_path):
    import copy
    import dataclasses

    windows, _ = tiny
    meta = copy.deepcopy(windows.meta)
    meta["preprocessing"]["rppg"]["method"] = "chrom"
    other = dataclasses.replace(windows, meta=meta)
    path = tmp_path / "other.npz"
    other.save(path)
    with pytest.raises(ConfigError, match="preprocessed differently"):
        write_bundle(checkpoints["rppg"], tmp_path / "b", data=str(path), parity_windows=2)
    assert not (tmp_path / "b").exists()


def test_mvp_checkpoint_without_its_encoder(checkpoints, tmp_path):
    ckpt = torch.load(checkpoints["mvp"], weights_only=False)
    ckpt["face_encoder"] = None
    path = tmp_path / "mvp_noenc.pt"
    torch.save(ckpt, path)
    with pytest.raises(BadInputError, match="face_encoder"):
        write_bundle(path, tmp_path / "b", parity_windows=2)


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError):
        write_bundle(bad, tmp_path / "b")
    with pytest.raises(BadInputError):
        write_bundle(tmp_path / "missing.pt", tmp_path / "b")


def _parse(*argv):
    return parse_command(export_cmd, ["export", *argv])


def test_cli_writes_a_bundle_and_reports(checkpoints, tiny, tmp_path, capsys):
    _, spec = tiny
    out = tmp_path / "cli"
    args = _parse(str(checkpoints["face"]), "--out", str(out), "--data", spec,
                  "--parity-windows", "3")
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "model.onnx" in text and "parity" in text
    m = json.loads((out / "manifest.json").read_text())
    assert m["parity"]["n_windows"] == 3 and m["parity"]["data"] == spec


def test_cli_errors_are_one_line(checkpoints, tmp_path, monkeypatch, capsys):
    import edge.cli

    monkeypatch.setattr(edge.cli, "_command_modules",
                        lambda: {"export": "export.commands.export"})
    out = tmp_path / "x"
    out.mkdir()
    code = edge.cli.main(["export", str(checkpoints["rppg"]), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("emofuse export: error:") and "already exists" in err[0]
    code = edge.cli.main(["export", str(checkpoints["rppg"]), "--out", str(tmp_path / "y"),
                          "--parity-windows", "0"])
    assert code == 2 and "--parity-windows" in capsys.readouterr().err


def test_parity_indices_spread_and_clip():
    idx = parity_indices(16, 4)
    assert idx.tolist() == [0, 5, 10, 15]
    assert parity_indices(3, 10).tolist() == [0, 1, 2]
    with pytest.raises(ConfigError):
        parity_indices(3, 0)
    with pytest.raises(BadInputError):
        parity_indices(0, 3)


def test_check_graph_rejects_a_fixed_batch(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("tfr", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("valence_prob", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["tfr"], ["valence_prob"])], "g",
                              [x], [y])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ConfigError, match="fixed batch"):
        check_graph(path, ["tfr"], ["valence_prob"])
    with pytest.raises(ConfigError, match="opset"):
        check_graph(path, ["tfr"], ["valence_prob"], opset=13)
    with pytest.raises(ConfigError, match="expected"):
        check_graph(path, ["face_clip"], ["valence_prob"])


def test_uses_face_encoder_models_carry_the_encoder_inside(checkpoints):
    """Only MVP needs face_encoder.onnx; the other face models hold the frozen ViT in
    model.onnx (their checkpoints carry no separate encoder)."""
    for name in USES_FACE_ENCODER - {"mvp"}:
        ckpt = torch.load(checkpoints[name], weights_only=False)
        assert ckpt["face_encoder"] is None
        assert any(k.startswith("encoder.") for k in ckpt["state_dict"])
