"""Concurrent writers: four `ledger append` processes at once on one ledger, and lock timeouts.

Four processes append overlapping batches (every line of a night appears in at least one,
many in several, a few twice in the same batch) to one SQLite file and to one PostgreSQL
schema at the same moment. Afterwards every distinct event must be stored exactly once, the
batches must sit in the log one after the other (positions strictly increasing, never
interleaved), `ledger verify` must pass and the tallies must equal a single writer's.

A writer that cannot get the lock in time must fail with one clear, retryable line (exit 1)
having written nothing.

LEDGER_TEST_TRIALS (default 4) scales the number of concurrent runs: one per 5 trials (at
least one).
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import subprocess
import threading
import types
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.domain.events import decoder, identity
from tests.conftest import PG_SERVER, Regression
from tests.test_crash import SEED, TRIALS, Result, Target, Targets, bench_module, require, targets_in

WRITERS = 4
RUNS = max(1, TRIALS // 5)
# Enough lines that four batches overlap in time (each takes longer than a process start).
STATIONS = 1_000
HANG = 120  # seconds: only a guard against a hung test, never a measure
BUSY = "ledger: the ledger is locked by another writer; try again"


@dataclass(frozen=True)
class Night:
    setup: list[str]   # the election and its stations, appended first by one writer
    rest: list[str]    # protocols, copies and withheld requests: what the writers share out
    ids: frozenset[str]

    def write(self, path: Path, lines: list[str]) -> Path:
        path.write_text("".join(line + "\n" for line in lines))
        return path


def _identity(line: str) -> str:
    return identity(decoder.decode(line))


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Night:
    path = tmp_path_factory.mktemp("concurrent-night") / "night.jsonl"
    bench_module().generate(path, STATIONS, seed=SEED)
    lines = path.read_text().splitlines()
    setup = lines[: 1 + STATIONS]
    assert all('"StationRegistered"' in line for line in setup[1:])
    return Night(setup, lines[1 + STATIONS :], frozenset(map(_identity, lines)))


def batches(night: Night, rng: random.Random) -> list[list[str]]:
    """Each line goes to one writer of its own, and to each other writer with chance 0.3;
    a few lines are repeated within a batch."""
    shares: list[list[str]] = [[] for _ in range(WRITERS)]
    for index, line in enumerate(night.rest):
        for writer in range(WRITERS):
            if writer == index % WRITERS or rng.random() < 0.3:
                shares[writer].append(line)
    for share in shares:
        share.extend(rng.sample(share, 20))
        rng.shuffle(share)
    return shares


def single_writer(made: Targets, backend: str, night: Night) -> dict[str, Any]:
    target = made.new(backend, "single")
    for name, lines in (("setup", night.setup), ("rest", night.rest)):
        result = target.cli("append", str(night.write(target.directory / f"{name}.jsonl", lines)))
        assert result.code == 0, result.err
    return {"official": target.query("tally"),
            "observers": target.query("tally", "--reporter", "observers")}


def check_log(target: Target, night: Night) -> None:
    """Straight from the database: each event once, batches contiguous and in commit order."""
    rows = target.sql("SELECT position, event_id, recorded_at FROM {index} ORDER BY position")
    positions = [row[0] for row in rows]
    assert positions == sorted(set(positions)), "positions repeat or go backwards"
    assert target.stored() == len(rows) == len(night.ids)
    assert {row[1] for row in rows} == night.ids
    spans: dict[Any, list[int]] = defaultdict(list)
    for number, (_, _, recorded_at) in enumerate(rows):
        spans[str(recorded_at)].append(number)
    for recorded_at, numbers in spans.items():
        assert numbers == list(range(numbers[0], numbers[-1] + 1)), (
            f"the batch recorded at {recorded_at} is interleaved with another")
    stamps = [str(row[2]) for row in rows]
    assert stamps == sorted(stamps), "recorded_at goes backwards along the log"


@pytest.mark.parametrize("run", range(RUNS))
@pytest.mark.parametrize("setting", ["sqlite", "postgres", "postgres-no-ddl"])
def test_concurrent_writers_store_each_event_once_in_commit_order(
    setting: str, run: int, night: Night, tmp_path: Path
) -> None:
    """`postgres-no-ddl`: the writers run with LEDGER_CREATE_TABLE=no, as docs/operations.md
    advises for the application role."""
    backend = setting.split("-")[0]
    require(backend)
    rng = random.Random(f"{SEED}/concurrent/{run}")
    with targets_in(tmp_path) as made:
        target = made.new(backend, f"concurrent-{run}")
        setup = target.cli("append", str(night.write(tmp_path / "setup.jsonl", night.setup)))
        assert setup.code == 0, setup.err
        if setting == "postgres-no-ddl":
            target.extra_env["LEDGER_CREATE_TABLE"] = "no"
        files = [night.write(tmp_path / f"writer-{n}.jsonl", share)
                 for n, share in enumerate(batches(night, rng))]

        processes = [target.start("append", str(path)) for path in files]
        results = []
        for process in processes:
            out, err = process.communicate(timeout=300)
            results.append(Result(process.returncode, out, err))
        retried = []
        for path, result in zip(files, results, strict=True):
            attempts = 0
            while result.code != 0:
                # Whatever the failure, it is one line, without a traceback, and retryable.
                assert result.code == 1, result.err
                assert result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
                retried.append(result.err.strip())
                attempts += 1
                assert attempts <= 5, f"still failing after 5 retries: {result.err}"
                result = target.cli("append", str(path))
        # The lock queues the writers (30 s timeout): nobody should have needed a retry.
        assert retried == []

        check_log(target, night)
        verified = target.run("verify")
        assert verified.code == 0, verified.err
        assert len(target.query("history")["events"]) == len(night.ids)
        expected = single_writer(made, backend, night)
        assert target.query("tally") == expected["official"]
        assert target.query("tally", "--reporter", "observers") == expected["observers"]
        print(f"concurrent run {setting} #{run}: {WRITERS} writers, {len(night.ids)} distinct "
              f"events stored once; retried: {retried or 'none'}")


# --- lock timeouts ------------------------------------------------------------------------


def test_a_sqlite_writer_that_cannot_get_the_lock_fails_cleanly_and_can_retry(
    night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ledger.store.config

    # The command line waits 30 s for the lock; the same code path, with 1 s.
    monkeypatch.setattr(ledger.store.config, "LOCK_TIMEOUT_SECONDS", "1")
    with targets_in(tmp_path) as made:
        target = made.new("sqlite", "busy")
        assert target.run("append", str(night.write(tmp_path / "setup.jsonl", night.setup))).code == 0
        batch = night.write(tmp_path / "rest.jsonl", night.rest)
        before = target.stored()
        holder = sqlite3.connect(target.db, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            busy = target.run("append", str(batch))
            # Order, not time: the lock was still held when the writer gave up.
            still_held = holder.in_transaction
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert busy.code == 1
        assert busy.err == BUSY + "\n"
        assert busy.out == ""
        assert still_held
        assert target.stored() == before
        again = target.run("append", str(batch))
        assert again.code == 0, again.err
        assert target.stored() == len(night.ids)


@contextlib.contextmanager
def holding_the_write_lock(target: Target) -> Iterator[None]:
    """What a long batch does: the events table locked EXCLUSIVE in an open transaction."""
    with psycopg.connect(PG_SERVER) as connection:
        connection.execute(f'LOCK TABLE "{target.schema}".ledger_events IN EXCLUSIVE MODE')
        yield
        connection.rollback()


def test_a_postgres_batch_that_cannot_get_the_lock_raises_ledger_busy(
    night: Night, tmp_path: Path
) -> None:
    require("postgres")
    from ledger.input.reader import read_lines
    from ledger.store.application import Ledger
    from ledger.store.config import locate
    from ledger.store.session import LedgerBusy

    with targets_in(tmp_path) as made:
        target = made.new("postgres", "busy")
        setup = night.write(tmp_path / "setup.jsonl", night.setup)
        assert target.cli("append", str(setup)).code == 0
        batch = night.write(tmp_path / "rest.jsonl", night.rest)
        before = target.stored()
        ledger = Ledger(locate(target.db + "&lock_timeout=1"))
        try:
            with holding_the_write_lock(target), batch.open("rb") as stream, \
                    pytest.raises(LedgerBusy, match="locked by another writer; try again"):
                ledger.append(read_lines(stream))
            assert target.stored() == before
            with batch.open("rb") as stream:
                assert ledger.append(read_lines(stream)).count == len(night.rest)
        finally:
            ledger.close()


def test_without_startup_ddl_a_postgres_writer_times_out_cleanly_and_readers_go_on(
    night: Night, tmp_path: Path
) -> None:
    """LEDGER_CREATE_TABLE=no (docs/operations.md: an option for non-owner roles) skips even
    the check that the tables exist: lock_timeout works from the command line, readers pass."""
    require("postgres")
    with targets_in(tmp_path) as made:
        target = made.new("postgres", "noddl")
        setup = night.write(tmp_path / "setup.jsonl", night.setup)
        assert target.cli("append", str(setup)).code == 0
        batch = night.write(tmp_path / "rest.jsonl", night.rest)
        quick = Target("postgres", target.db + "&lock_timeout=1", target.directory,
                       target.read_models, target.schema, {"LEDGER_CREATE_TABLE": "no"})
        with holding_the_write_lock(target):
            # While the lock is held: the writer gives up on its own, readers go on.
            busy = quick.cli("append", str(batch), timeout=120)
            verified = quick.cli("verify", timeout=30)
            tally = quick.cli("tally", "--format", "json", timeout=30)
        assert (busy.code, busy.err, busy.out) == (1, BUSY + "\n", "")
        assert verified.code == 0 and verified.out.startswith(f"ok: {len(night.setup)} events")
        assert tally.code == 0, tally.err
        assert target.stored() == len(night.setup)
        again = quick.cli("append", str(batch))
        assert again.code == 0, again.err
        assert target.stored() == len(night.ids)


def test_a_postgres_writer_and_reader_are_not_stuck_behind_a_long_batch(
    night: Night, tmp_path: Path
) -> None:
    require("postgres")
    with targets_in(tmp_path) as made:
        target = made.new("postgres", "stuck")
        setup = night.write(tmp_path / "setup.jsonl", night.setup)
        assert target.cli("append", str(setup)).code == 0
        batch = night.write(tmp_path / "rest.jsonl", night.rest)
        quick = Target("postgres", target.db + "&lock_timeout=1", target.directory,
                       target.read_models, target.schema)
        with holding_the_write_lock(target):
            writer = quick.start("append", str(batch))
            reader = quick.start("verify")
            outcomes = {}
            # Both must end while the lock is still held (the writer by its lock_timeout=1);
            # the generous limit only keeps a regression from hanging the suite.
            for name, process in (("append", writer), ("verify", reader)):
                try:
                    out, err = process.communicate(timeout=HANG)
                    outcomes[name] = Result(process.returncode, out, err)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.communicate()
                    outcomes[name] = None
        if outcomes["append"] is None or outcomes["verify"] is None:
            raise Regression(f"still waiting after {HANG} s with lock_timeout=1: "
                             f"{[k for k, v in outcomes.items() if v is None]}")
        assert outcomes["append"].code == 1 and outcomes["append"].err == BUSY + "\n"
        assert outcomes["verify"].code == 0, outcomes["verify"].err
        assert target.stored() == len(night.setup)


def test_postgres_writers_starting_together_do_not_deadlock(night: Night, tmp_path: Path) -> None:
    require("postgres")
    with targets_in(tmp_path) as made:
        target = made.new("postgres", "start")
        assert target.cli("append", str(night.write(tmp_path / "s.jsonl", night.setup[:1]))).code == 0
        tiny = night.write(tmp_path / "tiny.jsonl", night.setup[:3])
        failures: list[str] = []
        # Rounds of 8 simultaneous starts, until one fails: before the fix, 2 of 4 writers
        # failed in every run, so three rounds still catch it.
        for _ in range(3):
            processes = [target.start("append", str(tiny)) for _ in range(8)]
            for process in processes:
                _, err = process.communicate(timeout=120)
                if process.returncode != 0:
                    assert process.returncode == 1 and err.count("\n") == 1, err
                    failures.append(err.strip())
            if failures:
                raise Regression(f"{len(failures)} of 8 writers failed: {failures[0]}")


def test_overlapping_rebuilds_of_the_same_read_models_both_succeed(
    night: Night, tmp_path: Path
) -> None:
    from ledger.store.application import Ledger
    from ledger.store.config import locate
    from projections.apply import rebuild

    with targets_in(tmp_path) as made:
        target = made.new("sqlite", "rebuilds")
        assert target.run("append", str(night.write(tmp_path / "s.jsonl", night.setup))).code == 0
        path = tmp_path / "shared.projections.db"
        ledger = Ledger(locate(target.db))
        first_reading, second_done = threading.Event(), threading.Event()

        class Slow:
            """The log as the first rebuild sees it: it pauses until the second is done."""

            def entries(self, after: int = 0) -> Iterator[Any]:
                first_reading.set()
                assert second_done.wait(30)
                yield from ledger.entries(after)

            def head(self) -> int:
                return ledger.head()

        errors: list[BaseException] = []

        def first() -> None:
            try:
                rebuild(path, Slow())
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=first)
        thread.start()
        try:
            assert first_reading.wait(30)
            try:
                rebuild(path, ledger)
            finally:
                second_done.set()
                thread.join(60)
        finally:
            ledger.close()
        if errors:
            raise Regression(f"the first rebuild failed: {type(errors[0]).__name__}: {errors[0]}")
        with contextlib.closing(sqlite3.connect(path)) as db:
            position = db.execute("SELECT position FROM applied WHERE name = 'log'").fetchone()[0]
            assert position == len(night.setup)


def test_a_locked_read_model_file_does_not_turn_a_stored_batch_into_a_failure(
    night: Night, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import projections.schema

    real = sqlite3.connect
    quick = types.SimpleNamespace(**{k: getattr(sqlite3, k) for k in dir(sqlite3)
                                     if not k.startswith("__")})
    quick.connect = lambda *args, **kwargs: real(*args, **{**kwargs, "timeout": 1})
    with targets_in(tmp_path) as made:
        target = made.new("sqlite", "models-locked")
        assert target.run("append", str(night.write(tmp_path / "s.jsonl", night.setup))).code == 0
        batch = night.write(tmp_path / "rest.jsonl", night.rest[:500])
        monkeypatch.setattr(projections.schema, "sqlite3", quick)  # 1 s instead of 30 s
        holder = sqlite3.connect(target.read_models, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            result = target.run("append", str(batch))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        monkeypatch.undo()
        assert target.stored() == len(night.setup) + 500
        if result.code != 0:
            raise Regression(f"exit {result.code} for a stored batch: {result.err.strip()}")
        assert len(target.query("history")["events"]) == len(night.setup) + 500


def test_the_night_has_no_duplicate_lines(night: Night) -> None:
    """The premise of the counts above: every line of the night is a distinct event."""
    assert len(night.ids) == len(night.setup) + len(night.rest)
    assert json.loads(night.setup[0])["type"] == "ElectionDefined"
