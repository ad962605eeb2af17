"""The event store at scale: eventsourcing's PostgreSQL recorder, made append-only.

Writers take the library's EXCLUSIVE table lock for the whole batch, so positions are
issued in commit order and the checks see exactly the log the batch extends. Readers are
never blocked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.sql import SQL, Identifier

from ledger.store import LedgerBusy, NewEntry, WriteSession
from ledger.validation import Recorded


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.index_table = f"{events_table_name.removesuffix('_events')}_index"
        tables = {"events": self.events_table_name, "index": self.index_table}
        names = {
            "schema": Identifier(self.datastore.schema),
            "refuse": Identifier(f"{self.index_table}_refuse_change"),
            **{key: Identifier(table) for key, table in tables.items()},
            **{
                f"{key}_{verb}": Identifier(f"{table}_{verb}_refused")
                for key, table in tables.items()
                for verb in ("update", "delete", "truncate")
            },
        }
        self.sql_create_statements.extend(
            SQL(statement).format(**names)
            for statement in (
                "CREATE TABLE IF NOT EXISTS {schema}.{index} ("
                "event_id text PRIMARY KEY, digest text NOT NULL, type text NOT NULL, "
                "election text NOT NULL, station text, position bigint NOT NULL UNIQUE, "
                "recorded_at timestamptz NOT NULL)",
                "CREATE OR REPLACE FUNCTION {schema}.{refuse}() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION "
                "'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME; END $$",
                *(
                    f"CREATE OR REPLACE TRIGGER {{{key}_{verb}}} BEFORE {verb.upper()} "
                    f"ON {{schema}}.{{{key}}} FOR EACH {each} "
                    "EXECUTE FUNCTION {schema}.{refuse}()"
                    for key in tables
                    for verb, each in (("update", "ROW"), ("delete", "ROW"),
                                       ("truncate", "STATEMENT"))
                ),
            )
        )

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(Identifier(self.datastore.schema))
            )
        super().create_table()

    @contextmanager
    def writing(self) -> Iterator[WriteSession]:
        try:
            with self.datastore.transaction(commit=True) as cursor:
                self._lock_table(cursor)
                yield PostgresWriteSession(self, cursor)
        except OperationalError as error:
            if "lock timeout" in str(error):
                raise LedgerBusy("the ledger is locked by another writer; try again") from error
            raise


class PostgresWriteSession(WriteSession):
    def __init__(self, recorder: PostgresLedgerRecorder, cursor: psycopg.Cursor[Any]) -> None:
        self.recorder = recorder
        self.cursor = cursor
        self.events = SQL("{0}.{1}").format(
            Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
        )
        self.index = SQL("{0}.{1}").format(
            Identifier(recorder.datastore.schema), Identifier(recorder.index_table)
        )

    def first_versions(self, streams: Sequence[UUID]) -> dict[UUID, bytes]:
        self.cursor.execute(
            SQL(
                "SELECT originator_id, state FROM {0} "
                "WHERE originator_version = 1 AND originator_id = ANY(%s)"
            ).format(self.events),
            [list(streams)],
        )
        return {row["originator_id"]: bytes(row["state"]) for row in self.cursor.fetchall()}

    def heads(self, streams: Sequence[UUID]) -> dict[UUID, int]:
        self.cursor.execute(
            SQL(
                "SELECT originator_id, MAX(originator_version) AS head FROM {0} "
                "WHERE originator_id = ANY(%s) GROUP BY originator_id"
            ).format(self.events),
            [list(streams)],
        )
        return {row["originator_id"]: row["head"] for row in self.cursor.fetchall()}

    def recorded(self, event_ids: Sequence[str]) -> dict[str, Recorded]:
        self.cursor.execute(
            SQL(
                "SELECT event_id, digest, type, election, station FROM {0} "
                "WHERE event_id = ANY(%s)"
            ).format(self.index),
            [list(event_ids)],
        )
        return {
            row["event_id"]: Recorded(
                digest=row["digest"], type=row["type"], election=row["election"],
                station=row["station"],
            )
            for row in self.cursor.fetchall()
        }

    def last_recorded_at(self) -> datetime | None:
        self.cursor.execute(
            SQL("SELECT recorded_at FROM {0} ORDER BY position DESC LIMIT 1").format(self.index)
        )
        row = self.cursor.fetchone()
        return row["recorded_at"] if row else None

    def insert(self, entries: Sequence[NewEntry], recorded_at: datetime) -> list[int]:
        stored = [e.stored for e in entries]
        self.recorder._insert_stored_events(self.cursor, stored)
        positions = list(self.recorder._fetch_ids_after_insert_events(self.cursor, stored) or [])
        self.cursor.executemany(
            SQL("INSERT INTO {0} VALUES (%s,%s,%s,%s,%s,%s,%s)").format(self.index),
            [
                (e.event_id, e.digest, e.type, e.election, e.station, position, recorded_at)
                for e, position in zip(entries, positions, strict=True)
            ],
        )
        return positions
