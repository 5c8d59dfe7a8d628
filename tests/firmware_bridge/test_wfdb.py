"""WFDB records through the wfdb package (extra 'physionet'): MIT-BIH record 100 as published,
synthetic files exercising the format features record 100 lacks (written here, independently of
the library), and truncated/corrupt copies. Skipped when wfdb is not installed."""
from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.errors import BadInputError

pytest.importorskip("wfdb", reason="the wfdb package (extra 'physionet') reads PhysioNet records")

from firmware_bridge.formats.wfdb import (  # noqa: E402
    ANNOTATION_SYMBOLS,
    BEAT_SYMBOLS,
    read_annotations,
    read_header,
    read_signals,
)
from helpers import shared_path  # noqa: E402

realdata = pytest.mark.realdata


@pytest.fixture(scope="module")
def mitdb100() -> Path:
    return shared_path("ecg/mitdb-100/100.dat").with_suffix("")


# --- record 100 -------------------------------------------------------------------------

@realdata
def test_header_of_record_100(mitdb100):
    h = read_header(mitdb100)
    assert (h.record, h.fs_hz, h.n_samples) == ("100", 360.0, 650_000)
    assert [s.description for s in h.signals] == ["MLII", "V5"]
    assert all(s.fmt == 212 and s.gain == 200.0 and s.baseline == 1024 and s.units == "mV" for s in h.signals)
    assert [s.initial_value for s in h.signals] == [995, 1011]
    assert any("69 M" in c for c in h.comments)


@realdata
def test_signals_of_record_100_in_millivolts(mitdb100):
    signals, fs, names = read_signals(mitdb100)
    assert signals.shape == (650_000, 2) and signals.dtype == np.float64
    assert fs == 360.0 and names == ["MLII", "V5"]
    h = read_header(mitdb100)
    # The header's initial values are the first digital samples: (995 - 1024) / 200 mV etc.
    expect = [(s.initial_value - s.baseline) / s.gain for s in h.signals]
    np.testing.assert_allclose(signals[0], expect)
    assert np.all(np.isfinite(signals))
    # An ECG lead in mV: R waves around 1-2 mV peak-to-peak, not counts or volts.
    assert 0.5 < np.percentile(signals[:, 0], 99.9) - np.percentile(signals[:, 0], 0.1) < 5.0


@realdata
def test_annotations_of_record_100(mitdb100):
    samples, symbols = read_annotations(mitdb100.with_suffix(".atr"))
    assert samples.dtype == np.int64 and samples.size == len(symbols) == 2274
    assert np.all(np.diff(samples) >= 0) and samples[0] >= 0 and samples[-1] < 650_000
    counts = collections.Counter(symbols)
    assert counts == {"N": 2239, "A": 33, "V": 1, "+": 1}
    assert sum(s in BEAT_SYMBOLS for s in symbols) == 2273
    assert symbols[0] == "+" and samples[0] == 18


# --- damaged copies of record 100 -------------------------------------------------------

def _copy_record(src: Path, dst_dir: Path) -> Path:
    for ext in (".hea", ".dat", ".atr"):
        shutil.copy(src.with_suffix(ext), dst_dir / f"100{ext}")
    return dst_dir / "100"


@realdata
def test_truncated_signal_file_names_the_file(mitdb100, tmp_path):
    rec = _copy_record(mitdb100, tmp_path)
    dat = rec.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[: 1_000_000])
    with pytest.raises(BadInputError, match=r"100\.dat.*truncated"):
        read_signals(rec)


@realdata
def test_truncated_annotation_file_names_the_file(mitdb100, tmp_path):
    rec = _copy_record(mitdb100, tmp_path)
    atr = rec.with_suffix(".atr")
    data = atr.read_bytes()
    atr.write_bytes(data[: len(data) // 2])  # even length: only the end marker is missing
    with pytest.raises(BadInputError, match=r"100\.atr.*truncated"):
        read_annotations(atr)
    atr.write_bytes(data[:1001])
    with pytest.raises(BadInputError, match=r"100\.atr"):
        read_annotations(atr)


@realdata
def test_corrupt_signal_file_fails_its_checksum(mitdb100, tmp_path):
    rec = _copy_record(mitdb100, tmp_path)
    dat = rec.with_suffix(".dat")
    data = bytearray(dat.read_bytes())
    data[300_000] ^= 0x5A
    dat.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match=r"100\.dat.*checksum"):
        read_signals(rec)


def test_missing_files_raise_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="nothere"):
        read_header(tmp_path / "nothere")
    with pytest.raises(BadInputError, match="nothere"):
        read_annotations(tmp_path / "nothere.atr")


# --- synthetic files: format features that record 100 does not use ---------------------

def _pack_212(values: np.ndarray) -> bytes:
    """Encode 12-bit samples as format 212 (written independently of the reader's decoder)."""
    v = [int(a) & 0xFFF for a in values]
    if len(v) % 2:
        v.append(0)
    out = bytearray()
    for a, b in zip(v[0::2], v[1::2]):
        out += bytes([a & 0xFF, ((a >> 8) & 0x0F) | (((b >> 8) & 0x0F) << 4), b & 0xFF])
    if len(values) % 2:
        out = out[:-1]  # the spec lets the last, unused byte be dropped
    return bytes(out)


def _checksum(v: np.ndarray) -> int:
    s = int(np.sum(v.astype(np.int64))) & 0xFFFF
    return s - 0x10000 if s >= 0x8000 else s


@pytest.mark.parametrize("n_samples", [7, 8])
def test_format_212_round_trip_with_negatives_and_odd_counts(tmp_path, n_samples):
    rng = np.random.default_rng(n_samples)
    digital = rng.integers(-2047, 2048, size=(n_samples, 3))
    digital[0] = (-2047, 2047, 0)
    digital[2, 1] = -2048  # WFDB's "no sample" value
    (tmp_path / "syn.dat").write_bytes(_pack_212(digital.reshape(-1)))
    lines = [f"syn 3 500 {n_samples}"]
    for ch, (gain, base, name) in enumerate([(100, 0, "ECG I"), (0, 10, "ECG II"), (400.5, -3, "resp")]):
        col = digital[:, ch]
        gain_field = f"{gain}({base})/mV" if ch != 1 else f"{gain}({base})/uV"
        lines.append(f"syn.dat 212 {gain_field} 12 0 {col[0]} {_checksum(col)} 0 {name}")
    (tmp_path / "syn.hea").write_text("\n".join(lines) + "\n")
    signals, fs, names = read_signals(tmp_path / "syn.hea")
    assert fs == 500.0 and names == ["ECG I", "ECG II", "resp"]
    gains = np.array([100.0, 200.0, 400.5])  # 0 means WFDB's default gain, 200
    bases = np.array([0, 10, -3])
    expect = (digital - bases) / gains
    expect[2, 1] = np.nan
    np.testing.assert_allclose(signals, expect, rtol=0, atol=1e-12)


def test_format_16_with_byte_offset_and_length_from_file(tmp_path):
    digital = np.array([[0, -32767], [1000, 32767], [-5, 7]], dtype="<i2")
    (tmp_path / "r16.dat").write_bytes(b"HEADER!!" + digital.tobytes())
    (tmp_path / "r16.hea").write_text(
        "# a comment before the record line\nr16 2 250\n"
        "r16.dat 16+8 1000/mV 16 0\nr16.dat 16+8 2000(5)/mV 16 0\n"
    )
    signals, fs, _ = read_signals(tmp_path / "r16")
    assert fs == 250.0
    np.testing.assert_allclose(signals, (digital - [0, 5]) / [1000.0, 2000.0])


def _ann_word(code: int, inc: int) -> bytes:
    w = (code << 10) | inc
    return bytes([w & 0xFF, w >> 8])


def test_annotation_special_codes(tmp_path):
    data = bytearray()
    data += _ann_word(22, 0) + _ann_word(63, 22) + b"## time resolution: 1\x00"[:22]  # header note
    data += _ann_word(1, 100)                                                # N at 100
    data += _ann_word(61, 3) + _ann_word(62, 1) + _ann_word(60, 2)           # SUB, CHN, NUM
    data += _ann_word(59, 0) + (70_000 >> 16).to_bytes(2, "little") + (70_000 & 0xFFFF).to_bytes(2, "little")
    data += _ann_word(5, 10)                                                 # V at 100 + 70000 + 10
    data += _ann_word(28, 1) + _ann_word(63, 3) + b"(AF\x00"                 # '+' with odd-length aux
    data += _ann_word(14, 1023)                                              # '~'
    data += _ann_word(0, 0)
    path = tmp_path / "x.atr"
    path.write_bytes(bytes(data))
    samples, symbols = read_annotations(path)
    assert symbols == ["N", "V", "+", "~"]
    assert samples.tolist() == [100, 70_110, 70_111, 71_134]


def test_annotation_symbol_table_is_the_mit_one():
    # Spot checks against WFDB's ecgcodes.h.
    assert ANNOTATION_SYMBOLS[1] == "N" and ANNOTATION_SYMBOLS[5] == "V" and ANNOTATION_SYMBOLS[8] == "A"
    assert ANNOTATION_SYMBOLS[12] == "/" and ANNOTATION_SYMBOLS[28] == "+" and ANNOTATION_SYMBOLS[41] == "r"
    assert set("+~|\"x") & BEAT_SYMBOLS == set()
    assert set("NLRBAaJSVrFejnE/fQ?") == BEAT_SYMBOLS


def test_malformed_headers(tmp_path):
    # Whatever the library's own complaint, it comes back as one BadInputError naming the file.
    cases = {"a": "a/2 2 360 100\n",                            # a multi-segment record line, no segments
             "b": "b 2 360 100\nb.dat 212 200 12 0\n",          # announces 2 signals, describes 1
             "d": "d 1 abc 100\nd.dat 212 200 12 0\n"}          # not a sampling frequency
    for name, text in cases.items():
        (tmp_path / f"{name}.hea").write_text(text)
        with pytest.raises(BadInputError, match=rf"{name}\.hea"):
            read_header(tmp_path / name)
