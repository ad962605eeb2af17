"""Reports act only for their reporter (../shared/DESIGN.md v3, "Keys that leave"): no event of one
reporter changes the effect of another's, except through appeals (a pending appeal holds its
stations out of the final tally; the authority's decision settles it). One test per field
that points at another event or reporter; docs/integrity.md has the table.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LedgerUnderTest, ev, protocol
from tests.serving import Server, lines
from tests.test_signatures import Reporter

OFFICIAL = protocol("n1", "07T20:00:00", {"a": 400, "b": 300, "c": 100, "d": 50}, invalid=10,
                    event_id="n1-b")
COPY = protocol("n1", "07T20:30:00", {"a": 380, "b": 320, "c": 100, "d": 50}, invalid=10,
                by="watch", event_id="n1-w")


def refused_for(ledger: LedgerUnderTest, field: str, *events: dict[str, Any]) -> str:
    before = ledger.stored_events()
    result = ledger.append(*events, expect=2)
    assert f"line {len(events)}: {field}:" in result.err, result.err
    assert len(result.err.strip().splitlines()) == 2  # the problem, and "nothing was appended"
    assert ledger.stored_events() == before
    return result.err


def test_a_protocol_supersedes_only_its_own_reporters(registered: LedgerUnderTest) -> None:
    registered.append(OFFICIAL, COPY)
    official = registered.query("tally")
    # An observer cannot take the authority's protocol out of the official tally...
    takeover = protocol("n1", "07T21:00:00", {"a": 1}, by="watch", supersedes="n1-b")
    err = refused_for(registered, "supersedes", takeover)
    assert "'n1-b' is a protocol of 'board'" in err
    # ... nor the authority an observer's out of its parallel count.
    refused_for(registered, "supersedes",
                protocol("n1", "07T21:00:00", {"a": 1}, supersedes="n1-w"))
    assert registered.query("tally") == official
    assert registered.query("audit")["conflicts"]  # the copy still differs from the official
    # A recount of one's own protocol supersedes it, also within one batch.
    recount = protocol("n1", "07T22:00:00", {"a": 410, "b": 300, "c": 100, "d": 50},
                       invalid=10, supersedes="n1-b", event_id="n1-r")
    again = protocol("n1", "07T23:00:00", {"a": 411, "b": 300, "c": 100, "d": 49},
                     invalid=10, supersedes="n1-r")
    registered.append(recount, again)
    assert registered.query("tally")["votes"]["a"] == 411
    # Earlier in the batch, but another reporter's: refused like a stored one.
    other = protocol("n2", "07T21:00:00", {"a": 5}, by="watch", event_id="n2-w")
    refused_for(registered, "supersedes", other,
                protocol("n2", "07T21:10:00", {"a": 6}, supersedes="n2-w"))


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_over_http_a_signed_takeover_is_422(registered: LedgerUnderTest) -> None:
    watch = Reporter("watch")
    registered.append(watch.registration(), OFFICIAL)
    server = Server(registered.db, registered.directory).start()
    try:
        takeover = watch.sign(protocol("n1", "07T21:00:00", {"a": 1}, by="watch",
                                       supersedes="n1-b"))
        answer = server.post(lines(takeover))
        assert answer.status == 422, answer.body
        assert [p["field"] for p in answer.json()["problems"]] == ["supersedes"]
        tally = server.get("/v1/elections/council-2030/tally").json()
        assert tally["stations_reporting"] == 1 and tally["votes"]["a"] == 400
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_withheld_requests_and_announcements_act_only_for_their_reporter(
    registered: LedgerUnderTest
) -> None:
    registered.append(OFFICIAL, COPY)
    before = registered.query("tally", "--stage", "final")
    # An observer's refusal, and an observer's own "final result", change nothing official:
    # only the authority's announcement certifies, and only it is the tally's "announced".
    registered.append(
        ev("ProtocolWithheld", "07T21:40:00", station="n1", requested_by="watch"),
        ev("ResultAnnounced", "08T09:00:00", authority="watch", stage="final", scope="national",
           votes={"a": 1, "b": 2000}),
    )
    after = registered.query("tally", "--stage", "final")
    assert after == before and not after["certified"] and after["announced"] is None
    # The observer's announcement is compared with the observer's own protocols.
    (discrepancy,) = registered.query("audit")["discrepancies"]
    assert (discrepancy["authority"], discrepancy["computed_total"]) == ("watch", 850)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_appeals_are_the_one_way_one_reporter_affects_anothers_tally(
    registered: LedgerUnderTest
) -> None:
    registered.append(OFFICIAL, COPY)
    appeal = ev("AppealFiled", "08T10:00:00", appeal="x", filed_by="watch", stations=["n1"],
                grounds="stuffing", demand="annul")
    registered.append(appeal)
    held = registered.query("tally", "--stage", "final")
    assert held["contested"] == ["n1"] and held["stations_reporting"] == 0
    # Filed again under the same id by another reporter: refused, not a second appellant.
    refused_for(registered, "appeal", {**appeal, "filed_by": "c"})
    # The authority's decision settles it; the appellant cannot decide its own appeal.
    board, watch = Reporter("board"), Reporter("watch")
    registered.append(board.registration(), watch.registration())
    decided = ev("AppealDecided", "09T10:00:00", appeal="x", decision="rejected", remedy="none")
    refused_for(registered, "signature", watch.sign(decided, by="watch"))
    registered.append(board.sign(decided))
    settled = registered.query("tally", "--stage", "final")
    assert settled["contested"] == [] and settled["votes"]["a"] == 400


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
@pytest.mark.parametrize("case", ["different station", "not a protocol"])
def test_supersedes_names_a_protocol_of_the_same_station(registered: LedgerUnderTest,
                                                         case: str) -> None:
    registered.append(OFFICIAL, ev("ProtocolWithheld", "07T21:40:00", station="s1",
                                   requested_by="board", event_id="w1"))
    target = "n1-b" if case == "different station" else "w1"
    station = "n2" if case == "different station" else "s1"
    refused_for(registered, "supersedes", protocol(station, "07T22:00:00", {"a": 1},
                                                   supersedes=target))
