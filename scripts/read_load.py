#!/usr/bin/env python3
"""Reads at election-night scale: `ledger serve` against a minimal ASGI app, in the same run.

Builds a fresh SQLite ledger (one election, N stations, each with the authority's signed
protocol), starts `ledger serve` on a loopback port and, beside it, a minimal Starlette app
under uvicorn that answers a fixed 1.2 KB body (the floor: the same server stack doing no
work). 32 reader threads, each on its own keep-alive connection, then GET the latest tally
(and the floor's body) for --seconds; it prints requests/s, p50 and p99, and the ledger's
ratio to the floor. Readers run in a child process of their own, so their client-side work
does not share a GIL with the writers below.

With --writers, each run also has 4 reporters POST signed protocols, one at a time, alone
and then while the 32 readers read: it prints the reads' ratio to the floor while writes
go on, and writes/s with readers against writes/s without them (the same run).

Every figure is a same-run ratio; the machine's load average is printed before and after,
and so is each server's CPU time per request (for the phase with writers: per read or write),
which moves far less than requests/s when other work shares the machine.
Only loopback addresses are used, and every loop stops at its deadline.

    python scripts/read_load.py --stations 2000 --seconds 10 --runs 3
    python scripts/read_load.py --stations 2000 --seconds 10 --runs 3 --writers
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import ELECTION, REPORTERS, protocol, setup, sign  # scripts/load.py

READERS = 32
WRITERS = 4
FLOOR_BODY = (b'{"floor":"' + b"x" * 1_186 + b'"}')  # 1.2 KB of JSON
TALLY = f"/v1/elections/{ELECTION}/tally"
CONTENT_LENGTH = re.compile(rb"(?i)content-length: *(\d+)")


# -- the floor: a minimal Starlette app -------------------------------------------------------


def floor_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def fixed(request: Any) -> Response:
        return Response(FLOOR_BODY, media_type="application/json")

    return Starlette(routes=[Route("/", fixed)])


def serve_floor(port: int) -> None:
    import uvicorn

    # As `ledger serve` runs uvicorn (ledger/http/server.py): no access log, warnings only.
    uvicorn.run(floor_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the readers (a child process) -----------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def get(sock: socket.socket, request: bytes, held: bytes) -> tuple[int, bytes]:
    """One keep-alive GET on a raw socket: its status, and what was read past its answer.
    A tenth of http.client's cost per request, so the readers take less of the machine from
    the servers they measure (both servers get the same client)."""
    sock.sendall(request)
    while b"\r\n\r\n" not in held:
        held += sock.recv(65536) or _closed()
    head, _, rest = held.partition(b"\r\n\r\n")
    length = int(CONTENT_LENGTH.search(head)[1]) if b"ength:" in head else 0
    while len(rest) < length:
        rest += sock.recv(65536) or _closed()
    return int(head[9:12]), rest[length:]


def _closed() -> bytes:
    raise ConnectionError("the server closed the connection")


def read_for(port: int, path: str, seconds: float, readers: int = READERS) -> dict[str, Any]:
    """``readers`` threads GET ``path`` on keep-alive connections until the deadline."""
    latencies: list[list[float]] = [[] for _ in range(readers)]
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(readers + 1)
    deadline = [0.0]
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    def reader(mine: list[float]) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _, held = get(sock, request, b"")  # connected and warm before the clock starts
            start.wait()
            while time.monotonic() < deadline[0]:
                began = time.perf_counter()
                status, held = get(sock, request, held)
                mine.append(time.perf_counter() - began)
                if status != 200:
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=reader, args=(mine,)) for mine in latencies]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + seconds
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    every = [t for mine in latencies for t in mine]
    return {"requests": len(every), "per_second": len(every) / elapsed,
            "p50_ms": 1000 * percentile(every, 0.5), "p99_ms": 1000 * percentile(every, 0.99),
            "not_200": statuses}


def readers_process(port: int, path: str, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--read", str(port), path, str(seconds)],
                            stdout=subprocess.PIPE)


def readers_result(process: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=300)
    if process.returncode != 0:
        raise SystemExit("the readers' process failed")
    return json.loads(out)


def read_in_child(port: int, path: str, seconds: float) -> dict[str, Any]:
    return readers_result(readers_process(port, path, seconds))


# -- the writers (this process) --------------------------------------------------------------


def write_for(port: int, bodies: list[list[bytes]], seconds: float) -> dict[str, Any]:
    """One thread per reporter, each POSTing its signed protocols one at a time."""
    latencies: list[float] = []
    refused: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def writer(mine: list[bytes]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for body in mine:
            if time.monotonic() >= deadline:
                break
            began = time.perf_counter()
            connection.request("POST", "/v1/events", body, {"Content-Type": "application/x-ndjson"})
            response = connection.getresponse()
            response.read()
            took = time.perf_counter() - began
            with lock:
                if response.status == 200:
                    latencies.append(took)
                else:
                    refused[response.status] = refused.get(response.status, 0) + 1
        connection.close()

    threads = [threading.Thread(target=writer, args=(mine,)) for mine in bodies]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    return {"accepted": len(latencies), "per_second": len(latencies) / elapsed,
            "p50_ms": 1000 * percentile(latencies, 0.5), "p99_ms": 1000 * percentile(latencies, 0.99),
            "refused": refused}


def write_beside_readers(port: int, path: str, bodies: list[list[bytes]],
                         seconds: float) -> dict[str, Any]:
    readers = readers_process(port, path, seconds)
    time.sleep(0.5)  # the readers connect and warm up first
    writes = write_for(port, bodies, seconds)
    reads = readers_result(readers)
    return {"writes": writes, "reads": reads, "requests": writes["accepted"] + reads["requests"]}


def signed_bodies(keys: dict[str, Any], names: list[str], stations: int, count: int) -> list[list[bytes]]:
    """Each reporter's protocols, one per station in turn, signed before any clock starts."""
    return [[json.dumps(sign(keys[name], name, protocol((seq + i * stations // len(names)) % stations,
                                                        name, seq))).encode() + b"\n"
             for seq in range(min(stations, count))]
            for i, name in enumerate(names)]


# -- the run ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, path: str) -> None:
    for _ in range(600):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answers {path} on port {port}")


def build(work: Path, stations: int) -> tuple[str, dict[str, Any]]:
    """A ledger with every station's protocol, signed by the election's authority (r00)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    db = str(work / "ledger.db")
    keys = {f"r{i:02d}": Ed25519PrivateKey.generate() for i in range(REPORTERS)}
    setup(db, work, stations, keys)
    night = work / "night.jsonl"
    night.write_text("".join(json.dumps(sign(keys["r00"], "r00", protocol(s, "r00", 0))) + "\n"
                             for s in range(stations)))
    subprocess.run([sys.executable, "-m", "ledger", "append", str(night), "--db", db],
                   cwd=work, check=True, stdout=subprocess.DEVNULL)
    return db, keys


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, run: Any, *args: Any) -> dict[str, Any]:
    """``run(*args)``'s figures plus the server's CPU per request: unlike requests/s, it hardly
    moves with what else the machine is doing."""
    before = cpu_seconds(pid)
    figures = run(*args)
    figures["server_cpu_us_per_request"] = 1e6 * (cpu_seconds(pid) - before) / max(
        1, figures.get("requests", figures.get("accepted", 0)))
    return figures


def agrees(port: int, db: str, work: Path, env: dict[str, str]) -> bool:
    """The served latest tally equals the command line's, computed afresh from the read
    models after the run: no answer kept in memory outlived the writes."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", TALLY)
    served = json.loads(connection.getresponse().read())
    fresh = subprocess.run([sys.executable, "-m", "ledger", "tally", "--election", ELECTION, "--db", db,
                            "--format", "json"], cwd=work, env=env, check=True, capture_output=True)
    return served == json.loads(fresh.stdout)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def show(label: str, result: dict[str, Any], floor: float | None = None) -> None:
    ratio = f"  = {result['per_second'] / floor:.2f}x the floor" if floor else ""
    extra = f"  not 200: {result['not_200']}" if result.get("not_200") else ""
    print(f"  {label:<38} {result['per_second']:7.0f} req/s  p50 {result['p50_ms']:6.1f} ms  "
          f"p99 {result['p99_ms']:6.1f} ms  server CPU {result['server_cpu_us_per_request']:5.0f} "
          f"us/req{ratio}{extra}", flush=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--read":
        port, path, seconds = int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
        print(json.dumps(read_for(port, path, seconds)))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--floor":
        serve_floor(int(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stations", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--writers", action="store_true",
                        help="also measure 4 reporters writing, alone and beside the readers")
    parser.add_argument("--path", default=TALLY, help=f"what the readers ask (default {TALLY})")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ledger-read-load-"))
    print(f"load average before: {load_average()}", flush=True)
    db, keys = build(work, args.stations)
    ledger_port, floor_port = free_port(), free_port()
    env = {**os.environ, "LEDGER_READ_MODELS": str(work / "read-models.db")}
    servers = [
        subprocess.Popen([sys.executable, "-m", "ledger", "serve", "--db", db, "--port", str(ledger_port)],
                         cwd=work, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, __file__, "--floor", str(floor_port)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    ledger_pid, floor_pid = servers[0].pid, servers[1].pid
    runs: list[dict[str, Any]] = []
    try:
        wait_for(ledger_port, args.path)
        wait_for(floor_port, "/")
        # Reporters r01.. write; each run takes the next WRITERS of them twice (alone, with
        # readers), so that no protocol is ever sent twice.
        writer_names = iter(f"r{i:02d}" for i in range(1, REPORTERS))
        for run in range(1, args.runs + 1):
            print(f"run {run} (load average {load_average()}):", flush=True)
            figures: dict[str, Any] = {}
            figures["floor"] = measured(floor_pid, read_in_child, floor_port, "/", args.seconds)
            show("floor (fixed 1.2 KB body)", figures["floor"])
            floor = figures["floor"]["per_second"]
            figures["reads"] = measured(ledger_pid, read_in_child, ledger_port, args.path, args.seconds)
            show(f"ledger {args.path[:31]}", figures["reads"], floor)
            if args.writers:
                count = int(args.seconds * 400)
                alone = signed_bodies(keys, [next(writer_names) for _ in range(WRITERS)],
                                      args.stations, count)
                beside = signed_bodies(keys, [next(writer_names) for _ in range(WRITERS)],
                                       args.stations, count)
                figures["writes_alone"] = measured(ledger_pid, write_for, ledger_port, alone,
                                                   args.seconds)
                both = measured(ledger_pid, write_beside_readers, ledger_port, args.path, beside,
                                args.seconds)
                figures["writes_with_readers"] = both["writes"]
                figures["reads_with_writers"] = both["reads"]
                figures["reads_with_writers"]["server_cpu_us_per_request"] = both[
                    "server_cpu_us_per_request"]
                show("ledger reads while 4 reporters write", figures["reads_with_writers"], floor)
                w0, w1 = figures["writes_alone"], figures["writes_with_readers"]
                print(f"  writes alone {w0['per_second']:.0f}/s (p99 {w0['p99_ms']:.0f} ms), "
                      f"beside 32 readers {w1['per_second']:.0f}/s (p99 {w1['p99_ms']:.0f} ms) "
                      f"= {w1['per_second'] / w0['per_second']:.2f}x; refused "
                      f"{w0['refused'] or 'none'} / {w1['refused'] or 'none'}", flush=True)
            runs.append(figures)
        agreed = agrees(ledger_port, db, work, env)
        print(f"the served tally equals the command line's, computed afresh: {agreed}")
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            server.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    ratios = [r["reads"]["per_second"] / r["floor"]["per_second"] for r in runs]
    print(f"median over {len(runs)} runs: reads {statistics.median(ratios):.2f}x the floor, "
          f"p99 {statistics.median(r['reads']['p99_ms'] for r in runs):.1f} ms", flush=True)
    if args.writers:
        beside = [r["reads_with_writers"]["per_second"] / r["floor"]["per_second"] for r in runs]
        writes = [r["writes_with_readers"]["per_second"] / r["writes_alone"]["per_second"] for r in runs]
        print(f"  with writers: reads {statistics.median(beside):.2f}x the floor, writes "
              f"{statistics.median(writes):.2f}x their rate without readers", flush=True)
    print(f"load average after: {load_average()}")
    if args.out:
        Path(args.out).write_text(json.dumps({"stations": args.stations, "seconds": args.seconds,
                                              "answer_agrees": agreed, "runs": runs}, indent=1))
    return 0 if agreed else 1


if __name__ == "__main__":
    sys.exit(main())
