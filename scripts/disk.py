#!/usr/bin/env python3
"""Where the bytes go: the Russia 2016 Duma import, per table and index, against the CSV.

Imports /work/shared/real/duma2016.csv.zip (96,871 stations) through docs/maps/ru-duma-2016.toml
into a fresh SQLite ledger twice: with the protocol's sixteen further lines (the map as it
is), and without them (the map's [lines] left out, and the election defined without lines
or control relations). For each it prints the ledger file and the read-model file, their
ratio to the CSV, and every table and index by size (SQLite's dbstat virtual table: the pages
each one holds, so free pages are not counted against anyone).

    python scripts/disk.py                       # both variants, about 4 minutes
    python scripts/disk.py --rows 20000          # the first 20,000 stations only
    python scripts/disk.py --baseline /tmp/main-src   # also another source tree, same run

With --baseline DIR (e.g. `git archive main | tar -x -C DIR`) the same imports are run with
that tree's ledger too (PYTHONPATH=DIR), for a before/after in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ZIP = ROOT.parent / "shared" / "real" / "duma2016.csv.zip"
MAP = ROOT / "docs" / "maps" / "ru-duma-2016.toml"
ELECTION = ROOT / "docs" / "maps" / "ru-duma-2016.election.jsonl"


def extract(zip_path: Path, out: Path, rows: int | None) -> Path:
    with zipfile.ZipFile(zip_path) as archive, archive.open(archive.namelist()[0]) as source, \
            out.open("wb") as target:
        for number, line in enumerate(source):
            if rows is not None and number > rows:
                break
            target.write(line)
    return out


def without_lines(work: Path) -> tuple[Path, Path]:
    """The map without [lines], and the election without lines or control relations."""
    text = MAP.read_text(encoding="utf-8")
    table_map = work / "no-lines.toml"
    table_map.write_text(text.split("\n[lines]")[0] + "\n", encoding="utf-8")
    election = json.loads(ELECTION.read_text(encoding="utf-8").splitlines()[0])
    election.pop("lines", None)
    election.pop("control_relations", None)
    defined = work / "no-lines.election.jsonl"
    defined.write_text(json.dumps(election, ensure_ascii=False) + "\n", encoding="utf-8")
    return table_map, defined


def sizes(path: Path) -> dict[str, int]:
    """Bytes in the pages of each table and index (dbstat), largest first."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        rows = connection.execute(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    return dict(rows)


def file_bytes(path: Path) -> int:
    """The file and its write-ahead log, if any (a checkpoint folds one into the other)."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def run_import(csv: Path, table_map: Path, election: Path, work: Path,
               env: dict[str, str]) -> dict[str, Any]:
    work.mkdir()
    db, read_models = work / "duma.db", work / "duma.projections.db"
    ledger = [sys.executable, "-m", "ledger", "--db", str(db)]
    subprocess.run([*ledger, "append", str(election)], cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    began = time.perf_counter()
    subprocess.run([*ledger, "import", "csv", str(csv), "--map", str(table_map)], cwd=work,
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - began
    # Fold the write-ahead log into the file, as any reader's last close would.
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    tally = subprocess.run([*ledger, "tally", "--format", "json"], cwd=work, env=env, check=True,
                           capture_output=True, text=True)
    return {"import_seconds": round(seconds, 1), "ledger_bytes": file_bytes(db),
            "read_model_bytes": file_bytes(read_models), "ledger": sizes(db),
            "read_models": sizes(read_models), "votes": json.loads(tally.stdout)["votes"]}


def show(label: str, figures: dict[str, Any], csv_bytes: int) -> None:
    ledger, models = figures["ledger_bytes"], figures["read_model_bytes"]
    mb = 1 << 20
    print(f"{label}: ledger {ledger / mb:.1f} MB + read models {models / mb:.1f} MB = "
          f"{(ledger + models) / csv_bytes:.2f}x the CSV ({csv_bytes / mb:.1f} MB); "
          f"ledger alone {ledger / csv_bytes:.2f}x; import {figures['import_seconds']} s")
    for file in ("ledger", "read_models"):
        total = sum(figures[file].values())
        print(f"  {file}:")
        for name, size in figures[file].items():
            if size >= total / 200:
                print(f"    {name:<46} {size / mb:8.1f} MB  {100 * size / total:5.1f} %")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, help="only the first ROWS stations")
    parser.add_argument("--baseline", type=Path, help="another source tree to measure alike")
    parser.add_argument("--zip", type=Path, default=ZIP)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ledger-disk-"))
    try:
        csv = extract(args.zip, work / "duma2016.csv", args.rows)
        csv_bytes = csv.stat().st_size
        trees = {"this tree": {}}
        if args.baseline:
            trees["baseline"] = {"PYTHONPATH": str(args.baseline.resolve())}
        plain_map, plain_election = without_lines(work)
        results: dict[str, Any] = {"csv_bytes": csv_bytes}
        for label, extra in trees.items():
            env = {**os.environ, **extra}
            for variant, (table_map, election) in (("with lines", (MAP, ELECTION)),
                                                   ("without lines", (plain_map, plain_election))):
                name = f"{variant} ({label})"
                figures = run_import(csv, table_map, election, work / name.replace(" ", "-"), env)
                show(name, figures, csv_bytes)
                results[name] = figures
        votes = {json.dumps(r["votes"], sort_keys=True) for k, r in results.items() if k != "csv_bytes"}
        print(f"every import tallies the same votes: {len(votes) == 1}")
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
