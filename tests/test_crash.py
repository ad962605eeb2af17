"""Crash safety: `ledger append` and `ledger replay` killed with SIGKILL at random moments.

Each trial runs the real command in a subprocess on a seeded night (about 5,800 events by
default: scripts/bench.py's generator), kills it at a seeded random moment within the time a
clean run takes, and then checks, without trusting the ledger's own code where it can:

- the event store holds the whole batch or none of it (counted in the database itself);
- `ledger verify` passes;
- the read models catch up to exactly the log (`history` has as many events as the store,
  and when the batch is complete `tally` equals a clean single run's);
- re-running the command completes the job (the counts and the tally equal a clean run's).

The same trials run on SQLite and on PostgreSQL (skipped, with the reason, if no server
answers). Environment: LEDGER_TEST_TRIALS (default 4) `append` trials per backend, half as
many `replay` trials (at least 2); LEDGER_TEST_SEED (default 2030) for another night and other
moments; LEDGER_TEST_CRASH_STATIONS (default 2500: 5,824 events) for a bigger night. Each
trial prints one line (see them with `pytest -s`); docs/operations.md has measured counts.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ledger.cli.main import main
from tests.conftest import PG_SERVER, Result, require_postgres

ROOT = Path(__file__).resolve().parents[1]
# Four append trials per backend cover both paths twice (even: first load, odd: catch-up).
TRIALS = int(os.environ.get("LEDGER_TEST_TRIALS", "4"))
SEED = int(os.environ.get("LEDGER_TEST_SEED", "2030"))
STATIONS = int(os.environ.get("LEDGER_TEST_CRASH_STATIONS", "2500"))


def bench_module() -> Any:
    """scripts/bench.py, whose ``generate`` writes a seeded national night as JSON Lines."""
    spec = importlib.util.spec_from_file_location("ledger_bench", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Target:
    """One ledger (a SQLite file or a PostgreSQL schema) and its read-model file."""

    backend: str
    db: str
    directory: Path
    read_models: Path
    schema: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("LEDGER_DB", "LEDGER_DEBUG")}
        env["LEDGER_READ_MODELS"] = str(self.read_models)
        env.update(self.extra_env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "ledger", *args, "--db", self.db]

    def start(self, *args: str, prelude: str | None = None) -> subprocess.Popen[str]:
        """The real command line in a new process; ``prelude`` is Python run before it."""
        argv = self.command(*args)
        if prelude is not None:
            script = f"{prelude}\nimport sys\nfrom ledger.cli.main import main\nsys.exit(main(sys.argv[1:]))"
            argv = [sys.executable, "-c", script, *argv[3:]]
        return subprocess.Popen(argv, cwd=self.directory, env=self.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def cli(self, *args: str, timeout: float = 300, prelude: str | None = None) -> Result:
        process = self.start(*args, prelude=prelude)
        out, err = process.communicate(timeout=timeout)
        return Result(process.returncode, out, err)

    def run(self, *args: str) -> Result:
        """The command line in this process (faster for queries): same code, same exit codes."""
        out, err = io.StringIO(), io.StringIO()
        saved = {k: os.environ.get(k) for k in ("LEDGER_READ_MODELS", "LEDGER_DB")}
        os.environ["LEDGER_READ_MODELS"] = str(self.read_models)
        os.environ.pop("LEDGER_DB", None)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main([*args, "--db", self.db])
                except SystemExit as exit_:
                    code = int(exit_.code or 0)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return Result(code, out.getvalue(), err.getvalue())

    def query(self, *args: str) -> Any:
        result = self.run(*args, "--format", "json")
        assert result.code == 0, result.err
        return result.json()

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """A read straight from the event store, bypassing the ledger's code."""
        if self.backend == "sqlite":
            path = Path(self.db)
            if not path.exists():
                return []
            uri = f"file:{path.resolve()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
                tables = {row[0] for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if "stored_events" not in tables:
                    return []
                return connection.execute(statement.format(
                    events="stored_events", position="rowid", index="ledger_index")).fetchall()
        with psycopg.connect(PG_SERVER, autocommit=True) as connection:
            found = connection.execute(
                "SELECT to_regclass(%s)", (f'"{self.schema}".ledger_events',)).fetchone()
            if found is None or found[0] is None:
                return []
            return connection.execute(statement.format(  # type: ignore[arg-type]
                events=f'"{self.schema}".ledger_events', position="notification_id",
                index=f'"{self.schema}".ledger_index')).fetchall()

    def stored(self) -> int:
        rows = self.sql("SELECT COUNT(*) FROM {events}")
        return rows[0][0] if rows else 0

    def head(self) -> int:
        """The last log position (PostgreSQL skips the positions of a rolled-back batch)."""
        rows = self.sql("SELECT MAX({position}) FROM {events}")
        return (rows[0][0] or 0) if rows else 0

    def applied(self) -> int | None:
        """The log position the read models have folded in (None: no usable file yet)."""
        if not self.read_models.exists():
            return None
        uri = f"file:{self.read_models.resolve()}?mode=ro"
        try:
            with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
                row = connection.execute(
                    "SELECT position FROM applied WHERE name = 'log'").fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else 0

    def ledger_exists(self) -> bool:
        return self.backend == "postgres" or Path(self.db).exists()


@dataclass
class Targets:
    """Makes fresh ledgers and drops the PostgreSQL schemas it made."""

    base: Path
    schemas: list[str] = field(default_factory=list)

    def new(self, backend: str, name: str) -> Target:
        directory = self.base / f"{name}-{uuid.uuid4().hex[:6]}"
        directory.mkdir(parents=True)
        if backend == "sqlite":
            return Target(backend, str(directory / "ledger.db"), directory,
                          directory / "read-models.db")
        schema = f"t_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        self.schemas.append(schema)
        return Target(backend, f"{PG_SERVER}?schema={schema}", directory,
                      directory / "read-models.db", schema)

    def drop(self) -> None:
        if not self.schemas:
            return
        with psycopg.connect(PG_SERVER, autocommit=True) as connection:
            for schema in self.schemas:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def targets_in(base: Path) -> Iterator[Targets]:
    made = Targets(base)
    try:
        yield made
    finally:
        made.drop()


def require(backend: str) -> None:
    if backend == "postgres":
        require_postgres()


def kill_at(process: subprocess.Popen[str], seconds: float) -> bool:
    """SIGKILL ``process`` after ``seconds``; False if it had already finished."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            process.communicate()
            return False
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
    if process.poll() is not None:
        process.communicate()
        return False
    process.send_signal(signal.SIGKILL)
    process.communicate()
    # It may have finished between the last look and the signal.
    assert process.returncode in (0, -signal.SIGKILL), process.returncode
    return process.returncode == -signal.SIGKILL


def report(line: str) -> None:
    print(line)  # shown with `pytest -s`


# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("night") / "night.jsonl"
    bench_module().generate(path, STATIONS, seed=SEED)
    return path


@dataclass
class Reference:
    """A clean, uninterrupted run: what every trial is compared with."""

    target: Target
    events: int
    tally: dict[str, Any]
    append_seconds: float
    replay_seconds: float


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def reference(
    request: pytest.FixtureRequest, night: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Reference]:
    require(request.param)
    with targets_in(tmp_path_factory.mktemp(f"crash-{request.param}")) as made:
        target = made.new(request.param, "reference")
        start = time.monotonic()
        appended = target.cli("append", str(night))
        append_seconds = time.monotonic() - start
        assert appended.code == 0, appended.err
        start = time.monotonic()
        replayed = target.cli("replay")
        replay_seconds = time.monotonic() - start
        assert replayed.code == 0, replayed.err
        events = target.stored()
        with night.open() as lines:
            assert events == sum(1 for line in lines if line.strip())
        yield Reference(target, events, target.query("tally"), append_seconds, replay_seconds)


@pytest.fixture
def fresh(reference: Reference, tmp_path: Path) -> Iterator[Targets]:
    with targets_in(tmp_path) as made:
        yield made


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_killed_append_stores_all_or_nothing_and_a_rerun_completes_it(
    reference: Reference, fresh: Targets, night: Path, trial: int
) -> None:
    """Even trials append the night to an empty ledger (the read models' first load is a
    rebuild into a new file); odd trials to a ledger already holding the election and its
    stations (the read models catch up in place, in one transaction)."""
    backend, total = reference.target.backend, reference.events
    rng = random.Random(f"{SEED}/append/{backend}/{trial}")
    moment = rng.uniform(0.05, 1.0) * reference.append_seconds
    target = fresh.new(backend, f"append-{trial}")
    if trial % 2:
        setup = target.directory / "setup.jsonl"
        with night.open() as lines, setup.open("w") as out:
            out.writelines(line for _, line in zip(range(1 + STATIONS), lines, strict=False))
        assert target.cli("append", str(setup)).code == 0
    before = target.stored()

    killed = kill_at(target.start("append", str(night)), moment)
    stored, applied = target.stored(), target.applied()
    journal = target.read_models.with_name(target.read_models.name + "-journal").exists()
    assert stored in (before, total), f"a killed append left {stored} events ({before} before)"

    if target.ledger_exists():
        verified = target.run("verify")
        assert verified.code == 0, verified.err
        assert verified.out.startswith(f"ok: {stored} events intact")
        # Any query catches the read models up with the log, whatever the kill left of them.
        assert len(target.query("history")["events"]) == stored
        assert target.applied() == target.head()
        if stored == total:
            assert target.query("tally") == reference.tally

    rerun = target.cli("append", str(night))
    assert rerun.code == 0, rerun.err
    assert rerun.out.startswith(f"appended {total - stored} event(s)"), rerun.out
    assert f"; {stored} already recorded" in rerun.out, rerun.out
    assert target.stored() == total
    assert target.applied() == target.head()
    assert target.query("tally") == reference.tally
    if stored != total:  # the rerun wrote the batch: verify that too
        assert target.run("verify").code == 0
    report(f"append trial {backend} #{trial}: {'killed' if killed else 'finished'} at "
           f"{moment:.2f}s of {reference.append_seconds:.2f}s; {before} events before, "
           f"{stored} after; read models at {applied}{' with a hot journal' if journal else ''}; "
           "verify ok; rerun completed")


@pytest.mark.parametrize("trial", range(max(2, TRIALS // 2)))
def test_a_killed_replay_leaves_the_old_read_models_usable(
    reference: Reference, fresh: Targets, trial: int
) -> None:
    backend = reference.target.backend
    rng = random.Random(f"{SEED}/replay/{backend}/{trial}")
    moment = rng.uniform(0.05, 0.9) * reference.replay_seconds
    target = Target(backend, reference.target.db, fresh.base, fresh.base / "read-models.db",
                    reference.target.schema)
    shutil.copyfile(reference.target.read_models, target.read_models)

    killed = kill_at(target.start("replay"), moment)
    half_built = f"{target.read_models.name}.rebuilding-*"
    leftover = any(target.read_models.parent.glob(half_built))
    assert target.applied() == reference.target.head()
    assert len(target.query("history")["events"]) == reference.events
    assert target.query("tally") == reference.tally

    rerun = target.cli("replay")
    assert rerun.code == 0, rerun.err
    assert target.applied() == reference.target.head()
    assert target.query("tally") == reference.tally
    assert not any(target.read_models.parent.glob(half_built))  # the killed one's is cleared
    report(f"replay trial {backend} #{trial}: {'killed' if killed else 'finished'} at "
           f"{moment:.2f}s of {reference.replay_seconds:.2f}s; half-built file left: {leftover}; "
           "old read models answered; rerun completed")


class CorruptedReadModels(AssertionError):
    """A regression: rebuild() must not let a stale journal corrupt the new read models."""


# Run before the real command line: the read-model catch-up dies (SIGKILL, as a power cut or
# the OOM killer would) once it has written two pages of rows, leaving a hot journal.
DIE_AFTER_TWO_PAGES = textwrap.dedent("""
    import os, signal
    import projections.apply as apply
    apply.PAGE = 1_000  # pages of 1,000 rows: three pages from a small night
    _pages = []
    _apply_page = apply._apply_page
    def _dying(connection, page, *rest):
        if len(_pages) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        _pages.append(len(page))
        return _apply_page(connection, page, *rest)
    apply._apply_page = _dying
""")


def test_replay_after_a_killed_catch_up_gives_sound_read_models(
    reference: Reference, fresh: Targets
) -> None:
    if reference.target.backend != "sqlite":
        pytest.skip("read models are SQLite files whatever the backend: one run is enough")
    from ledger.store.application import Ledger
    from ledger.store.config import locate
    from projections.apply import rebuild

    target = Target("sqlite", reference.target.db, fresh.base, fresh.base / "read-models.db")
    quarter = reference.events // 4  # so the catch-up has three pages to write

    class FirstQuarter:
        def __init__(self, ledger: Ledger) -> None:
            self.ledger = ledger

        def entries(self, after: int = 0) -> Iterator[Any]:
            return (e for e in self.ledger.entries(after) if e.position <= quarter)

        def head(self) -> int:
            return quarter

    ledger = Ledger(locate(target.db))
    try:
        assert rebuild(target.read_models, FirstQuarter(ledger)) == quarter
    finally:
        ledger.close()

    dying = target.cli("tally", prelude=DIE_AFTER_TWO_PAGES)
    assert dying.code == -signal.SIGKILL, dying.err
    journal = target.read_models.with_name(target.read_models.name + "-journal")
    assert journal.exists() and journal.stat().st_size > 0, "no hot journal: the setup failed"

    replayed = target.cli("replay")
    assert replayed.code == 0, replayed.err
    history = target.run("history", "--format", "json")
    if history.code != 0:
        raise CorruptedReadModels(history.err)
    if len(history.json()["events"]) != reference.events:
        raise CorruptedReadModels(f"history has {len(history.json()['events'])} events, "
                                  f"the log {reference.events}")
    with contextlib.closing(sqlite3.connect(target.read_models)) as connection:
        check = connection.execute("PRAGMA integrity_check").fetchone()[0]
    if check != "ok":
        raise CorruptedReadModels(check[:200])
    assert target.query("tally") == reference.tally
