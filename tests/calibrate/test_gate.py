"""calibrate.gate: agreement, probability differences, accuracy/F1 change and the pass/fail
threshold, on constructed outputs whose answer is known and on two real ONNX graphs."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibrate.gate import compare_probabilities, heads_of, macro_f1, run_gate, run_graph
from firmware_bridge.errors import BadInputError, ConfigError


def _probs(p_high) -> np.ndarray:
    p = np.asarray(p_high, np.float32)
    return np.stack([1.0 - p, p], axis=1)


def _planted(n=200, flips=(3, 50, 120)):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.05, 0.95, n)
    base[np.abs(base - 0.5) < 0.1] = 0.8  # keep decisions away from the boundary
    moved = base.copy()
    moved[list(flips)] = 1.0 - moved[list(flips)]  # these decisions change
    moved[10] = min(moved[10] + 0.01, 0.99)  # a small drift that changes no decision
    return base, moved


def test_agreement_and_diffs_are_exact_on_planted_flips():
    base, moved = _planted()
    n = base.size
    fp32 = {"valence_prob": _probs(base), "arousal_prob": _probs(base)}
    int8 = {"valence_prob": _probs(moved), "arousal_prob": _probs(base)}
    rep = compare_probabilities(fp32, int8, threshold=0.99)
    v, a = rep.head("valence"), rep.head("arousal")
    assert v.flips == 3 and v.agreement == pytest.approx(1 - 3 / n)
    assert a.flips == 0 and a.agreement == 1.0 and a.max_abs_diff == 0.0
    d = np.abs(moved.astype(np.float32) - base.astype(np.float32))
    assert v.max_abs_diff == pytest.approx(float(d.max()), abs=1e-6)
    # both classes move by the same amount: the mean over classes is the mean over windows
    assert v.mean_abs_diff == pytest.approx(float(d.mean()), abs=1e-6)
    assert rep.min_agreement == v.agreement
    # 197/200 = 98.5 % fails a 99 % gate and passes a 98 % one
    assert not rep.passed
    assert compare_probabilities(fp32, int8, threshold=0.98).passed
    assert "FAILED" in rep.text() and "valence" in rep.text()


def test_accuracy_and_f1_change_against_labels():
    # FP32 right on all 8, INT8 flips two windows of class 1 -> accuracy 6/8.
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    fp32_p = np.where(y == 1, 0.9, 0.1)
    int8_p = fp32_p.copy()
    int8_p[[4, 5]] = 0.2
    fp32 = {"valence_prob": _probs(fp32_p), "arousal_prob": _probs(fp32_p)}
    int8 = {"valence_prob": _probs(int8_p), "arousal_prob": _probs(fp32_p)}
    rep = compare_probabilities(fp32, int8, {"valence": y, "arousal": y}, threshold=0.5)
    v = rep.head("valence")
    assert v.accuracy_fp32 == 1.0 and v.accuracy_int8 == pytest.approx(0.75)
    assert v.accuracy_change == pytest.approx(-0.25)
    # class 0: tp 4 fp 2 fn 0 -> F1 8/10; class 1: tp 2 fp 0 fn 2 -> 4/6
    assert v.f1_int8 == pytest.approx((0.8 + 4 / 6) / 2)
    assert v.f1_change == pytest.approx((0.8 + 4 / 6) / 2 - 1.0)
    assert rep.labelled and rep.to_dict()["heads"]["valence"]["flips"] == 2


def test_unlabelled_windows_report_no_accuracy():
    base, moved = _planted(flips=())
    rep = compare_probabilities({"arousal_prob": _probs(base)}, {"arousal_prob": _probs(moved)})
    assert rep.passed and not rep.labelled
    assert rep.head("arousal").accuracy_fp32 is None and rep.head("arousal").f1_change is None
    assert any("unlabelled" in n for n in rep.notes)


def test_non_finite_int8_output_fails_the_gate():
    base, _ = _planted(flips=())
    bad = _probs(base)
    bad[7, 0] = np.nan
    rep = compare_probabilities({"valence_prob": _probs(base)}, {"valence_prob": bad})
    assert not rep.passed and math.isinf(rep.max_abs_diff)


def test_bad_arguments_raise_one_clear_error():
    p = {"valence_prob": _probs([0.2, 0.7])}
    with pytest.raises(ConfigError):
        compare_probabilities(p, p, threshold=1.5)
    with pytest.raises(BadInputError, match="valence_prob"):
        compare_probabilities(p, {"valence_prob": _probs([0.2])})
    with pytest.raises(BadInputError, match="lack"):
        compare_probabilities(p, {"arousal_prob": _probs([0.2, 0.7])})
    with pytest.raises(BadInputError, match="labels"):
        compare_probabilities(p, p, {"valence": np.array([0, 1, 1])})
    with pytest.raises(ConfigError):
        heads_of(["logits"])


def test_macro_f1_matches_hand_count():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0, 1, 0, 0, 1])
    # class 0: tp 2 fp 1 fn 0 -> 4/5; class 1: tp 2 fp 0 fn 1 -> 4/5
    assert macro_f1(y, p, 2) == pytest.approx(0.8)
    assert math.isnan(macro_f1(np.array([], int), np.array([], int), 2))


def _graph(path, w_scale: float):
    """x (B, 4) -> MatMul W -> Softmax, for both heads; W scaled to move decisions."""
    w = (np.array([[1, -1], [-2, 2], [0.5, -0.5], [1, 1]], np.float32) * w_scale)
    nodes, outs = [], []
    for head, sign in (("valence", 1.0), ("arousal", -1.0)):
        nodes += [helper.make_node("MatMul", ["x", f"w_{head}"], [f"l_{head}"]),
                  helper.make_node("Softmax", [f"l_{head}"], [f"{head}_prob"], axis=-1)]
        outs.append(helper.make_tensor_value_info(f"{head}_prob", TensorProto.FLOAT, ["batch", 2]))
    inits = [numpy_helper.from_array(w, "w_valence"), numpy_helper.from_array(-w, "w_arousal")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                          outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_run_gate_on_real_graphs(tmp_path):
    x = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    a = _graph(tmp_path / "a.onnx", 1.0)
    same = run_gate(a, a, {"x": x})
    assert same.passed and same.max_abs_diff == 0.0 and same.n_windows == 64
    # A sign-flipped graph disagrees on every window whose logits are not tied.
    b = _graph(tmp_path / "b.onnx", -1.0)
    rep = run_gate(a, b, {"x": x})
    assert not rep.passed and rep.head("valence").agreement < 0.05
    # Batching does not change outputs.
    whole = run_graph(a, {"x": x}, batch_size=64)
    parts = run_graph(a, {"x": x}, batch_size=5)
    np.testing.assert_allclose(whole["valence_prob"], parts["valence_prob"], atol=1e-7)
    with pytest.raises(BadInputError, match="missing"):
        run_graph(a, {"y": x})


def _odds(z) -> np.ndarray:
    """[low, high] probabilities from the log-odds of high."""
    return _probs(1.0 / (1.0 + np.exp(-np.asarray(z, np.float64))))


def test_expected_disagreement_pairs_drifts_with_margins():
    from calibrate.gate import expected_disagreement

    z = np.array([2.0, 0.4, 0.04, -1.2])  # log-odds margins 2.0, 0.4, 0.04, 1.2
    assert expected_disagreement(_odds(z), _odds(z)) == 0.0
    # every window's log-odds move 0.2 toward the boundary: only the 0.04 margin is below that
    # drift, and half of such pairs point the flipping way: 0.5 * 1/4
    toward = z - 0.2 * np.sign(z)
    assert expected_disagreement(_odds(z), _odds(toward)) == pytest.approx(0.125, abs=1e-6)
    # the same drift away from the boundary counts the same: which way a window moves is an
    # accident of that window, the size of the drift is the graph's property
    away = z + 0.2 * np.sign(z)
    assert expected_disagreement(_odds(z), _odds(away)) == pytest.approx(0.125, abs=1e-6)
    # one drift of 1.5 among three of 0: it exceeds 3 of the 4 margins
    one = z.copy()
    one[3] += 1.5
    assert expected_disagreement(_odds(z), _odds(one)) == pytest.approx(0.5 * (3 / 4) / 4, abs=1e-6)


def test_expected_disagreement_is_steadier_than_counting_flips():
    """Samples of the same kind of drift: counting flips depends on whether a window happens
    to sit within the drift of the boundary; the estimate agrees on average and moves less."""
    from calibrate.gate import expected_disagreement

    rng = np.random.default_rng(3)
    estimates, flips = [], []
    for _ in range(40):
        z = rng.normal(0.0, 2.0, 100)
        moved = z + rng.normal(0.0, 0.05, 100)
        estimates.append(expected_disagreement(_odds(z), _odds(moved)))
        flips.append(np.mean((z > 0) != (moved > 0)))
    assert np.mean(estimates) == pytest.approx(np.mean(flips), abs=0.003)
    assert np.std(estimates) < 0.75 * np.std(flips)


def test_gate_reports_the_estimate_per_head():
    base, moved = _planted()
    report = compare_probabilities({"valence_prob": _probs(base)}, {"valence_prob": _probs(moved)})
    head = report.heads[0]
    assert 0.0 < head.expected_disagreement <= 1.0
    assert head.to_dict()["expected_disagreement"] == head.expected_disagreement
