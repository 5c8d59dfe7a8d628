"""``emofuse faces DIR|CSV``: score still face photos with a model bundle.

::

    emofuse faces photos/                                   # every image in the folder
    emofuse faces ../shared/data/faces/images --labels ../shared/data/faces/labels.csv \\
        --split test --json                                 # plus balanced accuracy and ECE

Each photo goes through :mod:`edge.stills` (read, the device's Haar detector, the manifest's
crop, the crop repeated as the face clip, the physiological inputs marked absent as the
runtime marks them) and the bundle's engine. Standard output gets one JSON line per image::

    {"file": "a.jpg", "face_found": true, "box": [x, y, w, h], "p_valence_high": 0.81,
     "p_arousal_high": 0.12}
    {"file": "b.jpg", "face_found": false, "reason": "no face found ...",
     "p_valence_high": null, "p_arousal_high": null}

With ``--labels`` (a CSV with ``file,expression,identity``) the lines also carry the label and
identity, and a summary goes to standard error as a table (and, with ``--json``, to standard
output as a last JSON line with ``"summary": true``): per axis the identity-weighted
balanced accuracy and the expected calibration error (:mod:`edge.affect`: Russell's
circumplex mapping, every identity weighted equally within a class), the counts, and the
photos without a face (they are left out of the metrics and counted). Metrics are computed
on the probabilities as printed (rounded to 6 decimals), so anyone can recompute them from
the lines.

A CSV as the input lists the photos in its ``file`` column, relative to ``--images`` (default:
the CSV's folder); it may be the labels file itself.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path

import numpy as np

from edge.affect import (
    EXPRESSIONS, SPLITS, axis_targets, balanced_accuracy, expected_calibration_error, split_rows,
)
from edge.engine import open_engine
from edge.engine.base import graph_specs
from edge.preprocess import crops_to_nchw
from edge.stills import list_images, read_image, still_face, still_feeds, still_settings
from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger("emofuse.faces")

PROB_DIGITS = 6
LABEL_COLUMNS = ("file", "expression", "identity")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "faces", help="score still face photos (valence / arousal per image)",
        description="Score still face photos with a model bundle: the device's face detector and crop, "
        "the crop repeated as the face clip, physiology marked absent. One JSON line per image; with "
        "--labels, identity-weighted balanced accuracy and calibration error (Russell 1980 mapping).")
    p.add_argument("source", metavar="DIR|CSV", help="a folder of images, or a CSV with a 'file' column")
    p.add_argument("--bundle", default="default", metavar="DIR",
                   help="model bundle folder or 'default' (the packaged one; default: default)")
    p.add_argument("--labels", metavar="CSV", help="labels CSV with columns file, expression, identity")
    p.add_argument("--images", metavar="DIR", help="folder the CSV's file names are relative to "
                   "(default: the CSV's folder)")
    p.add_argument("--split", choices=SPLITS, default="all",
                   help="keep the identities edge.affect.identity_split puts in test / train, or all "
                   "(default all; test / train need identities, i.e. --labels)")
    p.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                   help="share of identities in the test split (default 0.2)")
    p.add_argument("--precision", choices=("auto", "int8", "fp32"), default="auto",
                   help="model graph (default auto: INT8 when the bundle has it)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="auto",
                   help="inference backend (default auto)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="ONNX Runtime threads (default 1)")
    p.add_argument("--json", action="store_true",
                   help="also print the summary as a final JSON line on standard output")
    p.set_defaults(func=run)


# -- inputs ---------------------------------------------------------------------------------------


def read_csv_rows(path, need: tuple) -> list[dict]:
    """Rows of a CSV file that must have the columns ``need``.

    Raises:
        BadInputError: missing or unreadable file, missing columns, an empty cell in them.
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"CSV {p} does not exist or is not a file")
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in need if c not in header]
            if missing:
                raise BadInputError(f"CSV {p} lacks the column(s) {', '.join(missing)} (it has: "
                                    f"{', '.join(header) or 'no header'})")
            rows = [dict(r) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"cannot read CSV {p}: {exc}") from exc
    for i, r in enumerate(rows, start=2):
        empty = [c for c in need if not (r.get(c) or "").strip()]
        if empty:
            raise BadInputError(f"CSV {p} line {i}: empty {', '.join(empty)}")
    return rows


def collect(args) -> list[dict]:
    """The photos to score: dicts with ``path`` (Path), ``file`` (as printed) and, with labels,
    ``expression`` and ``identity``; after the ``--split``.

    Raises:
        BadInputError: missing folder or CSV, missing columns, a labelled photo that is not there.
        ConfigError: ``--split test|train`` without identities.
    """
    src = Path(args.source)
    if src.is_dir():
        root = src
        items = [{"path": f, "file": f.name} for f in list_images(src)]
        from_csv = False
    elif src.is_file():
        root = Path(args.images) if args.images else src.parent
        items = [{"path": root / r["file"], "file": r["file"], **r} for r in read_csv_rows(src, ("file",))]
        from_csv = True
    else:
        raise BadInputError(f"{src} is neither a folder nor a CSV file")
    if args.images and not Path(args.images).is_dir():
        raise BadInputError(f"--images {args.images} is not a folder")

    if args.labels:
        labels = {r["file"]: r for r in read_csv_rows(args.labels, LABEL_COLUMNS)}
        for r in labels.values():
            if r["expression"] not in EXPRESSIONS:
                raise BadInputError(f"labels {args.labels}: unknown expression {r['expression']!r} for "
                                    f"{r['file']}; expected one of {', '.join(EXPRESSIONS)}")
        if from_csv:
            unlabelled = [it["file"] for it in items if it["file"] not in labels]
            if unlabelled:
                raise BadInputError(f"{len(unlabelled)} photo(s) of {src} have no row in {args.labels}, "
                                    f"e.g. {unlabelled[0]}")
        else:
            # A folder: the labels file says which photos there are; one it names must exist.
            on_disk = {it["file"] for it in items}
            absent = [f for f in labels if f not in on_disk]
            if absent:
                raise BadInputError(f"{len(absent)} photo(s) named in {args.labels} are not in {root}, "
                                    f"e.g. {absent[0]}")
            extra = len(on_disk) - len(labels)
            if extra:
                log.warning("%d image(s) in %s have no label and are skipped", extra, root)
            items = [it for it in items if it["file"] in labels]
        for it in items:
            lab = labels[it["file"]]
            it["expression"], it["identity"] = lab["expression"], lab["identity"]
    if args.split != "all":
        if not all("identity" in it for it in items):
            raise ConfigError(f"--split {args.split} needs identities: pass --labels CSV")
        items = split_rows(items, args.split, args.test_fraction)
    if not items:
        raise BadInputError(f"no photos left to score in {src} (split {args.split})")
    return items


# -- scoring --------------------------------------------------------------------------------------


class StillScorer:
    """Runs a bundle on still face crops: P(valence high), P(arousal high) per crop.

    Args:
        bundle: an :class:`edge.bundle.Bundle`.
        precision, backend, threads: as :func:`edge.engine.open_engine`.

    Use as a context manager; :meth:`score` takes one uint8 (S, S, 3) RGB crop.
    """

    def __init__(self, bundle, precision: str = "auto", backend: str = "auto", threads: int = 1) -> None:
        self.bundle = bundle
        self.settings = still_settings(bundle.preprocessing)
        self.input_names = list(bundle.input_names)
        self._args = (backend, precision, int(threads))
        self._engine = self._encoder = None
        labels = bundle.manifest.labels or {}
        self._high = {}
        for axis in ("valence", "arousal"):
            names = list(labels.get(axis) or ["low", "high"])
            if "high" not in names:
                raise ConfigError(f"bundle {bundle.root}: labels.{axis} {names} has no 'high' class")
            self._high[axis] = names.index("high")

    def __enter__(self) -> "StillScorer":
        backend, precision, threads = self._args
        ort = {"intra_op_threads": threads, "inter_op_threads": 1}
        self._engine = open_engine(self.bundle, backend, precision, **ort).activate()
        if "face_feats" in self.input_names:
            self._encoder = open_engine(self.bundle, backend, precision, role="face_encoder", **ort).activate()
            ins, outs = graph_specs(self.bundle, "face_encoder")
            self._enc_in, self._enc_out = ins[0].name, outs[0].name
        return self

    def __exit__(self, *exc) -> None:
        for eng in (self._encoder, self._engine):
            if eng is not None:
                eng.deactivate()

    @property
    def metadata(self) -> dict:
        return dict(self._engine.metadata) if self._engine is not None else {}

    def score(self, crop: np.ndarray) -> tuple[float, float]:
        """(P(valence high), P(arousal high)) of one face crop, each in [0, 1]."""
        feat = None
        if self._encoder is not None:
            feat = self._encoder.run({self._enc_in: crops_to_nchw(crop[None])})[self._enc_out][0]
        out = self._engine.run(still_feeds(crop, self.settings, self.input_names, feat))
        return tuple(float(out[f"{axis}_prob"][0][self._high[axis]]) for axis in ("valence", "arousal"))


# -- summary --------------------------------------------------------------------------------------


def summarise(lines: list[dict], test_fraction: float, split: str) -> dict:
    """Metrics of labelled per-image lines (as printed).

    Args:
        lines: the per-image dicts with ``expression``, ``identity``, ``face_found`` and the
            two probabilities.

    Returns:
        dict with ``n_images``, ``n_faces_found``, ``n_no_face``, ``face_detection_rate`` and per
        axis (``valence``, ``arousal``): ``n_images``, ``n_identities``, ``n_no_face``,
        ``n_per_class`` ({"low", "high"}), ``balanced_accuracy`` and ``ece`` (None when the axis
        has no scored image; balanced accuracy uses the classes present).
    """
    found = [ln for ln in lines if ln["face_found"]]
    out: dict = {"summary": True, "split": split, "test_fraction": test_fraction, "n_images": len(lines),
                 "n_faces_found": len(found), "n_no_face": len(lines) - len(found),
                 "face_detection_rate": round(len(found) / len(lines), 4) if lines else None}
    for axis, key in (("valence", "p_valence_high"), ("arousal", "p_arousal_high")):
        keep_all, _ = axis_targets([ln["expression"] for ln in lines], axis)
        keep, y = axis_targets([ln["expression"] for ln in found], axis)
        p = np.array([ln[key] for ln in found], dtype=np.float64)[keep]
        y, g = y[keep], np.array([ln["identity"] for ln in found], dtype=object)[keep]
        rec: dict = {"n_images": int(y.size), "n_identities": int(len(set(g.tolist()))),
                     "n_no_face": int(keep_all.sum()) - int(y.size),
                     "n_per_class": {"low": int((y == 0).sum()), "high": int((y == 1).sum())},
                     "balanced_accuracy": None, "ece": None}
        if y.size:
            pred = (p >= 0.5).astype(np.int64)
            rec["balanced_accuracy"] = round(balanced_accuracy(y, pred, g), 4)
            rec["ece"] = round(expected_calibration_error(p, y, 10, groups=g), 4)
        out[axis] = rec
    return out


def _table(summary: dict, stream) -> None:
    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    stream.write(f"{summary['n_images']} photos ({summary['split']} split), face found in "
                 f"{summary['n_faces_found']} ({100.0 * (summary['face_detection_rate'] or 0):.1f} %)\n")
    stream.write(f"{'axis':<9}{'bal.acc':>8}{'ECE':>8}{'images':>8}{'low':>6}{'high':>6}{'people':>8}"
                 f"{'no face':>9}\n")
    for axis in ("valence", "arousal"):
        r = summary[axis]
        stream.write(f"{axis:<9}{fmt(r['balanced_accuracy']):>8}{fmt(r['ece']):>8}{r['n_images']:>8}"
                     f"{r['n_per_class']['low']:>6}{r['n_per_class']['high']:>6}{r['n_identities']:>8}"
                     f"{r['n_no_face']:>9}\n")
    stream.write("balanced accuracy: identity-weighted per class (edge.affect); ECE: 10 bins on the "
                 "predicted class's confidence; mapping: Russell 1980 (docs/ARCHITECTURE.md)\n")


def _round(x: float):
    return round(float(x), PROB_DIGITS) if math.isfinite(x) else None


# -- command --------------------------------------------------------------------------------------


def run(args) -> int:
    """Score the photos; returns the exit code (0).

    Raises:
        BadInputError: a missing folder or CSV, missing columns, an unreadable image.
        ConfigError: bad flags or bundle.
    """
    # Imported when run: every `emofuse` command builds its parser from all command modules.
    from edge.pipeline import resolve_bundle

    if args.threads < 1:
        raise ConfigError("--threads must be >= 1")
    if not 0.0 < args.test_fraction < 1.0:
        raise ConfigError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    items = collect(args)
    bundle = resolve_bundle(args.bundle)
    if bundle is None:
        raise ConfigError("emofuse faces needs a model bundle (--bundle DIR or default)")
    labelled = "expression" in items[0]
    out = sys.stdout
    lines = []
    with StillScorer(bundle, args.precision, args.backend, args.threads) as scorer:
        for it in items:
            face = still_face(read_image(it["path"]), scorer.settings)
            line: dict = {"file": it["file"], "face_found": face.found}
            if face.found:
                pv, pa = scorer.score(face.crop)
                line.update(box=[round(v, 2) for v in face.box], p_valence_high=_round(pv), p_arousal_high=_round(pa))
            else:
                line.update(reason=face.reason, p_valence_high=None, p_arousal_high=None)
            if labelled:
                line.update(expression=it["expression"], identity=it["identity"])
            out.write(json.dumps(line) + "\n")
            lines.append(line)
        meta = scorer.metadata
    if labelled:
        summary = summarise(lines, args.test_fraction, args.split)
        summary.update(bundle=str(bundle.root), model_version=bundle.manifest.model_version,
                       precision=meta.get("precision"), backend=meta.get("backend"))
        _table(summary, sys.stderr)
        if args.json:
            out.write(json.dumps(summary) + "\n")
    out.flush()
    return 0
