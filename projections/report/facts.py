"""Everything the report asks of the read models, as plain data: no HTML, no charts.

All of it is asked at one moment, so the page is one consistent picture of the ledger; the
night is the one exception, recomputed at earlier as-of times with the report's known-at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from projections.audit import (
    appeals_of,
    conflicts,
    control_failures,
    discrepancies,
    key_acts,
    signers,
    withheld,
)
from projections.forensics import forensics
from projections.moment import Moment, stamp, visible
from projections.schema import applied_position
from projections.tally import COUNTED, Election, seats, tally

from .display import instant

NIGHT_POINTS = 24
# An election night, counted from the first official protocol: long enough for the slowest
# station to report, short of the recounts and corrections that come days later.
NIGHT_WINDOW = timedelta(hours=24)

Tally = dict[str, Any]


@dataclass(frozen=True)
class LateProtocol:
    """An official protocol after the night window: a recount, a correction days later."""

    occurred_at: datetime
    station: str
    event_id: str
    supersedes: str | None


@dataclass(frozen=True)
class StationPoint:
    """One station's effective official protocol, for the turnout-versus-share chart."""

    turnout_pct: float
    shares_pct: dict[str, float]


@dataclass(frozen=True)
class Facts:
    election: Election
    moment: Moment
    log_position: int
    preliminary: Tally
    final: Tally
    allocation: dict[str, Any]
    night: list[tuple[datetime, Tally]]  # the preliminary tally at evenly spaced times
    after_night: list[LateProtocol]
    stations: list[StationPoint]
    forensics: dict[str, Any]  # projections.forensics of the preliminary tally (its leader)
    withheld: dict[str, Any]
    discrepancies: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]
    appeals: list[dict[str, Any]]
    control_failures: list[dict[str, Any]]
    signers: list[dict[str, Any]]
    key_acts: list[dict[str, Any]]

    def leader(self) -> str | None:
        votes = self.preliminary["votes"]
        leader = max(votes, key=votes.get, default=None)
        return leader if leader is not None and votes[leader] else None  # every choice is listed

    def largest_parties(self, limit: int) -> list[str]:
        """The ``limit`` parties with the most preliminary votes (none without a vote)."""
        votes = self.preliminary["votes"]
        return [c for c in sorted(votes, key=votes.get, reverse=True) if votes[c]][:limit]


def gather(db: Any, election: Election, moment: Moment) -> Facts:
    night = night_series(db, election, moment)
    return Facts(
        election=election,
        moment=moment,
        log_position=applied_position(db),
        preliminary=tally(db, election, moment),
        final=tally(db, election, moment, stage="final"),
        allocation=seats(db, election, moment, stage="final"),
        night=night,
        after_night=after_the_night(db, election, moment, night[0][0]) if night else [],
        stations=station_points(db, election, moment),
        forensics=forensics(db, election, moment),
        withheld=withheld(db, moment, election=election.id),
        discrepancies=discrepancies(db, election, moment),
        conflicts=conflicts(db, election, moment),
        appeals=appeals_of(db, election, moment),
        control_failures=control_failures(db, election, moment),
        signers=signers(db, election, moment),
        key_acts=key_acts(db, election, moment),
    )


def night_series(db: Any, election: Election, moment: Moment) -> list[tuple[datetime, Tally]]:
    """The preliminary tally at NIGHT_POINTS times from the first official protocol to the
    last one within NIGHT_WINDOW of it; empty when no official protocol is visible."""
    params = {"election": election.id, "reporter": election.authority, **moment.bounds()}
    first = db.execute(
        "SELECT MIN(occurred_at) FROM protocols WHERE election = :election "
        f"AND reported_by = :reporter AND {visible()}", params,
    ).fetchone()[0]
    if first is None:
        return []
    start = instant(first)
    last = db.execute(
        "SELECT MAX(occurred_at) FROM protocols WHERE election = :election "
        f"AND reported_by = :reporter AND {visible()} AND occurred_at <= :night_end",
        {**params, "night_end": stamp(start + NIGHT_WINDOW)},
    ).fetchone()[0]
    end = instant(last)
    steps = NIGHT_POINTS - 1 if end > start else 0
    # The known-at bound stays: the night as the ledger knew it at the report's moment.
    times = [start + (end - start) * i / steps if steps else start for i in range(steps + 1)]
    return [(t, tally(db, election, Moment(as_of=t, known_at=moment.known_at))) for t in times]


def after_the_night(db: Any, election: Election, moment: Moment, first: datetime) -> list[LateProtocol]:
    """Official protocols after the night window: charted, they would stretch the time axis
    until the whole night filled its first step."""
    rows = db.execute(
        "SELECT occurred_at, station, event_id, supersedes FROM protocols "
        f"WHERE election = :election AND reported_by = :reporter AND {visible()} "
        "AND occurred_at > :night_end ORDER BY occurred_at, position",
        {"election": election.id, "reporter": election.authority,
         **moment.bounds(), "night_end": stamp(first + NIGHT_WINDOW)},
    ).fetchall()
    return [LateProtocol(instant(at), station, event_id, supersedes)
            for at, station, event_id, supersedes in rows]


def station_points(db: Any, election: Election, moment: Moment) -> list[StationPoint]:
    """Turnout and shares of each station's effective official protocol, for the stations
    whose electorate is known and that have a valid vote to share out."""
    params = {"election": election.id, **moment.bounds(),
              "reporter": election.authority, "scope": None, "excluded": "[]"}
    points = []
    for registered, cast, votes_json in db.execute(
        COUNTED + "SELECT counted.registered_voters, p.ballots_cast, p.votes "
        "FROM counted JOIN protocols p USING (position)", params,
    ):
        votes = json.loads(votes_json)
        valid = sum(votes.values())
        if not registered or not valid:
            continue
        points.append(StationPoint(100 * cast / registered, {c: 100 * v / valid for c, v in votes.items()}))
    return points
