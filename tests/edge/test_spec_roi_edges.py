"""``preprocessing.rppg.roi_edges``: parsed like every setting, "fractional" by default, and
"pixel" for a manifest that does not name it (so bundles trained before it compute as before)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edge
from edge.preprocess import face_colour
from edge.signals.roi import face_rgb
from edge.spec import DEFAULT, Preprocessing, upgrade_v1
from firmware_bridge.errors import ConfigError

DEFAULT_MANIFEST = Path(edge.__file__).parent / "default_bundle" / "manifest.json"


def _without_key(d: dict) -> dict:
    d = json.loads(json.dumps(d))
    d["rppg"].pop("roi_edges", None)
    return d


def test_default_is_fractional_and_round_trips():
    assert DEFAULT.rppg.roi_edges == "fractional"
    d = DEFAULT.to_dict()
    assert d["rppg"]["roi_edges"] == "fractional"
    assert Preprocessing.from_dict(d) == DEFAULT


def test_a_manifest_without_the_key_means_pixel_and_writes_back_unchanged():
    d = _without_key(DEFAULT.to_dict())
    p = Preprocessing.from_dict(d)
    assert p.rppg.roi_edges == "pixel"
    # Written back as it was read: the key stays out, so the record hashes as before.
    assert p.to_dict() == d
    assert p.replace(**{"rppg.roi_edges": "fractional"}).rppg.roi_edges == "fractional"
    assert p.replace(**{"rppg.roi_edges": "fractional"}).replace(**{"rppg.roi_edges": "pixel"}) == p


def test_the_shipped_bundle_names_the_regions_it_was_trained_with():
    # The default bundle was trained after the setting existed: its manifest says so explicitly,
    # and reads back to the same record; without the key it would be read as "pixel".
    d = json.loads(DEFAULT_MANIFEST.read_text())["preprocessing"]
    assert d["rppg"]["roi_edges"] == "fractional"
    p = Preprocessing.from_dict(d)
    assert p.rppg.roi_edges == "fractional" and p.to_dict() == d
    assert Preprocessing.from_dict(_without_key(d)).rppg.roi_edges == "pixel"


def test_version_1_manifests_get_pixel():
    v1 = {"version": 1, "fps": 30.0, "window_s": 60.0}
    d = DEFAULT.to_dict()
    for key in ("face", "rppg", "tfr", "contact", "contact_level"):
        v1[key] = d[key]
    v1 = _without_key(v1)
    v1["version"] = 1
    assert Preprocessing.from_dict(v1).rppg.roi_edges == "pixel"
    assert "roi_edges" not in upgrade_v1(v1)["rppg"]


@pytest.mark.parametrize("bad", ["subpixel", "", 1, None, True, ["fractional"]])
def test_a_bad_value_is_one_config_error_naming_the_key(bad):
    d = DEFAULT.to_dict()
    d["rppg"]["roi_edges"] = bad
    with pytest.raises(ConfigError, match=r"preprocessing\.rppg\.roi_edges"):
        Preprocessing.from_dict(d)


def test_face_colour_passes_the_setting_through():
    # A box whose edges fall mid-pixel over columns of different colours: the two settings differ,
    # and each equals face_rgb called with that setting.
    rng = np.random.default_rng(0)
    frame = np.clip(np.array([120, 150, 200]) + rng.normal(0, 35, (120, 160, 3)), 0, 255).astype(np.uint8)
    box = (20.4, 10.7, 91.3, 97.6)
    got = {}
    for edges in ("pixel", "fractional"):
        p = DEFAULT.replace(**{"rppg.roi_edges": edges})
        got[edges] = face_colour(frame, box, p)
        want = face_rgb(frame, box, skin=p.rppg.skin, regions=p.rppg.roi_fractions, edges=edges)
        np.testing.assert_array_equal(got[edges], want)
    assert not np.allclose(got["pixel"], got["fractional"], rtol=0, atol=1e-6)
