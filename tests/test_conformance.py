"""The public conformance samples (../shared/conformance/check, check-v2 and check-v3), run against
this build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SHARED, require_shared

CHECK = SHARED / "conformance" / "check"
CHECK_V2 = SHARED / "conformance" / "check-v2"


def test_the_public_conformance_check_passes_completely() -> None:
    require_shared(CHECK)
    result = subprocess.run(
        [sys.executable, str(CHECK), f"{sys.executable} -m ledger"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "15 passed, 0 failed"


def test_the_public_v2_sample_passes_completely(tmp_path: Path) -> None:
    """Signed events appended from the command line, then `ledger serve` on a free port:
    the sample signs its events itself, byte for byte as ../shared/DESIGN.md says."""
    require_shared(CHECK_V2)
    env = {k: v for k, v in os.environ.items() if k not in ("LEDGER_DB", "LEDGER_READ_MODELS")}
    result = subprocess.run(
        [sys.executable, str(CHECK_V2), f"{sys.executable} -m ledger"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "12 passed, 0 failed"


CHECK_V3 = SHARED / "conformance" / "check-v3"


def test_the_public_v3_witness_sample_passes_completely(tmp_path: Path) -> None:
    """`ledger keygen --cosigner` and `ledger witness serve` driven through the request
    sequence of ../shared/c2sp/vectors.json; the sample checks each cosignature itself."""
    require_shared(CHECK_V3)
    result = subprocess.run(
        [sys.executable, str(CHECK_V3), f"{sys.executable} -m ledger"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "10 passed, 0 failed"
