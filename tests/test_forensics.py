"""`ledger forensics` and GET /v1/elections/{id}/forensics: every figure of DESIGN.md's
"Observers' analysis" against hand-worked values on a small night, and against a naive
computation written here (fractions, plain loops) over Russia's 2016 station rows: a
deterministic twentieth of the table in the default suite, the whole table with -m slow."""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from projections.forensics import chi_square_survival, fingerprint_grid
from tests import duma
from tests.conftest import LedgerUnderTest, definition, ev, protocol
from tests.serving import Server

needs_data = pytest.mark.skipif(
    not duma.ZIP.exists() and os.environ.get("CI") != "true",  # under CI a missing file fails
    reason=f"the Duma 2016 table is not at {duma.ZIP}",
)


# -- the chi-square survival function ---------------------------------------------------------

def chi_square_pdf(x: float, dof: int) -> float:
    k = dof / 2
    return math.exp((k - 1) * math.log(x) - x / 2 - k * math.log(2) - math.lgamma(k))


def survival_by_integration(x: float, dof: int, steps: int = 20_000) -> float:
    """1 - the integral of the density from 0 to x, by Simpson's rule in u = sqrt(t) (the
    integrand f(u^2)*2u is smooth at 0 for dof >= 2, where f itself may not be)."""
    h = math.sqrt(x) / steps

    def integrand(u: float) -> float:
        return chi_square_pdf(u * u, dof) * 2 * u if u else 0.0

    total = integrand(steps * h) + sum(
        (4 if i % 2 else 2) * integrand(i * h) for i in range(1, steps))
    return 1 - total * h / 3


def test_chi_square_survival_against_a_printed_table_and_integration() -> None:
    # Upper-tail critical values for 9 degrees of freedom, as printed in the NIST/SEMATECH
    # e-Handbook of Statistical Methods, table 1.3.6.7.4 (three decimals).
    for critical, tail in [(14.684, 0.10), (16.919, 0.05), (19.023, 0.025), (21.666, 0.01),
                           (27.877, 0.001)]:
        assert chi_square_survival(critical, 9) == pytest.approx(tail, rel=2e-4)
    assert chi_square_survival(3.841459, 1) == pytest.approx(0.05, rel=1e-5)  # 1.96 squared
    for x in (0.5, 3.0, 8.0, 24.0, 40.0):  # two degrees of freedom: exactly e^(-x/2)
        assert chi_square_survival(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-14)
    for dof in (3, 4, 9, 10):
        for x in (0.7, 4.2, 9.0, 16.0, 24.0, 33.3):
            assert chi_square_survival(x, dof) == pytest.approx(
                survival_by_integration(x, dof), rel=1e-8, abs=1e-13)
    assert chi_square_survival(0.0, 9) == 1.0
    assert chi_square_survival(8928.0, 9) == 0.0  # underflows cleanly, never NaN


# -- a small night, worked by hand --------------------------------------------------------------

def stations_of_the_small_night() -> list[dict[str, Any]]:
    def station(name: str, region: str, voters: int) -> dict[str, Any]:
        return ev("StationRegistered", "01T12:05:00", station=name, region=region,
                  registered_voters=voters)

    return [definition(), station("A1", "R1", 200), station("A2", "R1", 300),
            station("B1", "R2", 400), station("B2", "R2", 250), station("C1", "R2", 0),
            station("C2", "R1", 100), station("D1", "R1", 50)]


SMALL_NIGHT = [
    # A1's first protocol, replaced half an hour later by the same commission.
    protocol("A1", "07T20:00:00", {"a": 100, "b": 50, "c": 10, "d": 0}),
    protocol("A1", "07T20:30:00", {"a": 120, "b": 37, "c": 11, "d": 2}),
    protocol("A2", "07T20:10:00", {"a": 150, "b": 60, "c": 29, "d": 1}, invalid=10),
    protocol("B1", "07T20:20:00", {"a": 90, "b": 110, "c": 58, "d": 42}),
    protocol("B1", "07T20:25:00", {"a": 80, "b": 120, "c": 58, "d": 42}, by="watch"),
    # The protocol's own list (260 at the close) is the turnout's base, not the 250 registered.
    protocol("B2", "07T21:00:00", {"a": 52, "b": 39, "c": 13, "d": 13}, registered=260),
    protocol("C1", "07T20:40:00", {"a": 10, "b": 5, "c": 0, "d": 0}),   # no registered voters
    protocol("C2", "07T20:50:00", {"a": 0, "b": 0, "c": 0, "d": 0}, invalid=3),  # no valid vote
    protocol("D1", "07T20:45:00", {"a": 40, "b": 20, "c": 0, "d": 0}),  # 60 cast of 50: 120%
]


def zeros_but(**at: int) -> list[int]:
    histogram = [0] * 101
    for k, n in at.items():
        histogram[int(k[1:])] = n
    return histogram


def test_forensics_of_a_small_night_worked_by_hand(ledger: LedgerUnderTest) -> None:
    ledger.append(*stations_of_the_small_night(), *SMALL_NIGHT[:-1])
    time.sleep(0.05)
    between = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    ledger.append(SMALL_NIGHT[-1])  # D1's protocol comes in a later batch
    result = ledger.query("forensics")
    # The tally's votes: a 120+150+90+52+10+40 = 462 leads b 37+60+110+39+5+20 = 271.
    assert result["choice"] == "a"
    # Counted: A1 (its later protocol), A2, B1, B2, D1. C1 has no registered voters, C2 no
    # valid vote.
    assert result["stations"] == 5
    # Turnout: A1 170/200 = 85%, A2 250/300 = 83.3%, B1 300/400 = 75%, B2 117/260 = 45%,
    # D1 60/50 = 120% (a whole number, but not one of 0..100).
    assert result["turnout_percent"] == zeros_but(k85=1, k75=1, k45=1)
    # Share of a: 120/170 = 70.6%, 150/240 = 62.5%, 90/300 = 30%, 52/117 = 44.4%, 40/60 = 66.7%.
    assert result["share_percent"] == zeros_but(k30=1)
    # gcd(100, R) + 1 over R + 1, for R = 200, 300, 400, 260 and 50.
    expected = Fraction(101, 201) + Fraction(101, 301) + Fraction(101, 401) + Fraction(21, 261) + 1
    assert result["integer_turnout"]["observed"] == 3
    assert result["integer_turnout"]["expected"] == pytest.approx(float(expected), rel=1e-15)
    assert result["fingerprint"] == [[45, 44, 1], [75, 30, 1], [83, 62, 1], [85, 70, 1],
                                     [100, 66, 1]]
    # Counts >= 10: 120 37 11 | 150 60 29 | 90 110 58 42 | 52 39 13 13 | 40 20.
    assert result["last_digits"] == [7, 1, 2, 2, 0, 0, 0, 1, 1, 2]
    # (10 * (49 + 1 + 4 + 4 + 1 + 1 + 4) - 16^2) / 16 = 24
    assert result["chi_square"] == 24.0
    assert result["p_value"] == pytest.approx(survival_by_integration(24.0, 9), rel=1e-8)
    assert 0.004 < result["p_value"] < 0.005  # between the table's 0.005 (23.589) and 0.001

    share_of_b = ledger.query("forensics", "--choice", "b")
    assert share_of_b["choice"] == "b"
    # b: 37/170 = 21.8%, 60/240 = 25%, 110/300 = 36.7%, 39/117 = 33.3%, 20/60 = 33.3%.
    assert share_of_b["share_percent"] == zeros_but(k25=1)
    assert [cell[1] for cell in share_of_b["fingerprint"]] == [33, 36, 25, 21, 33]
    assert share_of_b["last_digits"] == result["last_digits"]

    # As of 20:29, before A1's correction, D1 and B2: A1 counts with its first protocol,
    # 160 of 200 = 80%, its share of a 100/160 = 62.5%; A2 and B1 as above.
    early = ledger.query("forensics", "--as-of", "2030-04-07T20:29:00+02:00")
    assert early["stations"] == 3
    assert early["turnout_percent"] == zeros_but(k80=1, k75=1)
    assert early["fingerprint"] == [[75, 30, 1], [80, 62, 1], [83, 62, 1]]
    # Counts >= 10: 100 50 10 | 150 60 29 | 90 110 58 42.
    assert early["last_digits"] == [7, 0, 1, 0, 0, 0, 0, 0, 1, 1]

    # As the ledger knew it before D1's batch: the same night without D1.
    known = ledger.query("forensics", "--known-at", between)
    assert known["stations"] == 4 and known["fingerprint"] == result["fingerprint"][:-1]
    assert known["integer_turnout"]["expected"] == pytest.approx(float(expected - 1), rel=1e-15)

    # The observer's parallel count: its one protocol (B1), where b leads: 120/300 = 40%.
    watch = ledger.query("forensics", "--reporter", "watch")
    assert watch["choice"] == "b"
    assert (watch["stations"], watch["fingerprint"]) == (1, [[75, 40, 1]])
    assert watch["share_percent"] == zeros_but(k40=1)
    assert ledger.query("forensics", "--scope", "R2")["stations"] == 2  # B1 and B2

    # The final stage leaves out the station an appeal contests.
    ledger.append(ev("AppealFiled", "08T10:00:00", appeal="x", filed_by="watch",
                     stations=["B1"], grounds="stuffing", demand="recount"))
    final = ledger.query("forensics", "--stage", "final")
    assert final["stations"] == 4 and [75, 30, 1] not in final["fingerprint"]
    assert ledger.query("forensics")["stations"] == 5

    grid = fingerprint_grid(result["fingerprint"])
    assert len(grid) == 101 and all(len(row) == 101 for row in grid)
    assert grid[30][75] == 1 and sum(map(sum, grid)) == 5


def test_forensics_before_any_protocol_and_bad_options(ledger: LedgerUnderTest) -> None:
    ledger.append(*stations_of_the_small_night())
    empty = ledger.query("forensics")
    assert empty["stations"] == 0 and empty["choice"] == "a"  # no votes: the first on the ballot
    assert empty["turnout_percent"] == [0] * 101 and empty["fingerprint"] == []
    assert empty["last_digits"] == [0] * 10
    assert empty["chi_square"] is None and empty["p_value"] is None
    refused = ledger.run("forensics", "--choice", "zz")
    assert refused.code == 2 and refused.err.count("\n") == 1 and "--choice" in refused.err
    assert ledger.run("forensics", "--scope", "Nowhere").code == 2
    table = ledger.run("forensics")
    assert table.code == 0 and "0 stations" in table.out


# -- against a naive computation over Russia's 2016 rows ---------------------------------------

def naive_forensics(rows: list[duma.Row], choice: str | None = None) -> dict[str, Any]:
    """DESIGN.md's definitions, computed the long way over the table's rows."""
    totals = Counter()
    for row in rows:
        totals.update(row.votes)
    choice = choice or max(duma.CHOICES, key=lambda c: (totals[c], -duma.CHOICES.index(c)))
    counted = [r for r in rows if r.registered > 0 and r.valid > 0]
    turnout, share = [0] * 101, [0] * 101
    for r in counted:
        t = Fraction(100 * r.cast, r.registered)
        if t.denominator == 1 and t <= 100:
            turnout[int(t)] += 1
        s = Fraction(100 * r.votes[choice], r.valid)
        if s.denominator == 1:
            share[int(s)] += 1
    expected = sum((Fraction(math.gcd(100, r.registered) + 1, r.registered + 1) for r in counted),
                   Fraction(0))
    cells = Counter((min(100, math.floor(Fraction(100 * r.cast, r.registered))),
                     math.floor(Fraction(100 * r.votes[choice], r.valid))) for r in counted)
    digits = [0] * 10
    for r in counted:
        for n in r.votes.values():
            if n >= 10:
                digits[int(str(n)[-1])] += 1
    n = sum(digits)
    chi = sum((Fraction(o) - Fraction(n, 10)) ** 2 / Fraction(n, 10) for o in digits)
    return {"choice": choice, "stations": len(counted), "turnout_percent": turnout,
            "share_percent": share, "observed": sum(turnout), "expected": float(expected),
            "fingerprint": [[t, s, k] for (t, s), k in sorted(cells.items())],
            "last_digits": digits, "chi_square": float(chi)}


def assert_agrees(result: dict[str, Any], naive: dict[str, Any]) -> None:
    assert result["choice"] == naive["choice"]
    assert result["stations"] == naive["stations"]
    assert result["turnout_percent"] == naive["turnout_percent"]
    assert result["share_percent"] == naive["share_percent"]
    assert result["integer_turnout"]["observed"] == naive["observed"]
    assert result["integer_turnout"]["expected"] == pytest.approx(naive["expected"], rel=1e-12)
    assert result["fingerprint"] == naive["fingerprint"]
    assert result["last_digits"] == naive["last_digits"]
    assert result["chi_square"] == pytest.approx(naive["chi_square"], rel=1e-12)


@needs_data
@pytest.mark.parametrize("backend", ["sqlite"])  # the read side is the same for both
def test_forensics_of_a_twentieth_of_duma_2016_as_of_two_moments(ledger: LedgerUnderTest) -> None:
    rows = duma.rows(every=20)  # 4,844 stations from every region
    # Protocols arrive one a minute, in the table's order.
    minutes = {row.station: float(i) for i, row in enumerate(rows)}
    ledger.append(duma.definition(), *duma.night(rows, minutes))
    result = ledger.query("forensics")
    naive = naive_forensics(rows)
    assert naive["choice"] == "ur" and naive["stations"] > 4_800
    assert_agrees(result, naive)
    assert result["p_value"] == pytest.approx(chi_square_survival(naive["chi_square"], 9))
    assert_agrees(ledger.query("forensics", "--choice", "kprf"), naive_forensics(rows, "kprf"))
    # As of the 1,000th minute: only the first 1,001 protocols are visible.
    at = duma.POLLS_CLOSE + timedelta(minutes=1000, seconds=30)
    early = ledger.query("forensics", "--as-of", at.isoformat())
    assert_agrees(early, naive_forensics(rows[:1001]))


@needs_data
@pytest.mark.slow
def test_forensics_of_the_whole_duma_2016_table(tmp_path: Path, capsys: pytest.CaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_real_data import MAP, extract, imported

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGER_READ_MODELS", str(tmp_path / "read-models.db"))
    ledger = LedgerUnderTest(str(tmp_path / "ledger.db"), tmp_path, capsys, "sqlite")
    assert MAP.exists()
    imported(ledger, extract(tmp_path, None))
    rows = duma.rows()
    assert len(rows) == 96_871
    naive = naive_forensics(rows)
    result = ledger.query("forensics")
    assert_agrees(result, naive)
    assert result["stations"] == 96_868
    assert_agrees(ledger.query("forensics", "--choice", "kprf"), naive_forensics(rows, "kprf"))


# -- over HTTP ---------------------------------------------------------------------------------

def test_forensics_and_estimate_over_http(ledger: LedgerUnderTest) -> None:
    ledger.append(*stations_of_the_small_night(), *SMALL_NIGHT)
    server = Server(ledger.db, ledger.directory).start()
    try:
        base = "/v1/elections/council-2030"
        for path, args in [
            ("/forensics", ["forensics"]),
            ("/forensics?choice=b&as_of=2030-04-07T20%3A29%3A00%2B02%3A00",
             ["forensics", "--choice", "b", "--as-of", "2030-04-07T20:29:00+02:00"]),
            ("/forensics?reporter=watch&stage=final", ["forensics", "--reporter", "watch",
                                                        "--stage", "final"]),
            ("/forensics?scope=R2", ["forensics", "--scope", "R2"]),
            ("/estimate", ["estimate"]),
            ("/estimate?confidence=0.8&as_of=2030-04-07T20%3A29%3A00%2B02%3A00",
             ["estimate", "--confidence", "0.8", "--as-of", "2030-04-07T20:29:00+02:00"]),
        ]:
            answer = server.get(base + path)
            assert answer.status == 200, (path, answer.body)
            assert answer.json() == ledger.query(*args), path
        for path, field in [("/forensics?choice=zz", None), ("/forensics?stage=halfway", "stage"),
                            ("/forensics?colour=red", "colour"), ("/estimate?confidence=2",
                                                                  "confidence"),
                            ("/estimate?confidence=nan", "confidence"),
                            ("/estimate?choice=a", "choice"), ("/forensics?as_of=soon", "as_of"),
                            ("/estimate?scope=Nowhere", None)]:
            answer = server.get(base + path)
            assert answer.status == 400, (path, answer.body)
            problems = answer.json()["problems"]
            assert problems and all(set(p) == {"line", "field", "reason"} for p in problems)
            assert field is None or field in [p["field"] for p in problems], problems
        for path in ("/v1/elections/nope/forensics", "/v1/elections/nope/estimate"):
            answer = server.get(path)
            assert answer.status == 404 and answer.json()["problems"], path
    finally:
        assert server.stop() == 0, server.log()
