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
