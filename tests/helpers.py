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
