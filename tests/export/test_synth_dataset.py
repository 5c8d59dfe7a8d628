"""The synthetic emotion dataset and the shared preprocessing (export.data)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge.face import crop_face
from edge.signals.roi import face_rgb
from edge.signals.rppg import rppg_clean, rppg_extract
from edge.signals.tfr import tfr_compute, tfr_frequencies, tfr_params
from export.data import preprocess as pp
from edge.preprocess import track_faces
from edge.spec import DEFAULT as PREPROCESSING
from export.data.preprocess import (
    EmotionWindows,
    Recording,
    Stream,
    kfold_subject_splits,
    loso_splits,
    window_shapes,
    windows_from_session,
)
from export.data.synth import SYNTH_PRESETS, SynthConfig, build_synth_dataset, synth_trials
from firmware_bridge.errors import BadInputError, ConfigError
from firmware_bridge.resample import resample_to_grid
from firmware_bridge.sim import SimConfig, synth_session

CONTRACT = {
    "face_clip": ((8, 32, 32, 3), np.uint8),
    "tfr": ((32, 32), np.float32),
    "contact": ((2, 1920), np.float32),
    "contact_level": ((2,), np.float32),
    "face_seq_crops": ((120, 32, 32, 3), np.uint8),
    "valence": ((), np.float32),
    "arousal": ((), np.float32),
    "valence_high": ((), np.int64),
    "arousal_high": ((), np.int64),
    "subject": ((), np.int64),
    "trial": ((), np.int64),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[EmotionWindows, object]:
    cache = tmp_path_factory.mktemp("synth-cache")
    return build_synth_dataset(preset="tiny", cache_dir=cache), cache


@pytest.fixture(scope="module")
def session():
    # A 62 s session like one trial of the dataset, with a known heart rate and SCRs.
    return synth_session(SimConfig(duration_s=62, seed=5, hr_bpm=72, frame_size=(128, 128), face_scale=0.55,
                                   face_center=(0.5, 0.5), scr_onsets_s=(10, 25, 40, 50), scr_amplitudes_us=0.6,
                                   eda_tonic_us=6.0, ppg_noise=0.02, expression_valence=0.5))


def test_tiny_dataset_has_the_contract_arrays_and_balanced_labels(tiny):
    data, _ = tiny
    assert len(data) == 16 and SYNTH_PRESETS["tiny"] == {"n_subjects": 4, "trials_per_subject": 4}
    for name, (shape, dtype) in CONTRACT.items():
        a = getattr(data, name)
        assert a.dtype == dtype and a.shape == (16, *shape), name
    assert np.array_equal(data.valence_high, (data.valence > 5).astype(np.int64))
    for s in range(4):
        mine = data.subject == s
        # One trial per valence x arousal quadrant for every subject.
        quads = set(zip(data.valence_high[mine].tolist(), data.arousal_high[mine].tolist()))
        assert quads == {(0, 0), (0, 1), (1, 0), (1, 1)}
        assert sorted(data.trial[mine].tolist()) == [0, 1, 2, 3]
    assert data.contact_present.all() and data.level_present.all()
    # Faces are found by the device's own tracker (edge.spec face.box "tracker"), not taken from
    # the generator. On the synthetic Monk tones up to 7 it finds every face; on 8-10 it misses
    # many (test_dark_synthetic_faces_are_found below, a known gap).
    tones = np.array([t["skin_tone"] for t in data.meta["truth"]])
    assert data.face_present[tones <= 7].all()
    assert data.preprocessing == PREPROCESSING
    assert data.meta["config"]["n_subjects"] == 4 and len(data.meta["truth"]) == 16
    assert np.all(np.isfinite(data.tfr)) and np.all(np.isfinite(data.contact))
    # z-scored rows, crops that are real images.
    assert np.allclose(data.contact.mean(axis=2), 0, atol=1e-4) and np.allclose(data.contact.std(axis=2), 1, atol=1e-3)
    assert 60 < data.face_clip.mean() < 200 and data.face_seq_crops.std() > 20


def test_windows_recover_the_generators_truth(tiny):
    data, _ = tiny
    truth = data.meta["truth"]
    hr_true = np.array([t["hr_bpm"] for t in truth])
    # Contact HR level vs the programmed mean rate (HRV and a slow drift around it).
    assert np.abs(100 * data.contact_level[:, 0] - hr_true).max() < 4.0
    # The rPPG image's strongest row sits at the heart rate (where the face was found: elsewhere
    # the image is blank, as on the device).
    f = tfr_frequencies((32, 32), 0.7, 3.5)
    tfr_hr = 60 * f[np.argmax(data.tfr.mean(axis=2), axis=1)]
    seen = data.face_present
    assert seen.sum() >= 8
    assert np.median(np.abs(tfr_hr - hr_true)[seen]) < 5.0
    tonic = np.array([t["eda_tonic_us"] for t in truth])
    assert np.all(np.abs(10 * data.contact_level[:, 1] / tonic - 1) < 0.25)


def test_labels_drive_face_and_physiology_as_documented():
    trials = synth_trials(SynthConfig(n_subjects=12))
    v = np.array([t.valence for t in trials])
    a = np.array([t.arousal for t in trials])
    s = np.array([t.subject for t in trials])

    def within(key):
        x = np.array([t.truth[key] for t in trials])
        return x - np.array([x[s == i].mean() for i in s])

    # Valence mostly in the face, arousal mostly in the body; cross-talk small.
    assert np.corrcoef(within("expression_valence"), v)[0, 1] > 0.6
    assert abs(np.corrcoef(within("expression_valence"), a)[0, 1]) < 0.25
    assert np.corrcoef(within("hr_bpm"), a)[0, 1] > 0.6
    assert abs(np.corrcoef(within("hr_bpm"), v)[0, 1]) < 0.35
    assert np.corrcoef(within("hrv_sdnn_ms"), a)[0, 1] < -0.5
    assert np.corrcoef(within("scr_in_window"), a)[0, 1] > 0.3
    # Subjects differ: resting heart rate spread across subjects exceeds the arousal effect
    # within a subject (an idiosyncrasy that does not transfer across subjects).
    hr = np.array([t.truth["hr_bpm"] for t in trials])
    subject_means = np.array([hr[s == i].mean() for i in range(12)])
    assert subject_means.std() > 4.0
    looks = {t.sim.face_appearance for t in trials}
    assert len(looks) == 12


@pytest.mark.xfail(strict=True, reason="faces come from the device's tracker, which now finds all four subjects of "
                                       "the tiny preset (generator 4), but a direction learnt on three subjects' mean "
                                       "faces sorts 12 of 16 trials (13 needed): the tone and exposure differences "
                                       "between subjects outweigh the expression in a pixel mean; issue 14")
def test_faces_show_valence_within_a_subject(tiny):
    data, _ = tiny
    # Mean face over the window, minus the subject's mean face: the high-minus-low valence
    # direction learned on three subjects sorts the fourth one's trials.
    # Subjects whose face the device's tracker finds in every window (see above).
    keep = np.isin(data.subject, [u for u in np.unique(data.subject) if data.face_present[data.subject == u].all()])
    assert np.unique(data.subject[keep]).size >= 2
    subject, valence_high = data.subject[keep], data.valence_high[keep]
    faces = data.face_seq_crops[keep].astype(np.float64).mean(axis=(1, 4)).reshape(int(keep.sum()), -1)
    faces -= np.stack([faces[subject == s].mean(axis=0) for s in subject])
    # Skin tones scale a face's contrast: compare expressions on each subject's own scale.
    faces /= np.stack([faces[subject == s].std() for s in subject])[:, None]
    correct = 0
    for train, test in loso_splits(subject):
        hi, lo = train[valence_high[train] == 1], train[valence_high[train] == 0]
        direction = faces[hi].mean(axis=0) - faces[lo].mean(axis=0)
        score = faces[test] @ direction
        correct += np.sum((score > 0) == (valence_high[test] == 1))
    assert correct >= 0.8 * keep.sum()  # 13 of 16 before the trackers' misses


def test_build_is_deterministic_cached_and_worker_independent(tiny, tmp_path):
    data, cache = tiny
    files = list(cache.glob("synth-*.npz"))
    assert len(files) == 1
    again = build_synth_dataset(preset="tiny", cache_dir=cache)  # from the cache
    for name in pp.ARRAY_NAMES:
        assert np.array_equal(getattr(again, name), getattr(data, name)), name
    cfg = SynthConfig(n_subjects=2, trials_per_subject=1, seed=3)
    one = build_synth_dataset(config=cfg, workers=1)
    two = build_synth_dataset(config=cfg, workers=2)
    for name in pp.ARRAY_NAMES:
        assert np.array_equal(getattr(one, name), getattr(two, name)), name
    other = build_synth_dataset(config=SynthConfig(n_subjects=2, trials_per_subject=1, seed=4))
    assert not np.array_equal(one.face_clip, other.face_clip)
    assert one.meta["seeds"] == {"seed": 3}


def test_windows_use_exactly_the_runtime_kernels(session):
    p = PREPROCESSING
    w = windows_from_session(session, p)
    # Rebuild the TFR and two crops by hand from the edge functions: faces from the device's
    # tracker started 2 s (track_warmup_s) before the 10 s pulse window.
    t_end, fps = 62.0, 30.0
    span = np.nonzero((session.frame_times_s >= t_end - 12) & (session.frame_times_s < t_end))[0]
    boxes = dict(zip(span.tolist(), track_faces((session.frame(i) for i in span), p)))
    idx = np.nonzero((session.frame_times_s >= t_end - 10 - 1 / fps - 1e-9) & (session.frame_times_s < t_end))[0]
    rgb = np.array([face_rgb(session.frame(i), boxes[i], skin=p.rppg.skin, edges=p.rppg.roi_edges) for i in idx])
    grid, valid = resample_to_grid(session.frame_times_s[idx], rgb, fps, t_end - 10, 300)
    assert valid.all()
    pulse = rppg_clean(rppg_extract(grid, fps, "pos", 1.6), fps, lam=100.0, lo=0.7, hi=3.5, order=4)
    assert np.array_equal(w.tfr, tfr_compute(pulse, fps, **p.tfr.kwargs()))
    last = len(session) - 1
    assert np.array_equal(w.face_clip[-1], crop_face(session.frame(last), boxes[last], 32, 0.15))
    assert np.array_equal(w.face_clip[0], crop_face(session.frame(last - 56), boxes[last - 56], 32, 0.15))
    assert np.array_equal(w.face_seq_crops[-2], crop_face(session.frame(last - 15), boxes[last - 15]))
    # Sequence crops before the tracked span: a second tracker over those frames in order.
    seq_t = t_end - 1 / fps - (119 - np.arange(120)) / 2.0
    seq_idx = [int(np.searchsorted(session.frame_times_s, x + 1e-6, side="right") - 1) for x in seq_t]
    early = [i for i in seq_idx if i < span[0]]
    early_boxes = track_faces((session.frame(i) for i in early), p)
    assert np.array_equal(w.face_seq_crops[len(early) - 1], crop_face(session.frame(early[-1]), early_boxes[-1]))
    y, ok = resample_to_grid(session.eda.t_s, session.eda.values, 32.0, 2.0, 1920, antialias=True)
    assert ok.all()
    assert np.allclose(w.contact[1], (y - y.mean()) / y.std(), atol=1e-5)
    assert tfr_params(**p.tfr.kwargs()) == p.tfr.kwargs()
    assert window_shapes(p)["face_seq_crops"][0] == (120, 32, 32, 3)


def test_missing_sources_give_zeros_and_flags(session):
    # Contact only, the PPG with a 4 s hole: no face; the hole is zero; HR still measured.
    ppg = np.array(session.ppg.values)
    t = session.ppg.t_s
    ppg[(t > 20) & (t < 24)] = np.nan
    rec = Recording(ppg=Stream(t, ppg), eda=Stream(session.eda.t_s, session.eda.values, "uS"), t_end_s=62.0)
    w = windows_from_session(rec, PREPROCESSING)
    assert not w.face_present and not w.face_clip.any() and not w.tfr.any() and not w.face_seq_crops.any()
    assert w.contact_present.tolist() == [True, True]
    grid_t = 2.0 + np.arange(1920) / 32.0
    assert np.all(w.contact[0][(grid_t > 20.2) & (grid_t < 23.8)] == 0)
    assert 100 * w.contact_level[0] == pytest.approx(session.mean_hr_bpm(2, 62), abs=2.0)
    # A 20 s hole leaves a third of the row empty: below contact.min_valid_fraction (0.9) the
    # row is absent (zeros, flag down), as the model was never trained on such a row.
    ppg[(t > 20) & (t < 40)] = np.nan
    rec = Recording(ppg=Stream(t, ppg), eda=Stream(session.eda.t_s, session.eda.values, "uS"), t_end_s=62.0)
    w = windows_from_session(rec, PREPROCESSING)
    assert w.contact_present.tolist() == [False, True] and not w.contact[0].any()
    # No PPG: the heart-rate level comes from the ECG; EDA not in uS: no EDA level.
    rec = Recording(ecg=Stream(session.ecg.t_s, session.ecg.values), eda=Stream(session.eda.t_s, session.eda.values),
                    t_end_s=62.0)
    w = windows_from_session(rec, PREPROCESSING)
    assert w.contact_present.tolist() == [False, True] and not w.contact[0].any()
    assert w.level_present.tolist() == [True, False]
    assert 100 * w.contact_level[0] == pytest.approx(session.mean_hr_bpm(2, 62), abs=1.5)
    # A face that is never found (a camera facing a blank wall): crops empty, flag down.
    blank = np.full((120, 160, 3), 90, np.uint8)
    rec = Recording(frame_times_s=session.frame_times_s, frame=lambda i: blank, t_end_s=62.0)
    w = windows_from_session(rec, PREPROCESSING)
    assert not w.face_present and not w.face_clip.any()
    with pytest.raises(BadInputError):
        windows_from_session(Recording(), PREPROCESSING)


def test_splits_are_subject_disjoint_and_cover_everything():
    subjects = np.repeat(np.arange(7), 3)
    loso = loso_splits(subjects)
    assert len(loso) == 7
    for i, (train, test) in enumerate(loso):
        assert set(subjects[test]) == {i} and i not in set(subjects[train])
        assert len(train) + len(test) == 21
    folds = kfold_subject_splits(subjects, 3, seed=1)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(21))
    for train, test in folds:
        assert not set(subjects[train]) & set(subjects[test])
        assert len(set(subjects[test])) in (2, 3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, kfold_subject_splits(subjects, 3, seed=1)))
    with pytest.raises(ConfigError):
        kfold_subject_splits(subjects, 8)
    with pytest.raises(BadInputError):
        loso_splits(np.zeros(5))


def test_save_load_subset_and_corrupt_files(tiny, tmp_path):
    data, _ = tiny
    path = data.save(tmp_path / "tiny")
    assert path.name == "tiny.npz"
    back = EmotionWindows.load(path)
    assert back.meta == json.loads(json.dumps(data.meta))
    assert all(np.array_equal(getattr(back, n), getattr(data, n)) for n in pp.ARRAY_NAMES)
    sub = data.subset(data.subject == 2)
    assert len(sub) == 4 and set(sub.subject.tolist()) == {2}
    assert np.array_equal(sub.face_clip, data.face_clip[data.subject == 2])
    with pytest.raises(BadInputError):
        data.subset([99])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(BadInputError, match="bad.npz"):
        EmotionWindows.load(bad)
    with pytest.raises(BadInputError, match="missing.npz"):
        EmotionWindows.load(tmp_path / "missing.npz")
    partial = tmp_path / "partial.npz"
    np.savez(partial, tfr=data.tfr)
    with pytest.raises(BadInputError, match="partial.npz.*missing"):
        EmotionWindows.load(partial)
    arrays = data.arrays()
    arrays["valence_high"] = 1 - arrays["valence_high"]
    with pytest.raises(BadInputError, match="valence_high"):
        EmotionWindows(**arrays, meta=data.meta)
    arrays = data.arrays()
    arrays["tfr"] = arrays["tfr"].astype(np.float64)
    with pytest.raises(BadInputError, match="tfr"):
        EmotionWindows(**arrays, meta=data.meta)
    with pytest.raises(ConfigError):
        build_synth_dataset(preset="huge")


# -- identities and skin tones ------------------------------------------------------------------

_FACES = __import__("tests.helpers", fromlist=["SHARED_DATA"]).SHARED_DATA / "faces"


def test_subjects_get_tones_spread_over_the_scale_and_recorded(tiny):
    data, _ = tiny
    cfg = SynthConfig(n_subjects=24)
    trials = synth_trials(cfg)
    tones = [t.sim.skin_tone for t in trials if t.trial == 0]
    # Every Monk tone, each 2-3 times among 24 subjects; the astronaut without a faces folder.
    assert sorted(set(tones)) == list(range(1, 11)) and max(np.bincount(tones)) <= 3
    assert all(t.sim.faces is None and t.sim.identity is None for t in trials)
    subjects = data.meta["subjects"]
    assert [s["skin_tone"] for s in subjects] == [t.sim.skin_tone for t in synth_trials(SynthConfig(
        n_subjects=4, trials_per_subject=4)) if t.trial == 0]
    assert all(s["identity"] == "astronaut" for s in subjects)
    assert all(t["skin_tone"] == subjects[t["subject"]]["skin_tone"] for t in data.meta["truth"])
    # Deterministic by seed, and another seed rotates the tones.
    assert tones == [t.sim.skin_tone for t in synth_trials(cfg) if t.trial == 0]
    other = [t.sim.skin_tone for t in synth_trials(SynthConfig(n_subjects=24, seed=1)) if t.trial == 0]
    assert sorted(set(other)) == list(range(1, 11))


@pytest.mark.skipif(not (_FACES / "labels.csv").is_file(), reason="../shared/data/faces is absent")
def test_subjects_get_their_own_identity_from_a_faces_folder(tmp_path):
    cfg = SynthConfig(n_subjects=24, faces=str(_FACES))
    trials = synth_trials(cfg)
    first = [t for t in trials if t.trial == 0]
    assert len({t.sim.identity for t in first}) == 24
    assert all(t.sim.identity == first[t.subject].sim.identity for t in trials)
    assert [t.sim.identity for t in synth_trials(cfg) if t.trial == 0] == [t.sim.identity for t in first]
    # No subject is a person of the real-face test split (those photos score the models).
    from edge.affect import identity_split
    from firmware_bridge.sim.faces import face_library

    lib = face_library(str(_FACES))
    assert all(identity_split(lib.entries[t.sim.identity][1]) != "test" for t in first)
    many = synth_trials(SynthConfig(n_subjects=400, trials_per_subject=1, faces=str(_FACES)))
    assert not any(identity_split(lib.entries[t.sim.identity][1]) == "test" for t in many)
    data = build_synth_dataset(config=SynthConfig(n_subjects=2, trials_per_subject=1, faces=str(_FACES)))
    subjects = data.meta["subjects"]
    assert subjects[0]["identity"] != subjects[1]["identity"] and subjects[0]["photo"].endswith(".jpg")
    assert data.meta["config"]["faces"] == str(_FACES)
    # Two identities give two different faces in the windows.
    diff = np.abs(data.face_clip[0].astype(np.int16) - data.face_clip[1].astype(np.int16)).mean()
    assert diff > 10.0


@pytest.mark.slow
def test_dark_synthetic_faces_are_found():
    # The default record's tracker retries a detection that found nothing on a CLAHE image
    # (face.tracker.contrast, edge.face): without it Monk 10 is found in no frame.
    from firmware_bridge.sim import synth_session

    for tone in (8, 9, 10):
        s = synth_session(duration_s=6, seed=2, skin_tone=tone)
        boxes = track_faces((s.frame(i) for i in range(180)), PREPROCESSING)
        assert sum(b is not None for b in boxes) >= 170, tone



@pytest.mark.slow
@pytest.mark.skipif(not (_FACES / "labels.csv").is_file(), reason="../shared/data/faces is absent")
def test_every_skin_tone_of_the_corpus_gives_the_model_a_face_and_a_pulse():
    """The default corpus's layout (SynthConfig defaults, real identities): one subject per Monk
    tone, each window cut by the device's tracker and pulse rules. Before the renderer's camera
    exposure and the adaptive skin rule, 10 of 24 subjects had no face or pulse in any window
    (tones 2, 7-10): the model trained on absent inputs without anyone noticing."""
    data = build_synth_dataset(config=SynthConfig(n_subjects=10, trials_per_subject=1, faces=str(_FACES)))
    cov = data.meta["coverage"]
    tones = sorted(int(s["skin_tone"]) for s in data.meta["subjects"])
    assert tones == list(range(1, 11))
    assert cov["subjects_without_face"] == [], cov
    assert cov["face"] >= 0.9, cov
    # The pulse image also passes the heart-rate gate (rppg.tfr_min_quality): at the corpus's
    # 70 px faces the gate drops the windows whose rate it cannot trust (8 of 10 kept when
    # written), which is what the device does; most windows must still carry a pulse.
    assert cov["pulse"] >= 0.7, cov
    assert set(cov["by_skin_tone"]) == {str(k) for k in range(1, 11)}
