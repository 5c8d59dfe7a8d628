#!/usr/bin/env bash
# Rebuild edge/default_bundle/, the bundle `emofuse demo` and `--bundle default` use:
#   1. emofuse train      the project's preset on its own synthetic data (subject k-fold,
#                         then a final model on every subject -> checkpoint.pt)
#   2. emofuse export     FP32 ONNX + manifest.json with the preprocessing dict, parity
#                         against torch on real preprocessed windows
#   3. emofuse calibrate  INT8 Q/DQ graph (model.int8.onnx) on people the model never saw,
#                         gated on decision agreement with FP32
# then replaces edge/default_bundle/ with the result. Needs the export extra (torch).
#
# Settings (environment):
#   MODEL      model to train (default promptfusion: face clip + rPPG TFR, so the demo
#              gives valence / arousal 10 s after start; mvp needs 60 s of face and contact)
#   ENCODER    face encoder size (default small: 64x64 crops, dim 192, 4 blocks; tiny is the
#              32x32 contract model, too small for INT8 to pay on a CPU, docs/QUANTIZATION.md)
#   DATA       training data spec (default synth:preset=default, 24 subjects x 8 trials)
#   WORK       working folder (default: a new temporary folder, kept for inspection)
#   WORKERS    processes building the synthetic dataset (default 2)
#   EPOCHS     maximum training epochs (default: emofuse train's)
#   FOLDS      subject folds of the cross-validation (default: emofuse train's)
#   CALIB      calibration data spec (default synth)
#   DEST       where the bundle goes (default edge/default_bundle, the packaged one)
#   EMOFUSE    the emofuse command (default: python3 -m edge.cli)
#
# Usage: scripts/build_default_bundle.sh    (from anywhere; takes tens of minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL="${MODEL:-promptfusion}"
ENCODER="${ENCODER:-small}"
DATA="${DATA:-synth:preset=default}"
WORK="${WORK:-$(mktemp -d -t emofuse-default-bundle-XXXXXX)}"
WORKERS="${WORKERS:-2}"
CALIB="${CALIB:-synth}"
DEST="${DEST:-edge/default_bundle}"
EMOFUSE="${EMOFUSE:-python3 -m edge.cli}"
TRAIN_ARGS=()
if [[ -n "${EPOCHS:-}" ]]; then TRAIN_ARGS+=(--epochs "$EPOCHS"); fi
if [[ -n "${FOLDS:-}" ]]; then TRAIN_ARGS+=(--folds "$FOLDS"); fi

echo "building the default bundle: model $MODEL ($ENCODER encoder), data $DATA, in $WORK" >&2
mkdir -p "$WORK"
$EMOFUSE train --model "$MODEL" --encoder "$ENCODER" --data "$DATA" --protocol kfold-subject --out "$WORK/train" \
    --cache-dir "$WORK/cache" --workers "$WORKERS" --quiet "${TRAIN_ARGS[@]}"
$EMOFUSE export "$WORK/train/checkpoint.pt" --out "$WORK/bundle" --cache-dir "$WORK/cache" --workers "$WORKERS"
$EMOFUSE calibrate "$WORK/bundle" --data "$CALIB" --workers "$WORKERS"

# Check the result loads and runs before it replaces the packaged one.
python3 - "$WORK/bundle" <<'PY'
import sys
from edge.bundle import load_bundle
from edge.engine import open_engine

bundle = load_bundle(sys.argv[1], check_graphs=True)
for precision in ("fp32", "int8"):
    with open_engine(bundle, "onnxruntime", precision) as engine:
        engine.warmup(2)
print(f"bundle OK: {bundle.manifest.model_name} {bundle.manifest.model_version}", file=sys.stderr)
PY

rm -rf "$DEST.new"
cp -r "$WORK/bundle" "$DEST.new"
# The calibration sets (~25 MB) stay in $WORK: the shipped bundle keeps only what runs.
rm -f "$DEST.new"/*.npz
rm -rf "$DEST"
mv "$DEST.new" "$DEST"
echo "$DEST rebuilt from $WORK" >&2
