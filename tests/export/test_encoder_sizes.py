"""Face encoder sizes: `emofuse train --encoder small` cuts 64x64 crops, trains, exports a bundle
whose manifest configures the device for them; windows of the wrong crop side are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.bundle import load_bundle  # noqa: E402
from export.commands import export as export_cmd  # noqa: E402
from export.commands import train as train_cmd  # noqa: E402
from edge.spec import DEFAULT as PREPROCESSING  # noqa: E402
from export.models import ENCODER_PRESETS, FaceEncoder, build_model, encoder_preset  # noqa: E402
from export.pretrain import pretrain_face_encoder  # noqa: E402
from export.train import (  # noqa: E402
    TrainConfig, _model_config, cross_validate, load_dataset, preprocessing_for, train_final,
)
from firmware_bridge.errors import BadInputError, ConfigError  # noqa: E402
from helpers import run_command  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synth-cache")


_cli = run_command


def test_cli_choices_are_the_presets():
    assert set(train_cmd.ENCODER_SIZES) == set(ENCODER_PRESETS)
    from export.models import MODELS

    assert set(train_cmd.MODEL_NAMES) == set(MODELS)
    for name, cfg in ENCODER_PRESETS.items():
        enc = FaceEncoder(**cfg)
        assert enc.n_tokens == 64, name  # both sizes keep the contract's 64 tokens


def test_unknown_size_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown encoder size 'huge'"):
        TrainConfig(model="face", encoder="huge").validate()
    with pytest.raises(ConfigError):
        preprocessing_for("huge")
    with pytest.raises(SystemExit):
        _cli(train_cmd, ["train", "--model", "face", "--encoder", "huge"])


def test_preprocessing_for_changes_the_crop_side_only():
    small = preprocessing_for("small")
    assert small.face.crop_size == 64
    assert small.replace(**{"face.crop_size": PREPROCESSING.face.crop_size}) == PREPROCESSING
    assert preprocessing_for("tiny") == PREPROCESSING
    assert PREPROCESSING.face.crop_size == 32  # the record is frozen; replace made a copy


def test_model_config_sizes_the_encoder_or_the_feature_width():
    cfg = TrainConfig(model="promptfusion", encoder="small")
    enc = _model_config(cfg, 3)["encoder"]
    assert enc["size"] == 64 and enc["dim"] == 192
    assert _model_config(TrainConfig(model="mvp", encoder="small"), 3)["feat_dim"] == 192
    assert "encoder" not in _model_config(TrainConfig(model="contact", encoder="small"), 3)
    model = build_model("promptfusion", **_model_config(cfg, 3))
    out = model(torch.rand(2, 8, 3, 64, 64), torch.randn(2, 1, 32, 32))
    assert [o.shape for o in out] == [(2, 2), (2, 2)]


def test_pretraining_checks_the_crop_side():
    clips = np.random.default_rng(0).integers(0, 255, (6, 8, 64, 64, 3), dtype=np.uint8)
    enc, hist = pretrain_face_encoder(clips, steps=2, batch_size=2, encoder_config=encoder_preset("small"),
                                      progress=False)
    assert enc.config["size"] == 64 and enc.config["dim"] == 192 and hist["steps"] == 2
    with pytest.raises(BadInputError, match="64, 64, 3"):
        pretrain_face_encoder(clips[:, :, :32, :32], steps=1, encoder_config=encoder_preset("small"),
                              progress=False)


def test_windows_of_another_crop_side_are_refused(cache):
    windows = load_dataset("synth:preset=tiny,subjects=2", cache_dir=cache)  # 32x32 crops
    cfg = TrainConfig(model="promptfusion", encoder="small", epochs=1, pretrain_steps=1, folds=2, progress=False)
    with pytest.raises(ConfigError, match=r"32x32 face crops but encoder 'small' reads 64x64"):
        cross_validate(windows, cfg)
    with pytest.raises(ConfigError, match="preprocessing_for"):
        train_final(windows, cfg, epochs=1)
    # Models without a face encoder do not care.
    TrainConfig(model="contact", encoder="small").validate()


@pytest.mark.parametrize("model", ["promptfusion", "mvp"])
def test_small_encoder_trains_and_exports_a_64_pixel_bundle(model, cache, tmp_path, capsys):
    out = tmp_path / "train"
    rc = _cli(train_cmd, ["train", "--model", model, "--encoder", "small", "--data", "synth:preset=tiny",
                          "--folds", "2", "--epochs", "1", "--patience", "1", "--pretrain-steps", "2",
                          "--batch-size", "4", "--out", str(out), "--cache-dir", str(cache), "--quiet"])
    assert rc == 0
    bundle_dir = tmp_path / "bundle"
    rc = _cli(export_cmd, ["export", str(out / "checkpoint.pt"), "--out", str(bundle_dir),
                           "--cache-dir", str(cache), "--parity-windows", "3"])
    assert rc == 0
    assert "parity" in capsys.readouterr().out
    bundle = load_bundle(bundle_dir, check_graphs=True)
    m = json.loads((bundle_dir / "manifest.json").read_text())
    assert m["preprocessing"]["face"]["crop_size"] == 64
    shapes = {s.name: list(s.shape) for s in bundle.inputs}
    if model == "promptfusion":
        assert shapes["face_clip"] == ["batch", 8, 3, 64, 64]
    else:
        assert shapes["face_feats"] == ["batch", 120, 192]
        import onnx

        graph = onnx.load(str(bundle_dir / "face_encoder.onnx")).graph
        dims = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
        assert dims[1:] == [3, 64, 64]
