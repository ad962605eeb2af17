"""Election forensics of the protocols a tally counts, as of any moment (the v3 contract,
"Observers' analysis").

The views observers compute from station protocols: integer percentages of turnout and of
a choice's share (Kobak, Shpilkin and Pshenichnikov, Ann. Appl. Stat. 2016), the turnout x
share "fingerprint" (Klimek, Yegorov, Hanel and Thurner, PNAS 2012), and the last digits of
vote counts against uniform (Beber and Scacco, Political Analysis 2012). Every figure is
computed in integer arithmetic where its definition is integer; what they mean and do not
prove is in docs/forensics.md.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from itertools import chain, repeat
from typing import Any

from projections.codec import vote_maps
from projections.errors import QueryError
from projections.moment import Moment
from projections.tally import CountedStation, Election, counted_stations, counting_at, tally

PERCENTS = 101  # 0% to 100%
DIGITS = 10
DIGIT_FLOOR = 10  # vote counts below this have a last digit that is their whole value


def station_register(protocol_register: int | None, station_register: int | None) -> int | None:
    """The registered voters a station's turnout is a share of: its protocol's own figure
    (the list at the close of voting), else the station's registration."""
    return station_register if protocol_register is None else protocol_register


def integer_percent_chance(register: int) -> float:
    """How likely a station's turnout is a whole percentage if its ballots cast were equally
    likely to be any number from 0 to ``register``: of those ``register + 1`` numbers,
    ``gcd(100, register) + 1`` give one (the multiples of ``register / gcd``)."""
    return (math.gcd(100, register) + 1) / (register + 1)


def chi_square_uniform(counts: list[int]) -> float | None:
    """Pearson's chi-square of ``counts`` against equal expected counts; None if empty.
    Σ (o - N/k)² / (N/k) = (k·Σ o² - N²) / N, an exact integer ratio rounded once."""
    total = sum(counts)
    if total == 0:
        return None
    return (len(counts) * sum(o * o for o in counts) - total * total) / total


def chi_square_survival(statistic: float, dof: int) -> float:
    """P(X ≥ statistic) for X chi-square with ``dof`` degrees of freedom: the regularized
    upper incomplete gamma Q(dof/2, statistic/2), in closed form for whole or half-whole
    shape (the only kinds a chi-square has):

    - even dof, a = dof/2 whole:  Q(a, y) = e^-y Σ_{k<a} y^k / k!
    - odd dof, a = n + 1/2:       Q(a, y) = erfc(√y) + e^-y Σ_{k=1..n} y^(k-1/2) / Γ(k + 1/2)

    Terms are summed in logarithms so that a large statistic underflows to 0, not NaN."""
    if dof < 1:
        raise ValueError("a chi-square needs at least one degree of freedom")
    if statistic <= 0:
        return 1.0
    y = statistic / 2
    log_y = math.log(y)
    if dof % 2 == 0:
        terms = (k * log_y - y - math.lgamma(k + 1) for k in range(dof // 2))
        head = 0.0
    else:
        terms = ((k - 0.5) * log_y - y - math.lgamma(k + 0.5) for k in range(1, dof // 2 + 1))
        head = math.erfc(math.sqrt(y))
    return min(1.0, head + math.fsum(math.exp(t) for t in terms))


def fingerprint_grid(fingerprint: Iterable[Iterable[int]]) -> list[list[int]]:
    """The fingerprint's ``[t, s, n]`` cells as a 101 x 101 matrix of station counts,
    ``grid[s][t]`` (share on the rows, turnout on the columns), for drawing a heat map."""
    grid = [[0] * PERCENTS for _ in range(PERCENTS)]
    for turnout, share, stations in fingerprint:
        grid[share][turnout] = stations
    return grid


def forensics(db: Any, election: Election, moment: Moment, *, stage: str = "preliminary",
              reporter: str | None = None, scope: str | None = None,
              choice: str | None = None) -> dict[str, Any]:
    """The forensics of the stations a tally with these options counts (docs/forensics.md); the
    choice by default is the one with the most votes in that tally."""
    order = [c for c, _, _ in election.choices]
    if choice is not None and choice not in order:
        raise QueryError(f"--choice: {choice!r} is not a choice of {election.id!r} "
                         f"(its choices: {', '.join(order)})")
    options = {"stage": stage, "reporter": reporter, "scope": scope}
    counting = counting_at(db, election, moment, **options)
    stations = analysed_stations(counted_stations(db, counting))
    if choice is None:
        choice = most_votes(tally(db, election, moment, **options)["votes"], order)
    return {
        "election": election.id,
        "stage": counting.stage,
        "reporter": counting.reporter,
        "scope": scope or "national",
        **moment.describe(),
        "choice": choice,
        "name": election.names[choice],
        **analyse(stations, choice),
    }


def most_votes(votes: dict[str, int], order: list[str]) -> str:
    """The choice with the most votes; a tie (or no votes yet) goes to the first on the
    ballot among the tied."""
    return max(order, key=lambda c: (votes.get(c, 0), -order.index(c)))


class Stations:
    """The counted stations forensics looks at (registered voters > 0 and a valid vote to
    share out), as parallel columns."""

    def __init__(self, registers: list[int], cast: list[int], valid: list[int],
                 votes: list[dict[str, int]]) -> None:
        self.registers, self.cast, self.valid, self.votes = registers, cast, valid, votes


def analysed_stations(rows: Iterable[CountedStation]) -> Stations:
    """The stations among the counted ones that have a turnout and a share to look at."""
    kept = [
        (register, cast, valid, votes_json)
        for _, station_voters, protocol_voters, cast, _, valid, votes_json in rows
        if valid > 0 and (register := station_register(protocol_voters, station_voters))
    ]
    if not kept:
        return Stations([], [], [], [])
    registers, cast, valid, votes_json = (list(column) for column in zip(*kept, strict=True))
    return Stations(registers, cast, valid, list(map(vote_maps(), votes_json)))


def analyse(stations: Stations, choice: str) -> dict[str, Any]:
    """Every figure of the contract, from the stations' columns."""
    registers, cast, valid = stations.registers, stations.cast, stations.valid
    chosen = [votes.get(choice, 0) for votes in stations.votes]
    turnout_percent = integer_histogram(cast, registers)
    statistic = chi_square_uniform(digits := last_digits(stations.votes))
    return {
        "stations": len(registers),
        "turnout_percent": turnout_percent,
        "share_percent": integer_histogram(chosen, valid),
        "integer_turnout": {"observed": sum(turnout_percent),
                            "expected": expected_integer_turnouts(registers)},
        "fingerprint": fingerprint(cast, registers, chosen, valid),
        "last_digits": digits,
        "chi_square": statistic,
        "p_value": None if statistic is None else chi_square_survival(statistic, DIGITS - 1),
    }


def integer_histogram(parts: list[int], wholes: list[int]) -> list[int]:
    """Element k: how many stations have ``100 * part / whole`` exactly k (0 to 100)."""
    histogram = [0] * PERCENTS
    for part, whole in zip(parts, wholes, strict=True):
        scaled = 100 * part
        if not scaled % whole and part <= whole:
            histogram[scaled // whole] += 1
    return histogram


def expected_integer_turnouts(registers: list[int]) -> float:
    """Σ over stations of ``integer_percent_chance``: one term per distinct register size,
    summed with one rounding (math.fsum)."""
    return math.fsum(n * integer_percent_chance(r) for r, n in sorted(Counter(registers).items()))


def fingerprint(cast: list[int], registers: list[int], chosen: list[int], valid: list[int]
                ) -> list[list[int]]:
    """``[t, s, n]``: n stations at turnout ⌊100·cast/registered⌋ (at most 100) and share
    ⌊100·votes/valid⌋, sorted by t then s."""
    cells = Counter(
        min(100, 100 * c // r) * PERCENTS + 100 * v // w
        for c, r, v, w in zip(cast, registers, chosen, valid, strict=True)
    )
    return [[cell // PERCENTS, cell % PERCENTS, n] for cell, n in sorted(cells.items())]


def last_digits(maps: Iterable[dict[str, int]]) -> list[int]:
    """How many vote counts of DIGIT_FLOOR or more end in each digit, over every choice of
    every station. (Iterated by builtins alone: a national table has over a million.)"""
    counts = chain.from_iterable(votes.values() for votes in maps)
    digits = Counter(map(int.__mod__, filter((DIGIT_FLOOR - 1).__lt__, counts), repeat(DIGITS)))
    return [digits.get(d, 0) for d in range(DIGITS)]
