"""edge.pipeline.Pipeline: results every hop, gating, determinism, live-mode frame dropping.

Sources are the synthetic camera and sensors (their truth is known) and recordings written
here with the real recorder. The engine stage runs a bundle made by the real export pipeline
(a tiny PromptFusion trained for one epoch; or the packaged default bundle when it exists and
needs only the face), so these tests check the plumbing, not the model's accuracy.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge.pipeline import STAGES, Pipeline
from edge.results import JSON_FIELDS, Reason, Result
from firmware_bridge.errors import BadInputError, ConfigError
from helpers import face_only_bundle

from edge.spec import DEFAULT as P  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return face_only_bundle(tmp_path_factory)


def _session(duration_s=14.0, seed=1, **kw):
    from firmware_bridge.sim import synth_session

    base = dict(duration_s=duration_s, seed=seed, frame_size=(320, 240), face_scale=0.5, hrv_sdnn_ms=30.0,
                noise_sigma=1.5)
    base.update(kw)
    return synth_session(**base)


def _sources(session, chunk_s=0.1):
    from firmware_bridge.cameras.sim import SimCameraSource
    from firmware_bridge.sensors import SimSensorSource

    return SimCameraSource.from_session(session), [SimSensorSource(session, chunk_s=chunk_s)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 14 s synthetic session recorded with the real recorder (lossless video + sensors)."""
    from firmware_bridge.recording import Recorder

    session = _session(duration_s=14.0, seed=4, frame_size=(160, 120), scr_onsets_s=(3.0,))
    camera, sensors = _sources(session)
    path = tmp_path_factory.mktemp("rec") / "session"
    with Recorder(path, codec="hfyu", fps=30.0) as rec:
        for frame in camera:
            rec.write_frame(frame)
        for chunk in sensors[0]:
            rec.write_chunk(chunk)
    return path, session


def test_a_result_every_hop_with_heart_rates_and_emotion(bundle):
    session = _session(duration_s=14.0, seed=1, scr_onsets_s=(4.0, 9.0))
    camera, sensors = _sources(session)
    with Pipeline(camera, sensors, bundle) as pipe:
        results = list(pipe.results())
        stats = pipe.stats()
    assert [r.t_s for r in results] == [float(k) for k in range(1, 15)]
    assert [r.seq for r in results] == list(range(14))
    assert all(r.frames == 30 for r in results) and stats["frames_processed"] == len(session)
    assert all(r.face_present for r in results)
    early, late = results[:9], results[10:]
    assert all(r.hr_bpm is None and Reason.WARMING_UP.value in r.reasons for r in early)
    truth = session.mean_hr_bpm(0.0, 14.0)
    hr = [r.hr_bpm for r in late if r.hr_bpm is not None]
    assert len(hr) >= 3 and abs(np.median(hr) - truth) < 3.0
    # The contact heart rate (ECG R peaks), HRV and EDA, from 10 s of uninterrupted signal.
    contact = [r for r in late if r.contact_hr_bpm is not None]
    assert len(contact) == len(late)
    assert all(abs(r.contact_hr_bpm - truth) < 2.0 and r.contact_sdnn_ms > 0 for r in contact)
    assert all(r.eda_tonic_us == pytest.approx(session.config.eda_tonic_us, rel=0.25) for r in contact)
    assert late[-1].eda_scr_count == 2  # the two programmed responses (4 s and 9 s) are in the window
    # The model: probabilities of [low, high] once the pulse window is full.
    for r in late:
        assert sum(r.valence_prob) == pytest.approx(1.0, abs=1e-5)
        assert sum(r.arousal_prob) == pytest.approx(1.0, abs=1e-5)
        assert r.valence in ("low", "high") and r.valence == ("high" if r.valence_prob[1] > 0.5 else "low")
    assert all(r.valence_prob is None for r in early)
    # Per-stage latency, in the documented stage names.
    stages = set(late[-1].latency_ms)
    assert stages <= set(STAGES) and {"track", "pulse", "engine", "window"} <= stages
    # The plot arrays ride along but stay out of the JSON.
    assert late[-1].pulse.shape == (300,) and late[-1].tfr.shape == (32, 32)
    assert list(json.loads(late[-1].to_json())) == list(JSON_FIELDS)
    assert stats["streams"]["ecg"]["seq_gaps"] == 0 and stats["streams"]["ppg"]["samples"] == session.ppg.values.size


def test_printed_photo_gives_no_heart_rate():
    # pulse_amplitude=0: the synthetic face without blood volume changes, i.e. a photo held up
    # to the camera (moving with the hand, under changing light).
    for seed in (0, 3):
        session = _session(duration_s=20.0, seed=seed, pulse_amplitude=0.0, frame_size=(192, 144))
        camera, _ = _sources(session)
        with Pipeline(camera, [], None, preprocessing=P) as pipe:
            results = list(pipe.results())
        judged = [r for r in results if r.t_s >= 10.0]
        assert len(judged) == 11 and all(r.face_present for r in judged)
        assert all(r.hr_bpm is None for r in judged), [r.hr_quality for r in judged]
        assert all(Reason.LOW_PULSE_QUALITY.value in r.reasons and r.status == "unknown" for r in judged)
        assert max(r.hr_quality for r in judged) < 0.5


def test_replay_of_a_recording_is_byte_identical(recording, bundle):
    path, session = recording
    texts = []
    for _ in range(2):
        with Pipeline.from_recording(path, bundle) as pipe:
            texts.append("\n".join(r.to_json(latency=False) for r in pipe.results()))
    assert texts[0] == texts[1]
    lines = [json.loads(line) for line in texts[0].splitlines()]
    assert len(lines) == 14 and lines[-1]["valence_prob"] is not None and lines[-1]["contact_hr_bpm"] is not None
    assert "latency_ms" not in lines[0]


def test_live_mode_drops_stale_frames_and_says_so():
    """The face stage is held on the first frame until the camera has delivered everything (live)
    or filled the queue (replay): no timing decides the counts."""
    import threading

    session = _session(duration_s=4.0, frame_size=(96, 72), face_scale=0.6)
    frames = [session.frame(i) for i in range(len(session))]
    queue_size = 2

    class FastCamera:
        live, fps, uri = False, 30.0, "fast://"

        def __init__(self, release_after):
            self.i = 0
            self.release_after = release_after
            self.released = threading.Event()
            self.taken = threading.Event()

        def __next__(self):
            from firmware_bridge.types import Frame

            if self.i == 1:  # frame 0 is the first the face stage takes
                assert self.taken.wait(60.0), "the face stage never took a frame"
            if self.i >= self.release_after:
                self.released.set()
            if self.i >= len(frames):
                raise StopIteration
            self.i += 1
            return Frame(int(round(session.frame_times_s[self.i - 1] * 1e9)), self.i - 1, frames[self.i - 1])

        def close(self):
            pass

    def held(camera):
        def on_frame(event):  # holds frame 0 until the camera has got far enough
            if event.frame.index == 0:
                camera.taken.set()
                assert camera.released.wait(60.0), "the camera never got there"
        return on_frame

    # Live: the camera reads every frame while the face stage holds its first one; the queue
    # keeps the newest two, every other frame is dropped as stale.
    camera = FastCamera(release_after=len(frames))
    with Pipeline(camera, [], None, preprocessing=P, mode="live", on_frame=held(camera),
                  frame_queue=queue_size) as pipe:
        results = list(pipe.results())
        stats = pipe.stats()
    assert stats["frames_dropped"] == len(frames) - 1 - queue_size
    assert stats["frames_processed"] == 1 + queue_size and stats["frames_lost"] == 0
    assert results[-1].frames_dropped == stats["frames_dropped"]
    assert sum(r.frames for r in results) <= stats["frames_processed"]
    # Replay: the camera waits for room in the queue instead; nothing is dropped.
    camera = FastCamera(release_after=1 + queue_size)  # the queue is full
    with Pipeline(camera, [], None, preprocessing=P, mode="replay", on_frame=held(camera),
                  frame_queue=queue_size) as pipe:
        list(pipe.results())
        assert pipe.stats()["frames_dropped"] == 0 and pipe.stats()["frames_processed"] == len(frames)


def test_contact_only_pipeline_follows_the_sensor_clock():
    from firmware_bridge.sensors import SimSensorSource

    session = _session(duration_s=15.0, seed=2)
    with Pipeline(None, [SimSensorSource(session, chunk_s=0.25)], None, preprocessing=P) as pipe:
        results = list(pipe.results())
    assert [r.t_s for r in results] == [float(k) for k in range(1, 16)]
    assert all(r.hr_bpm is None and not r.face_present and Reason.NO_FACE.value not in r.reasons for r in results)
    ok = [r for r in results if r.t_s >= 11]
    assert ok and all(r.status == "ok" and abs(r.contact_hr_bpm - session.mean_hr_bpm(0, 15)) < 2 for r in ok)


def test_contact_heart_rate_spans_the_pulse_window_and_follows_a_changing_rate():
    """A rate climbing 60 -> 120 bpm over 40 s: the contact heart rate is the last 10 s's (the
    span of the rPPG rate), not the mean of everything the 60 s contact window holds."""
    from firmware_bridge.sensors import SimSensorSource

    session = _session(duration_s=40.0, seed=3, hr_bpm=((0.0, 60.0), (40.0, 120.0)), hrv_sdnn_ms=10.0)
    with Pipeline(None, [SimSensorSource(session, chunk_s=0.25)], None, preprocessing=P) as pipe:
        results = {r.t_s: r for r in pipe.results()}
    for t in (20.0, 30.0, 40.0):
        recent, whole = session.mean_hr_bpm(t - 10.0, t), session.mean_hr_bpm(0.0, t)
        assert abs(results[t].contact_hr_bpm - recent) < 3.0, (t, results[t].contact_hr_bpm, recent, whole)
        assert abs(results[t].contact_hr_bpm - whole) > 5.0  # the whole window's mean lags 7.5-22.5 bpm behind


def test_recent_heart_rate_falls_back_when_the_span_is_short_of_beats():
    from edge.pipeline import recent_heart_rate

    fs = 100.0
    slow = np.arange(0, 5000, 100)  # 60 bpm for 50 s
    fast = 5000 + np.arange(0, 1000, 50)  # then 120 bpm for 10 s
    peaks = np.concatenate([slow, fast])
    assert recent_heart_rate(peaks, 6000, fs, 10.0, fallback=-1.0) == pytest.approx(120.0, abs=0.5)
    # three beats in the last 10 s are too few: the caller's whole-window value is kept
    sparse = np.concatenate([slow, [5200, 5600, 5900]])
    assert recent_heart_rate(sparse, 6000, fs, 10.0, fallback=71.0) == 71.0


def test_model_inputs_missing_without_a_face(bundle):
    session = _session(duration_s=12.0, seed=1)
    blank = np.full((240, 320, 3), 90, np.uint8)

    class NoFace:
        live, fps, uri = False, 30.0, "blank://"

        def __init__(self):
            self.i = 0

        def __next__(self):
            from firmware_bridge.types import Frame

            if self.i >= len(session):
                raise StopIteration
            self.i += 1
            return Frame(int(round(session.frame_times_s[self.i - 1] * 1e9)), self.i - 1, blank)

        def close(self):
            pass

    with Pipeline(NoFace(), [], bundle) as pipe:
        results = list(pipe.results())
    last = results[-1]
    assert not last.face_present and last.hr_bpm is None and last.valence_prob is None
    assert {Reason.NO_FACE.value, Reason.MODEL_INPUT_MISSING.value} <= set(last.reasons)


def test_errors_reach_the_consumer_and_settings_are_checked():
    session = _session(duration_s=3.0, frame_size=(96, 72), face_scale=0.6)
    camera, _ = _sources(session)

    def boom(event):
        if event.t_s > 1.5:
            raise BadInputError("bad frame on purpose")

    pipe = Pipeline(camera, [], None, preprocessing=P, on_frame=boom)
    with pytest.raises(BadInputError, match="on purpose"):
        list(pipe.results())
    with pytest.raises(ConfigError):
        Pipeline(None, [], None, preprocessing=P)
    with pytest.raises(ConfigError):
        Pipeline("sim://?duration_s=1", [], None, preprocessing=P, mode="fast")
    with pytest.raises(ConfigError):
        Pipeline("sim://?duration_s=1", [], None, preprocessing=P, hop_s=0)


def test_result_json_is_stable():
    r = Result(t_s=3.0, seq=2, status="unknown", reasons=("warming_up", Reason.NO_FACE), face_present=False,
               hr_quality=float("nan"), valence_prob=(0.123456, 0.876544), latency_ms={"b": 1.23456, "a": 2.0})
    d = json.loads(r.to_json())
    assert list(d) == list(JSON_FIELDS)
    assert d["reasons"] == ["no_face", "warming_up"] and d["hr_quality"] is None
    assert d["valence_prob"] == [0.1235, 0.8765] and list(d["latency_ms"]) == ["a", "b"]
    assert "latency_ms" not in json.loads(r.to_json(latency=False))
    with pytest.raises(ValueError):
        Result(t_s=0.0, seq=0, status="fine", reasons=(), face_present=True)


def test_replay_ends_with_a_summary_of_results_frames_samples_and_files(recording, tmp_path, capsys):
    import edge.cli.run as run_cmd
    from helpers import run_command

    path, session = recording
    out = tmp_path / "r.jsonl"
    assert run_command(run_cmd, ["replay", str(path), "--bundle", "none", "--out", str(out), "--print", "none"]) == 0
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    statuses = {s: sum(r["status"] == s for r in lines) for s in ("ok", "unknown")}
    warming = sum("warming_up" in r["reasons"] for r in lines)
    assert f"emofuse: {len(lines)} results ({statuses['ok']} ok, {statuses['unknown']} unknown)" in err
    assert f"warming_up {warming}" in err
    assert f"frames: {len(session)} read, {len(session)} processed, 0 dropped, 0 lost" in err
    samples = session.ecg.values.size + session.ppg.values.size + session.eda.values.size
    assert f"sensor samples: {samples} read" in err and f"files: {out}" in err


def test_contact_streams_are_found_by_the_records_names_and_units():
    """The record names the streams (``contact.signals``) and their units: ECG under another
    name is found through its alias; EDA in other units than the declared microsiemens is left
    out, with the reason."""
    from firmware_bridge.sensors import SimSensorSource
    from firmware_bridge.types import SensorChunk

    session = _session(duration_s=14.0, seed=2)
    signals = P.to_dict()["contact"]["signals"]
    signals["ecg"]["aliases"] = ["lead_ii"]
    record = P.replace(**{"contact.signals": signals})

    class Renamed:
        source = "renamed://"

        def __init__(self, eda_units):
            self.inner, self.eda_units = SimSensorSource(session, chunk_s=0.25), eda_units

        def __next__(self):
            c = next(self.inner)
            stream = {"ecg": "lead_ii"}.get(c.stream, c.stream)
            units = self.eda_units if c.stream == "eda" else c.units
            return SensorChunk(stream, c.fs_hz, c.t0_ns, c.samples, units, c.seq)

        def close(self):
            self.inner.close()

    truth = session.mean_hr_bpm(0.0, 14.0)
    for units, eda_ok in (("uS", True), ("kOhm", False)):
        with Pipeline(None, [Renamed(units)], None, preprocessing=record) as pipe:
            late = [r for r in pipe.results() if r.t_s >= 11]
        assert late and all(abs(r.contact_hr_bpm - truth) < 2 for r in late)  # ECG found as lead_ii
        if eda_ok:
            assert all(r.eda_tonic_us is not None and r.status == "ok" for r in late)
        else:
            assert all(r.eda_tonic_us is None and r.status == "unknown" and r.reasons == ("contact_units",)
                       for r in late)
    # Under the default names, lead_ii is no ECG: the heart rate comes from the PPG instead.
    with Pipeline(None, [Renamed("uS")], None, preprocessing=P) as pipe:
        assert pipe.p.contact.signals == P.contact.signals
        late = [r for r in pipe.results() if r.t_s >= 11]
    assert all(abs(r.contact_hr_bpm - truth) < 3 for r in late)
