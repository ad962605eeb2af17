"""The one rule for timestamps at the edge of the calendar.

Python's datetime holds years 1 to 9999 in *local* time; an instant such as
``0001-01-01T00:00:00+03:00`` is still readable but falls before year 1 once converted
to UTC, where the ledger stores, sorts and compares every instant. Such a timestamp is
bad input, refused with the field it came in, never an ``OverflowError`` later on.
"""

from __future__ import annotations

from datetime import UTC, datetime


def in_utc(moment: datetime) -> datetime | None:
    """``moment`` converted to UTC, or None when the calendar cannot hold it there."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def out_of_range(text: str) -> str:
    """The reason given for a timestamp ``in_utc`` cannot convert."""
    return (f"{text} is outside the calendar once converted to UTC "
            "(years 0001 to 9999 only)")
