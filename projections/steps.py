"""Tally steps: what each simple protocol adds to the tally, and from when, kept at append time.

The effective protocol of a (station, reporter) that has exactly one protocol, which no
protocol supersedes, is that protocol from the moment both it and its station are visible,
and never anything else. Such a *simple* protocol only adds a step to the tally at
``counts_from = max(protocol.occurred_at, station.occurred_at)``. Its figures are kept as
step totals per (election, reporter, scope) in buckets of four widths (day, hour, minute,
exact stamp), so that the sum of every step up to T reads at most a few days + 24 hours +
60 minutes + the stamps of one minute (``tally_steps``).

For questions about an earlier ledger time (``--known-at``) the same steps are kept a second
time, by the *block* of log positions in which the ledger learnt them (the protocol's
position: its station is always logged before it), at the day, hour and minute widths
(``tally_known_steps``); ``tally_batches`` maps each ``recorded_at`` to the last position
logged then. projections/running.py answers from both.

Every other (station, reporter) — a second protocol, a recount that supersedes, a protocol
superseded — is *complex*: it is listed in ``tally_complex``, kept out of the steps and
counted by the exact effective-protocol query, restricted to those stations. Once complex a
group stays complex (the log only grows), so a group's step is added once and, if it turns
complex, taken out once (from the same block it went into). The stations registered
(``stations_total``) are steps too, under the reporter ``''``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from operator import add
from typing import Any, NamedTuple

from projections.codec import sorted_json, vote_maps
from projections.effective import COMPLEX_GROUPS, counts_alone
from projections.schema import ProtocolRow

REGISTRY = ""  # the reporter under which station registrations are stepped
NATIONAL = ""  # the scope of the whole election
# Bucket widths, as prefixes of a fixed-width UTC stamp 'YYYY-MM-DDTHH:MM:SS.ffffffZ'.
LEVELS = (("day", 10), ("hour", 13), ("minute", 16), ("exact", 27))
KNOWN_LEVELS = LEVELS[:3]  # by ledger time: the last partial minute is read exactly
BLOCK_BITS = 12  # 4,096 log positions per block of ledger time

# One step's figures, as one flat vector (so that adding two is one C-level map): stations,
# ballots cast, invalid, registered voters, ballots cast where the registered voters are
# known, then per choice of the election (in ballot order) its votes and the number of
# protocols naming it. The count tells a choice no counted protocol names (absent from the
# tally) from one whose votes add up to 0. A stored step keeps the five scalars as columns
# and the per-choice part as one JSON array (the ``votes`` column), in the same order.
SCALARS = 5

Figures = list[int]
Closed = tuple[tuple[Any, ...], Figures]  # ((*series, level, bucket), figures)


class Layouts(dict[str, dict[str, int]]):
    """Per election, each choice's place in a figures vector (from the ``choices`` table)."""

    def __init__(self, db: Any) -> None:
        super().__init__()
        self._db = db
        self._stations: dict[str, Figures] = {}

    def __missing__(self, election: str) -> dict[str, int]:
        choices = [c for (c,) in self._db.execute(
            "SELECT choice FROM choices WHERE election = ? ORDER BY ballot_order", (election,))]
        self[election] = layout = {c: SCALARS + 2 * i for i, c in enumerate(choices)}
        return layout

    def zero(self, election: str) -> Figures:
        return [0] * (SCALARS + 2 * len(self[election]))

    def vector(self, election: str, sign: int, cast: int, invalid: int,
               registered: int | None, votes: dict[str, int]) -> Figures | None:
        """A protocol's figures; None if it names a choice the election does not have."""
        layout = self[election]
        figures = self.zero(election)
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

    def station(self, election: str) -> Figures:
        """One station's registration as figures (shared: vectors are never changed in
        place, every sum is a new list)."""
        figures = self._stations.get(election)
        if figures is None:
            figures = self.zero(election)
            figures[0] = 1
            self._stations[election] = figures
        return figures

    def decode(self, election: str, row: Sequence[Any]) -> Figures:
        """A stored step row (five figures and the per-choice array) as a vector."""
        return [*row[:SCALARS], *json.loads(row[SCALARS])]

    @staticmethod
    def encode(election: str, figures: Figures) -> tuple[Any, ...] | None:
        """The stored row of a vector; None when it holds nothing (a step added and taken
        out again leaves no row, as a rebuild would)."""
        if not any(figures):
            return None
        return (*figures[:SCALARS], sorted_json()(figures[SCALARS:]).decode())


def scopes(region: str | None, district: str | None) -> list[str]:
    found = [NATIONAL]
    if region is not None:
        found.append(region)
    if district is not None and district != region:
        found.append(district)
    return found


def block_of(position: int) -> int:
    """The block of ledger time holding log position ``position``."""
    return position >> BLOCK_BITS


def first_position(block: int) -> int:
    return block << BLOCK_BITS


class Rollup:
    """Steps, added in order of ``at``, summed into the buckets of ``levels``; ``add`` and
    ``finish`` return each bucket once, when it closes, keyed (*series, level, bucket).
    Holds one open bucket per level and series, so memory stays flat.

    Each step is added once, into the finest bucket; a bucket, when it closes, is added into
    the open bucket of the next coarser level (an exact stamp into its minute, a minute into
    its hour, ...), so a step costs one vector sum, not one per level."""

    def __init__(self, levels: Sequence[tuple[str, int]] = LEVELS) -> None:
        self._widths = [width for _, width in levels]
        self._names = [name for name, _ in levels]
        self._sums: list[dict[tuple[Any, ...], Figures]] = [{} for _ in levels]
        self._current: list[str] = []
        self._last_at: str | None = None

    def add(self, series: tuple[Any, ...], at: str, figures: Figures) -> list[Closed]:
        closed: list[Closed] = []
        if at != self._last_at:
            last = self._last_at
            if last is not None:
                changed = next((i for i, w in enumerate(self._widths) if at[:w] != last[:w]),
                               None)
                if changed is not None:
                    for level in range(len(self._widths) - 1, changed - 1, -1):
                        self._close(level, closed)
            self._last_at = at
            self._current = [at[:w] for w in self._widths]
        finest = self._sums[-1]
        held = finest.get(series)
        finest[series] = figures if held is None else list(map(add, held, figures))
        return closed

    def finish(self) -> list[Closed]:
        closed: list[Closed] = []
        if self._last_at is not None:
            for level in range(len(self._widths) - 1, -1, -1):
                self._close(level, closed)
        return closed

    def _close(self, level: int, closed: list[Closed]) -> None:
        coarser = self._sums[level - 1] if level else None
        name, bucket = self._names[level], self._current[level]
        for series, total in self._sums[level].items():
            closed.append(((*series, name, bucket), total))
            if coarser is not None:
                held = coarser.get(series)
                coarser[series] = total if held is None else list(map(add, held, total))
        self._sums[level].clear()


class Steps:
    """Step deltas of one page, aggregated before they are merged into the stored ones."""

    def __init__(self, layouts: Layouts) -> None:
        self.layouts = layouts
        self._exact: list[tuple[str, str, str, str, int, Figures]] = []

    def add(self, election: str, reporter: str, at: str, known: int, region: str | None,
            district: str | None, figures: Figures) -> None:
        """A step counting from ``at`` (valid time), known from log position ``known``."""
        for scope in scopes(region, district):
            self._exact.append((election, reporter, scope, at, known, figures))

    def buckets(self) -> tuple[dict[tuple, Figures], dict[tuple, Figures]]:
        """The page's buckets by valid time, and by ledger block and valid time."""
        by_time, by_block = Rollup(LEVELS), Rollup(KNOWN_LEVELS)
        closed: list[Closed] = []
        known_closed: list[Closed] = []
        for election, reporter, scope, at, known, figures in sorted(self._exact,
                                                                   key=lambda e: e[3]):
            closed += by_time.add((election, reporter, scope), at, figures)
            known_closed += by_block.add((election, reporter, scope, block_of(known)), at,
                                         figures)
        closed += by_time.finish()
        known_closed += by_block.finish()
        return _summed(closed), _summed(known_closed)


def _summed(closed: Iterable[Closed]) -> dict[tuple, Figures]:
    out: dict[tuple, Figures] = {}
    for key, figures in closed:
        held = out.get(key)
        out[key] = figures if held is None else list(map(add, held, figures))
    return out


STEP_COLUMNS = ("stations, ballots_cast, invalid, registered_voters, cast_where_registered, "
                "votes")
# Each table's key columns, the last one the bucket.
KEYS = {"tally_steps": ("election", "reporter", "scope", "level", "bucket"),
        "tally_known_steps": ("election", "reporter", "scope", "block", "level", "bucket")}


def _insert(table: str) -> str:
    columns = ", ".join(KEYS[table]) + ", " + STEP_COLUMNS
    marks = ",".join("?" * (len(KEYS[table]) + SCALARS + 1))
    return f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})"


def write(connection: Any, steps: Steps) -> None:
    """Add a page's steps to the stored ones (read, merge, write back by key)."""
    by_time, by_block = steps.buckets()
    _merge(connection, "tally_steps", by_time, steps.layouts)
    _merge(connection, "tally_known_steps", by_block, steps.layouts)


def _merge(connection: Any, table: str, buckets: dict[tuple, Figures], layouts: Layouts) -> None:
    keys = KEYS[table]
    by_series: dict[tuple, list[str]] = defaultdict(list)
    for key in buckets:
        by_series[key[:-1]].append(key[-1])
    where = " AND ".join(f"{column} = ?" for column in keys[:-1])
    for series, names in by_series.items():
        for row in connection.execute(
            f"SELECT bucket, {STEP_COLUMNS} FROM {table} WHERE {where} "
            "AND bucket IN (SELECT value FROM json_each(?))",
            (*series, sorted_json()(names).decode()),
        ):
            key = (*series, row[0])
            buckets[key] = list(map(add, buckets[key], layouts.decode(series[0], row[1:])))
    rows, gone = [], []
    for key, figures in buckets.items():
        stored = layouts.encode(key[0], figures)
        if stored is None:
            gone.append(key)
        else:
            rows.append((*key, *stored))
    connection.executemany(_insert(table), rows)
    connection.executemany(
        f"DELETE FROM {table} WHERE {' AND '.join(f'{c} = ?' for c in keys)}", gone)


class Candidate(NamedTuple):
    """A protocol of a touched station, as the fold reads it back."""

    position: int
    event_id: str
    station: str
    reported_by: str
    occurred_at: str
    supersedes: str | None
    ballots_cast: int
    invalid: int
    votes: str


class Registration(NamedTuple):
    occurred_at: str
    region: str
    district: str | None
    registered_voters: int


def fold_page(connection: Any, rows: dict[str, list[tuple]]) -> None:
    """Bring the steps and the complex groups up to date with one page of new rows (already
    inserted into ``stations`` and ``protocols``, whose indexes exist)."""
    steps = Steps(Layouts(connection))
    for station in rows.get("stations", ()):
        steps.add(station.election, REGISTRY, station.occurred_at, station.position,
                  station.region, station.district, steps.layouts.station(station.election))
    new = rows.get("protocols", ())
    if new:
        _fold_protocols(connection, new, steps)
    write(connection, steps)
    logged = rows.get("events", ())
    if logged:
        last: dict[str, int] = {}
        for event in logged:
            last[event.recorded_at] = max(last.get(event.recorded_at, 0), event.position)
        connection.executemany(
            "INSERT INTO tally_batches (recorded_at, position) VALUES (?, ?) "
            "ON CONFLICT(recorded_at) DO UPDATE SET position = max(position, excluded.position)",
            last.items())
        connection.execute(
            "INSERT INTO tally_known (name, value) VALUES ('recorded_at', ?) "
            "ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
            (max(last),),
        )


def _fold_protocols(connection: Any, new: Sequence[ProtocolRow], steps: Steps) -> None:
    new_positions = {row.position for row in new}
    newly_superseded = {row.supersedes for row in new if row.supersedes is not None}
    touched: dict[str, set[str]] = defaultdict(set)  # election -> stations
    for row in new:
        touched[row.election].add(row.station)
    for election, stations in touched.items():
        ids = sorted_json()(sorted(stations)).decode()
        registered = {
            station: Registration(occurred, region, district, voters)
            for station, occurred, region, district, voters in connection.execute(
                "SELECT station, occurred_at, region, district, registered_voters FROM stations "
                "WHERE election = ? AND station IN (SELECT value FROM json_each(?))",
                (election, ids),
            )
        }
        complex_before = set(connection.execute(
            "SELECT station, reporter FROM tally_complex WHERE election = ? "
            "AND station IN (SELECT value FROM json_each(?))", (election, ids)))
        groups: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
        superseded: set[str] = set()
        for row in map(Candidate._make, connection.execute(
            "SELECT position, event_id, station, reported_by, occurred_at, supersedes, "
            "ballots_cast, invalid, votes FROM protocols WHERE election = ? "
            "AND station IN (SELECT value FROM json_each(?)) ORDER BY position",
            (election, ids),
        )):
            groups[(row.station, row.reported_by)].append(row)
            if row.supersedes is not None:
                superseded.add(row.supersedes)
        turned_complex = []
        for group, protocols in groups.items():
            if group in complex_before:
                continue
            old = [p for p in protocols if p.position not in new_positions]
            if len(old) == len(protocols) and not any(p.event_id in newly_superseded for p in old):
                continue  # nothing new in this group, nor a recount of one of its protocols
            station = registered.get(group[0])
            if (station is not None and counts_alone(protocols, superseded)
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


def _step(steps: Steps, sign: int, election: str, protocol: Candidate,
          station: Registration) -> bool:
    """Add (sign 1) or take out (-1) a simple protocol's step; False if it cannot step."""
    figures = steps.layouts.vector(election, sign, protocol.ballots_cast, protocol.invalid,
                                   station.registered_voters, vote_maps()(protocol.votes))
    if figures is None:
        return False
    steps.add(election, protocol.reported_by, max(protocol.occurred_at, station.occurred_at),
              protocol.position, station.region, station.district, figures)
    return True


def build(connection: Any) -> None:
    """Compute the steps and complex groups of a whole freshly loaded read model: one pass
    over the simple protocols and the stations in order of the moment they count from,
    rolled up into buckets as it goes (the rebuild loads without indexes, so page-by-page
    folding would scan; and memory stays flat at any size)."""
    for table in ("tally_steps", "tally_known_steps", "tally_complex", "tally_batches",
                  "tally_known"):
        connection.execute(f"DELETE FROM {table}")
    connection.execute(f"""
        INSERT OR IGNORE INTO tally_complex (election, station, reporter)
        {COMPLEX_GROUPS}
        UNION SELECT p.election, p.station, p.reported_by FROM protocols p
              WHERE NOT EXISTS (SELECT 1 FROM stations s
                                WHERE s.election = p.election AND s.station = p.station)
    """)
    layouts = Layouts(connection)
    votes_of = vote_maps()
    unknown_choice: list[tuple[str, str, str]] = []
    by_time, by_block = Rollup(LEVELS), Rollup(KNOWN_LEVELS)
    pending: dict[str, list[tuple]] = {"tally_steps": [], "tally_known_steps": []}

    def store(table: str, closed: list[Closed]) -> None:
        batch = pending[table]
        for key, figures in closed:
            stored = layouts.encode(key[0], figures)
            if stored is not None:
                batch.append((*key, *stored))
        if len(batch) >= 10_000:
            connection.executemany(_insert(table), batch)
            batch.clear()

    for election, station, reporter, at, known, region, district, voters, cast, invalid, \
            votes in connection.execute(f"""
        SELECT p.election, p.station, p.reported_by, max(p.occurred_at, s.occurred_at) AS at,
               p.position, s.region, s.district, s.registered_voters, p.ballots_cast,
               p.invalid, p.votes
        FROM protocols p JOIN stations s ON s.election = p.election AND s.station = p.station
        WHERE NOT EXISTS (SELECT 1 FROM tally_complex c WHERE c.election = p.election
                          AND c.station = p.station AND c.reporter = p.reported_by)
        UNION ALL
        SELECT election, station, '{REGISTRY}', occurred_at, position, region, district,
               NULL, NULL, NULL, NULL FROM stations
        ORDER BY at"""):
        if votes is None:
            figures = layouts.station(election)
        else:
            found = layouts.vector(election, 1, cast, invalid, voters, votes_of(votes))
            if found is None:
                unknown_choice.append((election, station, reporter))
                continue
            figures = found
        block = block_of(known)
        for scope in scopes(region, district):
            store("tally_steps", by_time.add((election, reporter, scope), at, figures))
            store("tally_known_steps",
                  by_block.add((election, reporter, scope, block), at, figures))
    store("tally_steps", by_time.finish())
    store("tally_known_steps", by_block.finish())
    for table, batch in pending.items():
        connection.executemany(_insert(table), batch)
    connection.executemany(
        "INSERT OR IGNORE INTO tally_complex (election, station, reporter) VALUES (?,?,?)",
        unknown_choice)
    connection.execute(
        "INSERT INTO tally_batches (recorded_at, position) "
        "SELECT recorded_at, MAX(position) FROM events GROUP BY recorded_at")
    connection.execute(
        "INSERT INTO tally_known (name, value) SELECT 'recorded_at', MAX(recorded_at) FROM events "
        "WHERE recorded_at IS NOT NULL")
