"""A ledger written by an earlier version still verifies and answers the same.

The fixture was written by main before the modules moved (see its README): its Merkle leaves
hash the stored topics of that day, so a leaf that hashed a class's current module path would
no longer match the signed checkpoint.
"""

from __future__ import annotations

import json
import shutil
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
