"""An estimate of the final result from the protocols counted so far (the v3 contract,
"Observers' analysis"; method, assumptions and measured accuracy in docs/estimate.md).

Stations that report early differ from those that report late: small rural stations first,
cities later, and whole regions by time zone. So the stations the tally counts are not a
sample of the night, but within a region and a size class they are much closer to one. The
estimate is a stratified ratio estimator:

- strata: region x size class, the classes being the region's stations cut at the quantiles
  of their registered voters (what the ledger knows of every station before it reports);
- each stratum's uncounted stations get the votes per registered voter of its counted ones;
  a stratum with none borrows from the nearest size class of its region that has some, and
  a region with none from the same size class elsewhere (then from all counted stations);
- the counted stations add their own figures, so the estimate becomes the tally once all
  are in.

The interval comes from the station-to-station variation around each stratum's ratio (the
model y = R·x + e with Var(e) ∝ x, which makes the ratio estimator the best linear one), with
the finite population left to estimate, plus what borrowing may miss: how much a ratio
drifts from one size class to the next within a region, and how much regions differ;
shares are linearised as ratios of two totals.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from operator import itemgetter, mul
from statistics import NormalDist
from typing import Any, NamedTuple

from projections.codec import vote_maps
from projections.errors import QueryError
from projections.moment import Moment
from projections.tally import CountedStation, Election, counted_stations, counting_at, registered_stations

SIZE_CLASSES = 10  # per region; see docs/estimate.md for why ten
METHOD = ("Stratified ratio estimate: regions x size classes (deciles of registered voters "
          "within each region), each stratum's uncounted stations given the votes per "
          "registered voter of its counted ones, weighted by the registered voters of every "
          "registered station; a stratum without reports borrows from the nearest size class "
          "of its region, a region without reports from the same size class elsewhere.")
NOTE = ("The interval reflects station-to-station variation within strata, and for a "
        "stratum without reports how much neighbouring size classes and regions differ; it "
        "assumes the stations counted so far are like the uncounted ones of their stratum, "
        "and does not cover early and late stations of one stratum that differ "
        "systematically (docs/estimate.md gives its measured coverage).")


def estimate(db: Any, election: Election, moment: Moment, *, stage: str = "preliminary",
             reporter: str | None = None, scope: str | None = None,
             confidence: float = 0.95) -> dict[str, Any]:
    """The estimated final result of the tally with these options (docs/estimate.md)."""
    check_confidence(confidence)
    counting = counting_at(db, election, moment, stage=stage, reporter=reporter, scope=scope)
    choices = [c for c, _, _ in election.choices]
    population = list(registered_stations(db, counting))
    reports = counted_reports(counted_stations(db, counting), choices)
    projected = project(population, reports, choices, confidence)
    return {
        "election": election.id,
        "stage": counting.stage,
        "reporter": counting.reporter,
        "scope": scope or "national",
        **moment.describe(),
        "shares": projected.shares,
        "intervals": projected.intervals,
        "turnout": projected.turnout,
        "stations_reporting": len(reports),
        "stations_total": len(population),
        "confidence": confidence,
        "names": election.names,
        "method": METHOD,
        "note": NOTE,
    }


def check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, int | float) and 0 < confidence < 1):
        raise QueryError(f"--confidence: expected a number between 0 and 1, such as 0.95; "
                         f"got {confidence!r}")


class Report(NamedTuple):
    """A counted station's figures: its protocol's registered voters (if given), ballots
    cast, valid votes and the votes of each choice in ballot order."""

    register: int | None
    cast: int
    valid: int
    votes: tuple[int, ...]


def counted_reports(rows: Iterable[CountedStation], choices: Sequence[str]) -> dict[str, Report]:
    decode = vote_maps()
    in_order = itemgetter(*choices)
    reports = {}
    for station, _, protocol_voters, cast, _, valid, votes_json in rows:
        votes = decode(votes_json)
        try:
            figures = in_order(votes)
        except KeyError:  # a protocol that leaves a choice out gave it no votes
            figures = tuple(votes.get(c, 0) for c in choices)
        reports[station] = Report(protocol_voters, cast, valid,
                                  figures if isinstance(figures, tuple) else (figures,))
    return reports


@dataclass(frozen=True)
class Projection:
    shares: dict[str, float | None]
    intervals: dict[str, list[float] | None]
    turnout: float | None


def normal_quantile(probability: float) -> float:
    """The standard normal quantile (the standard library's, Wichura's AS 241: exact to
    about 1e-16)."""
    return NormalDist().inv_cdf(probability)


def project(population: Sequence[tuple[str, str, int | None]], reports: dict[str, Report],
            choices: Sequence[str], confidence: float,
            size_classes: int = SIZE_CLASSES) -> Projection:
    """The estimate from the registered stations (station, region, registered voters) and
    the counted ones' reports."""
    if not reports:
        return Projection(dict.fromkeys(choices), dict.fromkeys(choices), None)
    registers = _registers(population, reports)
    classes = _size_classes(population, registers, size_classes)
    cells: dict[tuple[str, int], Cell] = defaultdict(lambda: Cell(len(choices)))
    for (station, region, _), x, size in zip(population, registers, classes, strict=True):
        cell = cells[(region, size)]
        report = reports.get(station)
        if report is None:
            cell.uncounted += 1
            cell.uncounted_voters += x
        else:
            cell.counted.append((x, report))
    for cell in cells.values():
        cell.summarise()
    sources = _sources(cells, size_classes)
    # What the counted stations hold, exactly; then each source's ratios over what its
    # borrowers have not counted yet.
    known = [sum(c.sums[k] for c in cells.values()) for k in range(len(choices) + 2)]
    borrowed: dict[Any, list[float]] = {}  # source key -> [uncounted voters, stations]
    for key, cell in cells.items():
        if cell.uncounted:
            held = borrowed.setdefault(sources[key], [0.0, 0])
            held[0] += cell.uncounted_voters
            held[1] += cell.uncounted
    pools = _pools(cells)
    totals = list(map(float, known))
    for source, (voters, _) in borrowed.items():
        pool = pools[source]
        for k in range(len(totals)):
            totals[k] += voters * pool.sums[k] / pool.voters
    valid, cast = totals[-2], totals[-1]
    all_voters = sum(registers)
    turnout = cast / all_voters if all_voters else None
    if valid <= 0:
        return Projection(dict.fromkeys(choices), dict.fromkeys(choices), turnout)
    z = normal_quantile((1 + confidence) / 2)
    shares: dict[str, float | None] = {}
    intervals: dict[str, list[float] | None] = {}
    for j, choice in enumerate(choices):
        share = totals[j] / valid
        variance = sum(
            pools[source].residual_variance(j, share, pools) * voters * (voters + pools[source].voters)
            / pools[source].voters
            for source, (voters, _) in borrowed.items())
        variance += _borrowing_variance(cells, sources, pools, j, share)
        margin = z * math.sqrt(variance) / valid
        shares[choice] = round(share, 6)
        intervals[choice] = [round(max(0.0, share - margin), 6), round(min(1.0, share + margin), 6)]
    return Projection(shares, intervals, None if turnout is None else round(turnout, 6))


def _borrowing_variance(cells: dict[tuple[str, int], Cell], sources: dict[tuple[str, int], Any],
                        pools: dict[Any, Pool], j: int, share: float) -> float:
    """What borrowing adds: a stratum without reports takes another's ratio, but its own may
    differ. Across a region's size classes the ratio of d = y - p·v is taken to drift like a
    random walk, its variance per class step estimated from the region's neighbouring
    reported classes (else from all regions'); a region without reports differs from the
    others as much as regions with reports differ among themselves. The strata of one region
    that borrow share one unknown drift, so their voters add up before squaring."""
    def ratio(pool: Pool) -> float:
        return (pool.sums[j] - share * pool.sums[-2]) / pool.voters

    by_region: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for key, pool in pools.items():
        if key[0] not in (REGION, NATIONAL):
            by_region[key[0]].append((key[1], ratio(pool)))
    steps: dict[str, list[float]] = {}
    for region, classes in by_region.items():
        classes.sort()
        steps[region] = [(b - a) ** 2 / (d - c) for (c, a), (d, b) in pairwise(classes)]
    everywhere = [step for found in steps.values() for step in found]
    drift = sum(everywhere) / len(everywhere) if everywhere else 0.0
    regional = [ratio(pool) for key, pool in pools.items() if key[0] == REGION]
    mean = sum(regional) / len(regional) if regional else 0.0
    between = (sum((r - mean) ** 2 for r in regional) / (len(regional) - 1)
               if len(regional) > 1 else 0.0)
    stepped: dict[str, float] = defaultdict(float)  # region -> Σ W·sqrt(class steps)
    unreported: dict[str, float] = defaultdict(float)  # region without reports -> Σ W
    for (region, size), cell in cells.items():
        source = sources[(region, size)]
        if not cell.uncounted or source == (region, size):
            continue
        if source[0] == region:
            stepped[region] += cell.uncounted_voters * math.sqrt(abs(source[1] - size))
        else:
            unreported[region] += cell.uncounted_voters
    variance = sum(w * w * (sum(steps[region]) / len(steps[region]) if steps.get(region) else drift)
                   for region, w in stepped.items())
    return variance + sum(w * w * between for w in unreported.values())


@dataclass
class Cell:
    """One stratum (region, size class): its counted stations, and what it has not counted."""

    width: int  # the number of choices
    counted: list[tuple[float, Report]] = field(default_factory=list)
    uncounted: int = 0
    uncounted_voters: float = 0.0
    voters: float = 0.0  # registered voters of the counted stations
    sums: list[int] = field(default_factory=list)  # each choice's votes, valid, cast
    moments: Moments | None = None

    def summarise(self) -> None:
        rows = self.counted
        self.voters = float(sum(x for x, _ in rows))
        columns = list(zip(*(r.votes for _, r in rows), strict=True)) if rows else []
        valid = [r.valid for _, r in rows]
        self.sums = [sum(col) for col in columns] or [0] * self.width
        self.sums += [sum(valid), sum(r.cast for _, r in rows)]
        self.moments = Moments.of(rows, columns, valid)

    @property
    def has_reports(self) -> bool:
        return self.voters > 0


@dataclass
class Moments:
    """Sums over counted stations with registered voters x > 0, for the residual variance
    of d = votes - p·valid about its ratio to x, under Var(e) ∝ x:
    Σ e²/x = Σ d²/x - (Σ d)²/Σ x, with Σ d²/x = Σ y²/x - 2p Σ y·v/x + p² Σ v²/x."""

    stations: int
    voters: float
    y: list[float]
    v: float
    yy_x: list[float]
    yv_x: list[float]
    vv_x: float

    @classmethod
    def of(cls, rows: list[tuple[float, Report]], columns: list[tuple[int, ...]],
           valid: list[int]) -> Moments:
        keep = [i for i, (x, _) in enumerate(rows) if x > 0]
        if len(keep) < len(rows):
            columns = [tuple(col[i] for i in keep) for col in columns]
            valid = [valid[i] for i in keep]
        inverse = [1.0 / rows[i][0] for i in keep]
        v_x = list(map(mul, valid, inverse))
        return cls(
            stations=len(keep),
            voters=float(sum(rows[i][0] for i in keep)),
            y=[float(sum(col)) for col in columns],
            v=float(sum(valid)),
            yy_x=[sum(map(mul, map(mul, col, col), inverse)) for col in columns],
            yv_x=[sum(map(mul, col, v_x)) for col in columns],
            vv_x=sum(map(mul, valid, v_x)),
        )

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.stations + other.stations, self.voters + other.voters,
                       list(map(float.__add__, self.y, other.y)), self.v + other.v,
                       list(map(float.__add__, self.yy_x, other.yy_x)),
                       list(map(float.__add__, self.yv_x, other.yv_x)), self.vv_x + other.vv_x)

    def squared_residuals(self, j: int, share: float) -> float:
        d = self.y[j] - share * self.v
        dd_x = self.yy_x[j] - 2 * share * self.yv_x[j] + share * share * self.vv_x
        return max(0.0, dd_x - d * d / self.voters) if self.voters else 0.0


@dataclass
class Pool:
    """What a source of ratios holds: a stratum, or the strata of one size class across
    regions, or every counted station."""

    voters: float
    sums: list[float]
    moments: Moments
    fallback: Any = None  # the pool whose residual variance stands in for a lone station's

    def residual_variance(self, j: int, share: float, pools: dict[Any, Pool]) -> float:
        """σ² per registered voter of choice j's residual d = y - p·v: Σ e²/x over n - 1;
        a source of one station borrows its fallback's (its region's, then everyone's)."""
        if self.moments.stations >= 2:
            return self.moments.squared_residuals(j, share) / (self.moments.stations - 1)
        if self.fallback is not None:
            return pools[self.fallback].residual_variance(j, share, pools)
        return 0.0


REGION, NATIONAL = "region", "national"


def _pools(cells: dict[tuple[str, int], Cell]) -> dict[Any, Pool]:
    """Every source a stratum may borrow from, keyed as ``_sources`` names them."""
    pools: dict[Any, Pool] = {}

    def add(key: Any, cell: Cell, fallback: Any) -> None:
        held = pools.get(key)
        assert cell.moments is not None
        if held is None:
            pools[key] = Pool(cell.voters, list(map(float, cell.sums)), cell.moments, fallback)
        else:
            held.voters += cell.voters
            held.sums = list(map(float.__add__, held.sums, map(float, cell.sums)))
            held.moments = held.moments + cell.moments

    for (region, size), cell in cells.items():
        if not cell.has_reports:
            continue
        add((region, size), cell, (REGION, region))
        add((REGION, region), cell, (NATIONAL, None))
        add((NATIONAL, size), cell, (NATIONAL, None))
        add((NATIONAL, None), cell, None)
    return pools


def _sources(cells: dict[tuple[str, int], Cell], size_classes: int) -> dict[tuple[str, int], Any]:
    """For each stratum, the pool its uncounted stations take their ratios from: itself if
    it has reports; else the nearest size class of its region with reports (the larger on a
    tie: uncounted stations are more often the larger ones); else the nearest size class
    with reports in any region; else every counted station."""
    reported = {key for key, cell in cells.items() if cell.has_reports}
    national = {size for _, size in reported}
    sources: dict[tuple[str, int], Any] = {}
    for region, size in cells:
        sources[(region, size)] = _nearest(
            size, size_classes, lambda s, r=region: (r, s) in reported, lambda s, r=region: (r, s)
        ) or _nearest(size, size_classes, national.__contains__, lambda s: (NATIONAL, s)) \
            or (NATIONAL, None)
    return sources


def _nearest(size: int, classes: int, has: Any, key: Any) -> Any:
    for distance in range(classes):
        for candidate in (size + distance, size - distance):
            if 0 <= candidate < classes and has(candidate):
                return key(candidate)
    return None


def _registers(population: Sequence[tuple[str, str, int | None]],
               reports: dict[str, Report]) -> list[float]:
    """Each registered station's registered voters: its registration's, else its counted
    protocol's, else the mean of its region's known ones (then of all known ones), so that
    an imported table that leaves some out still weighs every station."""
    known: list[float | None] = []
    by_region: dict[str, list[float]] = defaultdict(list)
    for station, region, voters in population:
        if voters is None and station in reports:
            voters = reports[station].register
        known.append(None if voters is None else float(voters))
        if voters is not None:
            by_region[region].append(float(voters))
    everyone = [x for xs in by_region.values() for x in xs]
    overall = sum(everyone) / len(everyone) if everyone else 1.0
    means = {region: sum(xs) / len(xs) for region, xs in by_region.items()}
    return [x if x is not None else means.get(region, overall)
            for x, (_, region, _) in zip(known, population, strict=True)]


def _size_classes(population: Sequence[tuple[str, str, int | None]], registers: list[float],
                  size_classes: int) -> list[int]:
    """Each station's size class within its region: which of the region's quantiles of
    registered voters (cut at the k/size_classes points of its sorted registers) it falls
    between. Stations of equal size share a class."""
    by_region: dict[str, list[float]] = defaultdict(list)
    for (_, region, _), x in zip(population, registers, strict=True):
        by_region[region].append(x)
    cuts = {}
    for region, xs in by_region.items():
        xs.sort()
        cuts[region] = [xs[len(xs) * k // size_classes] for k in range(1, size_classes)]
    return [bisect.bisect_right(cuts[region], x)
            for (_, region, _), x in zip(population, registers, strict=True)]
