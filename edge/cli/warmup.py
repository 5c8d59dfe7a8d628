"""``emofuse warmup``: compile every Numba kernel the runtime uses into the kernel cache.

A first run compiles the signal kernels (seconds, and a few hundred MB of compiler memory);
later runs load them from Numba's on-disk cache. ``warmup`` does the compiling ahead of time,
for a device image or a service's first start, into the folder chosen by
``emofuse --numba-cache DIR`` or ``EMOFUSE_NUMBA_CACHE`` (:mod:`edge.numba_cache`), which the
runtime then reads. It runs the same kernels on the same argument types as the pipeline's own
start (:func:`edge.pipeline.infer.warm_kernels`), with the bundle's preprocessing.
"""
from __future__ import annotations

import json
import sys
import time

from edge.cli import bundle_folder
from edge.numba_cache import numba_cache_dir


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "warmup",
        help="compile the Numba kernels into the kernel cache (before the first run)",
        description="Compile every Numba kernel the runtime uses, with a bundle's preprocessing, into "
        "the kernel cache (emofuse --numba-cache DIR, or EMOFUSE_NUMBA_CACHE), so that the runtime's "
        "first window does not wait for a compiler.",
    )
    p.add_argument("--bundle", default="default", metavar="DIR",
                   help="bundle whose preprocessing the kernels run with: a folder, 'default' or 'none' "
                        "(the standard preprocessing) (default: default)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def _kernels() -> dict:
    """Name -> Numba dispatcher of every kernel in the loaded ``edge.signals`` modules."""
    found = {}
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("edge.signals.") or module is None:
            continue
        for attr, value in vars(module).items():
            if hasattr(value, "signatures") and hasattr(value, "stats") and getattr(value, "__module__", None) == name:
                found[f"{name}.{attr}"] = value
    return found


def run(args) -> int:
    """Compile (or load) the kernels and print what happened. Returns 0.

    Raises:
        ConfigError, BadInputError: an unreadable bundle.
    """
    # Imported here, not at the top: edge.pipeline loads the runtime, and the parser stays light.
    from edge.bundle import load_bundle
    from edge.pipeline.infer import warm_kernels
    from edge.spec import DEFAULT

    if args.bundle.lower() == "none":
        preprocessing, source = DEFAULT, "the standard preprocessing"
    else:
        bundle = load_bundle(bundle_folder(args.bundle))
        preprocessing, source = bundle.manifest.preprocessing, f"the preprocessing of {bundle.root}"
    started = time.perf_counter()
    warm_kernels(preprocessing)
    seconds = time.perf_counter() - started
    # Kernels called only from other kernels are compiled into their callers' cache entries,
    # so a warm start enters fewer dispatchers than a cold one.
    used = {k: d for k, d in _kernels().items() if d.signatures}
    hits = sum(sum(d.stats.cache_hits.values()) for d in used.values())
    misses = sum(sum(d.stats.cache_misses.values()) for d in used.values())
    folder = numba_cache_dir()
    summary = {
        "cache_dir": str(folder) if folder else None, "seconds": round(seconds, 2), "kernels": len(used),
        "signatures": sum(len(d.signatures) for d in used.values()), "compiled": misses, "from_cache": hits,
        "preprocessing": source,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    where = folder if folder else "Numba's default cache (beside the sources or under ~/.cache)"
    print(f"emofuse warmup: {summary['kernels']} kernels ({summary['signatures']} signatures) ready in "
          f"{seconds:.1f} s with {source}: {misses} compiled, {hits} loaded from the cache; cache: {where}")
    return 0
