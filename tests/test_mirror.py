"""`ledger mirror`: verified replicas of a served ledger, against real processes on the loopback.

Sources are real `ledger serve` processes (SQLite, PostgreSQL); replicas are real SQLite
files and PostgreSQL schemas; the man in the middle is a real proxy. What a replica must
answer comes from its source (the same commands asked of it), the Merkle hashes from an
independent RFC 9162 implementation written here, and the split-view evidence from the two
forked SQLite files themselves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from ledger.cli.main import main
from tests.conftest import LATER, NIGHT, PG_SERVER, Result, definition, require_postgres, station
from tests.serving import Reporter, Server, lines

E = "council-2030"
BOARD, WATCH, PARTY_C = Reporter("board"), Reporter("watch"), Reporter("c")


def signed(*events: dict[str, Any]) -> bytes:
    def by(event: dict[str, Any]) -> Reporter:
        name = (event.get("reported_by") or event.get("requested_by") or event.get("filed_by")
                or event.get("authority") or "board")
        return {"board": BOARD, "watch": WATCH, "c": PARTY_C}[name]
    return lines(*(by(e).sign(e) for e in events))


DEFINITIONS = [definition(), station("n1", "North", 1000), station("n2", "North", 500),
               station("s1", "South", 1500),
               *(r.registration(E) for r in (BOARD, WATCH, PARTY_C))]


class Node:
    """One ledger (a SQLite file or a PostgreSQL schema) with read models of its own, driven
    by the real command line in this process."""

    def __init__(self, db: str, directory: Path, capsys: Any, name: str) -> None:
        self.db, self.directory, self.capsys = db, directory, capsys
        self.models = directory / f"{name}.models.db"

    @property
    def env(self) -> dict[str, str]:
        return {"LEDGER_READ_MODELS": str(self.models)}

    def run(self, *args: str) -> Result:
        self.capsys.readouterr()
        before = os.environ.get("LEDGER_READ_MODELS")
        os.environ["LEDGER_READ_MODELS"] = str(self.models)
        try:
            code = main([*args, "--db", self.db])
        finally:
            if before is None:
                del os.environ["LEDGER_READ_MODELS"]
            else:
                os.environ["LEDGER_READ_MODELS"] = before
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.code == 0, result.err
        return result

    def query(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--format", "json").out)

    def append(self, *events: dict[str, Any]) -> None:
        self.append_lines(lines(*events))

    def append_lines(self, text: bytes) -> None:
        path = self.directory / f"batch-{uuid.uuid4().hex}.jsonl"
        path.write_bytes(text)
        self.ok("append", str(path))

    def serve(self, *extra: str) -> Server:
        return Server(self.db, self.directory, extra, env=self.env).start()

    def entries(self) -> list[tuple[int, bytes]]:
        """(position, stored payload), read from the database itself."""
        if self.db.startswith("postgres"):
            schema = self.db.rsplit("schema=", 1)[1]
            with psycopg.connect(PG_SERVER) as connection:
                return [(p, bytes(s)) for p, s in connection.execute(
                    f'SELECT notification_id, state FROM "{schema}".ledger_events '
                    "ORDER BY notification_id")]
        if not Path(self.db).exists():
            return []
        with sqlite3.connect(self.db) as connection:
            return connection.execute("SELECT rowid, state FROM stored_events ORDER BY rowid"
                                      ).fetchall()


@pytest.fixture
def nodes(tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Node]]:
    """Makes ledgers: ``nodes("name")`` on SQLite, ``nodes("name", "postgres")`` in a fresh
    PostgreSQL schema (dropped afterwards)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DB", raising=False)
    schemas: list[str] = []

    def make(name: str, backend: str = "sqlite") -> Node:
        if backend == "sqlite":
            return Node(str(tmp_path / f"{name}.db"), tmp_path, capsys, name)
        require_postgres()
        schemas.append(f"test_{uuid.uuid4().hex[:12]}")
        return Node(f"{PG_SERVER}?schema={schemas[-1]}", tmp_path, capsys, name)

    yield make
    if schemas:
        with psycopg.connect(PG_SERVER, autocommit=True) as connection:
            for schema in schemas:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def log_key(tmp_path: Path, nodes: Callable[..., Node]) -> Path:
    """The source's log key (log.key, log.pub)."""
    assert main(["keygen", str(tmp_path / "log")]) == 0
    return tmp_path / "log.pub"


def burn_positions(node: Node, count: int) -> None:
    """Draw numbers from a PostgreSQL ledger's sequence, as rolled-back writers do: the log's
    positions then have a gap."""
    schema = node.db.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_SERVER, autocommit=True) as connection:
        for _ in range(count):
            connection.execute("SELECT nextval(pg_get_serial_sequence(%s, 'notification_id'))",
                               (f'"{schema}".ledger_events',))


QUESTIONS = [("tally",), ("tally", "--stage", "final"), ("tally", "--reporter", "watch"),
             ("tally", "--as-of", "2030-04-07T21:15:00+02:00"), ("seats", "--stage", "final"),
             ("history",), ("audit",), ("withheld",), ("appeals",), ("elections",)]


def same_answers(source: Node, replica: Node, known_at: str) -> None:
    for question in [*QUESTIONS, ("tally", "--known-at", known_at),
                     ("history", "--known-at", known_at)]:
        assert replica.query(*question) == source.query(*question), question


# -- the log as served ---------------------------------------------------------------------------


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, written out naively."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF."""
    if m == len(leaves):
        return [] if complete else [mth(leaves)]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], complete), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def documented_leaf() -> Callable[[bytes], bytes]:
    """docs/integrity.md's ``leaf(line)``: the leaf of a /v1/log line, from the line alone."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "integrity.md").read_text()
    (snippet,) = [code for code in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
                  if "def leaf(" in code]
    scope: dict[str, Any] = {}
    exec(snippet, scope)
    return scope["leaf"]


def test_each_row_of_the_log_carries_its_leaf_and_consistency_proofs_are_served(
        nodes: Callable[..., Node], log_key: Path) -> None:
    source = nodes("source")
    source.append(*DEFINITIONS)
    server = source.serve("--key", "log.key")
    try:
        resent_lines_get_their_receipts_and_receipts_check_from_a_url(source, server)
        assert server.post(signed(*NIGHT[3:])).status == 200
        served = server.get("/v1/log?limit=100").body.splitlines()
        rows = [json.loads(line) for line in served]
        note = server.get("/v1/checkpoint").body.decode()
        # The old members are still there, equal to the payload's.
        assert all({k: v for k, v in json.loads(r["payload"]).items()}
                   == {k: r[k] for k in json.loads(r["payload"])} for r in rows)
        leaves = [documented_leaf()(line) for line in served]
        assert base64.b64decode(note.split("\n")[2]) == mth(leaves)
        proof = server.get(f"/v1/proof/{NIGHT[2]['event_id']}").json()
        assert base64.b64decode(proof["leaf_hash"]) == leaves[proof["leaf_index"]]
        for old in (1, 3, 4, 7, len(rows)):
            answer = server.get(f"/v1/consistency?from={old}&to={len(rows)}")
            assert answer.status == 200 and answer.headers["content-type"].startswith("text/plain")
            served = [base64.b64decode(x) for x in answer.body.split()]
            assert served == subproof(old, leaves, True), old
        for bad in ("from=0&to=3", "from=4&to=3", f"from=1&to={len(rows) + 1}", "from=x&to=3",
                    "to=3", "from=1&to=2&to=3", "from=1&to=2&size=3"):
            answer = server.get(f"/v1/consistency?{bad}")
            assert answer.status == 400 and answer.json()["problems"], bad
    finally:
        assert server.stop() == 0, server.log()


# -- replicas ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("source_backend", ["sqlite", "postgres"])
def test_replicas_on_sqlite_and_postgresql_answer_as_their_source(
        nodes: Callable[..., Node], log_key: Path, source_backend: str) -> None:
    source = nodes("source", source_backend)
    source.append(*DEFINITIONS)
    if source_backend == "postgres":
        burn_positions(source, 3)
    replicas = [nodes("replica-sqlite"), nodes("replica-pg", "postgres")]
    server = source.serve("--key", "log.key")
    try:
        assert server.post(signed(*NIGHT)).status == 200
        time.sleep(0.05)
        between = datetime.now(UTC).isoformat()
        time.sleep(0.05)
        for replica in replicas:
            done = replica.ok("mirror", server.url, "--public-key", "log.pub")
            size = len(DEFINITIONS) + len(NIGHT)
            note = server.get("/v1/checkpoint").body.decode()
            assert done.out.strip() == f"size {size}, root {note.split(chr(10))[2]}, {size} event(s) added"
            assert replica.ok("mirror", server.url, "--public-key", "log.pub").out.endswith(
                ", 0 event(s) added\n")
        older = server.get("/v1/checkpoint").body
        assert server.post(signed(*LATER)).status == 200
        note = server.get("/v1/checkpoint").body.decode()
        (source.directory / "source.ckpt").write_text(note)
        for replica in replicas:
            done = replica.ok("mirror", server.url, "--public-key", "log.pub")
            assert done.out.endswith(f", {len(LATER)} event(s) added\n")
            assert replica.entries() == source.entries()  # positions, payloads: byte for byte
            assert replica.ok("checkpoint").out == note.split("\n\n")[0] + "\n"
            verified = replica.ok("verify", "--checkpoint", "source.ckpt", "--public-key", "log.pub")
            assert f"{len(source.entries())} events intact" in verified.out
            same_answers(source, replica, between)
            (source.directory / "more.jsonl").write_bytes(lines(station("n9", "North", 9)))
            refused = replica.run("append", "more.jsonl")
            assert refused.code == 2 and server.url in refused.err and "replica" in refused.err
        # A source that serves an older checkpoint, consistent with what the replica holds:
        # nothing to add, nothing wrong.
        stale = Proxy(server.url, lambda _: older, "/v1/checkpoint")
        try:
            again = replicas[0].ok("mirror", stale.url, "--public-key", "log.pub")
        finally:
            stale.close()
        assert again.out.endswith(", 0 event(s) added\n") and replicas[0].entries() == source.entries()
        if source_backend == "postgres":
            positions = [p for p, _ in source.entries()]
            assert positions[len(DEFINITIONS)] - positions[len(DEFINITIONS) - 1] == 4  # the gap
    finally:
        assert server.stop() == 0, server.log()


# -- a man in the middle -------------------------------------------------------------------------


class Proxy:
    """A tiny HTTP/1.1 proxy in front of a source, rewriting the body of /v1/log (or of the
    path given)."""

    def __init__(self, upstream: str, rewrite: Callable[[bytes], bytes], path: str = "/v1/log"
                 ) -> None:
        self.upstream, self.rewrite, self.path = upstream, rewrite, path
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                try:
                    with urllib.request.urlopen(proxy.upstream + self.path, timeout=30) as answer:
                        status, body = answer.status, answer.read()
                        kind = answer.headers["Content-Type"]
                except urllib.error.HTTPError as error:
                    status, body, kind = error.code, error.read(), error.headers["Content-Type"]
                if self.path.startswith(proxy.path):
                    body = proxy.rewrite(body)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rendered(row: dict[str, Any], payload: bytes) -> bytes:
    """A /v1/log line as docs/api.md describes it: the five leading members, then the
    payload's own."""
    return (b'{"position":%d,"stream":"%s","version":%d,"topic":%s,"payload":%s,'
            % (row["position"], row["stream"].encode(), row["version"],
               json.dumps(row["topic"]).encode(),
               json.dumps(payload.decode(), ensure_ascii=False).encode()) + payload[1:])


def change_once(body: bytes, select: Callable[[dict[str, Any]], bool],
                change: Callable[[dict[str, Any], bytes], bytes]) -> bytes:
    out = []
    done = False
    for line in body.splitlines():
        row = json.loads(line)
        if not done and select(row):
            line, done = change(row, line), True
        out.append(line + b"\n")
    return b"".join(out)


def test_a_figure_changed_in_transit_is_refused_naming_its_position_and_nothing_is_stored(
        nodes: Callable[..., Node], log_key: Path) -> None:
    source = nodes("source")
    source.append(*DEFINITIONS)
    server = source.serve("--key", "log.key")
    try:
        refused_before_reading_a_log(nodes, server)
        assert server.post(signed(*NIGHT)).status == 200
        rows = [json.loads(line) for line in server.get("/v1/log").body.splitlines()]
        n1 = next(r["position"] for r in rows if r["event"].get("station") == "n1")
        first = next(r["position"] for r in rows if r["event"]["type"] == "ProtocolIssued")

        def registration(row: dict[str, Any]) -> bool:
            return row["position"] == n1

        def protocol(row: dict[str, Any]) -> bool:
            return row["position"] == first

        def copied_members_only(row: dict[str, Any], line: bytes) -> bytes:
            head, _, members = line.rpartition(b'"recorded_at"')
            return head + b'"recorded_at"' + members.replace(b'"a":400', b'"a":401')

        def payload_and_members(row: dict[str, Any], line: bytes) -> bytes:
            payload = row["payload"].encode().replace(b'"registered_voters":1000',
                                                      b'"registered_voters":1001')
            return rendered(row, payload)

        def event_and_signed_form(row: dict[str, Any], line: bytes) -> bytes:
            return rendered(row, row["payload"].encode().replace(b'"a":400', b'"a":401'))

        def event_not_signed_form(row: dict[str, Any], line: bytes) -> bytes:
            return rendered(row, row["payload"].encode().replace(b'"a":400', b'"a":401', 1))

        cases = [(registration, payload_and_members, n1), (protocol, copied_members_only, first),
                 (protocol, event_and_signed_form, first), (protocol, event_not_signed_form, first)]
        for select, change, position in cases:
            proxy = Proxy(server.url, lambda body, s=select, c=change: change_once(body, s, c))
            try:
                replica = nodes(f"replica-{change.__name__}")
                result = replica.run("mirror", proxy.url, "--public-key", "log.pub")
            finally:
                proxy.close()
            assert result.code == 1, (change.__name__, result.err)
            assert f"position {position}:" in result.err, (change.__name__, result.err)
            assert replica.entries() == [], change.__name__
            assert "split view" not in result.err
        honest = Proxy(server.url, lambda body: body)  # the proxy itself changes nothing
        try:
            assert nodes("replica-honest").run("mirror", honest.url, "--public-key",
                                               "log.pub").code == 0
        finally:
            honest.close()
    finally:
        assert server.stop() == 0, server.log()


def refused_before_reading_a_log(nodes: Callable[..., Node], server: Server) -> None:
    """A ledger of its own is not made a replica (exit 2); a checkpoint signed by another key,
    or stripped of its signature on the way, is not accepted (exit 1): nothing is stored."""
    own = nodes("own")
    own.append(definition())
    mine = own.run("mirror", server.url, "--public-key", "log.pub")
    assert mine.code == 2 and "not a replica" in mine.err
    assert main(["keygen", str(own.directory / "other")]) == 0
    fresh = nodes("fresh")
    forged = fresh.run("mirror", server.url, "--public-key", "other.pub")
    assert forged.code == 1 and "signature" in forged.err
    stripping = Proxy(server.url, lambda note: note.split(b"\n\n")[0] + b"\n", "/v1/checkpoint")
    try:
        stripped = fresh.run("mirror", stripping.url, "--public-key", "log.pub")
    finally:
        stripping.close()
    assert stripped.code == 1 and "signature" in stripped.err
    # A witness policy: the checkpoint counts only cosigned by its quorum (C2SP
    # tlog-cosignature v1, made here from the spec's words).
    witness = Ed25519PrivateKey.generate()
    raw = witness.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = hashlib.sha256(b"golos\n\x04" + raw).digest()[:4]
    policy = own.directory / "policy.txt"
    vkey = f"golos+{key_id.hex()}+{base64.b64encode(bytes([4]) + raw).decode()}"
    policy.write_text(f"witness golos {vkey}\nquorum golos\n")
    (own.directory / "bad-policy.txt").write_text("quorum nobody\n")
    bad = fresh.run("mirror", server.url, "--public-key", "log.pub", "--witnesses", "bad-policy.txt")
    assert bad.code == 2, bad.err
    alone = fresh.run("mirror", server.url, "--public-key", "log.pub", "--witnesses", str(policy))
    assert alone.code == 1 and "quorum" in alone.err, alone.err
    assert fresh.entries() == []

    def cosigned(note: bytes) -> bytes:
        body = note.split(b"\n\n")[0] + b"\n"
        at = int(time.time())
        signature = witness.sign(b"cosignature/v1\ntime %d\n" % at + body)
        line = b"\xe2\x80\x94 golos " + base64.b64encode(key_id + at.to_bytes(8, "big") + signature)
        return note + line + b"\n"

    cosigning = Proxy(server.url, cosigned, "/v1/checkpoint")
    try:
        witnessed = fresh.run("mirror", cosigning.url, "--public-key", "log.pub", "--witnesses",
                              str(policy))
    finally:
        cosigning.close()
    assert witnessed.code == 0, witnessed.err
    assert len(fresh.entries()) == len(DEFINITIONS)


# -- a forked operator ---------------------------------------------------------------------------


def fork(original: Node, name: str) -> Node:
    """A second ledger holding exactly what ``original`` holds (same positions, same
    recorded_at, same origin), to grow another way: the operator's other history."""
    copy = Node(str(original.directory / f"{name}.db"), original.directory, original.capsys, name)
    with sqlite3.connect(original.db) as source, sqlite3.connect(copy.db) as target:
        source.backup(target)
    return copy


def stored(node: Node, leaf: int) -> tuple[int, str]:
    """(position, event_id) of a leaf, read from the SQLite file itself."""
    position, state = node.entries()[leaf]
    return position, json.loads(state)["event"]["event_id"]


def test_a_forked_operator_is_caught_with_evidence_that_proves_it_offline(
        nodes: Callable[..., Node], log_key: Path) -> None:
    honest = nodes("honest")
    honest.append(*DEFINITIONS)
    honest.append_lines(signed(*NIGHT))
    longer, shorter = fork(honest, "longer"), fork(honest, "shorter")
    honest.append_lines(signed(*LATER[:2]))  # 15 entries
    longer.append_lines(signed(LATER[2], LATER[3], LATER[5]))  # the same key signs these 16 ...
    shorter.append_lines(signed(LATER[5]))  # ... and these 14
    replica = nodes("replica")
    common = len(DEFINITIONS) + len(NIGHT)
    server = honest.serve("--key", "log.key")
    try:
        assert replica.run("mirror", server.url, "--public-key", "log.pub").code == 0
    finally:
        server.stop()
    held = replica.entries()
    for other, size, where in ((longer, common + 3, None), (shorter, common + 1, "here.json")):
        server = other.serve("--key", "log.key")
        try:
            result = replica.run("mirror", server.url, "--public-key", "log.pub",
                                 *(("--evidence", where) if where else ()))
        finally:
            server.stop()
        assert result.code == 1, result.err
        assert result.err.startswith("split view:"), result.err
        assert replica.entries() == held  # nothing stored
        path = replica.directory / (where or f"split-view-{size}.json")
        evidence = json.loads(path.read_text())
        assert evidence["leaf_index"] == common
        for side, ledger in (("replica", honest), ("source", other)):
            entry = base64.b64decode(evidence["entries"][side]["entry"])
            position, event_id = stored(ledger, common)
            assert entry.split(b"\n")[1] == str(position).encode()
            assert json.loads(entry.split(b"\n", 5)[5])["event"]["event_id"] == event_id
        checked = replica.run("check-evidence", str(path), "--public-key", "log.pub")
        assert checked.code == 0, checked.err
        for altered in alterations(evidence):
            path.write_text(json.dumps(altered))
            refused = replica.run("check-evidence", str(path), "--public-key", "log.pub")
            assert refused.code == 1, altered
    assert "consistency" in evidence  # the shorter one's: its size is one the replica holds


def alterations(evidence: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The evidence with one thing changed: each must be rejected."""
    def altered(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        copy = json.loads(json.dumps(evidence))
        change(copy)
        return copy

    def flip(text: str, at: int = 10) -> str:
        return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]

    yield altered(lambda e: e["entries"]["source"].update(entry=flip(e["entries"]["source"]["entry"], 60)))
    yield altered(lambda e: e["entries"]["replica"].update(position=e["entries"]["replica"]["position"] + 1))
    yield altered(lambda e: e.update(leaf_index=e["leaf_index"] - 1))
    yield altered(lambda e: e["entries"].update(replica=e["entries"]["source"],
                                                source=e["entries"]["replica"]))
    yield altered(lambda e: e["checkpoints"].update(source=e["checkpoints"]["source"].replace(
        e["checkpoints"]["source"].split("\n")[2], e["checkpoints"]["replica"].split("\n")[2])))
    yield altered(lambda e: e["checkpoints"].update(source=e["checkpoints"]["replica"]))
    yield altered(lambda e: e.update(origin="election-ledger/0000000000000000"))
    if "consistency" in evidence:
        yield altered(lambda e: e["consistency"].update(root=flip(e["consistency"]["root"])))
    else:
        yield altered(lambda e: [e.pop("entries"), e.pop("leaf_index")])


# -- following ------------------------------------------------------------------------------------


class Follower:
    """`ledger mirror --follow` as a process of its own, its lines read as they come."""

    def __init__(self, replica: Node, url: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "mirror", url, "--public-key", "log.pub", "--follow",
             "--db", replica.db], cwd=replica.directory, env={**os.environ, **replica.env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.decode())

    def wait_for(self, size: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(line.startswith(f"size {size},") for line in self.lines):
                return
            time.sleep(0.05)
        raise AssertionError(f"never mirrored size {size}: {self.lines}")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def test_a_following_replica_survives_sigkill_and_replicas_chain(
        nodes: Callable[..., Node], log_key: Path) -> None:
    source, replica, second = nodes("source"), nodes("replica"), nodes("second")
    source.append(*DEFINITIONS)
    server = source.serve("--key", "log.key")
    chained = None
    followers: list[Follower] = []
    try:
        followers.append(Follower(replica, server.url))
        followers[-1].wait_for(len(DEFINITIONS))
        for event in NIGHT[:3]:
            assert server.post(signed(event)).status == 200
        followers[-1].wait_for(len(DEFINITIONS) + 3)
        assert all(", lag " in line for line in followers[-1].lines if line.startswith("size"))
        chained = replica.serve()
        followers.append(Follower(second, chained.url))
        sender = threading.Thread(target=lambda: [server.post(signed(e)) for e in NIGHT[3:] + LATER])
        sender.start()
        time.sleep(0.1)
        followers[0].kill()  # wherever it is: between checkpoints, or inside one
        sender.join()
        followers[0] = Follower(replica, server.url)
        size = len(DEFINITIONS) + len(NIGHT) + len(LATER)
        # The killed follower may have mirrored everything before it died: the new one then
        # adds nothing and prints no line. Done is the replica holding the whole log.
        deadline = time.monotonic() + 60
        while len(replica.entries()) < size and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(replica.entries()) == size, followers[0].lines
        followers[1].wait_for(size)
        note = server.get("/v1/checkpoint").body.decode()
        assert chained.get("/v1/checkpoint").body.decode() == note  # the source's, verbatim
        (source.directory / "night.ckpt").write_text(note)
        for node in (replica, second):
            assert node.entries() == source.entries()
            node.ok("verify", "--checkpoint", "night.ckpt", "--public-key", "log.pub")
        assert second.query("tally", "--stage", "final") == source.query("tally", "--stage", "final")
        refused = chained.post(signed(NIGHT[0]))
        assert refused.status == 405
        assert server.url in refused.json()["problems"][0]["reason"]
    finally:
        for follower in followers:
            follower.kill()
        if chained is not None:
            chained.stop()
        assert server.stop() == 0, server.log()


# -- receipts -------------------------------------------------------------------------------------


# -- receipts -------------------------------------------------------------------------------------


def resent_lines_get_their_receipts_and_receipts_check_from_a_url(source: Node, server: Server
                                                                  ) -> None:
    first = server.post(signed(*NIGHT[:2])).json()
    again = server.post(signed(*NIGHT[:3])).json()  # two known, one new
    assert again["appended"] == 1 and again["already_recorded"] == 2
    assert again["receipt"]["events"][:2] == first["receipt"]["events"]
    resent = server.post(signed(*NIGHT[:2])).json()
    assert resent["appended"] == 0 and resent["first_position"] is None
    assert resent["receipt"]["events"] == first["receipt"]["events"]
    key = load_pem_public_key((source.directory / "log.pub").read_bytes())
    body = ("election-ledger/receipt/v1\n" + resent["receipt"]["origin"] + "\n" + "".join(
        f"{e['position']} {e['leaf_hash']}\n" for e in resent["receipt"]["events"])).encode()
    key.verify(base64.b64decode(resent["receipt"]["ed25519"]), body)  # type: ignore[union-attr]
    elsewhere = source.directory / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "r.json").write_text(json.dumps(resent))
    checker = Node(str(elsewhere / "none.db"), elsewhere, source.capsys, "none")
    checked = checker.run("check-receipt", str(elsewhere / "r.json"), "--public-key",
                          "log.pub", "--url", server.url)
    assert checked.code == 0, checked.err
    assert not (elsewhere / "none.db").exists()
    # A receipt the key signed for a position the log does not hold it at (a receipt
    # forged by whoever holds the key, or a log rewritten since): refused.
    secret = load_pem_private_key((source.directory / "log.key").read_bytes(), None)
    events = [{**e, "position": e["position"] + 1} for e in resent["receipt"]["events"]]
    message = ("election-ledger/receipt/v1\n" + resent["receipt"]["origin"] + "\n" + "".join(
        f"{e['position']} {e['leaf_hash']}\n" for e in events)).encode()
    forged = {**resent["receipt"], "events": events,
              "ed25519": base64.b64encode(secret.sign(message)).decode()}  # type: ignore[union-attr, call-arg]
    (elsewhere / "bad.json").write_text(json.dumps(forged))
    refused = checker.run("check-receipt", str(elsewhere / "bad.json"), "--public-key",
                          "log.pub", "--url", server.url)
    assert refused.code == 1 and "another position" in refused.err, refused.err


# -- evidence, offline ----------------------------------------------------------------------------


def test_two_roots_signed_for_one_size_are_proof_enough_and_nothing_else_is() -> None:
    """The notes alone prove a split view when they sign one size twice; a note under
    another key, or two notes of one tree, prove nothing."""
    from ledger.trust import evidence
    from ledger.trust.checkpoint import Checkpoint, sign

    key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    origin = "election-ledger/00112233aabbccdd"

    def note(size: int, root: bytes, by: Ed25519PrivateKey = key) -> str:
        return sign(Checkpoint(origin, size, root), by, origin).text()

    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(6)]
    one, other = mth(leaves), mth([*leaves[:5], hashlib.sha256(b"x").digest()])
    proven = evidence.check(evidence.build(origin, note(6, one), note(6, other)),
                            key.public_key())
    assert "two roots signed for the same size 6" in proven
    for replica, source in ((note(6, one), note(6, other, stranger)), (note(6, one), note(6, one)),
                            (note(5, mth(leaves[:5])), note(6, other))):
        with pytest.raises(evidence.NotProven):
            evidence.check(evidence.build(origin, replica, source), key.public_key())
