"""One shape for API clients: a tally's ``votes`` lists every choice the election defines (0
until a counted protocol gives it votes) in every output, and a reporter nobody knows is an
unknown thing (HTTP 404, exit 2), like an unknown election or station."""

from __future__ import annotations

import csv
import io

import pytest

from tests.conftest import LedgerUnderTest, ev, protocol
from tests.serving import Server

CHOICES = ["a", "b", "c", "d"]
# Only parties a and b are named by the one protocol counted.
PARTIAL = protocol("n1", "07T20:00:00", {"a": 400, "b": 300}, invalid=10)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_votes_list_every_defined_choice_in_every_output(registered: LedgerUnderTest) -> None:
    nothing_yet = registered.query("tally")
    assert nothing_yet["votes"] == dict.fromkeys(CHOICES, 0)
    assert nothing_yet["shares"] == dict.fromkeys(CHOICES, 0.0)
    registered.append(PARTIAL)
    expected = {"a": 400, "b": 300, "c": 0, "d": 0}
    assert registered.query("tally")["votes"] == expected
    assert registered.query("tally", "--stage", "final")["votes"] == expected
    assert registered.query("tally", "--as-of", "2030-04-07T19:00:00+02:00")["votes"] == \
        dict.fromkeys(CHOICES, 0)
    assert registered.query("seats")["votes"] == expected
    rows = list(csv.DictReader(io.StringIO(registered.run("tally", "--format", "csv").out)))
    assert [(r["choice"], r["votes"]) for r in rows] == [(c, str(v)) for c, v in expected.items()]
    table = registered.run("tally").out.splitlines()
    assert [line.split()[0] for line in table[3:]] == CHOICES
    # A parallel tally of a reporter that has not counted anything yet: zeros too.
    registered.append(ev("ProtocolWithheld", "07T21:40:00", station="s1", requested_by="watch"))
    assert registered.query("tally", "--reporter", "watch")["votes"] == dict.fromkeys(CHOICES, 0)
    # The export has a count for every choice wherever something is counted.
    export = registered.run("export", "--format", "nist-err")
    assert export.code == 0
    contest = __import__("json").loads(export.out)["Election"][0]["Contest"][0]
    assert len(contest["ContestSelection"]) == 4
    assert all(s["VoteCounts"] for s in contest["ContestSelection"])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_an_unknown_reporter_is_refused_like_an_unknown_election(registered: LedgerUnderTest) -> None:
    registered.append(PARTIAL)
    for command in ("tally", "seats"):
        result = registered.run(command, "--reporter", "nobody")
        assert result.code == 2
        assert result.err == "ledger: --reporter: unknown reporter 'nobody' in 'council-2030'\n"
    # Known reporters: the authority, and anyone an event names.
    assert registered.run("tally", "--reporter", "board").code == 0
    server = Server(registered.db, registered.directory).start()
    try:
        base = "/v1/elections/council-2030"
        for path in (f"{base}/tally?reporter=nobody", f"{base}/seats?reporter=nobody",
                     "/v1/elections/nowhere/tally"):
            answer = server.get(path)
            assert answer.status == 404, (path, answer.body)
            assert len(answer.json()["problems"]) == 1
        answer = server.get(f"{base}/tally?reporter=board")
        assert answer.status == 200 and answer.json()["votes"] == {"a": 400, "b": 300, "c": 0, "d": 0}
    finally:
        assert server.stop() == 0
