"""``emofuse faces``: still photos through the default bundle, output format, no-face reporting,
metrics that agree with edge.affect, and one-line errors on bad input.

Nothing here asserts the accuracy of today's bundle (it is replaced by issue 14's work)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge.affect import axis_targets, balanced_accuracy, expected_calibration_error, identity_split
from edge.cli import faces as faces_cli
from helpers import run_command, shared_path

LINE_KEYS = {"file", "face_found", "p_valence_high", "p_arousal_high"}


def _astronaut_bgr() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def _emofuse(*args, timeout=300):
    proc = subprocess.run([sys.executable, "-c", "import sys; from edge.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def _assert_one_line_error(code, out, err, needle):
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("emofuse faces: error:") and needle in lines[0], lines[0]
    assert "Traceback" not in err


def _run(argv, capsys):
    code = run_command(faces_cli, ["faces", *argv])
    cap = capsys.readouterr()
    return code, [json.loads(s) for s in cap.out.splitlines()], cap.err


def _check_lines(lines):
    for ln in lines:
        assert LINE_KEYS <= set(ln)
        if ln["face_found"]:
            assert len(ln["box"]) == 4 and ln["box"][2] > 0 and ln["box"][3] > 0
            for k in ("p_valence_high", "p_arousal_high"):
                assert 0.0 <= ln[k] <= 1.0
            assert "reason" not in ln
        else:
            assert ln["p_valence_high"] is None and ln["p_arousal_high"] is None
            assert "no face" in ln["reason"]


def _check_summary(summary, lines):
    """The summary's metrics recomputed independently from the printed lines with edge.affect."""
    found = [ln for ln in lines if ln["face_found"]]
    assert summary["summary"] is True
    assert summary["n_images"] == len(lines)
    assert summary["n_faces_found"] == len(found)
    assert summary["n_no_face"] == len(lines) - len(found)
    for axis, key in (("valence", "p_valence_high"), ("arousal", "p_arousal_high")):
        keep, y = axis_targets([ln["expression"] for ln in found], axis)
        p = np.array([ln[key] for ln in found])[keep]
        g = [ln["identity"] for ln, k in zip(found, keep) if k]
        y = y[keep]
        rec = summary[axis]
        assert rec["n_images"] == y.size
        assert rec["n_per_class"] == {"low": int((y == 0).sum()), "high": int((y == 1).sum())}
        keep_all, _ = axis_targets([ln["expression"] for ln in lines], axis)
        assert rec["n_no_face"] == int(keep_all.sum()) - y.size
        if y.size:
            assert rec["balanced_accuracy"] == pytest.approx(balanced_accuracy(y, (p >= 0.5).astype(int), g),
                                                             abs=1e-4)
            assert rec["ece"] == pytest.approx(expected_calibration_error(p, y, 10, groups=g), abs=1e-4)
        else:
            assert rec["balanced_accuracy"] is None and rec["ece"] is None


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory):
    """A folder of photos whose face status is known: the astronaut in colour, the same in
    one-channel grey, mirrored, and two pictures with no face."""
    d = tmp_path_factory.mktemp("stills")
    face = _astronaut_bgr()
    cv2.imwrite(str(d / "a_colour.png"), face)
    cv2.imwrite(str(d / "b_grey.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(d / "c_mirror.jpg"), face[:, ::-1])
    cv2.imwrite(str(d / "d_flat.png"), np.full((128, 128, 3), 127, np.uint8))
    rng = np.random.default_rng(0)
    cv2.imwrite(str(d / "e_noise.png"), rng.integers(0, 256, (96, 160), dtype=np.uint8))
    (d / "notes.txt").write_text("not an image\n")
    return d


def test_folder_of_synthetic_photos(synth_folder, capsys):
    code, lines, err = _run([str(synth_folder)], capsys)
    assert code == 0
    assert [ln["file"] for ln in lines] == ["a_colour.png", "b_grey.png", "c_mirror.jpg", "d_flat.png",
                                            "e_noise.png"]
    _check_lines(lines)
    assert [ln["face_found"] for ln in lines] == [True, True, True, False, False]
    # A one-channel photo becomes three equal channels: the detector sees the same grey image.
    assert lines[0]["box"] == lines[1]["box"]
    assert err == ""  # no labels: no summary


def test_labels_give_a_summary_that_agrees_with_edge_affect(synth_folder, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    rows = [("a_colour.png", "happiness", "p1"), ("b_grey.png", "anger", "p1"), ("c_mirror.jpg", "sadness", "p2"),
            ("d_flat.png", "fear", "p3"), ("e_noise.png", "neutral", "p4")]
    labels.write_text("file,expression,identity\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows))
    code, lines, err = _run([str(synth_folder), "--labels", str(labels), "--json"], capsys)
    assert code == 0
    summary = lines[-1]
    lines = lines[:-1]
    _check_lines(lines)
    assert [(ln["expression"], ln["identity"]) for ln in lines] == [(b, c) for _, b, c in rows]
    _check_summary(summary, lines)
    assert summary["valence"]["n_no_face"] == 1  # d_flat (fear)
    assert summary["arousal"]["n_no_face"] == 2  # d_flat (fear), e_noise (neutral)
    assert summary["precision"] == "int8" and summary["backend"] == "onnxruntime"
    assert "bal.acc" in err and "valence" in err and "arousal" in err


def test_still_window_marks_physiology_absent(synth_folder):
    from edge.pipeline import resolve_bundle
    from edge.stills import read_image, still_face, still_feeds, still_settings, still_window

    bundle = resolve_bundle("default")
    s = still_settings(bundle.preprocessing)
    face = still_face(read_image(synth_folder / "a_colour.png"), s)
    assert face.found and face.crop.shape == (s.crop_size, s.crop_size, 3)
    w = still_window(face.crop, s)
    assert w.face_clip.shape == (s.clip_frames, s.crop_size, s.crop_size, 3)
    assert all(np.array_equal(f, face.crop) for f in w.face_clip)
    assert not np.any(w.tfr) and w.tfr.shape == s.tfr_shape
    assert not np.any(w.contact) and not np.any(w.contact_level)
    assert not w.contact_present.any() and not w.level_present.any() and not w.face_present
    feeds = still_feeds(face.crop, s, bundle.input_names)
    assert set(feeds) == set(bundle.input_names)
    for spec in bundle.inputs:
        assert feeds[spec.name].shape[1:] == tuple(spec.shape[1:])
        assert feeds[spec.name].dtype == np.float32
    assert not still_face(read_image(synth_folder / "d_flat.png"), s).found


@pytest.mark.realdata
def test_real_photos_from_the_test_split(tmp_path, capsys):
    images = shared_path("faces/images")
    labels = shared_path("faces/labels.csv")
    with open(labels, newline="") as fh:
        rows = list(csv.DictReader(fh))
    # A few test-split photos of every valence / arousal class, and one train-split photo that
    # --split test must drop.
    pick, seen = [], {}
    for r in rows:
        if identity_split(r["identity"]) == "test" and seen.get(r["expression"], 0) < 2:
            seen[r["expression"]] = seen.get(r["expression"], 0) + 1
            pick.append(r)
    train_row = next(r for r in rows if identity_split(r["identity"]) == "train")
    subset = tmp_path / "subset.csv"
    with open(subset, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["file", "expression", "identity"])
        w.writeheader()
        for r in pick + [train_row]:
            w.writerow({k: r[k] for k in ("file", "expression", "identity")})
    code, lines, err = _run([str(subset), "--images", str(images), "--labels", str(subset), "--split", "test",
                             "--json", "--precision", "fp32"], capsys)
    assert code == 0
    summary, lines = lines[-1], lines[:-1]
    assert [ln["file"] for ln in lines] == [r["file"] for r in pick]
    _check_lines(lines)
    _check_summary(summary, lines)
    assert summary["precision"] == "fp32"
    assert sum(ln["face_found"] for ln in lines) >= len(lines) // 2  # real, face-centred photos


# -- bad input: one line, exit 2 ------------------------------------------------------------------


def test_missing_folder(tmp_path):
    _assert_one_line_error(*_emofuse("faces", str(tmp_path / "nope")), "neither a folder nor a CSV")


def test_empty_folder(tmp_path):
    _assert_one_line_error(*_emofuse("faces", str(tmp_path)), "no image files")


def test_unreadable_image(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    _assert_one_line_error(*_emofuse("faces", str(tmp_path)), "cannot decode image")


def test_csv_without_the_columns(synth_folder, tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("name,emotion\na_colour.png,happiness\n")
    _assert_one_line_error(*_emofuse("faces", str(synth_folder), "--labels", str(bad)),
                           "lacks the column(s) file, expression, identity")
    _assert_one_line_error(*_emofuse("faces", str(bad)), "lacks the column(s) file")


def test_unknown_expression_and_missing_labelled_photo(synth_folder, tmp_path):
    lab = tmp_path / "labels.csv"
    lab.write_text("file,expression,identity\na_colour.png,joy,p1\n")
    _assert_one_line_error(*_emofuse("faces", str(synth_folder), "--labels", str(lab)), "unknown expression 'joy'")
    lab.write_text("file,expression,identity\nzz.png,happiness,p1\n")
    _assert_one_line_error(*_emofuse("faces", str(synth_folder), "--labels", str(lab)), "are not in")


def test_split_needs_identities(synth_folder):
    _assert_one_line_error(*_emofuse("faces", str(synth_folder), "--split", "test"), "needs identities")
