"""``python -m bench.skin_tones hr``: every tone sees the same sessions, and the runtime rows give
the error of the windows the gate reports beside the error of every window. Timings are not
asserted (STYLE 14); one tone, one rate and a 12 s session keep each run to seconds."""
from __future__ import annotations

import math

import pytest

from bench import skin_tones


def test_every_tone_gets_the_same_sessions():
    assert [skin_tones._seed(t, 0) for t in (1, 5, 10)] == [skin_tones._seed(1, 0)] * 3
    assert skin_tones._seed(3, 0) != skin_tones._seed(3, 1)


@pytest.mark.slow
def test_hr_table_rows_carry_the_reported_windows_error():
    logged = []
    table = skin_tones.hr_table(tones=(6,), rates=(72.0,), paths=("exact", "runtime"), duration_s=12.0,
                                log=logged.append)
    exact, runtime = table["exact"][6], table["runtime"][6]
    # 12 s: the exact path's windows starting at 0 s (the 5 s start would end past the session);
    # the runtime's windows end every 5 s once 10 s of pulse exist.
    assert exact["n"] == 1 and math.isnan(exact["mae_reported"])
    assert runtime["n"] >= 1
    # A 168 px face at 72 bpm on the generator's defaults: the pulse is found, and what the gate
    # reports is within the 5 bpm.
    assert exact["mae"] < 5.0
    assert 0.0 < runtime["reported"] <= 1.0
    assert runtime["mae_reported"] <= runtime["worst_reported"] < 5.0
    assert len(logged) == 2 and "tone 6" in logged[0]
