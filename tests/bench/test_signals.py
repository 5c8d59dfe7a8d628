"""``emofuse bench signals``: the MIT-BIH row is read from the data folder given by ``--data``
(else ``$EMOFUSE_DATA``, else ``../shared/data`` from the current directory), and a row that
cannot run is named on stderr with the reason instead of vanishing (issue 12). Timings are
not asserted (STYLE 14); the lengths are tiny so each run takes seconds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import signals
from edge.cli import main as cli_main

# --all-cores: the command would otherwise pin this test process to one core.
# 5 s: the shortest signal every case accepts (one 4 s STFT frame).
FAST = ["--lengths-s", "5", "--repeat", "1", "--dense-max-s", "0", "--all-cores", "--json"]


def _rows(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def test_missing_record_is_named_on_stderr(tmp_path, capsys):
    code = cli_main(["bench", "signals", "--data", str(tmp_path), *FAST])
    captured = capsys.readouterr()
    assert code == 0
    hea = tmp_path / "ecg" / "mitdb-100" / "100.hea"
    assert f"skipped mitdb row: {hea} not found" in captured.err
    rows = _rows(captured.out)
    assert rows and not any(r["size"].startswith("MIT-BIH") for r in rows)
    assert {"pos+detrend+bandpass", "roi_mean_rgb skin", "ecg_peaks (synthetic)"} <= {r["case"] for r in rows}


def test_data_folder_defaults_to_the_environment(tmp_path, monkeypatch, capsys):
    record = tmp_path / "ecg" / "mitdb-100"
    record.mkdir(parents=True)
    (record / "100.hea").write_text("100 2 360 650000\n")  # header without its signal file
    monkeypatch.setenv(signals.DATA_ENV, str(tmp_path))
    assert signals.default_data_dir() == tmp_path
    code = cli_main(["bench", "signals", *FAST])
    err = capsys.readouterr().err
    assert code == 0 and f"skipped mitdb row: {record / '100.dat'} not found" in err


def test_without_the_environment_the_default_is_beside_the_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv(signals.DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert signals.default_data_dir() == tmp_path.parent / "shared" / "data"


@pytest.mark.realdata
def test_real_record_gives_the_mitdb_row(shared_data):
    skipped: list[str] = []
    rows = signals.run_signal_benchmarks(lengths_s=(), repeat=1, data_dir=shared_data, on_skip=skipped.append)
    assert skipped == []
    mitdb = [r for r in rows if r["size"].startswith("MIT-BIH")]
    assert len(mitdb) == 1 and mitdb[0]["case"] == "ecg_peaks" and mitdb[0]["kernel_ms"] > 0


def test_dense_detrend_baseline_is_the_smoothness_priors_solution():
    """The O(N^3) baseline is Tarvainen et al.'s detrend: the trend it takes away solves
    (I + lam^2 D2' D2) trend = z, and a straight line (the null space of D2) is removed whole."""
    n, lam = 120, 10.0
    rng = np.random.default_rng(3)
    z = rng.normal(size=n).cumsum()
    trend = z - signals.detrend_dense(z, lam=lam)
    d2 = np.diff(np.eye(n), n=2, axis=0)
    np.testing.assert_allclose(trend + lam**2 * (d2.T @ (d2 @ trend)), z, atol=1e-8)
    line = 3.0 + 0.5 * np.arange(n)
    assert np.max(np.abs(signals.detrend_dense(line, lam=lam))) < 1e-8
