"""The result writers of edge.outputs, on real Result objects from a synthetic sequence."""
from __future__ import annotations

import csv
import io
import json
import struct
import sys
import time
import types

import numpy as np
import pytest

from edge import outputs
from edge.outputs import (
    WRITERS,
    AnnotatedVideoWriter,
    CallbackWriter,
    CsvWriter,
    JsonLinesWriter,
    LslWriter,
    SessionReportWriter,
    WriterSet,
    open_writer,
)
from edge.results import JSON_FIELDS, Result
from firmware_bridge.errors import BadInputError, ConfigError, MissingDependencyError
from firmware_bridge.types import Frame

FS = 30.0
HR_HZ = 1.2
PULSE_S = 10.0
BOX = (200.0, 120.0, 160.0, 160.0)


def _pulse(t_end: float) -> np.ndarray:
    t = t_end - PULSE_S + np.arange(int(PULSE_S * FS)) / FS + 1.0 / FS
    return np.sin(2 * np.pi * HR_HZ * t).astype(np.float32)


def make_results(n: int = 8, unknown_every: int = 4, first_latency: bool = True) -> list[Result]:
    """A session of ``n`` hops at 1 s; every ``unknown_every``-th has no face."""
    out = []
    for i in range(n):
        ok = (i % unknown_every) != unknown_every - 1
        t_s = PULSE_S + i
        out.append(Result(
            t_s=t_s, seq=i, status="ok" if ok else "unknown",
            reasons=() if ok else ("no_face",), face_present=ok, face_box=BOX if ok else None,
            hr_bpm=72.0 + 0.5 * i if ok else None, hr_quality=0.9 if ok else None,
            hr_snr_db=6.0 if ok else None, contact_present=True, contact_hr_bpm=71.5,
            contact_sdnn_ms=40.0, contact_rmssd_ms=30.0, eda_tonic_us=4.2, eda_scr_count=i % 3,
            valence_prob=(0.25, 0.75) if ok else None, arousal_prob=(0.6, 0.4) if ok else None,
            valence="high" if ok else None, arousal="low" if ok else None,
            latency_ms={"engine": 1.25, "window": 3.5} if (i or first_latency) else {},
            frames=30, pulse=_pulse(t_s), pulse_fs_hz=FS,
        ))
    return out


def _frames(n: int, value: int = 90) -> list[np.ndarray]:
    return [np.full((240, 320, 3), value, np.uint8) for _ in range(n)]


# -- JSON lines ----------------------------------------------------------------------------------


def test_jsonl_lines_parse_keep_key_order_and_are_flushed(tmp_path):
    path = tmp_path / "r.jsonl"
    results = make_results()
    with JsonLinesWriter(path) as w:
        w.write(results[0])
        # Flushed per line: readable before the writer closes.
        assert path.read_text().count("\n") == 1
        for r in results[1:]:
            w.write(r)
    lines = path.read_text().splitlines()
    assert len(lines) == len(results)
    for line, r in zip(lines, results):
        obj = json.loads(line)
        assert list(obj) == list(JSON_FIELDS)
        assert obj["seq"] == r.seq and obj["status"] == r.status
        assert line == r.to_json()


def test_jsonl_without_latency_is_deterministic(tmp_path):
    a, b = io.StringIO(), io.StringIO()
    r1 = make_results(3)
    r2 = [Result(**{**r.__dict__, "latency_ms": {"engine": 99.0}}) for r in r1]  # other timings
    with JsonLinesWriter(a, latency=False) as w:
        for r in r1:
            w.write(r)
    with JsonLinesWriter(b, latency=False) as w:
        for r in r2:
            w.write(r)
    assert a.getvalue() == b.getvalue()
    assert "latency_ms" not in json.loads(a.getvalue().splitlines()[0])
    assert not a.closed  # a caller's stream is not ours to close


def test_jsonl_to_stdout(capsys):
    with open_writer("jsonl") as w:
        for r in make_results(2):
            w.write(r)
    out = capsys.readouterr().out.splitlines()
    assert [json.loads(x)["seq"] for x in out] == [0, 1]


# -- CSV -----------------------------------------------------------------------------------------


def test_csv_header_is_stable_when_first_values_are_null(tmp_path):
    path = tmp_path / "r.csv"
    # The first result is "unknown": no face box, no probabilities, no timings yet.
    results = make_results(5, unknown_every=1)[:1] + make_results(5)[1:]
    results[0] = Result(**{**results[0].__dict__, "latency_ms": {}})
    with CsvWriter(path) as w:
        for r in results:
            w.write(r)
    rows = list(csv.reader(path.open(newline="")))
    header = rows[0]
    for col in ("t_s", "status", "reasons", "face_box.x", "face_box.h", "hr_bpm",
                "valence_prob.low", "valence_prob.high", "arousal_prob.high", "eda_tonic_us"):
        assert col in header
    assert [c for c in header if c.startswith("latency_ms.")], "one column per pipeline stage"
    assert len(rows) == 1 + len(results)
    assert all(len(row) == len(header) for row in rows)
    first, second = dict(zip(header, rows[1])), dict(zip(header, rows[2]))
    assert first["face_box.x"] == "" and first["status"] == "unknown" and first["reasons"] == "no_face"
    assert float(second["face_box.w"]) == BOX[2]
    assert float(second["valence_prob.high"]) == 0.75
    assert second["face_present"] == "true"
    if "latency_ms.engine" in header:
        assert float(second["latency_ms.engine"]) == 1.25


def test_csv_values_round_trip_to_json_values(tmp_path):
    path = tmp_path / "r.csv"
    results = make_results(4)
    with CsvWriter(path, latency=False) as w:
        for r in results:
            w.write(r)
    header, *rows = list(csv.reader(path.open(newline="")))
    assert not any(c.startswith("latency_ms") for c in header)
    for row, r in zip(rows, results):
        cells = dict(zip(header, row))
        obj = json.loads(r.to_json())
        assert float(cells["t_s"]) == obj["t_s"]
        assert cells["hr_bpm"] == ("" if obj["hr_bpm"] is None else repr(obj["hr_bpm"]))


def test_flatten_result_names_parts_and_joins_reasons():
    flat = outputs.flatten_result({"face_box": None, "reasons": ["a", "b"], "x": {"y": 1},
                                   "valence_prob": [0.1, 0.9], "v": [1, 2]})
    assert flat == {"face_box.x": None, "face_box.y": None, "face_box.w": None, "face_box.h": None,
                    "reasons": "a;b", "x.y": 1, "valence_prob.low": 0.1, "valence_prob.high": 0.9,
                    "v.0": 1, "v.1": 2}


# -- callback, registry, fan-out -----------------------------------------------------------------


def test_callback_gets_every_result_in_order():
    seen, full = [], []
    results = make_results(5)
    with CallbackWriter(seen.append) as a, CallbackWriter(lambda *args: full.append(args), full=True) as b:
        for r in results:
            a.write(r)
            b.write(r, frame="f", extras={"k": 1})
    assert seen == results
    assert full[0] == (results[0], "f", {"k": 1})
    with pytest.raises(ConfigError):
        CallbackWriter(42)


def test_registry_and_errors(tmp_path):
    assert set(WRITERS) == {"jsonl", "csv", "callback", "lsl", "video", "report"}
    with pytest.raises(ConfigError, match="unknown output"):
        open_writer("nope")
    with pytest.raises(ConfigError, match="needs a target"):
        open_writer("video")
    w = open_writer("jsonl", tmp_path / "x.jsonl")
    w.close()
    w.close()  # idempotent
    with pytest.raises(BadInputError, match="closed"):
        w.write(make_results(1)[0])
    with pytest.raises(BadInputError, match="to_json"):
        open_writer("jsonl", io.StringIO()).write(object())


def test_writer_set_closes_every_writer_even_when_one_fails(tmp_path):
    class Boom(CallbackWriter):
        def _close(self):
            raise RuntimeError("boom")

    last = open_writer("jsonl", tmp_path / "x.jsonl")
    ws = WriterSet([Boom(lambda r: None), last])
    ws.write(make_results(1)[0])
    with pytest.raises(RuntimeError, match="boom"):
        ws.close()
    assert last.closed


# -- LSL -----------------------------------------------------------------------------------------


def test_lsl_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pylsl", None)  # makes `import pylsl` fail
    with pytest.raises(MissingDependencyError, match=r"emofuse\[sensors\]"):
        LslWriter()
    with pytest.raises(MissingDependencyError, match="pylsl"):
        open_writer("lsl")


def _liblsl_runs() -> bool:
    try:
        import pylsl  # noqa: F401  (raises RuntimeError when liblsl is missing)
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _liblsl_runs(), reason="pylsl with its liblsl is not installed (extra 'sensors')")
def test_lsl_outlet_to_inlet_round_trip_for_real():
    # Our outlet (LslWriter) through real liblsl on localhost into pylsl's own inlet: channel
    # labels in the stream description, one sample per result, NaN for unknown values.
    import uuid

    import pylsl

    name = f"emofuse-test-{uuid.uuid4().hex[:8]}"
    results = make_results(4)
    with LslWriter(stream_name=name, nominal_rate_hz=1.0) as w:
        found = pylsl.resolve_byprop("name", name, 1, 10.0)
        assert found, "the outlet was not found on localhost"
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(timeout=10.0)
        info = inlet.info(timeout=10.0)
        labels = [c[0] for c in outputs.LSL_CHANNELS]
        ch = info.desc().child("channels").first_child()
        got_labels = []
        while not ch.empty():
            got_labels.append(ch.child_value("label"))
            ch = ch.next_sibling()
        assert got_labels == labels and info.channel_count() == len(labels)
        time.sleep(0.5)  # let the inlet subscribe before data flows
        for r in results:
            w.write(r)
        rows = []
        deadline = time.monotonic() + 10.0
        while len(rows) < 4 and time.monotonic() < deadline:
            chunk, _ = inlet.pull_chunk(timeout=1.0)
            rows.extend(chunk)
        inlet.close_stream()
    assert len(rows) == 4
    ok_row, unknown_row = dict(zip(labels, rows[0])), dict(zip(labels, rows[3]))
    assert ok_row["hr_bpm"] == 72.0 and ok_row["valence_high_prob"] == 0.75
    assert np.isnan(unknown_row["hr_bpm"]) and unknown_row["contact_hr_bpm"] == 71.5


def test_lsl_pushes_one_sample_per_result_with_nan_for_unknown(monkeypatch):
    pushed, infos = [], []

    class Node:
        def append_child(self, _name):
            return Node()

        def append_child_value(self, _name, _value):
            return self

    class StreamInfo:
        def __init__(self, *args):
            infos.append(args)

        def desc(self):
            return Node()

    class StreamOutlet:
        def __init__(self, info):
            pass

        def push_sample(self, sample):
            pushed.append(list(sample))

    fake = types.SimpleNamespace(StreamInfo=StreamInfo, StreamOutlet=StreamOutlet)
    monkeypatch.setitem(sys.modules, "pylsl", fake)
    results = make_results(4)
    with LslWriter(nominal_rate_hz=1.0) as w:
        for r in results:
            w.write(r)
    labels = [c[0] for c in outputs.LSL_CHANNELS]
    assert infos[0][2] == len(labels) and infos[0][4] == "double64"
    assert len(pushed) == 4
    ok_row, unknown_row = dict(zip(labels, pushed[0])), dict(zip(labels, pushed[3]))
    assert ok_row["hr_bpm"] == 72.0 and ok_row["ok"] == 1.0 and ok_row["valence_high_prob"] == 0.75
    assert np.isnan(unknown_row["hr_bpm"]) and unknown_row["ok"] == 0.0
    assert np.isnan(unknown_row["arousal_high_prob"])
    assert unknown_row["contact_hr_bpm"] == 71.5


# -- annotated video -----------------------------------------------------------------------------


def test_video_has_every_frame_and_draws_the_overlay(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "v.avi"
    results = make_results(4)
    per_hop = 6
    with AnnotatedVideoWriter(path, fps=FS) as w:
        for i, r in enumerate(results):
            frames = _frames(per_hop)
            if i == 1:  # Frame records work too, with a box per frame
                frames = [Frame(t_ns=k, index=k, image=f) for k, f in enumerate(frames)]
                w.write(r, frames, {"face_boxes": [BOX] * per_hop})
            else:
                w.write(r, frames)
    n_expected = per_hop * len(results)
    assert w.n_frames == n_expected
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n_expected
    decoded = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        decoded.append(img)
    cap.release()
    assert len(decoded) == n_expected
    assert decoded[0].shape == (240, 320, 3)
    # The face box is drawn in green on an ok result's frames: its left edge is no longer grey.
    x, y, bw, bh = (int(v) for v in BOX)
    edge = decoded[0][y + bh // 2, x - 1:x + 2].astype(int)
    assert edge[:, 1].max() > 150 and edge[:, 0].min() < 150
    # The pulse trace strip is darkened and carries a line.
    strip = decoded[0][-20:, :, 1]
    assert strip.max() > 150 and np.median(strip) < 60


def test_mp4_video_is_compact_and_opens_again(tmp_path):
    # The same annotated frames as MPEG-4 (.mp4) and MJPEG (.avi): the .mp4 reads back frame by
    # frame, looks like the .avi, and is several times smaller.
    cv2 = pytest.importorskip("cv2")
    results = make_results(8)
    frames = _frames(30)
    sizes, decoded = {}, {}
    for ext in ("mp4", "avi"):
        path = tmp_path / f"v.{ext}"
        with AnnotatedVideoWriter(path, fps=FS) as w:
            for r in results:
                w.write(r, frames)
        sizes[ext] = path.stat().st_size
        cap = cv2.VideoCapture(str(path))
        got = []
        while True:
            ok, img = cap.read()
            if not ok:
                break
            got.append(img)
        cap.release()
        decoded[ext] = got
    assert len(decoded["mp4"]) == len(decoded["avi"]) == 8 * 30
    assert sizes["mp4"] * 3 < sizes["avi"], sizes
    diff = np.abs(decoded["mp4"][-1].astype(int) - decoded["avi"][-1].astype(int))
    assert np.mean(diff) < 12


def test_video_rejects_bad_frames_and_box_counts(tmp_path):
    w = AnnotatedVideoWriter(tmp_path / "v.avi")
    with pytest.raises(BadInputError, match="uint8"):
        w.write_frame(np.zeros((10, 10), np.float32))
    with pytest.raises(BadInputError, match="face_boxes"):
        w.write(make_results(1)[0], _frames(3), {"face_boxes": [BOX]})
    w.close()
    with pytest.raises(ConfigError):
        AnnotatedVideoWriter(tmp_path / "w.avi", fps=0)


# -- session report ------------------------------------------------------------------------------


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("n", [0, 12])
def test_report_is_a_png_of_the_asked_size(tmp_path, n):
    path = tmp_path / "report.png"
    with SessionReportWriter(path, size_px=(900, 700), dpi=100) as w:
        for r in make_results(n):
            w.write(r)
    assert _png_size(path) == (900, 700)


def test_report_draws_unknown_as_a_band_with_legends_outside_and_a_colour_bar(tmp_path):
    results = make_results(12)  # every 4th unknown; rPPG 72-77.5 bpm, contact 71.5
    w = SessionReportWriter(tmp_path / "r.png", size_px=(900, 700), dpi=100)
    for r in results:
        w.write(r)
    fig = w.figure()
    pulse_ax, tfr_ax, hr_ax, va_ax = fig.axes[:4]
    n_unknown = sum(r.status == "unknown" for r in results)
    # No marker stands for an unknown result; each gets a shaded band over its hop instead.
    assert not any(line.get_marker() == "x" for line in hr_ax.get_lines())
    assert len(hr_ax.patches) == n_unknown
    lo, hi = hr_ax.get_ylim()
    assert hi - lo >= 20.0  # a 6 bpm spread is not blown up to fill the panel
    # Legends sit right of their panels, never over the data.
    fig.canvas.draw()
    for ax in (hr_ax, va_ax):
        legend = ax.get_legend()
        assert legend is not None
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1 - 1
    assert "unknown" in [t.get_text() for t in hr_ax.get_legend().get_texts()]
    # The spectrogram has a colour bar (an inset axes) with a label.
    assert tfr_ax.child_axes and "peak" in tfr_ax.child_axes[0].get_ylabel()


def test_unknown_reasons_are_words_on_the_video():
    from edge.outputs.base import REASON_WORDS, _reason_words
    from edge.results import Reason

    assert set(REASON_WORDS) == {r.value for r in Reason}
    r = make_results(4)[3]
    assert _reason_words(r) == "no face"


def test_pulse_history_stitches_overlapping_windows_without_repeats():
    hist = outputs._PulseHistory()
    results = make_results(6)
    for r in results:
        hist.add(r, {})
    t, v = hist.arrays()
    # Windows overlap by 9 s; the stitched pulse has each sample once, evenly spaced.
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(np.diff(t), 1.0 / FS, atol=1e-9)
    assert t.size == int(PULSE_S * FS) + (len(results) - 1) * int(FS)
    np.testing.assert_allclose(v, np.sin(2 * np.pi * HR_HZ * t), atol=1e-5)
    with pytest.raises(BadInputError, match="sampling rate"):
        hist.add(results[0], {"pulse": np.zeros(10), "pulse_fs_hz": None})


# -- on a real pipeline --------------------------------------------------------------------------


@pytest.mark.slow
def test_writers_on_a_real_pipeline_run(tmp_path):
    """Every file writer fed by edge.Pipeline: the video by its on_frame hook, the rest by results."""
    cv2 = pytest.importorskip("cv2")
    pre = pytest.importorskip("export.data.preprocess")  # the preprocessing dict without a bundle
    from edge.pipeline import Pipeline

    seconds = 12
    video = AnnotatedVideoWriter(tmp_path / "run.avi", fps=30.0)
    pipe = Pipeline(f"sim://?duration_s={seconds}&width=320&height=240&seed=3", [], bundle=None,
                    preprocessing=pre.DEFAULT, on_frame=video.on_frame)
    writers = WriterSet([JsonLinesWriter(tmp_path / "run.jsonl", latency=False), CsvWriter(tmp_path / "run.csv"),
                         SessionReportWriter(tmp_path / "run.png", size_px=(800, 600))])
    results = []
    with writers:
        for r in pipe.results():
            results.append(r)
            writers.write(r)
    video.close()
    assert len(results) >= seconds - 1
    lines = (tmp_path / "run.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [r.seq for r in results]
    assert len(list(csv.reader((tmp_path / "run.csv").open(newline="")))) == len(results) + 1
    assert _png_size(tmp_path / "run.png") == (800, 600)
    cap = cv2.VideoCapture(str(tmp_path / "run.avi"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == seconds * 30 == video.n_frames
    cap.release()
    assert any(r.pulse is not None for r in results), "the pulse trace had something to draw"


def test_video_pulse_history_keeps_only_the_trace():
    hist = outputs._PulseHistory(keep_s=3.0)
    for r in make_results(8):
        hist.add(r, {})
    t, _ = hist.arrays()
    assert t[-1] - t[0] >= 3.0 - 1.0 / FS  # enough for the trace
    assert t[-1] - t[0] < 3.0 + 1.0 + 1e-9  # and at most one hop more
    assert hist.tail(3.0).size == int(3.0 * FS)
