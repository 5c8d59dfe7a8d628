"""Source URIs parsed once: ``scheme://target?key=value&...`` and typed options.

The camera registry (:mod:`firmware_bridge.cameras`) and the sensor registry
(:mod:`firmware_bridge.sensors`) both choose a source by URI and take options from its query
or as keywords (the jetson-utils ``videoSource`` model: one interface chosen by URI, options
parsed once). This module is the one place that splits a URI and turns option text into typed
values, so both registries accept the same spellings and reject bad input with the same one-line
:class:`~firmware_bridge.errors.ConfigError`:

- :func:`split_scheme`: ``"csi://0?fps=30"`` -> ``("csi", "0?fps=30")``; a bare path -> ``(None, path)``;
- :func:`split_query`: ``"0?fps=30"`` -> ``("0", {"fps": "30"})``;
- :func:`parse_uri`: both, as a :class:`UriParts`;
- the converters (``to_bool``, ``to_int``, ``to_pos_float``...): text from a query, or a typed
  keyword, to a value; they raise ``ValueError`` with what was expected;
- :func:`convert_options`: names checked against a registry entry's converters, each value
  converted; an unknown name or a bad value is one ConfigError naming the URI.

Query syntax is RFC 3986's ``?`` component with ``application/x-www-form-urlencoded`` pairs
(``urllib.parse.parse_qsl``, strict); a key given twice is an error, not "last one wins".
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import numpy as np

from firmware_bridge.errors import ConfigError

__all__ = [
    "UriParts",
    "convert_options",
    "parse_uri",
    "split_query",
    "split_scheme",
    "to_bool",
    "to_fourcc",
    "to_int",
    "to_names",
    "to_nonneg_float",
    "to_nonneg_int",
    "to_opt_pos_float",
    "to_pos_float",
    "to_pos_int",
    "to_text",
]

#: ``scheme://rest``; the scheme as RFC 3986 allows it (a letter, then letters, digits, + . -).
SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


@dataclass(frozen=True)
class UriParts:
    """A URI split once.

    Attributes:
        text: the URI as given.
        scheme: the scheme, lower case; None for a bare path.
        target: what the scheme names, percent-decoded (a device, a path, a stream name;
            "" when the URI names none). For a bare path, the path itself.
        query: ``key=value`` pairs after ``?``, as text (empty for a bare path).
    """

    text: str
    scheme: str | None
    target: str
    query: Mapping[str, str] = field(default_factory=dict)


def split_scheme(text: str) -> tuple[str | None, str]:
    """``"scheme://rest"`` -> ``("scheme", "rest")`` with the scheme lower-cased; else ``(None, text)``."""
    match = SCHEME_RE.match(text)
    if match is None:
        return None, text
    return match.group(1).lower(), match.group(2)


def split_query(rest: str, where: str) -> tuple[str, dict[str, str]]:
    """Split what follows ``scheme://`` into its percent-decoded target and its query pairs.

    Args:
        rest: the URI after ``scheme://``, e.g. ``"/dev/ttyUSB0?baud=921600"``.
        where: the whole URI, for messages.

    Returns:
        (target, {key: value text}); an empty query gives an empty dict.

    Raises:
        ConfigError: a malformed query (a pair without ``=``) or a key given twice.
    """
    target, _, query = rest.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"{where}: malformed query {query!r} (expected key=value&key=value)") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in values:
            raise ConfigError(f"{where}: query parameter {key!r} given twice")
        values[key] = value
    return unquote(target), values


def parse_uri(text: str) -> UriParts:
    """Split ``scheme://target?query`` once (a bare path keeps its text as target, no query).

    Raises:
        ConfigError: as :func:`split_query`.
    """
    scheme, rest = split_scheme(text)
    if scheme is None:
        return UriParts(text, None, text, {})
    target, query = split_query(rest, text)
    return UriParts(text, scheme, target, query)


# -- converters: query text or a typed keyword -> value; ValueError says what was expected ------
def to_bool(value: Any) -> bool:
    """True for True / 1 / "1" "true" "yes" "on", False for their opposites (any case)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    raise ValueError("expected true/false")


def to_int(value: Any) -> int:
    """A whole number: an int, or text of digits. Floats are refused, so a timestamp in ns
    never passes through a float and loses its last digits."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("expected a whole number")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value.strip())
    raise ValueError("expected a whole number")


def to_nonneg_int(value: Any) -> int:
    """A whole number >= 0 (see :func:`to_int`)."""
    out = to_int(value)
    if out < 0:
        raise ValueError("expected a whole number >= 0")
    return out


def to_pos_int(value: Any) -> int:
    """A whole number > 0, for counts and sizes: an int, or a number or text that is whole
    (``1280``, ``"1280"``, ``1280.0``)."""
    try:
        number = _to_float(value)
        whole = number == int(number)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or number <= 0:
        raise ValueError("expected a whole number > 0")
    return int(number)


def _to_float(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError("expected a number")
    return float(value)


def to_pos_float(value: Any) -> float:
    """A finite number > 0."""
    out = _to_float(value)
    if not (np.isfinite(out) and out > 0):
        raise ValueError("expected a finite number > 0")
    return out


def to_nonneg_float(value: Any) -> float:
    """A finite number >= 0."""
    out = _to_float(value)
    if not (np.isfinite(out) and out >= 0):
        raise ValueError("expected a finite number >= 0")
    return out


def to_opt_pos_float(value: Any) -> float | None:
    """None for None / "" / "none", else a finite number > 0."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        return None
    return to_pos_float(value)


def to_names(value: Any) -> tuple[str, ...]:
    """Comma-separated text (``"ecg,eda"``) or a sequence of names -> a tuple of names."""
    if isinstance(value, str):
        names = tuple(s.strip() for s in value.split(","))
    else:
        names = tuple(str(s).strip() for s in value)
    if not names or not all(names):
        raise ValueError("expected comma-separated names")
    return names


def to_text(value: Any) -> str:
    """Non-empty text."""
    text = str(value)
    if not text:
        raise ValueError("expected a non-empty text")
    return text


def to_fourcc(value: Any) -> str:
    """A four-character code such as ``MJPG``."""
    text = str(value)
    if len(text) != 4:
        raise ValueError("expected four characters, e.g. MJPG")
    return text


def convert_options(raw: Mapping[str, Any], spec: Mapping[str, Callable[[Any], Any]],
                    where: str) -> dict[str, Any]:
    """Check option names against ``spec`` and convert each value with its converter.

    Args:
        raw: option name -> text (from a query) or a typed keyword value.
        spec: the names a source takes -> converter (raises ValueError or TypeError).
        where: the URI, for messages (credentials already redacted).

    Returns:
        name -> converted value, for the names given (defaults are the source's business).

    Raises:
        ConfigError: one line: an unknown name (the message lists the valid ones), or a value
            its converter rejects (the message names the option, the value and what was expected).
    """
    unknown = sorted(set(raw) - set(spec))
    if unknown:
        valid = ", ".join(sorted(spec)) or "none"
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; valid here: {valid}")
    out = {}
    for name, value in raw.items():
        try:
            out[name] = spec[name](value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: option {name}={value!r}: {exc}") from None
    return out
