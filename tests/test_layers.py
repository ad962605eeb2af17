"""The layering docs/architecture.md promises, read from the source itself.

- Code that writes events lives only in ledger/: nothing in projections/ imports the event
  store, the planner or the recorders (type-checking imports aside).
- Code that writes read models lives only in projections/: no module of ledger/ writes a
  read-model table.
- The application layer and the read side know nothing of the adapters: no argparse, HTTP
  framework or server in ledger/service.py or projections/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from projections.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]
WRITE_SIDE = {"ledger.application", "ledger.batch", "ledger.store", "ledger.sqlite_store",
              "ledger.postgres_store", "ledger.codec", "ledger.service"}
ADAPTERS = {"argparse", "starlette", "uvicorn", "ledger.cli", "ledger.commands", "ledger.http"}


def runtime_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it runs (not those under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            checking.update(id(inner) for inner in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def under(module: str, packages: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_read_side_never_reaches_the_write_path() -> None:
    offenders = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in (ROOT / "projections").rglob("*.py")
        for module in runtime_imports(path) if under(module, WRITE_SIDE)
    }
    assert not offenders


def test_the_write_side_never_writes_a_read_model_table() -> None:
    tables = "|".join(re.escape(name) for name in TABLES)
    writes = re.compile(rf"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+\[?({tables})\b",
                        re.IGNORECASE)
    offenders = [
        f"{path.relative_to(ROOT)}: {match[0]}"
        for path in (ROOT / "ledger").rglob("*.py")
        for match in writes.finditer(path.read_text(encoding="utf-8"))
    ]
    assert not offenders


def test_the_application_layer_and_the_read_side_know_no_adapter() -> None:
    sources = [ROOT / "ledger" / "service.py", *(ROOT / "projections").rglob("*.py")]
    offenders = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources for module in runtime_imports(path) if under(module, ADAPTERS)
    }
    assert not offenders


def test_the_layer_checks_would_catch_an_offender(tmp_path: Path) -> None:
    """The checks above read real imports: a planted one is found."""
    planted = tmp_path / "planted.py"
    planted.write_text("from typing import TYPE_CHECKING\nimport argparse\n"
                       "if TYPE_CHECKING:\n    from ledger.batch import Planner\n")
    assert runtime_imports(planted) == {"typing", "argparse"}
    assert under("ledger.http.app", ADAPTERS) and not under("ledger.httpx", ADAPTERS)
