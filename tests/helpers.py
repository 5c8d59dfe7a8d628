"""Test helpers importable from any test module (pytest puts tests/ on sys.path)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(relative: str) -> Path:
    """Path of a real recording under ../shared/data, or skip the calling test with the reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA} (present on project machines only)")
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{relative} is missing from {SHARED_DATA}")
    return path


def parse_command(module, argv):
    """The namespace one emofuse command module's parser (``module.register``) makes of
    ``argv`` (``argv[0]`` is the command's name)."""
    parser = argparse.ArgumentParser(prog="emofuse")
    module.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def run_command(module, argv) -> int:
    """Run one emofuse command module on ``argv`` as the CLI would; returns its exit code."""
    args = parse_command(module, argv)
    return args.func(args)


def face_only_bundle(tmp_path_factory):
    """A bundle whose model needs only the face video (VA from 10 s on): the default bundle if it
    is such, else a tiny PromptFusion (face clip + pulse image) trained and exported with the real
    pipeline (built once per test session). Its record forms every pulse window
    (``rppg.tfr_min_quality`` 0, what bundles before the key computed): these tests check the
    plumbing on small synthetic faces whose pulse the quality gate may reject, which would leave
    a model that requires the pulse without an answer (tests/edge/test_pulse_gate_absent.py
    covers that rule)."""
    from edge.bundle import load_bundle
    from edge.pipeline import DEFAULT_BUNDLE_DIR

    if (DEFAULT_BUNDLE_DIR / "manifest.json").is_file():
        names = set(load_bundle(DEFAULT_BUNDLE_DIR).input_names)
        if names <= {"face_clip", "tfr"}:
            return DEFAULT_BUNDLE_DIR
    root = tmp_path_factory.getbasetemp() / "h15-tiny-bundle"
    if (root / "bundle" / "manifest.json").is_file():
        return root / "bundle"
    torch = pytest.importorskip("torch", reason="no face-only default bundle and no torch to build a tiny one")
    from export.bundle import write_bundle
    from export.data.synth import build_synth_dataset
    from export.train import TrainConfig, build_checkpoint, data_fingerprint, train_final

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from edge.spec import DEFAULT

        data = build_synth_dataset(preset="tiny", n_subjects=2, cache_dir=root / "cache",
                                   preprocessing=DEFAULT.replace(**{"rppg.tfr_min_quality": 0.0}))
        data.save(root / "tiny.npz")
        cfg = TrainConfig(model="promptfusion", epochs=1, batch_size=8, pretrain_steps=2, device="cpu",
                          progress=False)
        model, encoder, _ = train_final(data, cfg, epochs=1)
        meta = {"spec": str(root / "tiny.npz"), "n_windows": len(data), "fingerprint": data_fingerprint(data)}
        torch.save(build_checkpoint(model, encoder, data, cfg, meta, {}, {"name": "none"}), root / "ckpt.pt")
        write_bundle(root / "ckpt.pt", root / "bundle", data=str(root / "tiny.npz"), parity_windows=2)
    finally:
        torch.set_num_threads(threads)
    return root / "bundle"


def preprocessing_dict(**changes) -> dict:
    """A complete ``preprocessing`` object as a manifest holds it: :data:`edge.spec.DEFAULT` with
    dotted-path changes (``preprocessing_dict(**{"contact.n_samples": 4})``)."""
    from edge.spec import DEFAULT

    return DEFAULT.replace(**changes).to_dict()


def tfr_only_bundle(root: Path, preprocessing: dict, *, weights=None, version: str = "test") -> Path:
    """A torch-free bundle: a real, tiny ONNX graph (``tfr`` -> flatten -> MatMul -> two
    Softmaxes, untrained) with a manifest carrying ``preprocessing``. ``weights``: the MatMul's
    2048 values (default zeros). Returns ``root``."""
    import onnx
    from onnx import TensorProto, helper

    from edge.bundle import sha256_file

    root.mkdir()
    w_values = np.zeros(2048, np.float32) if weights is None else np.asarray(weights, np.float32)
    x = helper.make_tensor_value_info("tfr", TensorProto.FLOAT, ["batch", 1, 32, 32])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 2]) for n in ("valence_prob", "arousal_prob")]
    w = helper.make_tensor("w", TensorProto.FLOAT, [1024, 2], w_values.tolist())
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 1024])
    nodes = [helper.make_node("Reshape", ["tfr", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["z"]),
             helper.make_node("Softmax", ["z"], ["valence_prob"], axis=1),
             helper.make_node("Softmax", ["z"], ["arousal_prob"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], outs, initializer=[w, shape]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what opset 17 needs; every ONNX Runtime reads it
    onnx.save(model, root / "model.onnx")
    manifest = {
        "schema_version": 1, "model": {"name": "rppg", "version": version},
        "inputs": [{"name": "tfr", "shape": ["batch", 1, 32, 32], "dtype": "float32", "meaning": "TFR"}],
        "outputs": [{"name": n, "shape": ["batch", 2], "dtype": "float32", "meaning": "p"}
                    for n in ("valence_prob", "arousal_prob")],
        "preprocessing": preprocessing, "labels": {"valence": ["low", "high"], "arousal": ["low", "high"]},
        "training": {}, "export": {"opset": 17},
        "files": {"model.onnx": {"sha256": sha256_file(root / "model.onnx"), "role": "model"}},
        "parity": {"max_abs_diff": 0.0, "n_windows": 1, "passed": True},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root
