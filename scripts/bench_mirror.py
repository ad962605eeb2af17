#!/usr/bin/env python3
"""Mirrors against append, in one run: how fast a replica catches up, and how far a following
replica lags behind a live night.

    python scripts/bench_mirror.py                          # 10,000 stations (about 23k events)
    python scripts/bench_mirror.py --stations 50000         # about 116k events, the target size
    python scripts/bench_mirror.py --stations 50000 --replica-db postgresql://postgres@127.0.0.1:5432/test
    python scripts/bench_mirror.py --follow-seconds 20 --rate 500   # and the follow lag

1. Catch-up: the seeded national night of scripts/bench.py (N stations: registrations,
   official protocols, observer copies, withheld protocols) is appended to a fresh SQLite
   ledger with `ledger append` (a whole process, timed), served with `ledger serve --key`, and
   mirrored into a fresh replica (SQLite, or --replica-db) with `ledger mirror` (a whole
   process, timed: fetching the log over the loopback, checking every event as append does,
   the tree, the commit and the read models). The ratio is the mirror's rate (events per
   second) over append's, median of --runs; the target is at least 0.5. The replica's
   checkpoint and final tally must equal the source's (exit 1 otherwise).
2. Follow lag (with --follow-seconds S): scripts/load.py --follow for S seconds at --rate
   protocols a second: signed protocols posted over HTTP by 32 reporters while a replica
   follows the feed; each mirrored checkpoint's lag is the time from the source recording its
   newest event to the replica committing it. Target: within 2 s at 500 protocols a second.

Prints every figure, and writes them as JSON (--out, default bench-mirror-N.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import CHILD_ENV, generate, timed

LEDGER = [sys.executable, "-m", "ledger"]


def serve(db: Path, key: Path, cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**CHILD_ENV, "LEDGER_READ_MODELS": str(cwd / "source.models.db")}
    process = subprocess.Popen([*LEDGER, "serve", "--db", str(db), "--port", str(port), "--key",
                                str(key)], cwd=cwd, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(url + "/v1/elections", timeout=5):
                return process, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("bench: ledger serve did not answer")


def run_once(night: Path, work: Path, replica_db: str | None) -> dict[str, Any]:
    work.mkdir()
    timed([*LEDGER, "keygen", "log"], work)
    source = work / "source.db"
    env_source = ["--db", str(source)]
    # append, as a user runs it (its read models live beside the ledger file)
    append_seconds, _ = timed([*LEDGER, "append", str(night), *env_source], work)
    server, url = serve(source, work / "log.key", work)
    try:
        replica = replica_db or str(work / "replica.db")
        mirror_seconds, printed = timed([*LEDGER, "mirror", url, "--public-key", "log.pub",
                                         "--db", replica], work)
        note = urllib.request.urlopen(url + "/v1/checkpoint", timeout=30).read().decode()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    events = int(note.split("\n")[1])
    replica_note = timed([*LEDGER, "checkpoint", "--db", replica], work)[1]
    tally = [timed([*LEDGER, "tally", "--stage", "final", "--format", "json", "--db", db], work)[1]
             for db in (str(source), replica)]
    return {"events": events, "append_seconds": append_seconds, "mirror_seconds": mirror_seconds,
            "mirror_printed": printed.strip(),
            "agrees": replica_note == note.split("\n\n")[0] + "\n" and tally[0] == tally[1]}


def follow_lag(seconds: float, rate: float, stations: int) -> dict[str, Any]:
    load = Path(__file__).resolve().parent / "load.py"
    result = subprocess.run([sys.executable, str(load), "--stations", str(stations), "--seconds",
                             str(seconds), "--rate", str(rate), "--follow"],
                            capture_output=True, text=True, env=CHILD_ENV)
    if result.returncode:
        raise SystemExit(f"bench: load.py --follow failed: {result.stderr.strip()[-400:]}")
    return {"rate_asked": rate, "seconds": seconds, "report": result.stdout.strip().splitlines()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--replica-db", metavar="URL", help="mirror into a PostgreSQL ledger on "
                        "this server (a postgresql:// URL; each run gets a fresh schema, dropped "
                        "at the end)")
    parser.add_argument("--follow-seconds", type=float, default=0.0,
                        help="also measure the follow lag during a live load of this long")
    parser.add_argument("--rate", type=float, default=500.0,
                        help="protocols a second of the live load (default 500)")
    parser.add_argument("--out", type=Path, help="JSON result file (default bench-mirror-N.json)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ledger-bench-mirror-"))
    night = work / "night.jsonl"
    lines = generate(night, args.stations)
    runs = []
    schemas = []
    try:
        for number in range(args.runs):
            replica_db = None
            if args.replica_db:
                schemas.append(f"bench_mirror_{os.getpid()}_{number}")
                replica_db = f"{args.replica_db.split('?')[0]}?schema={schemas[-1]}"
            runs.append(run_once(night, work / f"run-{number}", replica_db))
    finally:
        if schemas:  # every replica schema this run made is dropped, also on failure
            import psycopg

            with psycopg.connect(args.replica_db.split("?")[0], autocommit=True) as connection:
                for schema in schemas:
                    connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    append_rate = statistics.median(r["events"] / r["append_seconds"] for r in runs)
    mirror_rate = statistics.median(r["events"] / r["mirror_seconds"] for r in runs)
    ratio = statistics.median(r["append_seconds"] / r["mirror_seconds"] for r in runs)
    result: dict[str, Any] = {
        "stations": args.stations, "lines": lines, "events": runs[0]["events"],
        "replica": "postgresql" if args.replica_db else "sqlite",
        "append_events_per_second": round(append_rate),
        "mirror_events_per_second": round(mirror_rate),
        "mirror_vs_append_rate": round(ratio, 3), "target": ">= 0.5",
        "agrees": all(r["agrees"] for r in runs), "runs": runs,
    }
    print(f"{runs[0]['events']:,} events ({args.stations:,} stations), {args.runs} run(s), "
          f"replica on {result['replica']}")
    print(f"append: {append_rate:,.0f} events/s; mirror: {mirror_rate:,.0f} events/s; "
          f"mirror/append = {ratio:.2f} (target >= 0.5)")
    print(f"replica agrees with the source (checkpoint, final tally): {result['agrees']}")
    if args.follow_seconds:
        result["follow"] = follow_lag(args.follow_seconds, args.rate, max(args.stations, 2_000))
        print("\n".join(result["follow"]["report"]))
    out = args.out or Path(f"bench-mirror-{args.stations}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if result["agrees"] else 1


if __name__ == "__main__":
    sys.exit(main())
