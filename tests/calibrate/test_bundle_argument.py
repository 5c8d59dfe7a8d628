"""Every command that takes a bundle takes ``default``, through one resolver (edge.cli.bundle_folder)."""
from __future__ import annotations

from pathlib import Path

import pytest

from calibrate.commands import build as build_command
from calibrate.commands import triton as triton_command
from edge.cli import bundle_folder
from edge.pipeline import DEFAULT_BUNDLE_DIR, default_bundle_dir
from firmware_bridge.errors import MissingDependencyError
from helpers import run_command

needs_default = pytest.mark.skipif(not (DEFAULT_BUNDLE_DIR / "manifest.json").is_file(),
                                   reason="the packaged default bundle is not installed")


def test_the_resolver_maps_default_to_the_packaged_bundle():
    assert bundle_folder("some/folder") == Path("some/folder")
    if (DEFAULT_BUNDLE_DIR / "manifest.json").is_file():
        assert bundle_folder("default") == default_bundle_dir()


@needs_default
def test_triton_takes_default(tmp_path, capsys):
    pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (extra 'triton')")
    out = tmp_path / "repo"
    assert run_command(triton_command, ["triton", "default", "--out", str(out)]) == 0
    configs = list(out.glob("*/config.pbtxt"))
    assert configs, capsys.readouterr().out
    assert any(p.name.startswith("model") for p in (configs[0].parent / "1").iterdir())


@needs_default
def test_build_takes_default(tmp_path):
    # Without TensorRT the build stops at TensorRT - after the bundle was found and loaded.
    trt = pytest.importorskip("importlib").util.find_spec("tensorrt")
    if trt is not None:
        import tensorrt

        if hasattr(tensorrt, "Builder"):
            pytest.skip("TensorRT is installed: building the default bundle's engine is a device test")
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        run_command(build_command, ["build", "default", "--precision", "fp32"])
