#!/usr/bin/env python3
"""How far `ledger estimate` and the partial tally are from the final result, replayed.

    python scripts/estimate_accuracy.py                      # the whole Duma 2016 table
    python scripts/estimate_accuracy.py --every 10 --dir /tmp/acc

Russia's 2016 Duma list vote (../shared/real/duma2016.csv.zip, 96,871 stations, final result
known) is replayed into a fresh SQLite ledger as one night per arrival order, each order as
its own reporter (the stations are registered once, before the night):

- ``size``: strictly the smallest stations first (by registered voters);
- ``size-noise``: small first, but not strictly: a station's arrival ranks its registered
  voters times a seeded log-normal factor (sigma 0.7);
- ``zones-size``: time zones and size: polls close at 20:00 local time (the 2016 UTC offset
  of each region), and a count takes 1 h + 2.5 h x (registered voters / 2,000), each with a
  seeded log-normal factor (sigma 0.5) and half an hour of normal noise;
- ``random``: a seeded shuffle (the control: what the interval's assumption describes).

The table has no arrival times: these orders are simulations of what makes early stations
differ. At each 5% of stations counted the script asks the real ledger (LedgerService: the
same code as `ledger estimate --as-of T --reporter ORDER`) for the estimate and the tally,
and prints Markdown tables: the leading party's error of each at 10/20/30/50%, and how often
each choice's interval held the final share, over every prefix from 5% to 95%.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger.input.reader import read_lines  # noqa: E402
from ledger.service import LedgerService, when  # noqa: E402
from ledger.store.config import locate  # noqa: E402

ZIP = ROOT.parent / "shared" / "real" / "duma2016.csv.zip"
ELECTION = ROOT / "docs" / "maps" / "ru-duma-2016.election.jsonl"
E = "ru-duma-2016"
CHOICES = ["rodina", "kpkr", "pensioners", "ur", "greens", "civic_platform", "ldpr", "parnas",
           "growth", "civilian_power", "yabloko", "kprf", "patriots", "sr"]
LEADING = "ur"
ORDERS = ("size", "size-noise", "zones-size", "random")
REPORTED_AT = (0.10, 0.20, 0.30, 0.50)
PREFIXES = [k / 20 for k in range(1, 20)]  # 5%, 10%, ..., 95%
NIGHT = datetime(2016, 9, 18, 17, 0, tzinfo=UTC)  # 20:00 in Moscow
# UTC offsets in September 2016 of the regions not on Moscow time (UTC+3), by name.
ZONES = {2: ["Калининградская"],
         4: ["Самарская", "Удмуртская", "Астраханская", "Ульяновская"],
         5: ["Башкортостан", "Пермский", "Оренбургская", "Свердловская", "Челябинская",
             "Курганская", "Тюменская", "Ханты", "Ямало"],
         6: ["Омская"],
         7: ["Новосибирская", "Томская", "Алтайский", "Республика Алтай", "Кемеровская",
             "Красноярский", "Хакасия", "Тыва"],
         8: ["Иркутская", "Бурятия"], 9: ["Забайкальский", "Амурская", "Саха"],  # noqa: RUF001
         10: ["Приморский", "Хабаровский", "Еврейская"], 11: ["Сахалинская", "Магаданская"],
         12: ["Камчатский", "Чукотский"]}


def utc_offset(region: str) -> int:
    return next((hours for hours, names in ZONES.items() if any(n in region for n in names)), 3)


def read_rows(every: int) -> list[dict]:
    rows = []
    with zipfile.ZipFile(ZIP) as archive, archive.open(archive.namelist()[0]) as raw:
        table = csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        next(table)
        for number, cell in enumerate(table):
            if number % every == 0:
                rows.append({
                    "station": f"{cell[0]}/{cell[2]}/{cell[3]}", "region": cell[0],
                    "district": cell[1], "registered": int(cell[4]),
                    "issued": int(cell[6]) + int(cell[7]) + int(cell[8]),
                    "cast": int(cell[10]) + int(cell[11]), "invalid": int(cell[12]),
                    "votes": {c: int(cell[22 + i]) for i, c in enumerate(CHOICES)}})
    return rows


def arrivals(rows: list[dict], order: str, seed: int) -> list[datetime]:
    """Each station's protocol time under ``order`` (distinct instants, a second apart at
    least, so that a prefix is exactly a set of stations)."""
    rng = random.Random(f"{order}/{seed}")
    if order == "size":
        keys = [(row["registered"], i) for i, row in enumerate(rows)]
    elif order == "size-noise":
        keys = [(row["registered"] * math.exp(rng.gauss(0, 0.7)), i) for i, row in enumerate(rows)]
    elif order == "zones-size":
        keys = [(-utc_offset(row["region"]) + 1 + 2.5 * row["registered"] / 2000
                 * math.exp(rng.gauss(0, 0.5)) + rng.gauss(0, 0.5), i)
                for i, row in enumerate(rows)]
    else:
        keys = [(rng.random(), i) for i in range(len(rows))]
    times = [NIGHT] * len(rows)
    for rank, (_, i) in enumerate(sorted(keys)):
        times[i] = NIGHT - timedelta(hours=12) + timedelta(seconds=rank)
    return times


def write_night(path: Path, rows: list[dict], times: dict[str, list[datetime]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(ELECTION.read_text(encoding="utf-8").strip() + "\n")
        for row in rows:
            out.write(json.dumps({
                "type": "StationRegistered", "election": E,
                "occurred_at": (NIGHT - timedelta(days=1)).isoformat(), "station": row["station"],
                "region": row["region"], "district": row["district"],
                "registered_voters": row["registered"]}) + "\n")
        for order, at in times.items():
            for row, moment in zip(rows, at, strict=True):
                out.write(json.dumps({
                    "type": "ProtocolIssued", "election": E, "occurred_at": moment.isoformat(),
                    "station": row["station"], "reported_by": order,
                    "registered_voters": row["registered"], "ballots_issued": row["issued"],
                    "ballots_cast": row["cast"], "invalid": row["invalid"],
                    "votes": row["votes"]}) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=int, default=1, help="every Nth station of the table")
    parser.add_argument("--dir", type=Path, help="where to build the ledger (default: a "
                        "temporary directory)")
    parser.add_argument("--seed", type=int, default=2016)
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args()
    if not ZIP.exists():
        print(f"the Duma 2016 table is not at {ZIP}", file=sys.stderr)
        return 2
    rows = read_rows(args.every)
    valid = sum(sum(row["votes"].values()) for row in rows)
    final = {c: sum(row["votes"][c] for row in rows) / valid for c in CHOICES}
    times = {order: arrivals(rows, order, args.seed) for order in ORDERS}
    directory = args.dir or Path(tempfile.mkdtemp(prefix="estimate-accuracy-"))
    directory.mkdir(parents=True, exist_ok=True)
    night, db = directory / "night.jsonl", directory / "ledger.db"
    write_night(night, rows, times)
    started = time.perf_counter()
    with LedgerService(locate(str(db))) as service:
        if service.head() if db.exists() else 0:
            print(f"using the ledger already at {db}", file=sys.stderr)
        else:
            with night.open("rb") as stream:
                service.append(read_lines(stream))
        print(f"{len(rows):,} stations, {len(ORDERS)} orders; ledger at {db} "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        errors: dict[str, dict[float, tuple[float, float, float]]] = {}
        held = {order: [0, 0] for order in ORDERS}
        leading_held = {order: [0, 0] for order in ORDERS}
        seconds = []
        for order in ORDERS:
            ranked = sorted(times[order])
            errors[order] = {}
            for fraction in PREFIXES:
                at = when((ranked[math.ceil(fraction * len(rows)) - 1]).isoformat())
                tick = time.perf_counter()
                guess = service.estimate(at, reporter=order, confidence=args.confidence)
                seconds.append(time.perf_counter() - tick)
                partial = service.tally(at, reporter=order)
                shares = {c: v / partial["valid_votes"] for c, v in partial["votes"].items()}
                for choice in CHOICES:
                    low, high = guess["intervals"][choice]
                    inside = low <= final[choice] <= high
                    held[order][0] += inside
                    held[order][1] += 1
                    if choice == LEADING:
                        leading_held[order][0] += inside
                        leading_held[order][1] += 1
                low, high = guess["intervals"][LEADING]
                errors[order][fraction] = (100 * (shares[LEADING] - final[LEADING]),
                                           100 * (guess["shares"][LEADING] - final[LEADING]),
                                           100 * (high - low) / 2)
    print(f"\nFinal share of {LEADING}: {100 * final[LEADING]:.2f}%; "
          f"{len(rows):,} stations (every {args.every} of the table), seed {args.seed}; "
          f"estimate query {min(seconds):.2f}-{max(seconds):.2f} s\n")
    print("| order | counted | partial tally's error | estimate's error | interval +- |")
    print("|---|---|---|---|---|")
    for order in ORDERS:
        for fraction in REPORTED_AT:
            partial, estimate, margin = errors[order][fraction]
            print(f"| {order} | {fraction:.0%} | {partial:+.2f} | {estimate:+.2f} | {margin:.2f} |")
    print(f"\n| order | {args.confidence:.0%} intervals holding the final share: all choices "
          "| the leading party |")
    print("|---|---|---|")
    for order in ORDERS:
        (a, n), (b, m) = held[order], leading_held[order]
        print(f"| {order} | {a}/{n} = {a / n:.0%} | {b}/{m} = {b / m:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
