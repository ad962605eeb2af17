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

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from operator import add
from typing import Any

from projections.codec import sorted_json, vote_maps

REGISTRY = ""  # the reporter under which station registrations are stepped
NATIONAL = ""  # the scope of the whole election
# Bucket widths, as prefixes of a fixed-width UTC stamp 'YYYY-MM-DDTHH:MM:SS.ffffffZ'.
LEVELS = (("day", 10), ("hour", 13), ("minute", 16), ("exact", 27))


# One step's figures, as one flat vector (so that adding two is one C-level map): stations,
# ballots cast, invalid, registered voters, ballots cast where the registered voters are
# known, then per choice of the election (in ballot order) its votes and the number of
# protocols naming it. The count tells a choice no counted protocol names (absent from the
# tally) from one whose votes add up to 0. A stored step keeps the five scalars as columns
# and the per-choice part as one JSON array (the ``votes`` column), in the same order.
SCALARS = 5


class Layouts(dict[str, dict[str, int]]):
    """Per election, each choice's place in a figures vector (from the ``choices`` table)."""

    def __init__(self, db: Any) -> None:
        super().__init__()
        self._db = db
        self._stations: dict[str, list[int]] = {}

    def __missing__(self, election: str) -> dict[str, int]:
        choices = [c for (c,) in self._db.execute(
            "SELECT choice FROM choices WHERE election = ? ORDER BY ballot_order", (election,))]
        self[election] = layout = {c: SCALARS + 2 * i for i, c in enumerate(choices)}
        return layout

    def vector(self, election: str, sign: int, cast: int, invalid: int,
               registered: int | None, votes: dict[str, int]) -> list[int] | None:
        """A protocol's figures; None if it names a choice the election does not have."""
        layout = self[election]
        figures = [0] * (SCALARS + 2 * len(layout))
        figures[0], figures[1], figures[2] = sign, sign * cast, sign * invalid
        if registered is not None:
            figures[3], figures[4] = sign * registered, sign * cast
        for choice, count in votes.items():
            place = layout.get(choice)
            if place is None:
                return None
            figures[place] = sign * count
            figures[place + 1] = sign
        return figures

    def station(self, election: str) -> list[int]:
        """One station's registration as figures (shared: vectors are never changed in
        place, every sum is a new list)."""
        figures = self._stations.get(election)
        if figures is None:
            figures = [0] * (SCALARS + 2 * len(self[election]))
            figures[0] = 1
            self._stations[election] = figures
        return figures

    def decode(self, election: str, row: Sequence[Any]) -> list[int]:
        """A stored step row (five figures and the per-choice array) as a vector."""
        return [*row[:SCALARS], *json.loads(row[SCALARS])]

    @staticmethod
    def encode(election: str, figures: list[int]) -> tuple[Any, ...] | None:
        """The stored row of a vector; None when it holds nothing (a step added and taken
        out again leaves no row, as a rebuild would)."""
        if not any(figures):
            return None
        return (*figures[:SCALARS], sorted_json()(figures[SCALARS:]).decode())


def _scopes(region: str | None, district: str | None) -> list[str]:
    scopes = [NATIONAL]
    if region is not None:
        scopes.append(region)
    if district is not None and district != region:
        scopes.append(district)
    return scopes


def rollup(entries: Iterable[tuple[str, str, str, str, list[int]]]
           ) -> Iterator[tuple[tuple[str, str, str, str, str], list[int]]]:
    """Exact steps (election, reporter, scope, at, figures), in order of ``at``, summed into
    the buckets of every level: yields ((election, reporter, scope, level, bucket), figures),
    each bucket once. Holds one open bucket per level and series, so memory stays flat.

    Each step is added once, into its exact stamp; a bucket, when it closes, is added into
    the open bucket of the next coarser level (an exact stamp into its minute, a minute into
    its hour, ...), so a step costs one vector sum, not one per level."""
    widths = [width for _, width in LEVELS]
    names = [level for level, _ in LEVELS]
    finest = len(LEVELS) - 1
    sums: list[dict[tuple[str, str, str], list[int]]] = [{} for _ in LEVELS]
    exact = sums[finest]
    current: list[str] = []

    def close(level: int) -> Iterator[tuple[tuple[str, str, str, str, str], list[int]]]:
        coarser = sums[level - 1] if level else None
        for series, total in sums[level].items():
            yield (*series, names[level], current[level]), total
            if coarser is not None:
                held = coarser.get(series)
                coarser[series] = total if held is None else list(map(add, held, total))
        sums[level].clear()

    last_at = None
    for election, reporter, scope, at, figures in entries:
        if at != last_at:
            if last_at is not None:
                changed = next(i for i, w in enumerate(widths) if at[:w] != last_at[:w])
                for level in range(finest, changed - 1, -1):
                    yield from close(level)
            last_at = at
            current = [at[:w] for w in widths]
        series = (election, reporter, scope)
        held = exact.get(series)
        exact[series] = figures if held is None else list(map(add, held, figures))
    if last_at is not None:
        for level in range(finest, -1, -1):
            yield from close(level)


class Steps:
    """Step deltas of one page, aggregated before they are merged into the stored ones."""

    def __init__(self, layouts: Layouts) -> None:
        self.layouts = layouts
        self._exact: list[tuple[str, str, str, str, list[int]]] = []

    def add(self, election: str, reporter: str, at: str, region: str | None,
            district: str | None, figures: list[int]) -> None:
        for scope in _scopes(region, district):
            self._exact.append((election, reporter, scope, at, figures))

    def buckets(self) -> dict[tuple, list[int]]:
        out: dict[tuple, list[int]] = {}
        for key, figures in rollup(sorted(self._exact, key=lambda e: e[3])):
            held = out.get(key)
            out[key] = figures if held is None else list(map(add, held, figures))
        return out


_INSERT = ("INSERT OR REPLACE INTO tally_steps (election, reporter, scope, level, bucket, "
           "stations, ballots_cast, invalid, registered_voters, cast_where_registered, votes) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?)")


def write(connection: Any, steps: Steps) -> None:
    """Add a page's steps to the stored ones (read, merge, write back by key)."""
    layouts = steps.layouts
    buckets = steps.buckets()
    by_series: dict[tuple, list[str]] = defaultdict(list)
    for election, reporter, scope, level, bucket in buckets:
        by_series[(election, reporter, scope, level)].append(bucket)
    for (election, reporter, scope, level), names in by_series.items():
        for row in connection.execute(
            "SELECT bucket, stations, ballots_cast, invalid, registered_voters, "
            "cast_where_registered, votes FROM tally_steps WHERE election = ? AND reporter = ? "
            "AND scope = ? AND level = ? AND bucket IN (SELECT value FROM json_each(?))",
            (election, reporter, scope, level, sorted_json()(names).decode()),
        ):
            key = (election, reporter, scope, level, row[0])
            buckets[key] = list(map(add, buckets[key], layouts.decode(election, row[1:])))
    rows, gone = [], []
    for key, figures in buckets.items():
        stored = layouts.encode(key[0], figures)
        if stored is None:
            gone.append(key)
        else:
            rows.append((*key, *stored))
    connection.executemany(_INSERT, rows)
    connection.executemany(
        "DELETE FROM tally_steps WHERE election = ? AND reporter = ? AND scope = ? "
        "AND level = ? AND bucket = ?", gone)


def fold_page(connection: Any, rows: dict[str, list[tuple]]) -> None:
    """Bring the steps and the complex groups up to date with one page of new rows (already
    inserted into ``stations`` and ``protocols``, whose indexes exist)."""
    steps = Steps(Layouts(connection))
    for election, _, region, district, _, occurred, *_ in rows.get("stations", ()):
        steps.add(election, REGISTRY, occurred, region, district,
                  steps.layouts.station(election))
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
        ids = sorted_json()(sorted(stations)).decode()
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
            if (len(protocols) == 1 and station is not None and protocols[0][5] is None
                    and protocols[0][1] not in superseded
                    and _step(steps, 1, election, protocols[0], station)):
                continue
            turned_complex.append((election, *group))
            if len(old) == 1 and station is not None:
                # It stepped while it was simple: that step comes out again.
                _step(steps, -1, election, old[0], station)
        connection.executemany(
            "INSERT OR IGNORE INTO tally_complex (election, station, reporter) VALUES (?,?,?)",
            turned_complex,
        )


def _step(steps: Steps, sign: int, election: str, protocol: tuple, station: tuple) -> bool:
    """Add (sign 1) or take out (-1) a simple protocol's step; False if it cannot step."""
    occurred, region, district, voters = station
    figures = steps.layouts.vector(election, sign, protocol[6], protocol[7], voters,
                                   vote_maps()(protocol[8]))
    if figures is None:
        return False
    steps.add(election, protocol[3], max(protocol[4], occurred), region, district, figures)
    return True


def build(connection: Any) -> None:
    """Compute the steps and complex groups of a whole freshly loaded read model: one pass
    over the simple protocols and the stations in order of the moment they count from,
    rolled up into buckets as it goes (the rebuild loads without indexes, so page-by-page
    folding would scan; and memory stays flat at any size)."""
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
    layouts = Layouts(connection)
    unknown_choice: list[tuple[str, str, str]] = []

    def exact() -> Iterator[tuple[str, str, str, str, list[int]]]:
        for election, station, reporter, at, region, district, voters, cast, invalid, votes \
                in connection.execute(f"""
            SELECT p.election, p.station, p.reported_by, max(p.occurred_at, s.occurred_at) AS at,
                   s.region, s.district, s.registered_voters, p.ballots_cast, p.invalid, p.votes
            FROM protocols p JOIN stations s ON s.election = p.election AND s.station = p.station
            WHERE NOT EXISTS (SELECT 1 FROM tally_complex c WHERE c.election = p.election
                              AND c.station = p.station AND c.reporter = p.reported_by)
            UNION ALL
            SELECT election, station, '{REGISTRY}', occurred_at, region, district,
                   NULL, NULL, NULL, NULL FROM stations
            ORDER BY at"""):
            if votes is None:
                figures = layouts.station(election)
            else:
                found = layouts.vector(election, 1, cast, invalid, voters, vote_maps()(votes))
                if found is None:
                    unknown_choice.append((election, station, reporter))
                    continue
                figures = found
            for scope in _scopes(region, district):
                yield election, reporter, scope, at, figures

    batch: list[tuple] = []
    for key, figures in rollup(exact()):
        stored = layouts.encode(key[0], figures)
        if stored is not None:
            batch.append((*key, *stored))
        if len(batch) >= 10_000:
            connection.executemany(_INSERT, batch)
            batch = []
    connection.executemany(_INSERT, batch)
    connection.executemany(
        "INSERT OR IGNORE INTO tally_complex (election, station, reporter) VALUES (?,?,?)",
        unknown_choice)
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


def totals(db: Any, election: str, reporter: str, scope: str | None,
           as_of: str) -> tuple[int, int, int, int, int, dict[str, tuple[int, int]]]:
    """The figures of every step up to ``as_of`` (inclusive), read in a few indexed ranges:
    stations, ballots cast, invalid, registered voters, ballots cast where registered voters
    are known, and per choice (votes, protocols naming it)."""
    layouts = Layouts(db)
    figures = [0] * (SCALARS + 2 * len(layouts[election]))
    previous = ""
    for level, width in LEVELS:
        # Whole buckets of this width before the one holding as_of, after the coarser
        # bucket holding it; the finest level also takes the stamp equal to as_of.
        upper = as_of[:width]
        for row in db.execute(
            "SELECT stations, ballots_cast, invalid, registered_voters, cast_where_registered, "
            "votes FROM tally_steps WHERE election = ? AND reporter = ? AND scope = ? "
            f"AND level = ? AND bucket > ? AND bucket {'<=' if level == 'exact' else '<'} ?",
            (election, reporter, scope or NATIONAL, level, previous, upper),
        ):
            figures = list(map(add, figures, layouts.decode(election, row)))
        previous = upper
    votes = {c: (figures[i], figures[i + 1]) for c, i in layouts[election].items()}
    return (*figures[:SCALARS], votes)  # type: ignore[return-value]


def complex_stations() -> str:
    """SQL: the stations of ``:election`` whose ``:reporter`` protocols are complex."""
    return ("SELECT station FROM tally_complex WHERE election = :election "
            "AND reporter = :reporter")


def stations_total(db: Any, election: str, scope: str | None, as_of: str) -> int:
    return totals(db, election, REGISTRY, scope, as_of)[0]

