"""calibrate.calibration: windows cut with the bundle's own preprocessing (the training
builder's function), stratified and split by subject, saved as model-ready arrays."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibrate.calibration import (
    CALIBRATION_FILE, HOLDOUT_FILE, PART_GATE, PART_SWEEP, CalibrationSet, build_calibration, load_calibration,
    model_inputs, parse_data_spec, preprocessing_hash, split_subjects, stratified_order, sweep_gate_parts,
    synth_windows, write_calibration,
)
from edge.bundle import load_bundle, sha256_file
from edge.spec import DEFAULT as PREPROCESSING
from export.data import EmotionWindows, build_synth_dataset
from export.data.synth import SynthConfig
from firmware_bridge.errors import BadInputError, ConfigError

FEAT_DIM = 64


def _contract_graph(path, face_feats: bool = False):
    """A tiny real graph over the contract inputs face_clip, tfr, contact, contact_level (and
    face_feats): global means -> MatMul -> Softmax for both heads."""
    rng = np.random.default_rng(0)
    ins = [("face_clip", [8, 3, 32, 32]), ("tfr", [1, 32, 32]), ("contact", [2, 1920]), ("contact_level", [2])]
    if face_feats:
        ins.append(("face_feats", [120, FEAT_DIM]))
    nodes, feats = [], []
    for name, shape in ins:
        axes = list(range(2, len(shape) + 1))
        if axes:
            nodes.append(helper.make_node("ReduceMean", [name], [f"m_{name}"], axes=axes, keepdims=0))
            feats.append(f"m_{name}")
        else:
            feats.append(name)
    nodes.append(helper.make_node("Concat", feats, ["feat"], axis=1))
    width = 8 + 1 + 2 + 2 + (120 if face_feats else 0)
    inits, outs = [], []
    for head in ("valence", "arousal"):
        inits.append(numpy_helper.from_array(rng.normal(size=(width, 2)).astype(np.float32), f"w_{head}"))
        nodes += [helper.make_node("MatMul", ["feat", f"w_{head}"], [f"l_{head}"]),
                  helper.make_node("Softmax", [f"l_{head}"], [f"{head}_prob"], axis=-1)]
        outs.append(helper.make_tensor_value_info(f"{head}_prob", TensorProto.FLOAT, ["batch", 2]))
    g = helper.make_graph(nodes, "contract", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", *s])
                                              for n, s in ins], outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return ins


def _face_encoder_graph(path):
    """face_crop (B, 3, 32, 32) -> channel means (B, 3) -> MatMul (3, 64) -> face_feat."""
    w = np.arange(3 * FEAT_DIM, dtype=np.float32).reshape(3, FEAT_DIM) / 100.0
    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["face_crop"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("MatMul", ["m", "w"], ["face_feat"])],
        "enc", [helper.make_tensor_value_info("face_crop", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("face_feat", TensorProto.FLOAT, ["batch", FEAT_DIM])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return w


def _spec(name, shape):
    return {"name": name, "shape": ["batch", *shape], "dtype": "float32", "meaning": f"{name} (test)"}


def write_bundle(root, preprocessing=None, with_face_feats=False):
    """A bundle folder with the contract's inputs and PREPROCESSING in its manifest."""
    root.mkdir(parents=True, exist_ok=True)
    ins = _contract_graph(root / "model.onnx", face_feats=with_face_feats)
    files = {"model.onnx": {"sha256": sha256_file(root / "model.onnx"), "role": "model"}}
    inputs = [_spec(n, s) for n, s in ins]
    if with_face_feats:
        _face_encoder_graph(root / "face_encoder.onnx")
        files["face_encoder.onnx"] = {"sha256": sha256_file(root / "face_encoder.onnx"), "role": "face_encoder",
                                      "inputs": [_spec("face_crop", [3, 32, 32])],
                                      "outputs": [_spec("face_feat", [FEAT_DIM])]}
    prob = "softmax probabilities [low, high]"
    manifest = {
        "schema_version": 1, "model": {"name": "contract-test", "version": "t1"},
        "inputs": inputs,
        "outputs": [{"name": "valence_prob", "shape": ["batch", 2], "dtype": "float32", "meaning": prob},
                    {"name": "arousal_prob", "shape": ["batch", 2], "dtype": "float32", "meaning": prob}],
        "preprocessing": (preprocessing or PREPROCESSING).to_dict(),
        "labels": {"valence": ["low", "high"], "arousal": ["low", "high"]},
        "training": {}, "export": {"opset": 17, "python": sys.version.split()[0]},
        "files": files, "parity": {"max_abs_diff": 0.0, "n_windows": 1, "passed": True},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(root)


@pytest.fixture(scope="module")
def pool():
    # Three synthetic people, two trials each, rendered with the runtime's kernels.
    return synth_windows(PREPROCESSING, n_windows=6, trials_per_subject=2)


def test_data_specs_parse_and_reject():
    assert parse_data_spec("synth").kind == "synth"
    s = parse_data_spec("synth:seed=7,trials=4")
    assert s.options == {"seed": 7, "trials": 4} and str(s) == "synth:seed=7,trials=4"
    r = parse_data_spec("recordings:/data/rec")
    assert r.kind == "recordings" and str(r.path) == "/data/rec"
    assert parse_data_spec("deap:/x").kind == "deap" and parse_data_spec("npz:/a.npz").kind == "npz"
    for bad in ("", "mnist:/x", "deap", "synth:seed", "synth:colour=3", "synth:trials=0"):
        with pytest.raises(ConfigError):
            parse_data_spec(bad)


def test_stratified_order_covers_every_cell_first():
    rng = np.random.default_rng(3)
    subject = np.repeat(np.arange(5), 12)
    v = rng.integers(0, 2, subject.size)
    a = rng.integers(0, 2, subject.size)
    order = stratified_order(subject, v, a, seed=1)
    assert sorted(order.tolist()) == list(range(subject.size))
    cells = {(int(s), int(x), int(y)) for s, x, y in zip(subject, v, a)}
    head = order[: len(cells)]
    assert {(int(subject[i]), int(v[i]), int(a[i])) for i in head} == cells
    # any prefix is balanced over subjects to within one round of cells (4 per subject)
    for k in (7, 20, 33):
        counts = np.bincount(subject[order[:k]], minlength=5)
        assert counts.max() - counts.min() <= 4


def test_subject_splits_never_share_a_person():
    subject = np.repeat(np.arange(6), 5)
    cal, hold = split_subjects(subject, 10, seed=0)
    assert set(subject[cal]).isdisjoint(subject[hold])
    assert len(hold) >= 10 and len(cal) >= 5 and len(cal) + len(hold) == subject.size
    parts = sweep_gate_parts(subject[hold], seed=0)
    for u in np.unique(subject[hold]):
        assert len(set(parts[subject[hold] == u])) == 1
    assert set(parts) == {PART_SWEEP, PART_GATE}
    # one subject: windows are split instead, and nothing is lost
    cal1, hold1 = split_subjects(np.zeros(9, int), 4)
    assert len(hold1) == 4 and len(cal1) == 5 and set(cal1).isdisjoint(hold1)


def test_calibration_windows_are_the_training_builders_windows(pool):
    # The training dataset builder renders the same synthetic person with the same function
    # and settings; calibration must produce identical model inputs for it.
    ref = build_synth_dataset(config=SynthConfig(n_subjects=1, trials_per_subject=2, seed=1001))
    mine = pool.subset(np.nonzero(pool.subject == 0)[0])
    np.testing.assert_array_equal(mine.valence, ref.valence)
    for name in ("face_clip", "tfr", "contact", "contact_level"):
        np.testing.assert_array_equal(getattr(mine, name), getattr(ref, name), err_msg=name)
    assert preprocessing_hash(pool.preprocessing) == preprocessing_hash(ref.preprocessing)


def test_model_inputs_follow_the_training_layout(tmp_path, pool):
    bundle = write_bundle(tmp_path / "b", with_face_feats=True)
    x = model_inputs(pool, bundle)
    assert list(x) == [s.name for s in bundle.inputs]
    np.testing.assert_array_equal(x["face_clip"], pool.face_clip.transpose(0, 1, 4, 2, 3) / np.float32(255))
    np.testing.assert_array_equal(x["tfr"][:, 0], pool.tfr)
    # face_feats come from the bundle's face_encoder.onnx, as on the device
    crops = pool.face_seq_crops[1, 5].astype(np.float32) / 255.0
    w = np.arange(3 * FEAT_DIM, dtype=np.float32).reshape(3, FEAT_DIM) / 100.0
    np.testing.assert_allclose(x["face_feats"][1, 5], crops.mean(axis=(0, 1)) @ w, rtol=1e-5)
    torch = pytest.importorskip("torch", reason="the training layout check needs torch")
    del torch
    from export.train import window_inputs

    ref = window_inputs(pool, ["face_clip", "tfr", "contact", "contact_level"])
    for name, arr in ref.items():
        np.testing.assert_array_equal(x[name], arr, err_msg=name)


def test_build_split_save_and_reload(tmp_path, pool):
    bundle = write_bundle(tmp_path / "b")
    calib, hold = build_calibration(bundle, "synth:trials=2", n_windows=3, n_holdout=2, pool=pool)
    assert len(calib) == 3 and len(hold) == 2
    assert set(calib.subject).isdisjoint(hold.subject)
    for cs in (calib, hold):
        for spec in bundle.inputs:
            assert cs.inputs[spec.name].shape[1:] == tuple(spec.shape[1:]) and cs.inputs[spec.name].dtype == np.float32
        assert cs.meta["preprocessing_hash"] == preprocessing_hash(bundle.manifest.preprocessing)
    assert sorted(set(hold.part)) == [PART_SWEEP, PART_GATE]
    write_calibration(bundle.root, calib, hold)
    with np.load(bundle.root / CALIBRATION_FILE) as npz:  # arrays named as the model inputs
        assert {"face_clip", "tfr", "contact", "contact_level", "valence_high", "arousal_high",
                "subject"} <= set(npz.files)
    again, again_hold = load_calibration(bundle)
    np.testing.assert_array_equal(again.inputs["contact"], calib.inputs["contact"])
    np.testing.assert_array_equal(again_hold.part, hold.part)
    assert again.labels is not None and again.labels["valence"].dtype == np.int64


def test_other_preprocessing_is_refused(tmp_path, pool):
    other = PREPROCESSING.replace(**{"rppg.method": "chrom"})
    bundle = write_bundle(tmp_path / "b", preprocessing=other)
    pool.save(tmp_path / "pool.npz")
    with pytest.raises(ConfigError, match="preprocess"):
        build_calibration(bundle, f"npz:{tmp_path / 'pool.npz'}", 3, 2)
    # windows built for one bundle do not fit another one's manifest
    good = write_bundle(tmp_path / "good")
    calib, _ = build_calibration(good, "synth", 3, 2, pool=pool)
    with pytest.raises(ConfigError, match="preprocess"):
        calib.check_bundle(bundle)


def test_bad_files_and_counts(tmp_path, pool):
    with pytest.raises(BadInputError, match="no such"):
        CalibrationSet.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(BadInputError, match="junk.npz"):
        CalibrationSet.load(junk)
    np.savez(tmp_path / "other.npz", meta=np.array(json.dumps({"format": "something-else"})))
    with pytest.raises(BadInputError, match="format"):
        CalibrationSet.load(tmp_path / "other.npz")
    bundle = write_bundle(tmp_path / "b")
    with pytest.raises(ConfigError):
        build_calibration(bundle, "synth", 0, 2, pool=pool)
    with pytest.raises(ConfigError):
        build_calibration(bundle, "synth", 3, 1, pool=pool)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no recording"):
        build_calibration(bundle, f"recordings:{tmp_path / 'empty'}", 3, 2)
    assert not (tmp_path / HOLDOUT_FILE).exists()
    assert isinstance(pool, EmotionWindows)


def test_deap_corpus_goes_through_the_corpus_loaders(tmp_path):
    import pickle

    rng = np.random.default_rng(5)
    t = np.arange(8064) / 128.0
    for subject in (1, 2):
        data = rng.normal(0, 1.0, (2, 40, t.size))
        for trial in range(2):
            hr_hz = 1.1 + 0.2 * trial + 0.05 * subject
            data[trial, 38] = 1000 + 500 * np.sin(2 * np.pi * hr_hz * t)  # plethysmograph
            data[trial, 36] = 5000 + 200 * np.sin(2 * np.pi * 0.05 * t)  # GSR, raw units
        labels = np.array([[7.0, 2.0, 5.0, 5.0], [3.0, 8.0, 5.0, 5.0]])
        with open(tmp_path / f"s{subject:02d}.dat", "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f, protocol=2)
    bundle = write_bundle(tmp_path / "b")
    calib, hold = build_calibration(bundle, f"deap:{tmp_path}", n_windows=2, n_holdout=2)
    assert len(calib) == 2 and len(hold) == 2 and set(calib.subject).isdisjoint(hold.subject)
    assert calib.meta["source"] == f"deap:{tmp_path}"
    # DEAP's signals fill the contact rows; without videos the face inputs are zeros
    assert np.abs(calib.inputs["contact"][:, 0]).max() > 0.5
    assert not np.any(calib.inputs["face_clip"]) and not np.any(calib.inputs["tfr"])
    assert sorted(calib.valence_high.tolist() + hold.valence_high.tolist()) == [0, 0, 1, 1]
