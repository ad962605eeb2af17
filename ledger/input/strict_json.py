"""Refusing lines that two standard-conforming JSON parsers could read differently.

RFC 8259 leaves some things to the parser: which of two equal keys in an object wins,
how many digits of a number are kept, what a lone UTF-16 surrogate escape (``"\\ud800"``)
decodes to. A ledger line is evidence; if one reader can see ``"a": 400`` where another
sees ``"a": 4000``, the line proves nothing, so it is refused (docs/events.md, "One
reading only").

The common path stays cheap: one extra generic decode and re-encode in C, comparing the
number of ``:`` separators (each key occurrence has one; a dropped duplicate makes the
input hold more than the re-encoding). Only a line with a ``\\u`` escape (which could
hide a ``:``), a line failing that count, or an event with fractional-number fields is
scanned exactly, in Python.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

BOM = b"\xef\xbb\xbf"
MAX_EXACT_INTEGER = 2**53  # beyond it, a parser holding numbers as doubles loses digits

Ambiguity = tuple[str | None, str]  # (field, reason)


def ambiguity(text: bytes, *, has_fractions: bool) -> Ambiguity | None:
    """What makes ``text`` (a line that decoded as an event) readable two ways, if anything.

    ``has_fractions``: the event has fields holding numbers that are not integers, whose
    digits must then be checked.
    """
    if b"\\u" not in text and not has_fractions and _separators_agree(text):
        return None
    return _exact_scan(text)


def _separators_agree(text: bytes) -> bool:
    try:
        decoded = msgspec.json.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    return text.count(b":") == msgspec.json.encode(decoded).count(b":")


class _Number(str):
    """A number literal as written, kept for checking its digits."""


class _Object(list):
    """An object's (key, value) pairs in input order, duplicates kept."""


def _exact_scan(text: bytes) -> Ambiguity | None:
    try:
        parsed = json.loads(text, object_pairs_hook=_Object, parse_float=_Number,
                            parse_int=_Number)
    except (ValueError, RecursionError):
        return None  # the caller's decoder already accepted it; nothing more to find
    return _walk(parsed, [])


def _walk(node: Any, path: list[str | int]) -> Ambiguity | None:
    if isinstance(node, _Object):
        seen: set[str] = set()
        for key, value in node:
            if (problem := _string(key, [*path, key])) is not None:
                return problem
            if key in seen:
                return _field([*path, key]), "the key appears twice in its object " \
                    "(JSON parsers differ on which one counts)"
            seen.add(key)
            if (problem := _walk(value, [*path, key])) is not None:
                return problem
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if (problem := _walk(value, [*path, index])) is not None:
                return problem
    elif isinstance(node, _Number):
        return _number(node, path)
    elif isinstance(node, str):
        return _string(node, path)
    return None


def _number(literal: str, path: list[str | int]) -> Ambiguity | None:
    try:
        exact = Decimal(literal)
    except InvalidOperation:  # pragma: no cover - json.loads only passes number literals
        return None
    if exact == exact.to_integral_value() and abs(exact) > MAX_EXACT_INTEGER:
        return _field(path), f"{literal[:40]} is beyond 2^53, where parsers differ"
    if not any(c in literal for c in ".eE"):
        return None
    as_double = float(literal)
    if Decimal(repr(as_double)) != exact:
        return _field(path), (f"{literal[:40]} has more digits than a double holds "
                              f"(a double reads it as {as_double!r})")
    return None


def _string(value: str, path: list[str | int]) -> Ambiguity | None:
    for char in value:
        if "\ud800" <= char <= "\udfff":
            return _field(path), f"a lone surrogate escape \\u{ord(char):04x} (not a character)"
    return None


def _field(path: list[str | int]) -> str | None:
    # A lone surrogate in a key cannot even be printed: show it as its escape.
    path = [s if isinstance(s, int) else "".join(
        f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in s) for s in path]
    shown = ""
    for segment in path:
        shown += f"[{segment}]" if isinstance(segment, int) else (
            f".{segment}" if shown else segment)
    return shown or None


def lone_surrogate(text: bytes) -> Ambiguity | None:
    """Why msgspec refused ``text``, when it is a lone surrogate escape: a clearer reason
    than its own ("invalid utf-16 surrogate pair", or even "truncated")."""
    try:
        parsed = json.loads(text, object_pairs_hook=_Object, parse_float=_Number,
                            parse_int=_Number)
    except (ValueError, RecursionError):
        return None
    return _walk_surrogates(parsed, [])


def _walk_surrogates(node: Any, path: list[str | int]) -> Ambiguity | None:
    if isinstance(node, _Object):
        for key, value in node:
            found = _string(key, [*path, key]) or _walk_surrogates(value, [*path, key])
            if found:
                return found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if found := _walk_surrogates(value, [*path, index]):
                return found
    elif isinstance(node, str) and not isinstance(node, _Number):
        return _string(node, path)
    return None
