#!/usr/bin/env python3
"""Append the bundled sample night the way an observer mission's script would.

An observer's script collects protocol copies as they come in and pipes them to
`ledger append -` in small batches. Re-running it is harmless: lines already in the
ledger are recognised and skipped, so a script can simply resend everything after a crash.

    python scripts/append_sample.py                 # into ./ledger.db
    python scripts/append_sample.py --db other.db --batch 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.resources import files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="ledger location (default: $LEDGER_DB or ./ledger.db)")
    parser.add_argument("--batch", type=int, default=5, help="lines per append (default 5)")
    args = parser.parse_args()
    lines = files("ledger").joinpath("samples/council-2030.jsonl").read_text().splitlines()
    db = ["--db", args.db] if args.db else []
    for start in range(0, len(lines), args.batch):
        batch = "\n".join(lines[start : start + args.batch]) + "\n"
        result = subprocess.run([sys.executable, "-m", "ledger", "append", "-", *db],
                                input=batch, text=True, capture_output=True)
        sys.stdout.write(result.stdout)
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            return result.returncode
    return subprocess.run([sys.executable, "-m", "ledger", "tally", *db]).returncode


if __name__ == "__main__":
    sys.exit(main())
