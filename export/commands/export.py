"""``emofuse export``: a trained checkpoint -> a verified ONNX bundle for the device.

    emofuse export runs/promptfusion/checkpoint.pt --out bundles/promptfusion
    emofuse export runs/mvp/checkpoint.pt --out bundles/mvp --data synth:preset=tiny --parity-windows 8

Writes ``model.onnx`` (+ ``face_encoder.onnx`` for MVP) at opset 17 and ``manifest.json``
(format: docs/BUNDLE.md), after checking ONNX Runtime against torch on real preprocessed
windows (largest probability difference <= 1e-4). A failed check exits non-zero and leaves no
bundle behind. See :mod:`export.bundle`.
"""
from __future__ import annotations

from pathlib import Path

from firmware_bridge.errors import ConfigError, require


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a trained checkpoint to an ONNX bundle (needs torch)",
        description="Export a checkpoint written by 'emofuse train' to a bundle folder: ONNX "
        "graphs (opset 17, dynamic batch), manifest.json with preprocessing, labels, metrics, "
        "versions and hashes, and a parity record (ONNX Runtime vs torch on real windows).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint.pt from 'emofuse train'")
    p.add_argument("--out", required=True, metavar="BUNDLE_DIR", help="bundle folder to create")
    p.add_argument(
        "--data", metavar="SPEC",
        help="data for the parity check, as for 'emofuse train --data' (default: the data the "
        "checkpoint was trained on, else synth:preset=tiny)",
    )
    p.add_argument("--parity-windows", type=int, default=16, metavar="N",
                   help="windows compared between torch and ONNX Runtime (default 16)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="cache for a synthetic dataset built for the parity check (default: the "
                   "training run's cache, CHECKPOINT's folder/cache, when it exists; else none)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes for building a synthetic dataset (default 1)")
    p.add_argument("--force", action="store_true",
                   help="replace BUNDLE_DIR if it exists (only once the new bundle is complete)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Export ``args.checkpoint`` to ``args.out`` and print a summary. Returns 0.

    Raises:
        ConfigError: bad settings, existing output without --force, mismatched data.
        BadInputError: unreadable checkpoint or data.
        ParityError: ONNX Runtime differs from torch by more than 1e-4.
        MissingDependencyError: torch is not installed.
    """
    require("torch", "export", "emofuse export")
    from export.bundle import write_bundle  # loads torch: imported after the check above

    if args.parity_windows < 1:
        raise ConfigError(f"--parity-windows must be >= 1, got {args.parity_windows}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    cache_dir = args.cache_dir
    if cache_dir is None:
        # `emofuse train` caches the dataset it built next to the checkpoint (OUT/cache):
        # reusing it spares rebuilding the training data for the parity windows.
        candidate = Path(args.checkpoint).parent / "cache"
        cache_dir = candidate if candidate.is_dir() else None
    bundle = write_bundle(
        args.checkpoint, args.out, data=args.data, parity_windows=args.parity_windows,
        overwrite=args.force, cache_dir=cache_dir, workers=args.workers,
    )
    m = bundle.manifest
    par = m.parity
    print(f"bundle {bundle.root}  model {m.model_name} {m.model_version}  opset {m.export['opset']}")
    for name, f in m.files.items():
        size = (bundle.root / name).stat().st_size
        print(f"  {name:<18} {f.role:<13} {size / 1024:8.1f} KiB  sha256 {f.sha256[:16]}")
    inputs = ", ".join(f"{s.name}{list(s.shape)}" for s in m.inputs)
    print(f"  inputs  {inputs}")
    print(f"  parity  max |diff| {par.max_abs_diff:.2e} on {par.n_windows} windows of "
          f"{par.details.get('data', '?')} (tolerance {par.details.get('tolerance', '?')})")
    return 0
