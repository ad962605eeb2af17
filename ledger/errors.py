"""The two kinds of failure a user sees, by exit code."""


class BadInput(ValueError):
    """The user's input or question is wrong: exit 2."""


class Failure(RuntimeError):
    """The environment failed (database unreachable, locked, unreadable): exit 1."""
