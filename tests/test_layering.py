"""The layering rule: edge and firmware_bridge never import torch, and firmware_bridge
imports no other emofuse package."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from helpers import REPO

PROBE = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    sys.path.insert(0, {repo!r})
    failed = []
    for pkg in {packages!r}:
        p = importlib.import_module(pkg)
        for m in pkgutil.walk_packages(p.__path__, pkg + "."):
            try:
                importlib.import_module(m.name)
            except Exception as exc:
                failed.append(f"{{m.name}}: {{type(exc).__name__}}: {{exc}}")
    print("FAILED", failed)
    print("MODULES", sorted(k for k in sys.modules if k.split(".")[0] in
          ("torch", "edge", "export", "calibrate", "bench", "firmware_bridge")))
    """
)


def _probe(packages: tuple[str, ...]) -> tuple[list[str], set[str]]:
    code = PROBE.format(repo=str(REPO), packages=packages)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    return eval(lines["FAILED"]), set(eval(lines["MODULES"]))  # noqa: S307 - our own output


def test_edge_and_bridge_never_import_torch():
    failed, modules = _probe(("edge", "firmware_bridge"))
    assert not failed, failed
    assert not any(m.split(".")[0] == "torch" for m in modules)
    assert not any(m.split(".")[0] in ("export", "calibrate", "bench") for m in modules)


def test_bridge_imports_no_other_emofuse_package():
    failed, modules = _probe(("firmware_bridge",))
    assert not failed, failed
    assert {m.split(".")[0] for m in modules} == {"firmware_bridge"}
