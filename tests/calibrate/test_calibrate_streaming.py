"""emofuse calibrate: dependencies checked before the long work, windows streamed (only what the
bundle's inputs need is kept), a progress bar while they render, held-out parts as views."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibrate.calibration import (
    PART_GATE, PART_SWEEP, WindowPool, build_calibration, model_inputs, synth_pool, synth_windows,
)
from calibrate.quantize import check_dependencies
from edge.spec import DEFAULT as PREPROCESSING
from firmware_bridge.errors import MissingDependencyError

# The bundle builder of test_calibration.py (tests/ is not a package; --import-mode=importlib).
_spec = importlib.util.spec_from_file_location("_calibration_tests", Path(__file__).with_name("test_calibration.py"))
_calibration_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_calibration_tests)
write_bundle = _calibration_tests.write_bundle


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return write_bundle(root / "plain"), write_bundle(root / "feats", with_face_feats=True)


@pytest.fixture(scope="module")
def rendered(bundles):
    # Two synthetic people, two trials each: whole windows, and the same windows streamed.
    whole = synth_windows(PREPROCESSING, n_windows=4, trials_per_subject=2)
    streamed = synth_pool(bundles[1], n_windows=4, trials_per_subject=2)
    return whole, streamed


def test_streamed_windows_give_the_same_model_inputs(bundles, rendered):
    whole, streamed = rendered
    assert isinstance(streamed, WindowPool) and len(streamed) == len(whole) == 4
    for bundle in bundles:
        want, got = model_inputs(whole, bundle), model_inputs(streamed, bundle)
        assert list(got) == list(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    for name in ("valence", "arousal", "valence_high", "arousal_high", "subject", "trial", "face_present"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(whole, name), err_msg=name)
    assert streamed.meta == whole.meta


def test_streamed_pool_keeps_no_face_crop_sequence(rendered):
    whole, streamed = rendered
    assert not hasattr(streamed, "face_seq_crops")
    # The 120 crops of a window are replaced by their features (120 x 64 float32 here): the
    # pool holds less than a third of what the whole windows hold.
    assert streamed.nbytes < whole.face_seq_crops.nbytes / 3
    assert streamed.face_feats.shape == (4, PREPROCESSING.face.seq_frames, 64)


def test_progress_bar_counts_rendered_windows(bundles, capsys):
    synth_pool(bundles[0], n_windows=2, trials_per_subject=1, progress=True)
    err = capsys.readouterr().err
    assert "calibration windows" in err and "2/2" in err


def test_held_out_parts_are_views_not_copies(bundles, rendered):
    _, streamed = rendered
    calib, hold = build_calibration(bundles[0], "synth:trials=2", n_windows=2, n_holdout=2, pool=streamed)
    assert list(hold.part) == sorted(hold.part) and set(hold.part) == {PART_SWEEP, PART_GATE}
    for part in (PART_SWEEP, PART_GATE):
        sel = hold.select_part(part)
        assert np.all(sel.part == part)
        for name, arr in sel.inputs.items():
            assert np.shares_memory(arr, hold.inputs[name]), name
    assert set(calib.subject).isdisjoint(hold.subject)


def test_every_dependency_is_checked_before_any_work(tmp_path):
    # sympy blocked as if it were not installed: the command must say so at once, before it
    # copies the bundle or renders a window (it used to die after minutes of rendering).
    out = tmp_path / "copy"
    code = ("import sys; sys.modules['sympy'] = None; from edge.cli import main; "
            f"sys.exit(main(['calibrate', 'default', '--out', {str(out)!r}, '--windows', '2', '--holdout', '2']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "sympy" in lines[0] and "pip install sympy" in lines[0]
    assert not out.exists() and "calibration windows" not in proc.stderr


def test_check_dependencies_names_modelopt_only_when_asked():
    check_dependencies("ort")  # everything the ONNX Runtime path needs is installed here
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"nvidia-modelopt\[onnx\]"):
            check_dependencies("modelopt")
