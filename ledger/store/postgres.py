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
from psycopg.sql import SQL, Composed, Identifier

from ledger.domain.validation import Recorded
from ledger.store.codec import decode_payload
from ledger.store.session import (
    Accepted,
    Held,
    IntegrityIndex,
    LedgerBusy,
    MissingNode,
    WriteSession,
)

_SCHEMA_LOCK = 0x4C45444745520001  # "LEDGER" + 1: serialises first-time table creation


class PostgresLedgerRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: Any, *, events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        prefix = events_table_name.removesuffix("_events")
        self.index_table = f"{prefix}_index"
        self.merkle_table = f"{prefix}_merkle"
        self.checkpoints_table = f"{prefix}_checkpoints"
        self.replica_table = f"{prefix}_replica"
        tables = {"events": self.events_table_name, "index": self.index_table,
                  "merkle": self.merkle_table, "checkpoints": self.checkpoints_table,
                  "replica": self.replica_table}
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
                "election text NOT NULL, station text, position bigint NOT NULL, "
                "recorded_at timestamptz NOT NULL, leaf bigint NOT NULL)",
                "CREATE TABLE IF NOT EXISTS {schema}.{merkle} (level smallint NOT NULL, "
                "idx bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (level, idx))",
                "CREATE TABLE IF NOT EXISTS {schema}.{checkpoints} (size bigint NOT NULL, "
                "root bytea NOT NULL, issued_at text NOT NULL, note text NOT NULL)",
                # A replica's accepted checkpoints (ledger mirror); created last of the tables,
                # so that its presence means every table is there (``_tables_exist``).
                "CREATE TABLE IF NOT EXISTS {schema}.{replica} (size bigint NOT NULL, "
                "root bytea NOT NULL, origin text NOT NULL, note text NOT NULL, "
                "source text NOT NULL, accepted_at text NOT NULL)",
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

    def qualified(self, table: str) -> Composed:
        return SQL("{0}.{1}").format(Identifier(self.datastore.schema), Identifier(table))

    def select_payloads(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                SQL("SELECT notification_id, state FROM {0} WHERE notification_id > %s "
                    "ORDER BY notification_id LIMIT %s").format(self.qualified(self.events_table_name)),
                (after, limit),
            )
            return [(row["notification_id"], bytes(row["state"])) for row in cursor.fetchall()]

    def select_entries(self, after: int, limit: int) -> list[tuple[int, str, int, str, bytes]]:
        """Up to ``limit`` entries after position ``after``: (position, stream id in hex,
        version, stored topic, stored payload), everything the Merkle leaf hashes."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                SQL("SELECT notification_id, originator_id, originator_version, topic, state "
                    "FROM {0} WHERE notification_id > %s ORDER BY notification_id LIMIT %s")
                .format(self.qualified(self.events_table_name)),
                (after, limit),
            )
            return [(row["notification_id"], row["originator_id"].hex, row["originator_version"],
                     row["topic"], bytes(row["state"])) for row in cursor.fetchall()]

    def integrity_index(self) -> PostgresIntegrityIndex:
        return PostgresIntegrityIndex(self)

    def create_table(self) -> None:
        """Create the tables once. The library's statements lock the events table, so running
        them at every start would queue each command behind a writer's batch (ignoring
        lock_timeout) and deadlock processes that start together."""
        if self._tables_exist():
            self.datastore.register_type_adapters()
            return
        # One creator at a time; the others wait here, then find the tables made.
        with self.datastore.get_connection() as connection:
            connection.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
            try:
                if not self._tables_exist():
                    connection.execute(
                        SQL("CREATE SCHEMA IF NOT EXISTS {0}").format(
                            Identifier(self.datastore.schema))
                    )
                    super().create_table()
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))
        self.datastore.register_type_adapters()

    def _tables_exist(self) -> bool:
        # The replica table is created last: if it is there, everything is (a ledger made
        # before mirrors existed lacks it, and gets it, once, with the same statements).
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT to_regclass(%s) AS found",
                           (f'"{self.datastore.schema}"."{self.replica_table}"',))
            return cursor.fetchone()["found"] is not None

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
        self.index = recorder.qualified(recorder.index_table)
        self.merkle = recorder.qualified(recorder.merkle_table)

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

    def stream_payloads(self, streams: Sequence[UUID]) -> dict[UUID, list[bytes]]:
        self.cursor.execute(
            SQL(
                "SELECT originator_id, state FROM {0} WHERE originator_id = ANY(%s) "
                "ORDER BY originator_id, originator_version"
            ).format(self.events),
            [list(streams)],
        )
        found: dict[UUID, list[bytes]] = {}
        for row in self.cursor.fetchall():
            found.setdefault(row["originator_id"], []).append(bytes(row["state"]))
        return found

    def payloads_of_types(self, election: str, types: Sequence[str]) -> list[bytes]:
        self.cursor.execute(
            SQL(
                "SELECT e.state FROM {0} i JOIN {1} e ON e.notification_id = i.position "
                "WHERE i.election = %s AND i.type = ANY(%s) ORDER BY i.position"
            ).format(self.index, self.events),
            [election, list(types)],
        )
        return [bytes(row["state"]) for row in self.cursor.fetchall()]

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

    def located(self, event_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        self.cursor.execute(
            SQL("SELECT event_id, position, leaf FROM {0} WHERE event_id = ANY(%s)").format(self.index),
            [list(event_ids)],
        )
        return {row["event_id"]: (row["position"], row["leaf"]) for row in self.cursor.fetchall()}

    def last_recorded_at(self) -> datetime | None:
        self.cursor.execute(
            SQL("SELECT state FROM {0} ORDER BY notification_id DESC LIMIT 1").format(self.events)
        )
        row = self.cursor.fetchone()
        return decode_payload(bytes(row["state"])).recorded_at if row else None

    def tree_size(self) -> int:
        self.cursor.execute(SQL("SELECT MAX(idx) AS top FROM {0} WHERE level = 0").format(self.merkle))
        top = self.cursor.fetchone()["top"]
        return 0 if top is None else top + 1

    def read_stored_node(self, level: int, index: int) -> bytes:
        self.cursor.execute(
            SQL("SELECT hash FROM {0} WHERE level = %s AND idx = %s").format(self.merkle),
            (level, index),
        )
        return bytes(self.cursor.fetchone()["hash"])

    def read_leaves(self, start: int, end: int) -> list[bytes]:
        self.cursor.execute(
            SQL("SELECT hash FROM {0} WHERE level = 0 AND idx >= %s AND idx < %s ORDER BY idx")
            .format(self.merkle),
            (start, end),
        )
        return [bytes(row["hash"]) for row in self.cursor.fetchall()]

    def insert_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        self.cursor.executemany(
            SQL("INSERT INTO {0} VALUES (%s, %s, %s)").format(self.merkle), nodes
        )

    def insert_events(
        self, entries: Sequence[Accepted], recorded_at: datetime, first_leaf: int,
        positions: Sequence[int] | None = None,
    ) -> list[int]:
        stored = [e.stored for e in entries]
        if positions is None:
            self.recorder._insert_stored_events(self.cursor, stored)
            positions = list(self.recorder._fetch_ids_after_insert_events(self.cursor, stored) or [])
        else:
            # A replica's positions are its source's, gaps included (a sequence skips the
            # numbers of rolled-back transactions): given, never drawn from the sequence.
            self.cursor.executemany(
                SQL("INSERT INTO {0} (originator_id, originator_version, topic, state, "
                    "notification_id) VALUES (%s, %s, %s, %s, %s)").format(self.events),
                [(s.originator_id, s.originator_version, s.topic, s.state, position)
                 for position, s in zip(positions, stored, strict=True)],
            )
            positions = list(positions)
        self.cursor.executemany(
            SQL("INSERT INTO {0} VALUES (%s,%s,%s,%s,%s,%s,%s,%s)").format(self.index),
            [
                (e.event_id, e.digest, e.type, e.election, e.station, position, recorded_at, leaf)
                for leaf, (e, position) in enumerate(zip(entries, positions, strict=True),
                                                     start=first_leaf)
            ],
        )
        return positions

    def held(self) -> Held | None:
        self.cursor.execute(SQL("SELECT * FROM {0} ORDER BY size DESC LIMIT 1").format(
            self.recorder.qualified(self.recorder.replica_table)))
        return _held(self.cursor.fetchone())

    def record_held(self, held: Held) -> None:
        self.cursor.execute(
            SQL("INSERT INTO {0} VALUES (%s, %s, %s, %s, %s, %s)").format(
                self.recorder.qualified(self.recorder.replica_table)),
            (held.size, held.root, held.origin, held.note, held.source, held.accepted_at),
        )


def _held(row: dict[str, Any] | None) -> Held | None:
    if row is None:
        return None
    return Held(row["size"], bytes(row["root"]), row["origin"], row["note"], row["source"],
                row["accepted_at"])


class PostgresIntegrityIndex(IntegrityIndex):
    def __init__(self, recorder: PostgresLedgerRecorder) -> None:
        self.recorder = recorder
        self.merkle = recorder.qualified(recorder.merkle_table)
        self.index = recorder.qualified(recorder.index_table)
        self.checkpoints = recorder.qualified(recorder.checkpoints_table)

    def _rows(self, query: Composed, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(query, params)
            return cursor.fetchall()

    def size(self) -> int:
        top = self._rows(SQL("SELECT MAX(idx) AS top FROM {0} WHERE level = 0").format(self.merkle))
        return 0 if top[0]["top"] is None else top[0]["top"] + 1

    def read_stored_node(self, level: int, index: int) -> bytes:
        rows = self._rows(
            SQL("SELECT hash FROM {0} WHERE level = %s AND idx = %s").format(self.merkle),
            (level, index),
        )
        if not rows:
            raise MissingNode(level, index)
        return bytes(rows[0]["hash"])

    def level(self, level: int, after: int, limit: int) -> list[tuple[int, bytes]]:
        rows = self._rows(
            SQL("SELECT idx, hash FROM {0} WHERE level = %s AND idx > %s ORDER BY idx LIMIT %s")
            .format(self.merkle),
            (level, after, limit),
        )
        return [(row["idx"], bytes(row["hash"])) for row in rows]

    def levels(self) -> list[int]:
        rows = self._rows(SQL("SELECT DISTINCT level FROM {0} ORDER BY level").format(self.merkle))
        return [row["level"] for row in rows]

    def locate(self, event_id: str) -> tuple[int, int] | None:
        rows = self._rows(
            SQL("SELECT position, leaf FROM {0} WHERE event_id = %s").format(self.index),
            (event_id,),
        )
        return (rows[0]["position"], rows[0]["leaf"]) if rows else None

    def record_checkpoint(self, size: int, root: bytes, issued_at: str, note: str) -> None:
        with self.recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                SQL("INSERT INTO {0} VALUES (%s, %s, %s, %s)").format(self.checkpoints),
                (size, root, issued_at, note),
            )

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        rows = self._rows(
            SQL("SELECT size, root FROM {0} ORDER BY size DESC LIMIT 1").format(self.checkpoints)
        )
        return (rows[0]["size"], bytes(rows[0]["root"])) if rows else None

    def held(self) -> Held | None:
        rows = self._rows(SQL("SELECT * FROM {0} ORDER BY size DESC LIMIT 1").format(
            self.recorder.qualified(self.recorder.replica_table)))
        return _held(rows[0] if rows else None)
