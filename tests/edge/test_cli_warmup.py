"""emofuse warmup compiles the runtime's Numba kernels into the folder set by --numba-cache or
EMOFUSE_NUMBA_CACHE, and a later process (the runtime's own kernel warm-up) loads them from there
without compiling."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _emofuse(argv, env=None, timeout=900, cwd=None):
    code = f"import sys; from edge.cli import main; sys.exit(main({argv!r}))"
    full_env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "EMOFUSE_NUMBA_CACHE")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd)


def test_warmup_fills_the_cache_folder_and_the_next_start_reads_it(tmp_path):
    cache = tmp_path / "numba cache"
    first = _emofuse(["--numba-cache", str(cache), "warmup", "--bundle", "none", "--json"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    cold = json.loads(first.stdout)
    assert cold["cache_dir"] == str(cache.resolve()) and cold["compiled"] > 0
    assert any(p.suffix == ".nbi" for p in cache.rglob("*")) and any(p.suffix == ".nbc" for p in cache.rglob("*"))
    # A new process pointed at the folder by the environment variable compiles nothing.
    second = _emofuse(["warmup", "--bundle", "none", "--json"], env={"EMOFUSE_NUMBA_CACHE": str(cache)},
                      cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    warm = json.loads(second.stdout)
    assert warm["cache_dir"] == str(cache.resolve())
    assert warm["compiled"] == 0 and warm["from_cache"] > 0


def test_an_unwritable_cache_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = _emofuse(["--numba-cache", str(blocker / "cache"), "warmup", "--bundle", "none"], timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Numba cache folder" in lines[0]
