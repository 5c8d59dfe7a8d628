"""TensorRT is available when tensorrt.Builder is, not when ``import tensorrt`` succeeds: with only
type stubs installed (tensorrt-stubs, which CI installs for pyright) the import succeeds as an
empty namespace package."""
from __future__ import annotations

import json
import subprocess
import sys


def _probe(tmp_path) -> dict:
    # A folder named tensorrt without __init__.py: what the stubs leave (a namespace package).
    (tmp_path / "tensorrt").mkdir()
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import tensorrt\n"
            "from edge.engine.plans import tensorrt_status, require_tensorrt\n"
            "from firmware_bridge.errors import MissingDependencyError\n"
            "ok, why = tensorrt_status()\n"
            "try:\n    require_tensorrt('building TensorRT engines'); err = None\n"
            "except MissingDependencyError as exc:\n    err = str(exc)\n"
            "print(json.dumps({'builder': hasattr(tensorrt, 'Builder'), 'ok': ok, 'why': why, 'err': err}))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_an_empty_tensorrt_namespace_is_not_tensorrt(tmp_path):
    got = _probe(tmp_path)
    if got["builder"]:  # real bindings installed: a regular package wins over a namespace folder
        assert got["ok"] and got["err"] is None
        return
    assert got["ok"] is False and "Builder" in got["why"]
    assert got["err"] is not None and "Builder" in got["err"] and "\n" not in got["err"]
