"""Folding the ordered log into the read-model tables.

Catch-up and replay are the same code: ``apply`` inserts the rows of each new entry,
set-wise per page, and advances ``applied`` in the same transaction. Replay builds a
fresh file and swaps it in, so readers never see a half-built model.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec

from ledger.events import (
    AppealDecided,
    AppealFiled,
    ElectionDefined,
    ProtocolIssued,
    ProtocolWithheld,
    ResultAnnounced,
    StationRegistered,
    control_check_failures,
    station_of,
)
from projections.schema import (
    TABLES,
    applied_position,
    create_indexes,
    open_read_models,
    writing,
)

PAGE = 5_000


class Logged(Protocol):
    position: int
    entry: Any


class Log(Protocol):
    def entries(self, after: int = 0) -> Iterable[Logged]: ...
    def head(self) -> int: ...


def stamp(moment: datetime) -> str:
    """Fixed-width UTC text: comparing two stamps as strings compares the instants."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class _Stamps(dict[datetime, str]):
    """Stamps of one page: a batch shares its recorded_at, a night many occurred_at."""

    def __missing__(self, moment: datetime) -> str:
        self[moment] = text = stamp(moment)
        return text


def catch_up(db: Any, log: Log) -> int:
    """Apply every entry after the model's position; return how many were applied."""
    if applied_position(db) >= log.head():
        return 0
    applied = 0
    with writing(db) as connection:
        # Re-read inside the lock: another process may have caught up meanwhile.
        start = applied_position(db)
        page: list[Logged] = []
        for logged in log.entries(after=start):
            page.append(logged)
            if len(page) == PAGE:
                applied += _apply_page(connection, page)
                page = []
        if page:
            applied += _apply_page(connection, page)
    return applied


def rebuild(path: Path, log: Log) -> int:
    """Build the read models from position 0 into a new file, then swap it in.

    The new file is private until the swap, so it is written without a journal or syncs
    and indexed after loading; it is synced once, before it replaces the old one.
    """
    fresh = path.with_name(path.name + ".rebuilding")
    fresh.unlink(missing_ok=True)
    db = open_read_models(fresh, indexes=False)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        count = catch_up(db, log)
        create_indexes(db)
    finally:
        db.conn.close()
    with fresh.open("rb+") as written:  # on disk before it replaces the old file
        os.fsync(written.fileno())
    os.replace(fresh, path)
    return count


def _apply_page(connection: Any, page: list[Logged]) -> int:
    rows: dict[str, list[tuple]] = defaultdict(list)
    stamps = _Stamps()
    for logged in page:
        _rows_of(logged.position, logged.entry, rows, stamps)
    for table, values in rows.items():
        columns = list(TABLES[table]["columns"])
        marks = ",".join("?" * len(columns))
        connection.executemany(
            f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", values
        )
    connection.execute(
        "INSERT INTO applied (name, position) VALUES ('log', ?) "
        "ON CONFLICT(name) DO UPDATE SET position = excluded.position",
        (page[-1].position,),
    )
    return len(page)


_json = msgspec.json.Encoder(order="sorted")


def _dump(value: Any) -> str | None:
    return None if value is None else _json.encode(value).decode()


def _rows_of(position: int, entry: Any, rows: dict[str, list[tuple]], stamps: _Stamps) -> None:
    event = entry.event
    occurred, recorded = stamps[event.occurred_at], stamps[entry.recorded_at]
    kind = type(event).__name__
    rows["events"].append(
        (position, event.event_id, event.election, kind, station_of(event), occurred, recorded,
         _dump(event))
    )
    if isinstance(event, ElectionDefined):
        rows["elections"].append(
            (event.election, event.name, event.seats, event.method, event.threshold_pct,
             event.threshold_base, event.authority, occurred, recorded, position)
        )
        rows["choices"].extend(
            (event.election, c.id, c.name, c.party, order)
            for order, c in enumerate(event.choices)
        )
    elif isinstance(event, StationRegistered):
        rows["stations"].append(
            (event.election, event.station, event.region, event.district,
             event.registered_voters, occurred, recorded, position)
        )
    elif isinstance(event, ProtocolIssued):
        failures = control_check_failures(event)
        rows["protocols"].append(
            (position, event.event_id, event.election, event.station, event.reported_by,
             occurred, recorded, event.registered_voters, event.ballots_issued,
             event.ballots_cast, event.invalid, sum(event.votes.values()), event.protocol_no,
             event.document_sha256, event.supersedes, _dump(failures or None),
             _dump(event.votes))
        )
    elif isinstance(event, ProtocolWithheld):
        rows["withheld"].append(
            (position, event.event_id, event.election, event.station, event.requested_by,
             event.reason, occurred, recorded)
        )
    elif isinstance(event, ResultAnnounced):
        rows["announcements"].append(
            (position, event.event_id, event.election, event.authority, event.stage,
             event.scope, occurred, recorded, event.turnout_pct, _dump(event.votes),
             _dump(event.seats))
        )
    elif isinstance(event, AppealFiled):
        rows["appeals"].append(
            (position, event.event_id, event.election, event.appeal, event.filed_by,
             event.grounds, event.demand, _dump(event.stations), occurred, recorded)
        )
    elif isinstance(event, AppealDecided):
        rows["decisions"].append(
            (position, event.event_id, event.election, event.appeal, event.decision,
             event.remedy, _dump(event.stations), occurred, recorded)
        )
