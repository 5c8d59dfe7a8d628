"""The layering rule (docs/ARCHITECTURE.md, "Packages and layers"), checked two ways.

1. Statically: every ``import`` / ``from ... import`` statement of every module of the five
   packages, at module top or inside a function, and every import by name
   (``importlib.import_module("x")``, ``require("x", ...)``, ``__import__("x")``), is read with
   :mod:`ast` and held to the allowed arrows. This sees imports that only run on some path.
2. Dynamically: every ``edge``, ``firmware_bridge`` and ``calibrate`` module is imported in a
   fresh interpreter and ``sys.modules`` is checked, which also sees what a third-party
   library or a package ``__init__`` drags in.

The arrows:

- ``firmware_bridge``: no other emofuse package;
- ``edge``: ``firmware_bridge`` only;
- ``export``: ``edge``, ``firmware_bridge``;
- ``calibrate``: ``edge``, ``firmware_bridge`` and ``export.data`` (the torch-free dataset
  package, on purpose: calibration data is training data) - never ``export.models``,
  ``export.train``, ...;
- ``bench``: ``edge``, ``firmware_bridge``, ``export``, ``calibrate`` (a tool layer on top);
- torch only in ``export``.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from helpers import REPO

PACKAGES = ("firmware_bridge", "edge", "export", "calibrate", "bench")

# package -> the emofuse modules it may import (a module and everything below it).
ALLOWED: dict[str, tuple[str, ...]] = {
    "firmware_bridge": (),
    "edge": ("firmware_bridge",),
    "export": ("edge", "firmware_bridge"),
    "calibrate": ("edge", "firmware_bridge", "export.data"),
    "bench": ("edge", "firmware_bridge", "export", "calibrate"),
}
TORCH_ROOTS = ("torch", "torchvision", "torchaudio")
TORCH_ALLOWED = ("export",)
# Calls that import the module named by their first argument.
IMPORTING_CALLS = ("import_module", "require", "__import__")


@dataclass(frozen=True)
class ImportSite:
    """One import found in a source: 1-based line, the statement's text and the dotted
    module names it reaches (for ``from a import b``: ``a`` and ``a.b``, since ``b`` may be
    a submodule)."""

    line: int
    text: str
    base: str
    candidates: tuple[str, ...]


def _module_name(path: Path) -> tuple[str, bool]:
    """Dotted module name of a file under REPO and whether it is a package ``__init__``."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _constant_prefix(arg: ast.expr) -> str | None:
    """The module name a call's first argument names: a string constant, or the constant
    head of an f-string cut at its last dot (``f"edge.signals.{m}"`` -> ``edge.signals``)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values:
        head = arg.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str) and "." in head.value:
            return head.value.rsplit(".", 1)[0]
    return None


def import_sites(source: str, module: str, is_package: bool = False) -> list[ImportSite]:
    """Every import statement and import-by-name call in ``source`` (module ``module``),
    wherever it sits: module top, function, class, ``if`` or ``try`` body."""
    lines = source.splitlines()
    sites: list[ImportSite] = []
    for node in ast.walk(ast.parse(source)):
        text = lines[node.lineno - 1].strip() if hasattr(node, "lineno") else ""
        if isinstance(node, ast.Import):
            sites += [ImportSite(node.lineno, text, a.name, (a.name,)) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_package)
            sites.append(ImportSite(node.lineno, text, base,
                                    tuple(f"{base}.{a.name}" for a in node.names)))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            target = _constant_prefix(node.args[0]) if name in IMPORTING_CALLS else None
            if target:
                sites.append(ImportSite(node.lineno, text, target, (target,)))
    return sites


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(source: str, module: str, label: str, is_package: bool = False) -> list[str]:
    """``"label:line: statement (reason)"`` for each import in ``source`` that goes against the
    arrows for the package ``module`` belongs to; empty when it keeps them."""
    own = module.split(".")[0]
    found = []
    for site in import_sites(source, module, is_package):
        root = site.base.split(".")[0]
        if root in TORCH_ROOTS and own not in TORCH_ALLOWED:
            found.append(f"{label}:{site.line}: {site.text}  ({own} never imports {root})")
        elif root in PACKAGES and root != own:
            # ``from export import data`` reaches export.data; ``from export import train``
            # reaches export.train: a name's own module decides when the base is not allowed.
            if not (_under(site.base, ALLOWED[own])
                    or all(_under(c, ALLOWED[own]) for c in site.candidates)):
                allowed = ", ".join(ALLOWED[own]) or "no other emofuse package"
                found.append(f"{label}:{site.line}: {site.text}  ({own} may import only: {allowed})")
    return found


def tree_violations(root: Path = REPO) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module, is_package = _module_name(REPO / path.relative_to(root))
            found += violations(path.read_text(encoding="utf-8"), module,
                                str(path.relative_to(root)), is_package)
    return found


def test_every_import_statement_follows_the_arrows():
    found = tree_violations()
    assert not found, "imports against the layering:\n" + "\n".join(found)


def test_the_static_check_sees_every_package_module():
    """Each package has modules, and the check reads function-level imports too (a package
    that vanished or moved would otherwise pass by checking nothing)."""
    for package in PACKAGES:
        assert list((REPO / package).rglob("*.py")), package
    sites = import_sites("def f():\n    import torch\n    from edge import spec\n", "x")
    assert [(s.line, s.base) for s in sites] == [(2, "torch"), (3, "edge")]


def test_the_static_check_fails_on_wrong_way_imports():
    """Planted wrong-way imports, one per arrow, each named with its file:line."""
    planted = {
        ("firmware_bridge.cameras.x", "def f():\n    from edge.spec import DEFAULT\n"): 2,
        ("edge.x", "import os\nimport export.train\n"): 2,
        ("edge.x", "def f():\n    import torch.nn as nn\n"): 2,
        ("edge.x", "from firmware_bridge import errors\nfrom calibrate import gate\n"): 2,
        ("edge.x", "import importlib\nm = importlib.import_module('bench.signals')\n"): 2,
        ("edge.x", "def f():\n    return require('torch', 'export', 'x')\n"): 2,
        ("export.x", "from calibrate.gate import run_graph\n"): 1,
        ("calibrate.x", "from export.data import corpora\nfrom export.models import build\n"): 2,
        ("calibrate.x", "from export import data, train\n"): 1,
        ("calibrate.x", "import torch\n"): 1,
        ("bench.x", "from export.train import main\nimport torch\n"): 2,
    }
    for (module, source), line in planted.items():
        found = violations(source, module, "planted.py")
        assert len(found) == 1 and found[0].startswith(f"planted.py:{line}: "), (module, source, found)
    # The allowed arrows pass, relative imports included.
    allowed = {
        "firmware_bridge.a.b": "from ..errors import ConfigError\nfrom . import c\n",
        "edge.x": "from firmware_bridge.errors import ConfigError\nimport numpy\n",
        "export.x": "import torch\nfrom edge.spec import DEFAULT\n",
        "calibrate.x": "from export.data.synth import synth_trials\nfrom export import data\n",
        "bench.x": "from export.train import main\nfrom calibrate import gate\n",
    }
    for module, source in allowed.items():
        assert violations(source, module, "ok.py") == [], module


def test_the_tree_check_fails_on_a_planted_file(tmp_path):
    """The whole-tree walk on a copy with one wrong-way import planted inside a function."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "edge" / "late.py").write_text(
        "import numpy as np\n\n\ndef load():\n    from export.train import train_folds\n")
    assert tree_violations(tmp_path) == [
        "edge/late.py:5: from export.train import train_folds  "
        "(edge may import only: firmware_bridge)"]


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


def test_calibrate_never_imports_torch_or_export_beyond_data():
    failed, modules = _probe(("calibrate",))
    assert not failed, failed
    assert not any(m.split(".")[0] == "torch" for m in modules)
    assert not any(m.split(".")[0] == "bench" for m in modules)
    assert all(_under(m, ("export.data",)) for m in modules if m.split(".")[0] == "export" and m != "export"), \
        sorted(m for m in modules if m.startswith("export."))
