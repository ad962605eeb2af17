"""`ledger serve --witnesses POLICY`: the ledger submits its signed checkpoints to real
`ledger witness serve` processes on the loopback and publishes what their quorum cosigned.

Cosignatures are checked here independently, from the C2SP tlog-cosignature v1 text
(Ed25519 over ``cosignature/v1\\ntime T\\n`` and the checkpoint body), never with the
project's own verifier.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from tests.conftest import definition, station
from tests.serving import Reporter, Server, free_port, lines

ELECTION = "council-2030"


def ledger(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", *args], cwd=directory,
                          capture_output=True, text=True, timeout=60)


def cosigned_by(note: str, name: str, public: bytes) -> bool:
    """A valid cosignature/v1 line by (name, public) over the note's checkpoint body."""
    body = note.split("\n\n")[0] + "\n"
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    for line in note.split("\n\n", 1)[1].splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "\u2014" or parts[1] != name:
            continue
        blob = base64.b64decode(parts[2])
        if len(blob) != 76 or blob[:4] != key_id:
            continue
        (timestamp,) = struct.unpack(">Q", blob[4:12])
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(
                blob[12:], f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode())
            return True
        except InvalidSignature:
            return False
    return False


def signed_by_log(note: str, log_pub: Path) -> bool:
    key: Any = load_pem_public_key(log_pub.read_bytes())
    body = note.split("\n\n")[0] + "\n"
    origin = body.split("\n")[0]
    raw = key.public_bytes_raw()
    key_id = hashlib.sha256(origin.encode() + b"\n\x01" + raw).digest()[:4]
    for line in note.split("\n\n", 1)[1].splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[1] == origin:
            blob = base64.b64decode(parts[2])
            if blob[:4] == key_id:
                try:
                    key.verify(blob[4:], body.encode())
                    return True
                except InvalidSignature:
                    return False
    return False


@dataclass
class Witness:
    name: str
    directory: Path
    origin: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def public(self) -> bytes:
        vkey = (self.directory / f"{self.name}.vkey").read_text().strip()
        return base64.b64decode(vkey.split("+", 2)[2])[1:]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Witness:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "witness", "serve", "--key", f"{self.name}.key",
             "--log", f"{self.origin}=log.pub", "--state", f"{self.name}.state",
             "--port", str(self.port)],
            cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        import socket

        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"witness {self.name} did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def eventually(check: Callable[[], Any], seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.fixture
def night(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A ledger with its definitions and a reporter's key, a log key, and two cosigner keys
    (witnesses not started)."""
    board = Reporter("board")
    (tmp_path / "setup.jsonl").write_bytes(lines(
        definition(), station("n1", "North", 1000), station("n2", "North", 800),
        station("s1", "South", 1200), board.registration(ELECTION)))
    assert ledger(tmp_path, "append", "setup.jsonl").returncode == 0
    assert ledger(tmp_path, "keygen", "log").returncode == 0
    origin = ledger(tmp_path, "checkpoint").stdout.splitlines()[0]
    witnesses = []
    for name in ("golos", "party-b"):
        made = ledger(tmp_path, "keygen", name, "--cosigner")
        assert made.returncode == 0, made.stderr
        witnesses.append(Witness(name, tmp_path, origin, free_port()))
    yield {"dir": tmp_path, "board": board, "origin": origin, "witnesses": witnesses}
    for witness in witnesses:
        witness.stop()


def policy(directory: Path, witnesses: list[Witness], quorum: str) -> Path:
    text = "# who we trust to have seen the same log\n"
    for w in witnesses:
        text += f"witness {w.name} {(directory / f'{w.name}.vkey').read_text().strip()} {w.url}\n"
    text += f"group both 2 {' '.join(w.name for w in witnesses)}\nquorum {quorum}\n"
    path = directory / "policy.txt"
    path.write_text(text)
    return path


def protocol(board: Reporter, name: str, at: str, a: int) -> dict[str, Any]:
    return board.sign({"type": "ProtocolIssued", "election": ELECTION, "occurred_at": at,
                       "station": name, "reported_by": "board", "ballots_issued": a + 20,
                       "ballots_cast": a + 20, "invalid": 0,
                       "votes": {"a": a, "b": 10, "c": 5, "d": 5}})


def serve(night: dict[str, Any], quorum: str) -> Server:
    directory = night["dir"]
    path = policy(directory, night["witnesses"], quorum)
    return Server(str(directory / "ledger.db"), directory,
                  ("--key", "log.key", "--witnesses", str(path), "--checkpoint-interval", "0.2")
                  ).start()


def published(server: Server) -> str | None:
    answer = server.get("/v1/checkpoint")
    return answer.body.decode() if answer.status == 200 else None


def test_the_ledger_publishes_what_the_quorum_cosigned_and_records_it(night: dict[str, Any]) -> None:
    for witness in night["witnesses"]:
        witness.start()
    server = serve(night, "both")
    try:
        assert server.post(lines(protocol(night["board"], "n1", "2030-04-07T21:00:00+02:00", 300))
                           ).status == 200
        head = 6
        note = eventually(lambda: (n := published(server)) and n.split("\n")[1] == str(head) and n)
        assert note, server.get("/v1/witnesses").body
        assert note.startswith(night["origin"] + "\n")
        assert signed_by_log(note, night["dir"] / "log.pub")
        for witness in night["witnesses"]:
            assert cosigned_by(note, witness.name, witness.public)
        status = server.get("/v1/witnesses").json()
        assert {w["name"]: w["last_size_cosigned"] for w in status["witnesses"]} == {
            "golos": head, "party-b": head}
        assert status["published_size"] == head
        # The next commit is cosigned from the witnesses' last size, with a consistency proof.
        assert server.post(lines(protocol(night["board"], "n2", "2030-04-07T21:05:00+02:00", 200))
                           ).status == 200
        note = eventually(lambda: (n := published(server)) and n.split("\n")[1] == "7" and n)
        assert note and all(cosigned_by(note, w.name, w.public) for w in night["witnesses"])
        assert live_page_witnesses(server, night["dir"]) == {"golos": "7", "party-b": "7"}
    finally:
        server.stop()
    with sqlite3.connect(night["dir"] / "ledger.db") as db:
        kept = [text for (text,) in db.execute("SELECT note FROM ledger_checkpoints")]
    assert any(text == note for text in kept), "the published checkpoint is recorded whole"


def test_verify_and_check_proof_count_the_cosignatures_against_the_quorum(
        night: dict[str, Any]) -> None:
    for witness in night["witnesses"]:
        witness.start()
    server = serve(night, "both")
    try:
        note = eventually(lambda: published(server))
        assert note
        event_id = server.get(f"/v1/elections/{ELECTION}/history").json()["events"][0]["event_id"]
    finally:
        server.stop()
    directory = night["dir"]
    (directory / "cosigned.ckpt").write_text(note)
    # One witness's cosignature taken out: the quorum (both) is no longer met.
    head, signatures = note.split("\n\n", 1)
    kept = [line for line in signatures.splitlines() if not line.startswith("\u2014 party-b ")]
    (directory / "half.ckpt").write_text(head + "\n\n" + "\n".join(kept) + "\n")
    policy_file = str(directory / "policy.txt")
    checked = ledger(directory, "verify", "--checkpoint", "cosigned.ckpt", "--public-key", "log.pub",
                     "--witnesses", policy_file)
    assert checked.returncode == 0, checked.stderr
    assert "2 of 2 trusted witnesses cosigned" in checked.stdout
    short = ledger(directory, "verify", "--checkpoint", "half.ckpt", "--public-key", "log.pub",
                   "--witnesses", policy_file)
    assert short.returncode == 1 and "1 of 2" in short.stderr and "NOT met" in short.stderr
    proof = ledger(directory, "prove", event_id, "--checkpoint", "cosigned.ckpt")
    assert proof.returncode == 0, proof.stderr
    (directory / "event.proof").write_text(proof.stdout)
    for anchor, code in (("cosigned.ckpt", 0), ("half.ckpt", 1)):
        found = ledger(directory, "check-proof", "event.proof", "--checkpoint", anchor,
                       "--public-key", "log.pub", "--witnesses", policy_file)
        assert found.returncode == code, found.stderr
    alone = ledger(directory, "verify", "--witnesses", policy_file)
    assert alone.returncode == 2 and "--checkpoint" in alone.stderr


def live_page_witnesses(server: Server, directory: Path) -> dict[str, str]:
    """The live page's witness table in headless Chromium: name -> last size cosigned."""
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.test_live_page import _browser

    browser = _browser(directory)
    try:
        browser.get(server.url + "/")
        WebDriverWait(browser, 60).until(
            lambda _: browser.execute_script("return document.body.dataset.shown") == "live")
        rows = browser.execute_script(
            "return [...document.querySelectorAll('#witnesses tbody tr')]"
            ".map(r => [r.cells[0].textContent, r.cells[1].textContent])")
        assert not browser.execute_script("return document.getElementById('witnesses-section').hidden")
        return dict(rows)
    finally:
        browser.quit()


def test_a_witness_that_is_down_stops_nothing_and_is_shown(night: dict[str, Any]) -> None:
    golos, party_b = night["witnesses"]
    golos.start()  # party-b is down
    server = serve(night, "both")
    try:
        started = time.monotonic()
        answer = server.post(lines(protocol(night["board"], "n1", "2030-04-07T21:00:00+02:00", 300)))
        assert answer.status == 200 and answer.json()["appended"] == 1
        assert time.monotonic() - started < 5, "a write waited for a witness"
        down = eventually(lambda: next((w for w in server.get("/v1/witnesses").json()["witnesses"]
                                        if w["name"] == "party-b" and w["last_error"]), None))
        assert down and "unreachable" in down["last_error"]
        unpublished = server.get("/v1/checkpoint")
        assert unpublished.status == 503 and unpublished.headers.get("retry-after")
        up = eventually(lambda: next((w for w in server.get("/v1/witnesses").json()["witnesses"]
                                      if w["name"] == "golos" and w["last_size_cosigned"] == 6), None))
        assert up, server.get("/v1/witnesses").body
        party_b.start()  # it comes back: retried with backoff, then the quorum is met
        note = eventually(lambda: published(server), seconds=45)
        assert note and all(cosigned_by(note, w.name, w.public) for w in night["witnesses"])
    finally:
        server.stop()


def test_a_restarted_ledger_learns_each_witness_s_size_from_its_409(night: dict[str, Any]) -> None:
    for witness in night["witnesses"]:
        witness.start()
    server = serve(night, "both")
    try:
        assert eventually(lambda: published(server))
    finally:
        server.stop()
    # The ledger forgets what it knew of its witnesses; they remember (their state is durable).
    server = serve(night, "both")
    try:
        assert server.post(lines(protocol(night["board"], "s1", "2030-04-07T21:10:00+02:00", 500))
                           ).status == 200
        note = eventually(lambda: (n := published(server)) and n.split("\n")[1] == "6" and n)
        assert note and all(cosigned_by(note, w.name, w.public) for w in night["witnesses"])
    finally:
        server.stop()


def test_serving_with_witnesses_needs_the_log_key_and_a_policy_that_parses(tmp_path: Path) -> None:
    (tmp_path / "policy.txt").write_text("witness golos not-a-vkey http://127.0.0.1:1\nquorum golos\n")
    no_key = ledger(tmp_path, "serve", "--witnesses", "policy.txt", "--port", str(free_port()))
    assert no_key.returncode == 2 and "--key" in no_key.stderr
    assert ledger(tmp_path, "keygen", "log").returncode == 0
    bad = ledger(tmp_path, "serve", "--key", "log.key", "--witnesses", "policy.txt",
                 "--port", str(free_port()))
    assert bad.returncode == 2 and "line 1" in bad.stderr and bad.stderr.count("\n") == 1


def test_a_witness_thread_that_meets_an_unexpected_error_says_so_and_lives_on() -> None:
    """In process: the proof cannot be made (the store fails); the witness's status shows
    why, and the thread keeps trying instead of dying silently."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.trust import cosignature
    from ledger.trust.checkpoint import Checkpoint, sign
    from ledger.trust.merkle import MemoryTree
    from ledger.trust.policy import parse_policy
    from ledger.witnessing import Witnessing

    log_key = Ed25519PrivateKey.generate()
    vkey = cosignature.vkey("golos", Ed25519PrivateKey.generate().public_key())
    policy = parse_policy(f"witness golos {vkey} http://127.0.0.1:9\nquorum golos\n")
    tree = MemoryTree([b"a", b"b", b"c"])
    calls: list[tuple[int, int]] = []

    def broken_consistency(old: int, new: int) -> list[bytes]:
        calls.append((old, new))
        raise RuntimeError("the store went away")

    witnessing = Witnessing(policy, log_key.public_key(),
                            sign=lambda: sign(Checkpoint("example/log", 3, tree.root(3)), log_key,
                                              "example/log"),
                            consistency=broken_consistency, record=lambda *_: None, interval=0.05)
    witnessing.statuses["golos"].cosigned_size = 1  # known: so a proof from 1 is needed
    witnessing.start()
    try:
        status = eventually(lambda: witnessing.statuses["golos"].failures >= 2 and
                            witnessing.statuses["golos"], seconds=15)
        assert status and "RuntimeError: the store went away" in status.last_error
        assert all(t.is_alive() for t in witnessing._threads)
        assert calls and calls[0] == (1, 3)
        assert witnessing.checkpoint() is None  # nothing published without the quorum
    finally:
        witnessing.stop()
