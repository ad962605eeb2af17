"""Reading JSON Lines into events, with one precise complaint per bad line.

Lines are read one at a time with a length cap, so a hostile file never has to fit in
memory; msgspec's messages are rewritten to name the field (``votes.nur-otan``) and the
value the user actually sent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import msgspec

from ledger.domain.events import (
    MAX_COUNT,
    MAX_ID_LENGTH,
    TYPE_NAMES,
    ElectionDefined,
    Event,
    ResultAnnounced,
    decoder,
)
from ledger.domain.timestamps import in_utc, out_of_range
from ledger.errors import BadInput, one_line
from ledger.input.strict_json import BOM, ambiguity, lone_surrogate

MAX_LINE_BYTES = 1 << 20
MAX_BATCH_LINES = 5_000_000


@dataclass(frozen=True)
class Problem:
    line: int
    field: str | None
    reason: str

    def __str__(self) -> str:
        # Field names and reasons may quote what the user sent: a hostile line must not be
        # able to print a second line (or a terminal escape) into the error output.
        where = f"line {self.line}: " if self.line else ""
        text = f"{where}{self.field}: {self.reason}" if self.field else f"{where}{self.reason}"
        return one_line(text)


@dataclass(frozen=True)
class Line:
    number: int
    text: bytes
    event: Event | None
    problem: Problem | None


class InputTooLarge(BadInput):
    """A line or a batch exceeds the documented limits."""


def read_lines(stream: IO[bytes]) -> Iterator[Line]:
    """Decode every non-blank line of ``stream``, in order."""
    for number, raw in enumerate(_bounded_lines(stream), start=1):
        if number == 1:
            raw = raw.removeprefix(BOM)  # Excel and Windows tools start files with one
        text = raw.strip()
        if not text:
            continue
        yield parse_line(number, text)


def _bounded_lines(stream: IO[bytes]) -> Iterator[bytes]:
    count = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        count += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise InputTooLarge(f"line {count}: longer than {MAX_LINE_BYTES} bytes")
        if count > MAX_BATCH_LINES:
            raise InputTooLarge(f"more than {MAX_BATCH_LINES} lines in one batch; split the file")
        yield raw


def parse_line(number: int, text: bytes) -> Line:
    """One line, decoded and validated: an event, or the one problem that stops it.

    Never raises for any bytes whatever: a hostile line becomes a problem like any other.
    """
    try:
        event = decoder.decode(text)
    except msgspec.ValidationError as error:
        return Line(number, text, None, _explain(number, text, str(error)))
    except msgspec.DecodeError as error:
        return Line(number, text, None, _malformed(number, text, str(error)))
    except UnicodeDecodeError:
        # msgspec lets this through for invalid UTF-8 inside a JSON string.
        return Line(number, text, None, _malformed(number, text, ""))
    except RecursionError:
        return Line(number, text, None, Problem(
            number, None, "malformed JSON: nested too deeply"
        ))
    problem = _refusal(number, text, event)
    return Line(number, text, None if problem else event, problem)


# Events with fields holding fractional numbers, whose digits must be checked.
_FRACTIONAL = (ElectionDefined, ResultAnnounced)


def _refusal(number: int, text: bytes, event: Event) -> Problem | None:
    """What refuses a line that decoded: an instant outside the calendar in UTC, or JSON
    that another parser could read differently."""
    if in_utc(event.occurred_at) is None:
        return Problem(number, "occurred_at", out_of_range(event.occurred_at.isoformat()))
    found = ambiguity(text, has_fractions=isinstance(event, _FRACTIONAL))
    return None if found is None else Problem(number, found[0], f"ambiguous JSON: {found[1]}")


def _malformed(number: int, text: bytes, message: str) -> Problem:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as error:
        return Problem(number, None, f"not valid UTF-8 (byte {error.start + 1})")
    if text.startswith(BOM):
        return Problem(number, None, "a UTF-8 byte order mark (allowed only at the start "
                                     "of the input)")
    if b"\\u" in text and (surrogate := lone_surrogate(text)) is not None:
        return Problem(number, surrogate[0], f"ambiguous JSON: {surrogate[1]}")
    detail = message.removeprefix("JSON is malformed: ") or "not valid UTF-8"
    return Problem(number, None, f"malformed JSON: {detail}")


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_TYPE_WORDS = {
    "int": "an integer",
    "str": "a string",
    "float": "a number",
    "object": "an object",
    "array": "a list",
    "bool": "true or false",
    "null": "null",
    "datetime": "a timestamp",
}


def _explain(number: int, text: bytes, message: str) -> Problem:
    if len(message) > _LONGEST_MESSAGE:
        # msgspec quotes an offending value or name whole (a 1 MiB "type" makes a 1 MiB
        # message); the start says what is wrong, the end where: keep both, drop the middle.
        half = _LONGEST_MESSAGE // 2
        message = message[:half] + message[-half:]
    match = _AT.match(message)
    assert match is not None
    message, path = match["message"], match["path"] or ""
    raw = _loose(text)
    segments = _segments(path, raw)
    field = ".".join(str(s) for s in segments) or None

    if m := re.match(r"Object contains unknown field `(.+)`", message, re.DOTALL):
        field = ".".join([*map(str, segments), _short(m[1])])
        return Problem(number, field, "unknown field")
    if m := re.match(r"Object missing required field `(.+)`", message, re.DOTALL):
        field = ".".join([*map(str, segments), m[1]])
        return Problem(number, field, "required field is missing")
    if m := re.match(r"(?P<message>.*) - at `key` in `\$(?P<path>[^`]*)`$", message, re.DOTALL):
        # A bad key of a mapping (``votes``): msgspec names the mapping, not the key.
        segments = _segments(m["path"], raw)
        field = ".".join(str(s) for s in segments) or None
        key = _first_bad_id(_at(raw, segments))
        return Problem(number, field, f"a key contains control characters, is empty or is longer "
                                      f"than {MAX_ID_LENGTH} characters: {_show(key)}")
    if message.startswith("Number out of range"):
        return Problem(number, field, "number out of range")
    if field == "type" and message.startswith("Invalid value"):
        return Problem(
            number, "type", f"unknown event type {_show(_at(raw, segments))}; "
            f"expected one of {', '.join(TYPE_NAMES)}",
        )
    value = _at(raw, segments)
    if "timezone" in message:
        return Problem(
            number, field, f"expected an RFC 3339 timestamp with a UTC offset, got {_show(value)}"
        )
    if "matching regex" in message:
        return Problem(number, field, f"contains control characters or is malformed: {_show(value)}")
    reason = re.sub(r"`([\w |]+)`", lambda t: " or ".join(
        _TYPE_WORDS.get(word, word) for word in t[1].split(" | ")), message)
    reason = reason[0].lower() + reason[1:]
    if ", got" not in reason and value is not _MISSING:
        reason += f", got {_show(value)}"
    return Problem(number, field, reason)


_MISSING = object()
_LONGEST_MESSAGE = 2_000


def _short(name: str) -> str:
    return name if len(name) <= 60 else name[:57] + "..."


def _loose(text: bytes) -> Any:
    """The line as plain JSON values, to quote what the user sent; _MISSING if unreadable."""
    try:
        return msgspec.json.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass
    try:  # the standard library reads numbers msgspec cannot hold (1e400 becomes inf)
        return json.loads(text)
    except (ValueError, RecursionError):
        return _MISSING


def _segments(path: str, raw: Any) -> list[str | int]:
    """Turn msgspec's ``.votes[...]`` into ``["votes", "nur-otan"]`` using the raw object."""
    segments: list[str | int] = []
    node = raw
    for name, index in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", path):
        if name:
            segments.append(name)
            node = node.get(name, _MISSING) if isinstance(node, dict) else _MISSING
        elif index == "...":
            key = _first_bad_key(node)
            segments.append(key)
            node = node.get(key, _MISSING) if isinstance(node, dict) else _MISSING
        else:
            segments.append(int(index))
            # A duplicated key may leave the raw object holding a different (shorter) list.
            good = isinstance(node, list) and int(index) < len(node)
            node = node[int(index)] if good else _MISSING
    return segments


def _first_bad_key(mapping: Any) -> str:
    # msgspec reports dict values as [...]; the only dicts here map ids to counts.
    if isinstance(mapping, dict):
        for key, value in mapping.items():
            good = type(value) is int and 0 <= value <= MAX_COUNT
            if not good or not key or any(ord(c) < 32 or ord(c) == 127 for c in key):
                return key
    return "..."


def _first_bad_id(mapping: Any) -> Any:
    if isinstance(mapping, dict):
        for key in mapping:
            if not key or len(key) > MAX_ID_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in key):
                return key
    return _MISSING


def _at(raw: Any, segments: Iterable[str | int]) -> Any:
    node = raw
    for segment in segments:
        if isinstance(node, dict) and isinstance(segment, str):
            node = node.get(segment, _MISSING)
        elif isinstance(node, list) and isinstance(segment, int) and segment < len(node):
            node = node[segment]
        else:
            return _MISSING
    return node


def _show(value: Any) -> str:
    if value is _MISSING:
        return "nothing"
    if isinstance(value, float) and not math.isfinite(value):
        return "a number out of range"
    shown = msgspec.json.encode(value).decode()
    return shown if len(shown) <= 60 else shown[:57] + "..."
