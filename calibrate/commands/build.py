"""``emofuse build BUNDLE --precision int8|fp16|fp32``: TensorRT engines for this machine.

Builds (or confirms up to date) the TensorRT plan of a bundle graph with
:func:`calibrate.engine_build.build_engine` and records it in the bundle's manifest. Needs
TensorRT and a CUDA binding (``pip install 'emofuse[jetson]'`` on top of JetPack's TensorRT).
"""
from __future__ import annotations

import json
import os

from calibrate.engine_build import (
    DEFAULT_CALIB_BATCH,
    DEFAULT_MAX_BATCH,
    DEFAULT_WORKSPACE_MB,
    build_engine,
)
from edge.cli import bundle_folder
from firmware_bridge.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="build a TensorRT engine for a bundle (Jetson / NVIDIA GPU)",
        description="Build the TensorRT engine of a bundle graph for this machine's TensorRT "
        "version and GPU, named by a key of graph hash, TensorRT version, GPU, precision and "
        "batch profile, and record it in manifest.json. A stale engine (other TensorRT, other "
        "GPU, changed graph) is rebuilt, or with --no-rebuild reported as an error.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder (holds manifest.json), or 'default': the "
                   "packaged bundle (its engines are written beside it, so it must be writable)")
    p.add_argument("--precision", required=True, choices=["int8", "fp16", "fp32"],
                   help="int8: from the Q/DQ graph of `emofuse calibrate` (or, on TensorRT 10, "
                   "implicit calibration); fp16; fp32")
    p.add_argument("--role", default="model", choices=["model", "face_encoder"],
                   help="which graph of the bundle (default model; MVP also has face_encoder)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"largest batch of the optimization profile (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--opt-batch", type=int, default=1,
                   help="batch TensorRT tunes for (default 1: one camera, lowest latency)")
    p.add_argument("--workspace-mb", type=int, default=DEFAULT_WORKSPACE_MB,
                   help=f"workspace memory limit, MiB (default {DEFAULT_WORKSPACE_MB}; Jetson "
                   "memory is shared with the CPU)")
    p.add_argument("--dla-core", type=int, default=None, metavar="N",
                   help="build for DLA core N (Orin), with GPU fallback; fp16/int8 only")
    p.add_argument("--timing-cache", metavar="PATH", default=None,
                   help="timing cache file (default BUNDLE/engines/timing-<trt>-<gpu>.cache)")
    p.add_argument("--int8-mode", choices=["qdq", "calibrated"], default=None,
                   help="int8 from the Q/DQ graph (default when present) or TensorRT 10's "
                   "implicit entropy calibration")
    p.add_argument("--calibration", metavar="NPZ", default=None,
                   help="calibration set for implicit int8 (default BUNDLE/calibration.npz)")
    p.add_argument("--calib-batch", type=int, default=DEFAULT_CALIB_BATCH,
                   help=f"calibration batch size (default {DEFAULT_CALIB_BATCH})")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.add_argument("--no-rebuild", action="store_true",
                   help="fail, saying why, instead of rebuilding a stale engine")
    p.add_argument("--device", type=int, default=0, help="CUDA device (default 0)")
    p.add_argument("--json", action="store_true", help="print the engine record as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    """Build the engine; print what was done. Returns 0.

    Raises:
        MissingDependencyError, ConfigError, EngineBuildError, BadInputError: see
            :func:`calibrate.engine_build.build_engine`.
    """
    folder = bundle_folder(args.bundle)
    if args.bundle == "default" and not os.access(folder, os.W_OK):
        raise ConfigError(f"the packaged bundle {folder} is not writable, and engines are written beside it; "
                          f"copy it (cp -r {folder} my-bundle) and build that: emofuse build my-bundle ...")
    result = build_engine(
        folder, args.precision, role=args.role, max_batch=args.max_batch,
        opt_batch=args.opt_batch, workspace_mb=args.workspace_mb, dla_core=args.dla_core,
        timing_cache=args.timing_cache, calibration=args.calibration, int8_mode=args.int8_mode,
        calib_batch=args.calib_batch, force=args.force,
        on_stale="fail" if args.no_rebuild else "rebuild", device=args.device)
    if args.json:
        print(json.dumps({"status": "built" if result.built else "up-to-date",
                          "file": result.record.file, "record": result.record.to_dict(),
                          "reasons": list(result.plan.reasons), "pruned": result.pruned},
                         indent=2))
    else:
        print(result.describe())
        for note in result.notes:
            print(f"note: {note}")
        for f in result.pruned:
            print(f"removed {f} (its graph changed)")
    return 0
