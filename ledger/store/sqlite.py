"""The embedded event store: eventsourcing's SQLite recorder, made append-only and batched."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

from ledger.domain.validation import Recorded
from ledger.store.codec import decode_payload
from ledger.store.session import (
    Accepted,
    Held,
    IntegrityIndex,
    LedgerBusy,
    MissingNode,
    WriteSession,
    chunks,
)

_SQLITE_VARIABLES = 900  # stays under SQLITE_MAX_VARIABLE_NUMBER on every build


class SQLiteLedgerRecorder(SQLiteApplicationRecorder):
    index_table = "ledger_index"
    merkle_table = "ledger_merkle"
    replica_table = "ledger_replica"

    def construct_create_table_statements(self) -> list[str]:
        events = self.events_table_name
        refuse = "SELECT RAISE(ABORT, 'the ledger is append-only')"
        return [
            *super().construct_create_table_statements(),
            f"CREATE TABLE IF NOT EXISTS {self.index_table} ("
            "event_id TEXT PRIMARY KEY, digest TEXT NOT NULL, type TEXT NOT NULL, "
            "election TEXT NOT NULL, station TEXT, position INTEGER NOT NULL, "
            "recorded_at TEXT NOT NULL, leaf INTEGER NOT NULL) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {self.merkle_table} ("
            "level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, "
            "PRIMARY KEY (level, idx)) WITHOUT ROWID",
            "CREATE TABLE IF NOT EXISTS ledger_checkpoints ("
            "size INTEGER NOT NULL, root BLOB NOT NULL, issued_at TEXT NOT NULL, note TEXT NOT NULL)",
            # A replica's accepted checkpoints, each with its source's signatures: a ledger with
            # a row here is a replica, written only by the mirror.
            f"CREATE TABLE IF NOT EXISTS {self.replica_table} ("
            "size INTEGER NOT NULL, root BLOB NOT NULL, origin TEXT NOT NULL, note TEXT NOT NULL, "
            "source TEXT NOT NULL, accepted_at TEXT NOT NULL)",
            *(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN {refuse}; END"
                for table in (events, self.index_table, self.merkle_table, "ledger_checkpoints",
                              self.replica_table)
                for verb in ("UPDATE", "DELETE")
            ),
        ]

    def select_payloads(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT rowid, state FROM {self.events_table_name} WHERE rowid > ? "
                "ORDER BY rowid LIMIT ?",
                (after, limit),
            )
            return [(row[0], row[1]) for row in cursor.fetchall()]

    def select_entries(self, after: int, limit: int) -> list[tuple[int, str, int, str, bytes]]:
        """Up to ``limit`` entries after position ``after``: (position, stream id in hex,
        version, stored topic, stored payload), everything the Merkle leaf hashes."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT rowid, originator_id, originator_version, topic, state FROM "
                f"{self.events_table_name} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (after, limit),
            )
            return [(row[0], _hex(row[1]), row[2], row[3],
                     row[4].encode() if isinstance(row[4], str) else bytes(row[4]))
                    for row in cursor.fetchall()]

    def integrity_index(self) -> SQLiteIntegrityIndex:
        return SQLiteIntegrityIndex(self)

    @contextmanager
    def writing(self) -> Iterator[WriteSession]:
        """One exclusive write transaction, committed only if the block succeeds."""
        with self.datastore.get_connection(commit=True) as connection:
            cursor = connection.cursor()
            try:
                cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:
                raise _busy_or(error) from error
            try:
                yield SQLiteWriteSession(self, cursor)
                connection.commit()
            except sqlite3.OperationalError as error:
                connection.rollback()
                raise _busy_or(error) from error
            except BaseException:
                connection.rollback()
                raise

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        # The library inserts row by row to learn each rowid. Under the write lock, with
        # deletes refused by trigger, rowids are max+1, max+2, ... so one executemany will do.
        c.execute(self.select_max_notification_id_statement)
        first = (c.fetchone()[0] or 0) + 1
        c.executemany(
            self.insert_events_statement,
            [
                (
                    s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                    s.originator_version,
                    s.topic,
                    s.state,
                )
                for s in stored_events
            ],
        )
        return list(range(first, first + len(stored_events)))


def _hex(originator_id: str) -> str:
    return originator_id if len(originator_id) == 32 else UUID(originator_id).hex


def _held(row: Any) -> Held | None:
    return Held(row[0], bytes(row[1]), row[2], row[3], row[4], row[5]) if row else None


def _busy_or(error: sqlite3.OperationalError) -> Exception:
    if "locked" in str(error) or "busy" in str(error):
        return LedgerBusy("the ledger is locked by another writer; try again")
    return error


class SQLiteWriteSession(WriteSession):
    def __init__(self, recorder: SQLiteLedgerRecorder, cursor: SQLiteCursor) -> None:
        self.recorder = recorder
        self.cursor = cursor

    def _select_in(self, sql: str, keys: Sequence[Any]) -> list[Any]:
        rows: list[Any] = []
        for part in chunks(keys, _SQLITE_VARIABLES):
            self.cursor.execute(sql.format(marks=",".join("?" * len(part))), list(part))
            rows.extend(self.cursor.fetchall())
        return rows

    def first_versions(self, streams: Sequence[UUID]) -> dict[UUID, bytes]:
        sql = (
            f"SELECT originator_id, state FROM {self.recorder.events_table_name} "
            "WHERE originator_version = 1 AND originator_id IN ({marks})"
        )
        rows = self._select_in(sql, [s.hex for s in streams])
        return {UUID(row[0]): row[1] for row in rows}

    def heads(self, streams: Sequence[UUID]) -> dict[UUID, int]:
        sql = (
            f"SELECT originator_id, MAX(originator_version) FROM "
            f"{self.recorder.events_table_name} WHERE originator_id IN ({{marks}}) "
            "GROUP BY originator_id"
        )
        rows = self._select_in(sql, [s.hex for s in streams])
        return {UUID(row[0]): row[1] for row in rows}

    def stream_payloads(self, streams: Sequence[UUID]) -> dict[UUID, list[bytes]]:
        sql = (
            f"SELECT originator_id, state FROM {self.recorder.events_table_name} "
            "WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version"
        )
        found: dict[UUID, list[bytes]] = {}
        for row in self._select_in(sql, [s.hex for s in streams]):
            found.setdefault(UUID(row[0]), []).append(row[1])
        return found

    def payloads_of_types(self, election: str, types: Sequence[str]) -> list[bytes]:
        marks = ",".join("?" * len(types))
        self.cursor.execute(
            f"SELECT e.state FROM {self.recorder.index_table} i "
            f"JOIN {self.recorder.events_table_name} e ON e.rowid = i.position "
            f"WHERE i.election = ? AND i.type IN ({marks}) ORDER BY i.position",
            [election, *types],
        )
        return [row[0] for row in self.cursor.fetchall()]

    def recorded(self, event_ids: Sequence[str]) -> dict[str, Recorded]:
        sql = (
            f"SELECT event_id, digest, type, election, station FROM {self.recorder.index_table} "
            "WHERE event_id IN ({marks})"
        )
        return {
            row[0]: Recorded(digest=row[1], type=row[2], election=row[3], station=row[4])
            for row in self._select_in(sql, list(event_ids))
        }

    def located(self, event_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        sql = (f"SELECT event_id, position, leaf FROM {self.recorder.index_table} "
               "WHERE event_id IN ({marks})")
        return {row[0]: (row[1], row[2]) for row in self._select_in(sql, list(event_ids))}

    def last_recorded_at(self) -> datetime | None:
        self.cursor.execute(
            f"SELECT state FROM {self.recorder.events_table_name} ORDER BY rowid DESC LIMIT 1"
        )
        row = self.cursor.fetchone()
        return decode_payload(row[0]).recorded_at if row else None

    def tree_size(self) -> int:
        self.cursor.execute(f"SELECT MAX(idx) FROM {self.recorder.merkle_table} WHERE level = 0")
        largest = self.cursor.fetchone()[0]
        return 0 if largest is None else largest + 1

    def read_stored_node(self, level: int, index: int) -> bytes:
        self.cursor.execute(
            f"SELECT hash FROM {self.recorder.merkle_table} WHERE level = ? AND idx = ?",
            (level, index),
        )
        return self.cursor.fetchone()[0]

    def read_leaves(self, start: int, end: int) -> list[bytes]:
        self.cursor.execute(
            f"SELECT hash FROM {self.recorder.merkle_table} WHERE level = 0 AND idx >= ? "
            "AND idx < ? ORDER BY idx",
            (start, end),
        )
        return [row[0] for row in self.cursor.fetchall()]

    def insert_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        self.cursor.executemany(
            f"INSERT INTO {self.recorder.merkle_table} VALUES (?, ?, ?)", nodes
        )

    def insert_events(
        self, entries: Sequence[Accepted], recorded_at: datetime, first_leaf: int,
        positions: Sequence[int] | None = None,
    ) -> list[int]:
        if positions is None:
            positions = list(
                self.recorder._insert_events(self.cursor, [e.stored for e in entries]) or []
            )
        else:
            self.cursor.executemany(
                f"INSERT INTO {self.recorder.events_table_name} "
                "(rowid, originator_id, originator_version, topic, state) VALUES (?,?,?,?,?)",
                [(position, e.stored.originator_id.hex, e.stored.originator_version,
                  e.stored.topic, e.stored.state)
                 for position, e in zip(positions, entries, strict=True)],
            )
            positions = list(positions)
        stamp = recorded_at.isoformat()
        self.cursor.executemany(
            f"INSERT INTO {self.recorder.index_table} VALUES (?,?,?,?,?,?,?,?)",
            [
                (e.event_id, e.digest, e.type, e.election, e.station, position, stamp, leaf)
                for leaf, (e, position) in enumerate(zip(entries, positions, strict=True),
                                                     start=first_leaf)
            ],
        )
        return positions

    def held(self) -> Held | None:
        self.cursor.execute(f"SELECT * FROM {self.recorder.replica_table} ORDER BY size DESC LIMIT 1")
        return _held(self.cursor.fetchone())

    def record_held(self, held: Held) -> None:
        self.cursor.execute(
            f"INSERT INTO {self.recorder.replica_table} VALUES (?, ?, ?, ?, ?, ?)",
            (held.size, held.root, held.origin, held.note, held.source, held.accepted_at),
        )


class SQLiteIntegrityIndex(IntegrityIndex):
    """The stored Merkle tree and log, read outside any write transaction."""

    def __init__(self, recorder: SQLiteLedgerRecorder) -> None:
        self.recorder = recorder

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def size(self) -> int:
        largest = self._rows(
            f"SELECT MAX(idx) FROM {self.recorder.merkle_table} WHERE level = 0"
        )[0][0]
        return 0 if largest is None else largest + 1

    def read_stored_node(self, level: int, index: int) -> bytes:
        rows = self._rows(
            f"SELECT hash FROM {self.recorder.merkle_table} WHERE level = ? AND idx = ?",
            (level, index),
        )
        if not rows:
            raise MissingNode(level, index)
        return rows[0][0]

    def level(self, level: int, after: int, limit: int) -> list[tuple[int, bytes]]:
        return [
            (row[0], row[1])
            for row in self._rows(
                f"SELECT idx, hash FROM {self.recorder.merkle_table} "
                "WHERE level = ? AND idx > ? ORDER BY idx LIMIT ?",
                (level, after, limit),
            )
        ]

    def levels(self) -> list[int]:
        return [row[0] for row in self._rows(
            f"SELECT DISTINCT level FROM {self.recorder.merkle_table} ORDER BY level"
        )]

    def locate(self, event_id: str) -> tuple[int, int] | None:
        rows = self._rows(
            f"SELECT position, leaf FROM {self.recorder.index_table} WHERE event_id = ?",
            (event_id,),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def record_checkpoint(self, size: int, root: bytes, issued_at: str, note: str) -> None:
        with self.recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "INSERT INTO ledger_checkpoints VALUES (?, ?, ?, ?)", (size, root, issued_at, note)
            )

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        rows = self._rows("SELECT size, root FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
        return (rows[0][0], rows[0][1]) if rows else None

    def held(self) -> Held | None:
        rows = self._rows(f"SELECT * FROM {self.recorder.replica_table} ORDER BY size DESC LIMIT 1")
        return _held(rows[0] if rows else None)
