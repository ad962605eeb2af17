"""The log's head position, and stored events by position, read without loading the event
store's library.

A query against up-to-date read models only needs to know that nothing was appended since
they were built; that is one indexed read, of a SQLite file or over one PostgreSQL
connection (eventsourcing's datastore would first build a connection pool). History reads
the events it shows from the log the same way: they are kept there once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EVENTS_TABLE = "stored_events"  # eventsourcing's SQLite table, as SQLiteLedgerRecorder keeps it
POSTGRES_EVENTS_TABLE = "ledger_events"  # eventsourcing's table for the application "Ledger"


def sqlite_head(path: Path | str) -> int | None:
    """The last position of the SQLite ledger at ``path``; None if it cannot be read so."""
    try:
        connection = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        try:
            row = connection.execute(f"SELECT MAX(rowid) FROM {EVENTS_TABLE}").fetchone()
        finally:
            connection.close()
    except sqlite3.Error:
        return None
    return row[0] or 0


class SQLiteHead:
    """The head of one SQLite ledger, read again and again on one read-only connection: a
    server asks it for every read (ledger/http/answers.py), from its event loop only."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._connection: sqlite3.Connection | None = None

    def __call__(self) -> int:
        if self._connection is None:
            self._connection = sqlite3.connect(f"file:{self.path.resolve()}?mode=ro", uri=True,
                                               check_same_thread=False)
        row = self._connection.execute(f"SELECT MAX(rowid) FROM {EVENTS_TABLE}").fetchone()
        return row[0] or 0


def postgres_head(settings: dict[str, str]) -> int | None:
    """The last position of the PostgreSQL ledger with these POSTGRES_* settings; None if it
    cannot be read so (the caller then opens the ledger, which says why)."""
    import psycopg
    from psycopg import sql

    try:
        with _postgres(settings) as connection:
            row = connection.execute(sql.SQL("SELECT MAX(notification_id) FROM {}").format(
                sql.Identifier(settings["POSTGRES_SCHEMA"], POSTGRES_EVENTS_TABLE))).fetchone()
    except psycopg.Error:
        return None
    return row[0] or 0 if row else 0


_IN_CHUNK = 900  # positions per query: under SQLITE_MAX_VARIABLE_NUMBER on every build


def sqlite_states(path: Path | str, positions: Sequence[int]) -> dict[int, bytes]:
    """The stored payloads of the SQLite ledger at ``path`` at these positions (those it has)."""
    found: dict[int, bytes] = {}
    if not positions:
        return found
    connection = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
    try:
        for start in range(0, len(positions), _IN_CHUNK):
            chunk = positions[start:start + _IN_CHUNK]
            found.update(connection.execute(
                f"SELECT rowid, state FROM {EVENTS_TABLE} WHERE rowid IN ({','.join('?' * len(chunk))})",
                chunk))
    finally:
        connection.close()
    return found


def postgres_states(settings: dict[str, str], positions: Sequence[int]) -> dict[int, bytes]:
    """The same on the PostgreSQL ledger with these POSTGRES_* settings."""
    from psycopg import sql

    if not positions:
        return {}
    with _postgres(settings) as connection:
        rows = connection.execute(
            sql.SQL("SELECT notification_id, state FROM {} WHERE notification_id = ANY(%s)").format(
                sql.Identifier(settings["POSTGRES_SCHEMA"], POSTGRES_EVENTS_TABLE)),
            [list(positions)]).fetchall()
    return {position: bytes(state) for position, state in rows}


def _postgres(settings: dict[str, str]) -> Any:
    """One psycopg connection to the ledger's server, without the library's pool."""
    import psycopg

    return psycopg.connect(
        host=settings["POSTGRES_HOST"], port=settings["POSTGRES_PORT"],
        dbname=settings["POSTGRES_DBNAME"], user=settings["POSTGRES_USER"],
        password=settings["POSTGRES_PASSWORD"] or None,
        connect_timeout=int(settings["POSTGRES_CONNECT_TIMEOUT"]),
    )
