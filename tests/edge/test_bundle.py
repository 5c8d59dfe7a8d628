"""edge.bundle: a bundle written here (tiny real ONNX graph + manifest) loads; each kind of
corruption gives one clear error naming the file; nothing imports torch."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.bundle import (
    SCHEMA_VERSION,
    Bundle,
    load_bundle,
    parse_manifest,
    read_manifest,
    sha256_file,
)
from firmware_bridge.errors import BadInputError, ConfigError
from helpers import REPO, preprocessing_dict

N_IN = 2 * 4  # a (batch, 2, 4) "contact" input flattened


def _tiny_graph(input_name="contact", batch_dim="batch") -> onnx.ModelProto:
    """contact (B, 2, 4) -> Flatten -> MatMul -> Softmax, twice: valence_prob, arousal_prob."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch_dim, 2, 4])
    outs = []
    nodes = [helper.make_node("Flatten", [input_name], ["flat"], axis=1)]
    inits = []
    for head in ("valence", "arousal"):
        w = numpy_helper.from_array(rng.normal(size=(N_IN, 2)).astype(np.float32), f"w_{head}")
        inits.append(w)
        nodes += [
            helper.make_node("MatMul", ["flat", f"w_{head}"], [f"logit_{head}"]),
            helper.make_node("Softmax", [f"logit_{head}"], [f"{head}_prob"], axis=-1),
        ]
        outs.append(helper.make_tensor_value_info(f"{head}_prob", TensorProto.FLOAT,
                                                  [batch_dim, 2]))
    graph = helper.make_graph(nodes, "tiny", [x], outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _manifest(model_sha: str) -> dict:
    prob = "softmax probabilities of [low, high]"
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": "contact", "version": "test-1"},
        "inputs": [{"name": "contact", "shape": ["batch", 2, 4], "dtype": "float32",
                    "meaning": "PPG and EDA, z-scored per window"}],
        "outputs": [
            {"name": "valence_prob", "shape": ["batch", 2], "dtype": "float32", "meaning": prob},
            {"name": "arousal_prob", "shape": ["batch", 2], "dtype": "float32", "meaning": prob},
        ],
        "preprocessing": preprocessing_dict(**{"contact.n_samples": 4}),
        "labels": {"valence": ["low", "high"], "arousal": ["low", "high"]},
        "training": {"metrics": {"valence_acc": 0.5}, "protocol": "loso", "data": {}},
        "export": {"opset": 17, "torch": "none", "onnx": onnx.__version__,
                   "onnxruntime": "x", "python": sys.version.split()[0],
                   "created_utc": "2026-01-01T00:00:00Z"},
        "files": {"model.onnx": {"sha256": model_sha, "role": "model"}},
        "parity": {"max_abs_diff": 1e-7, "n_windows": 4, "passed": True, "tolerance": 1e-4},
    }


def _write(bundle_dir, graph=None, edit=None):
    bundle_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(graph if graph is not None else _tiny_graph(), bundle_dir / "model.onnx")
    manifest = _manifest(sha256_file(bundle_dir / "model.onnx"))
    if edit is not None:
        edit(manifest)
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


@pytest.fixture()
def bundle_dir(tmp_path):
    _write(tmp_path / "b")
    return tmp_path / "b"


def _one_line(exc_info, needle):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert needle in msg, msg


def test_a_valid_bundle_loads_and_its_graph_runs(bundle_dir):
    import onnxruntime as ort

    b = load_bundle(bundle_dir, check_graphs=True)
    assert isinstance(b, Bundle)
    assert b.model_path == bundle_dir / "model.onnx"
    assert b.face_encoder_path is None
    assert b.input_names == ["contact"]
    assert b.input("contact").shape == ("batch", 2, 4)
    assert b.manifest.model_name == "contact" and b.manifest.parity.n_windows == 4
    assert b.manifest.parity.details == {"tolerance": 1e-4}
    # The record is frozen: a caller cannot change what the bundle says.
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.preprocessing.tfr.shape = (99, 32)
    assert b.preprocessing.tfr.shape == (32, 32) and b.preprocessing.contact.n_samples == 4
    # Round trip: the dataclasses serialise back to exactly the JSON on disk.
    assert b.manifest.to_dict() == json.loads((bundle_dir / "manifest.json").read_text())

    sess = ort.InferenceSession(str(b.model_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(3, 2, 4)).astype(b.input("contact").dtype)
    val, aro = sess.run([o.name for o in b.outputs], {"contact": x})
    assert val.shape == (3, 2) and np.allclose(val.sum(axis=1), 1.0, atol=1e-6)
    assert np.allclose(aro.sum(axis=1), 1.0, atol=1e-6)


def test_sha256_file_matches_hashlib(bundle_dir):
    data = (bundle_dir / "model.onnx").read_bytes()
    assert sha256_file(bundle_dir / "model.onnx") == hashlib.sha256(data).hexdigest()


def test_missing_folder_and_manifest(tmp_path):
    with pytest.raises(BadInputError) as e:
        load_bundle(tmp_path / "nope")
    _one_line(e, "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError) as e:
        load_bundle(tmp_path / "empty")
    _one_line(e, "manifest.json")


def test_malformed_json_names_the_manifest(bundle_dir):
    path = bundle_dir / "manifest.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(BadInputError) as e:
        load_bundle(bundle_dir)
    _one_line(e, str(path))
    assert "malformed JSON" in str(e.value)


@pytest.mark.parametrize("version", [2, 0, "1", 1.0, True, None])
def test_unknown_schema_version(tmp_path, version):
    _write(tmp_path / "b", edit=lambda m: m.update(schema_version=version))
    with pytest.raises(ConfigError) as e:
        load_bundle(tmp_path / "b")
    _one_line(e, "schema_version")
    assert "manifest.json" in str(e.value)


def test_missing_schema_version(tmp_path):
    _write(tmp_path / "b", edit=lambda m: m.pop("schema_version"))
    with pytest.raises(ConfigError) as e:
        load_bundle(tmp_path / "b")
    _one_line(e, "schema_version")


def test_missing_listed_file(bundle_dir):
    (bundle_dir / "model.onnx").unlink()
    with pytest.raises(BadInputError) as e:
        load_bundle(bundle_dir)
    _one_line(e, str(bundle_dir / "model.onnx"))


def test_changed_file_fails_its_hash(bundle_dir):
    path = bundle_dir / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # one flipped bit in the weights
    path.write_bytes(bytes(data))
    with pytest.raises(BadInputError) as e:
        load_bundle(bundle_dir)
    _one_line(e, "model.onnx")
    assert "sha256" in str(e.value)
    # Skipping verification is possible and explicit.
    assert load_bundle(bundle_dir, verify_hashes=False, check_graphs=False).model_path == path


def _drop(key):
    return lambda m: m.pop(key)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_drop("preprocessing"), "'preprocessing'"),
        (_drop("parity"), "'parity'"),
        (lambda m: m["model"].pop("version"), "'model.version'"),
        (lambda m: m["inputs"][0].update(shape=[1, 2, 4]), "must start with \"batch\""),
        (lambda m: m["inputs"][0].update(shape=["batch", 0, 4]), "positive int"),
        (lambda m: m["inputs"][0].update(dtype="float128"), "dtype"),
        (lambda m: m["inputs"][0].update(meaning=" "), "empty meaning"),
        (lambda m: m.update(inputs=[]), "'inputs'"),
        (lambda m: m["outputs"].append(dict(m["outputs"][0])), "names repeat"),
        (lambda m: m["files"]["model.onnx"].update(sha256="abc"), "sha256"),
        (lambda m: m["files"]["model.onnx"].update(role="other"), "role 'model'"),
        (lambda m: m["files"].update({"../x.onnx": m["files"]["model.onnx"]}), "plain name"),
        (lambda m: m["parity"].update(passed=False), "parity check recorded as failed"),
        (lambda m: m["parity"].update(passed="yes"), "parity.passed"),
        (lambda m: m["parity"].update(max_abs_diff=-1), "parity.max_abs_diff"),
        (lambda m: m["labels"].update(valence=["low", "mid", "high"]), "3"),
        (lambda m: m["export"].update(opset="17"), "export.opset"),
        (lambda m: m.update(model="contact"), "'model' must be a JSON object"),
    ],
)
def test_invalid_fields_are_config_errors(tmp_path, edit, needle):
    _write(tmp_path / "b", edit=edit)
    with pytest.raises(ConfigError) as e:
        load_bundle(tmp_path / "b")
    _one_line(e, needle)
    assert "manifest.json" in str(e.value)


def test_top_level_must_be_an_object(tmp_path):
    with pytest.raises(ConfigError) as e:
        parse_manifest([1, 2], source="m.json")
    _one_line(e, "m.json")


def test_read_manifest_alone(bundle_dir):
    m = read_manifest(bundle_dir / "manifest.json")
    assert m.role_file("model").name == "model.onnx"
    assert m.role_file("face_encoder") is None


def test_check_graphs_catches_a_renamed_input(tmp_path):
    _write(tmp_path / "b", graph=_tiny_graph(input_name="physio"))
    assert load_bundle(tmp_path / "b", check_graphs=False).input_names == ["contact"]  # hashes alone do not see it
    with pytest.raises(ConfigError) as e:
        load_bundle(tmp_path / "b", check_graphs=True)
    _one_line(e, "model.onnx")
    assert "physio" in str(e.value)


def test_check_graphs_catches_a_fixed_batch(tmp_path):
    _write(tmp_path / "b", graph=_tiny_graph(batch_dim=1))
    with pytest.raises(ConfigError) as e:
        load_bundle(tmp_path / "b", check_graphs=True)
    _one_line(e, "dynamic")


def test_check_graphs_on_a_file_that_is_not_onnx(tmp_path):
    d = tmp_path / "b"
    _write(d)
    (d / "model.onnx").write_bytes(b"not a graph")
    m = json.loads((d / "manifest.json").read_text())
    m["files"]["model.onnx"]["sha256"] = sha256_file(d / "model.onnx")
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BadInputError) as e:
        load_bundle(d, check_graphs=True)
    _one_line(e, "model.onnx")


def test_face_encoder_file_with_its_own_tensors(tmp_path):
    d = tmp_path / "b"

    def add_encoder(m):
        m["files"]["face_encoder.onnx"] = {
            "sha256": sha256_file(d / "model.onnx"), "role": "face_encoder",
            "inputs": [{"name": "contact", "shape": ["batch", 2, 4], "dtype": "float32",
                        "meaning": "stand-in"}],
            "outputs": [{"name": "valence_prob", "shape": ["batch", 2], "dtype": "float32",
                         "meaning": "stand-in"},
                        {"name": "arousal_prob", "shape": ["batch", 2], "dtype": "float32",
                         "meaning": "stand-in"}],
        }

    _write(d, edit=add_encoder)
    (d / "face_encoder.onnx").write_bytes((d / "model.onnx").read_bytes())
    b = load_bundle(d, check_graphs=True)
    assert b.face_encoder_path == d / "face_encoder.onnx"
    assert b.path("face_encoder") == b.face_encoder_path
    assert [s.name for s in b.manifest.files["face_encoder.onnx"].inputs] == ["contact"]
    with pytest.raises(ConfigError):
        b.path("tokenizer")
    with pytest.raises(ConfigError):
        b.input("tfr")


def test_importing_edge_bundle_does_not_import_torch():
    code = ("import sys, edge.bundle; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'export', 'onnx')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
