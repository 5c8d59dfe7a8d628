"""edge.engine: OrtEngine on a real tiny ONNX bundle (outputs against a NumPy reference, the Q/DQ
INT8 graph, validation, latency, warm-up, threads), provider choice, backend selection with
explicit flags and real engine records, and the TensorRT engine where TensorRT and a GPU exist."""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.bundle import load_bundle
from edge.engine import ENGINES, open_engine, select_backend
from edge.engine.base import latency_stats, resolve_precision
from edge.engine.ort import CPU_EP, CUDA_EP, TRT_EP, OrtEngine, choose_providers
from edge.engine.trt import (
    EngineKey,
    TrtEngine,
    TrtPlatform,
    engine_key,
    find_engine,
    tensorrt_status,
)
from firmware_bridge.errors import BadInputError, ConfigError, MissingDependencyError
from helpers import REPO, preprocessing_dict

RNG = np.random.default_rng(7)
W = {h: RNG.normal(size=(18, 2)).astype(np.float32) for h in ("valence", "arousal")}
W_ENC = RNG.normal(size=(12, 8)).astype(np.float32)
ORIN = TrtPlatform("10.3.0", "Orin", "8.7")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _model_graph() -> onnx.ModelProto:
    """tfr (B,1,4,4) and contact_level (B,2) -> flatten, concat -> per head MatMul -> Softmax."""
    b = "batch"
    nodes = [helper.make_node("Flatten", ["tfr"], ["tfr_flat"], axis=1),
             helper.make_node("Concat", ["tfr_flat", "contact_level"], ["x"], axis=1)]
    inits, outs = [], []
    for head in ("valence", "arousal"):
        inits.append(numpy_helper.from_array(W[head], f"w_{head}"))
        nodes += [helper.make_node("MatMul", ["x", f"w_{head}"], [f"z_{head}"]),
                  helper.make_node("Softmax", [f"z_{head}"], [f"{head}_prob"], axis=-1)]
        outs.append(helper.make_tensor_value_info(f"{head}_prob", TensorProto.FLOAT, [b, 2]))
    ins = [helper.make_tensor_value_info("tfr", TensorProto.FLOAT, [b, 1, 4, 4]),
           helper.make_tensor_value_info("contact_level", TensorProto.FLOAT, [b, 2])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", ins, outs, initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _encoder_graph() -> onnx.ModelProto:
    w = numpy_helper.from_array(W_ENC, "w_enc")
    nodes = [helper.make_node("Flatten", ["face_crop"], ["f"], axis=1),
             helper.make_node("MatMul", ["f", "w_enc"], ["face_feat"])]
    g = helper.make_graph(
        nodes, "enc", [helper.make_tensor_value_info("face_crop", TensorProto.FLOAT,
                                                     ["batch", 3, 2, 2])],
        [helper.make_tensor_value_info("face_feat", TensorProto.FLOAT, ["batch", 8])],
        initializer=[w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def reference(inputs: dict) -> dict:
    x = np.concatenate([inputs["tfr"].reshape(len(inputs["tfr"]), -1),
                        inputs["contact_level"]], axis=1).astype(np.float64)
    out = {}
    for head in ("valence", "arousal"):
        z = x @ W[head]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        out[f"{head}_prob"] = e / e.sum(axis=1, keepdims=True)
    return out


def windows(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"tfr": rng.random((n, 1, 4, 4), dtype=np.float32),
            "contact_level": rng.normal(size=(n, 2)).astype(np.float32)}


def _spec(name, shape, meaning="test tensor"):
    return {"name": name, "shape": ["batch", *shape], "dtype": "float32", "meaning": meaning}


def make_bundle(root, *, int8: bool = False, encoder: bool = False):
    """Write a valid bundle folder; optionally with a real Q/DQ INT8 graph and a face encoder."""
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(_model_graph(), root / "model.onnx")
    files = {"model.onnx": {"sha256": _sha(root / "model.onnx"), "role": "model"}}
    if int8:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self):
                self._it = iter([{k: v[i:i + 1] for k, v in windows(32, 1).items()}
                                 for i in range(32)])

            def get_next(self):
                return next(self._it, None)

        quantize_static(str(root / "model.onnx"), str(root / "model.int8.onnx"), Reader(),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"])
        files["model.int8.onnx"] = {"sha256": _sha(root / "model.int8.onnx"),
                                    "role": "model_int8"}
    if encoder:
        onnx.save(_encoder_graph(), root / "face_encoder.onnx")
        files["face_encoder.onnx"] = {
            "sha256": _sha(root / "face_encoder.onnx"), "role": "face_encoder",
            "inputs": [_spec("face_crop", [3, 2, 2])], "outputs": [_spec("face_feat", [8])]}
    manifest = {
        "schema_version": 1, "model": {"name": "tiny", "version": "t1"},
        "inputs": [_spec("tfr", [1, 4, 4]), _spec("contact_level", [2])],
        "outputs": [_spec("valence_prob", [2]), _spec("arousal_prob", [2])],
        "preprocessing": preprocessing_dict(**{"tfr.shape": [4, 4]}), "labels": {"valence": ["low", "high"],
                                                        "arousal": ["low", "high"]},
        "training": {}, "export": {"opset": 17}, "files": files,
        "parity": {"max_abs_diff": 0.0, "n_windows": 1, "passed": True},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return load_bundle(root)


def add_engine_record(bundle, key: EngineKey, payload: bytes = b"plan bytes", built="2026-01-01"):
    """Write a plan file and its manifest record, as `emofuse build` does (bytes stand in for a
    TensorRT plan: selection never deserializes it)."""
    path = bundle.root / "engines" / key.filename
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload)
    data = json.loads((bundle.root / "manifest.json").read_text())
    data.setdefault("engines", {})[f"engines/{key.filename}"] = {
        "key": key.to_dict(), "digest": key.digest, "sha256": _sha(path), "built_utc": built}
    (bundle.root / "manifest.json").write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("b") / "tiny", int8=True, encoder=True)


@pytest.fixture
def plain_bundle(tmp_path):
    return make_bundle(tmp_path / "plain")


# --- OrtEngine ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
def test_ort_fp32_matches_numpy_reference(bundle, batch):
    feeds = windows(batch, seed=batch)
    with OrtEngine(bundle, "fp32", intra_op_threads=1) as eng:
        out = eng.run(feeds)
    want = reference(feeds)
    assert list(out) == ["valence_prob", "arousal_prob"]
    for name in out:
        assert out[name].shape == (batch, 2) and out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], want[name], atol=1e-5)
    m = eng.metadata
    assert m["graph"] == "model.onnx" and m["graph_sha256"] == _sha(bundle.model_path)
    assert m["precision"] == "fp32" and m["providers"] == [CPU_EP]
    assert m["threads"]["intra_op"] == 1 and m["notes"] == []


def test_ort_int8_runs_the_qdq_graph_and_agrees(bundle):
    feeds = windows(200, seed=3)
    with OrtEngine(bundle, "int8") as eng:
        q = eng.run(feeds)
    assert eng.metadata["graph"] == "model.int8.onnx"
    ops = {n.op_type for n in onnx.load(bundle.root / "model.int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ref = reference(feeds)
    for name in ref:
        diff = np.abs(q[name] - ref[name])
        assert diff.max() < 0.1
        agree = np.mean(q[name].argmax(1) == ref[name].argmax(1))
        assert agree >= 0.95, (name, agree)
    # It is a different graph: if the engine had silently run FP32 the outputs would be equal.
    assert max(np.abs(q[n] - ref[n]).max() for n in ref) > 1e-6


def test_int8_without_qdq_graph_says_to_calibrate(plain_bundle):
    with pytest.raises(ConfigError, match="emofuse calibrate"):
        OrtEngine(plain_bundle, "int8")


def test_unlisted_int8_file_is_refused(plain_bundle):
    (plain_bundle.root / "model.int8.onnx").write_bytes(b"x")
    with pytest.raises(ConfigError, match="does not list it"):
        OrtEngine(plain_bundle, "int8")


def test_face_encoder_role_uses_its_own_specs(bundle):
    crops = RNG.random((4, 3, 2, 2), dtype=np.float32)
    with OrtEngine(bundle, role="face_encoder") as eng:
        out = eng.run({"face_crop": crops})
    assert eng.input_names == ["face_crop"] and out["face_feat"].shape == (4, 8)
    np.testing.assert_allclose(out["face_feat"], crops.reshape(4, -1) @ W_ENC, atol=1e-5)


def _bad_inputs():
    ok = windows(2)
    yield "not a dict", [ok["tfr"]], "dict"
    yield "missing", {"tfr": ok["tfr"]}, "missing \\['contact_level'\\]"
    yield "unknown", {**ok, "face_clip": ok["tfr"]}, "unknown \\['face_clip'\\]"
    yield "dtype", {**ok, "tfr": ok["tfr"].astype(np.float64)}, "float64"
    yield "dims", {**ok, "tfr": np.zeros((2, 1, 4, 5), np.float32)}, "shape"
    yield "rank", {**ok, "contact_level": np.zeros((2, 2, 1), np.float32)}, "shape"
    yield "batch mismatch", {**ok, "contact_level": np.zeros((3, 2), np.float32)}, "differ"
    yield "empty batch", windows(0), "batch size is 0"
    yield "list", {**ok, "contact_level": [[0.0, 0.0], [0.0, 0.0]]}, "numpy array"
    yield "over max batch", windows(5), "exceeds"


@pytest.mark.parametrize("what,feeds,match", list(_bad_inputs()), ids=[c[0] for c in _bad_inputs()])
def test_input_validation(bundle, what, feeds, match):
    with OrtEngine(bundle, max_batch=4) as eng:
        with pytest.raises(BadInputError, match=match):
            eng.run(feeds)
        assert eng.latency().count == 0  # refused runs are not timed


def test_non_contiguous_input_is_accepted(bundle):
    feeds = windows(3)
    tfr = np.asfortranarray(feeds["tfr"])
    with OrtEngine(bundle) as eng:
        out = eng.run({**feeds, "tfr": tfr})
    np.testing.assert_allclose(out["valence_prob"], reference(feeds)["valence_prob"], atol=1e-5)


def test_lifecycle(bundle):
    eng = OrtEngine(bundle)
    with pytest.raises(ConfigError, match="not active"):
        eng.run(windows(1))
    with eng as active:
        assert active is eng and eng.active
        eng.run(windows(1))
    assert not eng.active
    eng.deactivate()  # idempotent
    with pytest.raises(ConfigError, match="not active"):
        eng.run(windows(1))
    assert "OrtEngine inactive" in repr(eng)


def test_latency_stats_and_warmup(bundle):
    with OrtEngine(bundle) as eng:
        warm = eng.warmup(4, batch=2)
        assert warm.count == 4 and warm.items == 8
        assert eng.latency().count == 0  # warm-up runs are dropped
        for b in (1, 2, 3):
            eng.run(windows(b))
        s = eng.latency()
    assert s.count == 3 and s.items == 6
    assert s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.min_ms <= s.mean_ms <= s.max_ms and s.min_ms > 0
    assert s.items_per_s == pytest.approx(6 / (s.mean_ms * 3 / 1e3), rel=1e-9)
    eng.reset_latency()
    empty = eng.latency()
    assert empty.count == 0 and empty.to_dict()["p50_ms"] is None
    assert str(empty) == "no runs recorded"


def test_latency_stats_function_against_numpy():
    d = np.array([0.004, 0.001, 0.003, 0.002, 0.010])
    s = latency_stats(d, [1, 1, 2, 1, 1])
    assert s.p50_ms == pytest.approx(3.0) and s.max_ms == pytest.approx(10.0)
    assert s.p90_ms == pytest.approx(np.percentile(d * 1e3, 90))
    assert s.items_per_s == pytest.approx(6 / d.sum())


def test_warmup_rejects_zero_runs(bundle):
    with OrtEngine(bundle) as eng, pytest.raises(ConfigError):
        eng.warmup(0)


def test_engine_runs_in_a_worker_thread(bundle):
    feeds = windows(3, seed=11)
    result = {}

    def worker():
        with OrtEngine(bundle, intra_op_threads=1) as eng:
            result.update(eng.run(feeds))

    t = threading.Thread(target=worker)
    t.start()
    t.join(timeout=60)
    np.testing.assert_allclose(result["arousal_prob"], reference(feeds)["arousal_prob"],
                               atol=1e-5)


def test_fp16_without_tensorrt_ep_is_recorded_not_silent(bundle, caplog):
    with caplog.at_level(logging.WARNING, logger="emofuse.engine"):
        with OrtEngine(bundle, "fp16") as eng:
            eng.run(windows(1))
    assert eng.metadata["precision_requested"] == "fp16"
    assert eng.metadata["precision"] == "fp32"
    assert any("fp16 needs the TensorRT" in n for n in eng.metadata["notes"])
    assert "fp16 needs the TensorRT" in caplog.text


def test_unavailable_provider_is_dropped_and_recorded(bundle):
    with OrtEngine(bundle, providers=[CUDA_EP, CPU_EP]) as eng:
        eng.run(windows(1))
    assert eng.metadata["providers"] == [CPU_EP]
    assert any(CUDA_EP in n and "not available" in n for n in eng.metadata["notes"])


@pytest.mark.parametrize("kwargs", [{"intra_op_threads": 0}, {"inter_op_threads": 1.5},
                                    {"graph_optimization": "max"}, {"max_batch": 0}])
def test_bad_settings(bundle, kwargs):
    with pytest.raises(ConfigError):
        OrtEngine(bundle, **kwargs)


def test_choose_providers_order_and_options():
    avail = [CPU_EP, "AzureExecutionProvider", CUDA_EP, TRT_EP]
    provs, notes = choose_providers(avail, precision="int8", trt_cache_dir="/c")
    assert [p for p, _ in provs] == [TRT_EP, CUDA_EP, CPU_EP] and notes == []
    trt_opts = dict(provs)[TRT_EP]
    assert trt_opts["trt_int8_enable"] and not trt_opts["trt_fp16_enable"]
    assert trt_opts["trt_engine_cache_path"] == "/c"
    provs, _ = choose_providers(avail, precision="fp16")
    assert dict(provs)[TRT_EP]["trt_fp16_enable"] and "trt_engine_cache_path" not in dict(
        provs)[TRT_EP]
    provs, notes = choose_providers([CPU_EP], [TRT_EP, CPU_EP])
    assert [p for p, _ in provs] == [CPU_EP] and TRT_EP in notes[0]
    with pytest.raises(ConfigError, match="none of the execution providers"):
        choose_providers([CPU_EP], [CUDA_EP])


# --- backend selection -------------------------------------------------------------------------


def test_auto_selects_onnxruntime_when_tensorrt_is_not_importable(bundle):
    backend, reason = select_backend(bundle, "auto", "fp32", tensorrt_importable=False)
    assert (backend, reason) == ("onnxruntime", "tensorrt not importable")


def test_auto_probe_on_this_machine(bundle):
    ok, _ = tensorrt_status()
    if ok:
        pytest.skip("tensorrt is importable here; the probe-free tests cover selection")
    backend, reason = select_backend(bundle, "auto", "fp32")
    assert backend == "onnxruntime" and reason.startswith("tensorrt not importable")


def test_explicit_backends_and_unknown(bundle):
    assert select_backend(bundle, "tensorrt", "int8", tensorrt_importable=False) == (
        "tensorrt", "requested")
    assert select_backend(bundle, "onnxruntime", "fp16") == ("onnxruntime", "requested")
    with pytest.raises(ConfigError):
        select_backend(bundle, "openvino")
    with pytest.raises(ConfigError):
        select_backend(bundle, "auto", "int4")


def test_auto_selects_tensorrt_for_a_matching_engine(tmp_path):
    b = make_bundle(tmp_path / "b", int8=True)
    key = engine_key(b, "int8", ORIN, max_batch=8)
    assert key.int8_mode == "qdq" and key.onnx_file == "model.int8.onnx"
    add_engine_record(b, key)
    backend, reason = select_backend(b, "auto", "int8", tensorrt_importable=True, platform=ORIN)
    assert backend == "tensorrt" and key.filename in reason
    # Another precision has no engine: ONNX Runtime, and the reason says so.
    backend, reason = select_backend(b, "auto", "fp16", tensorrt_importable=True, platform=ORIN)
    assert backend == "onnxruntime" and "no fp16 TensorRT engine" in reason
    assert "emofuse build" in reason


@pytest.mark.parametrize("platform,expect", [
    (TrtPlatform("10.7.0", "Orin", "8.7"), "built with TensorRT 10.3.0, this is TensorRT 10.7.0"),
    (TrtPlatform("10.3.0", "NVIDIA H100", "9.0"),
     "built for 'Orin' (sm 8.7), this is 'NVIDIA H100'"),
])
def test_stale_engine_is_not_selected_and_reason_says_why(tmp_path, platform, expect):
    b = make_bundle(tmp_path / "b")
    add_engine_record(b, engine_key(b, "fp16", ORIN))
    backend, reason = select_backend(b, "auto", "fp16", tensorrt_importable=True,
                                     platform=platform)
    assert backend == "onnxruntime" and expect in reason


def test_changed_graph_corrupt_plan_and_small_profile_are_rejected(tmp_path):
    b = make_bundle(tmp_path / "b")
    path = add_engine_record(b, engine_key(b, "fp32", ORIN, max_batch=4))
    assert find_engine(b, "fp32", ORIN).found
    m = find_engine(b, "fp32", ORIN, max_batch=8)
    assert not m.found and "stops at 4, 8 needed" in m.explain()
    path.write_bytes(b"tampered")
    m = find_engine(b, "fp32", ORIN)
    assert not m.found and "sha256 differs" in m.explain()
    path.unlink()
    assert "is missing" in find_engine(b, "fp32", ORIN).explain()
    # Re-export: model.onnx changes, the manifest records the new hash.
    b2 = make_bundle(tmp_path / "b2")
    add_engine_record(b2, engine_key(b2, "fp32", ORIN))
    data = json.loads((b2.root / "manifest.json").read_text())
    data["files"]["model.onnx"]["sha256"] = "0" * 64
    (b2.root / "manifest.json").write_text(json.dumps(data))
    m = find_engine(load_bundle(b2.root, verify_hashes=False), "fp32", ORIN)
    assert not m.found and "re-exported or re-calibrated" in m.explain()


def test_dla_engine_only_when_asked(tmp_path):
    b = make_bundle(tmp_path / "b")
    add_engine_record(b, engine_key(b, "fp16", ORIN, dla_core=0))
    assert not find_engine(b, "fp16", ORIN).found
    assert find_engine(b, "fp16", ORIN, dla_core=0).found


# --- open_engine -------------------------------------------------------------------------------


def test_open_engine_auto_here_gives_onnxruntime_with_reason(bundle):
    ok, _ = tensorrt_status()
    eng = open_engine(bundle.root, precision="auto", intra_op_threads=1, engine_file="x.plan")
    assert isinstance(eng, OrtEngine) if not ok else isinstance(eng, tuple(ENGINES.values()))
    with eng:
        out = eng.run(windows(2))
    assert set(out) == {"valence_prob", "arousal_prob"}
    m = eng.metadata
    assert m["backend_requested"] == "auto" and m["precision_requested"] == "auto"
    assert m["precision"] == "int8" and "INT8 graph" in m["precision_reason"]
    if not ok:
        assert m["backend"] == "onnxruntime" and m["backend_reason"].startswith(
            "tensorrt not importable")


def test_open_engine_options(bundle, plain_bundle):
    with pytest.raises(ConfigError, match="unknown engine options"):
        open_engine(bundle, "onnxruntime", threads=2)
    assert resolve_precision(plain_bundle, "auto")[0] == "fp32"
    eng = open_engine(plain_bundle, "onnxruntime", "auto")
    assert eng.metadata["precision_reason"].startswith("auto: no usable INT8 graph")


def test_trt_engine_needs_the_jetson_extra_here(bundle):
    ok, _ = tensorrt_status()
    if ok:
        pytest.skip("tensorrt is installed here")
    eng = TrtEngine(bundle, "fp32")
    with pytest.raises(MissingDependencyError, match=r"emofuse\[jetson\]"):
        eng.activate()
    assert not eng.active


def test_importing_edge_engine_loads_no_heavy_library():
    code = ("import sys, edge.engine; "
            "print(sorted(m for m in ('onnxruntime', 'tensorrt', 'pycuda', 'cuda', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.strip()
    assert out == "[]"


# --- TensorRT (runs only with tensorrt and a GPU) ------------------------------------------------


def _need_tensorrt_gpu():
    pytest.importorskip("tensorrt", reason="tensorrt is not installed (Jetson / NVIDIA GPU only)")
    from edge.engine.trt import probe_platform

    try:
        return probe_platform()
    except Exception as exc:  # no CUDA binding or no device
        pytest.skip(f"no usable CUDA device for TensorRT: {exc}")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_trt_engine_matches_onnxruntime_in_a_worker_thread(tmp_path):
    _need_tensorrt_gpu()
    from calibrate.engine_build import build_engine

    b = make_bundle(tmp_path / "b")
    build_engine(b, "fp32", max_batch=4, workspace_mb=256)
    feeds = windows(3, seed=5)
    result = {}

    def worker():
        with open_engine(b, "auto", "fp32", max_batch=4) as eng:
            result["backend"] = eng.backend
            result.update(eng.run(feeds))
            result["stats"] = eng.latency()

    t = threading.Thread(target=worker)
    t.start()
    t.join(timeout=300)
    assert result["backend"] == "tensorrt"
    ref = reference(feeds)
    for name in ref:
        np.testing.assert_allclose(result[name], ref[name], atol=1e-3)
    assert result["stats"].count == 1
