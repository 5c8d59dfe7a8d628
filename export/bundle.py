"""Write a deployable bundle from a trained checkpoint: ONNX graphs, manifest, verified parity.

``write_bundle(CHECKPOINT, OUT)`` does, in a temporary folder next to ``OUT``:

1. rebuild the model from the ``emofuse-ckpt/1`` checkpoint (``export.models.load_checkpoint``);
2. load real preprocessed windows: the dataset the checkpoint was trained on (its
   ``data.spec``), or the one given (e.g. ``synth:preset=tiny``), and refuse them when their
   preprocessing differs from the checkpoint's;
3. export ``model.onnx`` (and, for MVP, ``face_encoder.onnx``: ``face_crop`` -> ``face_feat``)
   at opset 17 with a dynamic batch, traced on two of those windows (:mod:`export.onnx_export`);
4. parity: the torch model vs ONNX Runtime on up to ``parity_windows`` windows spread over the
   dataset, at that batch and at batch 1. For MVP the ONNX side computes ``face_feats`` with
   ``face_encoder.onnx`` from the stored crops, as the device does, so the comparison covers
   both graphs end to end. A largest absolute probability difference above the tolerance
   (1e-4) raises :class:`~export.onnx_export.ParityError`;
5. write ``manifest.json`` (format: docs/BUNDLE.md), re-read the folder with
   :func:`edge.bundle.load_bundle` (hashes and graph I/O), and only then rename it to ``OUT``.

Any failure removes the temporary folder: ``OUT`` is either a complete, verified bundle or
untouched.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from edge.bundle import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Bundle,
    BundleFile,
    Manifest,
    Parity,
    TensorSpec,
    load_bundle,
    parse_manifest,
    sha256_file,
)
from edge.spec import Preprocessing
from export.onnx_export import (
    FACE_ENCODER_INPUT,
    FACE_ENCODER_OUTPUT,
    OPSET,
    OUTPUT_NAMES,
    EXPORTER,
    PARITY_TOLERANCE,
    ParityResult,
    TENSOR_MEANINGS,
    check_parity,
    export_face_encoder,
    export_model,
    onnx_session,
    require_parity,
    run_onnx,
    torch_probabilities,
)
from firmware_bridge.errors import BadInputError, ConfigError

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
FACE_ENCODER_FILE = "face_encoder.onnx"
# Used when a checkpoint does not say what it was trained on: small and fast to build.
DEFAULT_PARITY_DATA = "synth:preset=tiny"
DEFAULT_PARITY_WINDOWS = 16
TRACE_WINDOWS = 2


def _jsonable(value):
    """Plain JSON values from what checkpoints hold (numpy scalars/arrays, tuples, paths)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None  # JSON has no NaN; a missing metric reads as null
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _canonical(d) -> str:
    return json.dumps(_jsonable(d), sort_keys=True)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def export_environment(opset: int = OPSET) -> dict:
    """The ``export`` record: opset, exporter and library versions, UTC time."""
    import onnx
    import onnxruntime
    import torch

    return {
        "opset": int(opset),
        "exporter": f"torch.onnx.export ({EXPORTER})",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "emofuse": _version("emofuse"),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def parity_indices(n_total: int, n_windows: int) -> np.ndarray:
    """Indices of ``min(n_windows, n_total)`` windows spread evenly over a dataset (so several
    subjects and both label classes are covered, not the first subject's trials only).

    Raises:
        ConfigError: ``n_windows`` < 1. BadInputError: an empty dataset.
    """
    if n_windows < 1:
        raise ConfigError(f"parity needs at least 1 window, got {n_windows}")
    if n_total < 1:
        raise BadInputError("the parity dataset has no windows")
    return np.unique(np.linspace(0, n_total - 1, min(n_windows, n_total)).round().astype(np.int64))


def _crops_nchw(crops_u8: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) RGB crops -> float32 (M, 3, H, W) in [0, 1], the encoder's input
    (the same scaling as ``export.models.face_feats_from_crops``)."""
    flat = crops_u8.reshape(-1, *crops_u8.shape[-3:])
    return np.ascontiguousarray(flat.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def _spec(name: str, array: np.ndarray, meaning: str, optional: bool = False) -> TensorSpec:
    return TensorSpec(name, ("batch", *(int(d) for d in array.shape[1:])), str(array.dtype),
                      meaning, optional)


def _meaning(name: str) -> str:
    from export.models import INPUT_SPECS, OUTPUT_SPECS

    spec = INPUT_SPECS.get(name) or OUTPUT_SPECS.get(name)
    return spec["meaning"] if spec else TENSOR_MEANINGS[name]


def load_parity_windows(spec: str, *, cache_dir=None, workers: int = 1, preprocessing: dict | None = None):
    """The dataset named by a data spec (``synth:preset=tiny``, an ``.npz``...), through the
    same loader ``emofuse train`` uses, cut with ``preprocessing`` (the checkpoint's).

    Raises:
        ConfigError: a bad spec. BadInputError: unreadable data.
    """
    from export.train import load_dataset

    return load_dataset(spec, cache_dir=cache_dir, workers=workers, preprocessing=preprocessing)


def _ckpt_preprocessing(ckpt: dict) -> Preprocessing:
    want = ckpt.get("preprocessing")
    if not isinstance(want, dict) or not want:
        raise BadInputError("the checkpoint records no preprocessing; cannot write a "
                            "manifest that configures the device")
    return Preprocessing.from_dict(want)


def _check_preprocessing(ckpt: dict, windows, spec: str) -> None:
    want = _ckpt_preprocessing(ckpt).to_dict()
    got = windows.preprocessing.to_dict()
    if _canonical(want) != _canonical(got):
        diff = sorted(k for k in set(want) | set(got)
                      if _canonical(want.get(k)) != _canonical(got.get(k)))
        raise ConfigError(f"data {spec!r} was preprocessed differently from the checkpoint's "
                          f"training data (keys {diff}); parity on it would not test the "
                          "inputs the model expects")


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            raise ConfigError(f"{out} already exists (use --force to replace it)")
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_bundle(
    checkpoint,
    out_dir,
    *,
    data: str | None = None,
    parity_windows: int = DEFAULT_PARITY_WINDOWS,
    tolerance: float = PARITY_TOLERANCE,
    overwrite: bool = False,
    cache_dir=None,
    workers: int = 1,
) -> Bundle:
    """Export a checkpoint to a verified bundle folder (see the module docstring).

    Args:
        checkpoint: path of an ``emofuse-ckpt/1`` file (``emofuse train``'s checkpoint.pt).
        out_dir: the bundle folder to create.
        data: data spec of the parity windows; default: the checkpoint's own ``data.spec``,
            else ``synth:preset=tiny``.
        parity_windows: windows compared (fewer if the dataset is smaller), >= 1.
        tolerance: largest allowed absolute difference of an output probability.
        overwrite: replace an existing ``out_dir`` (only after the new bundle is complete).
        cache_dir: cache folder for building a synthetic dataset (None: no cache).
        workers: processes for building a synthetic dataset.

    Returns:
        The written bundle, as :func:`edge.bundle.load_bundle` reads it.

    Raises:
        BadInputError: unreadable checkpoint or data; an MVP checkpoint without its encoder.
        ConfigError: ``out_dir`` exists (without ``overwrite``), bad settings, data
            preprocessed differently from the checkpoint's, a graph that fails its checks.
        ParityError: ONNX Runtime differs from torch by more than ``tolerance``.
    """
    from export.models import face_encoder_from_checkpoint, load_checkpoint
    from export.train import window_inputs

    ckpt_path = Path(checkpoint)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists (use --force to replace it)")
    if parity_windows < 1:
        raise ConfigError(f"--parity-windows must be >= 1, got {parity_windows}")

    model, ckpt = load_checkpoint(ckpt_path)
    # Identifies the trained weights: the model version changes whenever they do.
    ckpt_sha = sha256_file(ckpt_path)
    names = list(model.input_names)
    encoder = None
    if "face_feats" in names:
        encoder = face_encoder_from_checkpoint(ckpt)
        if encoder is None:
            raise BadInputError(f"{ckpt_path}: model {ckpt['model']!r} takes face_feats but the "
                                "checkpoint holds no face_encoder weights")
    ckpt_data = ckpt.get("data") or {}
    spec = data or ckpt_data.get("spec") or DEFAULT_PARITY_DATA
    windows = load_parity_windows(spec, cache_dir=cache_dir, workers=workers,
                                  preprocessing=_ckpt_preprocessing(ckpt))
    _check_preprocessing(ckpt, windows, spec)
    idx = parity_indices(len(np.asarray(windows.subject)), parity_windows)
    log.info("parity on %d windows of %s", idx.size, spec)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    # mkdtemp makes the folder private (0700); a bundle is meant to be shared and deployed.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        feeds = window_inputs(windows, names, encoder, idx)
        trace = {n: a[:TRACE_WINDOWS] for n, a in feeds.items()}
        export_model(model, tmp / MODEL_FILE, trace)
        ort_feeds = dict(feeds)
        extra = {"data": spec, "window_indices": idx.tolist()}
        if ckpt_data.get("fingerprint"):
            from export.train import data_fingerprint

            # Provenance: were the parity windows drawn from the very data it was trained on?
            extra["same_data_as_training"] = data_fingerprint(windows) == ckpt_data["fingerprint"]
        enc_entry = None
        if encoder is not None:
            crops = np.asarray(windows.face_seq_crops[idx])
            crops_f = _crops_nchw(crops)
            export_face_encoder(encoder, tmp / FACE_ENCODER_FILE, crops_f[:TRACE_WINDOWS])
            enc_sess = onnx_session(tmp / FACE_ENCODER_FILE)
            feats = run_onnx(enc_sess, {FACE_ENCODER_INPUT: crops_f})[FACE_ENCODER_OUTPUT]
            feats = feats.reshape(feeds["face_feats"].shape)
            extra["face_feat_max_abs_diff"] = float(np.max(np.abs(
                feats.astype(np.float64) - feeds["face_feats"])))
            # The device's path: features from face_encoder.onnx, not from torch.
            ort_feeds["face_feats"] = feats
            enc_entry = (_spec(FACE_ENCODER_INPUT, crops_f, _meaning(FACE_ENCODER_INPUT)),
                         _spec(FACE_ENCODER_OUTPUT, feats.reshape(-1, feats.shape[-1]),
                               _meaning(FACE_ENCODER_OUTPUT)))

        reference = torch_probabilities(model, feeds)
        sess = onnx_session(tmp / MODEL_FILE)
        candidate = run_onnx(sess, ort_feeds)
        single = run_onnx(sess, {n: a[:1] for n, a in ort_feeds.items()})
        full = check_parity(reference, candidate, tolerance=tolerance)
        # A batch dim that is only nominally dynamic shows up at batch 1: it counts too.
        one = check_parity({o: reference[o][:1] for o in OUTPUT_NAMES}, single,
                           tolerance=tolerance)
        per = {o: max(full.per_output[o], one.per_output[o]) for o in OUTPUT_NAMES}
        extra["batch1_max_abs_diff"] = one.max_abs_diff
        worst = max(per.values())
        result = ParityResult(worst, per, int(idx.size), float(tolerance),
                              bool(worst <= tolerance), extra)
        require_parity(result, f"export of {ckpt_path}")

        files = {MODEL_FILE: BundleFile(MODEL_FILE, sha256_file(tmp / MODEL_FILE), "model")}
        if enc_entry is not None:
            files[FACE_ENCODER_FILE] = BundleFile(
                FACE_ENCODER_FILE, sha256_file(tmp / FACE_ENCODER_FILE), "face_encoder",
                (enc_entry[0],), (enc_entry[1],))
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            model_name=str(ckpt["model"]),
            model_version=f"{_version('emofuse')}+{ckpt_sha[:12]}",
            inputs=tuple(_spec(n, feeds[n], _meaning(n), n in getattr(model, "optional_inputs", ())) for n in names),
            outputs=tuple(_spec(o, reference[o], _meaning(o)) for o in OUTPUT_NAMES),
            preprocessing=_ckpt_preprocessing(ckpt),
            labels=_jsonable(ckpt.get("labels") or {}),
            training=_jsonable({
                "metrics": ckpt.get("metrics", {}),
                "protocol": ckpt.get("protocol"),
                "data": ckpt_data,
                "seed": ckpt.get("seed"),
                "versions": ckpt.get("versions", {}),
                "checkpoint_sha256": ckpt_sha,
                # Softmax temperatures inside the graph (valence, arousal): 1 = uncalibrated.
                "calibration": {"temperature": [float(t) for t in model.temperature.tolist()],
                                **{name: [float(t) for t in getattr(model, name).tolist()]
                                   for name in ("temperature_pulse", "temperature_physio") if hasattr(model, name)},
                                "fitted": ckpt.get("calibration")},
            }),
            export=export_environment(),
            files=files,
            parity=Parity(float(result.max_abs_diff), int(result.n_windows), True, _jsonable({
                "tolerance": result.tolerance, "per_output": result.per_output,
                **result.extra})),
        )
        text = json.dumps(manifest.to_dict(), indent=2, allow_nan=False)
        parse_manifest(json.loads(text), source=str(tmp / MANIFEST_NAME))
        (tmp / MANIFEST_NAME).write_text(text + "\n", encoding="utf-8")
        load_bundle(tmp, check_graphs=True)
        _move_into_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    bundle = load_bundle(out)
    log.info("wrote bundle %s (parity max |diff| %.2g on %d windows)", out,
             bundle.manifest.parity.max_abs_diff, bundle.manifest.parity.n_windows)
    return bundle

