"""Folding the ordered log into the read-model tables.

Catch-up and replay are the same code: ``apply`` inserts the rows of each new entry,
set-wise per page, and advances ``applied`` in the same transaction. Replay builds a
fresh file and swaps it in, so readers never see a half-built model.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from ledger.domain.events import (
    AppealDecided,
    AppealFiled,
    ElectionDefined,
    ProtocolIssued,
    ProtocolWithheld,
    ReporterKeyRevoked,
    ReporterRegistered,
    ResultAnnounced,
    StationRegistered,
    decoder,
    station_of,
)
from ledger.domain.keyring import fingerprint
from ledger.domain.relations import protocol_failures
from projections import steps as tally_steps
from projections.moment import stamp
from projections.schema import (
    TABLES,
    EventRow,
    ProtocolRow,
    StationRow,
    applied_position,
    create_indexes,
    open_read_models,
    writing,
)

if TYPE_CHECKING:
    from ledger.store.application import Logged

PAGE = 5_000


class Log(Protocol):
    """What the read side needs of the event store: ``ledger.store.application.Ledger`` is one."""

    def entries(self, after: int = 0) -> Iterable[Logged]: ...
    def head(self) -> int: ...


class _Stamps(dict[datetime, str]):
    """Stamps of one page: a batch shares its recorded_at, a night many occurred_at."""

    def __missing__(self, moment: datetime) -> str:
        self[moment] = text = stamp(moment)
        return text


def catch_up(db: Any, log: Log, *, running: bool = True) -> int:
    """Apply every entry after the model's position; return how many were applied.

    ``running``: fold each page into the running tally totals as it goes (a rebuild, which
    loads without indexes, builds them set-wise at the end instead)."""
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
                applied += _apply_page(connection, page, running)
                page = []
        if page:
            applied += _apply_page(connection, page, running)
    return applied


def rebuild(path: Path, log: Log) -> int:
    """Build the read models from position 0 into a new file, then swap it in.

    The new file is private until the swap, so it is written without a journal or syncs
    and indexed after loading; it is synced once, before it replaces the old one.
    """
    _remove_abandoned(path)
    # A name of its own: two rebuilds at once (two first appends) must not share a file.
    fresh = path.with_name(f"{path.name}.rebuilding-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        db = open_read_models(fresh, indexes=False)
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            count = catch_up(db, log, running=False)
            create_indexes(db)
            with writing(db) as connection:
                tally_steps.build(connection)
        finally:
            db.conn.close()
        with fresh.open("rb+") as written:  # on disk before it replaces the old file
            os.fsync(written.fileno())
        _swap(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)
    return count


def _remove_abandoned(path: Path) -> None:
    """Delete half-built files of rebuilds whose process died (killed, out of memory)."""
    for leftover in path.parent.glob(f"{path.name}.rebuilding-*"):
        try:
            pid = int(leftover.name.rsplit(".rebuilding-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            leftover.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            continue


def _swap(fresh: Path, path: Path) -> None:
    """Replace ``path`` by ``fresh`` while holding the old file's write lock.

    Taking the lock first makes SQLite roll back any hot journal a killed writer left
    beside the old file; holding it means no writer starts a new one before the swap. A
    journal left there would otherwise be played into the new file and corrupt it.
    """
    if not path.exists():
        os.replace(fresh, path)
        return
    old = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    try:
        old.execute("BEGIN IMMEDIATE")
        os.replace(fresh, path)
        old.execute("ROLLBACK")
    finally:
        old.close()


class _Elections(dict[str, ElectionDefined | None]):
    """Election definitions, for checking protocols against their control relations:
    from this page's own entries, else from the events already applied."""

    def __init__(self, connection: Any) -> None:
        super().__init__()
        self.connection = connection

    def __missing__(self, election: str) -> ElectionDefined | None:
        row = self.connection.execute(
            "SELECT payload FROM events WHERE election = ? AND station IS NULL "
            "AND type = 'ElectionDefined' ORDER BY position LIMIT 1", (election,)
        ).fetchone()
        self[election] = found = decoder.decode(row[0]) if row else None
        return found  # type: ignore[return-value]


def _apply_page(connection: Any, page: list[Logged], running: bool = True) -> int:
    rows: dict[str, list[tuple]] = defaultdict(list)
    stamps = _Stamps()
    elections = _Elections(connection)  # per page: earlier pages' rows are already visible
    registers = _Registers(connection)
    for logged in page:
        _rows_of(logged.position, logged.entry, rows, stamps, elections, registers)
    for table, values in rows.items():
        columns = list(TABLES[table]["columns"])
        marks = ",".join("?" * len(columns))
        connection.executemany(
            f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", values
        )
    if running:
        tally_steps.fold_page(connection, rows)
    connection.execute(
        "INSERT INTO applied (name, position) VALUES ('log', ?) "
        "ON CONFLICT(name) DO UPDATE SET position = excluded.position",
        (page[-1].position,),
    )
    return len(page)


_json = msgspec.json.Encoder(order="sorted")
# The events whose payload the read models keep (schema.py, ``events``).
DEFINITIONS = (ElectionDefined, ReporterRegistered, ReporterKeyRevoked)


def _dump(value: Any) -> str | None:
    return None if value is None else _json.encode(value).decode()


class _Registers(dict[tuple[str, str], int | None]):
    """Stations' registered voters, for control checks of protocols that leave it out:
    from this page's registrations, else from the stations already applied."""

    def __init__(self, connection: Any) -> None:
        super().__init__()
        self.connection = connection

    def __missing__(self, key: tuple[str, str]) -> int | None:
        row = self.connection.execute(
            "SELECT registered_voters FROM stations WHERE election = ? AND station = ?", key
        ).fetchone()
        self[key] = found = row[0] if row else None
        return found


def _rows_of(position: int, entry: Any, rows: dict[str, list[tuple]], stamps: _Stamps,
             elections: _Elections, registers: _Registers) -> None:
    event = entry.event
    occurred, recorded = stamps[event.occurred_at], stamps[entry.recorded_at]
    kind = type(event).__name__
    signed = entry.signed
    rows["events"].append(
        EventRow(position, event.event_id, event.election, kind, station_of(event), occurred,
                 recorded, _dump(event) if isinstance(event, DEFINITIONS) else None,
                 event.signature.by if signed else None, signed.key if signed else None,
                 entry.offset)
    )
    if isinstance(event, ElectionDefined):
        elections.setdefault(event.election, event)
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
            StationRow(event.election, event.station, event.region, event.district,
                       event.registered_voters, occurred, recorded, position)
        )
        registers[(event.election, event.station)] = event.registered_voters
    elif isinstance(event, ProtocolIssued):
        register = (registers[(event.election, event.station)]
                    if event.registered_voters is None else None)
        failures = protocol_failures(event, elections[event.election], register)
        rows["protocols"].append(
            ProtocolRow(position, event.event_id, event.election, event.station,
                        event.reported_by, occurred, recorded, event.registered_voters,
                        event.ballots_issued, event.ballots_cast, event.invalid,
                        sum(event.votes.values()), event.protocol_no, event.document_sha256,
                        event.supersedes, _dump(failures or None), _dump(event.votes),
                        _dump(event.lines))
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
    elif isinstance(event, ReporterRegistered):
        rows["reporters"].append(
            (position, event.election, event.reporter, event.name, event.public_key,
             fingerprint(base64.b64decode(event.public_key)), occurred, recorded)
        )
    elif isinstance(event, ReporterKeyRevoked):
        rows["revocations"].append(
            (position, event.election, event.reporter, event.public_key,
             fingerprint(base64.b64decode(event.public_key)), event.reason, occurred, recorded)
        )
    elif isinstance(event, AppealDecided):
        rows["decisions"].append(
            (position, event.event_id, event.election, event.appeal, event.decision,
             event.remedy, _dump(event.stations), occurred, recorded)
        )
