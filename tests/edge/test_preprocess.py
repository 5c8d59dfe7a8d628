"""edge.preprocess: the torch-free window preprocessing that training and the device share.

The central property: a synthetic session replayed through the streaming pipeline (camera and
sensors as sources, ring buffers, threads) yields exactly the tensors that training cuts from
the same session with ``export.data.preprocess.windows_from_session`` (tolerance 1e-6).
"""
from __future__ import annotations

import numpy as np
import pytest

from edge import preprocess as ep
from firmware_bridge.errors import BadInputError, ConfigError

from edge.spec import DEFAULT as P  # noqa: E402


def _session(duration_s=30.0, seed=3, **kw):
    from firmware_bridge.sim import synth_session

    return synth_session(duration_s=duration_s, seed=seed, frame_size=(128, 128), face_scale=0.55, **kw)


def test_runtime_tensors_equal_training_tensors():
    """One recording through the device path (streaming pipeline, its live tracker) and the
    training path (edge.windows.windows_from_session, the same tracker run offline)."""
    from edge.pipeline import Pipeline
    from edge.windows import windows_from_session
    from firmware_bridge.cameras.sim import SimCameraSource
    from firmware_bridge.sensors import SimSensorSource

    session = _session(duration_s=16.0)
    pipe = Pipeline(SimCameraSource.from_session(session), [SimSensorSource(session, chunk_s=0.05)], bundle=None,
                    preprocessing=P, keep_windows=True)
    results = list(pipe.results())
    # The window ending at 12 s: the offline tracker starts 12 s (pulse window + track_warmup_s)
    # before it, at the recording's first frame, as the device's did: identical tensors.
    first = next(r for r in results if r.t_s == pytest.approx(12.0))
    train = windows_from_session(session, P, t_end_s=12.0)
    runtime = first.window
    for name in ("face_clip", "face_seq_crops"):
        assert np.array_equal(getattr(runtime, name), getattr(train, name)), name
    for name in ("tfr", "contact", "contact_level"):
        a, b = getattr(runtime, name), getattr(train, name)
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32
        assert np.max(np.abs(a.astype(np.float64) - b)) <= 1e-6, name
    # 12 s into a 60 s window: the long face sequence and the contact rows are not full yet,
    # on both sides alike; the clip, the pulse and the ECG heart-rate level are.
    assert runtime.face_present == train.face_present
    assert np.array_equal(runtime.contact_present, train.contact_present)
    assert np.array_equal(runtime.level_present, train.level_present) and runtime.level_present[0]
    assert runtime.tfr.std() > 0.5 and runtime.face_clip.reshape(8, -1).any(axis=1).all()
    np.testing.assert_array_equal(ep.modality_flags(runtime), ep.modality_flags(train))
    # The last window: the device's tracker has run 16 s, the offline one 12 s. Both hold the
    # face, but each rests wherever its dead band (5 % of the face) let it settle, so the crops
    # differ by about a pixel's shift (8 grey levels on average here) and the pulse images' noise
    # floor differs (correlation 0.43 here) around the same heart-rate row.
    last = results[-1]
    assert last.t_s == pytest.approx(16.0)
    train_last = windows_from_session(session, P, t_end_s=16.0)
    diff = np.abs(last.window.face_clip.astype(np.int16) - train_last.face_clip.astype(np.int16))
    assert diff.mean() < 12.0
    # The pulse's row (the heart rate) is the same; the noise floor around it is not.
    rows = [int(np.argmax(w.tfr.mean(axis=1))) for w in (last.window, train_last)]
    assert abs(rows[0] - rows[1]) <= 1
    assert np.max(np.abs(last.window.contact.astype(np.float64) - train_last.contact)) <= 1e-6


def test_face_plan_picks_the_latest_recent_frame():
    t = np.arange(0, 12.0, 1 / 30.0)
    plan = ep.face_plan(t, 12.0, P)
    # The last clip slot is the window's last frame; slots are 8 frames apart.
    assert plan.clip_idx[-1] == t.size - 1 and np.all(np.diff(plan.clip_idx) == 8)
    assert plan.seq_idx[-1] == t.size - 1 and np.all(np.diff(plan.seq_idx[plan.seq_idx >= 0]) == 15)
    # 60 s of sequence slots on a 12 s video: the early ones have no frame.
    assert (plan.seq_idx == -1).sum() == 120 - 24
    assert plan.n_pulse == 300 and plan.t_grid0_s == pytest.approx(2.0)
    assert t[plan.pulse_idx[0]] < plan.t_grid0_s <= t[plan.pulse_idx[1]] and t[plan.pulse_idx[-1]] < 12.0
    # One dropped frame: the slot keeps the frame before the drop; a stall of 3 frames: none.
    dropped = np.delete(t, [t.size - 9])
    plan = ep.face_plan(dropped, 12.0, P, period_s=1 / 30.0)
    assert plan.clip_idx[-2] == dropped.size - 9
    stalled = np.delete(t, [t.size - 11, t.size - 10, t.size - 9])
    assert ep.face_plan(stalled, 12.0, P, period_s=1 / 30.0).clip_idx[-2] == -1
    with pytest.raises(BadInputError):
        ep.face_plan(t[::-1], 12.0, P)


def test_pulse_window_recovers_the_heart_rate_and_refuses_no_face():
    from edge.signals.hr import heart_rate

    fps, hr_hz = 30.0, 1.25
    t = np.arange(0, 10.2, 1 / fps) - 0.1
    pulse_like = 1 + 0.004 * np.sin(2 * np.pi * hr_hz * t)
    rgb = np.column_stack([150 * pulse_like ** 0.3, 110 * pulse_like ** -1.0, 90 * pulse_like ** 0.1])
    pw = ep.pulse_from_rgb(t, rgb, 0.0, P)
    assert pw.ok and pw.valid_fraction == 1.0 and pw.pulse.shape == (300,)
    assert heart_rate(pw.pulse, fps).hr_bpm == pytest.approx(60 * hr_hz, abs=1.0)
    image = ep.tfr_image(pw.pulse, P)
    assert image.shape == (32, 32) and image.dtype == np.float32
    # The image's brightest row sits at the pulse frequency.
    freqs = np.linspace(0.7, 3.5, 32)
    assert freqs[int(np.argmax(image.mean(axis=1)))] == pytest.approx(hr_hz, abs=0.1)
    rgb[: rgb.shape[0] * 6 // 10] = np.nan  # no face for 60 % of the window
    assert not ep.pulse_from_rgb(t, rgb, 0.0, P).ok


def test_contact_inputs_zscore_and_levels():
    rate, n = 32.0, 1920
    t = np.arange(n) / rate
    ppg = np.sin(2 * np.pi * 1.2 * t) + 0.1 * np.sin(2 * np.pi * 0.1 * t)  # 72 bpm
    eda = 4.0 + 0.2 * np.sin(2 * np.pi * 0.01 * t)
    valid = np.ones(n, bool)
    ci = ep.contact_inputs({"ppg": (ppg, valid), "eda": (eda, valid)}, P, eda_units="uS")
    assert ci.contact.dtype == np.float32 and ci.contact.shape == (2, n)
    assert np.allclose(ci.contact.mean(axis=1), 0, atol=1e-5) and np.allclose(ci.contact.std(axis=1), 1, atol=1e-3)
    assert ci.level_present.all() and ci.ppg_hr_bpm == pytest.approx(72.0, abs=1.0)
    assert ci.contact_level[0] == pytest.approx(ci.ppg_hr_bpm / 100) and ci.eda_tonic_us == pytest.approx(4.0, abs=0.1)
    # A half-missing EDA row is absent; raw units give no EDA level; ECG fills in for the PPG.
    holey = valid.copy()
    holey[: n * 6 // 10] = False
    ci = ep.contact_inputs({"eda": (np.where(holey, eda, np.nan), holey)}, P, eda_units="uS", ecg_hr_bpm=61.0)
    assert not ci.contact_present.any() and not ci.contact[1].any()
    assert ci.level_present.tolist() == [True, False] and ci.contact_level[0] == pytest.approx(0.61)
    assert not ep.contact_inputs({"eda": (eda, valid)}, P, eda_units="a.u.").level_present[1]
    with pytest.raises(BadInputError):
        ep.contact_inputs({"ppg": (ppg[:10], valid[:10])}, P)


def test_model_feeds_have_the_contract_layouts():
    rng = np.random.default_rng(0)
    w = ep.Window(face_clip=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
                  tfr=rng.normal(size=(32, 32)).astype(np.float32), contact=np.zeros((2, 1920), np.float32),
                  contact_level=np.array([0.7, 0.5], np.float32),
                  face_seq_crops=np.zeros((120, 32, 32, 3), np.uint8), face_present=True,
                  contact_present=np.ones(2, bool), level_present=np.ones(2, bool))
    feeds = ep.model_feeds(w, ["face_clip", "tfr", "contact", "contact_level", "face_feats"],
                           face_feats=np.ones((120, 64), np.float32))
    assert {k: v.shape for k, v in feeds.items()} == {
        "face_clip": (1, 8, 3, 32, 32), "tfr": (1, 1, 32, 32), "contact": (1, 2, 1920), "contact_level": (1, 2),
        "face_feats": (1, 120, 64)}
    assert all(v.dtype == np.float32 for v in feeds.values())
    # Channel-first RGB in [0, 1]: pixel (y=3, x=5) of frame 2, green.
    assert feeds["face_clip"][0, 2, 1, 3, 5] == pytest.approx(w.face_clip[2, 3, 5, 1] / 255.0)
    with pytest.raises(ConfigError):
        ep.model_feeds(w, ["face_feats"])
    with pytest.raises(ConfigError):
        ep.model_feeds(w, ["audio"])


def test_check_preprocessing_names_the_missing_key():
    from edge.spec import Preprocessing

    d = P.to_dict()
    del d["rppg"]["pulse_window_s"]
    with pytest.raises(ConfigError, match="rppg.pulse_window_s"):
        Preprocessing.from_dict(d)
    # The functions take the parsed record only: a plain dict is refused with the way out.
    with pytest.raises(ConfigError, match="from_dict"):
        ep.check_preprocessing(P.to_dict())
    with pytest.raises(ConfigError):
        ep.check_preprocessing([1, 2])

