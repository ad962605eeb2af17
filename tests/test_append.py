"""Appending: validation against the ledger's state, atomic batches, idempotence."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import msgspec
import psycopg
import pytest

from ledger.domain.events import content_digest, decoder, normalised
from tests.conftest import PG_SERVER, LedgerUnderTest, definition, ev, protocol, station

EVERY_TYPE = [
    definition(),
    station("n1", "North", 1000),
    protocol("n1", "07T20:30:00", {"a": 300, "b": 200, "c": 80, "d": 20}, invalid=10,
             registered=1000, protocol_no="N1-001", document_sha256="ab" * 32, event_id="n1"),
    ev("ProtocolWithheld", "07T21:00:00", station="n1", requested_by="watch", reason="no copies"),
    ev("ResultAnnounced", "08T09:00:00", authority="board", stage="preliminary", scope="national",
       votes={"a": 300, "b": 200, "c": 80, "d": 20}, turnout_pct=61.0, seats={"a": 3, "b": 2}),
    ev("AppealFiled", "08T12:00:00", appeal="x-1", filed_by="watch", stations=["n1"],
       grounds="observers excluded", demand="recount"),
    ev("AppealDecided", "10T12:00:00", appeal="x-1", decision="upheld", remedy="recount",
       stations=["n1"]),
    protocol("n1", "11T16:00:00", {"a": 290, "b": 210, "c": 80, "d": 20}, invalid=10,
             supersedes="n1", event_id="n1-recount"),
]


def test_every_event_type_round_trips(ledger: LedgerUnderTest) -> None:
    ledger.append(*EVERY_TYPE)
    events = ledger.query("history")["events"]
    assert [e["type"] for e in events] == [e["type"] for e in EVERY_TYPE]
    assert [e["position"] for e in events] == sorted({e["position"] for e in events})
    for sent, stored in zip(EVERY_TYPE, events, strict=True):
        expected = normalised(decoder.decode(json.dumps(sent)))
        expected = msgspec.structs.replace(
            expected, event_id=sent.get("event_id") or f"sha256:{content_digest(expected)}"
        )
        assert decoder.decode(json.dumps(stored["event"])) == expected
        assert stored["event_id"] == expected.event_id
        assert stored["recorded_at"].endswith("Z")
    # UTC on the way in: 12:00 at +02:00 is stored as 10:00Z.
    assert events[0]["occurred_at"] == "2030-04-01T10:00:00.000000Z"
    assert ledger.stored_events() == len(EVERY_TYPE)


def test_derived_identity_ignores_key_order_spacing_and_offset(ledger: LedgerUnderTest) -> None:
    ledger.append(definition())
    same_instant = dict(definition(), occurred_at="2030-04-01T10:00:00Z")
    reordered = json.dumps(dict(reversed(list(same_instant.items()))), indent=None)
    result = ledger.append(reordered)
    assert "0 event(s)" in result.out and "1 already recorded" in result.out
    assert ledger.stored_events() == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (ev("StationRegistered", "01T13:00:00", election="nowhere", station="x", region="R",
            registered_voters=1), "line 2: election: unknown election 'nowhere'"),
        (protocol("zz", "07T20:00:00", {"a": 1}), "line 2: station: unknown station 'zz'"),
        (protocol("n1", "07T20:00:00", {"a": 1, "nur-otan": 5}),
         "line 2: votes.nur-otan: unknown choice 'nur-otan'"),
        (ev("AppealDecided", "08T12:00:00", appeal="ghost", decision="upheld", remedy="annul"),
         "line 2: appeal: appeal 'ghost' was never filed"),
        (station("n1", "South", 1000), "line 2: station: station 'n1' is already registered "
         "with different data"),
        (definition(seats=9), "line 2: election: election 'council-2030' is already defined "
         "with different rules"),
        (protocol("n1", "07T20:00:00", {"a": 1}, supersedes="never-seen"),
         "line 2: supersedes: no recorded protocol has event_id 'never-seen'"),
        (dict(protocol("n1", "07T20:00:00", {"a": 5}), votes={"a": -5}),
         "line 2: votes.a: expected an integer >= 0, got -5"),
        (dict(station("n9", "North", 10), turnout=3), "line 2: turnout: unknown field"),
        (dict(station("n9", "North", 10), type="StationOpened"),
         "line 2: type: unknown event type \"StationOpened\""),
        (dict(station("n9", "North", 10), occurred_at="2030-04-01T12:00:00"),
         "line 2: occurred_at: "),
        (dict(station("n9", "North", 10), registered_voters="many"),
         "line 2: registered_voters: expected an integer or null, got a string"),
        (dict(station("n9", "North", 10), registered_voters=10**30),
         "line 2: registered_voters: expected an integer <= 1000000000000"),
        (dict(station("n\x07", "North", 10)), "line 2: station: contains control characters"),
        ("{not json", "line 2: malformed JSON"),
        ('{"type": "StationRegistered", "registered_voters": NaN}', "line 2: malformed JSON"),
    ],
)
def test_a_bad_line_rejects_the_whole_batch(
    registered: LedgerUnderTest, bad: object, message: str
) -> None:
    before = registered.stored_events()
    good = station("n3", "North", 700)
    result = registered.append(good, bad, expect=2)
    assert message in result.err, result.err
    assert "Traceback" not in result.err
    assert registered.stored_events() == before
    # n3 was never registered: history says so (exit 2), as audit does.
    unknown = registered.run("history", "--station", "n3")
    assert (unknown.code, unknown.err) == (2, "ledger: --station: unknown station 'n3'\n")


def test_every_problem_is_reported_once_per_line(registered: LedgerUnderTest) -> None:
    result = registered.append(
        protocol("zz", "07T20:00:00", {"a": 1}), station("ok", "North", 5), "[]", expect=2
    )
    lines = [line for line in result.err.splitlines() if line.startswith("line ")]
    assert lines == [
        "line 1: station: unknown station 'zz' in election 'council-2030'",
        "line 3: expected an object, got a list",
    ]


def test_same_event_id_with_other_content_is_an_error(registered: LedgerUnderTest) -> None:
    registered.append(protocol("n1", "07T20:00:00", {"a": 10}, event_id="p1"))
    result = registered.append(protocol("n1", "07T20:00:00", {"a": 11}, event_id="p1"), expect=2)
    assert "line 1: event_id: 'p1' is already recorded with different content" in result.err


def test_later_lines_may_refer_to_earlier_lines(ledger: LedgerUnderTest) -> None:
    ledger.append(definition(), station("n1", "North", 10),
                  protocol("n1", "07T20:00:00", {"a": 5}, event_id="first"),
                  protocol("n1", "08T20:00:00", {"a": 6}, supersedes="first"))
    assert ledger.stored_events() == 4


def test_control_check_failures_are_recorded_and_flagged(registered: LedgerUnderTest) -> None:
    wrong = protocol("n1", "07T20:00:00", {"a": 10, "b": 5}, invalid=1)
    wrong.update(ballots_cast=20, ballots_issued=15, registered_voters=10)
    result = registered.append(wrong)
    assert "1 flagged" in result.out
    assert "votes + invalid = 16, but ballots_cast = 20" in result.err
    assert registered.stored_events() == 5
    failures = registered.query("audit")["control_failures"]
    assert failures[0]["station"] == "n1"
    assert failures[0]["failures"] == [
        "votes + invalid = 16, but ballots_cast = 20",
        "ballots_cast 20 > ballots_issued 15",
        "ballots_issued 15 > registered_voters 10",
    ]


def test_reappending_a_file_is_a_no_op(registered: LedgerUnderTest) -> None:
    night = [protocol("n1", "07T20:00:00", {"a": 10}), protocol("n2", "07T20:10:00", {"b": 3})]
    first = registered.append(*night)
    again = registered.append(*night)
    assert "appended 2 event(s)" in first.out
    assert "appended 0 event(s)" in again.out and "2 already recorded" in again.out
    assert registered.stored_events() == 6


def test_append_from_stdin_is_idempotent_too(registered: LedgerUnderTest) -> None:
    text = json.dumps(protocol("n1", "07T20:00:00", {"a": 10})) + "\n"
    assert registered.run("append", "-", stdin=text).code == 0
    assert registered.run("append", "-", stdin=text).code == 0
    assert registered.stored_events() == 5


def test_restating_a_definition_is_a_no_op(registered: LedgerUnderTest) -> None:
    restated = dict(station("n1", "North", 1000), occurred_at="2030-04-02T08:00:00+02:00")
    result = registered.append(restated)
    assert "1 already recorded" in result.out
    assert registered.stored_events() == 4


def test_skip_invalid_stores_the_good_lines_and_keeps_the_bad(registered: LedgerUnderTest) -> None:
    rejects = registered.directory / "rejects.jsonl"
    path = registered.directory / "mixed.jsonl"
    path.write_text("\n".join([
        json.dumps(protocol("n1", "07T20:00:00", {"a": 10})),
        json.dumps(protocol("nope", "07T20:00:00", {"a": 10})),
        "{broken",
    ]) + "\n")
    result = registered.run("append", str(path), "--skip-invalid", "--rejects", str(rejects))
    assert result.code == 0, result.err
    assert registered.stored_events() == 5
    kept = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [k["line"] for k in kept] == [2, 3]
    assert kept[0]["reasons"] == ["station: unknown station 'nope' in election 'council-2030'"]
    assert kept[1]["text"] == "{broken"


def test_sqlite_refuses_to_change_or_delete_stored_events(tmp_path: Path, capsys: object) -> None:
    from ledger.cli.main import main

    db = str(tmp_path / "ledger.db")
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps(definition()) + "\n")
    assert main(["append", str(path), "--db", db]) == 0
    with sqlite3.connect(db) as connection:
        for statement in ("UPDATE stored_events SET state = x'00'", "DELETE FROM stored_events",
                          "UPDATE ledger_index SET digest = 'x'", "DELETE FROM ledger_index"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute(statement)
        assert connection.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0] == 1


def test_postgres_refuses_to_change_delete_or_truncate(ledger: LedgerUnderTest) -> None:
    if ledger.backend != "postgres":
        pytest.skip("PostgreSQL's triggers")
    ledger.append(definition())
    schema = ledger.db.rsplit("schema=", 1)[1]
    for statement in ("UPDATE {}.ledger_events SET topic = 'x'", "DELETE FROM {}.ledger_events",
                      "TRUNCATE {}.ledger_events", "UPDATE {}.ledger_index SET digest = 'x'",
                      "DELETE FROM {}.ledger_index", "TRUNCATE {}.ledger_index"):
        with psycopg.connect(PG_SERVER) as connection, pytest.raises(
            psycopg.errors.RaiseException, match="append-only"
        ):
            connection.execute(statement.format(f'"{schema}"'))
    assert ledger.stored_events() == 1


def _cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_a_stopped_postgres_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = _cli("elections", "--db", "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1",
                  cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "cannot use the ledger at postgresql://postgres@127.0.0.1:1/test" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("append", "missing.jsonl"), 2, "missing.jsonl: no such file"),
        (("append", "."), 2, "is a directory"),
        (("tally", "--db", "nowhere/ledger.db"), 2, "directory 'nowhere' does not exist"),
        (("tally", "--db", "mysql://x"), 2, "neither a file path nor a postgresql:// URL"),
        (("tally", "--db", "postgresql://h:notaport/db"), 2, "bad port"),
        (("tally",), 2, "no ledger at ledger.db"),
        (("tally", "--as-of", "yesterday"), 2, "--as-of: 'yesterday' is not an RFC 3339"),
        (("frobnicate",), 2, "invalid choice"),
        (("append", "-", "--rejects", "r.jsonl"), 2, "--rejects goes with --skip-invalid"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], code: int,
                                  message: str) -> None:
    if args == ("tally", "--as-of", "yesterday"):
        (tmp_path / "e.jsonl").write_text(json.dumps(definition()) + "\n")
        assert _cli("append", "e.jsonl", cwd=tmp_path).returncode == 0
    result = _cli(*args, cwd=tmp_path, stdin="")
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_file_that_is_not_a_database_is_a_clean_failure(tmp_path: Path) -> None:
    (tmp_path / "ledger.db").write_text("this is not a database\n" * 100)
    (tmp_path / "e.jsonl").write_text(json.dumps(definition()) + "\n")
    result = _cli("append", "e.jsonl", cwd=tmp_path)
    assert result.returncode == 1
    assert "not a database" in result.stderr and "Traceback" not in result.stderr


def test_stdin_through_a_real_pipe(tmp_path: Path) -> None:
    text = "".join(json.dumps(e) + "\n" for e in EVERY_TYPE)
    first = _cli("append", "-", cwd=tmp_path, stdin=text)
    second = _cli("append", "-", cwd=tmp_path, stdin=text)
    assert first.returncode == second.returncode == 0, first.stderr
    assert f"{len(EVERY_TYPE)} already recorded" in second.stdout


def test_history_shows_each_event_with_the_utc_offset_it_was_written_with(
    registered: LedgerUnderTest,
) -> None:
    """The ledger keeps instants in UTC (equal instants hash and sort alike) and the offset
    beside them: an Almaty protocol reads as written, in Almaty time, in its history."""
    almaty = protocol("n1", "07T20:00:00", {"a": 10}) | {
        "occurred_at": "2030-04-08T00:00:00+06:00"}
    zulu = protocol("n2", "07T20:00:00", {"b": 5}) | {"occurred_at": "2030-04-07T18:00:00Z"}
    newfoundland = protocol("s1", "07T20:00:00", {"c": 7}) | {
        "occurred_at": "2030-04-07T14:30:00.250000-03:30"}
    registered.append(almaty, zulu, newfoundland)
    events = registered.query("history")["events"][-3:]
    assert [(e["station"], e["occurred_at"], e["occurred_at_as_submitted"]) for e in events] == [
        ("n1", "2030-04-07T18:00:00.000000Z", "2030-04-08T00:00:00+06:00"),
        ("n2", "2030-04-07T18:00:00.000000Z", "2030-04-07T18:00:00Z"),
        ("s1", "2030-04-07T18:00:00.250000Z", "2030-04-07T14:30:00.250000-03:30"),
    ]
    # Same instant, other offset: the same fact, so a no-op (the digest is of the UTC form).
    again = almaty | {"occurred_at": "2030-04-07T21:00:00+03:00"}
    assert "1 already recorded" in registered.append(again).out
    assert registered.run("verify").code == 0


def test_a_batch_longer_than_a_chunk_knows_what_its_earlier_chunks_defined(
    ledger: LedgerUnderTest,
) -> None:
    """Lines are planned in chunks of CHUNK_LINES; a station registered in the first chunk
    is known in the last, and a contradicting registration there is still caught."""
    from ledger.store.application import CHUNK_LINES

    stations = [station(f"st-{i}", "North", 100) for i in range(CHUNK_LINES + 10)]
    late = protocol("st-0", "07T20:00:00", {"a": 60, "b": 30}, invalid=5)
    ledger.append(definition(), *stations, late)
    assert ledger.query("tally")["votes"] == {"a": 60, "b": 30, "c": 0, "d": 0}
    assert ledger.query("tally")["stations_total"] == CHUNK_LINES + 10
    contradiction = station("st-1", "South", 100)
    refused = ledger.append(*[station(f"more-{i}", "North", 1) for i in range(CHUNK_LINES)],
                            contradiction, expect=2)
    assert f"line {CHUNK_LINES + 1}: station: station 'st-1' is already registered" in refused.err
