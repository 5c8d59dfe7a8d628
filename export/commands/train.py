"""``emofuse train``: subject-independent training of one emotion model.

    emofuse train --model promptfusion --data synth --protocol kfold-subject --folds 6 --out runs/promptfusion
    emofuse train --model rppg --data synth:preset=tiny --protocol loso --epochs 5
    emofuse train --model contact --data deap:/data/deap

Cross-validates over subjects (LOSO or subject k-fold; early stopping on held-out training
subjects), then trains the final model on all subjects and writes ``checkpoint.pt``,
``metrics.json`` and, for face models, ``face_encoder.pt`` under ``--out``. See
:mod:`export.train` for the protocol.
"""
from __future__ import annotations

import sys

from firmware_bridge.errors import ConfigError, require

# The keys of export.models.ENCODER_PRESETS, written out so that the parser needs no torch
# (a test keeps the two equal).
ENCODER_SIZES = ("tiny", "small")
# The keys of export.models.MODELS, likewise.
MODEL_NAMES = ("contact", "face", "mvp", "promptfusion", "promptfusion_mm", "promptfusion_noinv", "rppg")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an emotion model subject-independently (needs torch)",
        description="Cross-validate a model over subjects (LOSO or subject k-fold), then train "
        "the final model on all subjects and write checkpoint.pt + metrics.json.",
    )
    p.add_argument("--model", required=True,
                   choices=MODEL_NAMES,
                   help="model to train")
    p.add_argument("--data", default="synth", metavar="SPEC",
                   help="synth[:preset=tiny|default,subjects=N,trials=N,seed=N], deap:DIR, mahnob:DIR, "
                   "amigos:DIR, or a dataset .npz saved by EmotionWindows.save (default synth)")
    p.add_argument("--protocol", default="kfold-subject", choices=["loso", "kfold-subject"],
                   help="subject-independent protocol (default kfold-subject)")
    p.add_argument("--folds", type=int, default=6, help="folds for kfold-subject (default 6)")
    p.add_argument("--epochs", type=int, default=40, help="maximum epochs per fit (default 40)")
    p.add_argument("--patience", type=int, default=8, help="early-stopping patience, epochs (default 8)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--pretrain-steps", type=int, default=1000,
                   help="MAE pretraining steps of the face encoder per fold (default 1000)")
    p.add_argument("--encoder", default="tiny", choices=ENCODER_SIZES,
                   help="face encoder size: tiny (32x32 crops, dim 64, the contract) or small (64x64 "
                        "crops, dim 192, the default bundle's); the training windows are cut to match")
    p.add_argument("--seed", type=int, default=0, help="global seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (default auto)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: torch's choice; 1 is faster on a shared machine)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/MODEL)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="cache for built datasets and pretrained encoders (default OUT/cache)")
    p.add_argument("--workers", type=int, default=1, help="processes for building a synthetic dataset (default 1)")
    p.add_argument("--augment", action="store_true",
                   help="photometric jitter of face clips + input noise while training (off by default)")
    p.add_argument("--face-encoder", metavar="PT",
                   help="a pretrained face encoder (face_encoder.pt, e.g. trained on real photos by "
                        "python3 -m export.faces.train) used frozen instead of MAE pretraining per fold")
    p.add_argument("--stills", metavar="DIR",
                   help="a faces folder (labels.csv + images/): its training identities' photos join the final "
                        "model as face-only samples, its validation identities fit the probability temperatures "
                        "(promptfusion_mm)")
    p.add_argument("--stills-per-epoch", type=int, default=1024, metavar="N",
                   help="still photos drawn per epoch of the final model with --stills (default 1024)")
    p.add_argument("--no-final", action="store_true", help="cross-validate only; write no checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _fmt(summary: dict, key: str) -> str:
    s = summary.get(key)
    return "-" if s is None else f"{s['mean']:.3f} +- {s['std']:.3f}"


def run(args) -> int:
    """Run the training described by ``args``; prints the summary. Returns 0.

    Raises:
        ConfigError: bad settings or data spec. BadInputError: unreadable data.
        MissingDependencyError: torch not installed.
    """
    require("torch", "export", "emofuse train")
    from pathlib import Path

    from export.train import TrainConfig, load_dataset, preprocessing_for, train

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    out = Path(args.out or f"runs/{args.model}")
    cache_dir = Path(args.cache_dir) if args.cache_dir else out / "cache"
    cfg = TrainConfig(
        model=args.model, protocol=args.protocol, folds=args.folds, epochs=args.epochs,
        patience=args.patience, batch_size=args.batch_size, lr=args.lr,
        pretrain_steps=args.pretrain_steps, seed=args.seed, device=args.device, threads=args.threads,
        final=not args.no_final, augment=args.augment, progress=not args.quiet and sys.stderr.isatty(),
        encoder=args.encoder, face_encoder=args.face_encoder or "", stills=args.stills or "", stills_per_epoch=args.stills_per_epoch,
    )
    cfg.validate()
    windows = load_dataset(args.data, cache_dir=cache_dir, workers=args.workers,
                           preprocessing=preprocessing_for(args.encoder))
    report = train(windows, cfg, out, data_spec=args.data, cache_dir=cache_dir)
    s = report["summary"]
    print(f"model {args.model}  protocol {report['protocol']['name']} ({report['protocol']['folds']} folds)  "
          f"data {args.data}  device {report['device']}")
    print(f"  valence  acc {_fmt(s, 'valence_acc')}  macro-F1 {_fmt(s, 'valence_f1')}")
    print(f"  arousal  acc {_fmt(s, 'arousal_acc')}  macro-F1 {_fmt(s, 'arousal_f1')}")
    print(f"  params {report['params']['inference']} (trainable {report['params']['trainable']})  "
          f"FLOPs {report['flops'] / 1e6:.1f} M  time {report['seconds']:.0f} s")
    if "final" in report:
        print(f"  checkpoint {report['final']['checkpoint']}")
    print(f"  metrics {out / 'metrics.json'}")
    return 0
