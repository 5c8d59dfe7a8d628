"""Gaps in camera or sensor time never stall the pipeline (issue 13, section 1).

Before the stages were split, a camera gap of 8 s or more with a sensor stream present hung a
replay for ever: the face loop queued a window per second of the gap before it advanced the
camera clock the sensors waited on. Here: the issue's reproducer on the real PhysRecorder clip
(10 s added to the frame times from frame 300 on), a synthetic recording whose camera stops for
10 s while its sensors go on, and a property test over random camera and sensor gaps. Each run
has a deadline; a run past it is a hang and fails the test.
"""
from __future__ import annotations

import csv
import functools
import shutil
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.pipeline import Pipeline
from edge.results import Reason
from edge.spec import DEFAULT as P
from firmware_bridge.types import Frame, SensorChunk
from helpers import shared_path

CLIP = shared_path("rppg/physrecorder-v01")


def _run(pipe: Pipeline, limit_s: float = 120.0) -> list:
    """All results of a run, or a failure when it does not end within ``limit_s``."""
    out: list = []
    errors: list = []

    def consume():
        try:
            out.extend(pipe.results())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    th.join(limit_s)
    if th.is_alive():
        pipe.stop()
        th.join(15.0)
        pytest.fail(f"the run hung: {len(out)} results, then nothing for the rest of {limit_s:.0f} s")
    if errors:
        raise errors[0]
    return out


def _times_are_hops(results) -> bool:
    return [r.t_s for r in results] == [float(k) for k in range(1, len(results) + 1)]


def test_real_clip_with_a_ten_second_camera_gap_finishes(tmp_path):
    if not (CLIP / "frames_timestamp.csv").is_file():
        pytest.skip(f"the PhysRecorder clip is not in {CLIP}")
    copy = tmp_path / "clip"
    shutil.copytree(CLIP, copy)
    ts = copy / "frames_timestamp.csv"
    ts.chmod(0o644)
    rows = list(csv.reader(ts.open()))
    for row in rows[1:]:
        if int(row[0]) >= 300:
            row[1] = repr(float(row[1]) + 10.0)
    with ts.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    gap_start = float(rows[300][1]) - float(rows[1][1])  # frame 299's time after frame 0's, s

    results = _run(Pipeline.from_recording(copy, None, preprocessing=P))
    assert _times_are_hops(results)
    # 602 frames over 20 s of video plus the 10 s gap: every hop has its result.
    assert len(results) == 30
    inside = [r for r in results if gap_start + 0.5 < r.t_s <= gap_start + 10.0]
    assert len(inside) >= 9
    assert all(r.status == "unknown" and not r.face_present and r.hr_bpm is None and r.frames == 0 for r in inside)
    after = [r for r in results if r.t_s > gap_start + 10.5]
    assert after and all(r.face_present and r.frames > 0 for r in after)


def _session(duration_s, seed=1, **kw):
    from firmware_bridge.sim import synth_session

    base = dict(duration_s=duration_s, seed=seed, frame_size=(160, 120), face_scale=0.55, hrv_sdnn_ms=30.0)
    base.update(kw)
    return synth_session(**base)


def test_synthetic_recording_whose_camera_stops_for_ten_seconds(tmp_path):
    """The camera is out from 6 s to 16 s; ECG, PPG and EDA go on. The replay ends, the gap's
    windows have no face, and the contact values carry on through it."""
    from firmware_bridge.cameras.sim import SimCameraSource
    from firmware_bridge.recording import Recorder
    from firmware_bridge.sensors import SimSensorSource

    s = _session(24.0, seed=6)
    path = tmp_path / "rec"
    with Recorder(path, codec="hfyu", fps=30.0) as rec:
        for frame in SimCameraSource.from_session(s):
            if not 6.0 <= frame.t_ns / 1e9 < 16.0:
                rec.write_frame(frame)
        for chunk in SimSensorSource(s, chunk_s=0.1):
            rec.write_chunk(chunk)
    results = _run(Pipeline.from_recording(path, None, preprocessing=P, contact_min_s=5.0))
    assert _times_are_hops(results) and len(results) == 24
    by_t = {r.t_s: r for r in results}
    for t in range(7, 17):
        r = by_t[float(t)]
        assert r.status == "unknown" and not r.face_present and r.frames == 0
        assert Reason.NO_FACE.value in r.reasons or Reason.WARMING_UP.value in r.reasons
    # The sensors did not stop: the contact heart rate is there inside the camera's gap.
    truth = s.mean_hr_bpm(0.0, 24.0)
    inside = [by_t[float(t)].contact_hr_bpm for t in range(10, 17)]
    assert all(hr is not None and abs(hr - truth) < 3.0 for hr in inside)
    assert all(by_t[float(t)].face_present and by_t[float(t)].frames > 0 for t in range(17, 25))


# -- the property --------------------------------------------------------------------------------

_FPS = 15.0
_SECONDS = 5.0


@functools.lru_cache(maxsize=1)
def _material():
    s = _session(_SECONDS, seed=2, frame_size=(96, 72), face_scale=0.6, fps=_FPS)
    return s, [s.frame(i) for i in range(len(s))]


class _GapCamera:
    """The session's frames, with ``length_s`` added to the times of frames from ``start_s`` on."""

    live, fps, uri = False, _FPS, "gaps://"

    def __init__(self, frames, times_s, start_s, length_s):
        shift = np.where(np.asarray(times_s) >= start_s, length_s, 0.0)
        self.frames, self.t_ns = frames, np.round((np.asarray(times_s) + shift) * 1e9).astype(np.int64)
        self.i = 0

    def __next__(self):
        if self.i >= len(self.frames):
            raise StopIteration
        self.i += 1
        return Frame(int(self.t_ns[self.i - 1]), self.i - 1, self.frames[self.i - 1])

    def close(self):
        pass


class _GapSensor:
    """The session's sensor chunks, with ``length_s`` added to those from ``start_s`` on."""

    source = "gaps-sensor://"

    def __init__(self, session, start_s, length_s):
        from firmware_bridge.sensors import SimSensorSource

        self.inner = SimSensorSource(session, chunk_s=0.2)
        self.start_ns, self.shift_ns = int(start_s * 1e9), int(round(length_s * 1e9))

    def __next__(self):
        c = next(self.inner)
        if c.t0_ns >= self.start_ns:
            c = SensorChunk(c.stream, c.fs_hz, c.t0_ns + self.shift_ns, c.samples, c.units, c.seq)
        return c

    def close(self):
        self.inner.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(["replay", "live"]), with_camera=st.booleans(), with_sensor=st.booleans(),
       camera_gap=st.tuples(st.floats(0.5, 4.5), st.floats(0.0, 25.0)),
       sensor_gap=st.tuples(st.floats(0.5, 4.5), st.floats(0.0, 25.0)))
def test_any_gap_in_camera_or_sensor_time_ends_with_unknown_windows_for_its_span(mode, with_camera, with_sensor,
                                                                                  camera_gap, sensor_gap):
    session, frames = _material()
    if not (with_camera or with_sensor):
        with_sensor = True
    camera = _GapCamera(frames, session.frame_times_s, *camera_gap) if with_camera else None
    sensors = [_GapSensor(session, *sensor_gap)] if with_sensor else []
    # Live: sources unpaced, on their own clocks; a queue that holds every frame keeps frame 0
    # (the session's origin) from being dropped as stale.
    results = _run(Pipeline(camera, sensors, None, preprocessing=P, contact_min_s=2.0, mode=mode,
                            frame_queue=len(frames) + 2), limit_s=90.0)
    assert results and _times_are_hops(results)
    if with_camera:
        t = np.sort(camera.t_ns) / 1e9 - camera.t_ns[0] / 1e9
        before = t[t < camera_gap[0]]
        if before.size and camera_gap[1] > 1.0:
            a, b = before[-1], t[before.size] if before.size < t.size else np.inf
            inside = [r for r in results if a + 0.5 < r.t_s <= b]
            assert all(r.status == "unknown" and not r.face_present and r.hr_bpm is None for r in inside)
        # The run covers the video to its last hop boundary.
        assert results[-1].t_s >= np.floor(t[-1] + 1.0 / _FPS + 1e-6) - 1.0
    else:
        start, length = sensor_gap
        inside = [r for r in results if start + 1.5 < r.t_s <= start + length]
        assert all(r.status == "unknown" and Reason.CONTACT_GAP.value in r.reasons and r.contact_hr_bpm is None
                   for r in inside)
