"""`ledger import csv FILE --map MAP.toml`: small hand-written tables for every rule of the
map, through the real command line on both backends."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LedgerUnderTest, definition, station

LINES = [{"id": "blank", "name": "Blank"}, {"id": "spoiled", "name": "Spoiled"}]

MAP = """
election = "council-2030"
reported_by = "board"
occurred_at = "2030-04-08T06:00:00+02:00"
{extra}
station = ["Region", "Precinct"]
region = "Region"
registered_voters = "Voters"
ballots_issued = ["Issued early", "Issued on the day"]
ballots_cast = "Cast"
invalid = "Invalid"

[votes]
a = "Party A"
b = "Party B"

[lines]
blank = "Blank"
spoiled = "Spoiled"
"""
HEADER = "Region,Precinct,Voters,Issued early,Issued on the day,Cast,Invalid,Party A,Party B,Blank,Spoiled"
ROWS = [
    "North,1,1000,10,590,600,12,388,200,5,7",
    "North,2,500,0,300,300,3,200,97,1,2",
    "South,1,1500,100,800,900,20,500,380,20,0",
]


def write(directory: Path, rows: list[str], *, header: str = HEADER, extra: str = "",
          encoding: str = "utf-8", bom: bool = False, name: str = "table.csv",
          map_text: str | None = None) -> tuple[str, str]:
    table = directory / name
    data = ("\n".join([header, *rows]) + "\n").encode(encoding)
    table.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    mapping = directory / "map.toml"
    mapping.write_text(map_text if map_text is not None else MAP.format(extra=extra),
                       encoding="utf-8")
    return str(table), str(mapping)


def defined(ledger: LedgerUnderTest, **overrides: Any) -> LedgerUnderTest:
    fields = dict(protocol_lines=LINES, control_relations=["invalid = blank + spoiled"])
    fields.update(overrides)
    ledger.append(definition(**fields))
    return ledger


def test_import_sums_joins_registers_and_flags(ledger: LedgerUnderTest) -> None:
    defined(ledger)
    table, mapping = write(ledger.directory, ROWS)
    result = ledger.run("import", "csv", table, "--map", mapping, "--format", "json")
    assert result.code == 0, result.err
    summary = result.json()
    assert summary["appended"] == 6  # three stations registered, three protocols
    # Every relation holds: invalid 12 = 5 + 7, 3 = 1 + 2, 20 = 20 + 0, and each row's
    # votes + invalid = ballots cast (588 + 12 = 600, 297 + 3 = 300, 880 + 20 = 900).
    assert summary["flagged"] == []
    tally = ledger.query("tally")
    assert tally["votes"] == {"a": 388 + 200 + 500, "b": 200 + 97 + 380, "c": 0, "d": 0}
    assert tally["stations_reporting"] == 3
    n1 = ledger.query("history", "--station", "North/1")["events"]
    assert [e["type"] for e in n1] == ["StationRegistered", "ProtocolIssued"]
    assert n1[0]["event"]["registered_voters"] == 1000
    assert n1[0]["event"]["region"] == "North"
    issued = n1[1]["event"]
    assert (issued["ballots_issued"], issued["ballots_cast"], issued["invalid"]) == (600, 600, 12)
    assert issued["lines"] == {"blank": 5, "spoiled": 7}
    assert issued["event_id"].startswith("sha256:")


def test_relation_failure_in_a_row_is_flagged_with_its_line(ledger: LedgerUnderTest) -> None:
    defined(ledger)
    table, mapping = write(ledger.directory, [*ROWS[:2], "South,1,1500,100,800,900,20,500,380,15,0"])
    result = ledger.run("import", "csv", table, "--map", mapping, "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["flagged"] == ["line 4: control check: invalid = blank + spoiled: 20 ≠ 15 + 0"]


def test_reimport_is_a_no_op(ledger: LedgerUnderTest) -> None:
    defined(ledger)
    table, mapping = write(ledger.directory, ROWS)
    assert ledger.run("import", "csv", table, "--map", mapping).code == 0
    stored = ledger.stored_events()
    again = ledger.run("import", "csv", table, "--map", mapping, "--format", "json")
    assert again.code == 0, again.err
    assert again.json()["appended"] == 0
    assert again.json()["already_recorded"] == 3
    assert ledger.stored_events() == stored


def test_known_stations_are_not_registered_again(ledger: LedgerUnderTest) -> None:
    # The ledger knows North/1 with another electorate: the import reports on it, it does
    # not re-register it (which would be refused as a different registration).
    defined(ledger)
    ledger.append(station("North/1", "North", 999))
    table, mapping = write(ledger.directory, ROWS)
    result = ledger.run("import", "csv", table, "--map", mapping, "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["appended"] == 5
    n1 = ledger.query("history", "--station", "North/1")["events"]
    assert n1[0]["event"]["registered_voters"] == 999


def test_bom_and_cp1251(ledger: LedgerUnderTest) -> None:
    defined(ledger)
    header = HEADER.replace("Party A", "Партия Б")
    map_text = MAP.format(extra='encoding = "cp1251"\ndelimiter = ";"').replace(
        'a = "Party A"', 'a = "Партия Б"')
    rows = [r.replace("North", "Север").replace("South", "Юг").replace(",", ";") for r in ROWS]
    table, mapping = write(ledger.directory, rows, header=header.replace(",", ";"),
                           encoding="cp1251", map_text=map_text)
    result = ledger.run("import", "csv", table, "--map", mapping)
    assert result.code == 0, result.err
    assert ledger.query("tally")["votes"]["a"] == 1088
    assert ledger.query("history", "--station", "Север/1")["events"][0]["event"]["region"] == "Север"

    # The same table in UTF-8 with a byte-order mark: the first column is still "Region".
    table, mapping = write(ledger.directory, ROWS, bom=True, name="bom.csv")
    result = ledger.run("import", "csv", table, "--map", mapping, "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["appended"] == 6


def test_missing_column_refused_before_any_row(ledger: LedgerUnderTest) -> None:
    defined(ledger)
    header = HEADER.replace("Issued early", "Early")
    # The second row is bad too, but the header is refused before rows are read.
    table, mapping = write(ledger.directory, [ROWS[0], "North,2,x,0,0,0,0,0,0,0,0"],
                           header=header)
    result = ledger.run("import", "csv", table, "--map", mapping)
    assert result.code == 2
    assert "line 1: Issued early: no such column in the file's header" in result.err
    assert "line 3" not in result.err
    assert ledger.stored_events() == 1


def test_bad_count_names_line_and_column_and_stores_nothing(ledger: LedgerUnderTest) -> None:
    defined(ledger)
    rows = [ROWS[0], ROWS[1], "South,1,1500,100,800,900,-2,500,380,20,0",
            "South,2,1500,100,800,900,20,5.5,380,20,0"]
    table, mapping = write(ledger.directory, rows)
    result = ledger.run("import", "csv", table, "--map", mapping)
    assert result.code == 2
    lines = result.err.splitlines()
    assert 'line 4: Invalid: expected a non-negative integer, got "-2"' in lines
    assert 'line 5: Party A: expected a non-negative integer, got "5.5"' in lines
    assert "nothing was appended" in result.err
    # Atomic: the good rows before the bad ones are not stored either.
    assert ledger.stored_events() == 1
    assert "Traceback" not in result.err


def test_unknown_choice_or_line_refused_naming_the_column(ledger: LedgerUnderTest) -> None:
    defined(ledger, protocol_lines=[{"id": "blank", "name": "Blank"}],
            control_relations=[])
    map_text = MAP.format(extra="").replace('b = "Party B"', 'zz = "Party B"')
    table, mapping = write(ledger.directory, ROWS, map_text=map_text)
    result = ledger.run("import", "csv", table, "--map", mapping)
    assert result.code == 2
    assert "line 1: Party B: the map's choice 'zz' is not defined in election" in result.err
    assert "line 1: Spoiled: the map's protocol line 'spoiled' is not defined" in result.err
    assert ledger.stored_events() == 1


def test_undefined_election_and_bad_maps(ledger: LedgerUnderTest) -> None:
    table, mapping = write(ledger.directory, ROWS)
    result = ledger.run("import", "csv", table, "--map", mapping)
    assert result.code == 2
    assert "unknown election 'council-2030'; define it first" in result.err
    defined(ledger)
    for text, why in [
        (MAP.format(extra='colour = "red"'), "colour: unknown key"),
        (MAP.format(extra="").replace('invalid = "Invalid"', ""), "invalid: required key is missing"),
        (MAP.format(extra='occurred_at_column = "When"'), "give exactly one of occurred_at"),
        (MAP.format(extra='encoding = "klingon"'), "encoding: unknown encoding"),
        (MAP.format(extra="").replace('"Voters"', "3"), "registered_voters: expected a column name"),
        ("election = ", "not valid TOML"),
    ]:
        Path(mapping).write_text(text, encoding="utf-8")
        result = ledger.run("import", "csv", table, "--map", mapping)
        assert result.code == 2, text
        assert why in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1
    assert ledger.stored_events() == 1


def test_occurred_at_column_and_bad_cells(ledger: LedgerUnderTest) -> None:
    defined(ledger)
    map_text = MAP.format(extra="").replace(
        'occurred_at = "2030-04-08T06:00:00+02:00"', 'occurred_at_column = "When"')
    header = HEADER + ",When"
    rows = [ROWS[0] + ",2030-04-07T21:00:00+02:00", ROWS[1] + ",yesterday",
            ",,1000,10,590,600,12,388,200,5,7,2030-04-07T21:00:00+02:00", "North,3,1"]
    table, mapping = write(ledger.directory, rows, header=header, map_text=map_text)
    result = ledger.run("import", "csv", table, "--map", mapping)
    assert result.code == 2
    assert 'line 3: When: expected an RFC 3339 timestamp with a UTC offset, got "yesterday"' in result.err
    # Every part of the station id empty (one part may be: see the composite id test).
    assert "line 4: Region: empty (and so is Precinct); an id is needed here" in result.err
    assert "line 5: expected 12 cells as in the header, got 3" in result.err
    assert ledger.stored_events() == 1

    table, mapping = write(ledger.directory, rows[:1], header=header, map_text=map_text)
    assert ledger.run("import", "csv", table, "--map", mapping).code == 0
    events = ledger.query("history", "--station", "North/1")["events"]
    assert events[1]["occurred_at"].startswith("2030-04-07T19:00:00")


def test_invalid_encoding_is_one_line(ledger: LedgerUnderTest) -> None:
    defined(ledger)
    table, mapping = write(ledger.directory, ROWS)
    with open(table, "ab") as handle:
        handle.write(b"South,2,\xff\xfe,0,0,0,0,0,0,0,0\n")
    result = ledger.run("import", "csv", table, "--map", mapping)
    assert result.code == 2
    assert "line 5: not valid utf-8" in result.err
    assert ledger.stored_events() == 1


def test_map_without_csv_and_csv_without_map(ledger: LedgerUnderTest) -> None:
    table, _ = write(ledger.directory, ROWS)
    result = ledger.run("import", "csv", table)
    assert result.code == 2
    assert "needs --map" in result.err


# Russia 2021: 4 id columns; the remote electronic voting rows leave the last one empty.
ID_MAP = """
election = "council-2030"
reported_by = "board"
occurred_at = "2030-04-08T06:00:00+02:00"
station = ["Region", "TIK", "UIK", "Part"]
region = "Region"
ballots_cast = "Cast"
invalid = "Invalid"

[votes]
a = "Party A"
b = "Party B"
"""
ID_HEADER = "Region,TIK,UIK,Part,Cast,Invalid,Party A,Party B"


def test_a_composite_station_id_may_have_empty_parts(ledger: LedgerUnderTest) -> None:
    ledger.append(definition())
    rows = ["North,TIK 1,1,a,100,0,60,40", "North,TIK 1,1,b,50,0,25,25",
            "North,DEG,5001,,300,0,200,100", "North,DEG,5002,,200,0,150,50"]
    table, mapping = write(ledger.directory, rows, header=ID_HEADER, map_text=ID_MAP)
    result = ledger.run("import", "csv", table, "--map", mapping, "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["appended"] == 8
    remote = ledger.query("history", "--station", "North/DEG/5001/")["events"]
    assert [e["type"] for e in remote] == ["StationRegistered", "ProtocolIssued"]
    assert ledger.query("tally")["votes"] == {"a": 435, "b": 215, "c": 0, "d": 0}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_a_station_id_must_be_non_empty_and_unique(ledger: LedgerUnderTest) -> None:
    ledger.append(definition())
    rows = ["North,DEG,5001,,300,0,200,100", ",,,,1,0,1,0", "North,DEG,5001,,300,0,200,100"]
    table, mapping = write(ledger.directory, rows, header=ID_HEADER, map_text=ID_MAP)
    result = ledger.run("import", "csv", table, "--map", mapping)
    assert result.code == 2
    assert result.err.splitlines()[:3] == [
        "line 3: Region: empty (and so is TIK, UIK, Part); an id is needed here",
        "line 3: Region: empty; an id is needed here",
        "line 4: Region/TIK/UIK/Part: station 'North/DEG/5001/' is already given by line 2: "
        "one row per station",
    ]
    assert ledger.stored_events() == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_skip_invalid_imports_the_good_rows_and_writes_the_refused_ones(
    ledger: LedgerUnderTest
) -> None:
    defined(ledger)
    bad = ["South,2,1500,100,800,900,-2,500,380,20,0", 'South,3,"1,500",1,1,2,0,1,1,0,0']
    table, mapping = write(ledger.directory, [ROWS[0], bad[0], ROWS[1], bad[1], ROWS[2]])
    with open(table, "ab") as handle:  # an undecodable row sets aside that row alone
        handle.write(b"South,4,\xff,0,0,0,0,0,0,0,0\nSouth,5,10,0,2,2,0,1,1,0,0\n")
    rejects = ledger.directory / "rejects.csv"
    assert ledger.run("import", "csv", table, "--map", mapping, "--skip-invalid").code == 2
    result = ledger.run("import", "csv", table, "--map", mapping, "--skip-invalid",
                        "--rejects", str(rejects), "--format", "json")
    assert result.code == 0, result.err
    assert (result.json()["appended"], result.json()["rejected"]) == (8, 3)
    assert ledger.query("tally")["stations_reporting"] == 4
    with rejects.open(encoding="utf-8", newline="") as handle:
        refused = list(csv.reader(handle))
    assert refused[0] == ["line", "reason", *HEADER.split(",")]
    assert [(r[0], r[1]) for r in refused[1:]] == [
        ("3", 'Invalid: expected a non-negative integer, got "-2"'),
        ("5", 'Voters: expected a non-negative integer, got "1,500"'),
        ("7", "not valid utf-8 (byte 9 of the line)"),
    ]
    assert refused[2][2:] == ["South", "3", "1,500", "1", "1", "2", "0", "1", "1", "0", "0"]
    # Fixed, the rejects file imports with the same map (its two extra columns unused).
    fixed = [row for row in refused if row[0] != "7"]
    fixed[1][2 + 6], fixed[2][2 + 2] = "20", "1500"  # Invalid of line 3, Voters of line 5
    with (ledger.directory / "fixed.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(fixed)
    again = ledger.run("import", "csv", str(ledger.directory / "fixed.csv"), "--map", mapping,
                       "--format", "json")
    assert again.code == 0, again.err
    assert again.json()["appended"] == 4
    assert ledger.query("tally")["stations_reporting"] == 6
    text = ledger.run("import", "csv", table, "--map", mapping, "--skip-invalid",
                      "--rejects", str(rejects))
    assert text.code == 0 and f"3 rejected, see {rejects}" in text.out
