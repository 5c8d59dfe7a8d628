"""``emofuse bench rppg-methods`` on a short case: one 10 s synthetic session at the generator's
defaults, two methods. The full sweep is run by hand and its figures are in docs/BENCHMARKS.md;
timings are not asserted (STYLE 14)."""
from __future__ import annotations

import json

import pytest

from bench import rppg_methods as brm
from edge.cli import main as cli_main

SHORT = ["bench", "rppg-methods", "--methods", "pos", "chrom", "--rates-bpm", "75", "--session-s", "10",
         "--no-real", "--no-cost", "--json"]


def test_short_sweep_recovers_the_synthetic_rate(capsys):
    assert cli_main(SHORT) == 0
    rows = {r["method"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {"pos", "chrom"}
    for r in rows.values():
        assert r["syn_windows"] == 1 and r["real_windows"] == 0
        # A 168 px face at 75 bpm: every method lands within a few bpm of the truth.
        assert r["syn_mean"] <= 3.0 and r["syn_over_5"] == 0


def test_summary_counts_worst_window_and_real_errors():
    e = brm.MethodErrors("x", synthetic=[(45.0, 0.0, -1.0), (90.0, 0.0, 8.0), (90.0, 5.0, 0.5)],
                         real=[(10.0, 2.0), (11.0, -4.0)])
    (row,) = brm.summarise({"x": e})
    assert row["syn_mean"] == pytest.approx(9.5 / 3) and row["syn_worst"] == 8.0
    assert row["syn_worst_at_bpm"] == 90.0 and row["syn_over_5"] == 1
    assert row["real_mean"] == 3.0 and row["real_worst"] == 4.0 and row["real_errors"] == [2.0, -4.0]
    assert "| x | 3 | 3.17 | 8.00 (90) | 1 | 2 | 3.00 | 4.00 |" in brm.format_tables([row])


def test_cost_rows_state_the_geometry():
    rows = {r["method"]: r for r in brm.cost_per_window(["pos", "chrom"], length_s=10.0, repeat=1)}
    assert (rows["pos"]["window"], rows["pos"]["hop"]) == (48, 1)
    assert (rows["chrom"]["window"], rows["chrom"]["hop"]) == (48, 24)
    assert all(r["us_per_window"] > 0 for r in rows.values())


def test_unknown_method_and_short_session_are_one_line_errors(capsys):
    assert cli_main(["bench", "rppg-methods", "--methods", "ica", "--no-real", "--no-cost"]) == 2
    assert "unknown rPPG method" in capsys.readouterr().err
    assert cli_main(["bench", "rppg-methods", "--session-s", "5", "--no-real", "--no-cost"]) == 2
    assert "--session-s" in capsys.readouterr().err
