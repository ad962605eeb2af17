#!/usr/bin/env python3
"""What asking witnesses costs the writers: write latency with and without `--witnesses`.

Builds two identical fresh SQLite ledgers (scripts/load.py's night: one election, N stations,
32 signed reporters), starts two `ledger witness serve` processes on the loopback, then runs
the same timed load (32 reporters each POSTing one signed protocol at a time) against
`ledger serve --key` and against `ledger serve --key --witnesses POLICY`, alternately, ROUNDS
times each. Prints write p50/p99 and protocols/s for both and their ratio; the target is that
witnesses add no more than 5% to write latency. Also prints how far the published (cosigned)
checkpoint was behind the log at the end.

    python scripts/bench_witnesses.py --stations 2000 --seconds 10 --rounds 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import ELECTION, REPORTERS, percentile, protocol, setup, sign

LEDGER = [sys.executable, "-m", "ledger"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, path: str = "/") -> None:
    for _ in range(300):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def start(args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*LEDGER, *args], cwd=cwd, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=60)


def run_load(port: int, bodies: list[list[bytes]], seconds: float) -> tuple[list[float], float]:
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    lock = threading.Lock()

    def reporter(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for body in bodies[index]:
            if time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            connection.request("POST", "/v1/events", body, {"Content-Type": "application/x-ndjson"})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                with lock:
                    latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=reporter, args=(i,)) for i in range(REPORTERS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stations", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ledger-witness-bench-"))
    keys = {f"r{i:02d}": Ed25519PrivateKey.generate() for i in range(REPORTERS)}
    ledgers = {}
    for mode in ("alone", "witnessed"):
        (work / mode).mkdir()
        ledgers[mode] = work / mode / "ledger.db"
        setup(str(ledgers[mode]), work / mode, args.stations, keys)
        subprocess.run([*LEDGER, "keygen", "log"], cwd=work / mode, check=True, capture_output=True)
    policy = ""
    witnesses = []
    origin = subprocess.run([*LEDGER, "--db", str(ledgers["witnessed"]), "checkpoint"],
                            capture_output=True, text=True, check=True).stdout.splitlines()[0]
    for name in ("w1", "w2"):
        vkey = subprocess.run([*LEDGER, "keygen", name, "--cosigner"], cwd=work, check=True,
                              capture_output=True, text=True).stdout.strip()
        port = free_port()
        witnesses.append(start(["witness", "serve", "--key", f"{name}.key", "--log",
                                f"{origin}={work / 'witnessed' / 'log.pub'}", "--port", str(port)],
                               work))
        wait_for(port)
        policy += f"witness {name} {vkey} http://127.0.0.1:{port}\n"
    (work / "policy.txt").write_text(policy + "group both 2 w1 w2\nquorum both\n")

    per_round = min(args.stations, int(args.seconds * 100))
    results: dict[str, list[float]] = {"alone": [], "witnessed": []}
    rates: dict[str, list[float]] = {"alone": [], "witnessed": []}
    behind = None
    try:
        for round_ in range(args.rounds):
            for mode in ("alone", "witnessed"):
                bodies = [[json.dumps(sign(keys[f"r{i:02d}"], f"r{i:02d}", protocol(
                    (seq + i * args.stations // REPORTERS) % args.stations, f"r{i:02d}",
                    seq + round_ * per_round))).encode() + b"\n" for seq in range(per_round)]
                    for i in range(REPORTERS)]
                port = free_port()
                extra = ["--witnesses", str(work / "policy.txt")] if mode == "witnessed" else []
                server = start(["serve", "--db", str(ledgers[mode]), "--port", str(port),
                                "--key", "log.key", *extra], work / mode)
                wait_for(port, f"/v1/elections/{ELECTION}/tally")
                try:
                    latencies, elapsed = run_load(port, bodies, args.seconds)
                    results[mode] += latencies
                    rates[mode].append(len(latencies) / elapsed)
                    if mode == "witnessed":
                        time.sleep(2)  # one interval and a round trip
                        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                        connection.request("GET", "/v1/witnesses")
                        status = json.loads(connection.getresponse().read())
                        behind = (status["latest_size"] or 0) - (status["published_size"] or 0)
                finally:
                    stop(server)
    finally:
        for witness in witnesses:
            stop(witness)
    for mode in ("alone", "witnessed"):
        lat = results[mode]
        print(f"{mode:9}: {statistics.mean(rates[mode]):.0f} protocols/s, write p50 "
              f"{1000 * percentile(lat, 0.5):.1f} ms, p99 {1000 * percentile(lat, 0.99):.1f} ms "
              f"({len(lat)} writes)")
    p50 = percentile(results["witnessed"], 0.5) / percentile(results["alone"], 0.5)
    p99 = percentile(results["witnessed"], 0.99) / percentile(results["alone"], 0.99)
    print(f"witnessed / alone: write p50 {p50:.3f}x, p99 {p99:.3f}x (target <= 1.05); "
          f"published checkpoint {behind} events behind the signed one 2 s after the load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
