"""Score the fer teacher on the identity-disjoint test split two ways: on the model's face crop
(edge.stills) and on fer's own crop (Haar box made square, 10 px offsets, grayscale padding by
the bottom rows' mean, as ``fer.FER.detect_emotions`` cuts it), so the teacher's figure is
stated for the crop it was built for as well as ours.

    python3 -m export.faces.teacher_eval --data ../shared/data/faces [--out metrics.json]
"""
from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import cv2
import numpy as np
import torch

from edge.affect import AROUSAL_OF, EXPRESSIONS, VALENCE_OF
from edge.face import HaarFaceDetector
from edge.stills import read_image
from export.faces.data import _axis, assign_split, read_labels
from export.faces.teacher import TEACHER_SIZE, load_teacher
from export.faces.train import readout_from_expression, score_va, teacher_expression_probs

FER_OFFSET_PX = 10
FER_PADDING_PX = 40


def fer_crop(image_bgr: np.ndarray, box) -> np.ndarray:
    """fer's face crop of a box: float32 (64, 64) gray in [-1, 1] (fer.FER.detect_emotions)."""
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    mean = cv2.mean(gray[-2:])[0]
    padded = cv2.copyMakeBorder(gray, *(FER_PADDING_PX,) * 4, cv2.BORDER_CONSTANT, value=[mean] * 3)
    x, y, w, h = (int(v) for v in box)
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    x1, y1 = max(0, x - FER_OFFSET_PX + FER_PADDING_PX), max(0, y - FER_OFFSET_PX + FER_PADDING_PX)
    x2, y2 = x + w + FER_OFFSET_PX + FER_PADDING_PX, y + h + FER_OFFSET_PX + FER_PADDING_PX
    face = cv2.resize(padded[y1:y2, x1:x2], (TEACHER_SIZE, TEACHER_SIZE))
    return (face.astype(np.float32) / 255.0 - 0.5) * 2.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m export.faces.teacher_eval")
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [r for r in read_labels(args.data) if assign_split(r["identity"]) == args.split]
    det = HaarFaceDetector()
    teacher = load_teacher()
    crops, keep = [], []
    for i, r in enumerate(rows):
        img = read_image(f"{args.data}/images/{r['file']}")
        boxes = det.detect(img)
        if boxes:
            crops.append(fer_crop(img, boxes[0]))
            keep.append(i)
    with torch.no_grad():
        z = torch.cat([teacher(torch.from_numpy(np.stack(crops[i:i + 256]))[:, None], logits=True)
                       for i in range(0, len(crops), 256)])
    probs = teacher_expression_probs(z.softmax(-1).double().numpy())
    pv, pa = readout_from_expression(probs)

    expr = np.array([EXPRESSIONS.index(rows[i]["expression"]) for i in keep])
    scored = SimpleNamespace(valence=_axis(expr, VALENCE_OF), arousal=_axis(expr, AROUSAL_OF),
                             identity=np.array([rows[i]["identity"] for i in keep]))
    out = {"split": args.split, "crop": "fer's rule (square box + 10 px, gray padding) on edge.face.HaarFaceDetector's box", "photos": len(rows),
           "detected": len(keep), **score_va(pv, pa, scored)}
    print(json.dumps(out))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
