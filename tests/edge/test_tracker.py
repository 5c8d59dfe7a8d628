"""edge.tracker.FaceTracker on synthetic faces with known boxes and motion."""
from __future__ import annotations

import numpy as np
import pytest

from edge.tracker import FaceTracker, box_iou
from firmware_bridge.errors import BadInputError, ConfigError


def _session(**kw):
    from firmware_bridge.sim import synth_session

    base = dict(duration_s=6.0, seed=0, frame_size=(320, 240), face_scale=0.5)
    base.update(kw)
    return synth_session(**base)


def test_follows_a_moving_face_smoothly_with_few_detections():
    s = _session(motion_px=2.0, duration_s=8.0)
    tr = FaceTracker(detect_every=10)
    centre, truth = [], []
    for i in range(len(s)):
        box = tr.update(s.frame(i)).box
        assert box is not None
        centre.append((box[0] + box[2] / 2, box[1] + box[3] / 2))
        m = s.motion(i)
        truth.append((m.dx_px, m.dy_px))
    err = np.asarray(centre) - np.asarray(truth)
    err -= err.mean(axis=0)  # the detector's box convention differs from the generator's by a constant
    assert np.sqrt((err ** 2).mean()) < 1.5  # measured: about 0.5 px on a head moving +-4 px
    # The head moves; the box follows it rather than staying put.
    x, tx = np.asarray(centre)[:, 0], np.asarray(truth)[:, 0]
    assert np.ptp(tx) > 3 and np.corrcoef(x, tx)[0, 1] > 0.9
    # Detections every 10 frames, mostly in a small region around the face.
    assert tr.detections == pytest.approx(len(s) / 10, abs=2)
    assert tr.full_searches < tr.detections / 2


def test_still_face_gives_a_still_box():
    # A printed photo: the same image with fresh sensor noise every frame. A box that jitters
    # would move the skin regions over the face's texture: a colour signal from nothing.
    s = _session(motion_px=0.0, motion_scale_pct=0.0, illumination_pct=0.0, noise_sigma=2.0)
    tr = FaceTracker()
    boxes = np.array([tr.update(s.frame(i)).box for i in range(90)])
    assert np.all(np.ptp(boxes, axis=0) <= 1.0)


def test_face_leaving_and_returning():
    s = _session()
    empty = np.full_like(s.frame(0), 128)
    tr = FaceTracker(detect_every=5, lost_detect_every=2, max_missed=3)
    states = [tr.update(s.frame(i)) for i in range(30)]
    assert all(st.box is not None for st in states)
    gone = [tr.update(empty) for _ in range(40)]
    lost_at = [k for k, st in enumerate(gone) if st.lost]
    assert len(lost_at) == 1 and lost_at[0] <= 3 * 5  # three missed detections, 5 frames apart
    assert all(st.box is None for st in gone[lost_at[0]:])
    back = [tr.update(s.frame(i)) for i in range(30, 40)]
    assert back[0].box is not None and back[0].detected  # looked for on the first frame back
    assert box_iou(back[-1].box, s.face_box(39)) > 0.7


class TwoFaces:
    """A stand-in detector that 'sees' two faces: a small one that moves right and a large
    one that stays put."""

    def __init__(self):
        self.calls = 0

    def detect(self, frame):
        self.calls += 1
        small = (40 + 3 * self.calls, 40, 60, 60)
        large = (200, 80, 100, 100)
        return [large, small]


@pytest.mark.parametrize("select, expect_x", [("largest", 200), ("closest", None)])
def test_several_faces_largest_or_closest(select, expect_x):
    frame = np.zeros((240, 320, 3), np.uint8)
    tr = FaceTracker(detector=TwoFaces(), select=select, search_scale=0, track="hold", detect_every=1,
                     deadband=0.0)
    first = tr.update(frame).box
    assert first == (200.0, 80.0, 100.0, 100.0)  # nothing held yet: the largest
    if select == "closest":
        tr._box = np.array([43.0, 40.0, 60.0, 60.0])  # now holding the small face
    boxes = [tr.update(frame).box for _ in range(5)]
    if expect_x is not None:
        assert all(b[0] == expect_x for b in boxes)
    else:
        assert [b[0] for b in boxes] == [40 + 3 * k for k in range(2, 7)]  # follows the small one


def test_settings_and_inputs_are_checked():
    with pytest.raises(ConfigError):
        FaceTracker(detect_every=0)
    with pytest.raises(ConfigError):
        FaceTracker(select="nearest")
    with pytest.raises(ConfigError):
        FaceTracker(track="kalman")
    with pytest.raises(ConfigError):
        FaceTracker(search_scale=1.0)
    tr = FaceTracker()
    with pytest.raises(BadInputError):
        tr.update(np.zeros((10, 10, 3), np.float32))


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
