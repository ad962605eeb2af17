"""Importing a station-level results table (one CSV row per station) through a TOML map.

Most published results are one row per polling station and one column per party. A map
(docs/events.md, "Importing station-level tables") names the columns of each protocol
figure; a list of columns means their sum (counts) or their values joined with ``/``
(the station id). Each row becomes a ``ProtocolIssued`` event, preceded by a
``StationRegistered`` for a station the ledger did not know before the import. Events
come out as reader ``Line``s numbered by the CSV line, so the ordinary append path
checks, flags and stores them atomically, and every problem reads ``line N: column: why``.

Rows are streamed: memory holds one chunk of events, never the file (and the station ids
seen so far, to refuse a station given twice).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from ledger.domain.events import MAX_COUNT, ElectionDefined, Timestamp
from ledger.errors import BadInput
from ledger.input.reader import MAX_LINE_BYTES, InputTooLarge, Line, Problem, parse_line

Columns = tuple[str, ...]  # one column, or several to add up (or join, for the station)

COUNT_FIELDS = ("registered_voters", "ballots_issued", "ballots_cast", "invalid")
REQUIRED = ("election", "reported_by", "station", "region", "ballots_cast", "invalid", "votes")
KNOWN_KEYS = frozenset({
    *REQUIRED, *COUNT_FIELDS, "occurred_at", "occurred_at_column", "encoding", "delimiter",
    "district", "lines",
})
_DIGITS = re.compile(r"^[0-9]+$")
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class TableMap:
    """What a map says: where each figure of the protocol is in the table."""

    election: str
    reported_by: str
    station: Columns
    region: Columns
    ballots_cast: Columns
    invalid: Columns
    votes: dict[str, Columns]
    registered_voters: Columns | None = None
    ballots_issued: Columns | None = None
    district: Columns | None = None
    lines: dict[str, Columns] = field(default_factory=dict)
    occurred_at: str | None = None
    occurred_at_column: str | None = None
    encoding: str = "utf-8"
    delimiter: str = ","

    def columns(self) -> list[str]:
        """Every column the map names, each once, in map order."""
        named: list[str] = []
        for value in (self.station, self.region, self.district, self.registered_voters,
                      self.ballots_issued, self.ballots_cast, self.invalid,
                      *self.votes.values(), *self.lines.values()):
            named.extend(value or ())
        if self.occurred_at_column:
            named.append(self.occurred_at_column)
        return list(dict.fromkeys(named))


def load_map(path: Path) -> TableMap:
    """Read and check a map file; ``BadInput`` naming the key otherwise."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not valid UTF-8") from None
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"{path}: not valid TOML: {error}") from None

    def bad(key: str, why: str) -> BadInput:
        return BadInput(f"{path}: {key}: {why}")

    if unknown := sorted(set(raw) - KNOWN_KEYS):
        raise bad(unknown[0], f"unknown key; expected {', '.join(sorted(KNOWN_KEYS))}")
    for key in REQUIRED:
        if key not in raw:
            raise bad(key, "required key is missing")
    if ("occurred_at" in raw) == ("occurred_at_column" in raw):
        raise bad("occurred_at", "give exactly one of occurred_at and occurred_at_column")

    def text(key: str) -> str:
        value = raw[key]
        if not isinstance(value, str) or not value:
            raise bad(key, "expected a non-empty string")
        return value

    def columns(key: str, value: Any) -> Columns:
        if isinstance(value, str) and value.strip():
            return (value.strip(),)
        if (isinstance(value, list) and value
                and all(isinstance(v, str) and v.strip() for v in value)):
            return tuple(v.strip() for v in value)
        raise bad(key, "expected a column name or a non-empty list of column names")

    def table(key: str) -> dict[str, Columns]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise bad(key, f"expected a table [{key}] of id = column")
        return {k: columns(f"{key}.{k}", v) for k, v in value.items()}

    votes = table("votes")
    if not votes:
        raise bad("votes", "map at least one choice to a column")
    encoding = text("encoding") if "encoding" in raw else "utf-8"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise bad("encoding", f"unknown encoding {encoding!r}") from None
    delimiter = text("delimiter") if "delimiter" in raw else ","
    if len(delimiter) != 1:
        raise bad("delimiter", "expected one character")
    occurred_at = text("occurred_at") if "occurred_at" in raw else None
    if occurred_at is not None:
        try:
            msgspec.json.decode(_encode(occurred_at), type=Timestamp)
        except msgspec.ValidationError:
            raise bad("occurred_at", f"expected an RFC 3339 timestamp with a UTC offset, "
                                     f"got {occurred_at!r}") from None
    return TableMap(
        election=text("election"), reported_by=text("reported_by"),
        station=columns("station", raw["station"]), region=columns("region", raw["region"]),
        ballots_cast=columns("ballots_cast", raw["ballots_cast"]),
        invalid=columns("invalid", raw["invalid"]), votes=votes, lines=table("lines"),
        registered_voters=(columns("registered_voters", raw["registered_voters"])
                           if "registered_voters" in raw else None),
        ballots_issued=(columns("ballots_issued", raw["ballots_issued"])
                        if "ballots_issued" in raw else None),
        district=columns("district", raw["district"]) if "district" in raw else None,
        occurred_at=occurred_at,
        occurred_at_column=(text("occurred_at_column").strip()
                            if "occurred_at_column" in raw else None),
        encoding=encoding, delimiter=delimiter,
    )


def undefined_in(table_map: TableMap, election: ElectionDefined) -> list[Problem]:
    """Choices and protocol lines the map fills but the election does not define, named
    by their column and reported at the header line (nothing has been read yet)."""
    choices = {choice.id for choice in election.choices}
    lines = {line.id for line in election.protocol_lines or ()}
    return [
        Problem(1, columns[0], f"the map's {kind} {key!r} is not defined in election "
                               f"{election.election!r}")
        for kind, mapped, known in (("choice", table_map.votes, choices),
                                    ("protocol line", table_map.lines, lines))
        for key, columns in mapped.items()
        if key not in known
    ]


class StationTable:
    """The events of every row of a table, in order, or problems naming line and column.

    ``known_station(id)`` says whether the ledger held the station before this import:
    only stations it did not know are registered (with the row's registered voters). A
    row's problems (a bad cell, a station given twice, bytes the encoding cannot decode)
    refuse that row alone, so ``--skip-invalid`` can set it aside and go on; what stops the
    reading itself (a line too long, CSV that cannot be parsed) refuses the whole import.
    ``header`` is the file's header once it is read (for a rejects file)."""

    def __init__(self, path: Path, table_map: TableMap, *,
                 known_station: Callable[[str], bool]) -> None:
        self.path, self.map, self.known_station = path, table_map, known_station
        self.header: list[str] = []

    def __iter__(self) -> Iterator[Line]:
        # utf-8-sig reads files with and without a byte-order mark alike.
        encoding = self.map.encoding
        if codecs.lookup(encoding).name == "utf-8":
            encoding = "utf-8-sig"
        undecodable: dict[int, str] = {}
        with self.path.open("rb") as handle:
            text = _decoded_lines(handle, encoding, undecodable)
            rows = csv.reader(text, delimiter=self.map.delimiter, strict=True)
            try:
                yield from _Rows(self, undecodable).run(rows)
            except csv.Error as error:
                raise BadInput(f"line {rows.line_num}: unreadable CSV: {error}") from None


def read_station_table(
    path: Path, table_map: TableMap, *, known_station: Callable[[str], bool]
) -> StationTable:
    return StationTable(path, table_map, known_station=known_station)


def _decoded_lines(handle: IO[bytes], encoding: str, undecodable: dict[int, str]) -> Iterator[str]:
    """The file's lines as text, decoded one line at a time so that an undecodable byte is
    reported on its own line (a text wrapper decodes whole blocks ahead of the reader). Such
    a line is passed on with replacement characters and noted in ``undecodable``."""
    decoder = codecs.getincrementaldecoder(encoding)()
    number = 0
    while raw := handle.readline(MAX_LINE_BYTES + 1):
        number += 1
        if len(raw) > MAX_LINE_BYTES:
            raise InputTooLarge(f"line {number}: longer than {MAX_LINE_BYTES} bytes")
        try:
            yield decoder.decode(raw)
        except UnicodeDecodeError as error:
            undecodable[number] = (f"not valid {encoding.removesuffix('-sig')} "
                                   f"(byte {error.start + 1} of the line)")
            decoder.reset()
            yield raw.decode(encoding, "replace")


def row_text(cells: list[str]) -> bytes:
    """A row as one CSV line (quoted where needed): what a rejects file gives back."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(cells)
    return out.getvalue().encode("utf-8", "replace")


class _Rows:
    def __init__(self, table: StationTable, undecodable: dict[int, str]) -> None:
        self.table = table
        self.map = table.map
        self.known_station = table.known_station
        self.undecodable = undecodable
        self.index: dict[str, int] = {}
        self.seen: dict[str, int] = {}  # station id -> the line that gave it first

    def run(self, rows: Any) -> Iterator[Line]:
        header = next(rows, None)
        if header is None:
            yield Line(1, b"", None, Problem(1, None, "the file is empty; expected a header line"))
            return
        if 1 in self.undecodable:
            yield Line(1, b"", None, Problem(1, None, self.undecodable[1]))
            return
        names = [name.strip() for name in header]
        self.table.header = names
        problems = []
        for column in self.map.columns():
            if names.count(column) > 1:
                problems.append(Problem(1, column, "the header names this column more than once"))
            elif column not in names:
                problems.append(Problem(1, column, "no such column in the file's header"))
        if problems:  # refused before reading any row
            for problem in problems:
                yield Line(1, b"", None, problem)
            return
        self.index = {name: at for at, name in enumerate(names)}
        last = rows.line_num
        for cells in rows:
            first, last = last + 1, rows.line_num
            bad = [self.undecodable[n] for n in range(first, last + 1) if n in self.undecodable]
            if bad:
                yield Line(last, row_text(cells), None, Problem(last, None, bad[0]))
                continue
            if not any(cell.strip() for cell in cells):
                continue
            yield from self._row(last, cells, len(names))

    def _row(self, number: int, cells: list[str], width: int) -> Iterator[Line]:
        text = row_text(cells)
        if len(cells) != width:
            yield Line(number, text, None, Problem(
                number, None, f"expected {width} cells as in the header, got {len(cells)}"))
            return
        problems: list[Problem] = []

        def count(columns: Columns | None) -> int | None:
            if columns is None:
                return None
            total = 0
            for column in columns:
                cell = cells[self.index[column]].strip()
                if not _DIGITS.match(cell) or int(cell) > MAX_COUNT:
                    problems.append(Problem(number, column, "expected a non-negative integer, "
                                                            f"got {_show(cell)}"))
                    continue
                total += int(cell)
            return total

        def joined(columns: Columns) -> str:
            # A composite id may have empty parts (Russia 2021's remote e-voting rows leave
            # the last of four id columns empty), as long as some part is not empty.
            parts = [cells[self.index[c]].strip() for c in columns]
            if not any(parts):
                also = f" (and so is {', '.join(columns[1:])})" if len(columns) > 1 else ""
                problems.append(Problem(number, columns[0], f"empty{also}; an id is needed here"))
            return "/".join(parts)

        m = self.map
        station, region = joined(m.station), joined(m.region)
        if (any(cells[self.index[c]].strip() for c in m.station)
                and (first := self.seen.setdefault(station, number)) != number):
            problems.append(Problem(number, "/".join(m.station), f"station {station!r} is "
                                    f"already given by line {first}: one row per station"))
        district = joined(m.district) if m.district else None
        figures = {name: count(getattr(m, name)) for name in COUNT_FIELDS}
        votes = {choice: count(columns) for choice, columns in m.votes.items()}
        lines = {line: count(columns) for line, columns in m.lines.items()}
        occurred_at = m.occurred_at
        if m.occurred_at_column:
            occurred_at = cells[self.index[m.occurred_at_column]].strip()
            try:
                msgspec.json.decode(_encode(occurred_at), type=Timestamp)
            except msgspec.ValidationError:
                problems.append(Problem(number, m.occurred_at_column, "expected an RFC 3339 "
                                        f"timestamp with a UTC offset, got {_show(occurred_at)}"))
        if problems:
            for problem in problems:
                yield Line(number, text, None, problem)
            return
        common = {"election": m.election, "occurred_at": occurred_at, "station": station}
        if not self.known_station(station):
            # No text of its own: the row's bytes are counted (and given back) once, with
            # its protocol, which is refused too if this registration is.
            yield _line(number, b"", {
                "type": "StationRegistered", **common, "region": region, "district": district,
                "registered_voters": figures["registered_voters"],
            })
        yield _line(number, text, {
            "type": "ProtocolIssued", **common, "reported_by": m.reported_by, **figures,
            "votes": votes, **({"lines": lines} if lines else {}),
        })


def _line(number: int, text: bytes, event: dict[str, Any]) -> Line:
    """The event as the ledger reads it from JSON: same checks, same messages."""
    parsed = parse_line(number, _encode(event))
    return Line(number, text, parsed.event, parsed.problem)


def _show(cell: str) -> str:
    shown = _encode(cell).decode()
    return shown if len(shown) <= 60 else shown[:57] + "..."
