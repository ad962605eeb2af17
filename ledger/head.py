"""The log's head position, read without loading the event store's library.

A query against up-to-date read models only needs to know that nothing was appended since
they were built; for a SQLite ledger that is one indexed read.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

EVENTS_TABLE = "stored_events"  # eventsourcing's SQLite table, as SQLiteLedgerRecorder keeps it


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
