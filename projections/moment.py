"""The two time axes of every query: valid time (``--as-of``) and ledger time (``--known-at``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ledger.timestamps import in_utc, out_of_range
from projections.apply import stamp


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

    @property
    def t(self) -> str:
        return stamp(self.as_of) if self.as_of else LATEST

    @property
    def k(self) -> str:
        return stamp(self.known_at) if self.known_at else LATEST

    def describe(self) -> dict[str, str | None]:
        return {
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "known_at": self.known_at.isoformat() if self.known_at else None,
        }


def parse_time(text: str, option: str) -> datetime:
    """An RFC 3339 timestamp with a UTC offset; ``now`` is accepted too."""
    if text.strip().lower() == "now":
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


def moment(as_of: str | None = None, known_at: str | None = None) -> Moment:
    return Moment(
        as_of=parse_time(as_of, "--as-of") if as_of else None,
        known_at=parse_time(known_at, "--known-at") if known_at else None,
    )
