"""Contact physiology under packet loss (issue 13, item 2).

A serial board sends 20 ms packets; a lost one used to restart the 10 s count the contact
values need, so the contact heart rate vanished at 0.3 % loss. Holes up to
``edge.pipeline.infer.CONTACT_BRIDGE_MAX_S`` are now interpolated across, marked and counted.
Here the loss is applied to the chunks directly (fast and exact); tests/edge/test_reliability.py
shows the same through the simulated board's bit flips and the real serial decoder.
"""
from __future__ import annotations

import numpy as np
import pytest

from edge.pipeline import Pipeline
from edge.pipeline.infer import CONTACT_BRIDGE_MAX_S
from edge.results import Reason
from edge.spec import DEFAULT as P
from firmware_bridge.sim import synth_session
from firmware_bridge.types import SensorChunk

T0_NS = 7_000_000_000


class Chunks:
    """A finite sensor source over given chunks."""

    source = "chunks"

    def __init__(self, chunks):
        self._it = iter(chunks)

    def __next__(self):
        return next(self._it)

    def close(self):
        pass


def _chunks(values, fs, stream, units, block_s=0.02):
    size = max(1, int(round(block_s * fs)))
    return [SensorChunk(stream, fs, T0_NS + int(round(k * 1e9 / fs)), values[k:k + size], units, (k // size) & 0xFFFF)
            for k in range(0, values.size - size + 1, size)]


@pytest.fixture(scope="module")
def session():
    return synth_session(duration_s=42.0, seed=4, frame_size=(80, 64), hrv_sdnn_ms=30.0)


def _run(session, lose, seed):
    """Results of a contact-only replay with a share ``lose`` of each stream's chunks lost."""
    rng = np.random.default_rng(seed)
    out = []
    for sig, name, units in ((session.ecg, "ecg", "mV"), (session.eda, "eda", "uS")):
        cs = _chunks(np.asarray(sig.values, float), float(sig.fs_hz), name, units)
        keep = rng.random(len(cs)) >= lose
        keep[0] = True
        out.extend(c for c, k in zip(cs, keep) if k)
    out.sort(key=lambda c: c.t0_ns)
    with Pipeline(None, [Chunks(out)], None, preprocessing=P) as pipe:
        results = list(pipe.results())
        stats = pipe.stats()
    return {r.t_s: r for r in results}, stats


@pytest.mark.parametrize("lose, need", [(0.01, 0.9), (0.03, 0.75)])
def test_contact_heart_rate_survives_lost_packets(session, lose, need):
    clean, _ = _run(session, 0.0, 1)
    lossy, stats = _run(session, lose, 2)
    ref = [t for t, r in clean.items() if r.contact_hr_bpm is not None]
    assert len(ref) >= 25
    close = [t for t in ref if lossy[t].contact_hr_bpm is not None
             and abs(lossy[t].contact_hr_bpm - clean[t].contact_hr_bpm) <= 2.0]
    assert len(close) / len(ref) >= need
    # The holes were bridged and counted, not hidden.
    assert stats["streams"]["ecg"]["seq_gaps"] > 0
    assert 0 < stats["streams"]["ecg"]["bridged_gaps"] <= stats["streams"]["ecg"]["seq_gaps"]
    # EDA is reported through the same rule.
    assert sum(lossy[t].eda_tonic_us is not None for t in ref) / len(ref) >= need


def test_a_hole_longer_than_the_bridge_limit_still_ends_the_stretch(session):
    """Half a second of lost ECG packets is a gap: no contact heart rate until 10 s of signal
    have followed it again."""
    cs = _chunks(np.asarray(session.ecg.values, float), float(session.ecg.fs_hz), "ecg", "mV")
    hole_s = 0.5
    assert hole_s > CONTACT_BRIDGE_MAX_S
    lost_from = 20.0
    kept = [c for c in cs if not (lost_from <= (c.t0_ns - T0_NS) / 1e9 < lost_from + hole_s)]
    with Pipeline(None, [Chunks(kept)], None, preprocessing=P) as pipe:
        by_t = {r.t_s: r for r in pipe.results()}
    assert by_t[20.0].contact_hr_bpm is not None
    for t in (21.0, 25.0, 30.0):
        assert by_t[t].contact_hr_bpm is None and Reason.CONTACT_GAP.value in by_t[t].reasons
    assert by_t[31.0].contact_hr_bpm is not None
