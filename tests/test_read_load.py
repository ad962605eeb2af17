"""A smoke run of scripts/read_load.py: both servers start, the readers and writers run, and
the ledger's served tally equals the command line's afterwards (nothing kept in memory
outlived the writes). Timings are the script's business (docs/performance.md); nothing here
asserts one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "read_load.py"


def test_the_read_load_runs_and_the_served_answer_is_current(tmp_path: Path) -> None:
    out = tmp_path / "read-load.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--stations", "60", "--seconds", "0.5", "--runs", "1",
         "--writers", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["answer_agrees"] is True
    (run,) = figures["runs"]
    for phase in ("floor", "reads", "reads_with_writers"):
        assert run[phase]["requests"] > 0 and run[phase]["not_200"] == {}, phase
    assert run["writes_alone"]["accepted"] > 0 and run["writes_alone"]["refused"] == {}
    assert run["writes_with_readers"]["accepted"] > 0 and run["writes_with_readers"]["refused"] == {}
    assert "x the floor" in result.stdout
