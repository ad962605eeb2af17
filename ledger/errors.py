"""The two kinds of failure a user sees, by exit code."""

import re

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
