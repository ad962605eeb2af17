"""Preliminary, final and parallel tallies as of any moment.

A tally is two indexed SQL queries over history rows (the latest visible protocol per
station, minus superseded ones) plus, for the final stage, the handful of appeals that
decide which stations count. Nothing replays the log.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

from projections import running
from projections.codec import vote_maps
from projections.effective import effective_protocols
from projections.errors import QueryError
from projections.moment import ALWAYS, Moment, visible
from projections.seats import Allocation, Threshold, allocate, decimal_text, passing_choices, threshold


@dataclass(frozen=True)
class Election:
    id: str
    name: str
    seats: int
    method: str
    threshold_pct: float
    threshold_base: str
    authority: str
    choices: list[tuple[str, str, str | None]]  # (id, name, party) in ballot order

    @property
    def names(self) -> dict[str, str]:
        return {choice: name for choice, name, _ in self.choices}


def elections(db: Any, moment: Moment = ALWAYS, election: str | None = None
              ) -> list[dict[str, Any]]:
    """The elections defined as of the moment (or only ``election``), in the order the
    ledger learnt of them."""
    return [
        {"id": row[0], "name": row[1]}
        for row in db.execute(
            f"SELECT election, name FROM elections WHERE {visible()} "
            "AND (:election IS NULL OR election = :election) ORDER BY position",
            {**moment.bounds(), "election": election})
    ]


def unknown(db: Any, election: str, station: str | None = None) -> str | None:
    """What of ``election`` (and ``station`` in it) the ledger does not define, if anything."""
    if db.execute("SELECT 1 FROM elections WHERE election = ?", [election]).fetchone() is None:
        return f"unknown election {election!r}"
    if station is not None and db.execute(
        "SELECT 1 FROM stations WHERE election = ? AND station = ?", [election, station]
    ).fetchone() is None:
        return f"unknown station {station!r} in {election!r}"
    return None


def unknown_reporter(db: Any, election: str, reporter: str) -> str | None:
    """Why ``reporter`` names nobody in ``election``, if it does not: a reporter is known
    once any event of the election names it (its key, a protocol, a withheld request, an
    appeal, an announcement) or it is the election's authority."""
    if db.execute(
        "SELECT 1 FROM elections WHERE election = :e AND authority = :r "
        "UNION ALL SELECT 1 FROM reporters WHERE election = :e AND reporter = :r "
        "UNION ALL SELECT 1 FROM protocols WHERE election = :e AND reported_by = :r "
        "UNION ALL SELECT 1 FROM withheld WHERE election = :e AND requested_by = :r "
        "UNION ALL SELECT 1 FROM appeals WHERE election = :e AND filed_by = :r "
        "UNION ALL SELECT 1 FROM announcements WHERE election = :e AND authority = :r LIMIT 1",
        {"e": election, "r": reporter},
    ).fetchone():
        return None
    return f"unknown reporter {reporter!r} in {election!r}"


def require_reporter(db: Any, election: str, reporter: str) -> None:
    if (missing := unknown_reporter(db, election, reporter)) is not None:
        raise QueryError(f"--reporter: {missing}")


def load_election(db: Any, election: str | None) -> Election:
    """The election asked for, or the only one the ledger holds."""
    if election is None:
        ids = [row[0] for row in db.execute("SELECT election FROM elections ORDER BY position")]
        if not ids:
            raise QueryError("the ledger holds no election yet; append an ElectionDefined event")
        if len(ids) > 1:
            raise QueryError(f"--election: the ledger holds {len(ids)} elections: {', '.join(ids)}")
        election = ids[0]
    row = db.execute(
        "SELECT election, name, seats, method, threshold_pct, threshold_base, authority "
        "FROM elections WHERE election = ?",
        [election],
    ).fetchone()
    if row is None:
        raise QueryError(f"--election: unknown election {election!r}")
    choices = [
        (r[0], r[1], r[2])
        for r in db.execute(
            "SELECT choice, name, party FROM choices WHERE election = ? ORDER BY ballot_order",
            [election],
        )
    ]
    return Election(*row, choices=choices)


def counted_protocols(among: str | None = None, *, simple: bool = False) -> str:
    """The effective protocols of one reporter (:reporter) that count: those of stations
    visible at the moment and in :scope, less the stations in :excluded (a JSON list); with
    ``among``, only the stations that SQL subquery returns; with ``simple``, only the simple
    stations, whose one protocol is their effective one (projections/steps.py)."""
    effective = running.simple_effective() if simple else effective_protocols(among=among)
    return effective + f""",
in_scope AS (
    SELECT effective.position, effective.station, effective.occurred_at, effective.supersedes,
           stations.registered_voters
    FROM effective JOIN stations
      ON stations.election = :election AND stations.station = effective.station
     AND {visible('stations')}
    WHERE (:scope IS NULL OR stations.region = :scope OR stations.district = :scope)
),
counted AS (
    SELECT * FROM in_scope
    WHERE station NOT IN (SELECT value FROM json_each(:excluded))
)
"""


COUNTED = counted_protocols()


@dataclass(frozen=True)
class Exclusions:
    """Stations the final tally leaves out, and why."""

    contested: dict[str, list[str]]  # station -> pending appeals naming it
    annulled: dict[str, str]  # station -> appeal whose decision annulled it
    awaiting_recount: dict[str, str]  # station -> appeal whose recount is not yet in

    @property
    def stations(self) -> set[str]:
        return set(self.contested) | set(self.annulled) | set(self.awaiting_recount)


NO_EXCLUSIONS = Exclusions({}, {}, {})


@dataclass(frozen=True)
class Counting:
    """What a tally counts: one reporter's effective protocols as of a moment, in a scope,
    less the stations a final tally leaves out. ``params`` are what ``COUNTED`` binds."""

    election: Election
    stage: str
    reporter: str
    scope: str | None
    params: dict[str, Any]
    exclusions: Exclusions


def counting_at(db: Any, election: Election, moment: Moment, *, stage: str = "preliminary",
                reporter: str | None = None, scope: str | None = None) -> Counting:
    """The protocols a tally with these options counts; ``QueryError`` for a scope that
    names no station, or a reporter that no event of the election names."""
    if reporter is not None and reporter != election.authority:
        require_reporter(db, election.id, reporter)
    reporter = reporter or election.authority
    params: dict[str, Any] = {
        "election": election.id, **moment.bounds(), "reporter": reporter, "scope": scope,
        "excluded": "[]",
    }
    if scope is not None and not db.execute(
        "SELECT 1 FROM stations WHERE election = :election AND (region = :scope OR district = :scope)",
        params,
    ).fetchone():
        raise QueryError(f"--scope: no station of {election.id!r} is in region {scope!r}")
    exclusions = NO_EXCLUSIONS
    if stage == "final":
        exclusions = final_exclusions(db, election, moment, params)
        params["excluded"] = json.dumps(sorted(exclusions.stations))
    return Counting(election, stage, reporter, scope, params, exclusions)


# One counted station: its id, the station's registered voters, its effective protocol's
# registered voters (either may be unknown), ballots cast, invalid, valid (the votes' sum)
# and the votes (JSON).
CountedStation = tuple[str, int | None, int | None, int, int, int, str]

_COUNTED_COLUMNS = ("SELECT counted.station, counted.registered_voters, p.registered_voters, "
                    "p.ballots_cast, p.invalid, p.valid, p.votes "
                    "FROM counted JOIN protocols p USING (position)")


# The stations registered as of the moment in :scope (what ``stations_total`` counts).
STATIONS_IN_SCOPE = (f"FROM stations WHERE election = :election AND {visible()} "
                     "AND (:scope IS NULL OR region = :scope OR district = :scope)")


def registered_stations(db: Any, counting: Counting) -> Iterator[tuple[str, str, int | None]]:
    """Every station registered as of the moment in the tally's scope, reported or not:
    (station, region, registered voters)."""
    return db.execute("SELECT station, region, registered_voters " + STATIONS_IN_SCOPE,
                      counting.params)


def counted_stations(db: Any, counting: Counting) -> Iterator[CountedStation]:
    """Every station the tally counts, with the figures of its effective protocol: what the
    forensics and the estimate look at station by station. The simple stations are read
    straight from their one protocol (an index range, no window over the night), the
    complex ones by the exact query."""
    if not running.available(db):
        return _counted_rows(db, counting)
    simple = db.execute(counted_protocols(simple=True) + _COUNTED_COLUMNS, counting.params)
    return chain(simple, _counted_rows(db, counting, among=running.complex_stations()))


def _counted_rows(db: Any, counting: Counting, among: str | None = None
                  ) -> Iterator[CountedStation]:
    return db.execute(counted_protocols(among=among) + _COUNTED_COLUMNS, counting.params)


def tally(
    db: Any,
    election: Election,
    moment: Moment,
    *,
    stage: str = "preliminary",
    reporter: str | None = None,
    scope: str | None = None,
) -> dict[str, Any]:
    counting = counting_at(db, election, moment, stage=stage, reporter=reporter, scope=scope)
    reporter, params, exclusions = counting.reporter, counting.params, counting.exclusions
    reporting = cast = invalid = registered = cast_where_registered = 0
    sums: dict[str, int] = {}
    stations_total: int | None = None
    among = None
    if running.available(db):
        # The running totals answer for every simple station (less those a final tally
        # leaves out); the exact query only runs over the few whose protocols were
        # replaced, superseded or doubled.
        reporting, cast, invalid, registered, cast_where_registered, steps = running.totals(
            db, election.id, reporter, scope, params["as_of"], params["known_at"],
            excluded=sorted(exclusions.stations))
        sums = {choice: count for choice, (count, naming) in steps.items() if naming}
        stations_total = running.stations_total(db, election.id, scope, params["as_of"],
                                                params["known_at"])
        among = running.complex_stations()
    # One pass over the counted protocols; summing their vote maps here is faster than
    # SQLite summing one row per (protocol, choice).
    votes_of = None
    for _, voters, _, ballots, spoilt, _, votes_json in _counted_rows(db, counting, among):
        reporting += 1
        cast += ballots
        invalid += spoilt
        if voters is not None:  # imported datasets may not know a station's electorate
            registered += voters
            cast_where_registered += ballots
        votes_of = votes_of or vote_maps()
        for choice, count in votes_of(votes_json).items():
            sums[choice] = sums.get(choice, 0) + count
    order = [choice for choice, _, _ in election.choices]
    # Every defined choice, 0 until a counted protocol gives it votes: one shape for clients.
    votes = {choice: sums.get(choice, 0) for choice in order}
    if stations_total is None:
        stations_total = db.execute("SELECT COUNT(*) " + STATIONS_IN_SCOPE, params).fetchone()[0]
    valid = sum(votes.values())
    certified = _final_announcement(db, election, moment) is not None
    defined = _defined(db, election, moment)
    # Before its definition an election has no threshold to pass (0 of 0 votes is not one).
    passing = passing_choices(votes, order, election_threshold(
        election, valid_votes=valid, ballots_cast=cast)) if defined else []
    result: dict[str, Any] = {
        "election": election.id,
        "stage": stage,
        "reporter": reporter,
        "scope": scope or "national",
        **moment.describe(),
        "votes": votes,
        "names": election.names,
        "shares": {c: round(100 * v / valid, 2) if valid else 0.0 for c, v in votes.items()},
        "stations_reporting": reporting,
        "stations_total": stations_total,
        "registered_voters": registered,
        "ballots_cast": cast,
        "turnout_pct": round(100 * cast_where_registered / registered, 2) if registered else None,
        "valid_votes": valid,
        "invalid": invalid,
        "threshold_pct": election.threshold_pct,
        "threshold_base": election.threshold_base,
        "passing": passing,
        "status": _status(stage, reporting, stations_total, certified, exclusions)
        if defined else NOT_DEFINED,
        "certified": certified,
        "contested": sorted(exclusions.contested),
        "annulled": sorted(exclusions.annulled),
        "awaiting_recount": sorted(exclusions.awaiting_recount),
        "announced": _announced(db, election, moment, stage, scope, votes),
    }
    return result


def election_threshold(election: Election, *, valid_votes: int, ballots_cast: int) -> Threshold:
    return threshold(election.threshold_pct, election.threshold_base, valid_votes=valid_votes,
                     ballots_cast=ballots_cast)


def seats(db: Any, election: Election, moment: Moment, **options: Any) -> dict[str, Any]:
    """The seat allocation of a tally, by the election's method and threshold."""
    counted = tally(db, election, moment, **options)
    order = [choice for choice, _, _ in election.choices]
    allocation = allocate(
        counted["votes"], election.seats, election.method, order=order,
        threshold=election_threshold(election, valid_votes=counted["valid_votes"],
                                     ballots_cast=counted["ballots_cast"]),
    )
    if counted["status"] == NOT_DEFINED:
        allocation = Allocation(dict.fromkeys(order, 0), [], election.method,
                                allocation.threshold_votes, [])
    return {
        "election": election.id,
        "stage": counted["stage"],
        "reporter": counted["reporter"],
        "scope": counted["scope"],
        "as_of": counted["as_of"],
        "known_at": counted["known_at"],
        "method": election.method,
        "seats_total": election.seats,
        "seats": allocation.seats,
        "names": election.names,
        "votes": counted["votes"],
        "threshold_pct": election.threshold_pct,
        "threshold_base": election.threshold_base,
        # A float for compatibility; the exact value as text, and the whole votes that pass
        # (109.2 is not 109: a party with 109 votes fails).
        "threshold_votes": float(allocation.threshold_votes),
        "threshold_votes_exact": decimal_text(allocation.threshold_votes),
        "votes_to_pass": math.ceil(allocation.threshold_votes),
        "passing": allocation.passing,
        "ties": allocation.ties,
        "status": counted["status"],
        "stations_reporting": counted["stations_reporting"],
        "stations_total": counted["stations_total"],
    }


NOT_DEFINED = "not yet defined"


def _defined(db: Any, election: Election, moment: Moment) -> bool:
    """Whether the election's definition is visible at ``moment``."""
    return db.execute(
        f"SELECT 1 FROM elections WHERE election = :election AND {visible()}",
        {"election": election.id, **moment.bounds()},
    ).fetchone() is not None


def final_exclusions(
    db: Any, election: Election, moment: Moment, params: dict[str, Any]
) -> Exclusions:
    """Which stations the final tally must leave out as of the moment, and why."""
    appeals = db.execute(
        f"SELECT appeal, stations FROM appeals WHERE election = :election AND {visible()} "
        "ORDER BY position", params
    ).fetchall()
    latest = {appeal: (decision, remedy, stations, occurred)
              for appeal, decision, remedy, stations, occurred, _ in latest_decisions(db, params)}
    contested: dict[str, list[str]] = {}
    annulled: dict[str, str] = {}
    recount: dict[str, tuple[str, str]] = {}  # station -> (appeal, decided at)
    for appeal, stations_json in appeals:
        named = json.loads(stations_json or "[]")
        if appeal not in latest:
            for station in named:
                contested.setdefault(station, []).append(appeal)
            continue
        decision, remedy, decided_json, decided_at = latest[appeal]
        if decision not in ("upheld", "partially_upheld"):
            continue
        targets = json.loads(decided_json) if decided_json else None
        for station in targets or named:
            if remedy == "annul":
                annulled[station] = appeal
            elif remedy == "recount" and decided_at > recount.get(station, ("", ""))[1]:
                # Two recount orders for one station: the later one is what a recount answers.
                recount[station] = (appeal, decided_at)
    awaiting = _awaiting_recount(db, params, recount)
    return Exclusions(contested, annulled, awaiting)


def latest_decisions(db: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The decision that stands for each visible appeal: its latest visible one (by
    ``occurred_at``, ties by position). Rows: appeal, decision, remedy, stations (JSON),
    occurred_at, position."""
    latest: dict[str, tuple[Any, ...]] = {}
    for row in db.execute(
        "SELECT appeal, decision, remedy, stations, occurred_at, position FROM decisions "
        f"WHERE election = :election AND {visible()} ORDER BY occurred_at, position",
        params,
    ):
        latest[row[0]] = row
    return list(latest.values())


def announced_minus_computed(announced: dict[str, int], computed: dict[str, int]) -> dict[str, int]:
    """Per choice, announced votes less the votes the ledger's protocols add up to, where
    they differ: the discrepancy an observer looks for."""
    choices = list(dict.fromkeys([*announced, *computed]))
    return {c: announced.get(c, 0) - computed.get(c, 0) for c in choices
            if announced.get(c, 0) != computed.get(c, 0)}


def _awaiting_recount(
    db: Any, params: dict[str, Any], recount: dict[str, tuple[str, str]]
) -> dict[str, str]:
    """Recounted stations count again only once a superseding protocol dated after the
    decision is visible."""
    if not recount:
        return {}
    effective = {
        station: (occurred, supersedes)
        for station, occurred, supersedes in db.execute(
            COUNTED + "SELECT station, occurred_at, supersedes FROM in_scope "
            "WHERE station IN (SELECT value FROM json_each(:only))",
            {**params, "scope": None, "only": json.dumps(sorted(recount))},
        )
    }
    awaiting = {}
    for station, (appeal, decided_at) in recount.items():
        occurred, supersedes = effective.get(station, (None, None))
        if supersedes is None or occurred is None or occurred <= decided_at:
            awaiting[station] = appeal
    return awaiting


def _final_announcement(db: Any, election: Election, moment: Moment) -> Any:
    return db.execute(
        "SELECT position FROM announcements WHERE election = :election AND authority = :authority "
        f"AND stage = 'final' AND scope = 'national' AND {visible()} "
        "ORDER BY occurred_at DESC, position DESC LIMIT 1",
        {"election": election.id, "authority": election.authority, **moment.bounds()},
    ).fetchone()


def _announced(
    db: Any, election: Election, moment: Moment, stage: str, scope: str | None,
    computed: dict[str, int],
) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT votes, occurred_at, turnout_pct FROM announcements WHERE election = :election "
        f"AND authority = :authority AND stage = :stage AND scope = :scope AND {visible()} "
        "ORDER BY occurred_at DESC, position DESC LIMIT 1",
        {"election": election.id, "authority": election.authority, "stage": stage,
         "scope": scope or "national", **moment.bounds()},
    ).fetchone()
    if row is None:
        return None
    announced = json.loads(row[0])
    return {
        "occurred_at": row[1],
        "votes": announced,
        "turnout_pct": row[2],
        "difference": announced_minus_computed(announced, computed),
    }


def _status(
    stage: str, reporting: int, total: int, certified: bool, exclusions: Exclusions
) -> str:
    if stage == "final" and certified:
        return "certified"
    if stage == "final" and (exclusions.contested or exclusions.awaiting_recount):
        return "contested"
    if reporting == 0:
        return "no results"
    return "complete" if reporting >= total else "partial"
