#!/usr/bin/env python3
"""What signatures cost: `ledger append` of the national night, unsigned and signed, in one run.

    python scripts/bench_signatures.py                   # 50,000 stations (about 116k events)
    python scripts/bench_signatures.py --stations 10000 --runs 3

The night is scripts/bench.py's (same seed). The signed variant registers keys for the
commission (`cec`) and the observers first, then every report line carries its reporter's
Ed25519 signature, made here with cryptography and rfc8785 as docs/events.md states the message.
Each figure is the median of --runs whole-process appends into a fresh SQLite ledger
(read models caught up included, as a user sees it). Signing itself is not timed: reporters
sign on their own machines.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import tempfile
from pathlib import Path

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ELECTION, generate, median, timed

from ledger.domain.events import ACTING_FIELD

PREFIX = b"election-ledger/event/v1\n"
ACTING = {cls.__struct_config__.tag: field for cls, field in ACTING_FIELD.items()}


def signed_night(unsigned: Path, signed: Path) -> int:
    """Copy the night with reporter keys registered and every report signed; count the
    signed lines."""
    keys = {reporter: Ed25519PrivateKey.generate() for reporter in ("cec", "observers")}
    count = 0
    with unsigned.open() as source, signed.open("w") as out:
        for number, text in enumerate(source):
            event = json.loads(text)
            if number == 1:  # right after the ElectionDefined line
                for reporter, key in keys.items():
                    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                                        serialization.PublicFormat.Raw)
                    out.write(json.dumps({
                        "type": "ReporterRegistered", "election": ELECTION,
                        "occurred_at": "2030-04-20T00:00:00Z", "reporter": reporter,
                        "name": reporter, "public_key": base64.b64encode(raw).decode()}) + "\n")
            field = ACTING.get(event["type"])
            if field is not None:
                signature = keys[event[field]].sign(PREFIX + rfc8785.dumps(event))
                event["signature"] = {"by": event[field],
                                      "ed25519": base64.b64encode(signature).decode()}
                count += 1
            out.write(json.dumps(event, separators=(",", ":")) + "\n")
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-signatures-"))
    try:
        night = work / "night.jsonl"
        lines = generate(night, args.stations)
        signed = work / "signed.jsonl"
        signed_lines = signed_night(night, signed)
        figures = {}
        for name, path in (("unsigned", night), ("signed", signed)):
            times = []
            for run in range(args.runs):
                where = work / f"{name}-{run}"
                where.mkdir()
                elapsed, _ = timed([sys.executable, "-m", "ledger", "append", str(path)], where)
                times.append(elapsed)
                shutil.rmtree(where)
            figures[name] = median(times)
        total = {"unsigned": lines, "signed": lines + 2}
        print(f"{args.stations:,} stations, {lines:,} events ({signed_lines:,} of them signed "
              f"in the signed night), median of {args.runs} run(s) of `ledger append`:")
        for name, seconds in figures.items():
            print(f"  {name:>8}: {seconds:7.2f} s  {total[name] / seconds:10,.0f} events/s")
        print(f"  signatures cost {figures['signed'] / figures['unsigned'] - 1:+.0%} of append time, "
              f"{(figures['signed'] - figures['unsigned']) / signed_lines * 1e6:.0f} us per "
              "signed event")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
