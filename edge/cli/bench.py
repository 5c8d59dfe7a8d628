"""``emofuse bench signals``: throughput of the Numba kernels against their NumPy references.

The figures go in docs/BENCHMARKS.md. Speed is measured here, never in timed tests (STYLE 14).
"""
from __future__ import annotations

import json
import os
import sys

from firmware_bridge.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark the signal kernels (bench signals)",
        description="Per-kernel throughput of the Numba kernels against their NumPy/SciPy "
        "references, with the Numba compile (cold-start) time shown apart.",
    )
    p.add_argument("target", help="what to benchmark: 'signals'")
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
                   help="longest signal the O(N^3) dense-detrend reference is run on (default 60)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.target != "signals":
        raise ConfigError(f"unknown bench target {args.target!r}: only 'signals' is available")
    if args.repeat < 1:
        raise ConfigError("--repeat must be >= 1")
    if args.cold:
        import tempfile

        # Must be set before numba is first imported in this process.
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="emofuse-numba-cold-")
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from edge import benchmarks

    rows = benchmarks.run_signal_benchmarks(
        lengths_s=args.lengths_s, repeat=args.repeat, dense_max_s=args.dense_max_s
    )
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        sys.stdout.write(benchmarks.format_table(rows, host=benchmarks.host_description()))
    return 0
