"""calibrate.quantize: Q/DQ INT8 with a sensitivity sweep, the manifest record, the CLI.

A tiny transformer-ish torch model (Conv, LayerNorm, attention with Softmax, MLP, heads) with a
planted weakness - a level path whose calibration data holds one huge outlier, so that INT8
ranges make it useless - checks that the sweep finds the weak layer and keeps it in float while
quantizing the rest, and that without the sweep the gate fails and names it. A tiny contact
model trained a few steps by the real pipeline (export.train) and exported by export.bundle
checks the whole path on a real bundle, CLI included.
"""
from __future__ import annotations

import copy
import json
import sys

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="the test models are built with torch")
from torch import nn  # noqa: E402

from calibrate.calibration import (  # noqa: E402
    CALIBRATION_FILE, HOLDOUT_FILE, CalibrationSet, build_calibration, preprocessing_hash, write_calibration,
)
from calibrate.quantize import (  # noqa: E402
    INT8_FILE, INT8_ROLE, OrtQuantizer, QuantConfig, WindowReader, analyse_graph, fold_weight_aliases,
    modelopt_status, pays, prepare_model, quantize_bundle,
)
from edge.bundle import load_bundle, sha256_file  # noqa: E402
from firmware_bridge.errors import BadInputError, ConfigError, MissingDependencyError  # noqa: E402
from edge.spec import Preprocessing  # noqa: E402
from helpers import preprocessing_dict, run_command  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning",
                                        "ignore:The feature will be removed:DeprecationWarning")

T = 64  # time steps of the tiny model's signal input
PRE = Preprocessing.from_dict(preprocessing_dict(**{"contact.n_samples": T}))


class TinyFusion(nn.Module):
    """contact (B, 2, T) + contact_level (B, 2) -> valence_prob, arousal_prob.

    Conv1d tokens -> LayerNorm -> one attention head (Softmax) -> MLP -> mean pool, plus a
    ``level`` Linear on contact_level that dominates the heads' margins."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv1d(2, 16, 5, padding=2)
        self.norm = nn.LayerNorm(16)
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.fc1, self.fc2 = nn.Linear(16, 64), nn.Linear(64, 16)
        self.level = nn.Linear(2, 16)
        self.valence_head, self.arousal_head = nn.Linear(16, 2), nn.Linear(16, 2)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        with torch.no_grad():
            self.level.weight.copy_(torch.randn(16, 2, generator=g) * 3.0)

    def forward(self, contact, contact_level):
        x = self.norm(self.conv(contact).transpose(1, 2))
        att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 4.0, dim=-1)
        x = x + att @ self.v(x)
        x = x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))
        feat = 0.1 * x.mean(dim=1) + self.level(contact_level)
        return torch.softmax(self.valence_head(feat), -1), torch.softmax(self.arousal_head(feat), -1)


def _export(model, path):
    ex = (torch.randn(2, 2, T), torch.randn(2, 2))
    dyn = {n: {0: "batch"} for n in ("contact", "contact_level", "valence_prob", "arousal_prob")}
    torch.onnx.export(model.eval(), ex, str(path), input_names=["contact", "contact_level"],
                      output_names=["valence_prob", "arousal_prob"], dynamic_axes=dyn, opset_version=17,
                      dynamo=False)


def _tiny_bundle(root):
    root.mkdir(parents=True, exist_ok=True)
    _export(TinyFusion(), root / "model.onnx")
    prob = "softmax probabilities [low, high]"
    manifest = {
        "schema_version": 1, "model": {"name": "tinyfusion", "version": "t1"},
        "inputs": [{"name": "contact", "shape": ["batch", 2, T], "dtype": "float32", "meaning": "signals (test)"},
                   {"name": "contact_level", "shape": ["batch", 2], "dtype": "float32", "meaning": "levels (test)"}],
        "outputs": [{"name": "valence_prob", "shape": ["batch", 2], "dtype": "float32", "meaning": prob},
                    {"name": "arousal_prob", "shape": ["batch", 2], "dtype": "float32", "meaning": prob}],
        "preprocessing": PRE.to_dict(), "labels": {"valence": ["low", "high"], "arousal": ["low", "high"]},
        "training": {}, "export": {"opset": 17, "python": sys.version.split()[0]},
        "files": {"model.onnx": {"sha256": sha256_file(root / "model.onnx"), "role": "model"}},
        "parity": {"max_abs_diff": 0.0, "n_windows": 1, "passed": True},
        "engines": {"note": "a section another tool owns; calibrate must keep it"},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(root)


def _windows(n, seed, outlier=False, part=None):
    rng = np.random.default_rng(seed)
    level = rng.normal(0.0, 1.0, (n, 2)).astype(np.float32)
    if outlier:
        level[0] = 1e4  # one broken sensor reading among the calibration windows
    subject = np.arange(n) // 4 + 100 * seed
    lab = rng.integers(0, 2, n)
    return CalibrationSet(
        inputs={"contact": rng.normal(size=(n, 2, T)).astype(np.float32), "contact_level": level},
        valence=np.where(lab, 7.0, 3.0).astype(np.float32), arousal=np.full(n, 3.0, np.float32),
        valence_high=lab.astype(np.int64), arousal_high=np.zeros(n, np.int64), subject=subject,
        trial=np.arange(n), part=part,
        # as `emofuse calibrate --windows 48 --holdout 64` records them, so the CLI reuses them
        meta={"preprocessing_hash": preprocessing_hash(PRE), "source": "synth", "seed": 0, "model_version": "t1",
              "requested": [48, 64]})


@pytest.fixture()
def tiny(tmp_path):
    bundle = _tiny_bundle(tmp_path / "tiny")
    calib = _windows(48, 1, outlier=True)
    hold = _windows(64, 2, part=(np.arange(64) // 4 % 2).astype(np.int64))
    write_calibration(bundle.root, calib, hold)
    return bundle, calib, hold


# The planted test needs every layer as a candidate, however small.
ALL = dict(min_macs=0, min_side=0, method="minmax")


def test_sweep_keeps_the_planted_weak_layer_in_float(tiny):
    bundle, calib, hold = tiny
    result = quantize_bundle(bundle, calib, hold, QuantConfig(**ALL))
    assert result.passed, result.text()
    assert any("level" in n for n in result.kept_float), result.kept_float
    assert not any("level" in n or "head" in n for n in result.quantized)
    assert any("fc1" in n for n in result.quantized) and any("conv" in n.lower() for n in result.quantized)
    probes = {p.group: p for p in result.probes}
    level_probe = next(p for g, p in probes.items() if "level" in g)
    assert level_probe.flips > 0  # the sweep saw the damage, not a guess
    assert {"group:LayerNormalization", "group:Softmax", "group:attention-matmul", "group:heads"} <= set(probes)
    # the outlier reaches the heads' inputs (and the final Softmax): the sweep says so; the
    # LayerNorm and the attention products are harmless here
    assert probes["group:heads"].flips > 0 and probes["group:Softmax"].flips > 0
    assert probes["group:LayerNormalization"].flips == 0
    assert result.gate.min_agreement >= 0.99

    # installed and recorded; other manifest sections kept; hashes verify
    again = load_bundle(bundle.root)
    entry = again.manifest.files[INT8_FILE]
    assert entry.role == INT8_ROLE and entry.sha256 == sha256_file(bundle.root / INT8_FILE)
    raw = json.loads((bundle.root / "manifest.json").read_text())
    q = raw["quantization"]
    assert raw["engines"]["note"].startswith("a section")
    assert q["settings"]["method"] == "minmax" and q["settings"]["per_channel"] is True
    assert q["settings"]["op_types"] == ["MatMul", "Gemm", "Conv"]
    assert q["calibration"]["sha256"] == sha256_file(bundle.root / CALIBRATION_FILE)
    assert q["calibration"]["holdout_sha256"] == sha256_file(bundle.root / HOLDOUT_FILE)
    assert q["kept_float"]["accuracy"] == result.kept_float and q["gate"]["passed"] is True
    assert q["source_sha256"] == again.manifest.files["model.onnx"].sha256
    assert "probes" in q["sweep"] and "sensitive" in q["sweep"]["summary"]

    # the graph really is INT8 Q/DQ, and the runtime's engine runs it
    ops = {n.op_type for n in onnx.load(str(bundle.root / INT8_FILE)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    from edge.engine import open_engine

    with open_engine(bundle.root, "onnxruntime", "int8") as engine:
        out = engine.run({k: v[:4] for k, v in hold.inputs.items()})
    assert out["valence_prob"].shape == (4, 2)
    np.testing.assert_allclose(out["valence_prob"].sum(axis=1), 1.0, atol=1e-5)


def test_without_the_sweep_the_gate_fails_and_names_the_layer(tiny):
    bundle, calib, hold = tiny
    result = quantize_bundle(bundle, calib, hold, QuantConfig(sweep=False, **ALL))
    assert not result.passed and result.gate.min_agreement < 0.99
    assert any("level" in n for n in result.suggestions), result.suggestions or result.quantized
    # the bundle is unchanged: no INT8 graph listed, the rejected one left aside
    assert INT8_FILE not in load_bundle(bundle.root).manifest.files
    assert result.int8_path.name == "model.int8.rejected.onnx" and result.int8_path.is_file()
    assert "keep these layers in float" in result.text()
    # the outlier also widened the heads' input ranges: they are named too, Softmax is not a node
    assert any("head" in n for n in result.suggestions)
    assert not any(n.endswith(("fc1/MatMul", "fc2/MatMul")) for n in result.suggestions)
    # ... and keeping those layers in float by hand fixes it
    fixed = quantize_bundle(bundle, calib, hold, QuantConfig(sweep=False, keep_float=tuple(result.suggestions),
                                                             **ALL))
    assert fixed.passed and not result.int8_path.exists()


def test_tensorrt_target_is_symmetric_int8_and_cpu_target_is_uint8(tiny, tmp_path):
    bundle, calib, hold = tiny
    for target, want in (("tensorrt", onnx.TensorProto.INT8), ("cpu", onnx.TensorProto.UINT8)):
        res = quantize_bundle(bundle, calib, hold, QuantConfig(target=target, keep_float=("/level/Gemm",),
                                                               sweep=False, **ALL), install=False)
        model = onnx.load(str(res.int8_path))
        inits = {i.name: i for i in model.graph.initializer}
        zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert zps and all(z.data_type == want for z in zps), target
        if target == "tensorrt":
            assert all(not np.any(onnx.numpy_helper.to_array(z)) for z in zps)  # zero point 0


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods_with_uneven_window_counts(tiny, method):
    # 50 windows do not split into batches of 16: histogram calibration needs equal batches.
    bundle, _, hold = tiny
    keep = ("/level/Gemm", "/valence_head/Gemm", "/arousal_head/Gemm")  # what the sweep keeps (see above)
    res = quantize_bundle(bundle, _windows(50, 4), hold, QuantConfig(method=method, min_macs=0, min_side=0, sweep=False,
                                                                     keep_float=keep), install=False)
    assert res.passed and res.record["settings"]["method"] == method


def test_graph_analysis_and_weight_aliases(tmp_path):
    model = TinyFusion()
    model.k.weight = model.q.weight  # a shared parameter: the exporter writes an alias
    _export(model, tmp_path / "m.onnx")
    raw = onnx.load(str(tmp_path / "m.onnx"))
    prepared = prepare_model(tmp_path / "m.onnx", tmp_path / "p.onnx")
    infos = {i.name: i for i in analyse_graph(onnx.load(str(prepared)))}
    weighted = {n for n, i in infos.items() if i.weighted}
    assert any("/k/" in n for n in weighted) and any("/q/" in n for n in weighted)
    conv = next(i for n, i in infos.items() if i.op_type == "Conv")
    assert conv.macs == T * 16 * 2 * 5
    fc1 = next(i for n, i in infos.items() if "fc1" in n)
    assert fc1.macs == T * 16 * 64
    att = [i for i in infos.values() if i.op_type == "MatMul" and not i.weighted]
    assert att and all(i.macs == T * T * 16 for i in att)
    assert any(i.head for i in infos.values())
    # folding aliases does not change what the graph computes
    import onnxruntime as ort

    x = {"contact": np.random.default_rng(0).normal(size=(3, 2, T)).astype(np.float32),
         "contact_level": np.ones((3, 2), np.float32)}
    a = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)
    b = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).run(None, x)
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert fold_weight_aliases(onnx.load(str(prepared))) == 0  # nothing left to fold


def test_calibration_reads_every_window_in_chunks(tiny, tmp_path):
    # 10 batches are collected in chunks; an outlier in the very last window must reach the ranges.
    bundle, _, _ = tiny
    calib = _windows(40, 3)
    calib.inputs["contact_level"][-1] = 777.0
    prepared = prepare_model(bundle.model_path, tmp_path / "p.onnx")
    q = OrtQuantizer(prepared, calib, QuantConfig(batch_size=4, **ALL).validate(), tmp_path, ["MatMul", "Gemm"])
    q.quantize(["/fc1/MatMul"], tmp_path / "q.onnx")
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = load_tensors_data(q.cache)
    lo, hi = ranges["contact_level"].range_value
    assert np.max(hi) == pytest.approx(777.0) and np.min(lo) == pytest.approx(float(calib.inputs["contact_level"].min()))


def test_cost_rule_skips_small_and_3d_operators(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    w3 = numpy_helper.from_array(np.ones((8, 3, 2, 4, 4), np.float32), "w3")
    w2 = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w2")
    g = helper.make_graph(
        [helper.make_node("Conv", ["clip", "w3"], ["y3"], strides=[2, 4, 4], name="tubelets"),
         helper.make_node("Conv", ["img", "w2"], ["y2"], pads=[1, 1, 1, 1], name="conv2d")],
        "g", [helper.make_tensor_value_info("clip", TensorProto.FLOAT, ["batch", 3, 8, 32, 32]),
              helper.make_tensor_value_info("img", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("y3", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, None)], [w3, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "c.onnx")
    infos = {i.name: i for i in analyse_graph(onnx.load(str(prepare_model(tmp_path / "c.onnx", tmp_path / "p.onnx"))))}
    assert infos["tubelets"].spatial_dims == 3 and infos["tubelets"].macs == 4 * 8 * 8 * 8 * 3 * 2 * 4 * 4
    assert infos["conv2d"].macs == 64 * 64 * 8 * 27
    cfg = QuantConfig(min_macs=100_000, min_side=0)
    assert not pays(infos["tubelets"], cfg) and pays(infos["conv2d"], cfg)
    assert not pays(infos["conv2d"], QuantConfig(min_macs=10 ** 6, min_side=0))


def test_cost_rule_skips_convs_over_few_input_channels(tmp_path):
    # An image stem: 3x3 over RGB (reduction 3 * 9 = 27) then 3x3 from 32 to 64 channels
    # (reduction 288), and a depthwise 3x3 (reduction 9 per group).
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("w_rgb", (32, 3, 3, 3)), ("w_mid", (64, 32, 3, 3)), ("w_dw", (64, 1, 3, 3)))]
    g = helper.make_graph(
        [helper.make_node("Conv", ["img", "w_rgb"], ["a"], pads=[1, 1, 1, 1], strides=[2, 2], name="rgb"),
         helper.make_node("Conv", ["a", "w_mid"], ["b"], pads=[1, 1, 1, 1], strides=[2, 2], name="mid"),
         helper.make_node("Conv", ["b", "w_dw"], ["y"], pads=[1, 1, 1, 1], group=64, name="dw")],
        "g", [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "s.onnx")
    infos = {i.name: i for i in analyse_graph(onnx.load(str(prepare_model(tmp_path / "s.onnx", tmp_path / "p.onnx"))))}
    assert [infos[n].min_side for n in ("rgb", "mid", "dw")] == [27, 64, 9]
    assert [infos[n].macs for n in ("rgb", "mid", "dw")] == [32 * 32 * 32 * 27, 16 * 16 * 64 * 288, 16 * 16 * 64 * 9]
    cfg = QuantConfig(min_macs=100_000)  # all three pass min_macs; the side rule leaves the middle one
    assert [pays(infos[n], cfg) for n in ("rgb", "mid", "dw")] == [False, True, False]
    assert all(pays(infos[n], QuantConfig(min_macs=100_000, min_side=0)) for n in ("rgb", "mid", "dw"))


def _conv_chain(path):
    """x (B, 16, 16, 16) -> conv a -> Relu -> conv b -> Relu -> conv c -> (y, and a second
    reader of c's output, so c's activation cannot be folded); s is the shape of b's Relu
    output (as the exporter's dynamic reshapes read it)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array((0.2 * rng.normal(size=s)).astype(np.float32), n)
             for n, s in (("wa", (32, 16, 3, 3)), ("wb", (32, 32, 3, 3)), ("wc", (32, 32, 3, 3)))]
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1, 1, 1, 1], name="a"),
         helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
         helper.make_node("Conv", ["ra", "wb"], ["b"], pads=[1, 1, 1, 1], name="b"),
         helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
         helper.make_node("Conv", ["rb", "wc"], ["c"], pads=[1, 1, 1, 1], name="c"),
         helper.make_node("Relu", ["c"], ["y"], name="relu_c"),
         helper.make_node("Neg", ["c"], ["z"], name="neg_c"),
         helper.make_node("Shape", ["rb"], ["s"], name="shape_b")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("s", TensorProto.INT64, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_quantized_convs_take_their_relu_along(tmp_path):
    import onnxruntime as ort

    from calibrate.quantize import finalize_graph, fused_activations

    prepared = prepare_model(_conv_chain(tmp_path / "chain.onnx"), tmp_path / "p.onnx")
    assert fused_activations(onnx.load(str(prepared))) == {"a": "relu_a", "b": "relu_b"}
    rng = np.random.default_rng(2)
    n = 16
    calib = CalibrationSet(inputs={"x": rng.normal(size=(n, 16, 16, 16)).astype(np.float32)},
                           valence=np.full(n, 5.0, np.float32), arousal=np.full(n, 5.0, np.float32),
                           valence_high=np.zeros(n, np.int64), arousal_high=np.zeros(n, np.int64),
                           subject=np.arange(n), trial=np.arange(n))
    q = OrtQuantizer(prepared, calib, QuantConfig(**ALL).validate(), tmp_path, ["Conv"])
    out = finalize_graph(q.quantize(["a", "b"], tmp_path / "q.onnx"))
    graph = onnx.load(str(out)).graph
    ops = [node.op_type for node in graph.node]
    # relu_a and relu_b were folded into their convs' output ranges; relu_c (c is float) stays
    assert ops.count("Relu") == 1
    # the shape of b's output is taken from its quantized tensor: no DequantizeLinear feeds Shape
    dq_out = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    assert all(node.input[0] not in dq_out for node in graph.node if node.op_type == "Shape")
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    x = {"x": calib.inputs["x"][:2]}
    got = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"]).run(None, x)
    fused = [node.op_type for node in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    # a and b run as integer convolutions, back to back: no DequantizeLinear between them
    assert fused.count("QLinearConv") == 2 and fused.count("DequantizeLinear") == 1, fused
    ref = ort.InferenceSession(str(prepared), providers=["CPUExecutionProvider"]).run(None, x)
    assert np.abs(got[0] - ref[0]).max() < 0.05 * np.abs(ref[0]).max()
    assert got[2].tolist() == ref[2].tolist() == [2, 32, 16, 16]


def test_window_reader_batches_and_ranges():
    r = WindowReader({"x": np.arange(10)[:, None]}, batch_size=4)
    assert len(r) == 3
    assert [b["x"].ravel().tolist() for b in r] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    r.set_range(1, 2)
    assert r.get_next()["x"].ravel().tolist() == [4, 5, 6, 7] and r.get_next() is None


def test_bad_settings_and_modelopt(tiny):
    bundle, calib, hold = tiny
    for bad in (dict(method="kl"), dict(target="gpu"), dict(min_agreement=0.0), dict(op_types=())):
        with pytest.raises(ConfigError):
            QuantConfig(**bad).validate()
    with pytest.raises(ConfigError, match="keep-float"):
        quantize_bundle(bundle, calib, hold, QuantConfig(keep_float=("no-such-node",), **ALL))
    wrong = copy.deepcopy(calib)
    wrong.meta["preprocessing_hash"] = "0" * 16
    with pytest.raises(ConfigError, match="preprocess"):
        quantize_bundle(bundle, wrong, hold)
    ok, why = modelopt_status()
    if ok:
        pytest.skip("nvidia-modelopt is installed here; its path needs TensorRT's rules checked on a GPU host")
    with pytest.raises(MissingDependencyError, match="modelopt"):
        quantize_bundle(bundle, calib, hold, QuantConfig(quantizer="modelopt", **ALL))


# --- the real pipeline: a tiny trained bundle -------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The contact model (1-D convolutions, GELU, pooling, heads) trained for one epoch per fold
    by export.train on the tiny synthetic set, exported by export.bundle with its parity check.
    (The transformer operators are covered by TinyFusion above; training promptfusion's
    encoder costs too much for the default test run.)"""
    from export.bundle import write_bundle
    from export.data import build_synth_dataset
    from export.train import TrainConfig, train

    root = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # other test processes share the cores
    try:
        data = build_synth_dataset(preset="tiny", cache_dir=root / "cache")
        data.save(root / "tiny.npz")
        cfg = TrainConfig(model="contact", folds=2, epochs=2, patience=2, batch_size=4, progress=False, device="cpu")
        train(data, cfg, root / "run", data_spec=str(root / "tiny.npz"), cache_dir=root / "cache")
        bundle = write_bundle(root / "run" / "checkpoint.pt", root / "bundle", data=str(root / "tiny.npz"),
                              parity_windows=4)
    finally:
        torch.set_num_threads(threads)
    return bundle, data


def _cli(argv):
    from calibrate.commands import calibrate as command

    return run_command(command, argv)


def test_trained_bundle_calibrates_with_the_cli(trained, capsys):
    bundle, data = trained
    # calibration windows from the tiny set's people (two subjects calibrate, two are held out)
    calib, hold = build_calibration(bundle, "synth", n_windows=8, n_holdout=8, pool=data)
    calib.meta["requested"] = hold.meta["requested"] = [8, 8]
    write_calibration(bundle.root, calib, hold)
    code = _cli(["calibrate", str(bundle.root), "--windows", "8", "--holdout", "8"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "reusing" in out.err and "gate PASSED" in out.out
    b = load_bundle(bundle.root, check_graphs=True)
    q = json.loads((bundle.root / "manifest.json").read_text())["quantization"]
    assert b.manifest.files[INT8_FILE].role == INT8_ROLE
    assert q["gate"]["min_agreement"] >= 0.99 and q["settings"]["min_macs"] == 100_000
    # two convolutions pay; the TFR CNN's first (one channel x 3 x 3 = a reduction of 9, too
    # short for an INT8 GEMM) and the small heads do not
    assert sum("Conv" in n for n in q["quantized_nodes"]) == 2
    cost = q["kept_float"]["cost"]
    assert [n for n in cost if "Conv" in n] == ["/owner/cnn/conv/conv.0/Conv"]
    assert all("Gemm" in n for n in cost if "Conv" not in n)
    assert q["gate"]["labelled"] is True and "valence" in q["gate"]["heads"]



def test_cli_exits_1_and_names_the_layers_when_the_gate_fails(tiny, capsys):
    bundle, calib, hold = tiny
    before = (bundle.root / "manifest.json").read_bytes()
    code = _cli(["calibrate", str(bundle.root), "--windows", "48", "--holdout", "64", "--no-sweep",
                 "--min-macs", "0", "--min-side", "0"])
    out = capsys.readouterr()
    assert code == 1, out.out + out.err
    assert "reusing" in out.err and "gate failed" in out.err
    advice = next(line for line in out.err.splitlines() if "--keep-float" in line)
    assert "/level/Gemm" in advice and "head" in advice
    assert (bundle.root / "manifest.json").read_bytes() == before
    # following the advice passes
    code = _cli(["calibrate", str(bundle.root), "--windows", "48", "--holdout", "64", "--no-sweep",
                 "--min-macs", "0", "--min-side", "0", "--keep-float", *advice.split("--keep-float", 1)[1].split()])
    assert code == 0 and "gate PASSED" in capsys.readouterr().out


def test_cli_out_calibrates_a_copy_and_leaves_the_source(tiny, tmp_path, capsys):
    bundle, calib, hold = tiny
    before = {p.name: p.read_bytes() for p in bundle.root.iterdir() if p.is_file()}
    copy = tmp_path / "copy"
    code = _cli(["calibrate", str(bundle.root), "--out", str(copy), "--windows", "48", "--holdout", "64",
                 "--min-macs", "0", "--min-side", "0"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "copied" in out.err and "reusing" in out.err and "gate PASSED" in out.out
    assert {p.name: p.read_bytes() for p in bundle.root.iterdir() if p.is_file()} == before
    assert load_bundle(copy, check_graphs=True).manifest.files[INT8_FILE].role == INT8_ROLE
    # a second run into the now non-empty folder is refused before anything is written
    with pytest.raises(ConfigError, match="not an empty folder"):
        _cli(["calibrate", str(bundle.root), "--out", str(copy)])


def test_cli_default_bundle_needs_out(tmp_path):
    with pytest.raises(ConfigError, match="--out DIR"):
        _cli(["calibrate", "default"])
    with pytest.raises(BadInputError):
        _cli(["calibrate", str(tmp_path / "missing"), "--out", str(tmp_path / "copy")])
    assert not (tmp_path / "copy").exists()


def test_cost_rule_skips_bottleneck_gemms(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("w_down", (192, 16)), ("w_up", (16, 192)), ("w_fc", (192, 192)))]
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w_down"], ["d"], name="down"),
         helper.make_node("MatMul", ["d", "w_up"], ["u"], name="up"),
         helper.make_node("MatMul", ["u", "w_fc"], ["y"], name="fc")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 68, 192])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "b.onnx")
    infos = {i.name: i for i in analyse_graph(onnx.load(str(prepare_model(tmp_path / "b.onnx", tmp_path / "p.onnx"))))}
    assert [infos[n].min_side for n in ("down", "up", "fc")] == [16, 16, 192]
    cfg = QuantConfig()  # 68 x 192 x 16 = 209 k MACs passes min_macs, but a side of 16 does not pay
    assert [pays(infos[n], cfg) for n in ("down", "up", "fc")] == [False, False, True]
    assert all(pays(infos[n], QuantConfig(min_side=0)) for n in ("down", "up", "fc"))
    with pytest.raises(ConfigError):
        QuantConfig(min_side=-1).validate()


def test_combination_order_is_accuracy_cost_per_speed():
    from calibrate.quantize import Probe, _cost_per_gain

    small = Probe("node:q", ("q",), True, 0.003, 0.0005, 0, 1.0, 0.0010)   # 2.5 M MACs
    large = Probe("node:fc1", ("fc1",), True, 0.004, 0.0007, 0, 1.0, 0.0020)  # 10 M MACs
    # fc1 costs twice the accuracy but brings four times the speed: q goes back to float first
    assert _cost_per_gain(small, 2_500_000) > _cost_per_gain(large, 10_000_000)


def test_cli_defaults_match_the_library():
    from calibrate.calibration import DEFAULT_HOLDOUT
    from calibrate.commands import calibrate as command

    assert command.DEFAULT_HOLDOUT == DEFAULT_HOLDOUT
