"""Whole protocols: protocol lines, the control-relation grammar, relation failures flagged
with their numbers, lines compared between reporters, and Georgia's seat rule."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from ledger.domain.events import decoder
from ledger.domain.relations import RelationError, parse
from projections.seats import Threshold, allocate
from tests.conftest import LedgerUnderTest, definition, ev, protocol, station

LINES = [{"id": "blank", "name": "Blank ballots"}, {"id": "spoiled", "name": "Spoiled ballots"},
         {"id": "received", "name": "Ballots received"}, {"id": "unused", "name": "Unused"}]
RELATIONS = ["invalid = blank + spoiled", "received = ballots_issued + unused",
             "votes.a <= 2*votes.b + 100", "valid >= 0"]


def whole(**overrides: Any) -> dict[str, Any]:
    return definition(protocol_lines=LINES, control_relations=RELATIONS, **overrides)


# --- the grammar ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "figures", "failure"), [
    ("invalid = blank + spoiled", {"invalid": 12, "blank": 5, "spoiled": 6},
     "invalid = blank + spoiled: 12 ≠ 5 + 6"),
    ("invalid = blank + spoiled", {"invalid": 11, "blank": 5, "spoiled": 6}, None),
    ("ballots_cast <= ballots_issued", {"ballots_cast": 11, "ballots_issued": 10},
     "ballots_cast <= ballots_issued: 11 > 10"),
    ("a - b >= 0", {"a": 3, "b": 4}, "a - b >= 0: 3 - 4 < 0"),
    ("2*x = y", {"x": 3, "y": 7}, "2*x = y: 2*3 ≠ 7"),
    ("2 * x = y", {"x": 3, "y": 6}, None),
    ("- a + b = 1", {"a": 1, "b": 3}, "- a + b = 1: -1 + 3 ≠ 1"),
    ("votes.nur-otan = valid", {"votes.nur-otan": 5, "valid": 5}, None),
    # A figure the protocol does not give: skipped, not failed.
    ("registered_voters >= ballots_issued", {"registered_voters": None, "ballots_issued": 9},
     None),
    ("x = y", {"x": 1}, None),
])
def test_relations_evaluate_with_their_numbers(text: str, figures: dict[str, Any],
                                               failure: str | None) -> None:
    assert parse(text).failure(figures) == failure


@pytest.mark.parametrize(("text", "why"), [
    ("invalid blank", "exactly one"),
    ("a = b = c", "more than one"),
    ("a < b", "use =, <= or >="),
    ("= b", "left side is empty"),
    ("a =", "right side is empty"),
    ("a + = b", "left side ends with an operator"),
    ("a + + b = c", "expected a name or a number"),
    ("a b = c", "expected + or -"),
    ("2* = c", "expected a name after 2*"),
    ("a = b +", "right side ends with an operator"),
    ("1 = 2 3", "expected + or -"),
])
def test_malformed_relations_are_refused(text: str, why: str) -> None:
    with pytest.raises(RelationError, match=re.escape(why)):
        parse(text)


# --- through the ledger ------------------------------------------------------------------


def test_definition_with_bad_relations_is_refused(ledger: LedgerUnderTest) -> None:
    result = ledger.append(definition(
        protocol_lines=LINES,
        control_relations=["invalid = blank + spoiled", "invalid = blnk", "a < b",
                           "votes.zz = 1"],
    ), expect=2)
    assert "line 1: control_relations[1]: unknown name(s) 'blnk'" in result.err
    assert "line 1: control_relations[2]: '<' is not a comparison here" in result.err
    assert "line 1: control_relations[3]: unknown name(s) 'votes.zz'" in result.err
    assert "control_relations[0]" not in result.err
    assert ledger.stored_events() == 0


def test_line_ids_must_be_unique_and_nameable(ledger: LedgerUnderTest) -> None:
    result = ledger.append(definition(protocol_lines=[
        {"id": "blank", "name": "x"}, {"id": "blank", "name": "y"},
        {"id": "invalid", "name": "z"}, {"id": "a+b", "name": "w"}]), expect=2)
    assert "protocol_lines[1].id: line 'blank' is listed twice" in result.err
    assert "protocol_lines[2].id: 'invalid' is a protocol figure already" in result.err
    assert "protocol_lines[3].id: 'a+b' cannot be named in a relation" in result.err


def test_failed_relations_are_recorded_and_flagged(ledger: LedgerUnderTest) -> None:
    ledger.append(whole(), station("n1", "North", 1000), station("n2", "North", 500))
    good = protocol("n1", "07T20:00:00", {"a": 400, "b": 300}, invalid=11,
                    lines={"blank": 5, "spoiled": 6, "received": 800})
    # invalid 12 but blank + spoiled = 11; received 700 but issued 312 + unused 300 = 612;
    # votes.a 300 > 2 * 0 + 100.
    bad = protocol("n2", "07T20:00:00", {"a": 300, "b": 0}, invalid=12,
                   lines={"blank": 5, "spoiled": 6, "received": 700, "unused": 300})
    result = ledger.run("append", "--format", "json", "-", stdin="\n".join(
        json.dumps(e) for e in (good, bad)) + "\n")
    assert result.code == 0, result.err
    flagged = result.json()["flagged"]
    assert flagged == [
        "line 2: control check: invalid = blank + spoiled: 12 ≠ 5 + 6",
        "line 2: control check: received = ballots_issued + unused: 700 ≠ 312 + 300",
        "line 2: control check: votes.a <= 2*votes.b + 100: 300 > 2*0 + 100",
    ]
    assert ledger.stored_events() == 5
    audit = ledger.query("audit")
    assert [(f["station"], f["failures"]) for f in audit["control_failures"]] == [
        ("n2", [f.split("control check: ")[1] for f in flagged])]
    # The line of the first protocol lacks "unused": that relation is skipped, not failed.
    assert not any(f["station"] == "n1" for f in audit["control_failures"])
    history = ledger.query("history", "--station", "n2")
    assert history["events"][-1]["event"]["lines"] == {
        "blank": 5, "spoiled": 6, "received": 700, "unused": 300}


def test_relation_failures_survive_replay(ledger: LedgerUnderTest) -> None:
    ledger.append(whole(), station("n1", "North", 1000))
    ledger.append(protocol("n1", "07T20:00:00", {"a": 10, "b": 10}, invalid=3,
                           lines={"blank": 1, "spoiled": 1}))
    before = ledger.query("audit")["control_failures"]
    assert ledger.run("replay").code == 0
    assert ledger.query("audit")["control_failures"] == before
    assert before[0]["failures"] == ["invalid = blank + spoiled: 3 ≠ 1 + 1"]
    assert ledger.run("report", "--out", str(ledger.directory / "night.html")).code == 0
    assert "invalid = blank + spoiled: 3 ≠ 1 + 1" in (ledger.directory / "night.html").read_text()


def test_unknown_line_is_refused(ledger: LedgerUnderTest) -> None:
    ledger.append(whole(), station("n1", "North", 1000))
    result = ledger.append(protocol("n1", "07T20:00:00", {"a": 1}, lines={"blank": 0, "blnak": 1}),
                           expect=2)
    assert "line 1: lines.blnak: unknown protocol line 'blnak'" in result.err
    assert ledger.stored_events() == 2


def test_election_without_lines_refuses_any_line(ledger: LedgerUnderTest) -> None:
    ledger.append(definition(), station("n1", "North", 1000))
    result = ledger.append(protocol("n1", "07T20:00:00", {"a": 1}, lines={"blank": 0}), expect=2)
    assert "lines.blank: unknown protocol line" in result.err


def test_conflicts_compare_lines(ledger: LedgerUnderTest) -> None:
    ledger.append(whole(), station("n1", "North", 1000))
    ledger.append(
        protocol("n1", "07T20:00:00", {"a": 400, "b": 300}, invalid=11,
                 lines={"blank": 5, "spoiled": 6, "received": 900}),
        protocol("n1", "07T20:30:00", {"a": 400, "b": 300}, invalid=11, by="watch",
                 lines={"blank": 7, "spoiled": 4}),
    )
    conflicts = ledger.query("audit")["conflicts"]
    assert [(c["field"], c["authority"], c["reported"]) for c in conflicts] == [
        ("lines.blank", 5, 7), ("lines.spoiled", 6, 4)]
    timeline = ledger.query("audit", "--station", "n1")["timeline"]
    assert '"blank": 7' in timeline[-1]["summary"]
    # The report's conflicts table lists them too.
    result = ledger.run("report", "--out", str(ledger.directory / "night.html"))
    assert result.code == 0, result.err
    html = (ledger.directory / "night.html").read_text()
    assert "protocol line blank" in html and "protocol line spoiled" in html


def test_v1_events_keep_their_derived_ids() -> None:
    """Adding optional fields must not change the identity of a v1 line: re-appending an old
    file to an old ledger stays a no-op. The canonical JSON is written out by hand here."""
    line = (b'{"type":"ProtocolIssued","election":"e","occurred_at":"2030-01-01T02:00:00+02:00",'
            b'"station":"s","reported_by":"r","ballots_cast":3,"invalid":0,"votes":{"a":3}}')
    canonical = {"ballots_cast": 3, "ballots_issued": None, "document_sha256": None,
                 "election": "e", "event_id": None, "invalid": 0,
                 "occurred_at": "2030-01-01T00:00:00Z", "protocol_no": None,
                 "registered_voters": None, "reported_by": "r", "station": "s",
                 "supersedes": None, "type": "ProtocolIssued", "votes": {"a": 3}}
    expected = hashlib.sha256(json.dumps(canonical, separators=(",", ":"), sort_keys=True)
                              .encode()).hexdigest()
    from ledger.domain.events import content_digest

    assert content_digest(decoder.decode(line)) == expected


# --- Georgia 2024 -------------------------------------------------------------------------

# Parliament of Georgia, 26 October 2024, proportional part: 150 seats, 5% threshold of the
# valid votes. The five parties over the threshold, from the CEC's final protocol; the seats
# they were given: 89 / 19 / 16 / 14 / 12.
GEORGIA = {"gd": 1_120_053, "cfc": 229_161, "unm": 211_216, "sg": 182_922, "gfg": 161_521}
# The thirteen parties under 5%, lumped into placeholders that keep each one below the
# threshold: only the total matters to the threshold base, and none of them wins a seat.
BELOW = {"below1": 95_000, "below2": 90_000}


def test_georgia_2024_hare_to_largest_parties() -> None:
    votes = {**GEORGIA, **BELOW}
    allocation = allocate(votes, 150, "hare_to_largest_parties",
                          threshold=Threshold.of(5, sum(votes.values())))
    assert allocation.passing == list(GEORGIA)
    assert allocation.seats == {"gd": 89, "cfc": 19, "unm": 16, "sg": 14, "gfg": 12,
                                "below1": 0, "below2": 0}
    # Plain largest remainder on the same quota would have given other seats.
    hare = allocate(votes, 150, "hare", threshold=Threshold.of(5, sum(votes.values()))).seats
    assert [hare[p] for p in GEORGIA] == [88, 18, 17, 14, 13]


def naive_georgia(votes: dict[str, int], seats: int) -> dict[str, int]:
    """Art. 125 read literally, in integers: seats = votes * S // V for the parties over the
    threshold, then one more each for the largest parties until all S are given."""
    total = sum(votes.values())
    won = {p: v * seats // total for p, v in votes.items()}
    for party in sorted(votes, key=lambda p: -votes[p])[: seats - sum(won.values())]:
        won[party] += 1
    return won


@pytest.mark.parametrize("seed", range(30))
def test_hare_to_largest_parties_matches_a_naive_reading(seed: int) -> None:
    import random

    rng = random.Random(seed)
    votes = {f"p{i}": rng.randint(1, 10_000) * (i + 1) for i in range(rng.randint(1, 8))}
    seats = rng.randint(1, 60)
    # Distinct vote counts: the naive version has no tie rule.
    if len(set(votes.values())) == len(votes):
        assert allocate(votes, seats, "hare_to_largest_parties").seats == naive_georgia(
            votes, seats)


def test_hare_to_largest_parties_through_the_ledger(ledger: LedgerUnderTest) -> None:
    choices = [{"id": p, "name": p} for p in [*GEORGIA, *BELOW]]
    ledger.append(definition(seats=150, threshold_pct=5.0, method="hare_to_largest_parties",
                             choices=choices),
                  station("tbilisi", "Tbilisi", 3_000_000))
    votes = {**GEORGIA, **BELOW}
    ledger.append(ev("ProtocolIssued", "27T06:00:00", station="tbilisi", reported_by="board",
                     ballots_cast=sum(votes.values()), invalid=0, votes=votes))
    seats = ledger.query("seats")["seats"]
    assert {p: seats[p] for p in GEORGIA} == {"gd": 89, "cfc": 19, "unm": 16, "sg": 14, "gfg": 12}
