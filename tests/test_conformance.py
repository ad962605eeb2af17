"""The public conformance sample (../shared/conformance/check), run against this build."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import SHARED, require_shared

CHECK = SHARED / "conformance" / "check"


def test_the_public_conformance_check_passes_completely() -> None:
    require_shared(CHECK)
    result = subprocess.run(
        [sys.executable, str(CHECK), f"{sys.executable} -m ledger"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "15 passed, 0 failed"
