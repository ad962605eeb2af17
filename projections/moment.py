"""The two time axes of every query: valid time (``--as-of``) and ledger time (``--known-at``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ledger.domain.timestamps import in_utc, out_of_range


def stamp(moment: datetime) -> str:
    """Fixed-width UTC text: comparing two stamps as strings compares the instants."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


class BadMoment(ValueError):
    """A timestamp given on the command line cannot be read."""


LATEST = "9999-12-31T23:59:59.999999Z"


@dataclass(frozen=True)
class Moment:
    """What is visible: events that occurred by ``as_of`` and were recorded by ``known_at``.

    ``None`` means no bound: by default a query sees everything the ledger holds, including
    events dated in the future (a scheduled election, a test night).
    """

    as_of: datetime | None = None
    known_at: datetime | None = None
    # A bound given as ``now``: the same question names another moment a second later, so
    # its answer may change while the log does not (an event dated later comes into view).
    moving: bool = False

    @property
    def as_of_stamp(self) -> str:
        return stamp(self.as_of) if self.as_of else LATEST

    @property
    def known_at_stamp(self) -> str:
        return stamp(self.known_at) if self.known_at else LATEST

    def bounds(self) -> dict[str, str]:
        """The SQL parameters ``:as_of`` and ``:known_at`` that ``visible`` compares with."""
        return {"as_of": self.as_of_stamp, "known_at": self.known_at_stamp}

    def describe(self) -> dict[str, str | None]:
        return {
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "known_at": self.known_at.isoformat() if self.known_at else None,
        }


def visible(table: str = "") -> str:
    """The visibility rule, as an SQL condition on a history row (of ``table``, if named).

    A row is visible at a moment when what it records occurred by ``:as_of`` (valid time) and
    the ledger had recorded it by ``:known_at`` (ledger time). Every read model keeps both
    stamps as fixed-width UTC text, so both comparisons are plain and indexable; every query
    states visibility through this function and binds ``Moment.bounds()``.
    """
    prefix = f"{table}." if table else ""
    return f"{prefix}occurred_at <= :as_of AND {prefix}recorded_at <= :known_at"


# The running totals (projections/steps.py, read in projections/running.py) state this same
# rule in two equivalent forms, and only there:
# - Ledger time as a log position. ``recorded_at`` never decreases along the log (a batch is
#   stamped inside the exclusive write transaction that issues its positions), so "recorded
#   by :known_at" is "at or before the last position recorded by :known_at", which
#   ``tally_batches`` maps; a step is kept by the block of positions it was learnt in.
# - Valid time fixed at append time. A protocol counts once both it and its station are
#   visible: a step is kept at ``max(protocol.occurred_at, station.occurred_at)``, the
#   moment from which ``visible()`` holds of both rows.
# tests/test_running_tally.py checks that the two agree with a fold written from this rule
# alone (visible events, the effective protocol), as of every moment and as known after every
# batch, with the read models caught up page by page and rebuilt.


def settled(moment: Moment, latest_recorded_at: str | None) -> bool:
    """True when nothing appended from now on can be visible at ``moment``, so an answer
    about it never changes: the ledger already holds an event recorded after ``known_at``,
    and ``recorded_at`` never decreases along the log (each batch's is at least the last
    one's: ledger/store/application.py), so every event still to come is recorded after
    ``known_at`` too. ``latest_recorded_at`` is the stamp of the last event the ledger holds.

    Strictly after: the next batch may carry the same ``recorded_at`` as the last one. An
    ``as_of`` bound alone settles nothing, since an event that occurred before it may still be
    recorded (back-dated: a late protocol, an appeal's decision); nor does a bound named
    ``now``, which moves.
    """
    return (moment.known_at is not None and not moment.moving and latest_recorded_at is not None
            and moment.known_at_stamp < latest_recorded_at)


ALWAYS = Moment()  # no bound on either axis: everything the ledger holds


def names_now(text: str) -> bool:
    """``now``, for the wall clock's moment when the question is asked."""
    return text.strip().lower() == "now"


def parse_time(text: str, option: str) -> datetime:
    """An RFC 3339 timestamp with a UTC offset; ``now`` is accepted too."""
    if names_now(text):
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise BadMoment(
            f"{option}: {text!r} is not an RFC 3339 timestamp "
            "(write it like 2030-04-07T23:00:00+02:00)"
        ) from None
    if moment.tzinfo is None:
        raise BadMoment(
            f"{option}: {text!r} has no UTC offset; election nights span time zones, "
            "so write one (e.g. 2030-04-07T23:00:00+02:00 or ...Z)"
        )
    if in_utc(moment) is None:
        raise BadMoment(f"{option}: {out_of_range(text.strip())}")
    return moment


def moment(as_of: str | None = None, known_at: str | None = None, *,
           names: tuple[str, str] = ("--as-of", "--known-at")) -> Moment:
    """The moment named by two timestamps; ``names`` are what the asker calls them (options
    on the command line, query parameters over HTTP), for error messages."""
    return Moment(
        as_of=parse_time(as_of, names[0]) if as_of else None,
        known_at=parse_time(known_at, names[1]) if known_at else None,
        moving=any(names_now(bound) for bound in (as_of, known_at) if bound),
    )
