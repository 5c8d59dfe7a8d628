"""The window assembly keeps a frame's face crop only while a window still to close may take it
(edge.pipeline.windows.VideoWindows.add), not every frame's crop for the whole model window.
The model's inputs must not change by a bit: each replay below runs twice, once as it ships
and once with every crop kept, and every window's tensors are compared."""
from __future__ import annotations

import numpy as np
import pytest

from edge.pipeline import Pipeline
from edge.pipeline.windows import VideoWindows
from edge.spec import DEFAULT
from helpers import shared_path, tfr_only_bundle

SIM = "sim://?hr_bpm=70&duration_s=21&seed=2&width=320&height=240"
FIELDS = ("face_clip", "tfr", "face_seq_crops", "contact", "contact_level", "contact_present", "level_present")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tfr_only_bundle(tmp_path_factory.mktemp("b") / "bundle", DEFAULT.to_dict(), version="crops")


def _replay(make_pipe, keep_all: bool, monkeypatch):
    """Every result (with its window's model inputs), and as each window closes (in the face
    thread, which owns the history) the crops and the frames the history holds."""
    held, frames = [], []
    close = VideoWindows._close

    def counting_close(self):
        held.append(sum(rec.crop is not None for rec in self.history))
        frames.append(len(self.history))
        return close(self)

    with monkeypatch.context() as m:
        m.setattr(VideoWindows, "_close", counting_close)
        if keep_all:
            m.setattr(VideoWindows, "_slot_between", lambda self, a, b, offsets: True)
        results = list(make_pipe().results())
    return results, held, frames


def _assert_same_inputs(slim, full):
    assert len(slim) == len(full) > 0
    formed = 0
    for a, b in zip(slim, full):
        assert a.t_s == b.t_s and a.face_present == b.face_present
        assert (a.window is None) == (b.window is None)
        if a.window is None:
            continue
        formed += 1
        for name in FIELDS:
            x, y = getattr(a.window, name), getattr(b.window, name)
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), (a.t_s, name)
        assert a.window.face_present == b.window.face_present
        assert a.valence_prob == b.valence_prob and a.arousal_prob == b.arousal_prob
        assert a.hr_bpm == b.hr_bpm and a.hr_quality == b.hr_quality
    return formed


def test_synthetic_replay_model_inputs_unchanged_and_few_crops_held(bundle, monkeypatch):
    def make():
        return Pipeline(SIM, (), bundle, mode="replay", keep_windows=True)

    slim, held, frames = _replay(make, False, monkeypatch)
    full, held_all, _ = _replay(make, True, monkeypatch)
    assert _assert_same_inputs(slim, full) == len(slim)
    # Face seen in every slot of the later windows: the sequence slots are really filled from
    # the kept crops (a slot whose frame lost its crop would be zeros and face_present False).
    late = [r for r in slim if r.t_s >= DEFAULT.face.clip_span_s(DEFAULT.fps) + 1.0]
    assert late and all(r.window.face_clip.any() for r in late)
    assert all(np.count_nonzero(r.window.face_seq_crops.reshape(DEFAULT.face.seq_frames, -1).any(axis=1))
               >= min(DEFAULT.face.seq_frames, int(r.t_s * DEFAULT.face.seq_rate_hz)) - 1 for r in late)
    # Kept: one crop per sequence slot time (2 a second) and, over the clip's last ~2 s, the
    # strided clip frames of the two windows that may still take them; every frame kept its
    # crop before.
    seq_per_s, clip = DEFAULT.face.seq_rate_hz, DEFAULT.face.clip_frames
    for r, n, n_all, n_frames in zip(slim, held, held_all, frames):
        assert n_all == n_frames
        assert n <= seq_per_s * r.t_s + 2 * clip + 4, (r.t_s, n)
    assert held[-1] < 0.15 * held_all[-1]


@pytest.mark.realdata
def test_real_clip_jittery_frame_times_model_inputs_unchanged(bundle, monkeypatch):
    """The webcam clip's frame times jitter and drop now and then: a crop is released only when
    the next frame's time proves no slot can take it."""
    clip = shared_path("rppg/physrecorder-v01")

    def make():
        return Pipeline.from_recording(clip, bundle, keep_windows=True)

    slim, held, _ = _replay(make, False, monkeypatch)
    full, held_all, _ = _replay(make, True, monkeypatch)
    assert _assert_same_inputs(slim, full) >= 19
    assert held[-1] < 0.2 * held_all[-1]
