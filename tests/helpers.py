"""Test helpers importable from any test module (pytest puts tests/ on sys.path)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(relative: str) -> Path:
    """Path of a real recording under ../shared/data, or skip the calling test with the reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA} (present on project machines only)")
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{relative} is missing from {SHARED_DATA}")
    return path


def face_only_bundle(tmp_path_factory):
    """A bundle whose model needs only the face (VA from 10 s on): the default bundle if it is
    such, else a tiny PromptFusion trained and exported with the real pipeline (built once per
    test session)."""
    from edge.bundle import load_bundle
    from edge.pipeline import DEFAULT_BUNDLE_DIR

    if (DEFAULT_BUNDLE_DIR / "manifest.json").is_file():
        names = set(load_bundle(DEFAULT_BUNDLE_DIR).input_names)
        if names <= {"face_clip", "tfr"}:
            return DEFAULT_BUNDLE_DIR
    root = tmp_path_factory.getbasetemp() / "h15-tiny-bundle"
    if (root / "bundle" / "manifest.json").is_file():
        return root / "bundle"
    torch = pytest.importorskip("torch", reason="no face-only default bundle and no torch to build a tiny one")
    from export.bundle import write_bundle
    from export.data.synth import build_synth_dataset
    from export.train import TrainConfig, build_checkpoint, data_fingerprint, train_final

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = build_synth_dataset(preset="tiny", n_subjects=2, cache_dir=root / "cache")
        data.save(root / "tiny.npz")
        cfg = TrainConfig(model="promptfusion", epochs=1, batch_size=8, pretrain_steps=2, device="cpu",
                          progress=False)
        model, encoder, _ = train_final(data, cfg, epochs=1)
        meta = {"spec": str(root / "tiny.npz"), "n_windows": len(data), "fingerprint": data_fingerprint(data)}
        torch.save(build_checkpoint(model, encoder, data, cfg, meta, {}, {"name": "none"}), root / "ckpt.pt")
        write_bundle(root / "ckpt.pt", root / "bundle", data=str(root / "tiny.npz"), parity_windows=2)
    finally:
        torch.set_num_threads(threads)
    return root / "bundle"
