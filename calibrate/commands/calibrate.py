"""``emofuse calibrate BUNDLE``: calibration windows, a swept Q/DQ INT8 graph and its gate.

Steps: build (or reuse) ``calibration.npz`` and ``calibration_holdout.npz`` beside the bundle's
graphs from ``--data`` through the manifest's preprocessing (:mod:`calibrate.calibration`),
quantize with the sensitivity sweep (:mod:`calibrate.quantize`), and judge FP32 against INT8 on
the held-out gate windows (:mod:`calibrate.gate`). Exit codes: 0 the gate passed and
``model.int8.onnx`` is installed in the bundle; 1 the gate failed (the bundle is unchanged
apart from the calibration files, the rejected graph is left as ``model.int8.rejected.onnx``,
and the layers to keep in float are printed); 2 an error (one line).
"""
from __future__ import annotations

import json
import logging
import os
import sys

from calibrate.calibration import (
    CALIBRATION_FILE, HOLDOUT_FILE, build_calibration, load_calibration, parse_data_spec,
    write_calibration,
)
from calibrate.quantize import (
    DEFAULT_MIN_MACS, DEFAULT_MIN_SIDE, DEFAULT_NODE_TOLERANCE, QuantConfig, check_dependencies, quantize_bundle,
)
from edge.bundle import load_bundle
from edge.cli import bundle_folder
from firmware_bridge.errors import ConfigError, EmofuseError

log = logging.getLogger("emofuse.calibrate")

EXIT_GATE_FAILED = 1
# calibrate.calibration.DEFAULT_HOLDOUT, written out so that the parser imports nothing heavy
# (a test keeps the two equal).
DEFAULT_HOLDOUT = 1400


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="INT8 Q/DQ graph for a bundle, with a sensitivity sweep and an accuracy gate",
        description="Build calibration windows with the bundle's own preprocessing, quantize "
        "MatMul/Gemm/Conv to INT8 Q/DQ (per-channel weights), keep in float the layers the "
        "per-layer sweep finds sensitive, and gate FP32 vs INT8 on held-out windows. Exits 1 "
        "when decision agreement falls below --min-agreement, naming the layers to keep in float.",
    )
    p.add_argument("bundle", help="bundle folder (written by emofuse export), or 'default': the packaged "
                   "bundle, which is part of the installation and so is calibrated as a copy (--out)")
    p.add_argument("--out", metavar="DIR",
                   help="calibrate a copy of the bundle written to DIR (a new or empty folder); the "
                        "source bundle stays as it is")
    p.add_argument("--data", default="synth",
                   help="calibration data: synth[:seed=S,trials=T,subjects=N], recordings:DIR, "
                   "deap:DIR or npz:PATH (default synth: people the model never saw)")
    p.add_argument("--windows", type=int, default=500, help="calibration windows (default 500)")
    p.add_argument("--holdout", type=int, default=DEFAULT_HOLDOUT,
                   help=f"held-out windows, split into sweep and gate parts (default {DEFAULT_HOLDOUT}: about "
                        "700 gate windows, enough to tell 99 %% agreement from 98.5 %%)")
    p.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax",
                   help="activation range calibration (default minmax)")
    p.add_argument("--percentile", type=float, default=99.999, help="for --method percentile")
    p.add_argument("--min-agreement", type=float, default=0.99,
                   help="decision agreement every head must reach on the gate windows (default 0.99)")
    p.add_argument("--target", choices=("cpu", "tensorrt"), default="cpu",
                   help="cpu: uint8 activations (ONNX Runtime's fast path); tensorrt: symmetric "
                   "int8 activations (TensorRT's only Q/DQ form). Default cpu")
    p.add_argument("--op-types", nargs="+", default=["MatMul", "Gemm", "Conv"],
                   help="operator types that may be quantized (default MatMul Gemm Conv)")
    p.add_argument("--min-macs", type=int, default=None,
                   help="skip operators with fewer multiply-accumulates per window (default 100000)")
    p.add_argument("--min-side", type=int, default=None,
                   help="skip MatMul / Gemm whose weight has a side below this, and Conv whose output "
                        "channels or reduction (input channels x kernel size) are below it (default 32: "
                        "bottleneck adapters and convolutions over RGB gain nothing in INT8)")
    p.add_argument("--keep-float", nargs="+", default=[], metavar="NODE",
                   help="node names to keep in float whatever the sweep says")
    p.add_argument("--node-tolerance", type=float, default=None,
                   help=f"largest probability drift one node may cause alone (default {DEFAULT_NODE_TOLERANCE})")
    p.add_argument("--no-sweep", action="store_true",
                   help="quantize every candidate without the sensitivity sweep")
    p.add_argument("--quantizer", choices=("ort", "modelopt"), default="ort",
                   help="onnxruntime.quantization (default) or NVIDIA ModelOpt when installed")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per channel")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild the calibration windows even if matching files exist")
    p.add_argument("--seed", type=int, default=0, help="window selection seed (default 0)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="processes rendering synthetic windows (default: cores, at most 4)")
    p.add_argument("--json", action="store_true", help="print the manifest's quantization record as JSON")
    p.set_defaults(func=run)


def _reusable(bundle, spec: str, n_windows: int, n_holdout: int, seed: int):
    """The saved calibration sets when they were made from the same request, else None."""
    if not ((bundle.root / CALIBRATION_FILE).is_file() and (bundle.root / HOLDOUT_FILE).is_file()):
        return None
    try:
        calib, holdout = load_calibration(bundle)
    except EmofuseError as exc:
        log.info("saved calibration windows not reusable (%s); rebuilding", exc)
        return None
    same = (calib.meta.get("source") == str(parse_data_spec(spec)) and calib.meta.get("seed") == seed
            and calib.meta.get("requested") == [n_windows, n_holdout]
            and calib.meta.get("model_version") == bundle.manifest.model_version)
    return (calib, holdout) if same else None


def _target_folder(spec: str, out):
    """The folder to calibrate: ``spec`` itself, or a fresh copy of it at ``out``.

    Raises:
        ConfigError: ``default`` without ``--out``, or ``out`` exists and is not empty.
        BadInputError: the source is not a readable bundle.
    """
    import shutil
    from pathlib import Path

    if spec == "default":
        if not out:
            raise ConfigError("the packaged default bundle is part of the installation; calibrate a copy: "
                              "emofuse calibrate default --out DIR")
    src = bundle_folder(spec)
    if not out:
        return src
    source = load_bundle(src)  # refuse a broken source before copying anything
    dst = Path(out)
    if dst.resolve() == source.root.resolve():
        return dst
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConfigError(f"--out {dst} exists and is not an empty folder")
    dst.mkdir(parents=True, exist_ok=True)
    for item in source.root.iterdir():
        if item.is_file() and not item.name.endswith(".rejected.onnx"):
            shutil.copy2(item, dst / item.name)
    print(f"calibration: copied {source.root} to {dst}", file=sys.stderr)
    return dst


def run(args) -> int:
    if args.workers < 1:
        raise ConfigError("--workers must be >= 1")
    config = QuantConfig(
        method=args.method, per_channel=not args.per_tensor, op_types=tuple(args.op_types),
        target=args.target, min_macs=DEFAULT_MIN_MACS if args.min_macs is None else args.min_macs,
        min_side=DEFAULT_MIN_SIDE if args.min_side is None else args.min_side,
        keep_float=tuple(args.keep_float), sweep=not args.no_sweep,
        node_tolerance=DEFAULT_NODE_TOLERANCE if args.node_tolerance is None else args.node_tolerance,
        min_agreement=args.min_agreement, percentile=args.percentile, quantizer=args.quantizer,
    ).validate()
    check_dependencies(config.quantizer)  # before the copy and the minutes of rendering
    bundle = load_bundle(_target_folder(args.bundle, args.out))
    saved = None if args.rebuild else _reusable(bundle, args.data, args.windows, args.holdout, args.seed)
    if saved is not None:
        calib, holdout = saved
        print(f"calibration: reusing {len(calib)} + {len(holdout)} held-out windows saved in {bundle.root}",
              file=sys.stderr)
    else:
        print(f"calibration: building {args.windows} + {args.holdout} held-out windows from {args.data} "
              "with the bundle's preprocessing ...", file=sys.stderr)
        calib, holdout = build_calibration(bundle, args.data, args.windows, args.holdout, seed=args.seed,
                                           workers=args.workers, progress=True)
        calib.meta["requested"] = holdout.meta["requested"] = [args.windows, args.holdout]
        write_calibration(bundle.root, calib, holdout)
    print(f"calibration: {len(calib)} windows ({len(calib.meta.get('subjects', []))} subjects), "
          f"held out {len(holdout)}; quantizing ({config.method}, target {config.target}"
          f"{', sweep' if config.sweep else ''}) ...", file=sys.stderr)
    result = quantize_bundle(bundle, calib, holdout, config)
    if args.json:
        print(json.dumps(result.record, indent=2))
    else:
        sys.stdout.write(result.text())
    if not result.passed:
        print(f"emofuse calibrate: INT8 gate failed (lowest agreement {result.gate.min_agreement:.2%} < "
              f"{config.min_agreement:.2%}); bundle left without an INT8 graph, rejected graph at "
              f"{result.int8_path}", file=sys.stderr)
        if result.suggestions:
            print("emofuse calibrate: try --keep-float " + " ".join(result.suggestions), file=sys.stderr)
        return EXIT_GATE_FAILED
    print(f"emofuse calibrate: installed {result.int8_path} (quantization recorded in manifest.json)",
          file=sys.stderr)
    return 0
