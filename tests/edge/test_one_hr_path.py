"""Issue 10 item 3: one heart-rate path. ``emofuse hr``, ``emofuse replay`` and ``emofuse run``
compute the pulse, the gate and the heart rate with the same code and the same record, so on
the same video they give the same windows and the same values.

- a synthetic ``sim://`` session (always runs): ``emofuse run --mode replay --record`` on the
  URI, ``emofuse replay`` of that recording and ``emofuse hr`` of both the URI and the recording;
- the real webcam clip ``rppg/physrecorder-v01`` (skipped when absent): ``emofuse hr`` of the
  PhysRecorder folder against ``emofuse replay`` of it.

Each compares the CLIs' JSON (hr's rounding is the results'), and the in-process values bit
for bit (:func:`edge.offline.hr_session` against the pipeline's results).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge.cli import hr as hr_cli
from edge.offline import hr_session
from edge.spec import DEFAULT
from helpers import run_command, shared_path, tfr_only_bundle

SIM = "sim://?hr_bpm=72&duration_s=12.5&seed=5&width=320&height=240"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle whose record is DEFAULT (fractional ROI edges, the logistic gate), with a tiny
    model, so the runtime runs its model (and cuts crops) while hr runs none."""
    return tfr_only_bundle(tmp_path_factory.mktemp("b") / "bundle", DEFAULT.to_dict(), version="one-path")


def _cli(argv, monkeypatch, capsys) -> list[dict]:
    import edge.cli as cli

    monkeypatch.setattr(cli, "_command_modules", lambda: {"run": "edge.cli.run", "hr": "edge.cli.hr"})
    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def _hr_rows(argv, capsys) -> list[tuple]:
    capsys.readouterr()
    assert run_command(hr_cli, argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [(w["t"], w["hr_bpm"], w["quality"]) for w in rows[:-1]]


def _runtime_rows(results) -> list[tuple]:
    """The runtime's windows from the first full pulse window on, as hr prints them."""
    return [(r["t_s"], r["hr_bpm"], r["hr_quality"]) for r in results
            if r["t_s"] >= DEFAULT.rppg.pulse_window_s - 1e-9]


def _pipeline_values(source, bundle) -> list[tuple]:
    from edge.pipeline import Pipeline

    pipe = Pipeline.from_recording(source, bundle) if not str(source).startswith("sim://") \
        else Pipeline(source, (), bundle, mode="replay")
    return [(r.t_s, r.hr_bpm, r.hr_quality, r.hr_snr_db) for r in pipe.results()
            if r.t_s >= DEFAULT.rppg.pulse_window_s - 1e-9]


def _session_values(est) -> list[tuple]:
    def v(x):
        return None if math.isnan(x) else float(x)

    tr = est.track
    return [(float(t), v(h), v(q), v(s)) for t, h, q, s in zip(tr.t_s, tr.hr_bpm, tr.quality, tr.snr_db)]


def test_synthetic_session_hr_run_and_replay_agree(bundle, tmp_path, monkeypatch, capsys):
    rec = tmp_path / "rec"
    ran = _cli(["run", "--camera", SIM, "--mode", "replay", "--bundle", bundle, "--record", rec], monkeypatch, capsys)
    replayed = _cli(["replay", rec, "--bundle", bundle], monkeypatch, capsys)
    hr_uri = _hr_rows(["hr", SIM, "--bundle", str(bundle), "--json"], capsys)
    hr_rec = _hr_rows(["hr", str(rec), "--bundle", str(bundle), "--json"], capsys)
    want = _runtime_rows(ran)
    # 12.5 s: full pulse windows end at 10, 11 and 12 s; the face is seen throughout.
    assert [w[0] for w in want] == [10.0, 11.0, 12.0]
    assert all(q is not None for _, _, q in want)
    assert _runtime_rows(replayed) == want
    assert hr_uri == want
    assert hr_rec == want
    # The heart rate itself is the simulated one where the gate reports it.
    assert any(h is not None for _, h, _ in want)
    assert all(abs(h - 72.0) < 5.0 for _, h, _ in want if h is not None)


def test_synthetic_session_values_are_bit_identical(bundle):
    est = hr_session(SIM, bundle)
    assert _session_values(est) == _pipeline_values(SIM, bundle)
    # The pulse hr draws is the windows' own: the first full window whole, then each later
    # window's newest hop (1 s).
    from edge.pipeline import Pipeline

    full = [r for r in Pipeline(SIM, (), bundle, mode="replay").results()
            if r.pulse is not None and r.t_s >= DEFAULT.rppg.pulse_window_s - 1e-9]
    hop = int(round(est.fs))
    assert est.fs == full[0].pulse_fs_hz and est.pulse.size == full[0].pulse.size + hop * (len(full) - 1)
    np.testing.assert_array_equal(est.pulse[:full[0].pulse.size], full[0].pulse)
    for k, r in enumerate(full[1:]):
        start = full[0].pulse.size + k * hop
        np.testing.assert_array_equal(est.pulse[start:start + hop], r.pulse[-hop:])


@pytest.mark.realdata
def test_real_clip_hr_and_replay_agree(bundle, monkeypatch, capsys):
    clip = shared_path("rppg/physrecorder-v01")
    replayed = _cli(["replay", clip, "--bundle", bundle], monkeypatch, capsys)
    hr_rows = _hr_rows(["hr", str(clip), "--bundle", str(bundle), "--json"], capsys)
    want = _runtime_rows(replayed)
    print("t_s, hr_bpm, quality (hr == replay):", want)
    assert [w[0] for w in want] == [float(k) for k in range(10, 21)]  # 20 s clip, 10 s windows, 1 s hop
    assert hr_rows == want
    # In process, every float bit for bit: hr's video + frames_timestamp.csv against replay's
    # recording (the same frames on the same clock, up to its origin).
    est = hr_session(clip / "video_ZIP_H264.avi", bundle, timestamps=clip / "frames_timestamp.csv")
    assert _session_values(est) == _pipeline_values(clip, bundle)
