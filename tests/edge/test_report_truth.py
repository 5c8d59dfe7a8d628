"""Ground truth in the pictures (issue 12): the session report and the ``hr`` plot draw the
script of a synthetic session and a reference pulse's heart rate, on the results' time axis.
Checked through the figures' artists (their gids and data), not the pixels."""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest

from edge.outputs import SessionReportWriter
from edge.outputs.report import GID_BOUNDARY, GID_EXPECTED, GID_HR_BEATS, GID_HR_WINDOWS, GID_SEGMENT
from edge.outputs.truth import HeartTruth, SessionTruth, TruthSegment, csv_heart_truth, recording_heart_truth
from edge.results import Result
from firmware_bridge.errors import BadInputError, ConfigError
from helpers import face_only_bundle, shared_path

FS = 30.0
WINDOW_S = 10.0
CLIP = "rppg/physrecorder-v01"


def _beats(t_end: float) -> np.ndarray:
    """60 bpm until 20 s, then 90 bpm."""
    slow = np.arange(0.0, 20.0, 1.0)
    fast = 20.0 + np.arange(0.0, t_end - 20.0, 60.0 / 90.0)
    return np.concatenate([slow, fast])


def _results(times) -> list[Result]:
    out = []
    for i, t in enumerate(times):
        n = int(WINDOW_S * FS)
        tp = t - WINDOW_S + (np.arange(n) + 1) / FS
        out.append(Result(
            t_s=float(t), seq=i, status="ok", reasons=(), face_present=True, face_box=(10.0, 10.0, 50.0, 50.0),
            hr_bpm=70.0 + 0.5 * i, hr_quality=0.9, hr_snr_db=6.0, contact_present=False,
            valence_prob=(0.3, 0.7), arousal_prob=(0.8, 0.2), valence="high", arousal="low",
            frames=30, pulse=np.sin(2 * np.pi * 1.2 * tp).astype(np.float32), pulse_fs_hz=FS,
        ))
    return out


def _by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


SEGMENTS = (TruthSegment("tense", 0.0, 12.0, "low", "high"),
            TruthSegment("calm", 12.0, 24.0, "high", "low"),
            TruthSegment("elated", 24.0, 40.0, "high", "high"))


def test_report_draws_the_script_on_the_results_time_axis(tmp_path):
    times = np.arange(10.0, 30.0)
    truth = SessionTruth(segments=SEGMENTS, heart=HeartTruth("script", WINDOW_S, beat_times_s=_beats(40.0)),
                         source="test script")
    w = SessionReportWriter(tmp_path / "r.png", size_px=(900, 800), truth=truth)
    for r in _results(times):
        w.write(r)
    fig = w.figure()
    panels = fig.axes[:5]
    pulse_ax, _, hr_ax, v_ax, a_ax = panels
    # One time axis: every panel spans the pulse's first sample to the last result.
    for ax in panels:
        assert ax.get_xlim() == pytest.approx((0.0, 29.0), abs=0.05)
    # The windowed truth sits at the results' own times, the same x as the rPPG track.
    rppg = next(line for line in hr_ax.get_lines() if line.get_label() == "rPPG")
    (ref,) = _by_gid(hr_ax, GID_HR_WINDOWS)
    np.testing.assert_array_equal(ref.get_xdata(), rppg.get_xdata())
    # Beats counted over each (t - 10, t]: 60 bpm while the window is before 20 s, 90 after 30 s,
    # in between the fractional mix.
    y = np.asarray(ref.get_ydata())
    assert y[times <= 20.0] == pytest.approx(60.0, abs=0.01)
    assert y[times == 25.0][0] == pytest.approx(60.0 * (5 + 5 / (60 / 90)) / 10.0, abs=0.01)  # 5 + 7.5 beats
    # Beat to beat: 60 before the change, 90 after, never the window's blur.
    (inst,) = _by_gid(hr_ax, GID_HR_BEATS)
    xi, yi = np.asarray(inst.get_xdata()), np.asarray(inst.get_ydata())
    assert xi.min() >= 0.0 and xi.max() <= 29.0 + 1e-9
    assert np.isnan(yi[xi < 0.5]).all()  # before the first interval midpoint no rate is known
    assert yi[(xi > 0.5) & (xi < 19.0)] == pytest.approx(60.0) and yi[xi > 21.0] == pytest.approx(90.0)
    lo, hi = hr_ax.get_ylim()
    assert lo <= 60.0 and hi >= 90.0  # the truth is on the panel
    # Segment boundaries at 12 and 24 s on every panel; 40 s is past the session and not drawn.
    for ax in panels:
        xs = sorted(line.get_xdata()[0] for line in _by_gid(ax, GID_BOUNDARY))
        assert xs == [12.0, 24.0]
    names = {t.get_text(): t.get_position()[0] for t in _by_gid(pulse_ax, GID_SEGMENT)}
    assert names == {"tense": 6.0, "calm": 18.0, "elated": 26.5}  # centred on the visible part
    # The scripted side of 0.5, per segment and axis, clipped to the session.
    for ax, which in ((v_ax, "valence"), (a_ax, "arousal")):
        rects = sorted((p.get_x(), p.get_width(), p.get_y()) for p in _by_gid(ax, GID_EXPECTED))
        want = [(max(s.t0_s, 0.0), min(s.t1_s, 29.0) - s.t0_s, 0.5 if getattr(s, which) == "high" else 0.0)
                for s in SEGMENTS]
        assert rects == pytest.approx(want)
        assert "scripted side" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert "truth: test script" in fig._suptitle.get_text()
    assert "mean |error|" in fig._suptitle.get_text()


def test_report_without_truth_draws_none():
    w = SessionReportWriter("unused.png")
    for r in _results(np.arange(10.0, 14.0)):
        w.write(r)
    fig = w.figure()
    gids = {a.get_gid() for ax in fig.axes for a in ax.get_children()}
    assert not gids & {GID_BOUNDARY, GID_EXPECTED, GID_HR_BEATS, GID_HR_WINDOWS, GID_SEGMENT}
    with pytest.raises(ConfigError):
        w.set_truth({"segments": []})


def _ppg(t: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """A finger-pulse-like wave: a narrow bump 0.15 s after each beat."""
    return np.exp(-0.5 * ((t[:, None] - beats[None, :] - 0.15) / 0.08) ** 2).sum(axis=1)


def test_reference_pulse_heart_rate_over_the_same_windows():
    rng = np.random.default_rng(3)
    # An oximeter's irregular ~20 Hz timestamps.
    t = np.cumsum(rng.uniform(0.035, 0.065, 800))
    beats = _beats(45.0)
    heart = HeartTruth("finger BVP", WINDOW_S, pulse_t_s=t, pulse=_ppg(t, beats))
    assert heart.instantaneous([15.0]) is None  # its beats are not known
    ends = np.array([5.0, 15.0, 19.5, 35.0, 39.0, t[-1] + 1.0])
    hr = heart.over_windows(ends)
    assert np.isnan(hr[0]) and np.isnan(hr[-1])  # windows the pulse does not cover
    assert hr[1] == pytest.approx(60.0, abs=1.0) and hr[2] == pytest.approx(60.0, abs=1.0)
    assert hr[3] == pytest.approx(90.0, abs=1.0) and hr[4] == pytest.approx(90.0, abs=1.0)
    # A hole of 2 s in the pulse costs the windows that hold it, not the others.
    keep = (t < 30.0) | (t > 32.0)
    holed = HeartTruth("finger BVP", WINDOW_S, pulse_t_s=t[keep], pulse=_ppg(t[keep], beats))
    hr = holed.over_windows(np.array([15.0, 35.0, 39.0, 29.9]))
    assert np.isnan(hr[1]) and np.isnan(hr[2])
    assert hr[0] == pytest.approx(60.0, abs=1.0) and hr[3] == pytest.approx(90.0, abs=1.0)


def test_heart_truth_and_segments_reject_bad_input():
    with pytest.raises(ConfigError, match="either"):
        HeartTruth("x", 10.0)
    with pytest.raises(ConfigError, match="either"):
        HeartTruth("x", 10.0, beat_times_s=[1.0, 2.0], pulse_t_s=np.arange(10.0), pulse=np.zeros(10))
    with pytest.raises(BadInputError, match="increasing"):
        HeartTruth("x", 10.0, beat_times_s=[1.0, 3.0, 2.0])
    with pytest.raises(BadInputError, match="shape"):
        HeartTruth("x", 10.0, pulse_t_s=np.arange(10.0), pulse=np.zeros(9))
    with pytest.raises(ConfigError):
        HeartTruth("x", 0.0, beat_times_s=[1.0, 2.0])
    with pytest.raises(ConfigError):
        TruthSegment("s", 5.0, 5.0)
    with pytest.raises(ConfigError, match="'high', 'low'"):
        TruthSegment("s", 0.0, 5.0, valence="positive")


# -- on the commands -------------------------------------------------------------------------------


def _live_pipelines() -> int:
    import gc

    from edge.pipeline import Pipeline

    return sum(type(o) is Pipeline for o in gc.get_objects())


def _keep_figures(monkeypatch, cls, name, pipelines_at_draw=None):
    """Wrap a real figure-making function so the test sees the figure it made (it still draws
    and saves as usual), and how many Pipeline objects were alive while it drew."""
    made = []
    real = getattr(cls, name)

    def spy(*args, **kwargs):
        if pipelines_at_draw is not None:
            pipelines_at_draw.append(_live_pipelines())
        fig = real(*args, **kwargs)
        made.append(fig)
        return fig

    monkeypatch.setattr(cls, name, spy)
    return made


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return face_only_bundle(tmp_path_factory)


@pytest.mark.slow
def test_demo_report_draws_its_script(bundle, tmp_path, monkeypatch):
    import edge.cli as cli
    from edge.bundle import load_bundle
    from edge.cli.run import DEMO_SEGMENTS
    from edge.engine.base import resolve_precision

    alive: list[int] = []
    made = _keep_figures(monkeypatch, SessionReportWriter, "figure", alive)
    monkeypatch.setattr(cli, "_command_modules", lambda: {"run": "edge.cli.run"})
    precision, _ = resolve_precision(load_bundle(bundle), "auto")
    code = cli.main(["demo", "--duration-s", "6", "--bundle", str(bundle), "--precision", precision,
                     "--out-dir", str(tmp_path / "demo"), "--print", "none"])
    assert code == 0 and (tmp_path / "demo" / "report.png").stat().st_size > 10_000
    (fig,) = made
    # Drawn last, once the pipeline (its engines, buffers and tracker) is gone: the page's
    # memory does not add to the run's peak (issue 12, the 400 MB budget).
    assert alive == [0]
    pulse_ax, _, hr_ax, v_ax, a_ax = fig.axes[:5]
    # The script runs 2 s past the asked 6 s (8 s in three segments); the page ends at 6 s.
    names = [t.get_text() for t in _by_gid(pulse_ax, GID_SEGMENT)]
    assert names == [s[0] for s in DEMO_SEGMENTS]
    bounds = sorted(line.get_xdata()[0] for line in _by_gid(hr_ax, GID_BOUNDARY))
    assert bounds == pytest.approx([8.0 / 3.0, 16.0 / 3.0], abs=0.1)  # within a frame of the script
    v_sides = [p.get_y() for p in sorted(_by_gid(v_ax, GID_EXPECTED), key=lambda p: p.get_x())]
    a_sides = [p.get_y() for p in sorted(_by_gid(a_ax, GID_EXPECTED), key=lambda p: p.get_x())]
    assert v_sides == [0.5 if v > 0 else 0.0 for _, v, _, _, _ in DEMO_SEGMENTS]
    assert a_sides == [0.5 if a > 0 else 0.0 for _, _, a, _, _ in DEMO_SEGMENTS]
    # The scripted heart rate, beat to beat, over the session: the segments' rates.
    (inst,) = _by_gid(hr_ax, GID_HR_BEATS)
    x, y = np.asarray(inst.get_xdata()), np.asarray(inst.get_ydata())
    assert x.max() <= 6.0 + 1e-6
    tense = y[(x > 1.0) & (x < 2.0)]
    assert np.nanmedian(tense) == pytest.approx(DEMO_SEGMENTS[0][3], abs=8.0)


@pytest.mark.realdata
def test_recording_reference_is_the_finger_bvp_on_the_frames_clock():
    heart = recording_heart_truth(shared_path(CLIP), 0, WINDOW_S)
    assert heart is not None and "BVP" in heart.label
    first, last = heart.span_s
    assert abs(first) < 0.1 and 19.5 < last < 20.5  # frame 0 is t = 0; the clip is 20 s
    hr = heart.over_windows(np.arange(11.0, 20.0))
    assert np.all(np.isfinite(hr)) and np.all(np.abs(hr - 71.1) < 4.0)  # the data README: about 71 bpm
    # The CSV path (``emofuse hr``) gives the same reference for the same clock.
    import csv

    with open(shared_path(f"{CLIP}/frames_timestamp.csv")) as fh:
        t0 = float(list(csv.DictReader(fh))[0]["timestamp"])
    same = csv_heart_truth(shared_path(f"{CLIP}/BVP.csv"), t0, WINDOW_S).over_windows(np.arange(11.0, 20.0))
    np.testing.assert_allclose(same, hr, atol=0.05)


@pytest.mark.realdata
@pytest.mark.slow
def test_replay_report_draws_the_finger_bvp(tmp_path, monkeypatch):
    import edge.cli as cli

    alive: list[int] = []
    made = _keep_figures(monkeypatch, SessionReportWriter, "figure", alive)
    monkeypatch.setattr(cli, "_command_modules", lambda: {"run": "edge.cli.run"})
    code = cli.main(["replay", str(shared_path(CLIP)), "--bundle", "none", "--report", str(tmp_path / "r.png"),
                     "--print", "none"])
    assert code == 0
    (fig,) = made
    assert alive == [0]  # drawn after the pipeline is released
    hr_ax = fig.axes[2]
    (ref,) = _by_gid(hr_ax, GID_HR_WINDOWS)
    rppg = next(line for line in hr_ax.get_lines() if line.get_label() == "rPPG")
    np.testing.assert_array_equal(ref.get_xdata(), rppg.get_xdata())
    y = np.asarray(ref.get_ydata())
    finite = y[np.isfinite(y)]
    assert finite.size >= 8 and np.all(np.abs(finite - 71.1) < 4.0)
    assert "BVP" in fig._suptitle.get_text()


@pytest.mark.realdata
def test_hr_plot_draws_the_reference_at_the_window_ends(monkeypatch, tmp_path):
    from edge.cli import hr as hr_cli

    made = _keep_figures(monkeypatch, hr_cli, "estimate_figure")
    parser = argparse.ArgumentParser(prog="emofuse")
    hr_cli.register(parser.add_subparsers(dest="command"))
    # The PhysRecorder folder itself: its video, frame times and BVP.csv.
    args = parser.parse_args(["hr", str(shared_path(CLIP)), "--plot", str(tmp_path / "hr.png")])
    assert args.func(args) == 0
    (fig,) = made
    _, tfr_ax, hr_ax = fig.axes[:3]
    (ref,) = _by_gid(hr_ax, GID_HR_WINDOWS)
    np.testing.assert_allclose(ref.get_xdata(), np.arange(10.0, 21.0), atol=0.05)  # window ends, s
    y = np.asarray(ref.get_ydata())
    assert np.sum(np.isfinite(y)) >= 9 and np.all(np.abs(y[np.isfinite(y)] - 71.1) < 4.0)
    # The TFR's HR dots and the HR track share their times (the issue: they were 5 s apart).
    dots = next(line for line in tfr_ax.get_lines())
    np.testing.assert_array_equal(dots.get_xdata(), ref.get_xdata())
    assert tfr_ax.get_images()[0].get_extent()[1] == pytest.approx(hr_ax.get_xlim()[1])
    lo, hi = hr_ax.get_ylim()
    assert hi - lo >= 20.0


def test_malloc_arenas_are_capped_unless_the_environment_says(monkeypatch):
    import ctypes.util

    from edge.cli import run as run_cli

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert run_cli._cap_malloc_arenas() is False  # the user's setting wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    glibc = ctypes.util.find_library("c") is not None and sys.platform.startswith("linux")
    assert run_cli._cap_malloc_arenas() is glibc
