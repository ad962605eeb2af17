#!/usr/bin/env python3
"""A bounded load test of `ledger serve`, on the loopback only; it stops by itself.

Builds a fresh ledger (SQLite in a temporary directory, or --db postgresql://...?schema=...),
defines one election with N stations and registers 32 reporters' keys, starts `ledger serve`
on a free loopback port, then for --seconds: 32 reporters each POST one signed protocol at a
time (one per station, in turn) while one reader polls the tally. Prints accepted protocols
per second, p50/p99 write latency and the tally's p50 latency.

With --rate R the reporters together send R protocols a second (paced), instead of as many as
the server takes. With --follow a replica follows the live night (`ledger mirror --follow`,
a SQLite file beside the ledger, or --replica-db URL), and the lag of each checkpoint it
mirrors is reported (seconds from the source recording the newest event to the replica
committing it), then that the replica caught up with the source's last checkpoint.

    python scripts/load.py --stations 2000 --seconds 20
    python scripts/load.py --db 'postgresql://postgres@127.0.0.1:5432/test?schema=load1'
    python scripts/load.py --stations 20000 --seconds 20 --rate 500 --follow
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PREFIX = b"election-ledger/event/v1\n"
ELECTION = "load-night"
REPORTERS = 32


def sign(key: Ed25519PrivateKey, by: str, event: dict) -> dict:
    """docs/events.md, signed events: Ed25519 over the prefix and the RFC 8785 JSON of the event as sent."""
    signature = key.sign(PREFIX + rfc8785.dumps(event))
    return {**event, "signature": {"by": by, "ed25519": base64.b64encode(signature).decode()}}


def setup(db: str, work: Path, stations: int, keys: dict[str, Ed25519PrivateKey]) -> None:
    from ledger.domain.events import TYPE_NAMES

    at = "2031-05-18T{}+03:00".format
    events = [{"type": "ElectionDefined", "election": ELECTION, "occurred_at": at("00:00:00"),
               "name": "Load night", "seats": 10, "method": "dhondt", "authority": "r00",
               "choices": [{"id": c, "name": c.upper()} for c in ("x", "y", "z")]}]
    events += [{"type": "StationRegistered", "election": ELECTION, "occurred_at": at("01:00:00"),
                "station": f"s{i}", "region": f"R{i % 10}", "registered_voters": 1000}
               for i in range(stations)]
    if "ReporterRegistered" in TYPE_NAMES:  # signatures (issue 12) are in: register the keys
        for name, key in keys.items():
            raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
            events.append({"type": "ReporterRegistered", "election": ELECTION,
                           "occurred_at": at("02:00:00"), "reporter": name, "name": name,
                           "public_key": base64.b64encode(raw).decode()})
    path = work / "definitions.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    subprocess.run([sys.executable, "-m", "ledger", "append", str(path), "--db", db],
                   cwd=work, check=True, stdout=subprocess.DEVNULL)


def protocol(station: int, reporter: str, seq: int) -> dict:
    x, y = 300 + (seq * 7 + station) % 200, 200 + (station * 3) % 150
    return {"type": "ProtocolIssued", "election": ELECTION,
            "occurred_at": "2031-05-18T21:00:00+03:00", "station": f"s{station}",
            "reported_by": reporter, "registered_voters": 1000, "ballots_issued": x + y + 5,
            "ballots_cast": x + y + 5, "invalid": 5, "votes": {"x": x, "y": y, "z": 0}}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stations", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--db", help="a postgresql:// URL (default: SQLite in a temporary directory)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="protocols per second, all reporters together (default: unpaced)")
    parser.add_argument("--follow", action="store_true",
                        help="a replica follows the night; report its lag")
    parser.add_argument("--replica-db", help="the follower's ledger: a postgresql:// URL "
                        "(default: SQLite beside the source)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ledger-load-"))
    db = args.db or str(work / "ledger.db")
    keys = {f"r{i:02d}": Ed25519PrivateKey.generate() for i in range(REPORTERS)}
    setup(db, work, args.stations, keys)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LEDGER_READ_MODELS": str(work / "read-models.db")}
    signing: list[str] = []
    if args.follow:
        subprocess.run([sys.executable, "-m", "ledger", "keygen", str(work / "log")], check=True,
                       stdout=subprocess.DEVNULL)
        signing = ["--key", str(work / "log.key")]
    server = subprocess.Popen([sys.executable, "-m", "ledger", "serve", "--db", db, "--port",
                               str(port), *signing], cwd=work, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tally_path = f"/v1/elections/{ELECTION}/tally"
    for _ in range(300):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", tally_path)
            if connection.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.1)
    # Signed before the clock starts: the generator shares the machine with the server.
    bodies = []
    for index in range(REPORTERS):
        name = f"r{index:02d}"
        bodies.append([json.dumps(sign(keys[name], name, protocol(
            (seq + index * args.stations // REPORTERS) % args.stations, name, seq))).encode() + b"\n"
            for seq in range(min(args.stations, int(args.seconds * 100)))])
    follower = Follower(work, port, args.replica_db) if args.follow else None
    if follower is not None:
        follower.wait(lambda: follower.lines, 60, "the follower's first checkpoint")
    deadline = time.monotonic() + args.seconds
    began_at = time.monotonic()
    interval = REPORTERS / args.rate if args.rate else 0.0
    write_latency: list[float] = []
    read_latency: list[float] = []
    refused: dict[int, int] = {}
    lock = threading.Lock()

    def reporter(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for sent, body in enumerate(bodies[index]):
            if interval:  # paced: this reporter's n-th protocol leaves at n intervals (staggered)
                due = began_at + (sent + index / REPORTERS) * interval
                time.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            connection.request("POST", "/v1/events", body,
                               {"Content-Type": "application/x-ndjson"})
            response = connection.getresponse()
            response.read()
            took = time.perf_counter() - started
            with lock:
                if response.status == 200:
                    write_latency.append(took)
                else:
                    refused[response.status] = refused.get(response.status, 0) + 1

    def reader() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            connection.request("GET", tally_path)
            connection.getresponse().read()
            read_latency.append(time.perf_counter() - started)
            time.sleep(0.05)

    threads = [threading.Thread(target=reporter, args=(i,)) for i in range(REPORTERS)]
    threads.append(threading.Thread(target=reader))
    began = time.monotonic()
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if follower is not None:
            follower.caught_up(port)
    finally:
        elapsed = time.monotonic() - began
        if follower is not None:
            follower.stop()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    backend = "PostgreSQL" if db.startswith("postgres") else "SQLite"
    print(f"{backend}: {args.stations} stations, {REPORTERS} reporters, {elapsed:.1f} s")
    print(f"accepted protocols: {len(write_latency)} ({len(write_latency) / elapsed:.0f}/s); "
          f"refused: {refused or 'none'}")
    print(f"write latency p50 {1000 * percentile(write_latency, 0.5):.1f} ms, "
          f"p99 {1000 * percentile(write_latency, 0.99):.1f} ms")
    print(f"tally latency p50 {1000 * statistics.median(read_latency):.1f} ms "
          f"over {len(read_latency)} reads")
    if follower is not None:
        lags = follower.lags()[1:]  # the first is the catch-up of the definitions
        print(f"follow lag over {len(lags)} checkpoints mirrored: p50 {percentile(lags, 0.5):.2f} s, "
              f"p99 {percentile(lags, 0.99):.2f} s, max {max(lags, default=float('nan')):.2f} s; "
              f"replica caught up with the source's checkpoint of {follower.final_size} entries "
              f"{follower.behind:.2f} s after the last write")
    return 0


class Follower:
    """`ledger mirror --follow` on a replica of the served night, its lines collected."""

    def __init__(self, work: Path, port: int, replica_db: str | None) -> None:
        self.lines: list[str] = []
        self.final_size = 0
        self.behind = float("nan")
        env = {**os.environ, "LEDGER_READ_MODELS": str(work / "replica-models.db")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "mirror", f"http://127.0.0.1:{port}", "--public-key",
             str(work / "log.pub"), "--follow", "--db", replica_db or str(work / "replica.db")],
            cwd=work, env=env, start_new_session=True, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait(self, done, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            if time.monotonic() > deadline or self.process.poll() is not None:
                sys.exit(f"load: the follower never reached {what}")
            time.sleep(0.02)

    def caught_up(self, port: int) -> None:
        """Wait until the replica holds the source's last checkpoint."""
        stopped = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/v1/checkpoint")
        self.final_size = int(connection.getresponse().read().decode().split("\n")[1])
        self.wait(lambda: any(line.startswith(f"size {self.final_size},") for line in self.lines),
                  60, f"size {self.final_size}")
        self.behind = time.monotonic() - stopped

    def lags(self) -> list[float]:
        return [float(line.rsplit("lag ", 1)[1].split()[0]) for line in self.lines if "lag " in line]

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
