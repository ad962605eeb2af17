#!/usr/bin/env python3
"""National-scale benchmark: the ledger against the physical floor of this machine, in one run.

    python scripts/bench.py                      # 50,000 stations (about 116k events)
    python scripts/bench.py --stations 10000 --runs 3
    python scripts/bench.py --stations 1050000 --runs 1     # India-sized
    python scripts/bench.py --stations 10000 --runs 3 --postgres postgresql://postgres@127.0.0.1:5432/test

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

With --postgres URL it then measures the same night again on that PostgreSQL server, in the
same run, and reports it as a second block (and a "postgres" section of the JSON, with the
same keys):

1. the PostgreSQL floor: psycopg's `COPY raw (line) FROM STDIN` of the same lines into one
   table, one transaction (the server's own durability settings, which it prints); psycopg's
   executemany of them, one transaction, as a second, slower reference; eventsourcing's bare
   batch save into PostgreSQL;
2. time to first answer: `ledger append FILE --db URL` plus the first `ledger tally --as-of T`;
3. the steady as-of tally versus the same naive scan, reading the lines back from the
   PostgreSQL raw table; the in-process tally query time (the read models of a PostgreSQL
   ledger are a SQLite file, as on SQLite);
4. `ledger replay --db URL` versus reading the lines back from the raw table and decoding them;
5. peak RSS of append and replay (of the ledger process only: the server's memory is not
   counted) and the Merkle share of append.

Every ledger and floor gets a fresh schema of its own (`bench_<token>_...`, the URL must not
name one); all of them are dropped at the end, also when a step fails or the bench is
interrupted.

It prints every figure and ratio, checks the ledger's tally equals the naive scan's (on each
backend: the exit code is 1 if either disagrees), and writes the results as JSON (--out,
default bench-N.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

PARTIES = [f"p{i:02d}" for i in range(10)]
ELECTION = "nation"
NIGHT_START = datetime(2030, 5, 12, 18, 0, tzinfo=UTC)
NIGHT_MINUTES = 10 * 60
AS_OF = "2030-05-12T22:00:00+00:00"  # a little over half the night in
TARGETS = {
    "first_answer_vs_floor_throughput": ">= 0.2",
    "tally_query_seconds_present_knowledge": "<= 0.05 at 1.05M stations",
    "steady_tally_vs_naive_scan_time": "<= 0.1",
    "known_at_tally_vs_naive_scan_time": "<= 0.1",
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

# PostgreSQL (argv[2] is a libpq connection string whose search_path names the run's own
# schema). The floor is COPY of the same lines into one table in one transaction: the fastest
# way into PostgreSQL there is. executemany (psycopg pipelines it) is the second, slower
# reference, the same call as SQLite's floor.
POSTGRES_FLOOR = r"""
import psycopg, sys
with psycopg.connect(sys.argv[2]) as db, open(sys.argv[1]) as f:
    db.execute("CREATE TABLE raw (line text)")
    db.commit()
    with db.cursor().copy("COPY raw (line) FROM STDIN") as copy:
        for line in f:
            copy.write_row((line,))
"""  # the connection's block commits: one transaction

POSTGRES_EXECUTEMANY = r"""
import psycopg, sys
with psycopg.connect(sys.argv[2]) as db, open(sys.argv[1]) as f:
    db.execute("CREATE TABLE raw_executemany (line text)")
    db.commit()
    db.cursor().executemany("INSERT INTO raw_executemany VALUES (%s)", ((l,) for l in f))
"""

# argv[2]: the PostgresDatastore's arguments, as JSON (the schema exists already). In calls
# of 5,000 events, as the ledger writes its chunks: one call of a whole 50,000-station night
# (116k events) never returned here (psycopg's pipeline: the client waited for results while
# the server waited for the rest of the statement).
POSTGRES_BARE_EVENTSOURCING = r"""
import itertools, json, sys, uuid
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
datastore = PostgresDatastore(**json.loads(sys.argv[2]))
recorder = PostgresApplicationRecorder(datastore)
recorder.create_table()
with open(sys.argv[1], "rb") as f:
    while chunk := list(itertools.islice(f, 5_000)):
        recorder.insert_events([StoredEvent(originator_id=uuid.uuid4(), originator_version=1,
                                            topic="line", state=line) for line in chunk])
datastore.close()
"""

# The raw table's lines, read back: from the SQLite file (argv[1]) or from PostgreSQL (argv[1]
# is a libpq connection string whose search_path names the run's schema; a server-side
# cursor streams them, as SQLite's cursor does).
SQLITE_ROWS = r"""
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT line FROM raw")
"""
POSTGRES_ROWS = r"""
import psycopg, sys
rows = psycopg.connect(sys.argv[1]).cursor("raw")
rows.itersize = 10_000
rows.execute("SELECT line FROM raw")
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
POSTGRES_NAIVE = POSTGRES_ROWS + NAIVE_SCAN

READ_AND_DECODE = r"""
from ledger.domain.events import decoder
for (line,) in rows:
    decoder.decode(line)
"""
DECODE = SQLITE_ROWS + READ_AND_DECODE
POSTGRES_DECODE = POSTGRES_ROWS + READ_AND_DECODE

MERKLE_SHARE = r"""
import sys, time
import ledger.store.session as store
from ledger.store.application import Ledger
from ledger.store.config import locate
from ledger.input.reader import read_lines
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
# the running totals (present knowledge), and by the full effective-protocol query (what
# every --known-at took before the steps by ledger time).
# Both in-process scripts: the read models (argv[1]) and 17 moments across the night.
MOMENTS = r"""
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
"""

QUERY = MOMENTS + r"""
def timed(as_of):
    spent = []
    for _ in range(5):
        start = time.perf_counter()
        tally(db, election, moment(as_of))
        spent.append(time.perf_counter() - start)
    return statistics.median(spent)
fast = [timed(t) for t in hours]
running.available = lambda db: False
full = [timed(t) for t in hours[::3]]
print(json.dumps({"running_max": max(fast), "running_median": statistics.median(fast),
                  "full_max": max(full), "full_median": statistics.median(full)}))
"""

# The same night appended in two batches (argv[1]: its read models): the tally at moments
# across the night as known when only the first batch was in (--known-at), from the steps
# by ledger time and by the full query, which must agree.
KNOWN = MOMENTS + r"""
known_at = db.execute("SELECT MIN(recorded_at) FROM tally_batches").fetchone()[0]
def timed(as_of):
    spent = []
    for _ in range(5):
        begin = time.perf_counter()
        answer = tally(db, election, moment(as_of, known_at))
        spent.append(time.perf_counter() - begin)
    return statistics.median(spent), answer
by_steps = [timed(t) for t in hours]
available = running.available
running.available = lambda db: False
by_query = [timed(t) for t in hours]
fields = ("votes", "stations_reporting", "stations_total", "ballots_cast", "invalid")
agrees = all({f: a[f] for f in fields} == {f: b[f] for f in fields}
             for (_, a), (_, b) in zip(by_steps, by_query))
print(json.dumps({"known_at": known_at,
                  "steps_max": max(s for s, _ in by_steps),
                  "steps_median": statistics.median(s for s, _ in by_steps),
                  "full_max": max(s for s, _ in by_query),
                  "full_median": statistics.median(s for s, _ in by_query),
                  "agrees": agrees,
                  "known_reporting_at_end": by_steps[-1][1]["stations_reporting"]}))
"""

RSS = r"""
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


# The ledger each step measures is the one in its working directory (or its --db): a
# LEDGER_DB or LEDGER_READ_MODELS of the caller's shell must not redirect it.
CHILD_ENV = {k: v for k, v in os.environ.items() if k not in ("LEDGER_DB", "LEDGER_READ_MODELS")}


def timed(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=CHILD_ENV)
    elapsed = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"bench: {' '.join(command[:4])} failed: {result.stderr.strip()[-400:]}")
    return elapsed, result.stdout


def median(values: list[float]) -> float:
    return statistics.median(values)


def halves(night: Path) -> tuple[Path, Path]:
    """The night as two files, the first half of its lines and the rest (two batches)."""
    lines = night.read_bytes().splitlines(keepends=True)
    first, second = night.with_name("first-half.jsonl"), night.with_name("second-half.jsonl")
    first.write_bytes(b"".join(lines[:len(lines) // 2]))
    second.write_bytes(b"".join(lines[len(lines) // 2:]))
    return first, second


def known_at_figures(ledger: list[str], night: Path, where: Path, read_models: Path,
                     db: tuple[str, ...] = ()) -> dict[str, Any]:
    """Append the night in two batches, then ask the tally as known after the first: as a
    whole process (median of 3) and in process, by the steps and by the full query."""
    where.mkdir()
    for half in halves(night):
        timed([*ledger, "append", str(half), *db], where)
    found = json.loads(timed([sys.executable, "-c", KNOWN, str(read_models)], where)[1])
    found["process_seconds"] = median([timed(
        [*ledger, "tally", "--as-of", AS_OF, "--known-at", found["known_at"], "--format", "json",
         *db], where)[0] for _ in range(3)])
    return found


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
            known = known_at_figures(ledger, night, here / "known",
                                     here / "known" / "ledger.projections.db")
        print(f"  run {attempt + 1}/{runs} done", flush=True)

    seconds = {"raw_floor": floor, "bare_eventsourcing_save": bare, "append": append_only,
               "time_to_first_answer": first_answer, "steady_as_of_tally": steady,
               "naive_as_of_scan": naive, "replay": replay, "raw_read_and_decode": decode}
    return {
        "stations": stations,
        "events": lines,
        "runs": runs,
        **summary(lines, seconds, query, known, merkle / total, rss, ledger_answer,
                  naive_answer),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


# The figures reported as a rate (lines or events per second) as well as in seconds.
RATED = ("raw_floor", "raw_executemany", "bare_eventsourcing_save", "time_to_first_answer",
         "replay", "raw_read_and_decode")


def summary(lines: int, timings: dict[str, list[float]], query: list[dict[str, float]],
            known: dict[str, Any], merkle_share: float, rss: dict[str, int],
            ledger_answer: dict[str, Any], naive_answer: dict[str, Any]) -> dict[str, Any]:
    """The medians, rates and ratios of one backend's runs, and whether it agreed."""
    seconds = {name: median(values) for name, values in timings.items()}
    return {
        "seconds": seconds,
        "rates_per_second": {name: lines / seconds[name] for name in RATED if name in seconds},
        "query_seconds": {k: median([q[k] for q in query]) for k in query[0]},
        "known_at": known,
        "ratios": {
            "first_answer_vs_floor_throughput":
                seconds["raw_floor"] / seconds["time_to_first_answer"],
            "first_answer_vs_bare_eventsourcing_throughput":
                seconds["bare_eventsourcing_save"] / seconds["time_to_first_answer"],
            "steady_tally_vs_naive_scan_time":
                seconds["steady_as_of_tally"] / seconds["naive_as_of_scan"],
            "known_at_tally_vs_naive_scan_time":
                known["process_seconds"] / seconds["naive_as_of_scan"],
            "replay_vs_raw_decode_rate": seconds["raw_read_and_decode"] / seconds["replay"],
            "merkle_share_of_append": merkle_share,
        },
        "targets": TARGETS,
        "peak_rss_mb": {k.removesuffix("_kb"): v / 1024 for k, v in rss.items()},
        "answer_agrees_with_naive_scan": (
            ledger_answer["votes"] == naive_answer["votes"]
            and ledger_answer["stations_reporting"] == naive_answer["stations_reporting"]
            and known["agrees"]),
        "stations_reporting_as_of": ledger_answer["stations_reporting"],
    }


class Postgres:
    """The --postgres server. Every ledger and floor of the run gets a fresh schema named
    ``bench_<token>_...``; drop_all() drops every schema of that name (between runs, and at
    the end, also on failure)."""

    LEDGER_ONLY = frozenset({"lock_timeout", "pool_size"})  # URL parameters libpq does not know

    def __init__(self, url: str) -> None:
        from ledger.store.config import BadLocation, Location

        parts = urlsplit(url)
        query = parse_qsl(parts.query)
        if not Location(url).is_postgres:
            sys.exit(f"bench: --postgres takes a postgresql:// URL, not {url!r}")
        if any(key == "schema" for key, _ in query):
            sys.exit("bench: --postgres: leave schema= out; the bench makes (and drops) its own")
        self.url = url
        self.server = urlunsplit(parts._replace(
            query=urlencode([(k, v) for k, v in query if k not in self.LEDGER_ONLY])))
        self.token = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            Location(self.ledger_url("probe")).environment(sqlite_recorder="",
                                                           postgres_recorder="")
        except BadLocation as error:
            sys.exit(f"bench: --postgres: {error}")

    def describe(self) -> str:
        from ledger.store.config import Location

        return Location(self.url).describe()

    def ledger_url(self, schema: str) -> str:
        """The --db URL of a ledger in this schema."""
        return f"{self.url}{'&' if urlsplit(self.url).query else '?'}schema={schema}"

    def conninfo(self, schema: str) -> str:
        """A libpq connection string whose search_path is this schema."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.server, options=f"-c search_path={schema}")

    def datastore(self, schema: str) -> dict[str, str]:
        """eventsourcing's PostgresDatastore arguments for this schema, as the ledger reads the
        URL."""
        from ledger.store.config import Location

        env = Location(self.ledger_url(schema)).environment(sqlite_recorder="",
                                                             postgres_recorder="")
        return {key: env[f"POSTGRES_{key.upper()}"]
                for key in ("dbname", "host", "port", "user", "password", "schema")}

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.server, autocommit=True)
        except psycopg.Error as error:
            sys.exit(f"bench: --postgres {self.describe()}: {str(error).strip()[:300]}")

    def facts(self) -> dict[str, str]:
        """The server's version and durability settings (they decide what COPY costs)."""
        with self._connect() as db:
            return {name: db.execute(f"SHOW {name}").fetchone()[0]
                    for name in ("server_version", "fsync", "synchronous_commit", "wal_level")}

    def create(self, schema: str) -> None:
        from psycopg import sql

        with self._connect() as db:
            db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    def drop_all(self) -> None:
        from psycopg import sql

        with self._connect() as db:
            for (name,) in db.execute("SELECT nspname FROM pg_namespace").fetchall():
                if name.startswith(f"{self.token}_"):
                    db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def run_postgres(pg: Postgres, night: Path, lines: int, runs: int,
                 workdir: Path) -> dict[str, Any]:
    """The same measurements against PostgreSQL: the floor is COPY into one table."""
    from ledger.store.config import Location

    py = sys.executable
    ledger = [py, "-m", "ledger"]
    floor, executemany, bare, first_answer, append_only, steady, naive, replay, decode = (
        [] for _ in range(9))
    query: list[dict[str, float]] = []
    ledger_answer: dict[str, Any] = {}
    naive_answer: dict[str, Any] = {}
    rss: dict[str, int] = {}
    for attempt in range(runs):
        pg.drop_all()
        for leftover in workdir.glob("pg*"):
            shutil.rmtree(leftover)
        here = workdir / f"pg{attempt}"
        here.mkdir()
        raw_schema = f"{pg.token}_{attempt}_raw"
        pg.create(raw_schema)
        raw = pg.conninfo(raw_schema)
        floor.append(timed([py, "-c", POSTGRES_FLOOR, str(night), raw], here)[0])
        executemany.append(timed([py, "-c", POSTGRES_EXECUTEMANY, str(night), raw], here)[0])
        bare.append(timed([py, "-c", POSTGRES_BARE_EVENTSOURCING, str(night),
                           json.dumps(pg.datastore(raw_schema))], here)[0])
        db = pg.ledger_url(f"{pg.token}_{attempt}_ledger")  # the ledger makes its schema
        tally = [*ledger, "tally", "--as-of", AS_OF, "--format", "json", "--db", db]
        a, _ = timed([*ledger, "append", str(night), "--db", db], here)
        t, out = timed(tally, here)
        append_only.append(a)
        first_answer.append(a + t)
        ledger_answer = json.loads(out)
        steady.append(median([timed(tally, here)[0] for _ in range(3)]))
        n, out = timed([py, "-c", POSTGRES_NAIVE, raw, AS_OF], here)
        naive.append(n)
        naive_answer = json.loads(out)
        # The read models of a PostgreSQL ledger are a SQLite file in the working directory.
        read_models = here / Location(db).read_models_path()
        query.append(json.loads(timed([py, "-c", QUERY, str(read_models)], here)[1]))
        replay.append(timed([*ledger, "replay", "--db", db], here)[0])
        decode.append(timed([py, "-c", POSTGRES_DECODE, raw], here)[0])
        if attempt == 0:
            again = here / "rss"
            again.mkdir()
            db = pg.ledger_url(f"{pg.token}_rss")
            rss["append_kb"] = int(timed([py, "-c", RSS, *ledger, "append", str(night),
                                          "--db", db], again)[1])
            rss["replay_kb"] = int(timed([py, "-c", RSS, *ledger, "replay", "--db", db],
                                         again)[1])
            instrumented = here / "merkle"
            instrumented.mkdir()
            merkle, total = map(float, timed(
                [py, "-c", MERKLE_SHARE, str(night), pg.ledger_url(f"{pg.token}_merkle")],
                instrumented)[1].split())
            db = pg.ledger_url(f"{pg.token}_known")
            known = known_at_figures(ledger, night, here / "known",
                                     here / "known" / Location(db).read_models_path(), ("--db", db))
        print(f"  PostgreSQL run {attempt + 1}/{runs} done", flush=True)

    seconds = {"raw_floor": floor, "raw_executemany": executemany,
               "bare_eventsourcing_save": bare, "append": append_only,
               "time_to_first_answer": first_answer, "steady_as_of_tally": steady,
               "naive_as_of_scan": naive, "replay": replay, "raw_read_and_decode": decode}
    return {
        "server": {"url": pg.describe(), **pg.facts()},
        "schemas": f"{pg.token}_* (dropped)",
        "floor": "COPY raw (line) FROM STDIN, one transaction",
        **summary(lines, seconds, query, known, merkle / total, rss, ledger_answer,
                  naive_answer),
    }


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
    report_shared(result)
    print(f"  ledger tally equals the naive scan: {result['answer_agrees_with_naive_scan']}")


def report_shared(block: dict[str, Any], query_note: str = "", rss_note: str = "") -> None:
    """The lines both backends report alike: queries, replay, Merkle share, memory."""
    s, r, q, qs = block["seconds"], block["rates_per_second"], block["ratios"], block["query_seconds"]
    print(f"  steady as-of tally                    {s['steady_as_of_tally']:8.2f} s")
    print(f"  naive as-of scan                      {s['naive_as_of_scan']:8.2f} s  "
          f"ratio {q['steady_tally_vs_naive_scan_time']:.3f} (target <= 0.1)")
    print(f"  tally query time, running totals      {1000 * qs['running_max']:8.1f} ms max, "
          f"{1000 * qs['running_median']:.1f} ms median over moments of the night{query_note}")
    print(f"  tally query time, full query          {1000 * qs['full_max']:8.1f} ms max "
          "(present knowledge, without the steps)")
    k = block["known_at"]
    print(f"  --known-at tally (two batches)        {k['process_seconds']:8.2f} s  "
          f"ratio {q['known_at_tally_vs_naive_scan_time']:.3f} (target <= 0.1); query time "
          f"{1000 * k['steps_max']:.1f} ms max by the steps, {1000 * k['full_max']:.1f} ms by "
          f"the full query; agree: {k['agrees']}")
    print(f"  replay                                {s['replay']:8.2f} s  "
          f"{r['replay']:>10,.0f} events/s")
    print(f"  raw read and decode                   {s['raw_read_and_decode']:8.2f} s  "
          f"{r['raw_read_and_decode']:>10,.0f} lines/s  "
          f"ratio {q['replay_vs_raw_decode_rate']:.3f} (target >= 0.5)")
    print(f"  Merkle maintenance share of append    {100 * q['merkle_share_of_append']:7.1f} %  "
          "(target <= 10%)")
    print(f"  peak RSS: append {block['peak_rss_mb']['append']:.0f} MB, "
          f"replay {block['peak_rss_mb']['replay']:.0f} MB{rss_note}")


def report_postgres(result: dict[str, Any], runs: int) -> None:
    pg = result["postgres"]
    s, r, q = pg["seconds"], pg["rates_per_second"], pg["ratios"]
    server = pg["server"]
    print(f"\nPostgreSQL {server['server_version']} at {server['url']} (fsync {server['fsync']}, "
          f"synchronous_commit {server['synchronous_commit']}), the same night, "
          f"median of {runs} run(s); a fresh schema per ledger and floor, dropped afterwards")
    print(f"  raw floor (COPY, one transaction)     {s['raw_floor']:8.2f} s  "
          f"{r['raw_floor']:>10,.0f} lines/s")
    print(f"  raw executemany (one transaction)     {s['raw_executemany']:8.2f} s  "
          f"{r['raw_executemany']:>10,.0f} lines/s")
    print(f"  bare eventsourcing save, 5,000 a call {s['bare_eventsourcing_save']:8.2f} s  "
          f"{r['bare_eventsourcing_save']:>10,.0f} lines/s")
    print(f"  ledger append                         {s['append']:8.2f} s")
    print(f"  time to first answer (append+tally)   {s['time_to_first_answer']:8.2f} s  "
          f"{r['time_to_first_answer']:>10,.0f} lines/s  "
          f"ratio {q['first_answer_vs_floor_throughput']:.3f} of COPY (target >= 0.2), "
          f"{q['first_answer_vs_bare_eventsourcing_throughput']:.3f} of the bare save")
    report_shared(pg, query_note=" (read models: a SQLite file, as on SQLite)",
                  rss_note=" (the ledger process; the server's memory is not counted)")
    print(f"  ledger tally on PostgreSQL equals the naive scan: "
          f"{pg['answer_agrees_with_naive_scan']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="JSON result file (default: bench-N.json)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--postgres", metavar="URL",
                        help="also measure on this PostgreSQL server, after SQLite "
                             "(e.g. postgresql://postgres@127.0.0.1:5432/test)")
    args = parser.parse_args()
    pg = Postgres(args.postgres) if args.postgres else None
    if pg:
        pg.facts()  # a server that does not answer fails now, not after the SQLite runs
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still drop the schemas
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args.stations, args.runs, workdir)
        if pg:
            result["postgres"] = run_postgres(pg, workdir / "night.jsonl", result["events"],
                                              args.runs, workdir)
    finally:
        if pg:
            pg.drop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(result)
    if pg:
        report_postgres(result, args.runs)
    out = args.out or Path(f"bench-{args.stations}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    agree = [result["answer_agrees_with_naive_scan"]]
    if pg:
        agree.append(result["postgres"]["answer_agrees_with_naive_scan"])
    return 0 if all(agree) else 1


if __name__ == "__main__":
    sys.exit(main())
