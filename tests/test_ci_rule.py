"""The rule that CI must not pass by skipping: a missing PostgreSQL or shared/ fails a run
under CI=true, and only skips locally. Each case runs the real pytest in a subprocess on one
small test, pointed at a closed port or an absent folder."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    """A local port nothing listens on: bound and released, so connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_pytest(target: str, ci: bool, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment.update(env)
    if ci:
        environment["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )


NO_POSTGRES = {"LEDGER_TEST_POSTGRES": f"postgresql://postgres@127.0.0.1:{closed_port()}/test"}
PG_TEST = "tests/test_bad_input.py::test_a_byte_order_mark_at_the_start_is_accepted"
NO_SHARED = {"LEDGER_TEST_SHARED": "/nonexistent/shared"}
SHARED_TEST = "tests/test_conformance.py"


@pytest.mark.parametrize(("target", "env"), [(PG_TEST, NO_POSTGRES), (SHARED_TEST, NO_SHARED)],
                         ids=["no-postgres", "no-shared"])
def test_under_ci_a_missing_dependency_fails_the_run(target: str, env: dict[str, str]) -> None:
    result = run_pytest(target, ci=True, **env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CI=true: a missing test dependency fails the run" in result.stdout
    # A fixture that fails counts as an error, a test body as a failure: either fails the run.
    assert re.search(r"\d+ (failed|error)", result.stdout.splitlines()[-1])


@pytest.mark.parametrize(("target", "env"), [(PG_TEST, NO_POSTGRES), (SHARED_TEST, NO_SHARED)],
                         ids=["no-postgres", "no-shared"])
def test_locally_a_missing_dependency_skips_with_the_reason(target: str, env: dict[str, str]) -> None:
    result = run_pytest(target, ci=False, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" in result.stdout.splitlines()[-1]
    assert "failed" not in result.stdout.splitlines()[-1]
