"""``emofuse bench pipeline`` on a tiny synthetic recording: every report field is there.

No timing is asserted (STYLE rule 14): speed is what the benchmark reports, not what a test
checks. The bundle is a tiny contract-shaped graph (face_clip + tfr -> valence / arousal)
with a real Q/DQ INT8 twin, so the INT8 ONNX Runtime path the benchmark measures is run.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from bench import host, orin, recording
from bench import pipeline as bp
from helpers import preprocessing_dict

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SECONDS = 15.0  # > the 10 s pulse window, so some windows are full and the model runs
SIZE = (320, 240)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _graph() -> onnx.ModelProto:
    """tfr (B,1,32,32) and face_clip (B,8,3,32,32) -> two [low, high] softmaxes."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (1024, 4)).astype(np.float32), "w")
    wf = numpy_helper.from_array(np.array([[0.5, -0.5, 0.2, -0.2]], np.float32), "wf")
    shape = numpy_helper.from_array(np.array([-1, 1024], np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["tfr", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["z_tfr"]),
        helper.make_node("ReduceMean", ["face_clip"], ["face_mean"], axes=[1, 2, 3, 4], keepdims=1),
        helper.make_node("Reshape", ["face_mean", "one"], ["face_col"]),
        helper.make_node("MatMul", ["face_col", "wf"], ["z_face"]),
        helper.make_node("Add", ["z_tfr", "z_face"], ["z"]),
        helper.make_node("Split", ["z", "split"], ["zv", "za"], axis=1),
        helper.make_node("Softmax", ["zv"], ["valence_prob"], axis=1),
        helper.make_node("Softmax", ["za"], ["arousal_prob"], axis=1),
    ]
    inits = [w, wf, shape, numpy_helper.from_array(np.array([-1, 1], np.int64), "one"),
             numpy_helper.from_array(np.array([2, 2], np.int64), "split")]
    graph = helper.make_graph(
        nodes, "tiny_contract",
        [helper.make_tensor_value_info("face_clip", TensorProto.FLOAT, ["batch", 8, 3, 32, 32]),
         helper.make_tensor_value_info("tfr", TensorProto.FLOAT, ["batch", 1, 32, 32])],
        [helper.make_tensor_value_info("valence_prob", TensorProto.FLOAT, ["batch", 2]),
         helper.make_tensor_value_info("arousal_prob", TensorProto.FLOAT, ["batch", 2])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _spec(name, shape, meaning="test tensor"):
    return {"name": name, "shape": ["batch", *shape], "dtype": "float32", "meaning": meaning}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    root = tmp_path_factory.mktemp("tiny_bundle")
    onnx.save(_graph(), root / "model.onnx")
    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"face_clip": rng.random((1, 8, 3, 32, 32), np.float32),
                              "tfr": rng.normal(size=(1, 1, 32, 32)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self._it, None)

    quantize_static(str(root / "model.onnx"), str(root / "model.int8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"])
    manifest = {
        "schema_version": 1, "model": {"name": "tiny", "version": "t1"},
        "inputs": [_spec("face_clip", [8, 3, 32, 32]), _spec("tfr", [1, 32, 32])],
        "outputs": [_spec("valence_prob", [2]), _spec("arousal_prob", [2])],
        "preprocessing": preprocessing_dict(), "labels": {"valence": ["low", "high"], "arousal": ["low", "high"]},
        "training": {}, "export": {"opset": 17},
        "files": {"model.onnx": {"sha256": _sha(root / "model.onnx"), "role": "model"},
                  "model.int8.onnx": {"sha256": _sha(root / "model.int8.onnx"), "role": "model_int8"}},
        "parity": {"max_abs_diff": 0.0, "n_windows": 1, "passed": True},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return recording.make_sim_recording(tmp_path_factory.mktemp("rec") / "sim", SECONDS / 60.0,
                                 frame_size=SIZE, workers=1)


def test_sim_recording_is_described_and_complete(sim):
    info = recording.describe_recording(sim)
    assert info["frames"] == int(SECONDS * 30)
    assert info["frame_size"] == list(SIZE)
    import cv2

    cap = cv2.VideoCapture(str(sim / recording.SIM_VIDEO))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == info["frames"]
    cap.release()
    from firmware_bridge.recording import open_recording

    rec = open_recording(sim / recording.SIM_PHYSIO)
    assert sorted(rec.streams) == ["ecg", "eda", "ppg_ir"]
    t, x = rec.read_stream("ecg")
    assert x.shape[0] == pytest.approx(SECONDS * 250.0, abs=1)
    assert int(t[0]) == recording.SIM_T0_NS  # the same clock origin as the video


@pytest.mark.slow
def test_bench_report_has_every_field(sim, bundle_dir):
    rep = bp.bench_pipeline(sim, minutes=SECONDS / 60.0, bundle=str(bundle_dir), paced_s=3.0,
                            cold_cache=False, one_core=True)
    assert tuple(rep) == bp.REPORT_FIELDS
    assert json.loads(json.dumps(rep)) == rep  # plain JSON all the way down
    rp = rep["replay"]
    for key in ("media_s", "wall_s", "speed_x", "speed_x_cpu", "frames", "results", "cpu_s",
                "thread_cpu_ms_per_media_s", "load_avg_1min"):
        assert key in rp
    assert rp["frames"] == int(SECONDS * 30)  # replay processes every frame
    assert rp["results"] >= int(SECONDS) - 1
    assert {"camera", "face", "infer"} <= set(rp["thread_cpu_ms_per_media_s"])
    for key in ("fast", "paced"):
        lat = rep["latency"][key]
        assert lat["n"] > 0 and lat["p50_ms"] is not None and lat["p99_ms"] >= lat["p50_ms"]
        assert lat["steady"]["n"] <= lat["n"]
    assert rep["latency"]["fast"]["with_model"]["n"] > 0, "the model ran on full windows"
    mem = rep["memory"]
    assert mem["hwm_mb"] >= mem["rss_ready_mb"] > 0
    assert mem["torch_imported"] is False
    warm = rep["cold_start"]["warm_cache"]
    assert warm["launch_to_ready_s"] > 0 and warm["first_full_t_s"] is not None
    assert rep["cold_start"]["cold_cache"] is None  # skipped here
    stages = {s["stage"]: s for s in rep["stages"]}
    assert {"read", "track", "roi", "crop", "pulse", "tfr", "engine", "window"} <= set(stages)
    shares = [s["share"] for s in rep["stages"] if s["share"] is not None]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3)
    assert rep["bundle"]["precision"] == "int8" and rep["bundle"]["backend"] == "onnxruntime"
    orin = rep["orin_nano"]
    assert "ESTIMATE" in orin["note"]
    assert orin["engine"]["flops"] == rep["bundle"]["model_flops"] > 0
    assert orin["speed_x_one_core"] > 0
    assert set(rep["verdict"]) == set(bp.TARGETS)
    text = bp.format_report(rep)
    for label in ("replay speed", "latency p99", "resident memory", "first full window", "Orin Nano"):
        assert label in text


def test_onnx_flops_counts_the_matmuls(bundle_dir):
    work = orin.onnx_flops(bundle_dir / "model.onnx")
    # MatMul (1, 1024) x (1024, 4) and (1, 1) x (1, 4); the elementwise nodes add a few more.
    assert work["macs"] == 1024 * 4 + 4
    assert work["flops"] >= 2 * work["macs"]
    assert work["weight_bytes"] >= 1024 * 4 * 4
    int8 = orin.onnx_flops(bundle_dir / "model.int8.onnx")
    assert int8["macs"] == work["macs"]  # Q/DQ nodes are not work


def test_orin_estimate_scales_with_the_assumed_cpu():
    stages = [{"stage": "track", "per": "frame", "n": 10, "mean_ms": 3.0, "cpu_ms": 2.0, "cpu_ms_per_media_s": 60.0},
              {"stage": "pulse", "per": "window", "n": 10, "mean_ms": 1.0, "cpu_ms": 1.0, "cpu_ms_per_media_s": 1.0},
              {"stage": "window", "per": "window", "n": 10, "mean_ms": 30.0, "cpu_ms": None,
               "cpu_ms_per_media_s": None},
              {"stage": "(sensor0 thread)", "per": "second", "n": None, "mean_ms": None, "cpu_ms": None,
               "cpu_ms_per_media_s": 5.0}]
    host = {"cpu_ghz": 3.0}
    slow = orin.orin_nano_estimate(stages, host, frame_size=(640, 480), box_px=250 * 250, preprocessing=None,
                                 hop_s=1.0, model=None)
    fast = orin.orin_nano_estimate(stages, host, frame_size=(640, 480), box_px=250 * 250, preprocessing=None,
                                 hop_s=1.0, model=None, assume={"cpu_ghz": 3.0})
    assert [r["stage"] for r in slow["stages"]] == ["track", "pulse", "(sensor0 thread)"]  # waits are not work
    ratio = 3.0 * orin.ORIN_NANO["host_ipc_over_a78"] / 1.5
    assert slow["scalar_ratio"] == pytest.approx(ratio)
    track = slow["stages"][0]
    assert track["host_ms"] == 2.0  # CPU time, not the preempted wall time
    assert track["orin_ms"] == pytest.approx(2.0 * ratio)
    assert track["orin_ms_per_media_s"] == pytest.approx(60.0 * ratio)
    assert slow["cpu_ms_per_media_s"] == pytest.approx(66.0 * ratio, rel=1e-3)
    assert fast["cpu_ms_per_media_s"] < slow["cpu_ms_per_media_s"]


def test_memory_reading_sees_an_allocation():
    before = host.proc_memory_mb()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, every page touched
    after = host.proc_memory_mb()
    assert after["rss_mb"] - before["rss_mb"] >= 0.9 * block.nbytes / 1e6
    assert after["hwm_mb"] >= after["rss_mb"]


def test_thread_cpu_is_charged_to_the_thread_that_spent_it():
    """A thread that spins for 0.3 s of its own CPU time shows about that under its name; one
    that sleeps as long shows next to none (CPU time, not wall time, whatever the load)."""
    import threading
    import time

    spun, release = threading.Event(), threading.Event()

    def spin():
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.3:
            pass
        spun.set()
        release.wait(10.0)  # stay alive (and listed) until the last reading is taken

    def rest():
        time.sleep(0.3)
        release.wait(10.0)

    busy = threading.Thread(target=spin, name="bench-test-busy")
    idle = threading.Thread(target=rest, name="bench-test-idle")
    busy.start()
    idle.start()
    seen: dict[str, float] = {}
    try:
        while not spun.is_set():
            time.sleep(0.02)
        time.sleep(0.35)  # the idle thread has slept its 0.3 s too
        for name, cpu_s in host.thread_cpu_s().values():
            seen[name] = cpu_s
    finally:
        release.set()
        busy.join()
        idle.join()
    # /proc counts clock ticks (10 ms); both threads are still alive at the reading.
    assert seen["bench-test-busy"] >= 0.25
    assert seen["bench-test-idle"] <= 0.05
    assert "MainThread" in seen


def test_cli_reports_a_missing_recording_in_one_line(capsys, tmp_path):
    from edge.cli import main

    assert main(["bench", "pipeline", "--recording", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recording folder not found" in err[0]
    assert main(["bench", "pipeline", "--minutes", "0"]) == 2
