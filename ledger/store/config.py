"""Where a ledger lives: a SQLite file (the default) or a PostgreSQL URL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ledger.errors import BadInput

DEFAULT_DB = "ledger.db"
LOCK_TIMEOUT_SECONDS = "30"


class BadLocation(BadInput):
    """The --db value or LEDGER_DB cannot name a ledger."""


@dataclass(frozen=True)
class Location:
    db: str

    @property
    def is_postgres(self) -> bool:
        return self.db.startswith(("postgresql://", "postgres://"))

    def environment(self, *, sqlite_recorder: str, postgres_recorder: str) -> dict[str, str]:
        """eventsourcing's settings for this location."""
        if not self.is_postgres:
            return {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(Path(self.db)),
                "SQLITE_LOCK_TIMEOUT": LOCK_TIMEOUT_SECONDS,
                "APPLICATION_RECORDER_TOPIC": sqlite_recorder,
            }
        return {**self.postgres_settings(), "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "APPLICATION_RECORDER_TOPIC": postgres_recorder}

    def postgres_settings(self) -> dict[str, str]:
        """The POSTGRES_* settings (eventsourcing's names) of a postgresql:// location."""
        url = urlsplit(self.db)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        unknown = set(query) - {"schema", "connect_timeout", "lock_timeout", "pool_size"}
        if unknown:
            raise BadLocation(f"--db: unknown URL parameter(s) {', '.join(sorted(unknown))}")
        for name in ("connect_timeout", "lock_timeout", "pool_size"):
            # 0 would mean "wait forever" to PostgreSQL and libpq: never what a retry loop wants.
            if name in query and not (query[name].isdigit() and int(query[name]) >= 1):
                raise BadLocation(f"--db: {name} must be a whole number of "
                                  f"{'connections' if name == 'pool_size' else 'seconds'}, "
                                  f"at least 1, got {query[name]!r}")
        try:
            port = str(url.port or 5432)
        except ValueError as error:
            raise BadLocation(f"--db: bad port in {self.describe()}: {error}") from None
        return {
            "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
            "POSTGRES_HOST": url.hostname or "localhost",
            "POSTGRES_PORT": port,
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_SCHEMA": query.get("schema", "public"),
            "POSTGRES_CONNECT_TIMEOUT": query.get("connect_timeout", "5"),
            "POSTGRES_LOCK_TIMEOUT": query.get("lock_timeout", LOCK_TIMEOUT_SECONDS),
            "POSTGRES_POOL_SIZE": query.get("pool_size", "2"),
        }

    def describe(self) -> str:
        """The location with any password masked, for messages."""
        if not self.is_postgres:
            return self.db
        url = urlsplit(self.db)
        if url.password:
            return self.db.replace(f":{url.password}@", ":***@", 1)
        return self.db

    def read_models_path(self) -> Path:
        """The SQLite file holding the read models of this ledger."""
        if override := os.environ.get("LEDGER_READ_MODELS"):
            return Path(override)
        if self.is_postgres:
            import hashlib  # only here: a query on a SQLite ledger need not load OpenSSL

            tag = hashlib.sha256(self.db.encode()).hexdigest()[:12]
            return Path(f"ledger-pg-{tag}.projections.db")
        path = Path(self.db)
        return path.with_name(f"{path.stem}.projections.db")


def locate(db: str | None = None) -> Location:
    """The ledger named by ``--db``, else ``LEDGER_DB``, else ``./ledger.db``."""
    chosen = db or os.environ.get("LEDGER_DB") or DEFAULT_DB
    location = Location(chosen)
    if not location.is_postgres:
        if "://" in chosen:
            raise BadLocation(
                f"--db: {chosen!r} is neither a file path nor a postgresql:// URL"
            )
        parent = Path(chosen).parent
        if not parent.is_dir():
            raise BadLocation(f"--db: directory {str(parent)!r} does not exist")
        if Path(chosen).is_dir():
            raise BadLocation(f"--db: {chosen!r} is a directory, not a ledger file")
    return location
