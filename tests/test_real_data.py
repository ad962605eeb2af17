"""Russia's 2016 Duma list vote, one row per polling station, imported through
docs/maps/ru-duma-2016.toml: a 5,000-row slice in the default suite (both backends, checked
against sums computed here with the csv module), and the whole 96,871-row table against the
official national result in a slow test:

    pytest -m slow tests/test_real_data.py
"""

from __future__ import annotations

import csv
import os
import zipfile
from pathlib import Path

import pytest

from tests.conftest import SHARED, LedgerUnderTest

ROOT = Path(__file__).resolve().parents[1]
ZIP = SHARED / "real" / "duma2016.csv.zip"
MAP = ROOT / "docs" / "maps" / "ru-duma-2016.toml"
ELECTION = ROOT / "docs" / "maps" / "ru-duma-2016.election.jsonl"
SLICE = 5_000
needs_data = pytest.mark.skipif(
    not ZIP.exists() and os.environ.get("CI") != "true",  # under CI a missing file fails
    reason=f"the Duma 2016 table is not at {ZIP}",
)
# Column positions in the table (see ../shared/real/README.md): the parties are the
# fourteen columns after the protocol's eighteen lines.
PARTY_COLUMNS = range(22, 36)
CHOICES = ["rodina", "kpkr", "pensioners", "ur", "greens", "civic_platform", "ldpr", "parnas",
           "growth", "civilian_power", "yabloko", "kprf", "patriots", "sr"]


def extract(directory: Path, rows: int | None) -> Path:
    """The table, or its first ``rows`` stations, unzipped at run time."""
    out = directory / "duma2016.csv"
    with zipfile.ZipFile(ZIP) as archive, archive.open(archive.namelist()[0]) as source, \
            out.open("wb") as target:
        for number, line in enumerate(source):
            if rows is not None and number > rows:
                break
            target.write(line)
    return out


def naive_sums(table: Path) -> tuple[dict[str, int], int, int]:
    """Votes per party, invalid and registered voters, added up with nothing but csv."""
    votes = dict.fromkeys(CHOICES, 0)
    invalid = registered = 0
    with table.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle)
        next(rows)
        for row in rows:
            for choice, column in zip(CHOICES, PARTY_COLUMNS, strict=True):
                votes[choice] += int(row[column])
            invalid += int(row[12])
            registered += int(row[4])
    return votes, invalid, registered


def imported(ledger: LedgerUnderTest, table: Path) -> dict:
    assert ledger.run("append", str(ELECTION)).code == 0
    result = ledger.run("import", "csv", str(table), "--map", str(MAP), "--format", "json")
    assert result.code == 0, result.err
    return result.json()


@needs_data
def test_slice_of_duma_2016(ledger: LedgerUnderTest) -> None:
    table = extract(ledger.directory, SLICE)
    summary = imported(ledger, table)
    assert summary["appended"] == 2 * SLICE  # each station registered, then its protocol
    votes, invalid, registered = naive_sums(table)
    tally = ledger.query("tally")
    assert tally["votes"] == votes
    assert tally["invalid"] == invalid
    assert tally["stations_reporting"] == tally["stations_total"] == SLICE
    stations = ledger.query("history", "--format", "json")["events"]
    assert sum(e["event"]["registered_voters"] for e in stations
               if e["type"] == "StationRegistered") == registered
    # Importing the same slice again changes nothing.
    again = ledger.run("import", "csv", str(table), "--map", str(MAP), "--format", "json")
    assert again.code == 0, again.err
    assert again.json()["appended"] == 0


@needs_data
@pytest.mark.slow
def test_whole_duma_2016_gives_the_official_result(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEDGER_READ_MODELS", str(tmp_path / "read-models.db"))
    ledger = LedgerUnderTest(str(tmp_path / "ledger.db"), tmp_path, capsys, "sqlite")
    summary = imported(ledger, extract(tmp_path, None))
    assert summary["appended"] == 2 * 96_871
    # Official national result (CEC of Russia), from ../shared/real/README.md.
    tally = ledger.query("tally")
    assert tally["stations_reporting"] == 96_871
    assert tally["valid_votes"] == 51_649_253
    assert tally["invalid"] == 982_596
    assert {c: tally["votes"][c] for c in ("ur", "kprf", "ldpr", "sr")} == {
        "ur": 28_527_828, "kprf": 7_019_752, "ldpr": 6_917_063, "sr": 3_275_053}
    seats = ledger.query("seats")["seats"]
    assert {c: n for c, n in seats.items() if n} == {"ur": 140, "kprf": 35, "ldpr": 34, "sr": 16}
    # The four relations of 20-FZ Appendix 5 hold at every station; four stations report
    # more ballots in the boxes than were issued (v1's check), and are flagged for it.
    assert [f.split(": ", 2)[2].split(" ")[0] for f in summary["flagged"]] == ["ballots_cast"] * 4
