"""A ledger written by an earlier version still verifies and answers the same.

The fixture was written by main before the modules moved (see its README): its Merkle leaves
hash the stored topics of that day, so a leaf that hashed a class's current module path would
no longer match the signed checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "ledger-2026-12"


def ledger(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", "--db", str(tmp / "ledger.db"), *args],
                          capture_output=True, text=True, cwd=tmp)


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    shutil.copy(FIXTURE / "ledger.db", tmp_path / "ledger.db")
    return tmp_path


def test_an_old_ledger_verifies_against_its_signed_checkpoint(old_ledger: Path) -> None:
    result = ledger(old_ledger, "verify", "--checkpoint", str(FIXTURE / "signed.ckpt"),
                    "--public-key", str(FIXTURE / "log.pub"))
    assert result.returncode == 0, result.stderr
    assert "16 events intact" in result.stdout


def test_an_old_ledger_prints_the_same_checkpoint(old_ledger: Path) -> None:
    printed = ledger(old_ledger, "checkpoint").stdout
    assert printed == (FIXTURE / "signed.ckpt").read_text().split("\n\n")[0] + "\n"


@pytest.mark.parametrize(("options", "answer"), [
    ((), "tally.json"),
    (("--reporter", "watch"), "tally-watch.json"),
    (("--stage", "final"), "tally-final.json"),
])
def test_an_old_ledger_answers_the_same_tally(old_ledger: Path, options: tuple[str, ...],
                                              answer: str) -> None:
    result = ledger(old_ledger, "tally", "--format", "json", *options)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((FIXTURE / answer).read_text())


def test_events_appended_today_are_stored_as_the_old_ones_were(old_ledger: Path) -> None:
    """Each Merkle leaf hashes the stored topic: it names the event's type in the log's format,
    never the module its class lives in now, so old and new entries of one log read alike."""
    line = {"type": "ProtocolWithheld", "election": "example-2030", "station": "south-1",
            "occurred_at": "2030-04-08T09:00:00+02:00", "requested_by": "grey", "reason": "closed"}
    (old_ledger / "more.jsonl").write_text(json.dumps(line) + "\n")
    assert ledger(old_ledger, "append", "more.jsonl").returncode == 0
    with sqlite3.connect(old_ledger / "ledger.db") as db:
        topics = [topic for (topic,) in db.execute("SELECT topic FROM stored_events ORDER BY rowid")]
    assert len(topics) == 17
    assert topics[-1] == "ledger.events:ProtocolWithheld"
    assert all(topic.startswith("ledger.events:") for topic in topics)
    assert ledger(old_ledger, "verify").returncode == 0
