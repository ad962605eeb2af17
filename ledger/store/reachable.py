"""Whether a PostgreSQL ledger's server and database answer, asked once, before the pool.

psycopg's pool retries a failing connection until its timeout and then says only "couldn't
get a connection after 5.00 sec"; one direct attempt fails at once with the server's reason
("database "x" does not exist", "connection refused"), which names what to fix.
"""

from __future__ import annotations

from ledger.store.config import Location


def postgres_problem(location: Location) -> str | None:
    """None when the database answers, else the server's reason, on one line."""
    import psycopg

    settings = location.environment(sqlite_recorder="", postgres_recorder="")
    try:
        connection = psycopg.connect(
            host=settings["POSTGRES_HOST"], port=settings["POSTGRES_PORT"],
            dbname=settings["POSTGRES_DBNAME"], user=settings["POSTGRES_USER"],
            password=settings["POSTGRES_PASSWORD"] or None,
            connect_timeout=int(settings["POSTGRES_CONNECT_TIMEOUT"]),
        )
    except psycopg.Error as error:
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        return reason or type(error).__name__
    connection.close()
    return None
