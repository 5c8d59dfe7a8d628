"""firmware_bridge.uri: URIs split once, option text typed once, and the camera and sensor
registries rejecting the same bad input with the same one-line ConfigError."""
from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.cameras import open_camera, parse_camera_uri
from firmware_bridge.errors import ConfigError
from firmware_bridge.sensors import open_sensor, parse_sensor_uri
from firmware_bridge.uri import (
    UriParts,
    convert_options,
    parse_uri,
    split_query,
    split_scheme,
    to_bool,
    to_int,
    to_names,
    to_nonneg_float,
    to_nonneg_int,
    to_opt_pos_float,
    to_pos_float,
    to_pos_int,
)


def test_split_scheme_lowercases_and_leaves_bare_paths_alone():
    assert split_scheme("CSI://0?fps=30") == ("csi", "0?fps=30")
    assert split_scheme("/data/clip.avi") == (None, "/data/clip.avi")
    assert split_scheme("C:/clip.avi") == (None, "C:/clip.avi")  # a drive letter is not a scheme
    assert split_scheme("1x://a") == (None, "1x://a")  # a scheme starts with a letter


def test_split_query_decodes_target_and_keeps_blank_values():
    target, query = split_query("/dev/tty%20USB0?baud=921600&streams=ecg%2Ceda&tag=", "serial://x")
    assert target == "/dev/tty USB0"
    assert query == {"baud": "921600", "streams": "ecg,eda", "tag": ""}
    assert split_query("", "sim://") == ("", {})


@pytest.mark.parametrize("rest, match", [
    ("0?fps=30&fps=25", r"serial://x: query parameter 'fps' given twice"),
    ("0?fps", r"serial://x: malformed query 'fps'"),
    ("0?fps=30&&", r"malformed query"),
])
def test_split_query_rejects_in_one_line(rest, match):
    with pytest.raises(ConfigError, match=match) as info:
        split_query(rest, "serial://x")
    assert "\n" not in str(info.value)


def test_parse_uri():
    assert parse_uri("lsl://My%20ECG?type=ECG") == UriParts("lsl://My%20ECG?type=ECG", "lsl", "My ECG", {"type": "ECG"})
    # A bare path keeps a '?' in its name: only a scheme makes a query.
    assert parse_uri("clips/a?b.avi") == UriParts("clips/a?b.avi", None, "clips/a?b.avi", {})


@pytest.mark.parametrize("convert, good, bad", [
    (to_bool, [(True, True), ("on", True), (" No ", False), (1, True), (np.bool_(False), False)],
     ["maybe", 2, 1.0, None]),
    (to_int, [("-5", -5), (7, 7), (np.int64(3), 3),
              ("1700000000123456789", 1700000000123456789)],  # ns stay exact: no float on the way
     ["1.5", 1.5, 3.0, True, "", "1e9"]),
    (to_nonneg_int, [("0", 0), (12, 12)], ["-1", 0.5]),
    (to_pos_int, [("1280", 1280), (720, 720), (1280.0, 1280)], ["0", -3, 1.5, True, "x", float("nan"), float("inf")]),
    (to_pos_float, [("29.97", 29.97), (30, 30.0)], ["0", "-1", "inf", "nan", True, "x"]),
    (to_nonneg_float, [("0", 0.0), (2.5, 2.5)], ["-0.1", "inf"]),
    (to_opt_pos_float, [("none", None), ("", None), (None, None), ("2", 2.0)], ["0", "x"]),
    (to_names, [("ecg, eda", ("ecg", "eda")), (["ppg"], ("ppg",))], ["ecg,,eda", "", []]),
])
def test_converters_accept_and_reject(convert, good, bad):
    for value, expected in good:
        assert convert(value) == expected, value
    for value in bad:
        with pytest.raises((ValueError, TypeError)):
            convert(value)


def test_convert_options_names_unknown_and_bad_values_in_one_line():
    spec = {"baud": to_pos_int, "reconnect": to_bool}
    assert convert_options({"baud": "115200"}, spec, "serial://p") == {"baud": 115200}
    with pytest.raises(ConfigError, match=r"^serial://p: unknown option\(s\) baudd, x; valid here: baud, reconnect$"):
        convert_options({"baudd": "1", "x": "2"}, spec, "serial://p")
    with pytest.raises(ConfigError, match=r"^serial://p: option reconnect='maybe': expected true/false$"):
        convert_options({"reconnect": "maybe"}, spec, "serial://p")
    with pytest.raises(ConfigError, match="valid here: none"):
        convert_options({"a": 1}, {}, "x://")


def test_camera_and_sensor_registries_reject_alike():
    """The same bad option, through the cameras' and the sensors' registries: one message."""
    messages = []
    for opener in (open_camera, open_sensor):
        with pytest.raises(ConfigError) as info:
            opener("sim://?duration_s=1", origin_ns="1.5")
        messages.append(str(info.value))
    assert messages[0] == messages[1] == "sim://?duration_s=1: option origin_ns='1.5': expected a whole number"
    for parse in (parse_camera_uri, parse_sensor_uri):
        with pytest.raises(ConfigError, match="malformed query"):
            parse("sim://?seed")  # the camera side raised a bare ValueError here before
        with pytest.raises(ConfigError, match="'seed' given twice"):
            parse("sim://?seed=1&seed=2")
