"""The two kinds of failure a user sees, by exit code."""

import re
import sqlite3

# C0 and C1 control characters, DEL, and the separators str.splitlines() breaks lines at.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with every control character escaped: an error message quoting what a user
    (or a hostile file) sent stays one line and cannot drive the terminal."""
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


class BadInput(ValueError):
    """The user's input or question is wrong: exit 2."""


class Failure(RuntimeError):
    """The environment failed (database unreachable, locked, unreadable): exit 1."""


def explain_failure(error: Exception) -> str:
    """One line for an unexpected failure, naming what a user can act on."""
    try:
        from eventsourcing.persistence import PersistenceError
    except ImportError:  # pragma: no cover
        PersistenceError = ()  # type: ignore[assignment,misc]
    if isinstance(error, PersistenceError | sqlite3.DatabaseError):
        return f"database error: {error}".splitlines()[0]
    if isinstance(error, OSError):
        return f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
    return f"unexpected {type(error).__name__}: {error} (set LEDGER_DEBUG=1 for details)"
