"""Training: metrics, splits without leakage, seeded reproducibility, the train CLI end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.models import CHECKPOINT_FORMAT, build_model, load_checkpoint  # noqa: E402
from export.train import (  # noqa: E402
    TrainConfig, classification_metrics, fit, load_dataset, macro_f1, parse_data_spec,
    validation_split, window_inputs,
)
from firmware_bridge.errors import BadInputError, ConfigError  # noqa: E402
from helpers import run_command  # noqa: E402


@pytest.fixture(scope="module")
def tiny(pytestconfig, tmp_path_factory):
    """The tiny synthetic dataset (4 subjects x 4 trials), cached across test runs when pytest's
    cache is on."""
    store = getattr(pytestconfig, "cache", None)
    cache = store.mkdir("emofuse-synth-tiny") if store is not None else tmp_path_factory.mktemp("synth")
    return load_dataset("synth:preset=tiny", cache_dir=cache), cache


def test_macro_f1_matches_hand_computed_values():
    y = np.array([0, 0, 1, 1, 1, 1])
    p = np.array([0, 1, 1, 1, 0, 1])
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 3, FP 1, FN 1 -> 0.75
    assert macro_f1(y, p) == pytest.approx(0.625)
    assert macro_f1(y, y) == 1.0
    # Always predicting one class on balanced data: accuracy 0.5, macro-F1 1/3.
    m = classification_metrics({"valence": [0, 1, 0, 1], "arousal": [1, 1, 0, 0]},
                               {"valence": [1, 1, 1, 1], "arousal": [1, 1, 0, 0]})
    assert m["valence_acc"] == 0.5 and m["valence_f1"] == pytest.approx(1 / 3)
    assert m["arousal_acc"] == 1.0 and m["arousal_f1"] == 1.0


def test_parse_data_spec():
    assert parse_data_spec("synth") == ("synth", {})
    assert parse_data_spec("synth:preset=tiny,subjects=6,seed=3") == (
        "synth", {"preset": "tiny", "subjects": 6, "seed": 3})
    assert parse_data_spec("deap:/data/deap") == ("deap", "/data/deap")
    assert parse_data_spec("runs/set.npz") == ("npz", "runs/set.npz")
    for bad in ("synth:subjects=many", "synth:colour=red", "deap", "imagenet:/x"):
        with pytest.raises(ConfigError):
            parse_data_spec(bad)


def test_validation_split_holds_out_whole_training_subjects():
    subjects = np.repeat(np.arange(10), 3)
    train_idx = np.nonzero(subjects >= 2)[0]  # subjects 0, 1 are the test fold
    fit_idx, val_idx = validation_split(subjects, train_idx, 0.25, seed=0)
    fit_s, val_s = set(subjects[fit_idx]), set(subjects[val_idx])
    assert len(val_s) == 2 and not fit_s & val_s
    assert fit_s | val_s == set(range(2, 10))
    assert np.array_equal(np.sort(np.concatenate([fit_idx, val_idx])), train_idx)
    with pytest.raises(ConfigError):
        validation_split(subjects, np.nonzero(subjects == 4)[0], 0.5, seed=0)


def test_window_inputs_have_the_contract_shapes_and_ranges(tiny):
    data, _ = tiny
    x = window_inputs(data, ("face_clip", "tfr", "contact", "contact_level"), idx=np.array([0, 3]))
    assert x["face_clip"].shape == (2, 8, 3, 32, 32) and x["face_clip"].dtype == np.float32
    assert 0.0 <= x["face_clip"].min() and x["face_clip"].max() <= 1.0
    # (T, H, W, C) uint8 -> (T, C, H, W) / 255, pixel for pixel.
    assert x["face_clip"][1, 5, 2, 7, 9] == pytest.approx(data.face_clip[3, 5, 7, 9, 2] / 255.0)
    assert x["tfr"].shape == (2, 1, 32, 32)
    assert x["contact"].shape == (2, 2, 1920) and x["contact_level"].shape == (2, 2)
    with pytest.raises(ConfigError):
        window_inputs(data, ("face_feats",))


def test_fit_is_seeded_and_learns_the_training_windows(tiny):
    data, _ = tiny
    cfg = TrainConfig(model="contact", epochs=12, batch_size=8, lr=1e-2, progress=False)
    x = window_inputs(data, ("contact", "contact_level"))
    t = {"valence": data.valence_high, "arousal": data.arousal_high, "subject": data.subject}
    weights = []
    for _ in range(2):
        torch.manual_seed(5)
        model = build_model("contact")
        hist = fit(model, x, t, cfg, torch.device("cpu"), seed=5)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert hist["train_loss"][-1] < 0.8 * hist["train_loss"][0]


def _cli(argv):
    from export.commands import train as train_cmd

    return run_command(train_cmd, argv)


@pytest.mark.parametrize("model", ["promptfusion", "mvp", "promptfusion_mm"])
def test_train_cli_end_to_end_on_the_tiny_dataset(tiny, tmp_path, model, capsys):
    data, cache = tiny
    out = tmp_path / model
    rc = _cli(["train", "--model", model, "--data", "synth:preset=tiny", "--protocol", "kfold-subject",
               "--folds", "2", "--epochs", "2", "--patience", "1", "--pretrain-steps", "3", "--batch-size", "4",
               "--out", str(out), "--cache-dir", str(cache), "--quiet"])
    assert rc == 0
    assert "valence" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    base = {"valence_acc", "valence_f1", "arousal_acc", "arousal_f1"}
    # promptfusion_mm's folds are also scored on the held-out windows with their contact inputs
    # removed (no sensor) and with their levels alone (a sensor's first ~54 s).
    cases = ("", "no_contact_", "levels_only_") if model == "promptfusion_mm" else ("",)
    assert set(report["summary"]) == {c + k for c in cases for k in base}
    assert len(report["folds"]) == 2
    tested = set()
    for fold in report["folds"]:
        test_s = set(fold["test_subjects"])
        assert not test_s & set(fold["val_subjects"])
        assert not test_s & set(fold["encoder_subjects"])  # the encoder never saw the test faces
        tested |= test_s
    assert tested == set(int(s) for s in np.unique(data.subject))

    model_obj, ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["model"] == model
    assert ckpt["labels"] == {"valence": ["low", "high"], "arousal": ["low", "high"]}
    assert ckpt["preprocessing"] == data.preprocessing.to_dict()
    assert ckpt["data"]["spec"] == "synth:preset=tiny" and ckpt["protocol"]["name"] == "kfold-subject"
    assert ckpt["metrics"]["cross_validation"].keys() == report["summary"].keys()
    assert (ckpt["face_encoder"] is not None) == (model == "mvp")
    if model == "promptfusion_mm":
        # The per-modality temperatures, fitted on the folds' held-out windows (contact as they
        # are; pulse with the contact inputs removed), are in the checkpoint and its record.
        fitted = ckpt["calibration"]["physiology"]
        # every tiny window carries contact rows and levels: each counts as it is and as levels only
        assert fitted["contact"]["n"] == 2 * len(data.subject)
        for case, buf in (("contact", model_obj.temperature_physio), ("pulse", model_obj.temperature_pulse)):
            if case in fitted:
                assert [float(t) for t in buf] == pytest.approx([fitted[case]["valence"], fitted[case]["arousal"]])
    assert (out / "face_encoder.pt").is_file()
    # The checkpoint rebuilds the trained model: same outputs as the saved weights give.
    from export.models import face_encoder_from_checkpoint
    from export.train import predict

    enc = face_encoder_from_checkpoint(ckpt) if model == "mvp" else None
    x = window_inputs(data, model_obj.input_names, enc, idx=np.arange(3))
    p = predict(model_obj, x)
    assert p["valence"].shape == (3, 2) and np.allclose(p["arousal"].sum(1), 1.0, atol=1e-6)


def test_train_cli_errors_are_emofuse_errors(tmp_path):
    with pytest.raises(ConfigError):
        _cli(["train", "--model", "rppg", "--data", "synth:colour=red", "--out", str(tmp_path)])
    with pytest.raises(BadInputError):
        _cli(["train", "--model", "rppg", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path)])
    with pytest.raises(ConfigError):
        _cli(["train", "--model", "rppg", "--folds", "1", "--out", str(tmp_path)])


def _write_deap(folder, n_subjects=4, trials=2, seed=0):
    """Tiny DEAP-format pickles: (trials, 40 channels, 8064) at 128 Hz with a pulse and a GSR."""
    import pickle

    rng = np.random.default_rng(seed)
    t = np.arange(8064) / 128.0
    for s in range(1, n_subjects + 1):
        data = rng.normal(0, 1, (trials, 40, 8064)).astype(np.float32)
        labels = np.zeros((trials, 4), np.float32)
        for k in range(trials):
            hr_hz = 1.0 + 0.3 * k
            data[k, 38] = np.sin(2 * np.pi * hr_hz * t) ** 8 * 100 + rng.normal(0, 1, t.size)
            data[k, 36] = 5000 + 200 * np.sin(2 * np.pi * 0.02 * t)
            labels[k] = [2.0 + 5 * (k % 2), 7.0 - 5 * (k % 2), 5.0, 5.0]
        with open(folder / f"s{s:02d}.dat", "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f, protocol=2)


def test_train_cli_reads_a_deap_folder(tmp_path, capsys):
    deap = tmp_path / "deap"
    deap.mkdir()
    _write_deap(deap)
    data = load_dataset(f"deap:{deap}")
    assert len(data) == 8 and set(np.unique(data.subject)) == {1, 2, 3, 4}
    assert np.array_equal(data.valence_high, np.tile([0, 1], 4))
    assert not data.face_present.any()  # no videos: face inputs are zero, and flagged
    rc = _cli(["train", "--model", "contact", "--data", f"deap:{deap}", "--folds", "2", "--epochs", "1",
               "--out", str(tmp_path / "out"), "--no-final", "--quiet"])
    assert rc == 0 and (tmp_path / "out" / "metrics.json").is_file()
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
    with pytest.raises(BadInputError):
        load_dataset(f"deap:{tmp_path / 'nowhere'}")
