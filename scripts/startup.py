#!/usr/bin/env python3
"""Small commands, whole processes: one-protocol `ledger append` against `python -c pass`.

Builds the bundled sample ledger in a temporary directory, then runs, interleaved --runs
times so that the machine's load falls on each alike: `python -c pass`, `python -m ledger
append` of one new protocol (a different one each time, so each is really appended and the
read models caught up), of one already recorded, and `ledger tally --format json`. Prints
the median and minimum wall time of each, the ratio to `python -c pass`, the load average,
and the modules that cost most to import on the append path (`python -X importtime`).

    python scripts/startup.py --runs 9
    python scripts/startup.py --runs 9 --baseline /tmp/main-src   # another tree, same run

With --baseline DIR (a source tree of the ledger, e.g. `git archive main | tar -x -C DIR`), the
same commands are run from that tree too (PYTHONPATH=DIR, its own ledger), interleaved with
this one's: a before/after in one run. Both trees' modules are compiled first (as `pip
install` does): where PYTHONDONTWRITEBYTECODE=1 and the package is installed editable, every
run would otherwise compile the sources again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "ledger" / "samples" / "council-2030.jsonl"


def one_protocol(index: int) -> str:
    """A protocol no earlier run holds: an observer's copy for station n1."""
    return json.dumps({
        "type": "ProtocolIssued", "election": "council-2030",
        "occurred_at": f"2030-04-07T23:{index % 60:02d}:{index // 60 % 60:02d}+02:00",
        "station": "n1", "reported_by": f"observer-{index}", "registered_voters": 1000,
        "ballots_issued": 100, "ballots_cast": 100, "invalid": 0, "votes": {"a": 50, "b": 50},
    }) + "\n"


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def import_costs(command: list[str], cwd: Path, top: int = 12) -> list[tuple[int, str]]:
    """The costliest imports of ``command``: (cumulative microseconds, module) of the modules
    imported at the top level or one below it."""
    result = subprocess.run([sys.executable, "-X", "importtime", *command], cwd=cwd,
                            capture_output=True, text=True, check=True)
    costs = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1:
            costs.append((int(cumulative), name.strip()))
    return sorted(costs, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--baseline", type=Path, help="another source tree to measure alike")
    args = parser.parse_args()
    trees = {"this tree": Path(__file__).resolve().parents[1]}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    ledger = [sys.executable, "-m", "ledger"]
    places: dict[str, tuple[Path, dict[str, str]]] = {}
    for label, tree in trees.items():
        subprocess.run([sys.executable, "-m", "compileall", "-q", "ledger", "projections"],
                       cwd=tree, check=True)
        env = {**os.environ, **({"PYTHONPATH": str(tree)} if label == "baseline" else {})}
        work = Path(tempfile.mkdtemp(prefix="ledger-startup-"))
        subprocess.run([*ledger, "append", str(SAMPLE)], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        for index in range(args.runs + 1):
            (work / f"one-{index}.jsonl").write_text(one_protocol(index))
        places[label] = (work, env)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    figures: dict[str, list[float]] = {"python -c pass": []}
    for index in range(args.runs):
        figures["python -c pass"].append(timed([sys.executable, "-c", "pass"], Path.cwd()))
        for label, (work, env) in places.items():
            for name, command in ((f"ledger append, one new protocol ({label})",
                                   [*ledger, "append", f"one-{index}.jsonl"]),
                                  (f"ledger append, already recorded ({label})",
                                   [*ledger, "append", f"one-{index}.jsonl"]),
                                  (f"ledger tally --format json ({label})",
                                   [*ledger, "tally", "--format", "json"])):
                figures.setdefault(name, []).append(timed(command, work, env))
    floor = statistics.median(figures["python -c pass"])
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"{name:<50} median {1000 * median:6.1f} ms  min {1000 * min(values):6.1f} ms  "
              f"= {median / floor:4.1f}x python -c pass")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    work, env = places["this tree"]
    print("costliest imports of `ledger append` (cumulative, top level and one below):")
    for cumulative, name in import_costs(["-m", "ledger", "append", f"one-{args.runs}.jsonl"], work):
        print(f"  {cumulative / 1000:6.1f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
