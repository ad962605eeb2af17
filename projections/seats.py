"""Seat allocation: turn vote counts into seats, with exact arithmetic.

Everything here is a pure function of its arguments, and every comparison is made
on integers (rationals compared by cross-multiplying), never on binary floats, so
the same votes always give the same seats on every machine. Seats are handed out
from a heap of each party's next quotient or remainder: 100,000 seats among ten
parties take about a second, not a million Fractions.

Methods (``METHODS``):

- ``dhondt``, ``sainte_lague``, ``modified_sainte_lague``: highest averages. Each
  seat goes to the largest quotient ``votes / divisor(seats already won)``, with
  divisors 1, 2, 3, ... (D'Hondt), 1, 3, 5, ... (Sainte-Laguë) or 7/5, 3, 5, ...
  (modified Sainte-Laguë).
- ``hare``, ``droop``, ``hagenbach_bischoff``: largest remainder, over the sum V
  of the votes of the parties that passed the threshold, with quota V/S (Hare),
  floor(V/(S+1)) + 1 (Droop) or exactly V/(S+1) (Hagenbach-Bischoff). Each party
  first gets floor(votes/quota) seats; the seats left go to the largest
  remainders ``votes - quota * seats``. If there are more seats left than
  parties (only possible with the Droop quota and fewer votes than seats), the
  remainder round goes on: each further seat again goes to the largest
  ``votes - quota * seats so far``, which cycles through the same ranking.
- ``hare_to_largest_parties`` (Georgia, Election Code Art. 125): each party first gets
  floor(votes/quota) seats with the Hare quota V/S over the same V; the seats left go
  one each to the parties with the most votes (not the largest remainders). Since the
  floors leave fewer seats over than there are parties, one round always suffices.
- ``plurality``: the S choices with the most votes win one seat each (S=1 is
  first-past-the-post).

Threshold (``threshold``, the one rule): a choice passes when ``votes * 100 >= percent *
base``, where the base is the valid votes or every ballot cast, as the election defines it
(exactly at the threshold passes). Only passing choices with more than zero votes take part
in the allocation; an allocation without a threshold says so (``NO_THRESHOLD``).

Tie rule: when choices compete for the last seat(s) with equal quotient
(divisor methods), remainder (largest remainder methods) or votes (plurality),
the one with more votes wins; if their votes are equal too, the one earlier in
ballot order wins. Each tie that the rule actually had to decide, meaning the
tied choices straddle the cut-off, is reported in ``Allocation.ties``.

Over-allocation: with the Hagenbach-Bischoff quota the automatic seats can add up
to one more than S (for example, one party with all the votes). The excess is
taken back one seat at a time from the party with the smallest remainder, with
the tie rule reversed: fewer votes loses first, then later in ballot order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from ledger.domain.methods import SEAT_METHODS

METHODS = tuple(SEAT_METHODS)

_DIVISOR_METHODS = ("dhondt", "sainte_lague", "modified_sainte_lague")
_QUOTA_METHODS = ("hare", "droop", "hagenbach_bischoff", "hare_to_largest_parties")

TIE_RULE = "more votes, then ballot order"
REVERSED_TIE_RULE = "fewer votes, then later in ballot order"


@dataclass(frozen=True)
class Allocation:
    seats: dict[str, int]
    passing: list[str]
    method: str
    threshold_votes: Fraction
    ties: list[str]


@dataclass(frozen=True)
class Threshold:
    """What a choice must reach to share seats: ``percent`` percent of ``base`` votes."""

    percent: Fraction
    base: int

    @classmethod
    def of(cls, percent: Fraction | int | float | str, base: int) -> Threshold:
        exact = exact_percent(percent)
        if exact < 0:
            raise ValueError(f"threshold_pct must not be negative, got {percent!r}")
        return cls(exact, base)

    def passes(self, votes: int) -> bool:
        """At or over the threshold. Multiplying out keeps it in integers and Fractions:
        no division, no rounding."""
        return votes * 100 >= self.percent * self.base

    @property
    def votes(self) -> Fraction:
        return self.percent * self.base / 100


NO_THRESHOLD = Threshold(Fraction(0), 0)


def threshold(percent: Fraction | int | float | str, base: str, *, valid_votes: int,
              ballots_cast: int) -> Threshold:
    """An election's threshold over a count: ``percent`` of the valid votes, or of every
    ballot cast (invalid ones too), as its ``threshold_base`` says."""
    if base not in ("valid", "cast"):
        raise ValueError(f"threshold_base must be 'valid' or 'cast', got {base!r}")
    return Threshold.of(percent, valid_votes if base == "valid" else ballots_cast)


def passing_choices(votes: Mapping[str, int], order: Sequence[str], threshold: Threshold) -> list[str]:
    """The choices over the threshold, in ballot order: the one list the tally shows and the
    allocation shares seats among."""
    return [choice for choice in order if threshold.passes(votes.get(choice, 0))]


def allocate(
    votes: Mapping[str, int],
    seats: int,
    method: str,
    *,
    threshold: Threshold = NO_THRESHOLD,
    order: Sequence[str] | None = None,
) -> Allocation:
    """Allocate ``seats`` among the choices in ``votes`` by ``method``.

    ``order`` is the ballot order (default: the order of ``votes``); it fixes the
    order of the result and breaks the last ties. Choices in ``order`` but not in
    ``votes`` have 0 votes; choices in ``votes`` but not in ``order`` are an error,
    since they would silently vanish from the result.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of: {', '.join(METHODS)}")
    if seats < 0:
        raise ValueError(f"seats must not be negative, got {seats}")
    order = list(votes) if order is None else list(order)
    if len(set(order)) != len(order):
        raise ValueError("order lists a choice more than once")
    on_ballot = set(order)
    if missing := [choice for choice in votes if choice not in on_ballot]:
        raise ValueError(f"choices with votes but not in order: {missing!r}")
    counts = {choice: votes.get(choice, 0) for choice in order}
    if negative := {choice: n for choice, n in counts.items() if n < 0}:
        raise ValueError(f"votes must not be negative: {negative!r}")

    passing = passing_choices(counts, order, threshold)

    result = dict.fromkeys(order, 0)
    ties: list[str] = []
    contenders = [choice for choice in passing if counts[choice] > 0]
    if seats and contenders:
        ranker = _Ranker(counts, order)
        if method in _DIVISOR_METHODS:
            won, ties = _highest_averages(counts, contenders, seats, method, ranker)
        elif method in _QUOTA_METHODS:
            won, ties = _largest_remainder(counts, contenders, seats, method, ranker)
        else:
            winners, ties = ranker.take(lambda choice, _: (counts[choice], 1), contenders,
                                        seats, "with {} votes", limits=dict.fromkeys(contenders, 1))
            won = dict.fromkeys(winners, 1)
        result.update(won)

    return Allocation(
        seats=result,
        passing=passing,
        method=method,
        threshold_votes=threshold.votes,
        ties=ties,
    )


def decimal_text(value: Fraction) -> str:
    """``value`` written exactly: as a decimal when it has a finite one (every threshold
    does, its percentage being a decimal), else as a fraction."""
    denominator = value.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator
    sign = "-" if value < 0 else ""
    if places == 0:
        return f"{sign}{scaled}"
    digits = str(scaled).rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def exact_percent(pct: Fraction | int | float | str) -> Fraction:
    # Fraction(0.1) is 3602879701896397/36028797018963968; going through str()
    # takes the number the caller wrote (0.1 -> 1/10), which is what they meant.
    if isinstance(pct, float):
        return Fraction(str(pct))
    return Fraction(pct)


def _divisor(method: str, won: int) -> tuple[int, int]:
    """The divisor after ``won`` seats, as numerator and denominator."""
    if method == "dhondt":
        return won + 1, 1
    if method == "modified_sainte_lague" and won == 0:
        return 7, 5
    return 2 * won + 1, 1


def _highest_averages(
    counts: Mapping[str, int],
    contenders: list[str],
    seats: int,
    method: str,
    ranker: _Ranker,
) -> tuple[dict[str, int], list[str]]:
    # Each party's quotients fall as it wins seats, so handing out seats one by one from a
    # heap of each party's next quotient ranks them all: seats x log(parties), not
    # seats x parties.
    def quotient(choice: str, won: int) -> _Value:
        numerator, denominator = _divisor(method, won)
        return counts[choice] * denominator, numerator

    winners, ties = ranker.take(quotient, contenders, seats, "on quotient {}")
    return _tally(winners), ties


def _largest_remainder(
    counts: Mapping[str, int],
    contenders: list[str],
    seats: int,
    method: str,
    ranker: _Ranker,
) -> tuple[dict[str, int], list[str]]:
    total = sum(counts[choice] for choice in contenders)
    if method in ("hare", "hare_to_largest_parties"):
        quota = Fraction(total, seats)
    elif method == "droop":
        quota = Fraction(total // (seats + 1) + 1)
    else:
        quota = Fraction(total, seats + 1)
    q, d = quota.numerator, quota.denominator

    won = {choice: counts[choice] * d // q for choice in contenders}
    left = seats - sum(won.values())
    ties: list[str] = []
    if left > 0 and method == "hare_to_largest_parties":
        # Floors of the Hare quota leave fewer than len(contenders) seats over.
        def votes(choice: str, _: int) -> _Value:
            return counts[choice], 1

        winners, ties = ranker.take(votes, contenders, left, "with {} votes",
                                    limits=dict.fromkeys(contenders, 1))
        for choice in winners:
            won[choice] += 1
    elif left > 0:
        # Ranking by votes - quota * (seats so far) for each further seat gives
        # the textbook one-seat-per-remainder round, and keeps going sensibly in
        # the rare case (Droop, tiny totals) where seats outnumber remainders.
        # Scaled by the quota's denominator, every remainder is an integer.
        def remainder(choice: str, extra: int) -> _Value:
            return counts[choice] * d - q * (won[choice] + extra), d

        winners, ties = ranker.take(remainder, contenders, left, "on remainder {}")
        for choice in winners:
            won[choice] += 1
    elif left < 0:
        def given_back(choice: str, back: int) -> _Value:
            return counts[choice] * d - q * (won[choice] - back), d

        limits = {choice: won[choice] for choice in contenders}
        losers, ties = ranker.take(given_back, contenders, -left, "on remainder {}",
                                   reverse=True, limits=limits)
        for choice in losers:
            won[choice] -= 1
    return won, ties


def _tally(choices: list[str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for choice in choices:
        counted[choice] = counted.get(choice, 0) + 1
    return counted


# A rational value as (numerator, positive denominator), compared by cross-multiplying:
# exact, and far cheaper than a Fraction (no gcd) when made once per seat.
_Value = tuple[int, int]


class _Candidate:
    """A choice's next entry in the ranking: its value, then the tie rule."""

    __slots__ = ("choice", "denominator", "index", "numerator", "position", "reverse", "votes")

    def __init__(self, choice: str, index: int, value: _Value, votes: int, position: int,
                 reverse: bool) -> None:
        self.choice, self.index = choice, index
        self.numerator, self.denominator = value
        self.votes, self.position, self.reverse = votes, position, reverse

    def same_value(self, other: _Candidate) -> bool:
        return self.numerator * other.denominator == other.numerator * self.denominator

    def __lt__(self, other: _Candidate) -> bool:
        """True when ``self`` ranks first."""
        mine = self.numerator * other.denominator
        theirs = other.numerator * self.denominator
        if self.reverse:
            # Giving seats back: smallest value, then fewest votes, then latest on the ballot.
            if mine != theirs:
                return mine < theirs
            if self.votes != other.votes:
                return self.votes < other.votes
            return self.position > other.position
        if mine != theirs:
            return mine > theirs
        if self.votes != other.votes:
            return self.votes > other.votes
        return self.position < other.position

    @property
    def value(self) -> Fraction:
        return Fraction(self.numerator, self.denominator)


class _Ranker:
    """Ranks entries by value, then by the tie rule, and reports decisive ties."""

    def __init__(self, counts: Mapping[str, int], order: Sequence[str]) -> None:
        self.counts = counts
        self.position = {choice: index for index, choice in enumerate(order)}

    def take(
        self, value: Callable[[str, int], _Value], choices: list[str], n: int, tied_on: str,
        *, reverse: bool = False, limits: Mapping[str, int] | None = None,
    ) -> tuple[list[str], list[str]]:
        """The first ``n`` entries: highest value first, or lowest if ``reverse``.

        Choice c's entries are ``value(c, 0)``, ``value(c, 1)``, ... (at most ``limits[c]``,
        default ``n``), each ranked after the one before (falling, or rising if ``reverse``).
        """

        def entry(choice: str, index: int) -> _Candidate:
            return _Candidate(choice, index, value(choice, index), self.counts[choice],
                              self.position[choice], reverse)

        def limit(choice: str) -> int:
            return n if limits is None else limits[choice]

        heap = [entry(choice, 0) for choice in choices if limit(choice) > 0]
        heapq.heapify(heap)
        taken: list[_Candidate] = []
        while heap and len(taken) < n:
            best = heapq.heappop(heap)
            taken.append(best)
            if best.index + 1 < limit(best.choice):
                heapq.heappush(heap, entry(best.choice, best.index + 1))
        chosen = [c.choice for c in taken]
        # Equal values inside the chosen block (or outside it) decide nothing;
        # only a tied group cut in two by the n-th place was settled by the rule.
        if not taken or not heap or not heap[0].same_value(taken[-1]):
            return chosen, []
        cut = taken[-1]
        # A choice's later entries differ from its earlier ones, so the rest of the tied
        # group is among the heads of the other choices.
        picked = [c.choice for c in taken if c.same_value(cut)]
        tied = picked + [c.choice for c in heap if c.same_value(cut)]
        return chosen, [self._sentence(tied, picked, tied_on.format(_show(cut.value)), reverse)]

    def _sentence(self, tied: list[str], picked: list[str], tied_on: str, reverse: bool) -> str:
        tied = sorted(tied, key=self.position.__getitem__)
        picked = sorted(picked, key=self.position.__getitem__)
        it = "it" if len(picked) == 1 else "them"
        if reverse:
            what = "seat taken back" if len(picked) == 1 else f"{len(picked)} seats taken back"
            outcome = f"{_names(picked)} lost {it} by the tie rule ({REVERSED_TIE_RULE})"
        else:
            what = "last seat" if len(picked) == 1 else f"last {len(picked)} seats"
            outcome = f"{_names(picked)} won {it} by the tie rule ({TIE_RULE})"
        return f"{what}: {_names(tied)} tied {tied_on}; {outcome}"


def _names(choices: list[str]) -> str:
    quoted = [repr(choice) for choice in choices]
    if len(quoted) == 1:
        return quoted[0]
    return f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _show(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value} (about {float(value):.2f})"
