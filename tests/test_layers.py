"""The architecture docs/architecture.md draws, read from the source itself.

- Rooms are layered: a module imports only from its own room or from rooms below it
  (``LAYERS``), so there is no import cycle between rooms, and none between modules.
- Adapters stand apart: nothing imports the command line but ``python -m ledger``, and
  nothing imports the HTTP adapter but the command line (its ``serve`` commands start it).
- Code that writes events lives only in ledger/: nothing in projections/ imports the event
  store, the planner or the recorders; ledger/ reaches the read side only through the
  application layer (``ledger.service``).
- Code that writes read models lives only in projections/: no module of ledger/ writes a
  read-model table.
- The application layer and the read side know nothing of the adapters.

Every import counts, also those inside functions (they are deferred for start-up time, but
they are dependencies all the same); only ``if TYPE_CHECKING:`` imports are left out.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from projections.schema import TABLES

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A room may import from itself and from any room listed before it.
LAYERS = [
    "ledger.errors",
    "ledger.domain",        # event schemas, identity, control relations, the rules of validity
    "ledger.input",         # JSON Lines and the importers: bytes in, events or problems out
    "ledger.trust",         # Merkle tree, checkpoints, signatures, receipts, notes, witnesses
    "ledger.store",         # the event store, its recorders, the planner, verifying what it holds
    "ledger.remote",        # a served ledger seen from outside: the mirror's and receipts' client
    "projections",          # the read side
    "ledger.demo",
    "ledger.service",       # the application layer: both sides
    "ledger.witnessing",    # ledger serve asks its witnesses (background, beside the service)
    "ledger.http",          # adapters
    "ledger.cli",
    "ledger.__main__",
]
WRITE_SIDE = {"ledger.store", "ledger.service"}
ADAPTERS = {"argparse", "starlette", "uvicorn", "ledger.cli", "ledger.http"}


def runtime_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it runs (not those under ``if TYPE_CHECKING:``); for
    ``from package import name``, also ``package.name``, which may be a module."""
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
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    return {module_name(path): path
            for package in ("ledger", "projections") for path in (ROOT / package).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    modules = our_modules()
    return {name: {m for m in runtime_imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def under(module: str, packages: set[str] | str) -> bool:
    packages = {packages} if isinstance(packages, str) else packages
    return any(module == p or module.startswith(p + ".") for p in packages)


def layer(module: str) -> int:
    for rank, room in enumerate(LAYERS):
        if under(module, room):
            return rank
    raise LookupError(f"{module} is in no room of LAYERS: add it to the map (and to "
                      "docs/architecture.md)")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_anywhere() -> None:
    assert cycles(import_graph()) == []


def test_every_module_has_a_room_and_imports_only_its_own_or_lower_rooms() -> None:
    graph = import_graph()
    for module in graph.keys() - {"ledger"}:  # the package itself is empty
        layer(module)
    offenders = {
        f"{module} ({LAYERS[layer(module)]}) imports {other} ({LAYERS[layer(other)]})"
        for module, imported in graph.items()
        for other in imported if layer(other) > layer(module)
    }
    assert not offenders


def test_adapters_stand_apart() -> None:
    graph = import_graph()
    cli = {m for m, imported in graph.items() if any(under(o, "ledger.cli") for o in imported)
           and not under(m, "ledger.cli")}
    http = {m for m, imported in graph.items() if any(under(o, "ledger.http") for o in imported)
            and not under(m, "ledger.http")}
    assert cli == {"ledger.__main__"}
    assert http <= {m for m in graph if under(m, "ledger.cli")}


def test_ledger_reaches_the_read_side_only_through_the_application_layer() -> None:
    offenders = {
        f"{module} imports {other}"
        for module, imported in import_graph().items() if under(module, "ledger")
        for other in imported if under(other, "projections") and not under(module, "ledger.service")
    }
    assert not offenders


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
    sources = [*(ROOT / "ledger" / "service.py",), *(ROOT / "projections").rglob("*.py")]
    offenders = {
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sources for module in runtime_imports(path) if under(module, ADAPTERS)
    }
    assert not offenders


def test_the_layer_checks_would_catch_an_offender(tmp_path: Path) -> None:
    """The checks above read real imports: a planted one is found, a cycle is found, and a
    room that imports upwards is named."""
    planted = tmp_path / "planted.py"
    planted.write_text("from typing import TYPE_CHECKING\nimport argparse\n"
                       "if TYPE_CHECKING:\n    from ledger.store.batch import Planner\n"
                       "def late():\n    from ledger.trust import merkle\n")
    assert runtime_imports(planted) == {"typing", "typing.TYPE_CHECKING", "argparse",
                                        "ledger.trust", "ledger.trust.merkle"}
    assert under("ledger.http.app", ADAPTERS) and not under("ledger.httpx", ADAPTERS)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("ledger.trust.merkle") < layer("ledger.store.integrity")
    with pytest.raises(LookupError):
        layer("ledger.somewhere_new")
