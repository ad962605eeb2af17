"""Importing OpenElections precinct CSVs: the real Montana 2020 file, reconciled with the
county file, plus small hand-written files for every rule of the mapping."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.domain.events import ElectionDefined, ProtocolIssued, StationRegistered
from ledger.input.openelections import read_openelections
from ledger.input.reader import Line
from ledger.store.application import Ledger
from ledger.store.config import locate
from projections.apply import rebuild
from projections.moment import Moment
from projections.schema import connect
from projections.tally import load_election, tally
from tests.conftest import (
    IN_CI,
    PG_SERVER,
    SHARED,
    LedgerUnderTest,
    require_postgres,
    require_shared,
)

DATA = SHARED / "openelections"
PRECINCTS = DATA / "20201103__mt__general__precinct.csv"
COUNTIES = DATA / "20201103__mt__general__county.csv"
needs_shared = pytest.mark.skipif(
    not IN_CI and (not PRECINCTS.exists() or not COUNTIES.exists()),
    reason=f"the Montana 2020 OpenElections files are not in {DATA}",
)

PRESIDENT = "mt-2020-11-03/president"
GOVERNOR = "mt-2020-11-03/governor"
# From /work/shared/openelections/README.md ("Verification"), checked there with python csv.
STATEWIDE = {
    PRESIDENT: {"Donald Trump": 343_602, "Joe Biden": 244_786, "Jo Jorgensen": 15_252},
    GOVERNOR: {"Greg Gianforte": 328_548, "Mike Cooney": 250_860, "Lyman Bishop": 24_179},
}
OFFICES = {PRESIDENT: "President", GOVERNOR: "Governor"}
# 15,803 rows fold into 6,739 protocols (one per contest and station), 136 contests.
ELECTIONS, PROTOCOLS = 136, 6_739


# --- the real Montana file, imported once per backend ------------------------------------


@dataclass
class Imported:
    ledger: Ledger
    db: str
    backend: str
    read_models: Path
    accepted: int
    seconds: float

    def stored_events(self) -> int:
        return LedgerUnderTest(self.db, self.read_models.parent, None, self.backend).stored_events()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def montana(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imported]:
    require_shared(PRECINCTS, COUNTIES)
    if request.param == "postgres":
        require_postgres()
    directory = tmp_path_factory.mktemp(f"montana-{request.param}")
    schema = f"test_oe_{uuid.uuid4().hex[:12]}"
    db = str(directory / "ledger.db") if request.param == "sqlite" else f"{PG_SERVER}?schema={schema}"
    ledger = Ledger(locate(db))
    started = time.perf_counter()
    appended = ledger.append(read_openelections(PRECINCTS))
    seconds = time.perf_counter() - started
    rebuild(directory / "read-models.db", ledger)
    yield Imported(ledger, db, request.param, directory / "read-models.db", appended.count, seconds)
    ledger.close()
    if request.param == "postgres":
        with psycopg.connect(PG_SERVER, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def county_file(office: str) -> dict[str, dict[str, int]]:
    """county -> candidate -> votes, exactly as the county file states them."""
    result: dict[str, dict[str, int]] = {}
    with COUNTIES.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["office"] == office:
                result.setdefault(row["county"], {})[row["candidate"]] = int(row["votes"])
    return result


def by_name(result: dict[str, Any]) -> dict[str, int]:
    return {result["names"][choice]: votes for choice, votes in result["votes"].items()}


@pytest.mark.parametrize("election", [PRESIDENT, GOVERNOR])
def test_county_tallies_equal_the_county_file(montana: Imported, election: str) -> None:
    expected = county_file(OFFICES[election])
    assert len(expected) == 56
    with connect(montana.read_models) as db:
        contest = load_election(db, election)
        for county, candidates in expected.items():
            result = tally(db, contest, Moment(), scope=county)
            assert by_name(result) == candidates, county
            assert result["stations_reporting"] == result["stations_total"] > 0
            assert result["invalid"] == 0 and result["ballots_cast"] == sum(candidates.values())
        statewide = tally(db, contest, Moment())
    assert by_name(statewide) == STATEWIDE[election]
    assert statewide["stations_reporting"] == statewide["stations_total"] == 663
    assert statewide["registered_voters"] == 0 and statewide["turnout_pct"] is None
    assert statewide["status"] == "complete"


def test_superintendent_differs_from_the_county_file_only_where_documented(montana: Imported) -> None:
    # README, "Verification": Jefferson's county row and its precincts disagree; the ledger
    # holds the precinct protocols, so it shows the precinct sums.
    expected = county_file("Superintendent of Public Instruction")
    with connect(montana.read_models) as db:
        contest = load_election(db, "mt-2020-11-03/superintendent-of-public-instruction")
        differences = {}
        for county, candidates in expected.items():
            found = by_name(tally(db, contest, Moment(), scope=county))
            if found != candidates:
                differences[county] = {name: (candidates[name], found[name]) for name in candidates}
    assert differences == {"Jefferson": {
        "Melissa Romano": (2_995, 400), "Elsie Arntzen": (4_779, 5_036),
        "Kevin Leatherbarrow": (284, 2_580),
    }}


def test_the_import_stores_every_contest_station_and_protocol(montana: Imported) -> None:
    assert montana.accepted == ELECTIONS + 2 * PROTOCOLS
    assert montana.stored_events() == ELECTIONS + 2 * PROTOCOLS


def test_reimporting_the_file_is_a_no_op(montana: Imported) -> None:
    head = montana.ledger.head()
    again = montana.ledger.append(read_openelections(PRECINCTS))
    assert (again.count, again.outcome.already_recorded) == (0, ELECTIONS + 2 * PROTOCOLS)
    assert again.outcome.problems == [] and again.outcome.flagged == []
    assert montana.ledger.head() == head
    assert montana.stored_events() == ELECTIONS + 2 * PROTOCOLS


def test_the_command_line_answers_from_the_imported_ledger(
    montana: Imported, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_READ_MODELS", str(montana.read_models))
    cli = LedgerUnderTest(montana.db, montana.read_models.parent, capsys, montana.backend)
    elections = cli.query("elections")["elections"]
    assert len(elections) == ELECTIONS
    assert elections[:2] == [
        {"id": PRESIDENT, "name": "President (MT 2020-11-03)"},
        {"id": "mt-2020-11-03/u-s-senate", "name": "U.S. Senate (MT 2020-11-03)"},
    ]
    house = {"id": "mt-2020-11-03/u-s-house/district-1", "name": "U.S. House district 1 (MT 2020-11-03)"}
    assert house in elections
    result = cli.query("tally", "--election", PRESIDENT, "--scope", "Yellowstone")
    assert by_name(result) == county_file("President")["Yellowstone"]
    assert result["status"] == "complete"
    rerun = cli.run("import", "openelections", str(PRECINCTS))
    assert rerun.code == 0, rerun.err
    assert rerun.out.startswith(f"appended 0 event(s); {ELECTIONS + 2 * PROTOCOLS} already recorded")


# --- the real file, read without a ledger ---------------------------------------------------


@needs_shared
def test_events_come_definitions_first_and_match_the_documented_quirks() -> None:
    lines = list(read_openelections(PRECINCTS))
    assert [line.problem for line in lines if line.problem] == []
    kinds = [type(line.event).__name__ for line in lines]
    assert kinds == (["ElectionDefined"] * ELECTIONS + ["StationRegistered"] * PROTOCOLS
                     + ["ProtocolIssued"] * PROTOCOLS)
    events = [line.event for line in lines]
    first = events[ELECTIONS + PROTOCOLS]
    assert first == ProtocolIssued(
        election=PRESIDENT, occurred_at=first.occurred_at,
        station="Beaverhead/PRECINCT 01", reported_by="openelections", ballots_cast=373, invalid=0,
        votes={"joe-biden": 166, "donald-trump": 192, "jo-jorgensen": 15},
        registered_voters=None, ballots_issued=None,
    )
    assert first.occurred_at.isoformat() == "2020-11-03T20:00:00-07:00"
    assert lines[ELECTIONS + PROTOCOLS].number == 2
    assert lines[ELECTIONS + PROTOCOLS].text == b"Beaverhead,PRECINCT 01,President,,DEM,Joe Biden,166"
    stations = [e for e in events if isinstance(e, StationRegistered)]
    assert len({e.station for e in stations}) == 672  # 678 (county, precinct) spellings
    assert len({e.region for e in stations}) == 56  # "LINCOLN" rows join "Lincoln"
    assert all(e.registered_voters is None for e in stations)
    # One Missoula row says MISSOULA: the precinct's three candidates stay one protocol.
    hd98 = [e for e in events if isinstance(e, ProtocolIssued) and e.election.endswith("house/district-98")
            and e.station == "Missoula/TARGET RNG 98"]
    assert [sorted(e.votes) for e in hd98] == [["nancy-burgoyne", "richard-armerding", "willis-curdy"]]
    # Party cells that repeat the precinct name are not parties.
    parties = {(e.election, c.name): c.party for e in events if isinstance(e, ElectionDefined)
               for c in e.choices}
    assert parties["mt-2020-11-03/state-senate/district-44", "Theresa Manzella"] is None
    assert parties["mt-2020-11-03/state-house/district-70", "Julie Dooling"] == "REP"
    assert parties["mt-2020-11-03/state-house/district-58", "Seth Berglee"] is None
    assert set(parties.values()) == {"REP", "DEM", "LIB", None}


# --- small files written by hand ------------------------------------------------------------

HEADER = "county,precinct,office,district,party,candidate,votes"
PLAIN = [
    HEADER,
    "Lake,P 1,Governor,,REP,Ann Roe,120",
    "Lake,P 1,Governor,,DEM,Bob Doe,80",
    "Lake,P 2,Governor,,REP,Ann Roe,30",
    "Lake,P 2,Governor,,DEM,Bob Doe,45",
    'Hill,"P 1, North",Governor,,REP,Ann Roe,10',
    'Hill,"P 1, North",Governor,,DEM,Bob Doe,0',
    'Hill,"P 1, North",U.S. House,01,REP,Cy Poe,15',
    'Hill,"P 1, North",U.S. House,01,DEM,Di Moe,7',
]
NAME = "20301105__mt__general__precinct.csv"


def write(directory: Path, rows: list[str], *, name: str = NAME, newline: str = "\n",
          bom: bool = False) -> Path:
    path = directory / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + newline.join(rows).encode())
    return path


def read(path_or_stream: Path | io.StringIO, **options: Any) -> list[Line]:
    return list(read_openelections(path_or_stream, **options))


def problems(lines: list[Line]) -> list[str]:
    return [str(line.problem) for line in lines if line.problem]


def test_a_plain_file_maps_rows_to_contests_stations_and_protocols(tmp_path: Path) -> None:
    lines = read(write(tmp_path, PLAIN))
    assert problems(lines) == []
    events = [line.event for line in lines]
    assert [(line.number, type(line.event).__name__) for line in lines] == [
        (2, "ElectionDefined"), (8, "ElectionDefined"),
        (2, "StationRegistered"), (4, "StationRegistered"), (6, "StationRegistered"),
        (8, "StationRegistered"),
        (2, "ProtocolIssued"), (4, "ProtocolIssued"), (6, "ProtocolIssued"), (8, "ProtocolIssued"),
    ]
    governor, house = events[0], events[1]
    assert isinstance(governor, ElectionDefined) and isinstance(house, ElectionDefined)
    assert (governor.election, governor.name) == ("mt-2030-11-05/governor", "Governor (MT 2030-11-05)")
    assert (house.election, house.name) == ("mt-2030-11-05/u-s-house/district-1",
                                            "U.S. House district 1 (MT 2030-11-05)")
    assert (governor.method, governor.seats, governor.threshold_pct, governor.authority) == (
        "plurality", 1, 0.0, "openelections")
    assert [(c.id, c.name, c.party) for c in governor.choices] == [
        ("ann-roe", "Ann Roe", "REP"), ("bob-doe", "Bob Doe", "DEM")]
    assert events[4] == StationRegistered(
        election="mt-2030-11-05/governor", occurred_at=events[4].occurred_at,
        station="Hill/P 1, North", region="Hill", registered_voters=None)
    hill = events[8]
    assert isinstance(hill, ProtocolIssued)
    assert (hill.event_id, hill.station, hill.votes, hill.ballots_cast, hill.invalid) == (
        None, "Hill/P 1, North", {"ann-roe": 10, "bob-doe": 0}, 10, 0)
    assert lines[8].text == b'Hill,"P 1, North",Governor,,REP,Ann Roe,10'


def test_crlf_bom_shuffled_and_extra_columns_give_the_same_events(tmp_path: Path) -> None:
    plain = read(write(tmp_path, PLAIN))
    order = [6, 3, 0, 5, 2, 4, 1]  # votes first, county in the middle
    shuffled = []
    for row in csv.reader(PLAIN):
        cells = [row[i] for i in order] + (["absentee"] if row[0] == "county" else ["3"])
        shuffled.append(",".join(f'"{c}"' if "," in c else c for c in cells))
    shuffled[0] = shuffled[0].upper()  # header names are matched whatever their case
    (tmp_path / "crlf").mkdir()
    variant = read(write(tmp_path / "crlf", shuffled, newline="\r\n", bom=True))
    assert problems(variant) == []
    assert [(line.number, line.event) for line in variant] == [(line.number, line.event) for line in plain]
    assert variant[-1].text == b'15,01,Hill,Cy Poe,U.S. House,REP,"P 1, North",3'


def test_the_file_may_be_an_open_text_stream(tmp_path: Path) -> None:
    from_path = read(write(tmp_path, PLAIN))
    with (tmp_path / NAME).open(newline="") as handle:
        assert [line.event for line in read(handle)] == [line.event for line in from_path]
    unnamed = read(io.StringIO("\n".join(PLAIN)), occurred_at="2030-11-05T21:00:00-07:00")
    assert problems(unnamed) == []
    assert unnamed[0].event is not None and unnamed[0].event.election == "2030-11-05/governor"
    assert problems(read(io.StringIO("\n".join(PLAIN)))) == [
        "occurred_at: the file name does not start with the election date "
        "(like 20201103__mt__general__precinct.csv): give the time the results were issued "
        "(--occurred-at)"]


@pytest.mark.parametrize(("name", "occurred_at", "expected"), [
    (NAME, None, "2030-11-05T20:00:00-07:00"),  # 20:00 Mountain Standard Time
    ("20300604__ny__primary__precinct.csv", None, "2030-06-04T20:00:00-05:00"),
    ("20301105__zz__general__precinct.csv", None, "2030-11-05T20:00:00+00:00"),  # unknown state: UTC
    (NAME, "2030-11-06T09:30:00+01:00", "2030-11-06T09:30:00+01:00"),
])
def test_occurred_at_defaults_to_poll_closing_on_the_file_date(
    tmp_path: Path, name: str, occurred_at: str | None, expected: str
) -> None:
    events = [line.event for line in read(write(tmp_path, PLAIN, name=name), occurred_at=occurred_at)]
    assert {e.occurred_at.isoformat() for e in events if e is not None} == {expected}


def test_the_election_kind_in_the_file_name_qualifies_the_ids(tmp_path: Path) -> None:
    lines = read(write(tmp_path, PLAIN, name="20300604__ny__special__primary__erie__precinct.csv"))
    event = lines[0].event
    assert isinstance(event, ElectionDefined)
    assert (event.election, event.name) == (
        "ny-2030-06-04-special-primary/governor", "Governor (NY 2030-06-04 special primary)")


def test_a_bad_occurred_at_or_authority_is_one_problem(tmp_path: Path) -> None:
    path = write(tmp_path, PLAIN)
    assert problems(read(path, occurred_at="2030-11-05 20:00")) == [
        "occurred_at: expected an RFC 3339 timestamp with a UTC offset (like "
        "2020-11-03T20:00:00-07:00), got '2030-11-05 20:00'"]
    assert problems(read(path, authority="")) == [
        "authority: expected an id of 1-200 characters without control characters, got ''"]


TOTALS = [
    HEADER + ",absentee",
    "Lake,P 1,Registered Voters,,,,500,",
    "Lake,P 1,Ballots Cast,,,,260,40",
    "Lake,P 1,Governor,,REP,Ann Roe,120,10",
    "Lake,P 1,Governor,,DEM,Bob Doe,80,20",
    "Lake,P 1,Governor,,,Write-ins,3,0",
    "Lake,P 1,Governor,,,Over Votes,2,0",
    "Lake,P 1,Governor,,,Under Votes,5,0",
    "Lake,P 1,Governor,,,Total,210,30",
    "Lake,Total,Governor,,REP,Ann Roe,150,10",
    "LAKE,P 2,Governor,,P 2,Ann Roe,30,",
    "Lake,P 2,Governor,,DEM,Bob Doe,45,",
    "Lake,P 2,Straight Party,,REP,Republican,12,",
    "Lake,P 2,Registered Voters,,,,,",
]


def test_totals_are_skipped_and_over_and_under_votes_are_invalid(tmp_path: Path) -> None:
    lines = read(write(tmp_path, TOTALS))
    assert problems(lines) == []
    events = [line.event for line in lines]
    definition, p1, p2 = events[0], events[3], events[4]
    assert isinstance(definition, ElectionDefined)
    assert [(c.id, c.party) for c in definition.choices] == [
        ("ann-roe", "REP"), ("bob-doe", "DEM"), ("write-ins", None)]
    assert [(e.station, e.region, e.registered_voters) for e in events[1:3]] == [  # type: ignore[union-attr]
        ("Lake/P 1", "Lake", 500), ("Lake/P 2", "Lake", None)]
    assert isinstance(p1, ProtocolIssued) and isinstance(p2, ProtocolIssued)
    assert (p1.votes, p1.invalid, p1.ballots_cast, p1.registered_voters) == (
        {"ann-roe": 120, "bob-doe": 80, "write-ins": 3}, 7, 210, 500)
    assert (p2.votes, p2.invalid, p2.ballots_cast) == ({"ann-roe": 30, "bob-doe": 45}, 0, 75)
    assert len(events) == 5


def test_the_ledger_tallies_an_imported_file_with_totals_exactly(
    ledger: LedgerUnderTest, tmp_path: Path
) -> None:
    result = ledger.run("import", "openelections", str(write(tmp_path, TOTALS)))
    assert result.code == 0, result.err
    assert result.out.startswith("appended 5 event(s)") and "0 flagged" in result.out
    answer = ledger.query("tally", "--scope", "Lake")
    assert answer["votes"] == {"ann-roe": 150, "bob-doe": 125, "write-ins": 3}
    assert (answer["invalid"], answer["ballots_cast"], answer["stations_reporting"]) == (7, 285, 2)
    assert answer["registered_voters"] == 500 and answer["turnout_pct"] == 42.0


@pytest.mark.parametrize("votes", ['"1,234"', "", "abc", "12.0", "-5"])
def test_a_bad_vote_count_is_reported_by_line_and_nothing_is_stored(
    ledger: LedgerUnderTest, tmp_path: Path, votes: str
) -> None:
    rows = [*PLAIN[:3], f"Lake,P 2,Governor,,REP,Ann Roe,{votes}", *PLAIN[4:]]
    result = ledger.run("import", "openelections", str(write(tmp_path, rows)))
    shown = {'"1,234"': '"1,234"', "": '""', "abc": '"abc"', "12.0": '"12.0"', "-5": '"-5"'}[votes]
    assert result.code == 2
    assert result.err.splitlines() == [
        f"line 4: votes: expected an integer >= 0 written with digits only, got {shown}",
        "nothing was appended: fix the lines above and try again",
    ]
    assert ledger.stored_events() == 0


def test_a_bad_row_keeps_its_protocol_out_even_when_the_rest_is_kept(tmp_path: Path) -> None:
    rows = [*PLAIN[:3], "Lake,P 2,Governor,,REP,Ann Roe,abc", *PLAIN[4:]]
    lines = read(write(tmp_path, rows))
    assert problems(lines) == [
        'line 4: votes: expected an integer >= 0 written with digits only, got "abc"']
    protocols = [line.event.station for line in lines if isinstance(line.event, ProtocolIssued)]
    # A protocol missing a candidate must not reach the ledger even with skip_invalid.
    assert "Lake/P 2" not in protocols and len(protocols) == 3


def test_missing_columns_are_one_problem_on_line_1(ledger: LedgerUnderTest, tmp_path: Path) -> None:
    rows = ["county,office,district,party,candidate,total", *(r.rsplit(",", 1)[0] for r in PLAIN[1:3])]
    result = ledger.run("import", "openelections", str(write(tmp_path, rows)))
    assert result.code == 2
    assert result.err.splitlines()[0] == (
        "line 1: header: missing column(s) precinct, votes; the importer needs county, precinct, "
        "office, candidate, votes (and reads district, party if present)")
    assert len(result.err.splitlines()) == 2
    assert ledger.stored_events() == 0


@pytest.mark.parametrize(("row", "expected"), [
    ("Lake,P 2,Governor,,REP,Ann Roe,30", "line 5: candidate: a second row for 'Ann Roe' in "
     "'Governor' at Lake/P 2; each candidate has one row per precinct"),
    ("Lake,P 2,Governor,,REP,Ann Roe,30,extra", "line 5: has 8 cells, but the header has 7"),
    ("Lake,,Governor,,REP,Ann Roe,30", "line 5: precinct: is empty"),
    ("Lake,P 2,Governor,,REP,,30", "line 5: candidate: is empty"),
    ("Lake,P\t2,Governor,,REP,Ann Roe,30", "line 5: precinct: contains control characters: 'P\\t2'"),
])
def test_rows_that_cannot_be_read_are_problems(tmp_path: Path, row: str, expected: str) -> None:
    rows = [*PLAIN[:4], row, *PLAIN[4:]]
    assert problems(read(write(tmp_path, rows))) == [expected]


def test_a_row_tied_to_no_protocol_stops_every_event(tmp_path: Path) -> None:
    # Which protocol would be incomplete is unknown, so none is offered to the ledger.
    rows = [*PLAIN[:4], "Lake,P 2,Governor,REP,Ann Roe,30", *PLAIN[4:]]
    lines = read(write(tmp_path, rows))
    assert [(line.number, line.event) for line in lines] == [(5, None)]


def test_an_empty_or_undecodable_file_is_a_problem(tmp_path: Path) -> None:
    assert problems(read(write(tmp_path, []))) == [
        "line 1: header: the file is empty; expected a header line"]
    path = tmp_path / NAME
    path.write_bytes("\n".join(PLAIN[:2]).encode() + b"\nLake,P 2,Governor,,REP,Ren\xe9,3\n")
    assert problems(read(path)) == ["line 3: not valid UTF-8 (byte 27)"]


def test_memory_holds_protocols_not_rows(tmp_path: Path) -> None:
    # 4,000 rows carrying a 5 kB column the importer ignores: 20 MB of text, of which only
    # the first row of each of the 80 protocols is kept (as the text of its events).
    import tracemalloc

    notes = "x" * 5_000
    rows = [HEADER + ",notes"]
    for office in ("Governor", "Mayor"):
        for candidate in range(50):
            rows += [f"Lake,P {p},{office},,IND,C{candidate},{p},{notes}" for p in range(40)]
    path = write(tmp_path, rows)
    del rows
    tracemalloc.start()
    count = Counter(type(line.event).__name__ for line in read_openelections(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == {"ElectionDefined": 2, "StationRegistered": 80, "ProtocolIssued": 80}
    assert peak < 5 * 2**20
