"""bench.bundle and ``emofuse bench BUNDLE``: one row per backend x precision x batch,
statistics that are consistent with each other, INT8 only when the bundle has it. Timings are
not asserted (STYLE 14); the tiny bundle is written here with onnx.helper (no torch)."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.bundle import available_precisions, batch_of, bench_bundle, format_bundle_table
from edge.bundle import load_bundle, sha256_file
from edge.cli import main as cli_main
from firmware_bridge.errors import BadInputError, ConfigError
from helpers import preprocessing_dict

D = 32


def _write_bundle(root):
    """x (B, 16, D) -> MatMul -> Relu -> MatMul -> mean over tokens -> Gemm heads -> Softmax."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    inits = [numpy_helper.from_array((rng.normal(size=(D, 4 * D)) / np.sqrt(D)).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.normal(size=(4 * D, D)) / np.sqrt(4 * D)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu"),
             helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="fc2"),
             helper.make_node("ReduceMean", ["h2"], ["pooled"], axes=[1], keepdims=0, name="pool")]
    outs = []
    for head in ("valence", "arousal"):
        inits.append(numpy_helper.from_array(rng.normal(size=(D, 2)).astype(np.float32), f"w_{head}"))
        nodes += [helper.make_node("Gemm", ["pooled", f"w_{head}"], [f"l_{head}"], name=f"{head}_head"),
                  helper.make_node("Softmax", [f"l_{head}"], [f"{head}_prob"], axis=-1, name=f"{head}_sm")]
        outs.append(helper.make_tensor_value_info(f"{head}_prob", TensorProto.FLOAT, ["batch", 2]))
    g = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16, D])],
                          outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, root / "model.onnx")
    prob = "softmax probabilities [low, high]"
    manifest = {
        "schema_version": 1, "model": {"name": "bench-test", "version": "t1"},
        "inputs": [{"name": "x", "shape": ["batch", 16, D], "dtype": "float32", "meaning": "tokens (test)"}],
        "outputs": [{"name": "valence_prob", "shape": ["batch", 2], "dtype": "float32", "meaning": prob},
                    {"name": "arousal_prob", "shape": ["batch", 2], "dtype": "float32", "meaning": prob}],
        "preprocessing": preprocessing_dict(), "labels": {"valence": ["low", "high"], "arousal": ["low", "high"]},
        "training": {}, "export": {"opset": 17, "python": sys.version.split()[0]},
        "files": {"model.onnx": {"sha256": sha256_file(root / "model.onnx"), "role": "model"}},
        "parity": {"max_abs_diff": 0.0, "n_windows": 1, "passed": True},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(root)


def _calibrate(bundle):
    """Install an INT8 graph with emofuse's own calibrate step (no sweep: speed only here)."""
    from calibrate.calibration import CalibrationSet, preprocessing_hash, write_calibration
    from calibrate.quantize import QuantConfig, quantize_bundle

    def windows(n, seed, part=None):
        rng = np.random.default_rng(seed)
        lab = rng.integers(0, 2, n)
        return CalibrationSet(
            inputs={"x": rng.normal(size=(n, 16, D)).astype(np.float32)}, valence=np.where(lab, 7.0, 3.0).astype(
                np.float32), arousal=np.full(n, 3.0, np.float32), valence_high=lab.astype(np.int64),
            arousal_high=np.zeros(n, np.int64), subject=np.arange(n) // 2, trial=np.arange(n),
            meta={"preprocessing_hash": preprocessing_hash(bundle.manifest.preprocessing)}, part=part)

    calib, hold = windows(32, 1), windows(16, 2, part=(np.arange(16) % 2).astype(np.int64))
    write_calibration(bundle.root, calib, hold)
    res = quantize_bundle(bundle, calib, hold, QuantConfig(min_macs=0, sweep=False, min_agreement=0.5))
    assert res.passed, res.text()
    return load_bundle(bundle.root)


@pytest.fixture()
def bundle(tmp_path):
    return _write_bundle(tmp_path / "bundle")


def test_rows_are_consistent_and_int8_appears_after_calibration(bundle):
    assert available_precisions(bundle) == ["fp32"]
    before = bench_bundle(bundle, batches=(1, 3), warmup=2, runs=30, rounds=3)
    assert [(r["precision"], r["batch"]) for r in before["rows"]] == [("fp32", 1), ("fp32", 3)]
    assert before["inputs"].startswith("dummy")
    with pytest.raises(ConfigError, match="calibrate"):
        bench_bundle(bundle, precisions=["int8"], warmup=0, runs=5, rounds=1)

    calibrated = _calibrate(bundle)
    assert available_precisions(calibrated) == ["fp32", "int8"]
    result = bench_bundle(calibrated, batches=(1, 3), warmup=2, runs=30, rounds=3)
    rows = {(r["precision"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {("fp32", 1), ("fp32", 3), ("int8", 1), ("int8", 3)}
    assert "real windows" in result["inputs"]
    for (precision, batch), r in rows.items():
        assert r["backend"] == "onnxruntime" and r["threads"] == 1
        assert r["runs"] == max(20, round(30 / batch))
        assert 0 < r["p50_ms"] <= r["p99_ms"]
        # Throughput counts windows, not runs, over the time spent running them: every timed
        # window is counted, and the engine's own clock (inside run()) can only be faster than
        # the wall clock around the timed loop. Counting runs would put it ~batch x below.
        assert r["windows"] == r["runs"] * batch
        assert r["windows_per_s"] >= r["windows"] / r["timed_s"]
        assert r["graph"] == ("model.int8.onnx" if precision == "int8" else "model.onnx")
    assert rows[("fp32", 1)]["speedup_p50"] is None
    # A speed-up over FP32 at the same batch: above 1 exactly when INT8's median run is the
    # shorter one at that batch, and nothing to report when FP32 was not run.
    for batch in (1, 3):
        int8, fp32 = rows[("int8", batch)], rows[("fp32", batch)]
        assert (int8["speedup_p50"] > 1) == (int8["p50_ms"] < fp32["p50_ms"])
    alone = bench_bundle(calibrated, precisions=["int8"], batches=(1,), warmup=1, runs=20, rounds=1)
    assert [r["speedup_p50"] for r in alone["rows"]] == [None]
    text = format_bundle_table(result)
    assert "host:" in text and "int8" in text and "vs fp32" in text
    assert "onnxruntime" in result["host"]


def test_batches_cycle_real_windows():
    w = {"x": np.arange(5)[:, None, None] * np.ones((1, 2, 2))}
    b = batch_of(w, 7, offset=3)
    assert b["x"][:, 0, 0].tolist() == [3, 4, 0, 1, 2, 3, 4] and b["x"].flags.c_contiguous


def test_bad_requests(bundle):
    with pytest.raises(ConfigError):
        bench_bundle(bundle, batches=(0,), runs=5)
    with pytest.raises(ConfigError):
        bench_bundle(bundle, backends=("cuda-magic",), runs=5, warmup=0, rounds=1)
    from bench.bundle import check_batches

    with pytest.raises(BadInputError):
        check_batches([1, -2])


def test_cli_bench_bundle_table_and_json(bundle, capsys):
    code = cli_main(["bench", str(bundle.root), "--runs", "20", "--warmup", "1", "--batch", "1", "2",
                     "--all-cores"])
    out = capsys.readouterr().out
    assert code == 0 and "p50 ms" in out and "host:" in out and out.count("onnxruntime  fp32") == 2
    code = cli_main(["bench", str(bundle.root), "--runs", "20", "--warmup", "1", "--batch", "2", "--json",
                     "--all-cores"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(lines) == 1 and lines[0]["batch"] == 2 and "host" in lines[0]


def test_cli_unknown_target_is_one_line_error(tmp_path, capsys):
    code = cli_main(["bench", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and "signals" in err and len(err.strip().splitlines()) == 1


def test_cli_bench_default_is_the_packaged_bundle_with_its_int8_graph(capsys):
    from edge.pipeline import DEFAULT_BUNDLE_DIR

    code = cli_main(["bench", "default", "--runs", "5", "--warmup", "1", "--batch", "1", "--all-cores"])
    out = capsys.readouterr().out
    assert code == 0 and f"bundle: {DEFAULT_BUNDLE_DIR}" in out
    assert out.count("onnxruntime  fp32") == 1 and out.count("onnxruntime  int8") == 1
