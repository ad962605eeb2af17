"""The command line says what it does: help for every option, --version, --db named at the
top, one rule for unknown stations, thresholds shown exactly, queries before the election."""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from ledger.cli.main import build_parser, main
from tests.conftest import (
    PG_SERVER,
    LedgerUnderTest,
    definition,
    protocol,
    require_postgres,
    station,
)

ROOT = Path(__file__).resolve().parents[1]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_and_argument_has_help(name: str) -> None:
    parser = subcommands()[name]
    missing = [a.dest for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == [], f"ledger {name}: no help text for {missing}"


def test_the_top_level_help_names_db_and_ledger_db() -> None:
    result = subprocess.run([sys.executable, "-m", "ledger", "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0
    assert "--db PATH_OR_URL" in result.stdout and "$LEDGER_DB" in result.stdout


def test_version_prints_the_installed_version() -> None:
    result = subprocess.run([sys.executable, "-m", "ledger", "--version"], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert (result.returncode, result.stdout) == (0, f"ledger {version('election-ledger')}\n")


def test_known_at_and_as_of_help_agree_with_the_docs_no_bound() -> None:
    for name in ("tally", "seats", "history", "audit", "elections", "export", "report"):
        helps = {a.dest: a.help for a in subcommands()[name]._actions}
        assert helps["known_at"].endswith("default: no bound"), name
        assert helps["as_of"].endswith("default: no bound"), name


def test_demo_refuses_db_instead_of_ignoring_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ledger", "demo", "--db", str(tmp_path / "x.db"), "--dir",
         str(tmp_path / "demo"), "--stations", "3"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "demo builds its own fresh ledger in --dir" in result.stderr
    assert not (tmp_path / "demo").exists()


def test_history_and_audit_share_one_rule_for_an_unknown_station(
    registered: LedgerUnderTest,
) -> None:
    for command in ("history", "audit"):
        result = registered.run(command, "--station", "nowhere")
        assert result.code == 2, command
        assert result.err.startswith("ledger: --station: unknown station 'nowhere'"), result.err
    assert registered.query("history", "--station", "n1")["events"][0]["station"] == "n1"


def test_elections_takes_as_of_and_known_at(registered: LedgerUnderTest) -> None:
    # Defined at 2030-04-01T12:00:00+02:00 (tests/conftest.py).
    before = registered.query("elections", "--as-of", "2030-04-01T09:59:59Z")
    assert before["elections"] == []
    after = registered.query("elections", "--as-of", "2030-04-01T10:00:00Z")
    assert after["elections"] == [{"id": "council-2030", "name": "Council 2030"}]
    assert registered.query("elections", "--known-at", "2000-01-01T00:00:00Z")["elections"] == []


def test_seats_show_a_fractional_threshold_exactly(ledger: LedgerUnderTest) -> None:
    # 5% of 2,184 valid votes is 109.2: a party with 109 votes does not pass, 110 would.
    ledger.append(definition(threshold_pct=5.0), station("n1", "North", 5000),
                  protocol("n1", "07T20:00:00", {"a": 1075, "b": 1000, "c": 109}))
    seats = ledger.query("seats")
    assert seats["threshold_votes_exact"] == "109.2" and seats["votes_to_pass"] == 110
    assert "c" not in seats["passing"]
    table = ledger.run("seats")
    assert "threshold 5.0% of valid votes = 109.2 votes (110 to pass)" in table.out


def test_seats_before_the_election_was_defined_pass_nobody(registered: LedgerUnderTest) -> None:
    early = registered.query("seats", "--as-of", "2030-03-01T00:00:00Z")
    assert early["passing"] == [] and set(early["seats"].values()) == {0}
    assert early["status"] == "not yet defined"
    assert registered.query("tally", "--as-of", "2030-03-01T00:00:00Z")["passing"] == []
    assert registered.query("seats")["status"] == "no results"


# --- failures of the environment name what to fix --------------------------------------------


def test_a_missing_postgres_database_is_named_at_once(tmp_path: Path, capsys: Any) -> None:
    require_postgres()
    server = PG_SERVER.rsplit("/", 1)[0]
    missing_db = f"{server}/no_such_ledger_db_{uuid.uuid4().hex[:8]}"
    code = main(["tally", "--db", missing_db])
    err = capsys.readouterr().err
    assert code == 1
    assert f'database "{missing_db.rsplit("/", 1)[1]}" does not exist' in err, err
    assert "couldn't get a connection" not in err


@pytest.mark.parametrize("parameter", ["lock_timeout=0", "connect_timeout=0", "pool_size=0"])
def test_a_zero_timeout_or_pool_is_refused(parameter: str, capsys: Any) -> None:
    # PostgreSQL reads lock_timeout=0 as "wait forever": a retry loop would hang, not retry.
    assert main(["tally", "--db", f"{PG_SERVER}?{parameter}"]) == 2
    assert "at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["replay", "tally"])
def test_read_models_that_cannot_be_written_are_named_with_their_path(
    registered: LedgerUnderTest, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    blocker = registered.directory / "a-file"
    blocker.write_text("not a directory")
    models = blocker / "read-models.db"
    monkeypatch.setenv("LEDGER_READ_MODELS", str(models))
    result = registered.run(command)
    assert result.code == 1
    assert result.err.startswith(f"ledger: cannot write the read models at {models}: "), result.err
