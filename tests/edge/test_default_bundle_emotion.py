"""The shipped default bundle's emotion outputs against ground truth no test wrote by hand:
the demo's script (its segments' labels) and real face photos with crowd-sourced expressions.

Both run the INT8 graph that ``emofuse demo`` and ``emofuse faces`` use by default.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge.cli.run import demo_segments, demo_session
from edge.pipeline import Pipeline, resolve_bundle
from firmware_bridge.cameras.sim import SimCameraSource
from firmware_bridge.sensors import SimSensorSource
from helpers import run_command, shared_path

# Mean probability on the right side of 0.5 by at least this much, after a segment's first 10 s
# (issue 14: the demo follows its script).
MARGIN = 0.2
SETTLE_S = 10.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 14 open: 4 of the 6 segment checks pass (INT8, mean P(high) after "
                   "10 s: tense V 0.08 / A 0.34, calm V 0.88 / A 0.57, elated V 0.89 / A 0.81): valence follows the "
                   "script in every segment and the elated arousal with the contact rows (after 54 s), but before "
                   "the rows exist the arousal comes from the face and the pulse and reads the frown as calmer than "
                   "the soft smile; the heart-rate level alone moves it by < 0.02 (docs/RESULTS.md)")
def test_demo_follows_its_script():
    bundle = resolve_bundle("default")
    if "present" not in bundle.input_names:
        pytest.fail("the default bundle is not a promptfusion_mm bundle")
    duration = 75.0 + 2.0  # what emofuse demo renders for its default 75 s
    fps = bundle.preprocessing.fps
    session = demo_session(duration, 0, fps, (640, 480))
    with Pipeline(SimCameraSource.from_session(session), [SimSensorSource(session, chunk_s=0.1)], bundle,
                  precision="int8") as pipe:
        results = list(pipe.results())
    report = []
    for seg in demo_segments(duration):
        inside = [r for r in results if seg["t0_s"] + SETTLE_S <= r.t_s <= seg["t1_s"] and r.valence_prob]
        assert len(inside) >= 10, seg["name"]
        for axis in ("valence", "arousal"):
            p_high = float(np.mean([getattr(r, f"{axis}_prob")[1] for r in inside]))
            report.append((seg["name"], axis, seg[axis], round(p_high, 3)))
    wrong = [(name, axis, want, p) for name, axis, want, p in report
             if (p - 0.5 if want == "high" else 0.5 - p) < MARGIN]
    assert not wrong, f"segments off their script (mean P(high)): {wrong}; all: {report}"


@pytest.mark.slow
@pytest.mark.realdata
def test_real_faces_through_emofuse_faces(tmp_path, capsys):
    faces = shared_path("faces")
    from edge.cli import faces as faces_cmd

    out = tmp_path / "faces.jsonl"
    code = run_command(faces_cmd, ["faces", str(faces / "images"), "--labels", str(faces / "labels.csv"), "--split", "test",
                                   "--bundle", "default", "--json"])
    captured = capsys.readouterr().out.strip().splitlines()
    out.write_text("\n".join(captured))
    assert code == 0
    summary = json.loads(captured[-1])
    # Lower bounds that the shipped model must keep (docs/RESULTS.md has the measured figures).
    assert summary["valence"]["balanced_accuracy"] >= VALENCE_FLOOR
    assert summary["arousal"]["balanced_accuracy"] >= AROUSAL_FLOOR
    assert summary["valence"]["ece"] <= 0.08


# Measured on the shipped INT8 graph: valence 0.883, arousal 0.806, valence ECE 0.014 (issue 14's
# arousal target, 0.80, is met; valence, 0.93, is not: docs/RESULTS.md).
VALENCE_FLOOR = 0.86
AROUSAL_FLOOR = 0.80


@pytest.mark.slow
@pytest.mark.realdata
def test_real_clip_probabilities_are_never_extreme(capsys):
    """Issue 14, section 3: on the real webcam clip no window has P < 0.05 or P > 0.95 - the
    person sits quietly, with no strong expression - through `emofuse replay` with the
    default bundle (INT8 where the bundle has it)."""
    from edge.cli import run as run_cmd

    clip = shared_path("rppg/physrecorder-v01")
    assert run_command(run_cmd, ["replay", str(clip), "--bundle", "default"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    probs = [(r["t_s"], r["modalities"], axis, r[f"{axis}_prob"][1]) for r in rows if r["valence_prob"]
             for axis in ("valence", "arousal")]
    assert len(probs) >= 2 * 15  # a face answer from ~2 s of a ~20 s clip
    extreme = [p for p in probs if not 0.05 <= p[3] <= 0.95]
    assert not extreme, f"windows with extreme probabilities (t, modalities, axis, P(high)): {extreme}"
