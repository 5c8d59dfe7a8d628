"""Reader for PhysioNet WFDB records: ``.hea`` headers, format 212/16/80 signals, MIT annotations.

Written from the format descriptions in the WFDB Programmer's Guide and the man pages
``header(5)``, ``signal(5)`` and ``annot(5)`` (Moody, PhysioNet); no dependency on the
``wfdb`` package. Only what single-segment ECG records need is supported: one sample per
frame per signal, no skew. Anything else, and any truncated or inconsistent file, raises
:class:`~firmware_bridge.errors.BadInputError` naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.errors import BadInputError

__all__ = [
    "ANNOTATION_SYMBOLS",
    "BEAT_SYMBOLS",
    "Header",
    "SignalSpec",
    "read_annotations",
    "read_header",
    "read_signals",
]

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

_DEFAULT_GAIN = 200.0  # WFDB's default ADC gain (adu per physical unit) when the field is 0 or absent
_SUPPORTED_FORMATS = (16, 80, 212)
# Per-format: sample value WFDB reserves for "no sample" (becomes NaN).
_INVALID_SAMPLE = {16: -32768, 80: -128, 212: -2048}

# Special annotation codes of the MIT format (annot(5)).
_SKIP, _NUM, _SUB, _CHN, _AUX = 59, 60, 61, 62, 63


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a header.

    Attributes:
        file_name: the signal file, relative to the header's folder.
        fmt: storage format (16, 80 or 212).
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


def _int_field(text: str, what: str, path: Path) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadInputError(f"{path}: bad {what} {text!r} in header") from None


def _parse_signal_line(fields: list[str], path: Path) -> SignalSpec:
    if len(fields) < 2:
        raise BadInputError(f"{path}: signal line needs at least a file name and format: {fields}")
    file_name, fmt_field = fields[0], fields[1]
    byte_offset = 0
    if "+" in fmt_field:
        fmt_field, off = fmt_field.split("+", 1)
        byte_offset = _int_field(off, "byte offset", path)
    if ":" in fmt_field:
        fmt_field, skew = fmt_field.split(":", 1)
        if _int_field(skew, "skew", path) != 0:
            raise BadInputError(f"{path}: signal skew is not supported")
    if "x" in fmt_field:
        fmt_field, spf = fmt_field.split("x", 1)
        if _int_field(spf, "samples per frame", path) != 1:
            raise BadInputError(f"{path}: multi-frequency records are not supported")
    fmt = _int_field(fmt_field, "format", path)
    if fmt not in _SUPPORTED_FORMATS:
        raise BadInputError(f"{path}: signal format {fmt} is not supported (only {_SUPPORTED_FORMATS})")

    gain, baseline, units = _DEFAULT_GAIN, None, "mV"
    if len(fields) > 2:
        g = fields[2]
        if "/" in g:
            g, units = g.split("/", 1)
        if "(" in g:
            g, b = g.split("(", 1)
            baseline = _int_field(b.rstrip(")"), "baseline", path)
        try:
            gain = float(g)
        except ValueError:
            raise BadInputError(f"{path}: bad ADC gain {fields[2]!r}") from None
        if gain == 0.0:
            gain = _DEFAULT_GAIN
    adc_res = _int_field(fields[3], "ADC resolution", path) if len(fields) > 3 else 0
    adc_zero = _int_field(fields[4], "ADC zero", path) if len(fields) > 4 else 0
    init = _int_field(fields[5], "initial value", path) if len(fields) > 5 else None
    checksum = _int_field(fields[6], "checksum", path) if len(fields) > 6 else None
    block = _int_field(fields[7], "block size", path) if len(fields) > 7 else 0
    desc = " ".join(fields[8:])
    return SignalSpec(
        file_name=file_name,
        fmt=fmt,
        gain=gain,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        adc_resolution=adc_res,
        adc_zero=adc_zero,
        initial_value=init,
        checksum=checksum,
        block_size=block,
        description=desc,
        byte_offset=byte_offset,
    )


def _header_path(path: str | Path) -> Path:
    p = Path(path)
    return p if p.suffix == ".hea" else p.with_name(p.name + ".hea")


def read_header(path: str | Path) -> Header:
    """Parse a WFDB header file (format of PhysioNet's ``header(5)``).

    Args:
        path: the ``.hea`` file, or the record path without extension (``".../100"``).

    Returns:
        A :class:`Header`.

    Raises:
        BadInputError: missing or unreadable file, malformed line, multi-segment record,
            or an unsupported signal format, skew, or multi-frequency layout.
    """
    hea = _header_path(path)
    try:
        text = hea.read_text(encoding="latin-1")
    except OSError as exc:
        raise BadInputError(f"{hea}: cannot read WFDB header ({exc})") from exc
    lines = [ln.strip() for ln in text.splitlines()]
    comments = tuple(ln[1:].strip() for ln in lines if ln.startswith("#"))
    body = [ln.split() for ln in lines if ln and not ln.startswith("#")]
    if not body:
        raise BadInputError(f"{hea}: no record line in WFDB header")
    rec = body[0]
    if len(rec) < 2:
        raise BadInputError(f"{hea}: record line needs a name and a signal count: {' '.join(rec)}")
    if "/" in rec[0]:
        raise BadInputError(f"{hea}: multi-segment records are not supported")
    n_sig = _int_field(rec[1], "signal count", hea)
    fs_hz = 250.0  # WFDB's default when the field is absent
    if len(rec) > 2:
        fs_text = rec[2].split("/")[0].split("(")[0]
        try:
            fs_hz = float(fs_text)
        except ValueError:
            raise BadInputError(f"{hea}: bad sampling frequency {rec[2]!r}") from None
        if not fs_hz > 0:
            raise BadInputError(f"{hea}: sampling frequency must be > 0, got {fs_hz}")
    n_samples = _int_field(rec[3], "sample count", hea) if len(rec) > 3 else 0
    if len(body) - 1 < n_sig:
        raise BadInputError(f"{hea}: header announces {n_sig} signals but describes {len(body) - 1}")
    signals = tuple(_parse_signal_line(f, hea) for f in body[1 : 1 + n_sig])
    return Header(record=rec[0], fs_hz=fs_hz, n_samples=n_samples, signals=signals, comments=comments)


def _decode(raw: np.ndarray, fmt: int, n_values: int) -> np.ndarray:
    """Digital samples (int32) from the bytes of one signal file, frames interleaved."""
    if fmt == 16:
        return raw[: 2 * n_values].view("<i2").astype(np.int32)
    if fmt == 80:
        # Offset binary: 128 is zero.
        return raw[:n_values].astype(np.int32) - 128
    # Format 212: each pair of 12-bit two's-complement samples packed into three bytes; the
    # middle byte holds the high nibbles (low nibble -> first sample, high nibble -> second).
    n_triplets = (n_values + 1) // 2
    b = raw[: 3 * n_triplets].astype(np.int32)
    if b.size < 3 * n_triplets:  # odd count in a file whose last byte was legitimately dropped
        b = np.concatenate([b, np.zeros(3 * n_triplets - b.size, np.int32)])
    b = b.reshape(-1, 3)
    out = np.empty((n_triplets, 2), np.int32)
    out[:, 0] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
    out[:, 1] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
    out[out > 2047] -= 4096
    return out.reshape(-1)[:n_values]


def _bytes_needed(fmt: int, n_values: int) -> int:
    return {16: 2 * n_values, 80: n_values}.get(fmt, (3 * n_values + 1) // 2)


def read_signals(record_path: str | Path) -> tuple[np.ndarray, float, list[str]]:
    """Read all signals of a single-segment WFDB record in physical units (``signal(5)``).

    Physical value = (digital - baseline) / gain, with gain and baseline from the header;
    WFDB's reserved "invalid sample" value becomes NaN. Checksums in the header are verified.

    Args:
        record_path: record path without extension (``".../100"``) or its ``.hea`` file.

    Returns:
        ``(signals, fs_hz, names)``: float64 array of shape (N, C) in each signal's units
        (mV for MIT-BIH), the sampling rate in Hz, and the C signal descriptions
        (e.g. ``["MLII", "V5"]``).

    Raises:
        BadInputError: unreadable, truncated, or corrupt (checksum mismatch) signal file,
            or a header problem (see :func:`read_header`).
    """
    hea = _header_path(record_path)
    header = read_header(hea)
    n_sig = len(header.signals)
    groups: dict[str, list[int]] = {}
    for ch, spec in enumerate(header.signals):
        groups.setdefault(spec.file_name, []).append(ch)

    decoded: dict[int, np.ndarray] = {}
    n_samples = header.n_samples
    for file_name, channels in groups.items():
        specs = [header.signals[c] for c in channels]
        fmt = specs[0].fmt
        if any(s.fmt != fmt for s in specs) or any(s.byte_offset != specs[0].byte_offset for s in specs):
            raise BadInputError(f"{hea}: signals sharing {file_name} must share format and byte offset")
        dat = hea.parent / file_name
        try:
            raw = np.fromfile(dat, dtype=np.uint8)
        except OSError as exc:
            raise BadInputError(f"{dat}: cannot read WFDB signal file ({exc})") from exc
        raw = raw[specs[0].byte_offset :]
        width = len(channels)
        if n_samples <= 0:
            # Header without a length: the file says how long the record is.
            per_value = {16: 2.0, 80: 1.0, 212: 1.5}[fmt]
            n_samples = int(raw.size // per_value) // width
        need = _bytes_needed(fmt, n_samples * width)
        if raw.size < need:
            raise BadInputError(
                f"{dat}: truncated WFDB signal file: {raw.size} bytes, header needs {need} "
                f"({n_samples} samples x {width} signals, format {fmt})"
            )
        values = _decode(raw, fmt, n_samples * width).reshape(n_samples, width)
        for k, ch in enumerate(channels):
            decoded[ch] = values[:, k]

    signals = np.empty((n_samples, n_sig), np.float64)
    for ch, spec in enumerate(header.signals):
        digital = decoded[ch]
        if spec.checksum is not None:
            got = int(digital.astype(np.int64).sum()) & 0xFFFF
            want = spec.checksum & 0xFFFF
            if got != want:
                raise BadInputError(
                    f"{hea.parent / spec.file_name}: checksum mismatch on signal {ch} "
                    f"({spec.description or 'unnamed'}): file sums to {got}, header says {want}; corrupt file"
                )
        col = (digital - spec.baseline) / spec.gain
        col[digital == _INVALID_SAMPLE[spec.fmt]] = np.nan
        signals[:, ch] = col
    names = [s.description or f"signal{i}" for i, s in enumerate(header.signals)]
    return signals, header.fs_hz, names


def read_annotations(atr_path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read a WFDB annotation file in MIT format (e.g. ``100.atr``).

    Each annotation is a 16-bit little-endian word: 6-bit code, 10-bit sample increment;
    the special codes SKIP (long increment), NUM, SUB, CHN and AUX modify it, and a zero
    word ends the file (``annot(5)``). A leading ``## time resolution`` note, if present,
    is dropped.

    Args:
        atr_path: path of the annotation file.

    Returns:
        ``(samples, symbols)``: int64 array of sample indices (non-decreasing) and the
        matching list of MIT symbols (``"N"``, ``"A"``, ``"V"``, ``"+"`` ...; see
        :data:`ANNOTATION_SYMBOLS`, :data:`BEAT_SYMBOLS` picks the beats). User codes
        42-49 come back as ``"[code]"``.

    Raises:
        BadInputError: unreadable file, odd length, a SKIP/AUX running past the end, or no
            end-of-file marker (a truncated file).
    """
    path = Path(atr_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read WFDB annotation file ({exc})") from exc
    if len(data) % 2:
        raise BadInputError(f"{path}: annotation file has an odd number of bytes; truncated or corrupt")
    samples: list[int] = []
    symbols: list[str] = []
    auxes: list[bytes] = []
    t = 0
    i = 0
    n = len(data)
    ended = False
    while i + 1 < n:
        word = data[i] | (data[i + 1] << 8)
        i += 2
        code, inc = word >> 10, word & 0x3FF
        if code == 0 and inc == 0:
            ended = True
            break
        if code == _SKIP:
            if i + 4 > n:
                raise BadInputError(f"{path}: SKIP annotation runs past the end of the file; truncated")
            # The 32-bit interval is stored as two little-endian 16-bit words, high word first.
            hi = data[i] | (data[i + 1] << 8)
            lo = data[i + 2] | (data[i + 3] << 8)
            skip = (hi << 16) | lo
            if skip >= 1 << 31:
                skip -= 1 << 32
            t += skip
            i += 4
        elif code == _AUX:
            end = i + inc + (inc & 1)
            if end > n:
                raise BadInputError(f"{path}: AUX field runs past the end of the file; truncated")
            if auxes:
                auxes[-1] = data[i : i + inc]
            i = end
        elif code in (_NUM, _SUB, _CHN):
            continue
        else:
            t += inc
            if code == 0:
                continue  # NOTQRS with a time step: moves the clock only
            samples.append(t)
            symbols.append(ANNOTATION_SYMBOLS[code] if code < len(ANNOTATION_SYMBOLS) else f"[{code}]")
            auxes.append(b"")
    if not ended:
        raise BadInputError(f"{path}: no end-of-file marker in annotation file; truncated")
    if symbols and symbols[0] == '"' and samples[0] == 0 and auxes[0].startswith(b"## "):
        samples, symbols = samples[1:], symbols[1:]
    return np.asarray(samples, dtype=np.int64), symbols
