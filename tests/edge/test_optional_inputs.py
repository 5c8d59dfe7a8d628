"""Optional model inputs: a bundle that marks the pulse and contact inputs optional answers from
the first full face clip, with those inputs absent and flagged, and says which modalities it used."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge.bundle import load_bundle, sha256_file
from edge.pipeline import Pipeline
from edge.preprocess import MODALITIES
from firmware_bridge.errors import ConfigError
from helpers import preprocessing_dict

SHAPES = {"face_clip": [8, 3, 32, 32], "tfr": [1, 32, 32], "contact": [2, 1920], "contact_level": [2], "present": [6]}


def _presence_bundle(root, optional=("tfr", "contact", "contact_level"), with_present=True):
    """A real ONNX graph whose valence logit is the presence flags times fixed weights: P(V+) tells
    which flags the runtime set (face 1, pulse 2, PPG 4 ... as powers of two)."""
    import onnx
    from onnx import TensorProto, helper

    root.mkdir()
    names = [n for n in SHAPES if with_present or n != "present"]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *SHAPES[n]]) for n in names]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 2]) for n in ("valence_prob", "arousal_prob")]
    w = np.zeros((6, 2), np.float32)
    w[:, 1] = 0.1 * 2.0 ** np.arange(6)
    nodes = [helper.make_node("MatMul", ["present" if with_present else "contact_level",
                                         "w" if with_present else "w2"], ["z"]),
             helper.make_node("Softmax", ["z"], ["valence_prob"], axis=1),
             helper.make_node("Softmax", ["z"], ["arousal_prob"], axis=1)]
    inits = [helper.make_tensor("w", TensorProto.FLOAT, [6, 2], w.ravel().tolist()),
             helper.make_tensor("w2", TensorProto.FLOAT, [2, 2], [0.0] * 4)]
    model = helper.make_model(helper.make_graph(nodes, "presence", ins, outs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, root / "model.onnx")
    manifest = {
        "schema_version": 1, "model": {"name": "presence", "version": "t"},
        "inputs": [{"name": n, "shape": ["batch", *SHAPES[n]], "dtype": "float32", "meaning": n,
                    **({"optional": True} if n in optional else {})} for n in names],
        "outputs": [{"name": n, "shape": ["batch", 2], "dtype": "float32", "meaning": "p"}
                    for n in ("valence_prob", "arousal_prob")],
        "preprocessing": preprocessing_dict(), "labels": {"valence": ["low", "high"], "arousal": ["low", "high"]},
        "training": {}, "export": {"opset": 17},
        "files": {"model.onnx": {"sha256": sha256_file(root / "model.onnx"), "role": "model"}},
        "parity": {"max_abs_diff": 0.0, "n_windows": 1, "passed": True},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_a_face_alone_answers_from_the_first_clip_and_says_so(tmp_path):
    bundle = load_bundle(_presence_bundle(tmp_path / "b"), check_graphs=True)
    assert [s.name for s in bundle.inputs if s.optional] == ["tfr", "contact", "contact_level"]
    uri = "sim://?duration_s=14&width=320&height=240&seed=3&face_scale=0.5"
    with Pipeline(uri, [], bundle) as pipe:
        results = list(pipe.results())
    first = next(r for r in results if r.valence_prob is not None)
    # The face clip spans 7 * 8 frames at 30 fps (1.87 s): the first hop after it answers.
    assert first.t_s <= 2.0 + 1e-9
    assert first.modalities == "face"
    expect_face = np.exp(0.1) / (1 + np.exp(0.1))  # flags (1, 0, 0, 0, 0, 0) through the weights
    assert first.valence_prob[1] == pytest.approx(expect_face, abs=1e-4)
    late = [r for r in results if r.t_s >= 11.0]
    assert late and all(r.modalities == "face+pulse" for r in late)
    assert late[-1].valence_prob[1] == pytest.approx(np.exp(0.3) / (1 + np.exp(0.3)), abs=1e-4)
    assert MODALITIES[:2] == ("face", "pulse")


def test_optional_inputs_need_a_present_input(tmp_path):
    root = _presence_bundle(tmp_path / "b", optional=("contact",), with_present=False)
    with pytest.raises(ConfigError, match="present"):
        load_bundle(root)
