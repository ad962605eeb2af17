"""Russia's 2016 Duma list vote (../shared/real/duma2016.csv.zip) for the analysis tests: the
station rows read with nothing but csv, and a night made of them, each station registered
before the night and its protocol issued at a chosen minute."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
ZIP = SHARED / "real" / "duma2016.csv.zip"
ELECTION = ROOT / "docs" / "maps" / "ru-duma-2016.election.jsonl"
E = "ru-duma-2016"
# The fourteen parties in ballot order, as the map names them (docs/maps/ru-duma-2016.toml).
CHOICES = ["rodina", "kpkr", "pensioners", "ur", "greens", "civic_platform", "ldpr", "parnas",
           "growth", "civilian_power", "yabloko", "kprf", "patriots", "sr"]
REGISTERED_AT = datetime.fromisoformat("2016-09-18T08:00:00+03:00")
POLLS_CLOSE = datetime.fromisoformat("2016-09-18T20:00:00+03:00")


@dataclass(frozen=True)
class Row:
    station: str
    region: str
    district: str
    registered: int
    issued: int
    cast: int
    invalid: int
    votes: dict[str, int]

    @property
    def valid(self) -> int:
        return sum(self.votes.values())


def rows(every: int = 1) -> list[Row]:
    """Every ``every``-th station of the table (1: all 96,871), in the table's order."""
    found = []
    with zipfile.ZipFile(ZIP) as archive, archive.open(archive.namelist()[0]) as raw:
        table = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        next(table)
        for number, cell in enumerate(table):
            if number % every:
                continue
            found.append(Row(
                station=f"{cell[0]}/{cell[2]}/{cell[3]}", region=cell[0], district=cell[1],
                registered=int(cell[4]), issued=int(cell[6]) + int(cell[7]) + int(cell[8]),
                cast=int(cell[10]) + int(cell[11]), invalid=int(cell[12]),
                votes={c: int(cell[22 + i]) for i, c in enumerate(CHOICES)}))
    return found


def night(stations: list[Row], minutes: dict[str, float], reporter: str = "cik"
          ) -> list[str]:
    """JSON lines: each station registered in the morning, then its protocol issued
    ``minutes[station]`` minutes after the polls close (stations not in ``minutes`` never
    report)."""
    lines = [json.dumps(registration(row)) for row in stations]
    for row in sorted((r for r in stations if r.station in minutes),
                      key=lambda r: minutes[r.station]):
        lines.append(json.dumps(protocol(row, POLLS_CLOSE + timedelta(minutes=minutes[row.station]),
                                         reporter)))
    return lines


def registration(row: Row) -> dict[str, Any]:
    return {"type": "StationRegistered", "election": E, "occurred_at": REGISTERED_AT.isoformat(),
            "station": row.station, "region": row.region, "district": row.district,
            "registered_voters": row.registered}


def protocol(row: Row, at: datetime, reporter: str = "cik") -> dict[str, Any]:
    return {"type": "ProtocolIssued", "election": E, "occurred_at": at.isoformat(),
            "station": row.station, "reported_by": reporter,
            "registered_voters": row.registered, "ballots_issued": row.issued,
            "ballots_cast": row.cast, "invalid": row.invalid, "votes": row.votes}


def definition() -> str:
    return ELECTION.read_text(encoding="utf-8").strip()
