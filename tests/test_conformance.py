"""The public conformance sample (../shared/conformance/check), run against this build."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import SHARED

CHECK = SHARED / "conformance" / "check"


@pytest.mark.skipif(not CHECK.exists(), reason=f"{CHECK} is not here (no ../shared checkout)")
def test_the_public_conformance_check_passes_completely() -> None:
    result = subprocess.run(
        [sys.executable, str(CHECK), f"{sys.executable} -m ledger"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "15 passed, 0 failed"
