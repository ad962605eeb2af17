"""Seat allocation: textbook examples worked by hand, plus properties.

Every expected number below was worked out on paper (the quotient and remainder
tables are in the comments); none is computed by the code under test.
"""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from projections.seats import METHODS, Allocation, Threshold, allocate, decimal_text, threshold

# The classic Wikipedia example for highest averages methods, 8 seats.
WIKI = {"A": 100_000, "B": 80_000, "C": 30_000, "D": 20_000}

# The Wikipedia example for largest remainder methods: 100,000 votes, 10 seats.
LARGEST_REMAINDER = {
    "yellow": 47_000,
    "white": 16_000,
    "red": 15_800,
    "green": 12_000,
    "blue": 6_100,
    "pink": 3_100,
}


# --- highest averages -------------------------------------------------------


def test_dhondt_wikipedia_example() -> None:
    # Quotients (divisors 1, 2, 3, 4, 5):
    #   A 100000  50000  33333  25000  20000
    #   B  80000  40000  26667  20000
    #   C  30000  15000
    #   D  20000  10000
    # Top 8: A100000 B80000 A50000 B40000 A33333 C30000 B26667 A25000; the 9th is 20000.
    result = allocate(WIKI, 8, "dhondt")
    assert result.seats == {"A": 4, "B": 3, "C": 1, "D": 0}
    assert result.method == "dhondt"
    assert result.ties == []


def test_sainte_lague_wikipedia_example() -> None:
    # Quotients (divisors 1, 3, 5, 7):
    #   A 100000  33333  20000  14286
    #   B  80000  26667  16000  11429
    #   C  30000  10000
    #   D  20000   6667
    # Top 8: A100000 B80000 A33333 C30000 B26667 A20000 D20000 B16000; the 9th is 14286.
    # A and D tie on 20000, but both are inside the 8, so no tie is reported.
    result = allocate(WIKI, 8, "sainte_lague")
    assert result.seats == {"A": 3, "B": 3, "C": 1, "D": 1}
    assert result.ties == []


def test_modified_sainte_lague_first_divisor_changes_the_result() -> None:
    # A 800, B 200, 3 seats.
    # Sainte-Laguë:          A 800, 266.67, 160   B 200      -> A800 A266.67 B200
    # modified (1.4, 3, 5):  A 571.43, 266.67, 160   B 142.86  -> A571 A266.67 A160
    votes = {"A": 800, "B": 200}
    assert allocate(votes, 3, "sainte_lague").seats == {"A": 2, "B": 1}
    assert allocate(votes, 3, "modified_sainte_lague").seats == {"A": 3, "B": 0}


def test_modified_sainte_lague_wikipedia_example_with_exact_tie() -> None:
    # Quotients (divisors 7/5, 3, 5, 7):
    #   A 71428.57  33333.33  20000  100000/7 = 14285.71
    #   B 57142.86  26666.67  16000  11428.57
    #   C 21428.57  10000
    #   D 100000/7 = 14285.71 (20000 / 1.4)
    # Top 7: A71429 B57143 A33333 B26667 C21429 A20000 B16000.
    # The 8th seat: A and D both at exactly 100000/7; A has more votes and wins.
    result = allocate(WIKI, 8, "modified_sainte_lague")
    assert result.seats == {"A": 4, "B": 3, "C": 1, "D": 0}
    assert len(result.ties) == 1
    assert "'A' and 'D'" in result.ties[0]
    assert "100000/7" in result.ties[0]


# --- largest remainder ------------------------------------------------------


def test_hare_wikipedia_example() -> None:
    # Quota 100000 / 10 = 10000.
    #   yellow 4.70 -> 4, remainder 7000
    #   white  1.60 -> 1, remainder 6000
    #   red    1.58 -> 1, remainder 5800
    #   green  1.20 -> 1, remainder 2000
    #   blue   0.61 -> 0, remainder 6100
    #   pink   0.31 -> 0, remainder 3100
    # 7 automatic seats; the 3 left go to yellow 7000, blue 6100, white 6000.
    result = allocate(LARGEST_REMAINDER, 10, "hare")
    assert result.seats == {"yellow": 5, "white": 2, "red": 1, "green": 1, "blue": 1, "pink": 0}
    assert result.ties == []


def test_droop_wikipedia_example_differs_from_hare() -> None:
    # Quota floor(100000 / 11) + 1 = 9090 + 1 = 9091.
    #   yellow 47000 -> 5 (45455), remainder 1545
    #   white  16000 -> 1 (9091),  remainder 6909
    #   red    15800 -> 1,         remainder 6709
    #   green  12000 -> 1,         remainder 2909
    #   blue    6100 -> 0,         remainder 6100
    #   pink    3100 -> 0,         remainder 3100
    # 8 automatic seats; the 2 left go to white 6909 and red 6709.
    result = allocate(LARGEST_REMAINDER, 10, "droop")
    assert result.seats == {"yellow": 5, "white": 2, "red": 2, "green": 1, "blue": 0, "pink": 0}


def test_hagenbach_bischoff_wikipedia_example() -> None:
    # Quota exactly 100000 / 11 = 9090.909...
    #   yellow 5 seats, remainder 47000 - 500000/11 = 1545.45
    #   white  1, remainder 6909.09;  red 1, remainder 6709.09;  green 1, remainder 2909.09
    #   blue   0, remainder 6100;     pink 0, remainder 3100
    # 8 automatic seats; the 2 left go to white and red.
    result = allocate(LARGEST_REMAINDER, 10, "hagenbach_bischoff")
    assert result.seats == {"yellow": 5, "white": 2, "red": 2, "green": 1, "blue": 0, "pink": 0}


def test_hagenbach_bischoff_over_allocation_single_party() -> None:
    # Quota 1000 / 6; 1000 / (1000/6) = 6 automatic seats for 5 seats: one is taken back.
    result = allocate({"A": 1000, "B": 0}, 5, "hagenbach_bischoff")
    assert result.seats == {"A": 5, "B": 0}
    assert result.ties == []


def test_hagenbach_bischoff_over_allocation_taken_from_fewer_votes() -> None:
    # Quota 600 / 3 = 200: A 400 -> 2, B 200 -> 1, both remainder 0; 3 seats for 2.
    # Reversed tie rule: B has fewer votes and gives its seat back.
    result = allocate({"A": 400, "B": 200}, 2, "hagenbach_bischoff")
    assert result.seats == {"A": 2, "B": 0}
    assert len(result.ties) == 1
    assert result.ties[0].startswith("seat taken back: 'A' and 'B' tied on remainder 0;")
    assert "'B' lost it" in result.ties[0]


def test_hagenbach_bischoff_over_allocation_taken_from_later_on_ballot() -> None:
    # Quota 600 / 2 = 300: A and B get 1 each for 1 seat; equal votes, B is later.
    result = allocate({"A": 300, "B": 300}, 1, "hagenbach_bischoff")
    assert result.seats == {"A": 1, "B": 0}
    assert "'B' lost it" in result.ties[0]
    flipped = allocate({"A": 300, "B": 300}, 1, "hagenbach_bischoff", order=["B", "A"])
    assert flipped.seats == {"B": 1, "A": 0}


def test_droop_with_fewer_votes_than_seats_still_fills_every_seat() -> None:
    # Quota floor(3 / 11) + 1 = 1: A 1 and B 2 automatic seats, 7 left, remainders 0.
    # Each further seat goes to the largest votes - quota * seats so far; A and B
    # stay level, so B (more votes) takes each odd one: B +4, A +3.
    result = allocate({"A": 1, "B": 2}, 10, "droop")
    assert result.seats == {"A": 4, "B": 6}


# --- plurality --------------------------------------------------------------


def test_plurality_single_seat_is_first_past_the_post() -> None:
    votes = {"a": 50, "b": 30, "c": 20, "d": 10}
    assert allocate(votes, 1, "plurality").seats == {"a": 1, "b": 0, "c": 0, "d": 0}


def test_plurality_three_seats() -> None:
    votes = {"d": 10, "c": 20, "b": 30, "a": 50}
    assert allocate(votes, 3, "plurality").seats == {"d": 0, "c": 1, "b": 1, "a": 1}


def test_plurality_more_seats_than_choices() -> None:
    assert allocate({"a": 5, "b": 0}, 3, "plurality").seats == {"a": 1, "b": 0}


# --- threshold --------------------------------------------------------------


def test_threshold_exactly_met_passes_one_vote_less_fails() -> None:
    # 5% of 1000 = 50 votes. Hare, 20 seats, quota 1000 / 20 = 50: big 19, small 1.
    at = allocate({"big": 950, "small": 50}, 20, "hare", threshold=Threshold.of(5, 1000))
    assert at.threshold_votes == 50
    assert at.passing == ["big", "small"]
    assert at.seats == {"big": 19, "small": 1}
    # 49 < 50: small is out, and big alone takes all 20 seats.
    below = allocate({"big": 951, "small": 49}, 20, "hare", threshold=Threshold.of(5, 1000))
    assert below.passing == ["big"]
    assert below.seats == {"big": 20, "small": 0}


def test_passes_threshold_is_inclusive() -> None:
    assert Threshold.of(5, 1000).passes(50)
    assert not Threshold.of(5, 1000).passes(49)
    assert Threshold.of(0, 1000).passes(0)


def test_the_threshold_is_a_share_of_the_valid_votes_or_of_every_ballot_cast() -> None:
    assert threshold("5", "valid", valid_votes=1000, ballots_cast=1200) == Threshold(Fraction(5), 1000)
    assert threshold(5.0, "cast", valid_votes=1000, ballots_cast=1200).votes == 60
    with pytest.raises(ValueError, match="threshold_base"):
        threshold(5, "registered", valid_votes=1000, ballots_cast=1200)
    with pytest.raises(ValueError, match="negative"):
        Threshold.of(-1, 1000)


def test_threshold_float_is_taken_as_written_not_as_binary() -> None:
    # 4.9% of 3000 is exactly 147 votes, but in binary 4.9 * 3000 == 14700.000000000002,
    # so a naive float comparison would wrongly fail a party with exactly 147 votes.
    assert not 147 * 100 >= 4.9 * 3000
    votes = {"big": 2853, "edge": 147}
    for pct in (4.9, "4.9", Fraction(49, 10)):
        result = allocate(votes, 5, "sainte_lague", threshold=Threshold.of(pct, sum(votes.values())))
        assert result.threshold_votes == Fraction(147)
        assert result.passing == ["big", "edge"]
    short = allocate({"big": 2854, "edge": 146}, 5, "sainte_lague", threshold=Threshold.of(4.9, 3000))
    assert short.passing == ["big"]


def test_threshold_float_conversion() -> None:
    result = allocate({"a": 1}, 1, "dhondt", threshold=Threshold.of(0.1, 1000))
    assert result.threshold_votes == Fraction(1)  # not 1.0000000000000000555...
    assert allocate({"a": 1}, 1, "dhondt", threshold=Threshold.of(7.0, 1)).threshold_votes == Fraction(7, 100)


def test_threshold_base_can_be_ballots_cast() -> None:
    # 5% of 2000 ballots cast = 100, though 5% of the 1000 valid votes would be 50.
    votes = {"a": 900, "b": 60, "c": 40}
    assert allocate(votes, 3, "dhondt", threshold=Threshold.of(5, sum(votes.values()))).passing == ["a", "b"]
    on_cast = allocate(votes, 3, "dhondt", threshold=Threshold.of(5, 2000))
    assert on_cast.passing == ["a"]
    assert on_cast.seats == {"a": 3, "b": 0, "c": 0}


# --- this ledger's public conformance example -------------------------------


def test_conformance_example_one() -> None:
    # Valid votes 1780; 5% = 89; grey 60 fails.
    #   green 900 450 300 225 180
    #   blue  600 300 200
    #   red   220 110
    # Top 7: g900 b600 g450 g300 b300 g225 r220; the 8th is b200.
    votes = {"green": 900, "blue": 600, "red": 220, "grey": 60}
    result = allocate(votes, 7, "dhondt", threshold=Threshold.of(5, sum(votes.values())))
    assert result == Allocation(
        seats={"green": 4, "blue": 2, "red": 1, "grey": 0},
        passing=["green", "blue", "red"],
        method="dhondt",
        threshold_votes=Fraction(89),
        ties=[],
    )


def test_conformance_example_two() -> None:
    # Valid votes 1780; 5% = 89; grey 60 fails.
    #   green 820 410 273.3 205
    #   blue  680 340 226.7 170
    #   red   220 110
    # Top 7: g820 b680 g410 b340 g273.3 b226.7 r220; the 8th is g205.
    votes = {"green": 820, "blue": 680, "red": 220, "grey": 60}
    result = allocate(votes, 7, "dhondt", threshold=Threshold.of(5, sum(votes.values())))
    assert result.seats == {"green": 3, "blue": 3, "red": 1, "grey": 0}
    assert result.passing == ["green", "blue", "red"]


# --- ties -------------------------------------------------------------------


def test_tie_for_last_seat_resolved_by_more_votes() -> None:
    # D'Hondt: red 600 300, blue 300. Seat 2: red 300 vs blue 300; red has more votes.
    result = allocate({"blue": 300, "red": 600}, 2, "dhondt")
    assert result.seats == {"blue": 0, "red": 2}
    assert result.ties == [
        "last seat: 'blue' and 'red' tied on quotient 300; "
        "'red' won it by the tie rule (more votes, then ballot order)"
    ]


def test_tie_for_last_seat_resolved_by_ballot_order() -> None:
    votes = {"red": 300, "blue": 300}
    result = allocate(votes, 1, "dhondt", order=["blue", "red"])
    assert result.seats == {"blue": 1, "red": 0}
    assert result.ties == [
        "last seat: 'blue' and 'red' tied on quotient 300; "
        "'blue' won it by the tie rule (more votes, then ballot order)"
    ]
    assert allocate(votes, 1, "dhondt", order=["red", "blue"]).seats == {"red": 1, "blue": 0}


def test_tie_on_remainder_resolved_by_ballot_order() -> None:
    # Hare quota 100 / 1 = 100: no automatic seats, both remainders 50.
    result = allocate({"x": 50, "y": 50}, 1, "hare")
    assert result.seats == {"x": 1, "y": 0}
    assert "'x' and 'y' tied on remainder 50" in result.ties[0]


def test_plurality_tie_for_several_seats() -> None:
    result = allocate({"a": 10, "b": 10, "c": 10, "d": 20}, 3, "plurality")
    assert result.seats == {"a": 1, "b": 1, "c": 0, "d": 1}
    assert result.ties == [
        "last 2 seats: 'a', 'b' and 'c' tied with 10 votes; "
        "'a' and 'b' won them by the tie rule (more votes, then ballot order)"
    ]


def test_equal_quotients_that_decide_nothing_are_not_reported() -> None:
    # red 300 and blue 300 both win a seat; nobody else is in the running.
    assert allocate({"red": 300, "blue": 300}, 2, "dhondt").ties == []


def test_deterministic_and_independent_of_dict_order() -> None:
    order = ["A", "B", "C", "D"]
    forward = allocate(WIKI, 8, "modified_sainte_lague", order=order)
    backward = allocate(dict(reversed(WIKI.items())), 8, "modified_sainte_lague", order=order)
    assert forward == backward
    assert list(backward.seats) == order
    assert allocate(WIKI, 8, "modified_sainte_lague", order=order) == forward


# --- edges and errors -------------------------------------------------------


def test_zero_seats_or_no_passing_party_gives_all_zero() -> None:
    assert allocate(WIKI, 0, "dhondt").seats == dict.fromkeys(WIKI, 0)
    nobody = allocate({"a": 10, "b": 10}, 3, "hare", threshold=Threshold.of(60, 20))
    assert nobody.passing == []
    assert nobody.seats == {"a": 0, "b": 0}


def test_order_adds_choices_without_votes() -> None:
    result = allocate({"b": 10}, 2, "sainte_lague", order=["a", "b", "c"])
    assert list(result.seats) == ["a", "b", "c"]
    assert result.seats == {"a": 0, "b": 2, "c": 0}


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="'borda'") as error:
        allocate({"a": 1}, 1, "borda")
    assert all(method in str(error.value) for method in METHODS)


def test_negative_votes() -> None:
    with pytest.raises(ValueError, match="negative"):
        allocate({"a": 10, "b": -1}, 1, "dhondt")


def test_votes_for_choice_missing_from_order() -> None:
    with pytest.raises(ValueError, match="'b'"):
        allocate({"a": 10, "b": 5}, 1, "dhondt", order=["a"])


# --- properties -------------------------------------------------------------

CHOICES = ["a", "b", "c", "d", "e", "f"]


@given(
    votes=st.dictionaries(st.sampled_from(CHOICES), st.integers(0, 5000), max_size=6),
    seats=st.integers(0, 30),
    method=st.sampled_from(METHODS),
    pct=st.one_of(
        st.integers(0, 20),
        st.fractions(min_value=0, max_value=20, max_denominator=100),
        st.sampled_from([4.9, 7.1, "5", "0.3"]),
    ),
    base=st.one_of(st.none(), st.integers(0, 30_000)),  # None: the valid votes
)
def test_every_seat_is_filled_and_only_by_passing_parties(
    votes: dict[str, int],
    seats: int,
    method: str,
    pct: Fraction | int | float | str,
    base: int | None,
) -> None:
    base = sum(votes.values()) if base is None else base
    result = allocate(votes, seats, method, threshold=Threshold.of(pct, base))
    contenders = [c for c in result.passing if votes[c] > 0]
    if not contenders:
        expected = 0
    elif method == "plurality":
        expected = min(seats, len(contenders))
    else:
        expected = seats
    assert sum(result.seats.values()) == expected
    assert list(result.seats) == list(votes)
    for choice, won in result.seats.items():
        if choice not in result.passing or votes[choice] == 0:
            assert won == 0
    # An independent expectation, not the code compared with itself: the naive allocation.
    assert result.seats == naive_allocation(votes, seats, method, result.passing)



# --- an independent, deliberately naive allocation, and a national-size case ----------------


def naive_divisor(method: str, won: int) -> Fraction:
    if method == "dhondt":
        return Fraction(won + 1)
    if method == "modified_sainte_lague" and won == 0:
        return Fraction(7, 5)
    return Fraction(2 * won + 1)


def naive_allocation(votes: dict[str, int], seats: int, method: str,
                     passing: list[str]) -> dict[str, int]:
    """Straight from the textbook, one seat at a time, Fractions everywhere; ties by more
    votes, then ballot order (the order of ``votes``)."""
    order = list(votes)
    won = dict.fromkeys(order, 0)
    contenders = [c for c in order if c in passing and votes[c] > 0]
    if not contenders or not seats:
        return won

    def best(value: dict[str, Fraction], *, smallest: bool = False) -> str:
        def rank(c: str) -> tuple[Fraction, int, int]:
            if smallest:
                return (value[c], votes[c], -order.index(c))
            return (-value[c], -votes[c], order.index(c))
        return min(value, key=rank)

    if method == "plurality":
        for _ in range(min(seats, len(contenders))):
            left = {c: Fraction(votes[c]) for c in contenders if not won[c]}
            won[best(left)] = 1
        return won
    if method in ("dhondt", "sainte_lague", "modified_sainte_lague"):
        for _ in range(seats):
            won[best({c: votes[c] / naive_divisor(method, won[c]) for c in contenders})] += 1
        return won
    total = sum(votes[c] for c in contenders)
    quota = {"hare": Fraction(total, seats), "hare_to_largest_parties": Fraction(total, seats),
             "droop": Fraction(total // (seats + 1) + 1),
             "hagenbach_bischoff": Fraction(total, seats + 1)}[method]
    for c in contenders:
        won[c] = int(votes[c] / quota)
    if method == "hare_to_largest_parties":  # Georgia: what is left goes to the biggest
        unseated = {c: Fraction(votes[c]) for c in contenders}
        while sum(won.values()) < seats:
            chosen = best(unseated)
            won[chosen] += 1
            del unseated[chosen]
        return won
    while sum(won.values()) < seats:
        won[best({c: votes[c] - quota * won[c] for c in contenders})] += 1
    while sum(won.values()) > seats:
        won[best({c: votes[c] - quota * (won[c] - 1) for c in contenders if won[c]},
                 smallest=True)] -= 1
    return won


@pytest.mark.parametrize("method", METHODS)
def test_a_thousand_seats_match_the_naive_allocation(method: str) -> None:
    votes = {f"p{i}": 100_003 * (i + 1) ** 2 + 7_919 * i for i in range(10)}
    votes["tied"] = votes["p3"]  # an exact tie somewhere in the ranking
    result = allocate(votes, 1_000, method)
    assert result.seats == naive_allocation(votes, 1_000, method, result.passing)


@pytest.mark.parametrize("method", ["dhondt", "sainte_lague", "modified_sainte_lague"])
def test_a_hundred_thousand_seats_among_ten_parties(method: str) -> None:
    """National scale (once ten seconds of Fractions). Checked by the defining property of a
    divisor method instead of a second allocation: every seat won has a quotient at least as
    large as any seat not won, min(v / d(s - 1)) >= max(v / d(s)), and all seats are given."""
    votes = {f"p{i}": 1_000_003 * (i + 1) + 7_919 * i * i for i in range(10)}
    seats = allocate(votes, 100_000, method).seats
    assert sum(seats.values()) == 100_000
    last_won = min(Fraction(votes[c]) / naive_divisor(method, n - 1) for c, n in seats.items())
    next_one = max(Fraction(votes[c]) / naive_divisor(method, n) for c, n in seats.items())
    assert last_won >= next_one
    if method == "dhondt":  # and close to proportional: within one seat of the exact share
        total = sum(votes.values())
        for c, n in seats.items():
            assert abs(n - Fraction(votes[c] * 100_000, total)) < 1


@pytest.mark.parametrize("method", ["hare", "droop", "hagenbach_bischoff"])
def test_a_hundred_thousand_seats_by_largest_remainder(method: str) -> None:
    votes = {f"p{i}": 1_000_003 * (i + 1) + 7_919 * i * i for i in range(10)}
    result = allocate(votes, 100_000, method)
    assert result.seats == naive_allocation(votes, 100_000, method, result.passing)


@pytest.mark.parametrize(("value", "text"), [
    (Fraction(546, 5), "109.2"), (Fraction(109), "109"), (Fraction(1, 3), "1/3"),
    (Fraction(1, 8), "0.125"), (Fraction(-7, 20), "-0.35"), (Fraction(3, 1000), "0.003"),
])
def test_decimal_text_is_exact(value: Fraction, text: str) -> None:
    assert decimal_text(value) == text
