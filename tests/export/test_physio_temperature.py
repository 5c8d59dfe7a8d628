"""Two temperatures for promptfusion_mm: the face alone (fitted on real photos) and any
physiology present (fitted on the cross-validation's held-out synthetic subjects)."""
from __future__ import annotations

import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.models import build_model, encoder_preset, example_inputs, load_checkpoint  # noqa: E402
from export.train import fit_physio_temperature  # noqa: E402


def _model():
    torch.manual_seed(0)
    return build_model("promptfusion_mm", n_subjects=3, encoder=encoder_preset("tiny")).eval()


def test_each_set_of_modalities_takes_its_own_temperature():
    m = _model()
    face, tfr, contact, level, present = example_inputs(m, batch=4)
    present[:] = 1.0
    present[0, 1:] = 0.0  # face only
    present[1, 2:] = 0.0  # face + pulse, no sensor
    present[3, 1] = 0.0  # face + contact rows and levels, no pulse
    x = dict(zip(m.input_names, (face, tfr, contact, level, present)))
    m.temperature[:] = torch.tensor([1.5, 2.0])
    m.temperature_pulse[:] = torch.tensor([3.0, 5.0])
    m.temperature_physio[:] = torch.tensor([4.0, 6.0])
    with torch.no_grad():
        v, a = m(**x)
        pv, pa = m.probabilities(**x)
    for i, (tv, ta) in enumerate([(1.5, 2.0), (3.0, 5.0), (4.0, 6.0), (4.0, 6.0)]):
        torch.testing.assert_close(pv[i], torch.softmax(v[i] / tv, -1))
        torch.testing.assert_close(pa[i], torch.softmax(a[i] / ta, -1))


def _windows(valence, arousal):
    return types.SimpleNamespace(valence_high=np.asarray(valence), arousal_high=np.asarray(arousal),
                                 subject=np.zeros(len(valence), np.int64))


def test_overconfident_held_out_predictions_get_a_temperature_above_one():
    """A recipe that says 0.99 and is right 70 % of the time must be softened; face-only windows
    and windows no fold held out do not take part."""
    rng = np.random.default_rng(0)
    n = 400
    truth = rng.integers(0, 2, n)
    right = rng.random(n) < 0.7
    guess = np.where(right, truth, 1 - truth)
    p = np.where(guess[:, None] == np.arange(2)[None], 0.99, 0.01)
    present = np.ones((n, 6), np.float32)
    present[:50, 1:] = 0.0  # face only: left out
    held = np.ones(n, bool)
    held[50:60] = False
    # Without the contact inputs the same windows are right only 60 % of the time.
    right_bare = rng.random(n) < 0.6
    guess_bare = np.where(right_bare, truth, 1 - truth)
    p_bare = np.where(guess_bare[:, None] == np.arange(2)[None], 0.99, 0.01)
    oof = {"valence": p, "arousal": p, "valence_no_contact": p_bare, "arousal_no_contact": p_bare,
           "held_out": held, "present": present}
    m = _model()
    out = fit_physio_temperature(m, oof, _windows(truth, truth))
    assert out is not None and out["contact"]["n"] == out["pulse"]["n"] == n - 60
    # The NLL-optimal temperature for 0.99-confident predictions right a share q of the time:
    # the logit gap log(99) divided by T equals log(q / (1 - q)).
    for case, q, buf in (("contact", right[60:].mean(), m.temperature_physio),
                         ("pulse", right_bare[60:].mean(), m.temperature_pulse)):
        expected = np.log(99.0) / np.log(q / (1 - q))
        assert out[case]["valence"] == pytest.approx(expected, rel=0.05), case
        assert float(buf[0]) == pytest.approx(out[case]["valence"])
    assert out["pulse"]["valence"] > out["contact"]["valence"] > 1.0
    # Without physiology in any held-out window both keep the face-only temperature.
    oof["present"] = np.zeros_like(present)
    m = _model()
    m.temperature[:] = torch.tensor([1.6, 2.1])
    assert fit_physio_temperature(m, oof, _windows(truth, truth)) == {
        "data": "held-out synthetic windows of the subject cross-validation (contact: as they are and with their "
                "contact rows removed; pulse: their contact inputs removed)"}
    torch.testing.assert_close(m.temperature_pulse, m.temperature)


def test_the_contact_temperature_also_covers_levels_without_rows():
    """The runtime's first ~54 s with a sensor (levels, no rows yet) use the contact temperature,
    so it is fitted on those held-out predictions too, pooled with the full-contact ones."""
    rng = np.random.default_rng(1)
    n = 300
    truth = rng.integers(0, 2, n)

    def confident(q):
        right = rng.random(n) < q
        guess = np.where(right, truth, 1 - truth)
        return np.where(guess[:, None] == np.arange(2)[None], 0.99, 0.01), right

    p_full, right_full = confident(0.9)
    p_levels, right_levels = confident(0.6)
    oof = {"valence": p_full, "arousal": p_full, "valence_no_contact": p_levels, "arousal_no_contact": p_levels,
           "valence_levels_only": p_levels, "arousal_levels_only": p_levels,
           "held_out": np.ones(n, bool), "present": np.ones((n, 6), np.float32)}
    m = _model()
    out = fit_physio_temperature(m, oof, _windows(truth, truth))
    assert out is not None and out["contact"]["n"] == 2 * n
    q = np.concatenate([right_full, right_levels]).mean()
    assert out["contact"]["valence"] == pytest.approx(np.log(99.0) / np.log(q / (1 - q)), rel=0.05)
    # Full-contact predictions alone would have asked for a much lower temperature.
    q_full = right_full.mean()
    assert out["contact"]["valence"] > 1.5 * np.log(99.0) / np.log(q_full / (1 - q_full))


def test_a_checkpoint_from_before_the_physiology_temperature_keeps_the_face_one(tmp_path):
    m = _model()
    m.temperature[:] = torch.tensor([1.6, 2.1])
    state = {k: v for k, v in m.state_dict().items() if k not in ("temperature_physio", "temperature_pulse")}
    from export.models import CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "model": "promptfusion_mm", "config": m.config, "state_dict": state},
               tmp_path / "old.pt")
    loaded, _ = load_checkpoint(tmp_path / "old.pt")
    torch.testing.assert_close(loaded.temperature_physio, torch.tensor([1.6, 2.1]))
    torch.testing.assert_close(loaded.temperature_pulse, torch.tensor([1.6, 2.1]))


def test_a_final_epoch_shows_each_synthetic_window_about_once():
    """The mixed final model: every synthetic window drawn ~once an epoch (as in the folds, whose
    best epoch count the final model takes), the photos by their weights."""
    from export.train import mixed_epoch

    w_still = np.random.default_rng(0).random(5000)
    weights, size = mixed_epoch(384, w_still, 6144)
    assert size == 384 + 6144 and weights.sum() == pytest.approx(1.0)
    assert weights[:384] * size == pytest.approx(np.ones(384))
    np.testing.assert_allclose(weights[384:] * size, 6144 * w_still / w_still.sum())
    _, size = mixed_epoch(384, w_still[:10], 6144)
    assert size == 384 + 80
