"""calibrate.triton: the model repository's layout and files, and config.pbtxt parsed as protobuf
text format against Triton's ModelConfig schema (tritonclient's when installed, else emofuse's
field-for-field transcription of model_config.proto), checked against the bundle's tensors."""
from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tritonclient.grpc.model_config_pb2",
                    reason="tritonclient[grpc] (extra 'triton') holds Triton's ModelConfig schema")

from calibrate.engine_build import engine_key, engine_path, record_engine  # noqa: E402
from calibrate.triton import (  # noqa: E402
    TRITON_DTYPES,
    model_config_schema,
    model_config_text,
    parse_model_config,
    write_triton_repo,
)
from edge.bundle import load_bundle  # noqa: E402
from edge.engine.trt import TrtPlatform  # noqa: E402
from firmware_bridge.errors import BadInputError, ConfigError  # noqa: E402
from helpers import preprocessing_dict  # noqa: E402

ORIN = TrtPlatform("10.3.0", "Orin", "8.7")
SERVER = TrtPlatform("10.7.0", "NVIDIA L4", "8.9")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _graph(inputs: dict, outputs: dict) -> onnx.ModelProto:
    """Each input flattened and concatenated, one MatMul per output (a real, runnable graph)."""
    rng = np.random.default_rng(0)
    n_in = sum(int(np.prod(s)) for s in inputs.values())
    nodes = [helper.make_node("Flatten", [n], [f"{n}_f"], axis=1) for n in inputs]
    nodes.append(helper.make_node("Concat", [f"{n}_f" for n in inputs], ["x"], axis=1))
    inits = []
    for name, shape in outputs.items():
        inits.append(numpy_helper.from_array(
            rng.normal(size=(n_in, shape[0])).astype(np.float32), f"w_{name}"))
        nodes.append(helper.make_node("MatMul", ["x", f"w_{name}"], [name]))
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *s])
         for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *s])
         for n, s in outputs.items()], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _specs(d):
    return [{"name": n, "shape": ["batch", *s], "dtype": "float32", "meaning": "test"}
            for n, s in d.items()]


MODEL_IN = {"face_feats": (120, 64), "tfr": (1, 32, 32), "contact_level": (2,)}
MODEL_OUT = {"valence_prob": (2,), "arousal_prob": (2,)}


def make_bundle(root, *, encoder=False, int8=False):
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(_graph(MODEL_IN, MODEL_OUT), root / "model.onnx")
    files = {"model.onnx": {"sha256": _sha(root / "model.onnx"), "role": "model"}}
    if int8:  # stands in for the Q/DQ graph: any valid graph file listed with the role
        onnx.save(_graph(MODEL_IN, MODEL_OUT), root / "model.int8.onnx")
        files["model.int8.onnx"] = {"sha256": _sha(root / "model.int8.onnx"),
                                    "role": "model_int8"}
    if encoder:
        onnx.save(_graph({"face_crop": (3, 32, 32)}, {"face_feat": (64,)}),
                  root / "face_encoder.onnx")
        files["face_encoder.onnx"] = {
            "sha256": _sha(root / "face_encoder.onnx"), "role": "face_encoder",
            "inputs": _specs({"face_crop": (3, 32, 32)}), "outputs": _specs({"face_feat": (64,)})}
    manifest = {
        "schema_version": 1, "model": {"name": "mvp", "version": "v7"},
        "inputs": _specs(MODEL_IN), "outputs": _specs(MODEL_OUT),
        "preprocessing": preprocessing_dict(), "labels": {"valence": ["low", "high"],
                                                        "arousal": ["low", "high"]},
        "training": {}, "export": {"opset": 17}, "files": files,
        "parity": {"max_abs_diff": 0.0, "n_windows": 1, "passed": True},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(root)


@pytest.fixture
def bundle(tmp_path):
    return make_bundle(tmp_path / "bundle", encoder=True, int8=True)


def check_config_against_bundle(config, specs_in, specs_out, max_batch):
    """The parsed config declares exactly the bundle's tensors, batch dim excluded."""
    assert [i.name for i in config.input] == [s.name for s in specs_in]
    assert [o.name for o in config.output] == [s.name for s in specs_out]
    dtype_enum = type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name[
        "data_type"].enum_type
    for parsed, spec in zip(list(config.input) + list(config.output), specs_in + specs_out):
        assert dtype_enum.values_by_number[parsed.data_type].name == TRITON_DTYPES[spec.dtype]
        want = list(spec.shape[1:]) if max_batch else [-1, *spec.shape[1:]]
        assert list(parsed.dims) == want


def test_onnx_repository_layout_and_config(bundle, tmp_path):
    out = tmp_path / "repo"
    models = write_triton_repo(bundle, out, max_batch=8, instances=2, kind="gpu")
    assert [m.name for m in models] == ["mvp", "mvp_face_encoder"]
    main, enc = models
    assert main.model_file == out / "mvp" / "1" / "model.onnx"
    assert _sha(main.model_file) == _sha(bundle.model_path)
    assert _sha(enc.model_file) == _sha(bundle.root / "face_encoder.onnx")
    assert (out / "mvp" / "valence_labels.txt").read_text() == "low\nhigh\n"
    assert json.loads((out / "mvp" / "emofuse_manifest.json").read_text())["model"][
        "version"] == "v7"
    assert sorted(p.name for p in out.iterdir()) == ["mvp", "mvp_face_encoder"]  # no temp left

    cfg = parse_model_config(main.config_path.read_text())
    assert cfg.name == "mvp" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    check_config_against_bundle(cfg, list(bundle.inputs), list(bundle.outputs), 8)
    assert list(cfg.dynamic_batching.preferred_batch_size) == [1, 2, 4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert cfg.instance_group[0].count == 2
    assert cfg.output[0].label_filename == "valence_labels.txt"
    assert cfg.version_policy.latest.num_versions == 1
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["emofuse_graph_sha256"] == _sha(bundle.model_path)
    assert params["emofuse_model_version"] == "v7" and params["emofuse_precision"] == "fp32"

    ecfg = parse_model_config(enc.config_path.read_text())
    entry = bundle.manifest.role_file("face_encoder")
    check_config_against_bundle(ecfg, list(entry.inputs), list(entry.outputs), 8)


def test_int8_repository_serves_the_qdq_graph(bundle, tmp_path):
    models = write_triton_repo(bundle, tmp_path / "r", precision="int8")
    assert _sha(models[0].model_file) == _sha(bundle.root / "model.int8.onnx")
    params = parse_model_config(models[0].config_path.read_text()).parameters
    assert params["emofuse_precision"].string_value == "int8"
    # The face encoder has no INT8 graph: it serves FP32 and says so.
    enc = parse_model_config(models[1].config_path.read_text()).parameters
    assert enc["emofuse_precision"].string_value == "fp32"
    assert enc["emofuse_precision_requested"].string_value == "int8"


def test_no_batching_keeps_the_batch_dim(bundle, tmp_path):
    m = write_triton_repo(bundle, tmp_path / "r", max_batch=0, kind="cpu")[0]
    cfg = parse_model_config(m.config_path.read_text())
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    check_config_against_bundle(cfg, list(bundle.inputs), list(bundle.outputs), 0)


def test_parser_is_strict(bundle):
    text = model_config_text("m", "onnxruntime_onnx", bundle.inputs, bundle.outputs, kind="auto")
    parse_model_config(text)
    for bad in (text.replace("max_batch_size", "max_batch_sizes"),
                text.replace("TYPE_FP32", "TYPE_FLOAT32", 1),
                text.replace("dims: [ 120, 64 ]", "dims: [ 120, \"64\" ]"),
                text.replace("kind: KIND_AUTO", "kind: KIND_TPU"),
                text + "}\n"):
        assert bad != text
        with pytest.raises(BadInputError, match="does not parse"):
            parse_model_config(bad)
    _, source = model_config_schema()
    assert source.startswith("tritonclient")


def test_the_schema_is_tritons_own_and_without_it_nothing_is_written(bundle, tmp_path, monkeypatch):
    import sys

    from firmware_bridge.errors import MissingDependencyError
    from tritonclient.grpc import model_config_pb2

    cls, _ = model_config_schema()
    assert cls is model_config_pb2.ModelConfig
    # Fields emofuse does not write are still known: the full schema, not a transcribed subset.
    parse_model_config('name: "m"\nresponse_cache { enable: true }\nmodel_warmup { name: "w" batch_size: 1 }\n')
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.model_config_pb2", None)
    with pytest.raises(MissingDependencyError, match=r"emofuse\[triton\]"):
        write_triton_repo(bundle, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_bad_settings(bundle, tmp_path):
    with pytest.raises(ConfigError, match="fp16 comes from TensorRT"):
        write_triton_repo(bundle, tmp_path / "a", precision="fp16")
    with pytest.raises(ConfigError):
        write_triton_repo(bundle, tmp_path / "b", platform="tensorflow_savedmodel")
    with pytest.raises(ConfigError, match="letters"):
        write_triton_repo(bundle, tmp_path / "c", name="my model")
    with pytest.raises(ConfigError, match="preferred"):
        model_config_text("m", "onnxruntime_onnx", bundle.inputs, bundle.outputs, max_batch=4,
                          preferred_batch_sizes=[8])
    plain = make_bundle(tmp_path / "plain")
    with pytest.raises(ConfigError, match="emofuse calibrate"):
        write_triton_repo(plain, tmp_path / "d", precision="int8")


def test_existing_model_needs_overwrite(bundle, tmp_path):
    write_triton_repo(bundle, tmp_path / "r")
    with pytest.raises(ConfigError, match="exists"):
        write_triton_repo(bundle, tmp_path / "r")
    models = write_triton_repo(bundle, tmp_path / "r", precision="int8", overwrite=True)
    assert _sha(models[0].model_file) == _sha(bundle.root / "model.int8.onnx")


def _record(bundle, platform, precision="fp16", max_batch=8, role="model", payload=b"plan"):
    key = engine_key(bundle, precision, platform, role=role, max_batch=max_batch)
    path = engine_path(bundle, key)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload)
    return record_engine(bundle, key, path, {"built_utc": "2026-01-01T00:00:00Z"})


def test_tensorrt_plan_repository(tmp_path):
    b = make_bundle(tmp_path / "b")
    with pytest.raises(ConfigError, match="emofuse build"):
        write_triton_repo(b, tmp_path / "r0", "tensorrt_plan", precision="fp16")
    rec = _record(b, SERVER, max_batch=4, payload=b"engine for the server")
    with pytest.raises(ConfigError, match="stops at 4, max_batch is 8"):
        write_triton_repo(b, tmp_path / "r1", "tensorrt_plan", precision="fp16")
    m = write_triton_repo(b, tmp_path / "r2", "tensorrt_plan", precision="fp16", max_batch=4)[0]
    assert m.model_file.name == "model.plan"
    assert m.model_file.read_bytes() == b"engine for the server"
    cfg = parse_model_config(m.config_path.read_text())
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4
    assert cfg.instance_group[0].kind == 1  # KIND_GPU
    check_config_against_bundle(cfg, list(b.inputs), list(b.outputs), 4)
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["emofuse_engine_key"] == rec.key.digest
    assert params["emofuse_tensorrt"] == "10.7.0" and "NVIDIA L4" in params["emofuse_gpu"]
    # Engines for two platforms: the caller must name the server's.
    other = _record(b, ORIN, max_batch=4, payload=b"engine for a jetson")
    with pytest.raises(ConfigError, match="several platforms"):
        write_triton_repo(b, tmp_path / "r3", "tensorrt_plan", precision="fp16", max_batch=4)
    m = write_triton_repo(b, tmp_path / "r4", "tensorrt_plan", precision="fp16", max_batch=4,
                          engine_file=other.file)[0]
    assert m.model_file.read_bytes() == b"engine for a jetson"


def test_triton_cli(bundle, tmp_path, capsys):
    from calibrate.commands import triton

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    triton.register(sub)
    args = p.parse_args(["triton", str(bundle.root), "--out", str(tmp_path / "repo"),
                         "--max-batch", "4"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "config.pbtxt checked against" in text
    cfg = parse_model_config((tmp_path / "repo" / "mvp" / "config.pbtxt").read_text())
    assert cfg.max_batch_size == 4
