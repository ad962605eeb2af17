#!/usr/bin/env python3
"""National-scale benchmark: the ledger against the physical floor of this machine, in one run.

    python scripts/bench.py                      # 50,000 stations (about 116k events)
    python scripts/bench.py --stations 10000 --runs 3
    python scripts/bench.py --stations 1050000 --runs 1     # India-sized

It generates a seeded national night (N stations, 10 parties: registrations, official
protocols, observer copies at 30% of stations, withheld protocols at 2.5%) as JSON Lines, then
measures, each as the median of --runs whole-process runs:

1. the raw floor: Python's sqlite3 executemany of the same lines into one table, one
   transaction, WAL, synchronous=FULL;
2. time to first answer: `ledger append FILE` plus the first `ledger tally --as-of T`;
3. a steady as-of tally (read models current) versus a naive as-of scan (read every line back
   from the raw table, parse, keep the latest official protocol per station before T, sum);
4. `ledger replay` versus reading and decoding the raw table;
5. peak RSS of append and replay;
6. the share of append time spent maintaining the Merkle tree (in process, instrumented).

It prints every figure and ratio, checks the ledger's tally equals the naive scan's, and
writes the results as JSON (--out, default bench-N.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PARTIES = [f"p{i:02d}" for i in range(10)]
ELECTION = "nation"
NIGHT_START = datetime(2030, 5, 12, 18, 0, tzinfo=UTC)
NIGHT_MINUTES = 10 * 60
AS_OF = "2030-05-12T22:00:00+00:00"  # a little over half the night in
TARGETS = {
    "first_answer_vs_floor_throughput": ">= 0.2",
    "tally_query_seconds_present_knowledge": "<= 0.05 at 1.05M stations",
    "steady_tally_vs_naive_scan_time": "<= 0.1",
    "replay_vs_raw_decode_rate": ">= 0.5",
    "merkle_share_of_append": "<= 0.10",
    "peak_rss_mb": "< 500 at 1.05M stations",
}


def generate(path: Path, stations: int, seed: int = 2030) -> int:
    """Write the night; return the number of lines."""
    rng = random.Random(seed)
    weights = [rng.uniform(0.2, 3.0) for _ in PARTIES]
    lines = 0
    with path.open("w") as out:
        def emit(event: dict[str, Any]) -> None:
            nonlocal lines
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
            lines += 1

        emit({"type": "ElectionDefined", "election": ELECTION,
              "occurred_at": "2030-04-01T00:00:00Z", "name": "National assembly",
              "seats": 450, "threshold_pct": 5.0, "threshold_base": "valid",
              "method": "dhondt", "authority": "cec",
              "choices": [{"id": p, "name": f"Party {p}"} for p in PARTIES]})
        registered = []
        for i in range(stations):
            voters = rng.randint(300, 2500)
            registered.append(voters)
            emit({"type": "StationRegistered", "election": ELECTION,
                  "occurred_at": "2030-04-20T00:00:00Z", "station": f"st{i:07d}",
                  "region": f"region-{i % 85:02d}", "registered_voters": voters})
        for i in range(stations):
            minute = int(NIGHT_MINUTES * (i / stations) ** 0.8)
            at = (NIGHT_START.timestamp() + 60 * minute + rng.randint(0, 59))
            occurred = datetime.fromtimestamp(at, UTC).isoformat()
            cast = int(registered[i] * rng.uniform(0.4, 0.8))
            invalid = rng.randint(0, cast // 50)
            votes = _split(rng, cast - invalid, weights)
            protocol = {"type": "ProtocolIssued", "election": ELECTION, "occurred_at": occurred,
                        "station": f"st{i:07d}", "reported_by": "cec",
                        "registered_voters": registered[i], "ballots_issued": cast,
                        "ballots_cast": cast, "invalid": invalid, "votes": votes}
            emit(protocol)
            if rng.random() < 0.30:
                emit({**protocol, "reported_by": "observers"})
            if rng.random() < 0.025:
                emit({"type": "ProtocolWithheld", "election": ELECTION, "occurred_at": occurred,
                      "station": f"st{i:07d}", "requested_by": "observers",
                      "reason": "no copy given"})
    return lines


def _split(rng: random.Random, total: int, weights: list[float]) -> dict[str, int]:
    shares = [w * rng.uniform(0.5, 1.5) for w in weights]
    scale = total / sum(shares)
    votes = [int(s * scale) for s in shares]
    votes[0] += total - sum(votes)
    return dict(zip(PARTIES, votes, strict=True))


# Each measured step runs as its own process, like a user's command would.
FLOOR = r"""
import sqlite3, sys
db = sqlite3.connect(sys.argv[2], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE raw (line TEXT)")
with open(sys.argv[1]) as f:
    db.execute("BEGIN"); db.executemany("INSERT INTO raw VALUES (?)", ((l,) for l in f)); db.execute("COMMIT")
"""

# The second reference: eventsourcing's own batch save of the same lines, as opaque stored
# events (one stream per line, version 1) in one insert_events call: no validation, no
# Merkle tree, no read models.
BARE_EVENTSOURCING = r"""
import sys, uuid
from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore
recorder = SQLiteApplicationRecorder(SQLiteDatastore(sys.argv[2]))
recorder.create_table()
with open(sys.argv[1], "rb") as f:
    recorder.insert_events([StoredEvent(originator_id=uuid.uuid4(), originator_version=1,
                                        topic="line", state=line) for line in f])
"""

# The raw table's lines, read back.
SQLITE_ROWS = r"""
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT line FROM raw")
"""

NAIVE_SCAN = r"""
import json, sys
from datetime import datetime
t = datetime.fromisoformat(sys.argv[2])
latest = {}
for (line,) in rows:
    e = json.loads(line)
    if e["type"] == "ProtocolIssued" and e["reported_by"] == "cec":
        at = datetime.fromisoformat(e["occurred_at"])
        if at <= t and (e["station"] not in latest or latest[e["station"]][0] <= at):
            latest[e["station"]] = (at, e["votes"])
sums = {}
for _, votes in latest.values():
    for k, v in votes.items():
        sums[k] = sums.get(k, 0) + v
print(json.dumps({"votes": sums, "stations_reporting": len(latest)}))
"""

NAIVE = SQLITE_ROWS + NAIVE_SCAN

READ_AND_DECODE = r"""
from ledger.events import decoder
for (line,) in rows:
    decoder.decode(line)
"""
DECODE = SQLITE_ROWS + READ_AND_DECODE

MERKLE_SHARE = r"""
import sys, time
import ledger.store as store
from ledger.application import Ledger
from ledger.config import locate
from ledger.reader import read_lines
spent = 0.0
extend = store.WriteSession.extend_tree
def timed(self, *args):
    global spent
    start = time.perf_counter(); extend(self, *args); spent += time.perf_counter() - start
store.WriteSession.extend_tree = timed
ledger = Ledger(locate(sys.argv[2]))
start = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    ledger.append(read_lines(f))
total = time.perf_counter() - start
print(f"{spent} {total}")
"""

# Query time in process (no interpreter start): the tally at moments across the night, from
# the running totals (present knowledge), and by the full effective-protocol query that a
# --known-at before the last recorded event takes.
QUERY = r"""
import json, statistics, sys, time
from projections import running
from projections.moment import moment
from projections.schema import connect
from projections.tally import load_election, tally
db = connect(sys.argv[1])
election = load_election(db, None)
from datetime import datetime, timedelta
start = datetime.fromisoformat("2030-05-12T18:00:00+00:00")
hours = [(start + timedelta(minutes=m, seconds=m % 59)).isoformat() for m in range(0, 600, 37)]
def timed(as_of):
    spent = []
    for _ in range(5):
        start = time.perf_counter()
        tally(db, election, moment(as_of))
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)
fast = [timed(t) for t in hours]
running.present_knowledge = lambda db, known_at: False
full = [timed(t) for t in hours[::3]]
print(json.dumps({"running_max": max(fast), "running_median": statistics.median(fast),
                  "full_max": max(full), "full_median": statistics.median(full)}))
"""

RSS = r"""
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"bench: {' '.join(command[:4])} failed: {result.stderr.strip()[-400:]}")
    return elapsed, result.stdout


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(stations: int, runs: int, workdir: Path) -> dict[str, Any]:
    py = sys.executable
    ledger = [py, "-m", "ledger"]
    night = workdir / "night.jsonl"
    lines = generate(night, stations)
    print(f"generated {lines:,} events for {stations:,} stations in {night}", flush=True)

    floor, first_answer, append_only, steady, naive, replay, decode, bare = (
        [] for _ in range(8))
    query: list[dict[str, float]] = []
    ledger_answer: dict[str, Any] = {}
    naive_answer: dict[str, Any] = {}
    rss: dict[str, int] = {}
    for attempt in range(runs):
        for leftover in workdir.glob("run*"):
            shutil.rmtree(leftover)
        here = workdir / f"run{attempt}"
        here.mkdir()
        raw = here / "raw.db"
        floor.append(timed([py, "-c", FLOOR, str(night), str(raw)], here)[0])
        bare.append(timed([py, "-c", BARE_EVENTSOURCING, str(night), str(here / "bare.db")],
                          here)[0])
        a, _ = timed([*ledger, "append", str(night)], here)
        t, out = timed([*ledger, "tally", "--as-of", AS_OF, "--format", "json"], here)
        append_only.append(a)
        first_answer.append(a + t)
        ledger_answer = json.loads(out)
        steady.append(median([timed([*ledger, "tally", "--as-of", AS_OF, "--format", "json"],
                                    here)[0] for _ in range(3)]))
        n, out = timed([py, "-c", NAIVE, str(raw), AS_OF], here)
        naive.append(n)
        naive_answer = json.loads(out)
        query.append(json.loads(timed([py, "-c", QUERY, str(here / "ledger.projections.db")],
                                      here)[1]))
        replay.append(timed([*ledger, "replay"], here)[0])
        decode.append(timed([py, "-c", DECODE, str(raw)], here)[0])
        if attempt == 0:
            again = here / "rss"
            again.mkdir()
            rss["append_kb"] = int(timed([py, "-c", RSS, *ledger, "append", str(night)], again)[1])
            rss["replay_kb"] = int(timed([py, "-c", RSS, *ledger, "replay"], again)[1])
            merkle, total = map(float, timed(
                [py, "-c", MERKLE_SHARE, str(night), str(here / "instrumented.db")], here
            )[1].split())
        print(f"  run {attempt + 1}/{runs} done", flush=True)

    agrees = (ledger_answer["votes"] == naive_answer["votes"]
              and ledger_answer["stations_reporting"] == naive_answer["stations_reporting"])
    result = {
        "stations": stations,
        "events": lines,
        "runs": runs,
        "seconds": {
            "raw_floor": median(floor),
            "bare_eventsourcing_save": median(bare),
            "append": median(append_only),
            "time_to_first_answer": median(first_answer),
            "steady_as_of_tally": median(steady),
            "naive_as_of_scan": median(naive),
            "replay": median(replay),
            "raw_read_and_decode": median(decode),
        },
        "rates_per_second": {
            "raw_floor": lines / median(floor),
            "bare_eventsourcing_save": lines / median(bare),
            "time_to_first_answer": lines / median(first_answer),
            "replay": lines / median(replay),
            "raw_read_and_decode": lines / median(decode),
        },
        "query_seconds": {k: median([q[k] for q in query]) for k in query[0]},
        "ratios": {
            "first_answer_vs_floor_throughput": median(floor) / median(first_answer),
            "first_answer_vs_bare_eventsourcing_throughput": median(bare) / median(first_answer),
            "steady_tally_vs_naive_scan_time": median(steady) / median(naive),
            "replay_vs_raw_decode_rate": median(decode) / median(replay),
            "merkle_share_of_append": merkle / total,
        },
        "targets": TARGETS,
        "peak_rss_mb": {k.removesuffix("_kb"): v / 1024 for k, v in rss.items()},
        "answer_agrees_with_naive_scan": agrees,
        "stations_reporting_as_of": ledger_answer["stations_reporting"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return result


def report(result: dict[str, Any]) -> None:
    s, r, q = result["seconds"], result["rates_per_second"], result["ratios"]
    print(f"\n{result['stations']:,} stations, {result['events']:,} events, "
          f"median of {result['runs']} run(s)")
    print(f"  raw floor (executemany, WAL, FULL)    {s['raw_floor']:8.2f} s  "
          f"{r['raw_floor']:>10,.0f} lines/s")
    print(f"  bare eventsourcing batch save         {s['bare_eventsourcing_save']:8.2f} s  "
          f"{r['bare_eventsourcing_save']:>10,.0f} lines/s")
    print(f"  ledger append                         {s['append']:8.2f} s")
    print(f"  time to first answer (append+tally)   {s['time_to_first_answer']:8.2f} s  "
          f"{r['time_to_first_answer']:>10,.0f} lines/s  "
          f"ratio {q['first_answer_vs_floor_throughput']:.3f} (target >= 0.2), "
          f"{q['first_answer_vs_bare_eventsourcing_throughput']:.3f} of the bare save")
    print(f"  steady as-of tally                    {s['steady_as_of_tally']:8.2f} s")
    print(f"  naive as-of scan                      {s['naive_as_of_scan']:8.2f} s  "
          f"ratio {q['steady_tally_vs_naive_scan_time']:.3f} (target <= 0.1)")
    qs = result["query_seconds"]
    print(f"  tally query time, running totals      {1000 * qs['running_max']:8.1f} ms max, "
          f"{1000 * qs['running_median']:.1f} ms median over moments of the night")
    print(f"  tally query time, full query          {1000 * qs['full_max']:8.1f} ms max "
          "(the --known-at path)")
    print(f"  replay                                {s['replay']:8.2f} s  "
          f"{r['replay']:>10,.0f} events/s")
    print(f"  raw read and decode                   {s['raw_read_and_decode']:8.2f} s  "
          f"{r['raw_read_and_decode']:>10,.0f} lines/s  "
          f"ratio {q['replay_vs_raw_decode_rate']:.3f} (target >= 0.5)")
    print(f"  Merkle maintenance share of append    {100 * q['merkle_share_of_append']:7.1f} %  "
          "(target <= 10%)")
    print(f"  peak RSS: append {result['peak_rss_mb']['append']:.0f} MB, "
          f"replay {result['peak_rss_mb']['replay']:.0f} MB")
    print(f"  ledger tally equals the naive scan: {result['answer_agrees_with_naive_scan']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="JSON result file (default: bench-N.json)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args.stations, args.runs, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(result)
    out = args.out or Path(f"bench-{args.stations}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if result["answer_agrees_with_naive_scan"] else 1


if __name__ == "__main__":
    sys.exit(main())
