"""PhysioNet WFDB records (``.hea`` headers, signal files, MIT annotations) through the ``wfdb`` package.

A thin layer over the PhysioNet ``wfdb`` library (``pip install 'emofuse[physionet]'``): it
reads the files, and this module gives the project's shapes and units, names the file in every
error (:class:`~firmware_bridge.errors.BadInputError`) and adds the checks the library leaves
to the caller: a signal file shorter than its header says (truncated), a signal whose 16-bit
sum differs from the header's checksum (corrupt), and an annotation file without its
end-of-file word (truncated). Only single-segment records are read.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.errors import BadInputError, require

__all__ = [
    "ANNOTATION_SYMBOLS",
    "BEAT_SYMBOLS",
    "EXTRA",
    "Header",
    "SignalSpec",
    "read_annotations",
    "read_header",
    "read_signals",
]

#: The emofuse extra that installs the ``wfdb`` package.
EXTRA = "physionet"

# MIT annotation codes 0..41 (WFDB ecgcodes.h); 15 and 17 are unassigned, 42..49 are user codes.
ANNOTATION_SYMBOLS: tuple[str, ...] = (
    " ", "N", "L", "R", "a", "V", "F", "J", "A", "S",
    "E", "j", "/", "Q", "~", "", "|", "", "s", "T",
    "*", "D", '"', "=", "p", "B", "^", "t", "+", "u",
    "?", "!", "[", "]", "e", "n", "@", "x", "f", "(",
    ")", "r",
)

#: Symbols that mark a beat (QRS complex); all others are rhythm, noise, or comment marks.
BEAT_SYMBOLS: frozenset[str] = frozenset("NLRBAaJSVrFejnE/fQ?")

# Bits per sample of the storage formats (signal(5)), to tell a truncated file.
_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12, "310": 32 / 3,
         "311": 32 / 3}


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a header.

    Attributes:
        file_name: the signal file, relative to the header's folder.
        fmt: storage format (e.g. 16, 80, 212).
        gain: ADC units per physical unit.
        baseline: the ADC value that maps to 0 physical units.
        units: physical units, e.g. ``"mV"``.
        adc_resolution: bits.
        adc_zero: ADC value at the middle of the converter's range.
        initial_value: first sample's ADC value, or None.
        checksum: 16-bit sum of all samples, or None.
        block_size: 0 except for special files.
        description: the signal's name, e.g. ``"MLII"``.
        byte_offset: bytes to skip at the start of the file.
    """

    file_name: str
    fmt: int
    gain: float
    baseline: int
    units: str
    adc_resolution: int
    adc_zero: int
    initial_value: int | None
    checksum: int | None
    block_size: int
    description: str
    byte_offset: int


@dataclass(frozen=True)
class Header:
    """A parsed ``.hea`` file.

    Attributes:
        record: record name.
        fs_hz: sampling rate, Hz.
        n_samples: samples per signal (0 when the header leaves it out).
        signals: one :class:`SignalSpec` per signal, in channel order.
        comments: the header's ``#`` comment lines, without the ``#``.
    """

    record: str
    fs_hz: float
    n_samples: int
    signals: tuple[SignalSpec, ...]
    comments: tuple[str, ...]


def _wfdb():
    return require("wfdb", EXTRA, "reading PhysioNet WFDB records")


def _record_base(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix == ".hea" else p


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


def _check_record_line(hea: Path) -> None:
    # The library reads a sampling frequency it cannot parse as its default, 250 Hz; a wrong
    # rate would shift every beat time, so an unreadable one is refused here.
    try:
        lines = hea.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise BadInputError(f"{hea}: cannot read ({exc.strerror or exc})") from exc
    fields = next((ln.split() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), [])
    if len(fields) >= 3:
        try:
            fs = float(fields[2].split("/")[0])
        except ValueError:
            fs = float("nan")
        if not fs > 0:
            raise BadInputError(f"{hea}: sampling frequency {fields[2]!r} is not a positive number")


def read_header(path: str | Path) -> Header:
    """Read a record's ``.hea`` file (``header(5)``) with ``wfdb.rdheader``.

    Args:
        path: record path without extension (``".../100"``) or its ``.hea`` file.

    Raises:
        BadInputError: missing or unreadable header, a multi-segment record, or a header the
            library rejects (its message is kept).
        MissingDependencyError: the ``wfdb`` package is not installed.
    """
    wfdb = _wfdb()
    base = _record_base(path)
    hea = base.with_suffix(".hea")
    if not hea.is_file():
        raise BadInputError(f"{hea}: no such WFDB header")
    _check_record_line(hea)
    try:
        h = wfdb.rdheader(str(base))
    except Exception as exc:  # wfdb raises ValueError, IndexError, TypeError... on bad headers
        raise BadInputError(f"{hea}: unreadable WFDB header ({type(exc).__name__}: {exc})") from exc
    if getattr(h, "seg_name", None) is not None:
        raise BadInputError(f"{hea}: multi-segment records are not supported")
    n = int(h.n_sig or 0)
    described = len(h.file_name or [])
    if described != n:
        raise BadInputError(f"{hea}: announces {n} signals but describes {described}")
    gains = [float(g) for g in (h.adc_gain or [])]
    signals = tuple(
        SignalSpec(
            file_name=str(h.file_name[i]), fmt=int(h.fmt[i]), gain=gains[i] if gains[i] else 200.0,
            baseline=int(h.baseline[i]), units=str(h.units[i] or ""), adc_resolution=int(h.adc_res[i] or 0),
            adc_zero=int(h.adc_zero[i] or 0), initial_value=_opt_int(h.init_value[i]),
            checksum=_opt_int(h.checksum[i]), block_size=int(h.block_size[i] or 0),
            description=str(h.sig_name[i] or ""), byte_offset=int(h.byte_offset[i] or 0))
        for i in range(n))
    return Header(record=str(h.record_name), fs_hz=float(h.fs), n_samples=int(h.sig_len or 0),
                  signals=signals, comments=tuple(str(c) for c in (h.comments or [])))


def _check_length(header: Header, folder: Path) -> None:
    by_file: dict[str, list[SignalSpec]] = {}
    for s in header.signals:
        by_file.setdefault(s.file_name, []).append(s)
    for name, specs in by_file.items():
        path = folder / name
        if not path.is_file():
            raise BadInputError(f"{path}: no such WFDB signal file")
        bits = _BITS.get(str(specs[0].fmt))
        if bits is None or not header.n_samples:
            continue
        need = specs[0].byte_offset + int(np.ceil(header.n_samples * len(specs) * bits / 8 - 1e-9))
        have = path.stat().st_size
        if have < need - 1:  # format 212 may drop the last, unused byte
            raise BadInputError(f"{path}: truncated signal file ({have} bytes, the header needs {need})")


def read_signals(record_path: str | Path) -> tuple[np.ndarray, float, list[str]]:
    """Read all signals of a single-segment WFDB record in physical units (``signal(5)``).

    Physical value = (digital - baseline) / gain (``wfdb.Record.dac``); WFDB's reserved
    "invalid sample" value becomes NaN. The header's checksums are verified.

    Args:
        record_path: record path without extension (``".../100"``) or its ``.hea`` file.

    Returns:
        ``(signals, fs_hz, names)``: float64 array of shape (N, C) in each signal's units
        (mV for MIT-BIH), the sampling rate in Hz, and the C signal descriptions
        (e.g. ``["MLII", "V5"]``).

    Raises:
        BadInputError: unreadable, truncated, or corrupt (checksum mismatch) signal file,
            or a header problem (see :func:`read_header`).
        MissingDependencyError: the ``wfdb`` package is not installed.
    """
    wfdb = _wfdb()
    base = _record_base(record_path)
    header = read_header(base)
    _check_length(header, base.parent)
    try:
        rec = wfdb.rdrecord(str(base), physical=False, return_res=64)
        digital = np.asarray(rec.d_signal, dtype=np.int64)
        physical = np.asarray(rec.dac(return_res=64), dtype=np.float64)
    except BadInputError:
        raise
    except Exception as exc:  # the library's own errors on damaged files
        raise BadInputError(f"{base}.dat: unreadable WFDB signals ({type(exc).__name__}: {exc})") from exc
    for ch, spec in enumerate(header.signals):
        if spec.checksum is None:
            continue
        total = int(np.sum(digital[:, ch])) & 0xFFFF
        if (total - 0x10000 if total >= 0x8000 else total) != spec.checksum:
            raise BadInputError(f"{base.parent / spec.file_name}: signal {spec.description!r} fails its checksum "
                                "(the file is corrupt)")
    return physical, float(header.fs_hz), [s.description for s in header.signals]


def read_annotations(atr_path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read a WFDB annotation file in MIT format (e.g. ``100.atr``) with ``wfdb.rdann``.

    Args:
        atr_path: path of the annotation file.

    Returns:
        ``(samples, symbols)``: int64 array of sample indices (non-decreasing) and the
        matching list of MIT symbols (``"N"``, ``"A"``, ``"V"``, ``"+"`` ...; see
        :data:`ANNOTATION_SYMBOLS`, :data:`BEAT_SYMBOLS` picks the beats).

    Raises:
        BadInputError: unreadable file, odd length, or no end-of-file word (a truncated file).
        MissingDependencyError: the ``wfdb`` package is not installed.
    """
    wfdb = _wfdb()
    path = Path(atr_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    # MIT annotation files are 16-bit words ending with a zero word (annot(5)); the library
    # reads a cut file without complaint.
    if len(data) % 2:
        raise BadInputError(f"{path}: odd length, not an MIT annotation file (truncated?)")
    if len(data) < 2 or data[-2:] != b"\x00\x00":
        raise BadInputError(f"{path}: truncated annotation file (no end-of-file word)")
    try:
        ann = wfdb.rdann(str(path.with_suffix("")), path.suffix.lstrip("."))
    except Exception as exc:  # the library's own errors on damaged files
        raise BadInputError(f"{path}: unreadable annotations ({type(exc).__name__}: {exc})") from exc
    return np.asarray(ann.sample, dtype=np.int64), [str(s) for s in ann.symbol]
