"""The log as served (``GET /v1/log``): one JSON line per entry, its Merkle leaf recomputable
from the line alone.

Each line is one JSON object: ``position``, ``stream`` (the stream id, 32 lowercase hex),
``version``, ``topic`` (the type as stored), ``payload`` (the stored payload, exactly: a JSON
string whose UTF-8 bytes are the bytes stored), then the members of the payload itself
(``recorded_at``, ``event``, and ``signed``, ``offset`` when present) for readers that want the
event without decoding a string. The leaf's bytes are (``merkle.entry_bytes``)::

    election-ledger entry v1\\n<position>\\n<stream>\\n<version>\\n<topic>\\n<payload bytes>

A line is a function of the five leading members, so a mirror re-renders each line it
receives and refuses one that differs by a byte: a reader of the copied members sees exactly
what the leaf commits to.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ledger.domain.events import ElectionEvent
from ledger.trust.merkle import entry_bytes, leaf_hash
from ledger.trust.signatures import Signed

_string = msgspec.json.Encoder()


class BadRow(ValueError):
    """A served line that is not an entry of the log in its served form."""


class LogRow(msgspec.Struct, frozen=True):
    """One entry as ``GET /v1/log`` serves it. The payload's members are decoded from their
    copies on the line (one decode, not two): ``parse`` holds them to the payload's bytes."""

    position: int
    stream: str
    version: int
    topic: str
    payload: str
    recorded_at: datetime
    event: ElectionEvent
    signed: Signed | None = None
    offset: int | None = None

    # What ``merkle.entry_bytes`` reads of a stored event.
    @property
    def originator_id(self) -> str:
        return self.stream

    @property
    def originator_version(self) -> int:
        return self.version

    @property
    def state(self) -> bytes:
        return self.payload.encode()

    def entry(self) -> bytes:
        """The bytes its Merkle leaf hashes."""
        return entry_bytes(self.position, self)

    def leaf(self) -> bytes:
        return leaf_hash(self.entry())


_rows = msgspec.json.Decoder(LogRow)


def render(position: int, stream: str, version: int, topic: str, payload: bytes) -> bytes:
    """The served line of one stored entry, newline included."""
    members = payload.lstrip()[1:]  # the payload's own members, after its opening brace
    return (b'{"position":%d,"stream":"%s","version":%d,"topic":%s,"payload":%s,'
            % (position, stream.encode(), version, _string.encode(topic),
               _string.encode(payload.decode("utf-8", "surrogateescape")))
            + members + b"\n")


class _Where(msgspec.Struct):
    position: int


def parse(line: bytes) -> LogRow:
    """The entry a served line carries; ``BadRow`` unless the line is exactly its rendering."""
    try:
        row = _rows.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        try:
            where = f"position {msgspec.json.decode(line, type=_Where).position}: "
        except (msgspec.DecodeError, msgspec.ValidationError):
            where = ""
        raise BadRow(f"{where}not a log entry: {error}") from None
    where = f"position {row.position}"
    if row.position < 1 or row.version < 1:
        raise BadRow(f"{where}: position and version start at 1")
    if len(row.stream) != 32 or row.stream.strip("0123456789abcdef"):
        raise BadRow(f"{where}: stream {row.stream[:40]!r} is not 32 lowercase hex digits")
    try:
        expected = render(row.position, row.stream, row.version, row.topic, row.state)
    except UnicodeEncodeError:
        raise BadRow(f"{where}: the payload is not UTF-8 text") from None
    if expected != line.rstrip(b"\n") + b"\n":
        raise BadRow(f"{where}: the line's members differ from its payload (altered on the way?)")
    return row
