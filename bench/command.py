"""``emofuse bench signals``: throughput of the Numba kernels against NumPy/SciPy baselines
(:mod:`bench.signals`); ``emofuse bench BUNDLE``: latency and throughput of an exported bundle
per backend, precision and batch (:mod:`bench.bundle`); ``emofuse bench pipeline``: the whole
runtime on a recording against the issue-6 targets (:mod:`bench.pipeline`, docs/PERFORMANCE.md);
``emofuse bench rppg-methods``: each rPPG method's heart-rate error on the synthetic sweep and the
real clip, and its per-window cost (:mod:`bench.rppg_methods`).

The figures go in docs/BENCHMARKS.md and docs/QUANTIZATION.md. Speed is measured here, never
in timed tests (STYLE 14).
"""
from __future__ import annotations

import json
import os
import sys

from firmware_bridge.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark the signal kernels (bench signals), a bundle (bench BUNDLE) or the "
        "pipeline (bench pipeline)",
        description="'bench signals': per-kernel throughput of the Numba kernels against "
        "NumPy/SciPy baselines, with the Numba compile (cold-start) time shown apart; rows that "
        "cannot run (the MIT-BIH record not found) are named on stderr. "
        "'bench BUNDLE': latency p50/p99 and throughput of a bundle per backend, precision and "
        "batch, after warm-up, with the host's description. 'bench pipeline': the whole runtime "
        "on a recording (replay speed, latency, memory, start-up, per-stage time, a Jetson Orin "
        "Nano estimate) against the targets in docs/PERFORMANCE.md.",
    )
    p.add_argument("target", help="what to benchmark: 'signals', 'pipeline', 'rppg-methods', 'default' "
                   "(the packaged bundle) or a bundle folder")
    p.add_argument(
        "--lengths-s", type=float, nargs="+", default=[10.0, 60.0, 300.0],
        help="signal lengths in seconds (default 10 60 300)",
    )
    p.add_argument("--repeat", type=int, default=15, help="timed runs per case; the median is shown")
    p.add_argument(
        "--cold", action="store_true",
        help="compile into an empty Numba cache, so the first-call column is a true cold start",
    )
    p.add_argument(
        "--all-cores", action="store_true",
        help="do not pin the process to one core (default: one core, as the targets are stated)",
    )
    p.add_argument("--dense-max-s", type=float, default=60.0,
                   help="longest signal the O(N^3) dense-detrend baseline is run on (default 60)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="data folder holding ecg/mitdb-100/100.hea (bench signals) or "
                   "rppg/physrecorder-v01 (bench rppg-methods); default: "
                   "$EMOFUSE_DATA, else ../shared/data from the current directory)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    b = p.add_argument_group("bundle benchmark (bench BUNDLE)")
    b.add_argument("--backend", nargs="+", default=["onnxruntime"],
                   help="backends: onnxruntime, tensorrt, auto (default onnxruntime)")
    b.add_argument("--precision", nargs="+", default=None,
                   help="precisions: fp32 int8 fp16 (default fp32, and int8 when the bundle has it)")
    b.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    b.add_argument("--threads", type=int, default=1,
                   help="ONNX Runtime intra-op threads (default 1; 0 = its default)")
    b.add_argument("--runs", type=int, default=300,
                   help="timed runs per case at batch 1 (fewer at larger batches; default 300)")
    b.add_argument("--warmup", type=int, default=50, help="untimed runs per case first (default 50)")
    g = p.add_argument_group("pipeline benchmark (bench pipeline)")
    g.add_argument("--recording", default="sim",
                   help="a recording folder, or 'sim' (default): a synthetic 640x480 30 fps session")
    g.add_argument("--minutes", type=float, default=2.0,
                   help="length of the synthetic session, and the most replayed, min (default 2)")
    g.add_argument("--bundle", default="default",
                   help="bundle run with INT8 ONNX Runtime: 'default', a folder, or 'none' (default: default)")
    g.add_argument("--paced-s", type=float, default=60.0,
                   help="session seconds of the paced live-mode latency run; 0 skips it (default 60)")
    g.add_argument("--no-cold", action="store_true", help="skip the start with an empty Numba cache")
    g.add_argument("--fast-runs", type=int, default=1,
                   help="fast replays to run; the fastest is reported (default 1)")
    g.add_argument("--profile", action="store_true",
                   help="one more fast replay under cProfile (all threads); its top functions are listed")
    g.add_argument("--keep", default=None, help="build the synthetic recording in this folder and keep it")
    g.add_argument("--report", default=None, help="also write the report here (.json: JSON, else Markdown)")
    g.add_argument("--tracker", default=None, metavar="JSON",
                   help='face-tracker settings to try, e.g. \'{"detect_every": 30}\' (default: the pipeline\'s)')
    r = p.add_argument_group("rPPG methods (bench rppg-methods)")
    r.add_argument("--methods", nargs="+", default=None, help="rPPG methods (default: all registered)")
    r.add_argument("--rates-bpm", type=float, nargs="+", default=None,
                   help="synthetic rates (default 45 60 75 90 110 130 155 180)")
    r.add_argument("--session-s", type=float, default=20.0,
                   help="synthetic session length; 10 s windows start every 5 s (default 20)")
    r.add_argument("--no-real", action="store_true", help="skip the real clip")
    r.add_argument("--no-cost", action="store_true", help="skip the per-window cost")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.target == "pipeline":
        return run_pipeline(args)
    if args.target == "rppg-methods":
        return run_rppg_methods(args)
    if args.target != "signals":
        return run_bundle(args)
    if args.repeat < 1:
        raise ConfigError("--repeat must be >= 1")
    if args.cold:
        import tempfile

        # Must be set before numba is first imported in this process.
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="emofuse-numba-cold-")
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    # Imported after pinning to one core and setting NUMBA_CACHE_DIR (--cold), which it runs under.
    from bench import signals

    rows = signals.run_signal_benchmarks(
        lengths_s=args.lengths_s, repeat=args.repeat, dense_max_s=args.dense_max_s, data_dir=args.data,
        on_skip=lambda line: print(f"emofuse bench: {line}", file=sys.stderr, flush=True),
    )
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        sys.stdout.write(signals.format_table(rows, host=signals.host_description()))
    return 0


def run_bundle(args) -> int:
    from pathlib import Path

    if args.target == "default":
        from edge.pipeline import default_bundle_dir  # see the note at bench.bundle below

        args.target = str(default_bundle_dir())
    elif not Path(args.target).is_dir():
        raise ConfigError(f"unknown bench target {args.target!r}: 'signals', 'pipeline', 'default' or a "
                          "bundle folder")
    if args.threads < 0:
        raise ConfigError("--threads must be >= 0")
    if args.threads == 1 and not args.all_cores and hasattr(os, "sched_setaffinity"):
        # One thread on one core: the CPU target is stated that way, and it keeps the
        # scheduler from moving the run between cores mid-measurement.
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    # Imported when run: every `emofuse` command builds its parser from all command modules, so
    # the runtime and benchmark stacks would otherwise load for each of them.
    from bench import bundle as bb

    result = bb.bench_bundle(
        args.target, backends=args.backend, precisions=args.precision,
        batches=bb.check_batches(args.batch), threads=args.threads or None,
        warmup=args.warmup, runs=args.runs,
    )
    sys.stdout.write(bb.format_json_lines(result) if args.json else bb.format_bundle_table(result))
    return 0


def run_rppg_methods(args) -> int:
    from pathlib import Path

    from bench import rppg_methods as brm  # imported when run, as bench.bundle above
    from edge.signals.rppg import METHODS

    methods = args.methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown rPPG method(s) {unknown}; valid: {', '.join(sorted(METHODS))}")
    if args.session_s < brm.WINDOW_S:
        raise ConfigError(f"--session-s must be >= {brm.WINDOW_S} s (one heart-rate window)")
    starts = tuple(5.0 * k for k in range(int((args.session_s - brm.WINDOW_S) // 5.0) + 1))
    progress = lambda msg: print(f"emofuse bench: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    errors = brm.sweep_synthetic(methods, rates=tuple(args.rates_bpm or brm.RATES_BPM),
                                 duration_s=args.session_s, window_starts=starts, progress=progress)
    if not args.no_real:
        data = Path(args.data) if args.data else brm.default_data_dir()
        if not brm.real_clip(methods, data, errors, progress=progress):
            progress(f"skipped the real clip: {data / brm.CLIP} not found")
    cost = None if args.no_cost else brm.cost_per_window(methods)
    rows = brm.summarise(errors)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        for row in cost or []:
            print(json.dumps(row))
    else:
        sys.stdout.write(brm.format_tables(rows, cost))
    return 0


def run_pipeline(args) -> int:
    from pathlib import Path

    if args.fast_runs < 1:
        raise ConfigError("--fast-runs must be >= 1")
    from bench import pipeline as bp  # imported when run, as bench.bundle above

    report = bp.bench_pipeline(
        args.recording, minutes=args.minutes, bundle=args.bundle, paced_s=args.paced_s,
        cold_cache=not args.no_cold, one_core=not args.all_cores, profile=args.profile, keep=args.keep,
        tracker=_json_object(args.tracker, "--tracker"), fast_runs=args.fast_runs,
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    text = json.dumps(report, indent=2) + "\n" if args.json else bp.format_report(report)
    sys.stdout.write(text)
    if args.report:
        out = Path(args.report)
        out.write_text(json.dumps(report, indent=2) + "\n" if out.suffix == ".json" else bp.format_report(report),
                       encoding="utf-8")
    return 0


def _json_object(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object, got {text!r}")
    return value
