"""The read-model file: one SQLite database of history tables, fed only from the log.

Every table keeps history rows stamped with ``occurred_at`` (valid time) and
``recorded_at`` (ledger time), both as fixed-width UTC text so that ordering and ``<=``
are plain string comparisons an index can serve. ``applied`` records the last log
position folded in, written in the same transaction as the rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

TABLES: dict[str, dict] = {
    "applied": dict(
        columns={"name": str, "position": int}, pk="name",
    ),
    # One row per logged event, to find events by election, station and time; the event
    # itself (and, if signed, what was submitted) is read from the log (history), not kept
    # a second time here. Only definitions keep their payload: every protocol is checked
    # against its election's, and signatures against the reporters' keys.
    "events": dict(
        columns={"position": int, "event_id": str, "election": str, "type": str,
                 "station": str, "occurred_at": str, "recorded_at": str,
                 "payload": str,  # ElectionDefined, ReporterRegistered, ReporterKeyRevoked only
                 # Signed events: the signer and its key's fingerprint.
                 "signed_by": str, "signing_key": str,
                 # The UTC offset (seconds) occurred_at was written with, if not UTC.
                 "occurred_at_offset": int},
        pk="position",
        indexes=[["election", "station", "position"]],
    ),
    "reporters": dict(
        columns={"position": int, "election": str, "reporter": str, "name": str,
                 "public_key": str, "fingerprint": str, "occurred_at": str, "recorded_at": str},
        pk="position",
        indexes=[["election", "reporter"]],
    ),
    # Keys taken away (ReporterKeyRevoked); who added each key is the events row's signer.
    "revocations": dict(
        columns={"position": int, "election": str, "reporter": str, "public_key": str,
                 "fingerprint": str, "reason": str, "occurred_at": str, "recorded_at": str},
        pk="position",
        indexes=[["election", "reporter"]],
    ),
    "elections": dict(
        columns={"election": str, "name": str, "seats": int, "method": str,
                 "threshold_pct": float, "threshold_base": str, "authority": str,
                 "occurred_at": str, "recorded_at": str, "position": int},
        pk="election",
    ),
    "choices": dict(
        columns={"election": str, "choice": str, "name": str, "party": str, "ballot_order": int},
        pk=("election", "choice"),
    ),
    "stations": dict(
        columns={"election": str, "station": str, "region": str, "district": str,
                 "registered_voters": int, "occurred_at": str, "recorded_at": str,
                 "position": int},
        pk=("election", "station"),
        indexes=[["election", "region"], ["election", "district"], ["election", "occurred_at"]],
    ),
    "protocols": dict(
        columns={"position": int, "event_id": str, "election": str, "station": str,
                 "reported_by": str, "occurred_at": str, "recorded_at": str,
                 "registered_voters": int, "ballots_issued": int, "ballots_cast": int,
                 "invalid": int, "valid": int, "protocol_no": str, "document_sha256": str,
                 "supersedes": str, "control_failures": str, "votes": str,
                 "lines": str},
        pk="position",
        indexes=[["election", "reported_by", "occurred_at"], ["election", "station"]],
        # Few protocols supersede another: a partial index finds them without a scan.
        raw_indexes=["CREATE INDEX IF NOT EXISTS idx_protocols_superseding "
                     "ON protocols (election, supersedes) WHERE supersedes IS NOT NULL"],
    ),
    "withheld": dict(
        columns={"position": int, "event_id": str, "election": str, "station": str,
                 "requested_by": str, "reason": str, "occurred_at": str, "recorded_at": str},
        pk="position",
        indexes=[["election", "requested_by"]],
    ),
    "announcements": dict(
        columns={"position": int, "event_id": str, "election": str, "authority": str,
                 "stage": str, "scope": str, "occurred_at": str, "recorded_at": str,
                 "turnout_pct": float, "votes": str, "seats": str},
        pk="position",
        indexes=[["election", "stage", "scope"]],
    ),
    "appeals": dict(
        columns={"position": int, "event_id": str, "election": str, "appeal": str,
                 "filed_by": str, "grounds": str, "demand": str, "stations": str,
                 "occurred_at": str, "recorded_at": str},
        pk="position",
        indexes=[["election", "appeal"]],
    ),
    "decisions": dict(
        columns={"position": int, "event_id": str, "election": str, "appeal": str,
                 "decision": str, "remedy": str, "stations": str, "occurred_at": str,
                 "recorded_at": str},
        pk="position",
        indexes=[["election", "appeal"]],
    ),
    # Running totals of the tally (projections/steps.py, read by projections/running.py).
    "tally_steps": dict(
        columns={"election": str, "reporter": str, "scope": str, "level": str, "bucket": str,
                 "stations": int, "ballots_cast": int, "invalid": int,
                 "registered_voters": int, "cast_where_registered": int, "votes": str},
        pk=("election", "reporter", "scope", "level", "bucket"),
    ),
    # The same steps by the block of log positions the ledger learnt them in (--known-at).
    "tally_known_steps": dict(
        columns={"election": str, "reporter": str, "scope": str, "block": int, "level": str,
                 "bucket": str, "stations": int, "ballots_cast": int, "invalid": int,
                 "registered_voters": int, "cast_where_registered": int, "votes": str},
        pk=("election", "reporter", "scope", "block", "level", "bucket"),
    ),
    # Each recorded_at (one per append transaction) and the last position it recorded.
    "tally_batches": dict(columns={"recorded_at": str, "position": int}, pk="recorded_at"),
    "tally_complex": dict(
        columns={"election": str, "station": str, "reporter": str},
        pk=("election", "station", "reporter"),
    ),
    "tally_known": dict(columns={"name": str, "value": str}, pk="name"),
}


# Bumped whenever a table changes shape or what a row holds (3: control checks use the
# station's register; 4: signed events, protocol lines, running tally totals; 5: a step's
# per-choice figures as one array; 6: steps by ledger time; 7: key revocations; 8: events
# keep no payload but definitions', history reads the log): read models of another version
# are rebuilt.
SCHEMA_VERSION = 8


class EventRow(NamedTuple):
    """A row of ``events``, its fields in the table's column order."""

    position: int
    event_id: str
    election: str
    type: str
    station: str | None
    occurred_at: str
    recorded_at: str
    payload: str | None
    signed_by: str | None
    signing_key: str | None
    occurred_at_offset: int | None


class StationRow(NamedTuple):
    """A row of ``stations``."""

    election: str
    station: str
    region: str
    district: str | None
    registered_voters: int
    occurred_at: str
    recorded_at: str
    position: int


class ProtocolRow(NamedTuple):
    """A row of ``protocols``."""

    position: int
    event_id: str
    election: str
    station: str
    reported_by: str
    occurred_at: str
    recorded_at: str
    registered_voters: int | None
    ballots_issued: int | None
    ballots_cast: int
    invalid: int
    valid: int
    protocol_no: str | None
    document_sha256: str | None
    supersedes: str | None
    control_failures: str | None
    votes: str
    lines: str | None


ROWS: dict[str, type[tuple]] = {"events": EventRow, "stations": StationRow, "protocols": ProtocolRow}


class ReadModels:
    """The read-model file opened for writing: its connection and ``execute``.

    Creating and indexing the tables is sqlite-utils' job (``create``); an existing file is
    opened with plain sqlite3, so a short command never imports sqlite-utils (which imports
    numpy: more than a small append costs in all).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.conn = connection

    def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, parameters)


def open_read_models(path: Path | str, *, indexes: bool = True) -> ReadModels:
    """Open (creating if needed) the read-model file at ``path``, to write to it."""
    connection = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    # A rollback journal, not WAL: replay swaps in a rebuilt file, and a WAL file left
    # beside the old one would be replayed into the new one.
    connection.execute("PRAGMA journal_mode=DELETE")
    connection.execute("PRAGMA synchronous=NORMAL")
    db = ReadModels(connection)
    fresh = not _existing(db, "table") >= {"applied"}
    if not _existing(db, "table") >= set(TABLES):
        create_tables(db)
    if fresh:
        db.execute("INSERT INTO applied (name, position) VALUES ('schema', ?)", [SCHEMA_VERSION])
    if indexes and not _existing(db, "index") >= set(_index_names()):
        create_indexes(db)
    return db


def _existing(db: ReadModels, kind: str) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = ?", [kind])}


def _index_names() -> list[str]:
    """sqlite-utils' names for the indexes declared above (``idx_TABLE_COLUMN_...``)."""
    return [f"idx_{name}_{'_'.join(columns)}"
            for name, spec in TABLES.items() for columns in spec.get("indexes", [])]


def create_tables(db: ReadModels) -> None:
    import sqlite_utils

    tables = sqlite_utils.Database(db.conn)
    for name, spec in TABLES.items():
        tables[name].create(spec["columns"], pk=spec["pk"], if_not_exists=True)


def create_indexes(db: ReadModels) -> None:
    import sqlite_utils

    tables = sqlite_utils.Database(db.conn)
    for name, spec in TABLES.items():
        for columns in spec.get("indexes", []):
            tables[name].create_index(columns, if_not_exists=True)
        for statement in spec.get("raw_indexes", []):
            db.execute(statement)



# Unsynced commits (a server's many small catch-ups). SQLite without syncs survives a crash
# of the process (the OS still holds every write) but not of the machine (writes reach the
# disk in any order, and the file may be torn). So before the first unsynced commit a synced
# one records this boot of the machine in ``applied``; a file that holds another boot's
# marker went through a machine crash while unsynced and is rebuilt from the log (``torn``);
# a clean stop syncs the file and removes the marker (``settle``). Where the OS does not say
# which boot this is, commits stay synced.
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
UNSYNCED = "unsynced "  # + the boot id: a name in ``applied``


def this_boot() -> str | None:
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def unsynced(db: ReadModels) -> bool:
    """Let this connection's commits go unsynced, once a synced commit has marked the file
    as written so during this boot; False (commits stay synced) where the boot is unknown."""
    boot = this_boot()
    if boot is None:
        return False
    if db.execute("SELECT 1 FROM applied WHERE name = ?", [UNSYNCED + boot]).fetchone() is None:
        db.execute("PRAGMA synchronous=FULL")
        with writing(db) as connection:
            connection.execute("DELETE FROM applied WHERE name LIKE 'unsynced %'")
            connection.execute("INSERT INTO applied (name, position) VALUES (?, 0)", [UNSYNCED + boot])
    db.execute("PRAGMA synchronous=OFF")
    return True


def torn(db: Any) -> bool:
    """True when the file took unsynced commits during another boot of the machine: a crash
    of the machine may have torn it, so it must be rebuilt."""
    try:
        row = db.execute("SELECT name FROM applied WHERE name LIKE 'unsynced %'").fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] != UNSYNCED + (this_boot() or "")


def settle(path: Path | str) -> None:
    """Sync a file that took unsynced commits, and remove its marker (a clean stop)."""
    db = open_read_models(path)
    try:
        if db.execute("SELECT 1 FROM applied WHERE name LIKE 'unsynced %'").fetchone() is None:
            return
        db.execute("PRAGMA synchronous=FULL")
        with writing(db) as connection:  # its sync also syncs every page written unsynced
            connection.execute("DELETE FROM applied WHERE name LIKE 'unsynced %'")
    finally:
        db.conn.close()


def connect(path: Path | str) -> sqlite3.Connection:
    """A plain connection for answering queries: no table creation, light to import."""
    return sqlite3.connect(str(path), timeout=30)


def schema_version(db: Any) -> int:
    try:
        row = db.execute("SELECT position FROM applied WHERE name = 'schema'").fetchone()
    except sqlite3.Error:
        return 0
    return row[0] if row else 0


def applied_position(db: Any) -> int:
    row = db.execute("SELECT position FROM applied WHERE name = 'log'").fetchone()
    return row[0] if row else 0


@contextmanager
def writing(db: ReadModels) -> Iterator[sqlite3.Connection]:
    """An exclusive transaction on the read-model file."""
    connection = db.conn
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
