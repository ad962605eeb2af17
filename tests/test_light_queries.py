"""A query against current read models answers without loading the write side.

The live page and every script ask the tally again and again; each such process must not
pay for the event store's library, the batch checks or signature verification. These tests
run the real command in a fresh interpreter, look at what it imported, and check that the
answer is still current when another process has appended meanwhile.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from ledger.input.reader import read_lines
from ledger.service import LedgerService
from ledger.store.config import locate
from tests.conftest import LedgerUnderTest, definition, protocol, station

# The write side and its libraries: none of them is needed to read current read models.
WRITE_SIDE = ("eventsourcing", "ledger.store.application", "ledger.store.batch", "ledger.input.reader",
              "cryptography", "rfc8785", "sqlite_utils")

ASK = r"""
import contextlib, io, json, sys
from ledger.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "answer": json.loads(out.getvalue()),
                  "modules": sorted(sys.modules)}))
"""


def ask(ledger: LedgerUnderTest, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", ASK, *args, "--db", ledger.db, "--format", "json"],
        cwd=ledger.directory, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_a_tally_on_current_read_models_loads_no_write_side(ledger: LedgerUnderTest) -> None:
    ledger.append(definition(), station("n1", "north", 100), station("s1", "south", 100),
                  protocol("n1", "07T21:00:00", {"a": 60, "b": 30, "c": 0, "d": 0}),
                  protocol("s1", "07T22:00:00", {"a": 10, "b": 80}))
    first = ask(ledger, "tally")
    assert first["code"] == 0
    assert first["answer"]["votes"] == {"a": 70, "b": 110, "c": 0, "d": 0}  # by hand: 60+10, 30+80
    assert loaded(first["modules"], WRITE_SIDE) == []
    # A simple night is answered from the running totals: not even msgspec is needed.
    assert loaded(first["modules"], ("msgspec",)) == []


def test_a_query_after_another_process_appended_is_current(ledger: LedgerUnderTest) -> None:
    ledger.append(definition(), station("n1", "north", 100), station("s1", "south", 100),
                  protocol("n1", "07T21:00:00", {"a": 60, "b": 30, "c": 0, "d": 0}))
    assert ask(ledger, "tally")["answer"]["votes"] == {"a": 60, "b": 30, "c": 0, "d": 0}
    # Appended without catching the read models up: the next query must notice the head
    # moved, catch up (loading what that needs), and count the new protocol.
    line = json.dumps(protocol("s1", "07T22:00:00", {"a": 10, "b": 80})).encode() + b"\n"
    with LedgerService(locate(ledger.db)) as service:
        service.append(read_lines(io.BytesIO(line)), catch_up=False)
    again = ask(ledger, "tally")
    assert again["answer"]["votes"] == {"a": 70, "b": 110, "c": 0, "d": 0}
    assert again["answer"]["stations_reporting"] == 2
    # And once caught up, the next one is light again.
    assert loaded(ask(ledger, "tally")["modules"], WRITE_SIDE) == []


# Never needed to append a line to a ledger whose read models exist: the report's libraries,
# the server, the other backend, the read side's queries, and (for an unsigned line) the
# signature libraries.
NOT_FOR_APPEND = ("numpy", "matplotlib", "jinja2", "sqlite_utils", "tqdm", "starlette", "uvicorn",
                  "psycopg", "cryptography", "rfc8785", "ledger.http", "projections.tally",
                  "projections.seats", "projections.audit", "projections.nist", "projections.report")

APPEND = r"""
import sys

import pytest
from ledger.cli.main import main
code = main(sys.argv[1:])
import json
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_a_one_protocol_append_loads_only_the_write_path(ledger: LedgerUnderTest) -> None:
    if ledger.backend != "sqlite":
        pytest.skip("psycopg is the PostgreSQL backend's own: the SQLite run says it all")
    ledger.append(definition(), station("n1", "north", 100), station("s1", "south", 100))
    ledger.query("tally")  # the read models exist, as on any night after the first line
    one = ledger.directory / "one.jsonl"
    one.write_text(json.dumps(protocol("n1", "07T21:00:00", {"a": 60, "b": 30})) + "\n")
    result = subprocess.run([sys.executable, "-c", APPEND, "append", str(one), "--db", ledger.db],
                            cwd=ledger.directory, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ran = json.loads(result.stdout.splitlines()[-1])
    assert ran["code"] == 0
    assert loaded(ran["modules"], NOT_FOR_APPEND) == []
    assert ledger.query("tally")["votes"] == {"a": 60, "b": 30, "c": 0, "d": 0}  # appended, counted


def test_the_command_line_builds_the_parser_of_the_command_asked_alone() -> None:
    from ledger.cli.main import build_parser, command_asked

    whole = build_parser()
    assert command_asked(["--db", "x.db", "tally", "--as-of", "now"]) == "tally"
    assert command_asked(["--help", "tally"]) is None and command_asked([]) is None
    for name, full in whole.commands.items():
        alone = build_parser(only=name)
        assert list(alone.commands) == [name]
        # The same options, defaults and help as in the whole parser.
        assert ([(a.option_strings, a.dest, a.default, a.help) for a in alone.commands[name]._actions]
                == [(a.option_strings, a.dest, a.default, a.help) for a in full._actions]), name
    assert list(build_parser(only="no-such-command").commands) == list(whole.commands)
