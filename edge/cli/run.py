"""``emofuse run``, ``emofuse replay`` and ``emofuse demo``: the streaming runtime on the command line.

::

    emofuse run --camera 0 --sensor serial:///dev/ttyUSB0 --bundle default --out results.jsonl
    emofuse run --camera sim:// --sensor sim:// --record rec1/ --duration-s 30
    emofuse replay rec1/ --out results.jsonl          # byte-identical on every run
    emofuse demo                                      # synthetic camera + simulated serial board

Every flag can also come from a TOML file (``--config FILE``) under the same name (dashes or
underscores), flags winning over the file::

    camera = "sim://"
    sensor = ["sim://"]
    bundle = "default"
    out = "results.jsonl"
    log_level = "info"

Outputs (:mod:`edge.outputs`): JSON lines (``--out``, ``-`` for stdout), CSV (``--csv``), an
annotated video (``--video``), a session report PNG (``--report``), a Lab Streaming Layer
outlet (``--lsl``). Standard output shows a live table, or the JSON lines when no ``--out`` is
given (``--print`` chooses). Ctrl-C stops cleanly (recorder flushed, files closed) with exit
code 0; an error is one line and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from firmware_bridge.errors import ConfigError

log = logging.getLogger("emofuse.run")

LOG_LEVELS = ("debug", "info", "warning", "error")
PRINT_CHOICES = ("table", "jsonl", "none")

# Built-in defaults per setting (a flag or a TOML key of the same name overrides them).
_COMMON_DEFAULTS: dict[str, Any] = {
    "bundle": "default", "backend": "auto", "precision": "auto", "hop_s": 1.0, "out": None, "csv": None,
    "video": None, "report": None, "lsl": False, "print": None, "latency": None, "min_pulse_quality": 0.5,
    "duration_s": None, "log_level": None, "threads": 1,
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "run": {**_COMMON_DEFAULTS, "camera": None, "sensor": [], "record": None, "mode": "live"},
    "replay": {**_COMMON_DEFAULTS, "recording": None, "realtime": False},
    "demo": {**_COMMON_DEFAULTS, "precision": "int8", "duration_s": 75.0, "seed": 0, "out_dir": "emofuse-demo",
             "print": "table", "frame_width": 320, "frame_height": 240},
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="TOML", help="read settings from a TOML file (flags win)")
    p.add_argument("--bundle", metavar="DIR", help="model bundle folder, 'default' (the packaged one) or 'none' "
                   "(signals only) (default: default)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"),
                   help="inference backend (default auto: TensorRT when a matching engine exists)")
    p.add_argument("--precision", choices=("auto", "int8", "fp16", "fp32"),
                   help="model precision (default auto: INT8 when the bundle has it)")
    p.add_argument("--hop-s", type=float, metavar="S", help="seconds between results (default 1)")
    p.add_argument("--out", metavar="FILE", help="write JSON lines here ('-' for stdout)")
    p.add_argument("--csv", metavar="FILE", help="write a CSV table here")
    p.add_argument("--video", metavar="FILE", help="write the annotated video here (.mp4: compact MPEG-4; .avi: MJPEG, "
                   "plays up to the last frame after a crash)")
    p.add_argument("--report", metavar="FILE", help="write the session report here (.png) at the end")
    p.add_argument("--lsl", action="store_true", default=None, help="publish results on a Lab Streaming Layer outlet")
    p.add_argument("--print", choices=PRINT_CHOICES,
                   help="what standard output shows (default: a table when --out is given, else JSON lines)")
    p.add_argument("--latency", action=argparse.BooleanOptionalAction, default=None,
                   help="include per-stage latency in the JSON (default: yes for run, no for replay, "
                   "whose JSON is then byte-identical from run to run)")
    p.add_argument("--min-pulse-quality", type=float, metavar="Q",
                   help="rPPG heart rates below this quality (0-1) are reported unknown (default 0.5)")
    p.add_argument("--duration-s", type=float, metavar="S", help="stop after this much session time")
    p.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime threads per engine (default 1)")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="logging level (default warning; -v raises it too)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run the pipeline on a camera and contact sensors",
        description="Stream a camera and contact sensors through face tracking, rPPG, contact "
        "physiology and the emotion model; a result every hop.")
    p.add_argument("--camera", metavar="URI", help="camera: 0, /dev/video0, a file, rtsp://, csi://0, sim://, "
                   "a recording folder")
    p.add_argument("--sensor", action="append", metavar="URI",
                   help="contact sensor (repeatable): serial:///dev/ttyUSB0, ble://MAC, lsl://NAME, sim://, "
                   "replay://DIR")
    p.add_argument("--record", metavar="DIR", help="also record the session into this new folder")
    p.add_argument("--mode", choices=("live", "replay"),
                   help="live (drop stale frames; default) or replay (every frame, deterministic)")
    _add_common(p)
    p.set_defaults(func=run_command, command_name="run")

    p = subparsers.add_parser(
        "replay", help="replay a recording through the pipeline (deterministic)",
        description="Replay a recording folder (emofuse or PhysRecorder) through the pipeline, every "
        "frame, as fast as it goes; the same recording gives byte-identical JSON lines.")
    p.add_argument("recording", nargs="?", metavar="RECORDING", help="recording folder")
    p.add_argument("--realtime", action="store_true", default=None, help="pace the replay at the recorded speed")
    _add_common(p)
    p.set_defaults(func=run_command, command_name="replay")

    p = subparsers.add_parser(
        "demo", help="the whole pipeline on a synthetic person, offline",
        description="Stream a synthetic session from the simulated camera and the simulated serial "
        "sensor board (a pseudo-terminal, the real protocol decoder) into the pipeline with the default "
        "bundle's INT8 model; print a live table, write the annotated video and the session report.")
    p.add_argument("--seed", type=int, help="the synthetic person's seed (default 0)")
    p.add_argument("--out-dir", metavar="DIR", help="where the video, report and JSON lines go (default "
                   "./emofuse-demo)")
    p.add_argument("--frame-width", type=int, metavar="PX", help="synthetic frame width (default 320)")
    p.add_argument("--frame-height", type=int, metavar="PX", help="synthetic frame height (default 240)")
    _add_common(p)
    p.set_defaults(func=run_command, command_name="demo")


# -- settings ---------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML settings file: keys are the flag names (dashes or underscores).

    Returns:
        dict of normalised keys (underscores) to values.

    Raises:
        ConfigError: unreadable or malformed TOML.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 (JetPack 6): the same parser, as a package
        import tomli as tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The command's settings: built-in defaults, then the TOML file, then the flags.

    Raises:
        ConfigError: a TOML key that is not a setting of this command, or a value of the wrong
            kind.
    """
    command = args.command_name
    defaults = _DEFAULTS[command]
    out = dict(defaults)
    if getattr(args, "config", None):
        data = load_config(args.config)
        unknown = sorted(set(data) - set(defaults))
        if unknown:
            raise ConfigError(f"{args.config}: unknown setting(s) {', '.join(unknown)} for 'emofuse {command}'; "
                              f"valid: {', '.join(sorted(defaults))}")
        for key, value in data.items():
            if key == "sensor" and isinstance(value, str):
                value = [value]
            want = defaults[key]
            if want is not None and not isinstance(want, list) and not isinstance(value, type(want)) \
                    and not (isinstance(want, float) and isinstance(value, int) and not isinstance(value, bool)):
                raise ConfigError(f"{args.config}: {key} must be {type(want).__name__}, got {value!r}")
            out[key] = value
    for key in defaults:
        value = getattr(args, key, None)
        if value is not None and value != []:
            out[key] = value
    return out


def _set_log_level(level: str | None) -> None:
    if level:
        logging.getLogger().setLevel(getattr(logging, level.upper()))


# -- printing ---------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str, width: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "--".rjust(width)
    return format(value, spec).rjust(width)


TABLE_HEADER = (f"{'t_s':>7} {'status':>7} {'HR[bpm]':>7} {'q':>5} {'cHR[bpm]':>8} {'SDNN[ms]':>8} "
                f"{'EDA[uS]':>7} {'SCR':>4} {'P(V+)':>6} {'P(A+)':>6}  reasons")
#: One line, printed on stderr above the table, saying what the columns are.
TABLE_LEGEND = ("columns: HR heart rate from the face (rPPG); q its pulse quality 0-1; cHR contact heart rate; "
                "SDNN beat-to-beat variability; EDA tonic skin conductance; SCR skin-conductance responses in "
                "the window; P(V+) / P(A+) probability of high valence / arousal; -- not available")


def table_row(result) -> str:
    """One fixed-width line of the live table for a result."""
    pv = None if result.valence_prob is None else result.valence_prob[1]
    pa = None if result.arousal_prob is None else result.arousal_prob[1]
    return (f"{_fmt(result.t_s, '.1f', 7)} {result.status:>7} {_fmt(result.hr_bpm, '.1f', 7)} "
            f"{_fmt(result.hr_quality, '.2f', 5)} {_fmt(result.contact_hr_bpm, '.1f', 8)} "
            f"{_fmt(result.contact_sdnn_ms, '.0f', 8)} {_fmt(result.eda_tonic_us, '.2f', 7)} "
            f"{_fmt(result.eda_scr_count, 'd', 4)} {_fmt(pv, '.2f', 6)} {_fmt(pa, '.2f', 6)}  "
            f"{','.join(result.reasons)}")


# -- running ----------------------------------------------------------------------------------------


def _writers(cfg: dict, latency: bool, fps: float | None):
    """(the text and LSL writers as one WriterSet, the video writer or None, the report writer
    or None). The report is kept apart: it is drawn last, once the pipeline is released
    (:func:`_draw_report`)."""
    from edge.outputs import WriterSet, open_writer

    ws = WriterSet()
    video = report = None
    try:
        if cfg["out"]:
            ws.add(open_writer("jsonl", cfg["out"], latency=latency))
        if cfg["csv"]:
            ws.add(open_writer("csv", cfg["csv"]))
        if cfg["lsl"]:
            ws.add(open_writer("lsl", nominal_rate_hz=1.0 / float(cfg["hop_s"])))
        video = open_writer("video", cfg["video"], fps=fps or 30.0) if cfg["video"] else None
        report = open_writer("report", cfg["report"]) if cfg["report"] else None
    except BaseException:
        ws.close()
        if video is not None:
            video.close()
        raise
    return ws, video, report


def _malloc_trim():
    """glibc's ``malloc_trim`` as a callable, or None (no glibc: musl, macOS)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


#: glibc heaps (malloc arenas) the runtime's threads share. glibc's default, 8 per core, lets each
#: of the pipeline's threads keep its own heap with its own free pages: resident memory of the
#: 75 s demo then varies by 15-20 MB from run to run and crossed the 400 MB budget
#: (docs/PERFORMANCE.md). ``MALLOC_ARENA_MAX`` in the environment wins.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt parameter number (glibc malloc.h)


def _cap_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas at :data:`MALLOC_ARENAS` before the pipeline starts its threads,
    unless ``MALLOC_ARENA_MAX`` is set. Returns True when the cap was applied (False without
    glibc, or when the environment sets it)."""
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    except OSError:
        mallopt = None
    if mallopt is None:
        return False
    ok = bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
    log.debug("malloc arenas capped at %d: %s", MALLOC_ARENAS, ok)
    return ok


def _release_memory() -> None:
    """Give freed memory back to the system before the report is drawn: collect the pipeline's
    cycles, then ask glibc to return its free heap pages (``malloc_trim``), which it does not do
    by itself for memory freed in the middle of the heap. Without glibc (musl) only the
    collection runs."""
    import gc

    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _draw_report(report) -> None:
    """Draw the session report, after the pipeline, its engines and the other writers are closed
    and released: Matplotlib and the page's buffers then reuse their memory instead of adding to
    the run's peak (docs/PERFORMANCE.md)."""
    if report is None:
        return
    _release_memory()
    report.close()


def _truth_or_none(build, *args):
    """``build(*args)``, or None with a warning when the truth cannot be read: a damaged
    reference costs the report its truth, not the run its results."""
    from firmware_bridge.errors import EmofuseError

    try:
        return build(*args)
    except EmofuseError as exc:
        log.warning("the report draws no ground truth: %s", exc)
        return None


def _session_origin_ns(pipeline) -> int | None:
    """The host time of the pipeline's session t = 0 (its first frame, or first sensor sample
    without a camera), ns; None before it started."""
    origin = getattr(getattr(pipeline, "windows", None), "origin_ns", None) if pipeline.camera is not None \
        else getattr(getattr(pipeline, "clock", None), "origin_ns", None)
    return None if origin is None else int(origin)


def replay_truth(recording, pipeline):
    """The ground truth of a replay: the recording's reference pulse (a PhysRecorder folder's
    finger BVP, else its PPG stream) on the pipeline's session clock, its heart rate over the
    pipeline's own rPPG window; None when the recording has no pulse stream or the pipeline
    never started.

    Returns:
        An :class:`edge.outputs.truth.SessionTruth`, or None.
    """
    from edge.outputs.truth import SessionTruth, recording_heart_truth

    origin = _session_origin_ns(pipeline)
    if origin is None:
        return None
    r = pipeline.p.rppg
    heart = recording_heart_truth(recording, origin, float(r.pulse_window_s))
    if heart is None:
        log.info("%s: no reference pulse stream; the report draws no truth", recording)
        return None
    return SessionTruth(heart=heart, source=f"{heart.label} in the recording")


def _pipeline_kwargs(cfg: dict) -> dict:
    return {"backend": cfg["backend"], "precision": cfg["precision"], "hop_s": float(cfg["hop_s"]),
            "min_pulse_quality": float(cfg["min_pulse_quality"]), "intra_op_threads": int(cfg["threads"])}


def stream(pipeline, cfg: dict, *, latency: bool, video=None, writers=None, printer: str = "table",
           out=None) -> int:
    """Run a pipeline to its end (or ``duration_s``), feeding the writers (one writer or a
    sequence of them) and standard output.

    Returns:
        The number of results.
    """
    out = sys.stdout if out is None else out
    sinks = [] if writers is None else [writers] if hasattr(writers, "write") else [w for w in writers if w is not None]
    n = 0
    duration = cfg.get("duration_s")
    if printer == "table":
        print(TABLE_LEGEND, file=sys.stderr, flush=True)
        print(TABLE_HEADER, file=out, flush=True)
    for result in pipeline.results():
        if duration is not None and result.t_s > float(duration) + 1e-9:
            break
        for w in sinks:
            w.write(result)
        if video is not None:
            video.write(result)
        if printer == "table":
            print(table_row(result), file=out, flush=True)
        elif printer == "jsonl":
            print(result.to_json(latency=latency), file=out, flush=True)
        n += 1
        if duration is not None and result.t_s >= float(duration) - 1e-9:
            break
    return n


def run_command(args: argparse.Namespace) -> int:
    """Entry point of ``run``, ``replay`` and ``demo`` (see the module docstring).

    Raises:
        EmofuseError: a bad setting, an unreadable bundle or recording, a device that cannot
            be opened (one line, exit 2 via the CLI).
    """
    cfg = settings(args)
    _set_log_level(cfg.get("log_level"))
    _cap_malloc_arenas()
    command = args.command_name
    if command == "demo":
        return _demo(cfg)
    from edge.pipeline import Pipeline

    if cfg["hop_s"] is None or not float(cfg["hop_s"]) > 0:
        raise ConfigError(f"--hop-s must be > 0, got {cfg['hop_s']!r}")
    latency = cfg["latency"] if cfg["latency"] is not None else command == "run"
    printer = cfg["print"] or ("table" if cfg["out"] and cfg["out"] != "-" else "jsonl")
    if printer == "jsonl" and cfg["out"] == "-":
        printer = "none"  # the JSON lines already go to stdout
    video_holder: dict[str, Any] = {}

    def on_frame(event) -> None:
        v = video_holder.get("video")
        if v is not None:
            v.write_frame(event.frame.image, event.box)

    kwargs = _pipeline_kwargs(cfg)
    if cfg["video"]:
        kwargs["on_frame"] = on_frame
    if command == "replay":
        if not cfg["recording"]:
            raise ConfigError("replay needs a RECORDING folder (argument or 'recording' in the config)")
        pipeline = Pipeline.from_recording(cfg["recording"], cfg["bundle"], realtime=bool(cfg["realtime"]),
                                           mode="replay", **kwargs)
    else:
        if not cfg["camera"] and not cfg["sensor"]:
            raise ConfigError("run needs --camera URI, --sensor URI, or both")
        pipeline = Pipeline(cfg["camera"], list(cfg["sensor"]), cfg["bundle"], mode=cfg["mode"],
                            record=cfg["record"], **kwargs)
    writers = video = report = None
    summary = None
    try:
        try:
            writers, video, report = _writers(cfg, latency, getattr(pipeline.camera, "fps", None))
            video_holder["video"] = video
            log.info("pipeline: %s", pipeline.metadata)
            n = stream(pipeline, cfg, latency=latency, video=video, writers=(writers, report), printer=printer)
            log.info("%d results; %s", n, pipeline.stats())
        finally:
            pipeline.close()  # stops the threads (no more on_frame calls), flushes the recorder
            try:
                summary = pipeline.summary(_files_written(cfg))
                if report is not None and command == "replay":
                    report.set_truth(_truth_or_none(replay_truth, cfg["recording"], pipeline))
            finally:
                video_holder.clear()
                pipeline = None  # the engines, buffers and tracker can go before the report is drawn
                from edge.outputs import close_all

                close_all((video, writers))
    finally:
        try:
            _draw_report(report)
        finally:
            # Also after Ctrl-C: what the run produced and where it went.
            if summary is not None:
                print(summary, file=sys.stderr, flush=True)
    return 0


def _files_written(cfg: dict) -> list[str]:
    return [str(cfg[k]) for k in ("out", "csv", "video", "report") if cfg.get(k) and cfg[k] != "-"]


# -- the demo ---------------------------------------------------------------------------------------


#: The demo's script: three segments of equal length, each with a label that is unambiguous on
#: both axes (valence 0 is the decision boundary, so no segment sits on it): name, expression
#: valence, expression arousal, heart rate (bpm), skin-conductance responses in the segment.
DEMO_SEGMENTS = (
    ("tense", -0.7, 0.6, 84.0, 3),      # a frown, a raised pulse, responses: low valence, high arousal
    ("calm", 0.5, -0.6, 62.0, 0),       # a soft smile, a slow pulse, quiet skin: high valence, low arousal
    ("elated", 0.85, 0.7, 88.0, 3),     # a broad smile, a fast pulse, responses: high valence, high arousal
)


def demo_segments(duration_s: float) -> list[dict]:
    """The demo script's segments with their times: ``name``, ``t0_s``, ``t1_s``, ``valence`` and
    ``arousal`` labels (``"low"`` / ``"high"``) - the ground truth the report draws and the demo
    test checks the model against."""
    d = float(duration_s) / len(DEMO_SEGMENTS)
    return [{"name": n, "t0_s": k * d, "t1_s": (k + 1) * d, "valence": "high" if v > 0 else "low",
             "arousal": "high" if a > 0 else "low", "expression_valence": v, "expression_arousal": a, "hr_bpm": hr}
            for k, (n, v, a, hr, _) in enumerate(DEMO_SEGMENTS)]


def demo_session(duration_s: float, seed: int, fps: float, frame_size: tuple[int, int]):
    """The demo's synthetic person, following :data:`DEMO_SEGMENTS`: tense, then calm, then
    elated. Expressions, heart rate and skin-conductance responses change over 3 s (a quarter
    of a segment when shorter) at each segment start.

    Returns:
        A ``firmware_bridge.sim.SyntheticSession``.
    """
    from firmware_bridge.sim import SimConfig, synth_session

    d = float(duration_s)
    seg = demo_segments(d)
    ramp = min(3.0, 0.25 * (seg[0]["t1_s"] - seg[0]["t0_s"]))
    valence, arousal, hr, onsets = [], [], [], []
    for k, s in enumerate(seg):
        t0 = s["t0_s"] + (ramp if k else 0.0)
        for pts, value in ((valence, s["expression_valence"]), (arousal, s["expression_arousal"]), (hr, s["hr_bpm"])):
            if k:
                pts.append((s["t0_s"], pts[-1][1]))
            pts.append((t0, value))
        n_scr = DEMO_SEGMENTS[k][4]
        onsets += [s["t0_s"] + (j + 1) * (s["t1_s"] - s["t0_s"]) / (n_scr + 1) for j in range(n_scr)]
    config = SimConfig(
        duration_s=d, seed=int(seed), fps=float(fps), frame_size=frame_size, face_scale=0.5,
        hr_bpm=tuple(hr), hrv_sdnn_ms=30.0,
        pulse_amplitude=0.005, noise_sigma=1.0, motion_px=0.5, illumination_pct=1.0,
        scr_onsets_s=tuple(float(t) for t in onsets if t < d),
        scr_amplitudes_us=0.6, eda_noise_us=0.005,
        expression_valence=tuple(valence), expression_arousal=tuple(arousal),
    )
    return synth_session(config)


def demo_truth(session, window_s: float, shift_s: float = 0.0):
    """The demo's ground truth for the report: the script's segments (:func:`demo_segments` of
    the session's own duration) and the beats the synthetic heart was given, on the pipeline's
    session clock.

    Args:
        session: the ``firmware_bridge.sim.SyntheticSession`` from :func:`demo_session`.
        window_s: the pipeline's rPPG heart-rate window, s (the truth is also drawn over it).
        shift_s: the synthetic session's time of the pipeline's t = 0 (its first frame), s.

    Returns:
        An :class:`edge.outputs.truth.SessionTruth`.
    """
    from edge.outputs.truth import HeartTruth, SessionTruth, TruthSegment

    segments = tuple(TruthSegment(s["name"], s["t0_s"] - shift_s, s["t1_s"] - shift_s, s["valence"], s["arousal"])
                     for s in demo_segments(session.config.duration_s))
    heart = HeartTruth("script", float(window_s), beat_times_s=session.beat_times_s - shift_s)
    return SessionTruth(segments=segments, heart=heart, source="demo script")


def _demo(cfg: dict) -> int:
    from edge.pipeline import Pipeline, resolve_bundle
    from firmware_bridge.cameras.sim import SimCameraSource
    from firmware_bridge.simdevice import BoardStream, SimulatedSensorBoard
    from firmware_bridge.transports.serial import SerialSensorSource

    duration = float(cfg["duration_s"])
    if not duration > 0:
        raise ConfigError(f"--duration-s must be > 0, got {duration!r}")
    bundle = resolve_bundle(cfg["bundle"])
    if bundle is None:
        raise ConfigError("the demo needs a model bundle; pass --bundle DIR or keep the default")
    out_dir = Path(cfg["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for key, name in (("out", "results.jsonl"), ("video", "demo.mp4"), ("report", "report.png")):
        if not cfg[key]:
            cfg[key] = str(out_dir / name)
    fps = float(bundle.preprocessing.fps)
    # A little longer than asked, so the last hop has its frames and samples.
    session = demo_session(duration + 2.0, int(cfg["seed"]), fps, (int(cfg["frame_width"]), int(cfg["frame_height"])))
    streams = [BoardStream("ecg", session.ecg.values, session.ecg.fs_hz, session.ecg.units),
               BoardStream("ppg_ir", session.ppg.values, session.ppg.fs_hz, session.ppg.units),
               BoardStream("eda", session.eda.values, session.eda.fs_hz, session.eda.units)]
    print(f"emofuse demo: a synthetic person for {duration:g} s (camera sim://, sensor board on a "
          f"pseudo-terminal); model {bundle.manifest.model_name} ({cfg['precision']}) from {bundle.root}",
          file=sys.stderr)
    print("  heart rate from the face after 10 s; valence / arousal once the model's window is full",
          file=sys.stderr)
    video_holder: dict[str, Any] = {}

    def on_frame(event) -> None:
        v = video_holder.get("video")
        if v is not None:
            v.write_frame(event.frame.image, event.box)

    report = None
    summary = None
    try:
        with SimulatedSensorBoard(streams, speed=1.0) as board:
            sensor = SerialSensorSource(board.path)  # the board starts sampling at START, sent here
            origin_ns = time.monotonic_ns()
            try:
                camera = SimCameraSource.from_session(session, realtime=True, origin_ns=origin_ns)
            except BaseException:
                sensor.close()
                raise
            pipeline = Pipeline(camera, [sensor], bundle, mode="live", on_frame=on_frame, **_pipeline_kwargs(cfg))
            writers = video = None
            try:
                writers, video, report = _writers(cfg, True, fps)
                video_holder["video"] = video
                n = stream(pipeline, cfg, latency=True, video=video, writers=(writers, report),
                           printer=cfg["print"] or "table")
                stats = pipeline.stats()
            finally:
                pipeline.close()
                try:
                    summary = pipeline.summary(_files_written(cfg))
                    if report is not None:
                        # The session's t = 0 is the first frame the pipeline took; the script's is
                        # the synthetic session's start, put at origin_ns.
                        first = _session_origin_ns(pipeline)
                        shift_s = 0.0 if first is None else (first - origin_ns) / 1e9
                        report.set_truth(demo_truth(session, float(pipeline.p.rppg.pulse_window_s), shift_s))
                finally:
                    video_holder.clear()
                    pipeline = camera = sensor = None  # released before the report is drawn
                    from edge.outputs import close_all

                    close_all((video, writers))
        session = streams = board = None
    finally:
        try:
            _draw_report(report)
        finally:
            if summary is not None:
                print(summary, file=sys.stderr, flush=True)
    serial = (stats.get("serial") or [{}])[0]
    print(f"emofuse demo: {n} results, {stats['frames_processed']} frames ({stats['frames_dropped']} dropped), "
          f"serial link: {serial.get('frames_ok', '?')} messages, {serial.get('crc_errors', 0)} CRC errors",
          file=sys.stderr)
    print(f"  results {cfg['out']}\n  video   {cfg['video']}\n  report  {cfg['report']}", file=sys.stderr)
    return 0
