"""Real still faces as training data (export.faces.data): identity split, sampling weights, crops."""
from __future__ import annotations

import numpy as np
import pytest

from edge.affect import EXPRESSIONS, identity_split
from export.faces.data import assign_split, load_faces, read_labels, sampling_weights
from firmware_bridge.errors import BadInputError, ConfigError


def _sides(identities):
    sides = {}
    for ident in identities:
        sides.setdefault(ident, set()).add(assign_split(ident))
    return sides


def test_no_identity_on_two_sides_of_the_real_split(shared_data):
    rows = read_labels(shared_data / "faces")
    sides = _sides(r["identity"] for r in rows)
    assert all(len(s) == 1 for s in sides.values())
    counts = {k: sum(1 for s in sides.values() if k in s) for k in ("train", "val", "test")}
    n = len(sides)
    # About 20 % test, 10 % of the rest for validation: each side is really used.
    assert 0.15 * n < counts["test"] < 0.25 * n
    assert 0.05 * n < counts["val"] < 0.13 * n
    # Test identities are exactly edge.affect's test identities (the scoring split).
    assert all((identity_split(i) == "test") == ("test" in s) for i, s in sides.items())


def test_split_depends_on_identity_only_and_val_is_taken_from_train():
    ids = [f"person_{i}" for i in range(2000)]
    first = [assign_split(i) for i in ids]
    assert first == [assign_split(i) for i in reversed(ids)][::-1]
    assert all(identity_split(i) == "train" for i, s in zip(ids, first) if s == "val")
    assert {"train", "val", "test"} == set(first)
    with pytest.raises(ConfigError):
        assign_split("a", val_fraction=1.0)


def test_sampling_weights_balance_identities_within_a_class_and_soften_classes():
    # class 0: identity a with 9 photos, b with 1; class 1: one identity c with 1 photo.
    expr = np.array([0] * 10 + [1])
    ident = np.array(["a"] * 9 + ["b"] + ["c"])
    w = sampling_weights(expr, ident, class_power=0.5)
    assert w.sum() == pytest.approx(1.0)
    assert w[:9].sum() == pytest.approx(w[9])  # a person counts once, however many photos
    # class mass ~ n_identities ** 0.5: class 0 (2 ids) vs class 1 (1 id)
    assert w[:10].sum() / w[10] == pytest.approx(2 ** 0.5)
    w0 = sampling_weights(expr, ident, class_power=0.0)
    assert w0[:10].sum() == pytest.approx(w0[10])


def test_load_faces_reads_crops_labels_and_caches(shared_data, tmp_path):
    root = shared_data / "faces"
    cache = tmp_path / "c.npz"
    fs = load_faces(root, 64, limit=6, cache=cache)
    assert fs.crops.shape == (6, 64, 64, 3) and fs.crops.dtype == np.uint8
    assert set(fs.expression) <= set(range(len(EXPRESSIONS)))
    assert cache.is_file()
    again = load_faces(root, 64, limit=6, cache=cache)
    np.testing.assert_array_equal(again.crops, fs.crops)
    # Faces are centred bright-ish content, not black padding.
    assert fs.crops[:, 24:40, 24:40].mean() > 40
    # valence / arousal follow edge.affect's mapping
    v = fs.valence
    assert all((v[i] == 1) == (EXPRESSIONS[e] == "happiness") for i, e in enumerate(fs.expression))


def test_missing_labels_is_one_clear_error(tmp_path):
    with pytest.raises(BadInputError, match="labels.csv"):
        read_labels(tmp_path)


def test_default_crop_is_edge_stills_still_face(shared_data):
    """Training crops are the crops emofuse faces / the device cut (edge.stills.still_face)."""
    from edge.stills import read_image, still_face

    from export.faces.data import StillCropper, read_labels

    root = shared_data / "faces"
    cropper = StillCropper()
    found = 0
    for row in read_labels(root)[:12]:
        img = read_image(root / "images" / row["file"])
        crop, detected = cropper(img, 64)
        ref = still_face(img, cropper.settings(64))
        assert detected == ref.found
        if ref.found:
            found += 1
            np.testing.assert_array_equal(crop, ref.crop)
        else:
            assert crop.shape == (64, 64, 3)
    assert found >= 6
