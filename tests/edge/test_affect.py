"""edge.affect: circumplex mapping, identity split, identity-weighted metrics on hand-made cases."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edge.affect import (
    AROUSAL_OF,
    EXPRESSIONS,
    VALENCE_OF,
    axis_targets,
    balanced_accuracy,
    expected_calibration_error,
    identity_split,
    identity_weights,
    split_rows,
)
from firmware_bridge.errors import BadInputError, ConfigError


def test_mapping_follows_the_issue():
    assert set(VALENCE_OF) == set(EXPRESSIONS) == set(AROUSAL_OF)
    assert {k for k, v in VALENCE_OF.items() if v == 1} == {"happiness"}
    assert {k for k, v in VALENCE_OF.items() if v == 0} == {"anger", "contempt", "disgust", "fear", "sadness"}
    assert {k for k, v in VALENCE_OF.items() if v is None} == {"neutral", "surprise"}
    assert {k for k, v in AROUSAL_OF.items() if v == 1} == {"anger", "fear", "surprise"}
    assert {k for k, v in AROUSAL_OF.items() if v == 0} == {"neutral", "sadness"}
    assert {k for k, v in AROUSAL_OF.items() if v is None} == {"happiness", "disgust", "contempt"}


def test_axis_targets():
    keep, y = axis_targets(["happiness", "neutral", "fear"], "valence")
    assert keep.tolist() == [True, False, True] and y.tolist() == [1, -1, 0]
    keep, y = axis_targets(["happiness", "neutral", "fear"], "arousal")
    assert keep.tolist() == [False, True, True] and y.tolist() == [-1, 0, 1]
    with pytest.raises(BadInputError, match="unknown expression"):
        axis_targets(["joy"], "valence")
    with pytest.raises(ConfigError):
        axis_targets(["happiness"], "dominance")


def test_identity_split_is_stable_and_uses_sha256():
    ids = [f"person_{i}" for i in range(2000)]
    sides = [identity_split(i) for i in ids]
    assert sides == [identity_split(i) for i in ids]
    share = sides.count("test") / len(ids)
    assert 0.17 < share < 0.23
    # the rule itself, recomputed independently
    u = int.from_bytes(hashlib.sha256(b"aj_cook").digest()[:8], "big") / 2.0**64
    assert identity_split("aj_cook") == ("test" if u < 0.2 else "train")
    assert identity_split("aj_cook", 0.0) == "train"
    assert identity_split("aj_cook", 1.0) == "test"
    # growing the test share never moves a test identity back to train
    small = {i for i in ids if identity_split(i, 0.1) == "test"}
    big = {i for i in ids if identity_split(i, 0.3) == "test"}
    assert small < big
    with pytest.raises(BadInputError):
        identity_split("")
    with pytest.raises(ConfigError):
        identity_split("x", 1.5)


def test_split_rows_keeps_people_whole():
    rows = [{"file": f"{i}_{k}.jpg", "identity": f"p{i}"} for i in range(300) for k in range(3)]
    test = split_rows(rows, "test")
    train = split_rows(rows, "train")
    assert len(test) + len(train) == len(rows)
    assert not {r["identity"] for r in test} & {r["identity"] for r in train}
    assert split_rows(rows, "all") == rows
    with pytest.raises(ConfigError):
        split_rows(rows, "valid")
    with pytest.raises(BadInputError):
        split_rows([{"file": "a.jpg"}], "test")


def test_identity_weights():
    w = identity_weights([1, 1, 1, 0], ["a", "a", "b", "a"])
    assert w.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert identity_weights([1, 0]).tolist() == [1.0, 1.0]


def test_balanced_accuracy_plain_matches_hand_count():
    # class 1: 3 of 4 right; class 0: 1 of 2 right -> (0.75 + 0.5) / 2
    y = [1, 1, 1, 1, 0, 0]
    p = [1, 1, 1, 0, 0, 1]
    assert balanced_accuracy(y, p) == pytest.approx(0.625)


def test_balanced_accuracy_weights_identities_equally():
    # class 1: person a has 4 images all wrong, person b 1 image right -> recall 0.5 (not 0.2)
    # class 0: person c 2 images, 1 right -> recall 0.5
    y = [1, 1, 1, 1, 1, 0, 0]
    p = [0, 0, 0, 0, 1, 0, 1]
    g = ["a", "a", "a", "a", "b", "c", "c"]
    assert balanced_accuracy(y, p, g) == pytest.approx(0.5)
    assert balanced_accuracy(y, p) == pytest.approx((0.2 + 0.5) / 2)


def test_balanced_accuracy_multiclass_and_edge_cases():
    y = ["happiness", "anger", "anger", "fear"]
    p = ["happiness", "anger", "fear", "anger"]
    assert balanced_accuracy(y, p) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    # a predicted class absent from y_true is not averaged in
    assert balanced_accuracy([1, 1], [1, 0]) == pytest.approx(0.5)
    assert np.isfinite(balanced_accuracy([0], [1]))
    with pytest.raises(BadInputError):
        balanced_accuracy([], [])
    with pytest.raises(BadInputError):
        balanced_accuracy([1, 0], [1])


def test_ece_perfectly_calibrated_bins_give_zero():
    # confidence 0.75 in one bin, 3 of 4 right; confidence 1.0, always right
    p = [0.75, 0.75, 0.75, 0.25, 1.0, 0.0]
    y = [1, 1, 0, 0, 1, 0]
    assert expected_calibration_error(p, y) == pytest.approx(0.0, abs=1e-12)


def test_ece_hand_computed():
    # all confident (0.9) and half right: |0.5 - 0.9| = 0.4
    assert expected_calibration_error([0.9, 0.9, 0.1, 0.1], [1, 0, 0, 1]) == pytest.approx(0.4)
    # two bins: {0.6 x2, 1 right} gap 0.1 weight 0.5; {0.95 x2, both right} gap 0.05 weight 0.5
    ece = expected_calibration_error([0.6, 0.4, 0.95, 0.05], [1, 1, 1, 0])
    assert ece == pytest.approx(0.5 * 0.1 + 0.5 * 0.05)
    # one bin only: the whole set is averaged
    assert expected_calibration_error([0.6, 0.4, 0.95, 0.05], [1, 1, 1, 0], n_bins=1) == pytest.approx(
        abs(0.75 - (0.6 + 0.6 + 0.95 + 0.95) / 4))


def test_ece_identity_weighting():
    # person a: 3 class-1 images at p=0.9, all right; person b: 1 class-0 image at p=0.9, wrong.
    # Unweighted accuracy 3/4; identity-weighted, a and b count once each -> 1/2.
    p = [0.9, 0.9, 0.9, 0.9]
    y = [1, 1, 1, 0]
    g = ["a", "a", "a", "b"]
    assert expected_calibration_error(p, y) == pytest.approx(abs(0.75 - 0.9))
    assert expected_calibration_error(p, y, groups=g) == pytest.approx(abs(0.5 - 0.9))


def test_ece_rejects_bad_input():
    with pytest.raises(BadInputError):
        expected_calibration_error([], [])
    with pytest.raises(BadInputError):
        expected_calibration_error([1.2], [1])
    with pytest.raises(BadInputError):
        expected_calibration_error([np.nan], [1])
    with pytest.raises(BadInputError):
        expected_calibration_error([0.5], [2])
    with pytest.raises(ConfigError):
        expected_calibration_error([0.5], [1], n_bins=0)
