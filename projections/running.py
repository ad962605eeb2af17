"""Running totals, read: the tally as of any moment of the night as a lookup, not a scan.

projections/steps.py keeps, at append time, what each simple protocol (and each station's
registration) adds to the tally and from when. Here they are summed:

- on present knowledge, from ``tally_steps``: the buckets before ``as_of`` at four widths;
- as known at an earlier ledger time, from ``tally_known_steps``: the same buckets, but only
  of the blocks of log positions the ledger had wholly recorded by then; what lies in the
  one partly recorded block, or in the minute of ``as_of``, is read exactly from the
  protocols (at most one block and one minute of them).

Either way the complex stations are left to the exact query (projections/tally.py decides).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from operator import add
from typing import Any

from projections.codec import vote_maps
from projections.moment import visible
from projections.steps import (
    KNOWN_LEVELS,
    LEVELS,
    NATIONAL,
    REGISTRY,
    SCALARS,
    STEP_COLUMNS,
    Figures,
    Layouts,
    block_of,
    first_position,
)

Totals = tuple[int, int, int, int, int, dict[str, tuple[int, int]]]


def available(db: Any) -> bool:
    """True when the read models keep steps (any read models of the current shape do)."""
    try:
        db.execute("SELECT 1 FROM tally_batches LIMIT 1").fetchall()
    except sqlite3.Error:  # read models of an older shape: no steps to answer from
        return False
    return True


def present_knowledge(db: Any, known_at: str) -> bool:
    """True when ``known_at`` is at or after every recorded event: the steps then answer."""
    try:
        row = db.execute("SELECT value FROM tally_known WHERE name = 'recorded_at'").fetchone()
    except sqlite3.Error:  # read models of an older shape: no steps to answer from
        return False
    return row is not None and row[0] is not None and known_at >= row[0]


def totals(db: Any, election: str, reporter: str, scope: str | None, as_of: str,
           known_at: str, excluded: Sequence[str] = ()) -> Totals:
    """The figures of every simple step visible at (``as_of``, ``known_at``), less those of
    the ``excluded`` stations (a final tally's): stations, ballots cast, invalid, registered
    voters, ballots cast where registered voters are known, and per choice (votes,
    protocols naming it)."""
    layouts = Layouts(db)
    if present_knowledge(db, known_at):
        figures = _present(db, layouts, election, reporter, scope or NATIONAL, as_of)
    else:
        figures = _known(db, layouts, election, reporter, scope, as_of, known_at)
    if excluded:
        votes_of = vote_maps()
        for cast, invalid, voters, votes in db.execute(EXCLUDED_STEPS, {
                "election": election, "reporter": reporter, "scope": scope, "as_of": as_of,
                "known_at": known_at, "excluded": json.dumps(sorted(excluded))}):
            found = layouts.vector(election, -1, cast, invalid, voters, votes_of(votes))
            assert found is not None, "a protocol naming an unknown choice is complex"
            figures = list(map(add, figures, found))
    votes = {c: (figures[i], figures[i + 1]) for c, i in layouts[election].items()}
    return (*figures[:SCALARS], votes)  # type: ignore[return-value]


def stations_total(db: Any, election: str, scope: str | None, as_of: str,
                   known_at: str) -> int:
    return totals(db, election, REGISTRY, scope, as_of, known_at)[0]


def complex_stations() -> str:
    """SQL: the stations of ``:election`` whose ``:reporter`` protocols are complex."""
    return ("SELECT station FROM tally_complex WHERE election = :election "
            "AND reporter = :reporter")


def simple_effective() -> str:
    """SQL ``WITH`` clause ending in ``effective``, as ``effective.effective_protocols``
    writes it, but for the simple stations only: a simple (station, reporter) has one
    protocol that nothing supersedes (projections/steps.py), so that protocol, once visible,
    is the effective one. Reading it needs an index range, not a window over the night."""
    return f"""
WITH effective AS (
    SELECT position, station, reported_by, occurred_at, supersedes, event_id
    FROM protocols
    WHERE election = :election AND reported_by = :reporter AND {visible()}
      AND station NOT IN ({complex_stations()})
)"""


def _present(db: Any, layouts: Layouts, election: str, reporter: str, scope: str,
             as_of: str) -> Figures:
    return _buckets_before(db, layouts, as_of, "tally_steps", LEVELS,
                           "election = ? AND reporter = ? AND scope = ?",
                           (election, reporter, scope))


def _buckets_before(db: Any, layouts: Layouts, as_of: str, table: str,
                    levels: Sequence[tuple[str, int]], series: str,
                    key: tuple[Any, ...]) -> Figures:
    """The sum of the stored steps of one series (``series`` SQL binding ``key``) up to
    ``as_of``: at each level, the whole buckets before the one holding ``as_of`` and after the
    coarser bucket holding it; the exact level also takes the stamp equal to ``as_of``."""
    figures = layouts.zero(key[0])
    previous = ""
    for level, width in levels:
        upper = as_of[:width]
        for row in db.execute(
            f"SELECT {STEP_COLUMNS} FROM {table} WHERE {series} AND level = ? AND bucket > ? "
            f"AND bucket {'<=' if level == 'exact' else '<'} ?",
            (*key, level, previous, upper),
        ):
            figures = list(map(add, figures, layouts.decode(key[0], row)))
        previous = upper
    return figures


def known_position(db: Any, known_at: str) -> int:
    """The last log position the ledger had recorded by ``known_at`` (0: none)."""
    row = db.execute("SELECT MAX(position) FROM tally_batches WHERE recorded_at <= ?",
                     (known_at,)).fetchone()
    return row[0] or 0


def _known(db: Any, layouts: Layouts, election: str, reporter: str, scope: str | None,
           as_of: str, known_at: str) -> Figures:
    known = known_position(db, known_at)
    block = block_of(known)
    # Whole blocks known by then; at the finest level, whole minutes before as_of's.
    figures = _buckets_before(db, layouts, as_of, "tally_known_steps", KNOWN_LEVELS,
                              "election = ? AND reporter = ? AND scope = ? AND block < ?",
                              (election, reporter, scope or NATIONAL, block))
    # The rest, exactly: steps of the partly known block, and steps in the minute of as_of.
    edge = {"election": election, "reporter": reporter, "scope": scope, "as_of": as_of,
            "known": known, "start": first_position(block), "minute": as_of[:16]}
    if reporter == REGISTRY:
        figures[0] += db.execute(EDGE_STATIONS, edge).fetchone()[0]
        return figures
    votes_of = vote_maps()
    for cast, invalid, voters, votes in db.execute(EDGE_PROTOCOLS, edge):
        found = layouts.vector(election, 1, cast, invalid, voters, votes_of(votes))
        assert found is not None, "a protocol naming an unknown choice is complex"
        figures = list(map(add, figures, found))
    return figures


# A simple step counts from max(protocol, station).occurred_at and is known from the
# protocol's position (its station is always logged before it). The candidates are found by
# index: the protocols of the partly known block by position, those of the minute by
# occurred_at, and those of stations registered (in valid time) within the minute; the
# CROSS JOINs keep SQLite from scanning every protocol and probing the candidates instead.
EDGE_PROTOCOLS = """
WITH candidates(position) AS (
    SELECT position FROM protocols WHERE position >= :start AND position <= :known
    UNION
    SELECT position FROM protocols WHERE election = :election AND reported_by = :reporter
        AND occurred_at >= :minute AND occurred_at <= :as_of
    UNION
    SELECT p.position FROM stations s
    JOIN protocols p ON p.election = s.election AND p.station = s.station
    WHERE s.election = :election AND s.occurred_at >= :minute AND s.occurred_at <= :as_of
)
SELECT p.ballots_cast, p.invalid, s.registered_voters, p.votes
FROM candidates CROSS JOIN protocols p ON p.position = candidates.position
CROSS JOIN stations s ON s.election = p.election AND s.station = p.station
WHERE p.election = :election AND p.reported_by = :reporter AND p.position <= :known
  AND max(p.occurred_at, s.occurred_at) <= :as_of
  AND (p.position >= :start OR max(p.occurred_at, s.occurred_at) >= :minute)
  AND (:scope IS NULL OR s.region = :scope OR s.district = :scope)
  AND NOT EXISTS (SELECT 1 FROM tally_complex c WHERE c.election = p.election
                  AND c.station = p.station AND c.reporter = p.reported_by)
"""

# The block's registrations by position in ``events`` (naming the election there would make
# SQLite read them by its election index, all of them); the row that counts is the station's
# own, checked below.
# The simple steps of the excluded stations that the sums above counted: a step is visible
# when its protocol and station both are (recorded_at follows log position, so this is the
# same as the blocks' position bound).
EXCLUDED_STEPS = """
SELECT p.ballots_cast, p.invalid, s.registered_voters, p.votes
FROM json_each(:excluded) AS x
CROSS JOIN stations s ON s.election = :election AND s.station = x.value
CROSS JOIN protocols p ON p.election = s.election AND p.station = s.station
WHERE p.reported_by = :reporter
  AND max(p.occurred_at, s.occurred_at) <= :as_of
  AND p.recorded_at <= :known_at AND s.recorded_at <= :known_at
  AND (:scope IS NULL OR s.region = :scope OR s.district = :scope)
  AND NOT EXISTS (SELECT 1 FROM tally_complex c WHERE c.election = p.election
                  AND c.station = p.station AND c.reporter = p.reported_by)
"""

EDGE_STATIONS = """
WITH candidates(station) AS (
    SELECT station FROM events WHERE position >= :start AND position <= :known
        AND type = 'StationRegistered'
    UNION
    SELECT station FROM stations WHERE election = :election
        AND occurred_at >= :minute AND occurred_at <= :as_of
)
SELECT COUNT(*) FROM candidates
CROSS JOIN stations s ON s.election = :election AND s.station = candidates.station
WHERE s.position <= :known AND s.occurred_at <= :as_of
  AND (s.position >= :start OR s.occurred_at >= :minute)
  AND (:scope IS NULL OR s.region = :scope OR s.district = :scope)
"""
