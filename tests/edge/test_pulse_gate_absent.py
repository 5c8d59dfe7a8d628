"""A pulse the heart-rate gate calls noise is an absent modality (issue 14: "pulse quality too
low" is a missing input), by one rule in edge.preprocess.face_inputs that training windows and
the device share: ``rppg.tfr_min_quality`` of the preprocessing record."""
from __future__ import annotations

import numpy as np
import pytest

from edge.pipeline import Pipeline
from edge.preprocess import MODALITIES, modality_flags
from edge.results import Reason
from edge.spec import DEFAULT, PULSE_MIN_QUALITY, Preprocessing
from edge.windows import windows_from_session
from firmware_bridge.errors import ConfigError

PULSE = MODALITIES.index("pulse")
FACE = MODALITIES.index("face")


def _legacy() -> Preprocessing:
    """DEFAULT as a manifest written before the key existed reads it."""
    d = DEFAULT.to_dict()
    del d["rppg"]["tfr_min_quality"]
    return Preprocessing.from_dict(d)


def test_record_default_legacy_and_bad_values():
    assert DEFAULT.rppg.tfr_min_quality == PULSE_MIN_QUALITY == 0.5
    assert Preprocessing.from_dict(DEFAULT.to_dict()) == DEFAULT
    legacy = _legacy()
    assert legacy.rppg.tfr_min_quality == 0.0 and "tfr_min_quality" not in legacy.to_dict()["rppg"]
    for bad in (1.5, -0.1, "0.5", True, float("nan")):
        d = DEFAULT.to_dict()
        d["rppg"]["tfr_min_quality"] = bad
        with pytest.raises(ConfigError, match="tfr_min_quality"):
            Preprocessing.from_dict(d)


def _session(pulse_amplitude=None, seed=0):
    from firmware_bridge.sim import synth_session

    kw = {} if pulse_amplitude is None else {"pulse_amplitude": pulse_amplitude}
    return synth_session(duration_s=20.0, seed=seed, **kw)


@pytest.mark.slow
def test_training_windows_drop_a_printed_photos_pulse_but_keep_a_live_one():
    """Generator defaults: a live face's pulse image is formed; a printed photo's (no blood volume
    change) is zeros with its flag 0 while the face stays; a legacy record still forms it."""
    live = windows_from_session(_session(), DEFAULT, t_end_s=20.0)
    flags = modality_flags(live)
    assert flags[FACE] == 1 and flags[PULSE] == 1
    for seed in (0, 1):
        photo_session = _session(pulse_amplitude=0.0, seed=seed)
        photo = windows_from_session(photo_session, DEFAULT, t_end_s=20.0)
        flags = modality_flags(photo)
        assert flags[FACE] == 1 and flags[PULSE] == 0 and not np.any(photo.tfr)
        old = windows_from_session(photo_session, _legacy(), t_end_s=20.0)
        assert modality_flags(old)[PULSE] == 1


@pytest.mark.slow
def test_the_device_marks_a_gated_pulse_absent_like_training_does():
    """The runtime forms the same window as training (zeros, flag 0) for the photo and says why."""
    from firmware_bridge.cameras.sim import SimCameraSource

    session = _session(pulse_amplitude=0.0)
    with Pipeline(SimCameraSource.from_session(session), [], None, preprocessing=DEFAULT, keep_windows=True) as pipe:
        results = [r for r in pipe.results() if r.t_s >= 10.0]
    assert len(results) == 11
    for r in results:
        assert r.face_present and r.hr_bpm is None and Reason.LOW_PULSE_QUALITY.value in r.reasons
        assert r.window is not None and not np.any(r.window.tfr) and modality_flags(r.window)[PULSE] == 0
    # The same rule in the offline window of the last hop.
    offline = windows_from_session(session, DEFAULT, t_end_s=results[-1].t_s)
    assert not np.any(offline.tfr)


@pytest.mark.slow
def test_a_model_that_needs_the_pulse_gives_no_answer_from_a_gated_one(tmp_path):
    """A bundle whose model needs the pulse image (no presence flag) gets no answer from a gated
    pulse, and says why; a live pulse through the same bundle gets one."""
    from firmware_bridge.cameras.sim import SimCameraSource
    from helpers import tfr_only_bundle

    bundle = tfr_only_bundle(tmp_path / "b", DEFAULT.to_dict())
    for amplitude, answered in ((0.0, False), (None, True)):
        session = _session(pulse_amplitude=amplitude)
        with Pipeline(SimCameraSource.from_session(session), [], bundle) as pipe:
            results = [r for r in pipe.results() if r.t_s >= 10.0]
        assert len(results) == 11
        if answered:
            assert sum(r.valence_prob is not None for r in results) >= 9
        else:
            assert all(r.valence_prob is None and Reason.MODEL_INPUT_MISSING.value in r.reasons
                       and Reason.LOW_PULSE_QUALITY.value in r.reasons for r in results)
