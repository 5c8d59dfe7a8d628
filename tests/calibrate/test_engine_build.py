"""calibrate.engine_build: engine keys, build planning for TensorRT 10 and 11 feature sets,
profile shapes, stale-engine detection (rebuild or fail with the reason), manifest updates,
calibration data and caches; real TensorRT builds where TensorRT and a GPU exist."""
from __future__ import annotations

import argparse
import hashlib
import json
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibrate.engine_build import (
    TrtCaps,
    build_engine,
    calibration_batches,
    calibration_cache_path,
    default_timing_cache,
    detect_caps,
    engine_key,
    engine_path,
    plan_build,
    profile_shapes,
    read_calibration_cache,
    record_engine,
    remove_engine_records,
    update_manifest,
)
from edge.bundle import TensorSpec, load_bundle
from edge.engine.trt import EngineKey, TrtPlatform, engine_records, tensorrt_status
from firmware_bridge.errors import BadInputError, ConfigError, MissingDependencyError
from helpers import preprocessing_dict

ORIN = TrtPlatform("10.3.0", "Orin", "8.7")
TRT10 = TrtCaps("10.3.0", strongly_typed_flag=True, weak_precision_flags=True,
                implicit_int8=True, dla=True)
TRT11 = TrtCaps("11.4.0", strongly_typed_flag=False, weak_precision_flags=False,
                implicit_int8=False, dla=True)
W = np.random.default_rng(3).normal(size=(6, 2)).astype(np.float32)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _graph(scale: float = 1.0) -> onnx.ModelProto:
    """contact (B, 2, 3) -> Flatten -> MatMul -> Softmax, twice (valence, arousal)."""
    nodes = [helper.make_node("Flatten", ["contact"], ["x"], axis=1)]
    inits, outs = [], []
    for i, head in enumerate(("valence", "arousal")):
        inits.append(numpy_helper.from_array(W * scale * (i + 1), f"w{i}"))
        nodes += [helper.make_node("MatMul", ["x", f"w{i}"], [f"z{i}"]),
                  helper.make_node("Softmax", [f"z{i}"], [f"{head}_prob"], axis=-1)]
        outs.append(helper.make_tensor_value_info(f"{head}_prob", TensorProto.FLOAT,
                                                  ["batch", 2]))
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info(
        "contact", TensorProto.FLOAT, ["batch", 2, 3])], outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _spec(name, shape):
    return {"name": name, "shape": ["batch", *shape], "dtype": "float32", "meaning": "test"}


def make_bundle(root, *, qdq: bool = False, scale: float = 1.0, extra: dict | None = None):
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(_graph(scale), root / "model.onnx")
    files = {"model.onnx": {"sha256": _sha(root / "model.onnx"), "role": "model"}}
    if qdq:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        data = iter([{"contact": np.random.default_rng(i).normal(size=(1, 2, 3)).astype(
            np.float32)} for i in range(16)])

        class Reader(CalibrationDataReader):
            def get_next(self):
                return next(data, None)

        quantize_static(str(root / "model.onnx"), str(root / "model.int8.onnx"), Reader(),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"])
        files["model.int8.onnx"] = {"sha256": _sha(root / "model.int8.onnx"),
                                    "role": "model_int8"}
    manifest = {
        "schema_version": 1, "model": {"name": "tiny", "version": "t1"},
        "inputs": [_spec("contact", [2, 3])],
        "outputs": [_spec("valence_prob", [2]), _spec("arousal_prob", [2])],
        "preprocessing": preprocessing_dict(**{"contact.n_samples": 3}), "labels": {"valence": ["low", "high"], "arousal": ["low", "high"]},
        "training": {}, "export": {"opset": 17}, "files": files,
        "parity": {"max_abs_diff": 0.0, "n_windows": 1, "passed": True}, **(extra or {}),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(root)


def fake_plan(bundle, key: EngineKey, payload: bytes = b"serialized plan", built="2026-01-01"):
    """Write bytes where the plan goes and record them as `build_engine` does (no TensorRT)."""
    path = engine_path(bundle, key)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload)
    return record_engine(bundle, key, path, {"built_utc": built})


def write_calibration(bundle, n: int = 20, dtype=np.float32, name: str = "contact"):
    rng = np.random.default_rng(0)
    path = bundle.root / "calibration.npz"
    np.savez(path, **{name: rng.normal(size=(n, 2, 3)).astype(dtype)},
             valence_high=np.zeros(n, np.int64))
    return path


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "b")


@pytest.fixture(scope="module")
def qdq_bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("q") / "b", qdq=True)


# --- keys --------------------------------------------------------------------------------------


def test_engine_key_is_stable_and_round_trips(bundle):
    a = engine_key(bundle, "fp16", ORIN, max_batch=8)
    b = engine_key(bundle.root, "fp16", TrtPlatform("10.3.0", "Orin", "8.7"), max_batch=8)
    assert a == b and a.digest == b.digest and len(a.digest) == 16
    assert EngineKey.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert a.filename == f"model-fp16-b8-{a.digest}.plan"
    assert engine_path(bundle, a) == bundle.root / "engines" / a.filename


@pytest.mark.parametrize("change", [
    {"platform": TrtPlatform("10.7.0", "Orin", "8.7")},
    {"platform": TrtPlatform("11.4.0", "Orin", "8.7")},
    {"platform": TrtPlatform("10.3.0", "Thor", "8.7")},
    {"platform": TrtPlatform("10.3.0", "Orin", "11.0")},
    {"precision": "fp32"},
    {"max_batch": 16},
    {"opt_batch": 2},
    {"dla_core": 1},
])
def test_engine_key_differs_with_every_input(bundle, change):
    base = dict(precision="fp16", platform=ORIN, max_batch=8, opt_batch=1, dla_core=None)
    a = engine_key(bundle, base["precision"], base["platform"], max_batch=8)
    args = {**base, **change}
    b = engine_key(bundle, args["precision"], args["platform"], max_batch=args["max_batch"],
                   opt_batch=args["opt_batch"], dla_core=args["dla_core"])
    assert a != b and a.digest != b.digest and a.filename != b.filename


def test_engine_key_differs_with_the_graph(tmp_path):
    a = engine_key(make_bundle(tmp_path / "a"), "fp32", ORIN)
    b = engine_key(make_bundle(tmp_path / "b", scale=2.0), "fp32", ORIN)
    assert a.onnx_sha256 != b.onnx_sha256 and a.digest != b.digest


def test_engine_key_int8_modes(qdq_bundle, bundle):
    qdq = engine_key(qdq_bundle, "int8", ORIN)
    assert (qdq.int8_mode, qdq.onnx_file) == ("qdq", "model.int8.onnx")
    cal = engine_key(bundle, "int8", ORIN, calibration_sha256="a" * 64)
    assert (cal.int8_mode, cal.onnx_file) == ("calibrated", "model.onnx")
    other = engine_key(bundle, "int8", ORIN, calibration_sha256="b" * 64)
    assert cal.digest != other.digest  # other calibration data: another engine
    with pytest.raises(ConfigError, match="calibration_sha256"):
        engine_key(bundle, "int8", ORIN)
    with pytest.raises(ConfigError):
        engine_key(bundle, "fp16", ORIN, int8_mode="qdq")
    with pytest.raises(ConfigError):
        EngineKey.from_dict({**qdq.to_dict(), "batch_max": "8"})
    with pytest.raises(ConfigError, match="unknown"):
        EngineKey.from_dict({**qdq.to_dict(), "extra": 1})


def test_profile_shapes():
    specs = [TensorSpec("face_clip", ("batch", 8, 3, 32, 32), "float32", "x"),
             TensorSpec("contact_level", ("batch", 2), "float32", "x")]
    shapes = profile_shapes(specs, max_batch=8, opt_batch=2)
    assert shapes["face_clip"] == ((1, 8, 3, 32, 32), (2, 8, 3, 32, 32), (8, 8, 3, 32, 32))
    assert shapes["contact_level"] == ((1, 2), (2, 2), (8, 2))
    for bad in ({"max_batch": 0}, {"max_batch": 4, "opt_batch": 5}, {"max_batch": 2.5}):
        with pytest.raises(ConfigError):
            profile_shapes(specs, **bad)


# --- planning ----------------------------------------------------------------------------------


def test_plan_trt10(qdq_bundle, bundle):
    p = plan_build(qdq_bundle, "int8", ORIN, TRT10)
    assert p.strongly_typed and p.builder_flags == () and p.onnx_path.name == "model.int8.onnx"
    assert p.status == "new" and p.calibration is None
    assert p.profiles["contact"] == ((1, 2, 3), (1, 2, 3), (8, 2, 3))
    assert p.workspace_bytes == 1024 << 20
    p = plan_build(bundle, "fp16", ORIN, TRT10, workspace_mb=256)
    assert not p.strongly_typed and p.builder_flags == ("FP16",) and not p.fp16_autocast
    assert p.workspace_bytes == 256 << 20
    p = plan_build(bundle, "fp32", ORIN, TRT10)
    assert p.strongly_typed and p.builder_flags == ()
    assert p.timing_cache == default_timing_cache(bundle, ORIN)
    assert p.timing_cache.name == "timing-trt10.3.0-orin-sm8.7.cache"


def test_plan_trt10_implicit_int8_needs_calibration_data(bundle):
    with pytest.raises(ConfigError, match="calibration.npz is missing"):
        plan_build(bundle, "int8", ORIN, TRT10)
    npz = write_calibration(bundle)
    p = plan_build(bundle, "int8", ORIN, TRT10)
    assert p.key.int8_mode == "calibrated" and p.builder_flags == ("INT8",)
    assert not p.strongly_typed and p.onnx_path.name == "model.onnx"
    assert p.key.calibration_sha256 == _sha(npz)
    assert p.calibration_cache.name == f"calib-model-trt10.3.0-{_sha(npz)[:12]}.cache"
    # The cache name carries the TensorRT version: another version never reads it.
    assert calibration_cache_path(bundle, "model", "10.7.0", _sha(npz)) != p.calibration_cache


def test_plan_trt11_is_strongly_typed_only(qdq_bundle, bundle):
    p = plan_build(qdq_bundle, "int8", ORIN, TRT11)
    assert p.strongly_typed and p.builder_flags == ()
    write_calibration(bundle)
    with pytest.raises(ConfigError, match="removed in 11.0.*emofuse calibrate"):
        plan_build(bundle, "int8", ORIN, TRT11)
    with pytest.raises(ConfigError, match="no implicit INT8"):
        plan_build(qdq_bundle, "int8", ORIN, TRT11, int8_mode="calibrated")
    p = plan_build(bundle, "fp16", ORIN, TRT11)
    assert p.fp16_autocast and p.strongly_typed and p.builder_flags == ()


def test_plan_dla_rules(bundle):
    with pytest.raises(ConfigError, match="FP16 and INT8 only"):
        plan_build(bundle, "fp32", ORIN, TRT10, dla_core=0)
    no_dla = TrtCaps("10.3.0", True, True, True, dla=False)
    with pytest.raises(ConfigError, match="no DLA"):
        plan_build(bundle, "fp16", ORIN, no_dla, dla_core=0)
    p = plan_build(bundle, "fp16", ORIN, TRT10, dla_core=1)
    assert p.key.dla_core == 1 and "-dla1-" in p.path.name


def test_detect_caps_on_documented_attribute_sets():
    """Feature detection on the attribute surface NVIDIA's 10.x -> 11.x migration guide lists."""
    trt10 = types.SimpleNamespace(
        __version__="10.3.0",
        NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1),
        BuilderFlag=types.SimpleNamespace(FP16=0, INT8=1, GPU_FALLBACK=2),
        IInt8EntropyCalibrator2=object, DeviceType=types.SimpleNamespace(GPU=0, DLA=1))
    trt11 = types.SimpleNamespace(
        __version__="11.4.0", NetworkDefinitionCreationFlag=types.SimpleNamespace(),
        BuilderFlag=types.SimpleNamespace(GPU_FALLBACK=2),
        DeviceType=types.SimpleNamespace(GPU=0, DLA=1))
    assert detect_caps(trt10) == TrtCaps("10.3.0", True, True, True, True)
    c11 = detect_caps(trt11)
    assert c11.always_strongly_typed and not c11.implicit_int8 and not c11.strongly_typed_flag


# --- stale engines -----------------------------------------------------------------------------


def test_up_to_date_force_and_version_change(bundle):
    plan = plan_build(bundle, "fp16", ORIN, TRT10)
    fake_plan(bundle, plan.key)
    assert plan_build(bundle, "fp16", ORIN, TRT10).status == "up-to-date"
    forced = plan_build(bundle, "fp16", ORIN, TRT10, force=True)
    assert forced.status == "rebuild" and forced.reasons[0] == "forced"
    # JetPack upgrade: TensorRT 10.3.0 -> 10.7.0.
    newer = TrtPlatform("10.7.0", "Orin", "8.7")
    p = plan_build(bundle, "fp16", newer, TRT10)
    assert p.status == "rebuild" and p.key != plan.key
    assert "built with TensorRT 10.3.0, this is TensorRT 10.7.0" in p.reasons[0]
    assert p.prune == ()  # the other engine still serves boards on 10.3.0
    with pytest.raises(ConfigError, match="stale TensorRT engine.*10.3.0, this is TensorRT 10.7.0"):
        plan_build(bundle, "fp16", newer, TRT10, on_stale="fail")
    # Another board on the same TensorRT.
    p = plan_build(bundle, "fp16", TrtPlatform("10.3.0", "Thor", "11.0"), TRT10)
    assert "built for 'Orin' (sm 8.7), this is 'Thor' (sm 11.0)" in p.reasons[0]


def test_corrupt_plan_is_rebuilt(bundle):
    key = plan_build(bundle, "fp32", ORIN, TRT10).key
    rec = fake_plan(bundle, key)
    (bundle.root / rec.file).write_bytes(b"half a plan")
    p = plan_build(bundle, "fp32", ORIN, TRT10)
    assert p.status == "rebuild" and "sha256 differs" in p.reasons[0]


def test_changed_graph_makes_engines_stale_and_prunable(tmp_path):
    b = make_bundle(tmp_path / "b")
    old = fake_plan(b, plan_build(b, "fp32", ORIN, TRT10).key)
    b = make_bundle(tmp_path / "b", scale=3.0, extra={"engines": json.loads(
        (tmp_path / "b" / "manifest.json").read_text())["engines"]})  # re-export, records kept
    p = plan_build(b, "fp32", ORIN, TRT10)
    assert p.status == "rebuild" and "re-exported or re-calibrated" in p.reasons[0]
    assert p.prune == (old.file,)
    removed = remove_engine_records(b, p.prune)
    assert removed == [old.file] and not (b.root / old.file).exists()
    assert engine_records(b)[0] == []


# --- manifest ----------------------------------------------------------------------------------


def test_record_engine_keeps_other_sections_and_the_bundle_valid(tmp_path):
    b = make_bundle(tmp_path / "b", extra={"quantization": {"method": "minmax"},
                                           "future_section": [1, 2]})
    key = engine_key(b, "fp16", ORIN)
    rec = fake_plan(b, key)
    data = json.loads((b.root / "manifest.json").read_text())
    assert data["quantization"] == {"method": "minmax"} and data["future_section"] == [1, 2]
    entry = data["engines"][rec.file]
    assert entry["key"] == key.to_dict() and entry["digest"] == key.digest
    assert entry["sha256"] == _sha(b.root / rec.file) and entry["size_bytes"] == 15
    load_bundle(b.root)  # hashes of the graphs still verify
    assert [p.name for p in b.root.iterdir() if p.name.startswith(".")] == []
    records, problems = engine_records(b)
    assert [r.key for r in records] == [key] and problems == []


def test_update_manifest_refuses_an_invalid_result(bundle):
    before = (bundle.root / "manifest.json").read_text()

    def break_it(data):
        data["schema_version"] = 2

    with pytest.raises(ConfigError, match="schema_version"):
        update_manifest(bundle.root, break_it)
    assert (bundle.root / "manifest.json").read_text() == before


def test_record_engine_refuses_a_plan_outside_the_bundle(bundle, tmp_path):
    outside = tmp_path / "elsewhere.plan"
    outside.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not inside"):
        record_engine(bundle, engine_key(bundle, "fp32", ORIN), outside)


def test_malformed_record_is_skipped_with_a_reason(bundle):
    update_manifest(bundle.root, lambda d: d.update(engines={"engines/x.plan": {"key": {}}}))
    records, problems = engine_records(bundle)
    assert records == [] and "malformed" in problems[0]


# --- calibration data --------------------------------------------------------------------------


def test_calibration_batches(bundle):
    npz = write_calibration(bundle, n=20)
    specs = bundle.inputs
    batches = calibration_batches(npz, specs, 8)
    assert len(batches) == 2  # the partial last batch is dropped
    data = np.load(npz)["contact"]
    np.testing.assert_array_equal(batches[1]["contact"], data[8:16])
    assert batches[0]["contact"].flags.c_contiguous and batches[0]["contact"].dtype == np.float32
    with pytest.raises(BadInputError, match="fewer than one batch"):
        calibration_batches(npz, specs, 32)
    with pytest.raises(BadInputError, match="lacks inputs"):
        calibration_batches(write_calibration(bundle, name="other"), specs, 4)
    with pytest.raises(BadInputError, match="float64"):
        calibration_batches(write_calibration(bundle, dtype=np.float64), specs, 4)


def test_calibration_cache_reading(tmp_path):
    assert read_calibration_cache(tmp_path / "none.cache") is None
    good = tmp_path / "good.cache"
    good.write_bytes(b"TRT-100300-EntropyCalibration2\ncontact: 3c010a14\n")
    assert read_calibration_cache(good).startswith(b"TRT-100300")
    junk = tmp_path / "junk.cache"
    junk.write_bytes(b"\x00garbage")
    assert read_calibration_cache(junk) is None


# --- CLI ---------------------------------------------------------------------------------------


def _parser():
    from calibrate.commands import build, triton

    p = argparse.ArgumentParser(prog="emofuse")
    sub = p.add_subparsers(dest="command")
    build.register(sub)
    triton.register(sub)
    return p


def test_build_cli_without_tensorrt_names_the_extra(bundle):
    if tensorrt_status()[0]:
        pytest.skip("tensorrt is installed here")
    args = _parser().parse_args(["build", str(bundle.root), "--precision", "fp16",
                                 "--workspace-mb", "512", "--dla-core", "0"])
    assert (args.workspace_mb, args.dla_core, args.max_batch) == (512, 0, 8)
    with pytest.raises(MissingDependencyError, match=r"emofuse\[jetson\]"):
        args.func(args)


# --- TensorRT (runs only with tensorrt and a GPU) ------------------------------------------------


def _platform_or_skip():
    pytest.importorskip("tensorrt", reason="tensorrt is not installed (Jetson / NVIDIA GPU only)")
    from edge.engine.trt import probe_platform

    try:
        return probe_platform()
    except Exception as exc:
        pytest.skip(f"no usable CUDA device for TensorRT: {exc}")


def _reference(x):
    out = {}
    for i, head in enumerate(("valence", "arousal")):
        z = x.reshape(len(x), -1) @ (W * (i + 1))
        e = np.exp(z - z.max(1, keepdims=True))
        out[f"{head}_prob"] = e / e.sum(1, keepdims=True)
    return out


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 5e-3), ("int8", 5e-2)])
def test_trt_build_run_and_up_to_date(tmp_path, precision, atol):
    _platform_or_skip()
    from edge.engine import TrtEngine

    b = make_bundle(tmp_path / "b", qdq=precision == "int8")
    try:
        result = build_engine(b, precision, max_batch=4, workspace_mb=256)
    except MissingDependencyError as exc:  # fp16 on TensorRT 11 without ModelOpt
        pytest.skip(str(exc))
    assert result.built and (b.root / result.record.file).is_file()
    assert result.plan.timing_cache.is_file()
    again = build_engine(b, precision, max_batch=4, workspace_mb=256)
    assert not again.built and again.record.file == result.record.file
    x = np.random.default_rng(1).normal(size=(3, 2, 3)).astype(np.float32)
    with TrtEngine(b, precision) as eng:
        out = eng.run({"contact": x})
        assert eng.max_batch == 4
        with pytest.raises(BadInputError, match="exceeds"):
            eng.run({"contact": np.zeros((5, 2, 3), np.float32)})
    ref = _reference(x)
    for name in ref:
        np.testing.assert_allclose(out[name], ref[name], atol=atol)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_trt10_implicit_int8_calibration_writes_a_versioned_cache(tmp_path):
    platform = _platform_or_skip()
    import tensorrt

    if not detect_caps(tensorrt).implicit_int8:
        pytest.skip(f"TensorRT {tensorrt.__version__} has no implicit INT8 (11.0 removed it)")
    b = make_bundle(tmp_path / "b")
    write_calibration(b, n=32)
    result = build_engine(b, "int8", max_batch=4, calib_batch=8)
    assert result.plan.key.int8_mode == "calibrated"
    cache = result.plan.calibration_cache
    assert cache.is_file() and f"trt{platform.tensorrt_version}" in cache.name
    assert read_calibration_cache(cache) is not None


def test_cpu_quantized_graph_is_refused_for_tensorrt():
    # The shipped default bundle was calibrated for the CPU (uint8 activations with zero
    # points); TensorRT needs int8 with zero point 0, so the plan must say what to run.
    from edge.bundle import load_bundle
    from helpers import REPO

    default = load_bundle(REPO / "edge" / "default_bundle")
    with pytest.raises(ConfigError, match="--target tensorrt"):
        plan_build(default, "int8", ORIN, TRT10)
