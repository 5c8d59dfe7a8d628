"""A bundle is checked against its model before anything runs (issue 13, item 5), and the
manifest validator never fails but with one of the package's errors (issue 13, item 6).

Each case is one line: ``BadInputError`` for data that is not a manifest (too large, nested too
deep, not the graph it names), ``ConfigError`` for a field that is wrong; ``emofuse replay``
turns either into exit 2 before it opens a camera.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.bundle import MAX_MANIFEST_BYTES, load_bundle, parse_manifest, read_manifest
from firmware_bridge.errors import BadInputError, ConfigError
from helpers import preprocessing_dict, shared_path, tfr_only_bundle


def _bundle(tmp_path, edit=None, name="b"):
    root = tfr_only_bundle(tmp_path / name, preprocessing_dict())
    if edit is not None:
        m = json.loads((root / "manifest.json").read_text())
        edit(m)
        (root / "manifest.json").write_text(json.dumps(m))
    return root


def _one_line(exc_info, *needles):
    text = str(exc_info.value)
    assert "\n" not in text and all(n in text for n in needles), text


def _set_input(**changes):
    def edit(m):
        m["inputs"][0].update(changes)
    return edit


def test_manifest_and_graph_disagree_is_caught_by_default(tmp_path):
    # The graph takes tfr float32 (B, 1, 32, 32).
    cases = {
        "name": _set_input(name="tfr_image"),
        "dtype": _set_input(dtype="float16"),
    }
    for label, edit in cases.items():
        root = _bundle(tmp_path, edit, name=label)
        with pytest.raises(ConfigError) as e:
            load_bundle(root)
        _one_line(e, "model.onnx")


def test_a_graph_dim_that_differs_is_caught(tmp_path):
    root = _bundle(tmp_path)
    import onnx

    model = onnx.load(str(root / "model.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 16
    onnx.save(model, root / "model.onnx")
    m = json.loads((root / "manifest.json").read_text())
    from edge.bundle import sha256_file

    m["files"]["model.onnx"]["sha256"] = sha256_file(root / "model.onnx")
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError) as e:
        load_bundle(root)
    _one_line(e, "differs")


def test_a_huge_manifest_is_refused_without_reading_it_whole(tmp_path):
    root = _bundle(tmp_path)
    path = root / "manifest.json"
    with path.open("r+b") as fh:
        fh.seek(0, 2)
        fh.truncate(300 << 20)  # 300 MB (sparse: the test itself stays small)
    with pytest.raises(BadInputError) as e:
        load_bundle(root)
    _one_line(e, "larger than", f"{MAX_MANIFEST_BYTES >> 20} MiB")


def test_deeply_nested_json_is_one_line_not_a_recursion_error(tmp_path):
    def edit(m):
        m["training"] = {}
    root = _bundle(tmp_path, edit)
    text = (root / "manifest.json").read_text()
    deep = '{"x": ' * 200_000 + "1" + "}" * 200_000
    (root / "manifest.json").write_text(text.replace('"training": {}', f'"training": {deep}'))
    with pytest.raises(BadInputError) as e:
        load_bundle(root)
    _one_line(e, "nested")
    # Brackets inside strings are not nesting.
    (root / "manifest.json").write_text(text.replace('"training": {}', '"training": {"note": "' + "[{" * 500 + '"}'))
    load_bundle(root, verify_hashes=False)


@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["outputs"].append({"name": "big", "shape": ["batch", 1_000_000, 240_000], "dtype": "float32",
                                    "meaning": "absurd"}), "GiB"),
    (lambda m: m["preprocessing"]["face"].update(seq_frames=1800, seq_rate_hz=30.0, crop_size=1024), "GiB"),
    (lambda m: m["inputs"][0].update(shape="32x32"), "shape"),
    (lambda m: m["preprocessing"].update(fps="30"), "fps"),
])
def test_absurd_sizes_and_wrong_types_are_refused_before_allocating(tmp_path, edit, needle):
    root = _bundle(tmp_path, edit)
    with pytest.raises(ConfigError) as e:
        load_bundle(root)
    _one_line(e, needle)


@pytest.mark.realdata
def test_replay_with_a_broken_bundle_exits_2_with_one_line(tmp_path):
    root = _bundle(tmp_path, _set_input(dtype="float16"))
    proc = subprocess.run([sys.executable, "-c", "import sys; from edge.cli import main; sys.exit(main())",
                           "replay", str(shared_path("rppg/physrecorder-v01")), "--bundle", str(root),
                           "--print", "none"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("WARNING")]
    assert len(lines) == 1 and "model.onnx" in lines[0] and "Traceback" not in proc.stderr


# -- property: random mutations of a valid manifest --------------------------------------------------

_VALID = None


def _valid_manifest(tmp_path_factory):
    global _VALID
    if _VALID is None:
        root = tfr_only_bundle(tmp_path_factory.mktemp("valid") / "b", preprocessing_dict())
        _VALID = json.loads((root / "manifest.json").read_text())
    return copy.deepcopy(_VALID)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_manifests_raise_only_package_errors(tmp_path_factory, data):
    m = _valid_manifest(tmp_path_factory)
    paths = [p for p in _paths(m) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = m
        try:
            for k in path[:-1]:
                parent = parent[k]
            op = data.draw(st.sampled_from(["replace", "delete", "scale"]))
            if op == "delete":
                del parent[path[-1]]
            elif op == "scale" and isinstance(parent[path[-1]], (int, float)) and not isinstance(parent[path[-1]], bool):
                parent[path[-1]] = parent[path[-1]] * data.draw(st.sampled_from([-1, 0, 1000, 10**9, 0.5]))
            else:
                parent[path[-1]] = data.draw(_json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or retyped the parent
    try:
        parse_manifest(m, source="manifest.json")
    except (ConfigError, BadInputError) as exc:
        assert str(exc) and "\n" not in str(exc)


def test_valid_manifests_still_load(tmp_path):
    """Fields a reader carries along (training, export extras, parity details) take any JSON."""
    root = _bundle(tmp_path, lambda m: (m["training"].update(metrics={"f1": [0.5, {"x": None}]}),
                                        m["export"].update(note="x"), m["parity"].update(tolerance=1e-4)))
    b = load_bundle(root)
    assert b.input_names == ["tfr"] and read_manifest(root / "manifest.json").training["metrics"]["f1"][0] == 0.5
