"""`ledger serve` end to end: a real server process, real HTTP, a real SQLite or PostgreSQL ledger.

Expected numbers are worked by hand from the events posted (see conftest's NIGHT); the read
endpoints must answer exactly what the command line's --format json answers.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from tests.conftest import LATER, NIGHT, PG_SERVER, LedgerUnderTest, protocol
from tests.serving import Reporter, Server, lines

BOARD, WATCH, PARTY_C = Reporter("board"), Reporter("watch"), Reporter("c")


def acting(event: dict[str, Any]) -> Reporter:
    name = (event.get("reported_by") or event.get("requested_by") or event.get("filed_by")
            or event.get("authority") or "board")  # AppealDecided: the election's authority
    return {"board": BOARD, "watch": WATCH, "c": PARTY_C}.get(name) or Reporter(name)


def signed(*events: dict[str, Any]) -> bytes:
    return lines(*(acting(e).sign(e) for e in events))


@pytest.fixture
def keyed(registered: LedgerUnderTest) -> LedgerUnderTest:
    registered.append(*(r.registration("council-2030") for r in (BOARD, WATCH, PARTY_C)))
    return registered


@pytest.fixture
def server(keyed: LedgerUnderTest) -> Iterator[Server]:
    running = Server(keyed.db, keyed.directory, ("--body-timeout", "1")).start()
    yield running
    assert running.stop() == 0, running.log()


def test_a_signed_night_posted_over_http_gives_the_hand_worked_tallies(
        keyed: LedgerUnderTest, server: Server) -> None:
    answer = server.post(signed(*NIGHT))
    assert answer.status == 200, answer.body
    reply = answer.json()
    before = keyed.stored_events() - len(NIGHT)
    assert reply == {"appended": 6, "already_recorded": 0, "first_position": reply["first_position"],
                     "last_position": reply["first_position"] + 5, "flagged": []}
    assert before >= 0 and "receipt" not in reply
    board = server.get("/v1/elections/council-2030/tally").json()
    assert board["votes"] == {"a": 1110, "b": 790, "c": 350, "d": 170}
    assert board["stations_reporting"] == 3
    watch = server.get("/v1/elections/council-2030/tally?reporter=watch").json()
    assert watch["votes"] == {"a": 380, "b": 320, "c": 100, "d": 50}
    early = server.get("/v1/elections/council-2030/tally?as_of="
                       + urllib.parse.quote("2030-04-07T20:45:00+02:00")).json()
    assert early["votes"] == {"a": 400, "b": 300, "c": 100, "d": 50}


def test_every_read_endpoint_answers_what_the_command_line_answers(
        keyed: LedgerUnderTest, server: Server) -> None:
    assert server.post(signed(*NIGHT)).status == 200
    assert server.post(signed(*LATER)).status == 200
    at = "2030-04-09T12:00:00+02:00"
    q = urllib.parse.quote(at)
    pairs = [
        ("/v1/elections", ["elections"]),
        ("/v1/elections/council-2030/tally", ["tally"]),
        (f"/v1/elections/council-2030/tally?stage=final&as_of={q}",
         ["tally", "--stage", "final", "--as-of", at]),
        ("/v1/elections/council-2030/tally?scope=North&reporter=watch",
         ["tally", "--scope", "North", "--reporter", "watch"]),
        ("/v1/elections/council-2030/seats?stage=final", ["seats", "--stage", "final"]),
        ("/v1/elections/council-2030/audit", ["audit"]),
        ("/v1/elections/council-2030/audit?station=s1", ["audit", "--station", "s1"]),
        ("/v1/elections/council-2030/withheld", ["withheld"]),
        (f"/v1/elections/council-2030/appeals?as_of={q}", ["appeals", "--as-of", at]),
        ("/v1/elections/council-2030/history?station=n2", ["history", "--station", "n2"]),
    ]
    for path, command in pairs:
        answer = server.get(path)
        assert answer.status == 200, (path, answer.body)
        options = [] if command[0] == "elections" else ["--election", "council-2030"]
        assert answer.json() == keyed.query(*command, *options), path


def test_a_request_is_atomic_and_refusals_have_the_contracts_statuses(
        keyed: LedgerUnderTest, server: Server) -> None:
    stored = keyed.stored_events()
    good = protocol("n1", "07T20:00:00", {"a": 1, "b": 2, "c": 3, "d": 4})
    unknown_choice = protocol("n2", "07T20:00:00", {"zz": 5})
    unsigned = protocol("s1", "07T20:00:00", {"a": 1})
    definition = {"type": "StationRegistered", "election": "council-2030",
                  "occurred_at": "2030-04-01T12:05:00+02:00", "station": "x9", "region": "North",
                  "registered_voters": 10}
    cases = [
        (lines(unsigned), 401, "signature"),
        (signed(good) + lines(unsigned) + signed(unknown_choice), 401, "signature"),
        (lines(BOARD.sign(definition)), 403, "type"),
        (lines(definition), 403, "type"),  # a definition is 403 even unsigned
        (lines({**good, "signature": {"by": "board"}}), 403, "signature"),
        (lines({**good, "signature": "board"}), 403, "signature"),
        (lines({**good, "signature": {"by": "board", "ed25519": "AAAA"}}), 403,
         "signature.ed25519"),  # keys right, value not a signature: malformed, so 403
        (lines({**good, "type": [], "signature": {"by": "board", "ed25519": "AAAA"}}), 422, "type"),
        (lines({**good, "type": {"a": 1}}), 401, "signature"),
        # Signatures come first: a line altered after signing beside one that does not decode.
        (lines({**BOARD.sign(good), "invalid": 9}) + b'{"type": "ProtocolIssued", \n', 403,
         "signature"),
        (signed(good, unknown_choice), 422, "votes.zz"),
        (signed(good) + b'{"type": "ProtocolIssued", \n', 422, None),
        (signed(protocol("nowhere", "07T20:00:00", {"a": 1})), 422, "station"),
        (b"\n\n", 422, None),
        (b"\xff\xfe not json\n", 422, None),
    ]
    for body, status, field in cases:
        answer = server.post(body)
        assert answer.status == status, (body[:120], answer.status, answer.body)
        problems = answer.json()["problems"]
        assert problems and all(set(p) == {"line", "field", "reason"} for p in problems)
        assert field is None or field in [p["field"] for p in problems], problems
    assert keyed.stored_events() == stored
    assert server.post(signed(good)).status == 200
    assert keyed.stored_events() == stored + 1


def test_resending_what_is_recorded_answers_200_with_nothing_appended(server: Server) -> None:
    body = signed(*NIGHT)
    first = server.post(body).json()
    again = server.post(body)
    assert again.status == 200
    assert again.json() == {"appended": 0, "already_recorded": 6, "first_position": None,
                            "last_position": None, "flagged": []}
    assert first["appended"] == 6


def test_limits_and_hostile_requests_get_4xx_json_never_a_500_or_a_stored_event(
        keyed: LedgerUnderTest, server: Server) -> None:
    from ledger.http.app import MAX_BODY_BYTES, MAX_LINES

    stored = keyed.stored_events()
    one = signed(protocol("n1", "07T20:00:00", {"a": 1}))
    assert server.post(one * (MAX_LINES + 1)).status == 413
    # Refused from its declared length, before the body is read.
    reply = server.raw(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                       % (MAX_BODY_BYTES + 1), b"{")
    assert reply.startswith(b"HTTP/1.1 413") and b'"problems"' in reply, reply[:300]
    # Refused as it streams in, when no length is declared.
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    reply = server.raw(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                       chunk * 5)
    assert reply.startswith(b"HTTP/1.1 413") and b'"problems"' in reply, reply[:300]
    checks = {
        "/v1/elections/council-2030/tally?as_of=yesterday": 400,
        "/v1/elections/council-2030/tally?stage=halfway": 400,
        "/v1/elections/council-2030/tally?colour=red": 400,
        "/v1/elections/council-2030/tally?stage=final&stage=final": 400,
        "/v1/elections/council-2030/tally?scope=Atlantis": 400,
        "/v1/elections/council-2030/audit?known_at=2030-13-01T00:00:00Z": 400,
        "/v1/log?after=-1": 400,
        "/v1/log?limit=0": 400,
        "/v1/elections/nowhere/tally": 404,
        "/v1/elections/council-2030/audit?station=x9": 404,
        "/v1/elections/council-2030/history?station=x9": 404,
        "/v1/proof/no-such-event": 404,
        "/v2/anything": 404,
        "/v1/elections/council-2030/tally/../../etc": 404,
    }
    for path, status in checks.items():
        answer = server.get(path)
        assert answer.status == status, (path, answer.body)
        assert answer.json()["problems"], path
    # Each bad bound is named by its parameter.
    both = server.get("/v1/elections/council-2030/tally?as_of=bad&known_at=2030-13-01T00:00:00Z")
    assert [p["field"] for p in both.json()["problems"]] == ["as_of", "known_at"]
    assert server.request("GET", "/v1/events").status == 405
    assert server.request("DELETE", "/v1/elections").status == 405
    assert keyed.stored_events() == stored


def test_a_client_that_sends_its_body_slowly_gets_408(keyed: LedgerUnderTest, server: Server) -> None:
    stored = keyed.stored_events()
    # The server answers after --body-timeout (1 s), without the rest of the body.
    reply = server.raw(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                       b"Content-Type: application/x-ndjson\r\n\r\n", b'{"type":')
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b'"problems"' in reply
    assert keyed.stored_events() == stored
    assert server.get("/v1/elections").status == 200


def test_concurrent_requests_each_stay_atomic_and_positions_follow_commits(
        keyed: LedgerUnderTest, server: Server) -> None:
    copies = [Reporter(f"copy-{i}") for i in range(40)]
    keyed.append(*(copy.registration("council-2030") for copy in copies))
    stored = keyed.stored_events()
    bodies = []
    for i, copy in enumerate(copies):
        good = protocol("n1", "07T20:00:00", {"a": i, "b": 1}, by=copy.reporter)
        if i % 4 == 3:  # a good line and a bad one: the whole request is refused
            bodies.append(lines(copy.sign(good), copy.sign({**good, "votes": {"zz": 1}})))
        else:
            bodies.append(lines(copy.sign(good)))
    answers: dict[int, Any] = {}

    def send(i: int) -> None:
        answers[i] = server.post(bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = {i: a.json() for i, a in answers.items() if a.status == 200}
    assert sorted(accepted) == [i for i in range(40) if i % 4 != 3]
    assert all(answers[i].status == 422 for i in range(40) if i % 4 == 3)
    positions = sorted(r["first_position"] for r in accepted.values())
    assert len(set(positions)) == 30
    assert keyed.stored_events() == stored + 30
    log = [json.loads(x) for x in server.get(f"/v1/log?after={positions[0] - 1}").body.splitlines()]
    by_position = {entry["position"]: entry["event"]["reported_by"] for entry in log}
    for i, reply in accepted.items():
        assert by_position[reply["first_position"]] == f"copy-{i}"
    assert sorted(by_position.values()) == sorted(f"copy-{i}" for i in accepted)
    assert keyed.run("verify").code == 0


def test_the_feed_sends_one_appended_event_per_commit(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", "/v1/feed")
    stream = connection.getresponse()
    assert stream.status == 200
    assert stream.getheader("Content-Type").startswith("text/event-stream")
    assert stream.readline() == b"retry: 2000\n"
    reply = server.post(signed(*NIGHT)).json()
    assert server.post(signed(*NIGHT)).json()["appended"] == 0  # no feed event for a no-op
    second = server.post(signed(protocol("s1", "07T23:00:00", {"a": 1}, by="watch"))).json()
    seen = []
    while len(seen) < 2:
        line = stream.readline()
        if line.startswith(b"data: "):
            seen.append(json.loads(line[6:]))
    connection.close()
    assert seen == [
        {"first_position": reply["first_position"], "last_position": reply["last_position"]},
        {"first_position": second["first_position"], "last_position": second["last_position"]},
    ]


def test_the_log_checkpoint_and_proofs_serve_auditors(keyed: LedgerUnderTest, server: Server) -> None:
    reply = server.post(signed(*NIGHT)).json()
    log = server.get("/v1/log?after=0&limit=1000")
    assert log.headers["content-type"] == "application/x-ndjson"
    entries = [json.loads(x) for x in log.body.splitlines()]
    assert [e["position"] for e in entries] == sorted(e["position"] for e in entries)
    assert len(entries) == keyed.stored_events()
    history = keyed.query("history")["events"]
    assert [(e["position"], e["event"]["event_id"]) for e in entries] == [
        (e["position"], e["event_id"]) for e in history]
    page = [json.loads(x) for x in server.get(
        f"/v1/log?after={reply['first_position']}&limit=2").body.splitlines()]
    assert [e["position"] for e in page] == [reply["first_position"] + 1, reply["first_position"] + 2]
    note = server.get("/v1/checkpoint")
    assert note.status == 200 and note.body.decode().split("\n")[1] == str(len(entries))
    (keyed.directory / "night.ckpt").write_bytes(note.body)
    proof = server.get("/v1/proof/n2-b2")
    assert proof.status == 200
    assert proof.json() == json.loads(keyed.run("prove", "n2-b2").out)
    (keyed.directory / "n2.proof").write_bytes(proof.body)
    checked = keyed.run("check-proof", "n2.proof", "--checkpoint", "night.ckpt")
    assert checked.code == 0, checked.err


def test_receipts_check_against_the_log_and_a_checkpoint(keyed: LedgerUnderTest) -> None:
    assert keyed.run("keygen", "ledger-key").code == 0
    server = Server(keyed.db, keyed.directory, ("--key", "ledger-key.key")).start()
    try:
        reply = server.post(signed(*NIGHT)).json()
        receipt = reply["receipt"]
        assert [e["position"] for e in receipt["events"]] == list(
            range(reply["first_position"], reply["last_position"] + 1))
        assert [e["event_id"] for e in receipt["events"]][:1] == ["n1-b"]
        note = server.get("/v1/checkpoint").body
        assert b"\n\n\xe2\x80\x94 " in note  # signed: a blank line, then "— name signature"
    finally:
        assert server.stop() == 0
    d = keyed.directory
    (d / "ckpt").write_bytes(note)
    (d / "receipt.json").write_text(json.dumps(reply))
    ok = keyed.run("check-receipt", "receipt.json", "--public-key", "ledger-key.pub",
                   "--checkpoint", "ckpt")
    assert ok.code == 0, ok.err
    assert "6 event(s)" in ok.out
    forged = {**receipt, "events": [{**receipt["events"][0], "position": 1}]}
    (d / "forged.json").write_text(json.dumps(forged))
    assert keyed.run("check-receipt", "forged.json", "--public-key", "ledger-key.pub").code == 1
    assert keyed.run("keygen", "other").code == 0
    assert keyed.run("check-receipt", "receipt.json", "--public-key", "other.pub").code == 1


def test_sigterm_drains_and_stops_cleanly(keyed: LedgerUnderTest) -> None:
    server = Server(keyed.db, keyed.directory).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("GET", "/v1/feed")  # an open stream must not hold the shutdown
    assert connection.getresponse().status == 200
    assert server.post(signed(*NIGHT)).status == 200
    assert server.stop() == 0, server.log()
    connection.close()
    assert keyed.run("verify").code == 0


def test_the_live_page_is_served(server: Server) -> None:
    page = server.get("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b"/v1/feed" in page.body and b"textContent" in page.body


def test_a_port_that_cannot_be_used_is_one_line_not_a_traceback(keyed: LedgerUnderTest,
                                                                 server: Server) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ledger", "serve", *args, "--db", keyed.db],
                              cwd=keyed.directory, capture_output=True, text=True, timeout=60)

    taken = serve("--port", str(server.port))
    assert taken.returncode == 1, taken.stderr
    assert taken.stderr.strip().splitlines() == [
        f"ledger: cannot listen on 127.0.0.1:{server.port}: Address already in use"]
    out_of_range = serve("--port", "99999")
    assert out_of_range.returncode == 2
    assert "expected a port from 1 to 65535" in out_of_range.stderr
    assert "Traceback" not in taken.stderr + out_of_range.stderr
    assert server.get("/v1/elections").status == 200  # the first server is untouched


@contextmanager
def writers_locked_out(ledger: LedgerUnderTest) -> Iterator[None]:
    """Hold the event store's write lock from outside, as another writer would."""
    if ledger.backend == "sqlite":
        holder = sqlite3.connect(ledger.db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    schema = ledger.db.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_SERVER) as holder:
        holder.execute(f'LOCK TABLE "{schema}".ledger_events IN EXCLUSIVE MODE')
        yield
        holder.rollback()


def test_a_full_queue_answers_503_with_retry_after_and_stores_nothing_of_it(
        keyed: LedgerUnderTest) -> None:
    copies = [Reporter(f"queued-{i}") for i in range(10)]
    keyed.append(*(copy.registration("council-2030") for copy in copies))
    stored = keyed.stored_events()
    bodies = [lines(copy.sign(protocol("n1", "07T20:00:00", {"a": i}, by=copy.reporter)))
              for i, copy in enumerate(copies)]
    server = Server(keyed.db, keyed.directory, ("--queue", "1")).start()
    try:
        answers: dict[int, Any] = {}
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, server.post(bodies[i])))
                   for i in range(len(bodies))]
        with writers_locked_out(keyed):
            for thread in threads:
                thread.start()
            # With the writer stuck on the lock, one group is being written and one request
            # waits; every other one is turned away at once.
            deadline = time.monotonic() + 30
            while sum(a.status == 503 for a in answers.values()) < len(bodies) - 2:
                assert time.monotonic() < deadline, {i: a.status for i, a in answers.items()}
                time.sleep(0.05)
            assert keyed.stored_events() == stored
        for thread in threads:
            thread.join()
        refused = [i for i, a in answers.items() if a.status == 503]
        taken = [i for i, a in answers.items() if a.status == 200]
        assert sorted(refused + taken) == list(range(len(bodies))) and refused
        for i in refused:
            assert answers[i].headers["retry-after"].isdigit()
            assert answers[i].json()["problems"]
        assert keyed.stored_events() == stored + len(taken)  # nothing of a refused request
        # Sent again once the writer is free, every refused request is taken.
        assert all(server.post(bodies[i]).status == 200 for i in refused)
        assert keyed.stored_events() == stored + len(bodies)
    finally:
        assert server.stop() == 0, server.log()
