"""Running totals: the tally as of any moment of the night as a lookup, not a scan.

The effective protocol of a (station, reporter) that has exactly one protocol, which no
protocol supersedes, is that protocol from the moment both it and its station are visible,
and never anything else. Such a *simple* protocol only adds a step to the tally at
``counts_from = max(protocol.occurred_at, station.occurred_at)``. Its figures are kept, at
append time, as step totals per (election, reporter, scope) in buckets of four widths (day,
hour, minute, exact stamp), so that the sum of every step up to T reads at most a few days +
24 hours + 60 minutes + the stamps of one minute.

Every other (station, reporter) — a second protocol, a recount that supersedes, a protocol
superseded — is *complex*: it is listed in ``tally_complex``, kept out of the steps and
counted by the exact effective-protocol query, restricted to those stations. Once complex a
group stays complex (the log only grows), so a group's step is added once and, if it turns
complex, taken out once. The stations registered (``stations_total``) are steps too, under
the reporter ``''``.

The steps hold present knowledge only: a question with ``--known-at`` earlier than the last
recorded event is answered by the full query (projections/tally.py decides).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec

REGISTRY = ""  # the reporter under which station registrations are stepped
NATIONAL = ""  # the scope of the whole election
# Bucket widths, as prefixes of a fixed-width UTC stamp 'YYYY-MM-DDTHH:MM:SS.ffffffZ'.
LEVELS = (("day", 10), ("hour", 13), ("minute", 16), ("exact", 27))

_votes = msgspec.json.Decoder(dict[str, int]).decode
# Votes of a step: choice -> [votes, protocols naming the choice]. The count tells a choice
# no counted protocol names (absent from the tally) from one whose votes add up to 0.
_step_votes = msgspec.json.Decoder(dict[str, tuple[int, int]]).decode
_json = msgspec.json.Encoder(order="sorted")

# One step's figures: stations, ballots cast, invalid, registered voters, ballots cast where
# the registered voters are known, votes per choice ([votes, protocols naming it]).
Figures = list[Any]


def _empty() -> Figures:
    return [0, 0, 0, 0, 0, {}]


def _add(into: Figures, stations: int, cast: int, invalid: int, registered: int,
         cast_where_registered: int, votes: dict[str, Any]) -> None:
    into[0] += stations
    into[1] += cast
    into[2] += invalid
    into[3] += registered
    into[4] += cast_where_registered
    sums = into[5]
    for choice, (count, naming) in votes.items():
        if choice in sums:
            sums[choice][0] += count
            sums[choice][1] += naming
        else:
            sums[choice] = [count, naming]


class Steps:
    """Step deltas of one page (or one rebuild), aggregated before they are written."""

    def __init__(self) -> None:
        # (election, reporter, counts_from, region, district) -> figures
        self._exact: dict[tuple, Figures] = defaultdict(_empty)

    def protocol(self, sign: int, election: str, reporter: str, counts_from: str,
                 region: str | None, district: str | None, registered: int | None,
                 cast: int, invalid: int, votes: dict[str, int]) -> None:
        known = registered is not None
        _add(self._exact[(election, reporter, counts_from, region, district)],
             sign, sign * cast, sign * invalid, sign * (registered or 0),
             sign * cast if known else 0, {c: (sign * v, sign) for c, v in votes.items()})

    def station(self, election: str, counts_from: str, region: str | None,
                district: str | None) -> None:
        self._exact[(election, REGISTRY, counts_from, region, district)][0] += 1

    def buckets(self) -> dict[tuple, Figures]:
        """(election, reporter, scope, level, bucket) -> figures, every scope and level."""
        out: dict[tuple, Figures] = defaultdict(_empty)
        for (election, reporter, at, region, district), figures in self._exact.items():
            scopes = [NATIONAL]
            if region is not None:
                scopes.append(region)
            if district is not None and district != region:
                scopes.append(district)
            for scope in scopes:
                for level, width in LEVELS:
                    _add(out[(election, reporter, scope, level, at[:width])], *figures)
        return out


def write(connection: Any, steps: Steps) -> None:
    """Add a page's steps to the stored ones (read, merge, write back by key)."""
    buckets = steps.buckets()
    by_series: dict[tuple, list[str]] = defaultdict(list)
    for election, reporter, scope, level, bucket in buckets:
        by_series[(election, reporter, scope, level)].append(bucket)
    for (election, reporter, scope, level), names in by_series.items():
        for row in connection.execute(
            "SELECT bucket, stations, ballots_cast, invalid, registered_voters, "
            "cast_where_registered, votes FROM tally_steps WHERE election = ? AND reporter = ? "
            "AND scope = ? AND level = ? AND bucket IN (SELECT value FROM json_each(?))",
            (election, reporter, scope, level, _json.encode(names).decode()),
        ):
            _add(buckets[(election, reporter, scope, level, row[0])], *row[1:6],
                 _step_votes(row[6]))
    rows, gone = [], []
    for key, figures in buckets.items():
        # A step added and taken out again leaves nothing: the rows then equal a rebuild's.
        votes = {c: n for c, n in figures[5].items() if n != [0, 0]}
        if votes or any(figures[:5]):
            rows.append((*key, *figures[:5], _json.encode(votes).decode()))
        else:
            gone.append(key)
    connection.executemany(
        "INSERT OR REPLACE INTO tally_steps (election, reporter, scope, level, bucket, "
        "stations, ballots_cast, invalid, registered_voters, cast_where_registered, votes) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    connection.executemany(
        "DELETE FROM tally_steps WHERE election = ? AND reporter = ? AND scope = ? "
        "AND level = ? AND bucket = ?", gone)


def fold_page(connection: Any, rows: dict[str, list[tuple]]) -> None:
    """Bring the steps and the complex groups up to date with one page of new rows (already
    inserted into ``stations`` and ``protocols``, whose indexes exist)."""
    steps = Steps()
    for election, _, region, district, _, occurred, *_ in rows.get("stations", ()):
        steps.station(election, occurred, region, district)
    new = rows.get("protocols", ())
    if new:
        _fold_protocols(connection, new, steps)
    write(connection, steps)
    recorded = [row[6] for row in rows.get("events", ())]
    if recorded:
        connection.execute(
            "INSERT INTO tally_known (name, value) VALUES ('recorded_at', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
            (max(recorded),),
        )


def _fold_protocols(connection: Any, new: Sequence[tuple], steps: Steps) -> None:
    new_positions = {row[0] for row in new}
    newly_superseded = {row[14] for row in new if row[14] is not None}
    touched: dict[str, set[str]] = defaultdict(set)  # election -> stations
    for row in new:
        touched[row[2]].add(row[3])
    for election, stations in touched.items():
        ids = _json.encode(sorted(stations)).decode()
        registered = {
            station: (occurred, region, district, voters)
            for station, occurred, region, district, voters in connection.execute(
                "SELECT station, occurred_at, region, district, registered_voters FROM stations "
                "WHERE election = ? AND station IN (SELECT value FROM json_each(?))",
                (election, ids),
            )
        }
        complex_before = set(connection.execute(
            "SELECT station, reporter FROM tally_complex WHERE election = ? "
            "AND station IN (SELECT value FROM json_each(?))", (election, ids)))
        groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
        superseded: set[str] = set()
        for row in connection.execute(
            "SELECT position, event_id, station, reported_by, occurred_at, supersedes, "
            "ballots_cast, invalid, votes FROM protocols WHERE election = ? "
            "AND station IN (SELECT value FROM json_each(?)) ORDER BY position",
            (election, ids),
        ):
            groups[(row[2], row[3])].append(row)
            if row[5] is not None:
                superseded.add(row[5])
        turned_complex = []
        for group, protocols in groups.items():
            if group in complex_before:
                continue
            old = [p for p in protocols if p[0] not in new_positions]
            if len(old) == len(protocols) and not any(p[1] in newly_superseded for p in old):
                continue  # nothing new in this group, nor a recount of one of its protocols
            station = registered.get(group[0])
            simple = (len(protocols) == 1 and station is not None
                      and protocols[0][5] is None and protocols[0][1] not in superseded)
            if simple:
                _step(steps, 1, election, protocols[0], station)
                continue
            turned_complex.append((election, *group))
            if len(old) == 1 and station is not None:
                # It stepped while it was simple: that step comes out again.
                _step(steps, -1, election, old[0], station)
        connection.executemany(
            "INSERT OR IGNORE INTO tally_complex (election, station, reporter) VALUES (?,?,?)",
            turned_complex,
        )


def _step(steps: Steps, sign: int, election: str, protocol: tuple, station: tuple) -> None:
    occurred, region, district, voters = station
    steps.protocol(sign, election, protocol[3], max(protocol[4], occurred), region, district,
                   voters, protocol[6], protocol[7], _votes(protocol[8]))


def build(connection: Any) -> None:
    """Compute the steps and complex groups of a whole freshly loaded read model, set-wise
    (the rebuild loads without indexes, so page-by-page folding would scan)."""
    connection.execute("DELETE FROM tally_steps")
    connection.execute("DELETE FROM tally_complex")
    connection.execute("""
        INSERT OR IGNORE INTO tally_complex (election, station, reporter)
        SELECT election, station, reported_by FROM protocols
        GROUP BY election, station, reported_by HAVING COUNT(*) > 1
        UNION SELECT election, station, reported_by FROM protocols WHERE supersedes IS NOT NULL
        UNION SELECT p.election, p.station, p.reported_by FROM protocols p
              WHERE p.event_id IN (SELECT supersedes FROM protocols WHERE supersedes IS NOT NULL)
        UNION SELECT p.election, p.station, p.reported_by FROM protocols p
              WHERE NOT EXISTS (SELECT 1 FROM stations s
                                WHERE s.election = p.election AND s.station = p.station)
    """)
    steps = Steps()
    for election, region, district, occurred in connection.execute(
        "SELECT election, region, district, occurred_at FROM stations"
    ):
        steps.station(election, occurred, region, district)
    for election, reporter, occurred, cast, invalid, votes, s_occurred, region, district, \
            voters in connection.execute("""
        SELECT p.election, p.reported_by, p.occurred_at, p.ballots_cast, p.invalid, p.votes,
               s.occurred_at, s.region, s.district, s.registered_voters
        FROM protocols p JOIN stations s ON s.election = p.election AND s.station = p.station
        WHERE NOT EXISTS (SELECT 1 FROM tally_complex c WHERE c.election = p.election
                          AND c.station = p.station AND c.reporter = p.reported_by)"""):
        steps.protocol(1, election, reporter, max(occurred, s_occurred), region, district,
                       voters, cast, invalid, _votes(votes))
    write(connection, steps)
    connection.execute("DELETE FROM tally_known")
    connection.execute(
        "INSERT INTO tally_known (name, value) SELECT 'recorded_at', MAX(recorded_at) FROM events "
        "WHERE recorded_at IS NOT NULL")


# -- answering ------------------------------------------------------------------------------

def present_knowledge(db: Any, known_at: str) -> bool:
    """True when ``known_at`` is at or after every recorded event: the steps then answer."""
    try:
        row = db.execute("SELECT value FROM tally_known WHERE name = 'recorded_at'").fetchone()
    except Exception:  # read models of an older shape: no steps to answer from
        return False
    return row is not None and row[0] is not None and known_at >= row[0]


def totals(db: Any, election: str, reporter: str, scope: str | None, as_of: str) -> Figures:
    """The figures of every step up to ``as_of`` (inclusive): a few indexed range reads.
    Votes are choice -> [votes, protocols naming the choice]."""
    figures = _empty()
    bounds = []
    previous = ""
    for level, width in LEVELS:
        # Whole buckets of this width before the one holding as_of, after the coarser
        # bucket holding it; the finest level also takes stamps equal to as_of.
        upper = as_of[:width]
        bounds.append((level, previous, upper, level == "exact"))
        previous = upper
    for level, lower, upper, inclusive in bounds:
        for row in db.execute(
            "SELECT stations, ballots_cast, invalid, registered_voters, cast_where_registered, "
            "votes FROM tally_steps WHERE election = ? AND reporter = ? AND scope = ? "
            f"AND level = ? AND bucket > ? AND bucket {'<=' if inclusive else '<'} ?",
            (election, reporter, scope or NATIONAL, level, lower, upper),
        ):
            _add(figures, *row[:5], _step_votes(row[5]))
    return figures


def complex_stations() -> str:
    """SQL: the stations of ``:election`` whose ``:reporter`` protocols are complex."""
    return ("SELECT station FROM tally_complex WHERE election = :election "
            "AND reporter = :reporter")


def stations_total(db: Any, election: str, scope: str | None, as_of: str) -> int:
    return totals(db, election, REGISTRY, scope, as_of)[0]

