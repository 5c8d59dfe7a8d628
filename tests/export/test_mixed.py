"""promptfusion_mm (every modality, none required), still photos mixed into training, and
temperature scaling."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.preprocess import MODALITIES, modality_flags_batch  # noqa: E402
from edge.spec import DEFAULT  # noqa: E402
from export.mixed import LazyRows, StillSet, fit_temperature, mix_inputs, still_inputs  # noqa: E402
from export.models import build_model, encoder_preset, example_inputs  # noqa: E402


def _model():
    torch.manual_seed(0)
    return build_model("promptfusion_mm", n_subjects=3, encoder=encoder_preset("tiny")).eval()


def test_an_absent_input_is_ignored_whatever_its_values():
    m = _model()
    face, tfr, contact, level, present = example_inputs(m, batch=2)
    present[:, 1:] = 0.0  # face only
    with torch.no_grad():
        a = m(face, tfr, contact, level, present)
        b = m(face, 5 * torch.randn_like(tfr), -contact, level + 3, present)
        c = m(face, tfr, contact, level, torch.ones_like(present))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    assert not torch.allclose(a[0], c[0])  # and a present one is used


def test_modality_dropout_never_drops_everything():
    m = _model()
    m.drops = (0.9, 0.9, 0.9)
    m.contact_drops = (0.0, 0.0)  # the groups alone (the patterns inside the contact group: below)
    torch.manual_seed(0)
    present = torch.ones(4000, 6)
    out = m.modality_dropout(present)
    left = out[:, 0] + out[:, 1] + out[:, 2:].amax(dim=1)
    assert bool((left > 0).all())
    # A draw that would drop every group keeps them all, so the face goes with probability
    # 0.9 * (1 - 0.9 * 0.9) = 0.171.
    assert float((out[:, 0] == 0).float().mean()) == pytest.approx(0.171, abs=0.02)
    assert bool(((out[:, 2:] == 0).all(dim=1) | (out[:, 2:] == 1).all(dim=1)).all())


def test_modality_dropout_makes_the_contact_patterns_the_runtime_gives():
    """Levels without rows (a sensor's first ~54 s: levels after 10 s, rows after 54 s) and one
    channel without the other (a PPG-only or EDA-only sensor); never rows without their level."""
    m = _model()
    m.drops = (0.0, 0.0, 0.4)
    torch.manual_seed(0)
    out = m.modality_dropout(torch.ones(20000, 6))
    rows, levels = out[:, 2:4], out[:, 4:6]
    kept = levels.amax(dim=1) > 0
    levels_only = kept & (rows.amax(dim=1) == 0)
    # P(contact kept) = 0.6; within it the rows go with 0.35, each channel with 0.15.
    assert float(kept.float().mean()) == pytest.approx(0.6 * (1 - 0.15**2), abs=0.02)
    assert float(levels_only.float().mean()) == pytest.approx(0.6 * 0.35 * (1 - 0.15**2), abs=0.02)
    assert bool((rows <= levels).all())  # a row never without its own level
    one_channel = (levels.sum(dim=1) == 1)
    assert float(one_channel.float().mean()) == pytest.approx(0.6 * 2 * 0.15 * 0.85, abs=0.02)
    assert bool((out[:, :2] == 1).all())


def test_missing_targets_and_photo_subjects_stay_out_of_the_losses():
    m = _model().train()
    x = dict(zip(m.input_names, example_inputs(m, batch=4)))
    t = {"valence": torch.tensor([1, 0, -1, -1]), "arousal": torch.tensor([-1, -1, -1, -1]),
         "subject": torch.tensor([0, 1, -1, -1])}
    loss, parts, _ = m.training_loss(x, t)
    assert torch.isfinite(loss) and "valence" in parts and "arousal" not in parts
    assert "subject_adv" in parts  # two photos left out, two subjects remain
    t["subject"] = torch.tensor([0, -1, -1, -1])
    _, parts, _ = m.training_loss(x, t)
    assert "subject_adv" not in parts


def test_temperature_is_recovered_and_travels_with_the_model():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(4000, 2))
    p = np.exp(z / 2.0) / np.exp(z / 2.0).sum(axis=1, keepdims=True)  # the true temperature is 2
    y = (rng.random(4000) < p[:, 1]).astype(np.int64)
    assert fit_temperature(z, y) == pytest.approx(2.0, rel=0.1)
    assert fit_temperature(z, np.full(4000, -1)) == 1.0
    m = _model()
    m.temperature[0] = 2.0
    x = example_inputs(m, batch=3)
    x[-1][:, 1:] = 0.0  # face only: the photos' temperature (physiology has its own, test_physio_temperature)
    with torch.no_grad():
        v, _ = m(*x)
        pv, _ = m.export_forward(*x)
    torch.testing.assert_close(pv, torch.softmax(v / 2.0, dim=-1))


def test_still_inputs_are_face_only_clips_of_the_photo():
    p = DEFAULT
    s = p.face.crop_size
    crops = np.random.default_rng(1).integers(1, 255, size=(5, s, s, 3), dtype=np.uint8)
    stills = StillSet(crops, np.array([1, 0, -1, 1, 0]), np.array([-1, 0, 1, 0, -1]), np.array(list("abcde")),
                      np.array(["fit"] * 5))
    x = still_inputs(stills, ("face_clip", "tfr", "contact", "contact_level", "present"), p)
    clip = x["face_clip"][np.array([3, 1])]
    assert clip.shape == (2, p.face.clip_frames, 3, s, s) and clip.dtype == np.float32
    np.testing.assert_allclose(clip[0, -1], crops[3].transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert np.array_equal(clip[0, 0], clip[0, -1])
    flags = x["present"][np.arange(5)]
    assert flags.tolist() == [[1.0, 0, 0, 0, 0, 0]] * 5
    # The same flags the device derives from such a window's content.
    uint8_clips = np.repeat(crops[:, None], p.face.clip_frames, axis=1)
    derived = modality_flags_batch(uint8_clips, np.asarray(x["tfr"][np.arange(5)])[:, 0],
                                   np.zeros((5, 2), bool), np.zeros((5, 2), bool))
    np.testing.assert_array_equal(derived, flags)
    assert not x["contact"][np.arange(5)].any() and MODALITIES[0] == "face"


def test_mixed_inputs_keep_the_order_asked_for():
    a = {"x": np.arange(5, dtype=float)[:, None]}
    b = {"x": LazyRows(3, lambda i: (100 + i)[:, None].astype(float))}
    m = mix_inputs(a, b)
    assert len(m["x"]) == 8
    assert m["x"][np.array([6, 0, 5, 2, 7])].ravel().tolist() == [101, 0, 100, 2, 102]
