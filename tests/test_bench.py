"""A smoke run of the benchmark: it runs end to end and its ledger agrees with the naive scan,
on SQLite and (with --postgres) on the test PostgreSQL server.

Timings are the benchmark's business (docs/performance.md); nothing here asserts one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.conftest import PG_SERVER, require_postgres

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def test_the_benchmark_runs_and_the_ledger_agrees_with_the_naive_scan(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--stations", "1000", "--runs", "1", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["answer_agrees_with_naive_scan"] is True
    assert figures["events"] > 2000 and figures["stations_reporting_as_of"] > 0
    assert set(figures["ratios"]) == {
        "first_answer_vs_floor_throughput", "first_answer_vs_bare_eventsourcing_throughput",
        "steady_tally_vs_naive_scan_time", "known_at_tally_vs_naive_scan_time",
        "replay_vs_raw_decode_rate", "merkle_share_of_append"}
    # The --known-at answers (as known after the first of two batches) came from the steps
    # by ledger time and agreed with the full query at every moment asked.
    assert figures["known_at"]["agrees"] is True
    assert 0 < figures["known_at"]["known_reporting_at_end"] < 1000  # the first half: some
    assert set(figures["query_seconds"]) == {"running_max", "running_median", "full_max",
                                             "full_median"}
    assert "ledger tally equals the naive scan: True" in result.stdout


def test_the_benchmark_measures_postgresql_too_and_it_agrees_with_the_naive_scan(
    tmp_path: Path,
) -> None:
    require_postgres()
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--stations", "500", "--runs", "1", "--out", str(out),
         "--postgres", PG_SERVER],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["answer_agrees_with_naive_scan"] is True
    postgres = figures["postgres"]
    assert postgres["answer_agrees_with_naive_scan"] is True
    assert postgres["stations_reporting_as_of"] == figures["stations_reporting_as_of"] > 0
    assert set(postgres["ratios"]) == set(figures["ratios"])
    assert set(postgres["query_seconds"]) == set(figures["query_seconds"])
    assert set(figures["seconds"]) < set(postgres["seconds"])
    assert "ledger tally on PostgreSQL equals the naive scan: True" in result.stdout
    # Every schema the run made is gone.
    prefix = postgres["schemas"].removesuffix("* (dropped)")
    assert prefix.startswith("bench_")
    with psycopg.connect(PG_SERVER) as connection:
        left = [name for (name,) in connection.execute("SELECT nspname FROM pg_namespace")
                if name.startswith(prefix)]
    assert not left, left
