"""Issue 10's bad input: each case once ended badly (a traceback-like exit 1, silence, a
lost reason); each is now one line naming the line and field, exit 2, or a flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.input.reader import parse_line
from tests.conftest import (
    LedgerUnderTest,
    definition,
    ev,
    protocol,
    station,
)

EDGES = ["0001-01-01T00:00:00+03:00", "9999-12-31T23:59:59-05:00"]


@pytest.mark.parametrize("edge", EDGES)
def test_an_occurred_at_outside_the_calendar_in_utc_is_bad_input(
    ledger: LedgerUnderTest, edge: str
) -> None:
    line = json.dumps({**definition(), "occurred_at": edge})
    result = ledger.append(line, expect=2)
    assert f"line 1: occurred_at: {edge} is outside the calendar" in result.err
    assert ledger.stored_events() == 0


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("option", ["--as-of", "--known-at"])
def test_a_query_time_outside_the_calendar_in_utc_is_bad_input(
    registered: LedgerUnderTest, edge: str, option: str
) -> None:
    for command in ("tally", "seats", "history", "audit", "appeals"):
        result = registered.run(command, option, edge)
        assert result.code == 2, (command, result.err)
        assert result.err == f"ledger: {option}: {edge} is outside the calendar once " \
                             "converted to UTC (years 0001 to 9999 only)\n"


def test_the_calendar_edges_themselves_in_utc_are_accepted(registered: LedgerUnderTest) -> None:
    for edge in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        assert registered.run("tally", "--as-of", edge).code == 0
        assert registered.run("tally", "--known-at", edge).code == 0


def test_skip_invalid_keeps_the_good_lines_around_an_edge_date(
    registered: LedgerUnderTest, tmp_path: Path
) -> None:
    good = protocol("n1", "07T20:00:00", {"a": 10}, event_id="good")
    bad = {**protocol("n2", "07T20:00:00", {"a": 5}), "occurred_at": EDGES[1]}
    batch = tmp_path / "night.jsonl"
    batch.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = registered.run("append", str(batch), "--skip-invalid", "--rejects",
                            str(tmp_path / "rejects.jsonl"), "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["appended"] == 1 and result.json()["rejected"] == 1
    rejects = [json.loads(r) for r in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2]
    assert rejects[0]["reasons"][0].startswith("occurred_at: 9999-12-31T23:59:59-05:00 is outside")


def test_a_protocol_without_a_register_is_checked_against_the_station(
    registered: LedgerUnderTest,
) -> None:
    # n2 is registered for 500 voters; a protocol of 5,000 ballots leaves its register out.
    stuffed = protocol("n2", "07T21:00:00", {"a": 4900}, invalid=100, event_id="stuffed")
    result = registered.append(stuffed)
    assert "ballots_issued 5000 > the station's registered_voters 500" in result.err
    failures = registered.query("audit", "--station", "n2")["control_failures"]
    assert [f["failures"] for f in failures] == [
        ["ballots_issued 5000 > the station's registered_voters 500"]]


def test_without_ballots_issued_the_cast_ballots_are_checked_against_the_register(
    registered: LedgerUnderTest,
) -> None:
    stuffed = {**protocol("n2", "07T21:00:00", {"a": 600}), "ballots_issued": None}
    result = registered.append(stuffed)
    assert "ballots_cast 600 > the station's registered_voters 500" in result.err
    honest = {**protocol("n1", "07T21:00:00", {"a": 600}), "ballots_issued": None}
    assert "flagged" not in registered.append(honest).err


def test_the_protocols_own_register_wins_over_the_stations(registered: LedgerUnderTest) -> None:
    # The protocol says 700 registered (e.g. voters added on the day); 600 ballots fit.
    result = registered.append(protocol("n2", "07T21:00:00", {"a": 600}, registered=700))
    assert "flagged" not in result.err


def test_an_appeal_decided_before_it_was_filed_is_refused(registered: LedgerUnderTest) -> None:
    filed = ev("AppealFiled", "08T10:00:00", appeal="x", filed_by="watch", grounds="g",
               demand="recount")
    early = ev("AppealDecided", "08T09:59:59", appeal="x", decision="rejected", remedy="none")
    result = registered.append(filed, early, expect=2)
    assert result.err.startswith("line 2: occurred_at: the decision is dated before appeal "
                                 "'x' was filed (2030-04-08T08:00:00+00:00)")
    same_moment = {**early, "occurred_at": "2030-04-08T08:00:00Z"}
    registered.append(filed, same_moment)


def test_a_byte_order_mark_at_the_start_is_accepted(ledger: LedgerUnderTest, tmp_path: Path) -> None:
    path = tmp_path / "excel.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(definition()).encode() + b"\n"
                     + json.dumps(station("n1", "North", 10)).encode() + b"\n")
    result = ledger.run("append", str(path))
    assert result.code == 0, result.err
    assert ledger.stored_events() == 2


def test_a_byte_order_mark_elsewhere_is_named(ledger: LedgerUnderTest, tmp_path: Path) -> None:
    path = tmp_path / "joined.jsonl"
    path.write_bytes(json.dumps(definition()).encode() + b"\n\xef\xbb\xbf"
                     + json.dumps(station("n1", "North", 10)).encode() + b"\n")
    result = ledger.run("append", str(path))
    assert result.code == 2
    assert result.err.splitlines()[0] == ("line 2: a UTF-8 byte order mark (allowed only at "
                                          "the start of the input)")


def test_more_than_a_thousand_rejected_lines_are_all_counted_with_reasons(
    registered: LedgerUnderTest, tmp_path: Path
) -> None:
    bad = [json.dumps(protocol("nowhere", "07T20:00:00", {"a": i})) for i in range(1_500)]
    good = [json.dumps(protocol("n1", "07T20:00:00", {"a": 1}))]
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(good + bad) + "\n")
    rejects = tmp_path / "rejects.jsonl"
    result = registered.run("append", str(path), "--skip-invalid", "--rejects", str(rejects),
                            "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["rejected"] == 1_500 and result.json()["appended"] == 1
    records = [json.loads(r) for r in rejects.read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(2, 1_502))
    assert all(r["reasons"] == ["station: unknown station 'nowhere' in election "
                                "'council-2030'"] for r in records)


# --- ambiguous JSON: a line two conforming parsers could read differently ---------------

PROTOCOL = ('{"type": "ProtocolIssued", "election": "e", "occurred_at": "2030-04-07T20:00:00Z",'
            ' "station": "n1", "reported_by": "board", "ballots_cast": 10, "invalid": 0, '
            '"votes": {"a": 10}')


@pytest.mark.parametrize(("text", "problem"), [
    # Duplicate keys, at the top and nested: which one counts is up to the parser.
    (PROTOCOL + ', "station": "n2"}',
     "line 1: station: ambiguous JSON: the key appears twice in its object (JSON parsers "
     "differ on which one counts)"),
    (PROTOCOL.replace('{"a": 10}', '{"a": 1, "a": 10}') + "}",
     "line 1: votes.a: ambiguous JSON: the key appears twice in its object (JSON parsers "
     "differ on which one counts)"),
    # The same key spelt once with an escape: equal keys once decoded.
    (PROTOCOL.replace('{"a": 10}', '{"a": 1, "\\u0061": 10}') + "}",
     "line 1: votes.a: ambiguous JSON: the key appears twice in its object (JSON parsers "
     "differ on which one counts)"),
    # A fraction with more digits than a double holds: a decimal parser reads another number.
    ('{"type": "ResultAnnounced", "election": "e", "occurred_at": "2030-04-07T20:00:00Z", '
     '"authority": "b", "stage": "final", "scope": "national", "votes": {"a": 1}, '
     '"turnout_pct": 50.00000000000000000001}',
     "line 1: turnout_pct: ambiguous JSON: 50.00000000000000000001 has more digits than a "
     "double holds (a double reads it as 50.0)"),
    # Lone surrogates, in a value and in a key: not characters at all.
    (PROTOCOL.replace('"reported_by": "board"', '"reported_by": "bo\\ud800ard"') + "}",
     "line 1: reported_by: ambiguous JSON: a lone surrogate escape \\ud800 (not a character)"),
    (PROTOCOL.replace('{"a": 10}', '{"\\udc00": 10}') + "}",
     "line 1: votes.\\udc00: ambiguous JSON: a lone surrogate escape \\udc00 (not a character)"),
])
def test_ambiguous_json_is_refused_naming_the_field(text: str, problem: str) -> None:
    line = parse_line(1, text.encode())
    assert line.event is None
    assert str(line.problem) == problem


@pytest.mark.parametrize("text", [
    PROTOCOL + "}",
    PROTOCOL.replace('"board"', '"b\\u00f6ard"') + "}",  # an escape, no duplicate
    PROTOCOL.replace('"board"', '"a:b:c"') + "}",  # colons inside strings
    PROTOCOL.replace('"board"', '"\\ufffe"') + "}",  # a non-character: parsers agree on it
    '{"type": "ResultAnnounced", "election": "e", "occurred_at": "2030-04-07T20:00:00Z", '
    '"authority": "b", "stage": "final", "scope": "national", "votes": {"a": 1}, '
    '"turnout_pct": 0.1}',
    '{"type": "ResultAnnounced", "election": "e", "occurred_at": "2030-04-07T20:00:00Z", '
    '"authority": "b", "stage": "final", "scope": "national", "votes": {"a": 1}, '
    '"turnout_pct": 33.333333333333336}',
])
def test_unambiguous_json_is_accepted(text: str) -> None:
    line = parse_line(1, text.encode())
    assert line.problem is None, line.problem
