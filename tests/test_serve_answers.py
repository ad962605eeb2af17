"""Answers kept in memory by `ledger serve`: ETag, 304, Cache-Control, and never a stale one.

A real server process on a real ledger. What an answer must equal is asked of the command
line in the same moment (it computes afresh from the read models); what must be immutable
is worked out from the log's own recorded_at stamps, read back over /v1/log.
"""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.conftest import LATER, NIGHT, LedgerUnderTest, protocol
from tests.serving import Server
from tests.test_serve import BOARD, PARTY_C, WATCH, signed

TALLY = "/v1/elections/council-2030/tally"
LATEST = "public, max-age=1"
IMMUTABLE = "public, max-age=31536000, immutable"
# Every read view, and the command line's words for it.
VIEWS = {
    "/v1/elections": ["elections"],
    TALLY: ["tally"],
    f"{TALLY}?reporter=watch&scope=North": ["tally", "--reporter", "watch", "--scope", "North"],
    "/v1/elections/council-2030/seats?stage=final": ["seats", "--stage", "final"],
    "/v1/elections/council-2030/audit?station=s1": ["audit", "--station", "s1"],
    "/v1/elections/council-2030/history": ["history"],
    "/v1/elections/council-2030/withheld": ["withheld"],
    "/v1/elections/council-2030/appeals": ["appeals"],
}


@pytest.fixture
def keyed(registered: LedgerUnderTest) -> LedgerUnderTest:
    registered.append(*(r.registration("council-2030") for r in (BOARD, WATCH, PARTY_C)))
    return registered


@pytest.fixture
def server(keyed: LedgerUnderTest) -> Iterator[Server]:
    running = Server(keyed.db, keyed.directory).start()
    yield running
    assert running.stop() == 0, running.log()


def fresh(ledger: LedgerUnderTest, command: list[str]) -> object:
    """The same question asked of the command line: computed from the read models, no cache."""
    options = [] if command[0] == "elections" else ["--election", "council-2030"]
    return ledger.query(*command, *options)


def q(moment: str) -> str:
    return urllib.parse.quote(moment, safe="")


def recorded_at(server: Server, position: int) -> str:
    """The recorded_at the log holds for ``position`` (its stored payload, over /v1/log)."""
    line = server.get(f"/v1/log?after={position - 1}&limit=1").body.splitlines()[0]
    entry = json.loads(line)
    assert entry["position"] == position
    return entry["recorded_at"]


def test_each_answer_names_the_log_head_it_reflects_and_none_is_stale_after_a_write(
        keyed: LedgerUnderTest, server: Server) -> None:
    first = server.post(signed(*NIGHT)).json()["last_position"]
    before = {}
    for path in VIEWS:
        answer = server.get(path)
        assert answer.status == 200, (path, answer.body)
        assert answer.headers["etag"] == f'"{first}"', path
        assert answer.headers["cache-control"] == LATEST, path
        again = server.get(path)  # from memory: the same answer, the same head
        assert (again.body, again.headers["etag"]) == (answer.body, answer.headers["etag"])
        before[path] = answer.json()
    assert before[TALLY]["votes"] == {"a": 1110, "b": 790, "c": 350, "d": 170}

    # A client holding the answer at this head gets 304, however it writes the tag.
    for held in (f'"{first}"', f'W/"{first}"', f'"1", "{first}"', "*"):
        answer = server.request("GET", TALLY, headers={"If-None-Match": held})
        assert (answer.status, answer.body) == (304, b""), held
        assert answer.headers["etag"] == f'"{first}"'
        assert answer.headers["cache-control"] == LATEST
    assert server.request("GET", TALLY, headers={"If-None-Match": '"1"'}).status == 200
    # The parameters are checked before the tag: a bad question is never a 304.
    for path, status in ((f"{TALLY}?stage=halfway", 400), (f"{TALLY}?colour=red", 400),
                         ("/v1/elections/nowhere/tally", 404),
                         ("/v1/elections/council-2030/audit?station=x9", 404)):
        answer = server.request("GET", path, headers={"If-None-Match": "*"})
        assert answer.status == status, (path, answer.body)

    last = server.post(signed(*LATER)).json()["last_position"]
    assert last > first
    for path, command in VIEWS.items():
        answer = server.request("GET", path, headers={"If-None-Match": f'"{first}"'})
        assert answer.status == 200, (path, answer.body)
        assert answer.headers["etag"] == f'"{last}"', path
        assert answer.json() == fresh(keyed, command), path
    after = server.get(TALLY).json()
    assert after != before[TALLY] and after["announced"]["votes"]["a"] == 1200


def test_only_an_answer_that_can_never_change_is_sent_as_immutable(
        keyed: LedgerUnderTest, server: Server) -> None:
    first = server.post(signed(*NIGHT)).json()["last_position"]
    time.sleep(0.05)
    last = server.post(signed(*LATER)).json()["last_position"]
    early, latest = recorded_at(server, first), recorded_at(server, last)
    assert early < latest

    # known_at strictly before the last recorded_at: nothing recorded from now on can show.
    settled = f"{TALLY}?known_at={q(early)}"
    answer = server.get(settled)
    assert answer.headers["cache-control"] == IMMUTABLE
    assert answer.json() == fresh(keyed, ["tally", "--known-at", early])
    settled_tag = answer.headers["etag"]
    # Not immutable: known_at at the last recorded_at itself (the next batch may carry the
    # same stamp), in the future, or named "now"; and as_of alone, whatever its value.
    past = "2030-04-07T23:00:00+02:00"
    for path in (f"{TALLY}?known_at={q(latest)}", f"{TALLY}?known_at=2099-01-01T00:00:00Z",
                 f"{TALLY}?as_of={q(past)}", TALLY, "/v1/elections"):
        answer = server.get(path)
        assert answer.status == 200, (path, answer.body)
        assert answer.headers["cache-control"] == LATEST, path
        assert answer.headers["etag"] == f'"{last}"', path
    moving = server.get(f"{TALLY}?known_at=now")
    assert moving.headers["cache-control"] == LATEST and "etag" not in moving.headers
    as_of_before = server.get(f"{TALLY}?as_of={q(past)}").json()

    # Why as_of alone is not immutable: a back-dated protocol (occurred before it, recorded
    # now) changes the answer about it.
    late = protocol("n1", "07T20:10:00", {"a": 500, "b": 200, "c": 100, "d": 50}, invalid=10)
    assert server.post(signed(late)).status == 200
    as_of_after = server.get(f"{TALLY}?as_of={q(past)}").json()
    assert as_of_after != as_of_before
    assert as_of_after == fresh(keyed, ["tally", "--as-of", past])
    # The settled answer did not move, and is still served as it was, with its tag.
    answer = server.request("GET", settled, headers={"If-None-Match": settled_tag})
    assert (answer.status, answer.headers["cache-control"]) == (304, IMMUTABLE)
    answer = server.get(settled)
    assert answer.json() == fresh(keyed, ["tally", "--known-at", early])
    assert answer.headers["etag"] == settled_tag
    # A moment after everything recorded so far is not settled, though nothing is hidden.
    now = datetime.now(UTC).isoformat()
    assert server.get(f"{TALLY}?known_at={q(now)}").headers["cache-control"] == LATEST


def test_a_servers_unsynced_read_models_are_settled_at_stop_and_rebuilt_after_a_machine_crash(
        keyed: LedgerUnderTest) -> None:
    from projections.schema import BOOT_ID

    if not BOOT_ID.exists():
        pytest.skip("this OS does not say which boot this is: the server's commits stay synced")
    boot = BOOT_ID.read_text().strip()
    read_models = keyed.directory / "read-models.db"  # LEDGER_READ_MODELS (conftest)

    def markers() -> list[str]:
        with sqlite3.connect(read_models) as db:
            return [n for (n,) in db.execute("SELECT name FROM applied WHERE name LIKE 'unsynced%'")]

    server = Server(keyed.db, keyed.directory).start()
    try:
        assert server.post(signed(*NIGHT)).status == 200
        assert server.get(TALLY).json()["votes"] == {"a": 1110, "b": 790, "c": 350, "d": 170}
        # Caught up without a sync per commit, once a synced commit marked this boot.
        assert markers() == [f"unsynced {boot}"]
    finally:
        assert server.stop() == 0, server.log()
    assert markers() == []  # a clean stop synced the file and removed the marker
    expected = keyed.query("tally")

    # As if the machine had crashed while the file took unsynced commits: its marker names
    # another boot, and its rows may be torn (here: the protocols lost). The next question
    # rebuilds it from the log.
    with sqlite3.connect(read_models) as db:
        db.execute("INSERT INTO applied (name, position) VALUES ('unsynced another-boot', 0)")
        db.execute("DELETE FROM protocols")
    assert keyed.query("tally") == expected
    assert markers() == []
