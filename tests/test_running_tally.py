"""The tally as of any moment, answered from running totals, equals a naive fold of the events.

The naive fold below is written from ../shared/DESIGN.md's rules alone (visible events, the effective
protocol, stations in scope) and shares no code with projections/. Nights are appended in
several batches, caught up page by page or rebuilt, with back-dated and late-recorded
protocols, recounts that supersede, stations registered after their protocol's moment, and
districts, so that every path of projections/running.py is taken.
"""

from __future__ import annotations

import io
import itertools
import json
import sqlite3
import tempfile
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.input.reader import read_lines
from ledger.store.application import Ledger
from ledger.store.config import locate
from projections import steps
from projections.apply import catch_up, rebuild
from projections.moment import Moment
from projections.schema import open_read_models
from projections.tally import load_election, tally
from tests.conftest import definition, ev, protocol

STATIONS = {"n1": ("North", "N-a"), "n2": ("North", None), "s1": ("South", "S-a"),
            "s2": ("South", "South")}
# Moments around the edges of the day, hour and minute buckets.
OFFSETS = [0, 1, 59, 60, 61, 3599, 3600, 3601, 86399, 86400, 86401, 90000]
BASE = datetime.fromisoformat("2030-04-07T23:59:00+02:00")


def _moment(offset: int) -> str:
    return (BASE + timedelta(seconds=offset)).isoformat()


@st.composite
def nights(draw: st.DrawFn) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [definition()]
    registered: list[str] = []
    protocols: dict[tuple[str, str], list[str]] = {}  # (station, reporter) -> event ids
    for index in range(draw(st.integers(min_value=1, max_value=30))):
        unregistered = [s for s in STATIONS if s not in registered]
        if unregistered and (not registered or draw(st.integers(0, 3)) == 0):
            name = draw(st.sampled_from(unregistered))
            region, district = STATIONS[name]
            events.append({**ev("StationRegistered", "01T00:00:00", station=name, region=region,
                                registered_voters=draw(st.sampled_from([1000, 1500]))),
                           # sometimes registered (in valid time) after protocols' moments
                           "occurred_at": _moment(draw(st.sampled_from([-10**6, *OFFSETS]))),
                           **({"district": district} if district else {})})
            registered.append(name)
            continue
        where = draw(st.sampled_from(registered))
        votes = {c: draw(st.integers(0, 50)) for c in draw(st.sampled_from(["abcd", "ab", "c"]))}
        by = draw(st.sampled_from(["board", "watch"]))
        earlier = protocols.get((where, by), [])  # a protocol supersedes only its reporter's
        fields: dict[str, Any] = {}
        if earlier and draw(st.booleans()):
            fields["supersedes"] = draw(st.sampled_from(earlier))
        event_id = f"p{index}"
        event = protocol(where, "07T00:00:00", votes, by=by,
                         invalid=draw(st.integers(0, 3)), event_id=event_id, **fields)
        event["occurred_at"] = _moment(draw(st.sampled_from(OFFSETS)))
        events.append(event)
        protocols.setdefault((where, by), []).append(event_id)
    return events


def naive_tally(events: list[dict[str, Any]], recorded: list[str], as_of: str,
                known_at: str | None, reporter: str, scope: str | None) -> dict[str, Any]:
    """../shared/DESIGN.md's preliminary tally, folded over the events in log order."""
    t = datetime.fromisoformat(as_of)
    seen = [(position, e) for position, e in enumerate(events)
            if datetime.fromisoformat(e["occurred_at"]) <= t
            and (known_at is None or recorded[position] <= known_at)]
    stations = {e["station"]: e for _, e in seen if e["type"] == "StationRegistered"}
    in_scope = {s for s, e in stations.items()
                if scope is None or scope in (e["region"], e.get("district"))}
    superseded = {e.get("supersedes") for _, e in seen if e["type"] == "ProtocolIssued"}
    latest: dict[str, tuple[datetime, int, dict[str, Any]]] = {}
    for position, e in seen:
        if (e["type"] != "ProtocolIssued" or e["reported_by"] != reporter
                or e["event_id"] in superseded):
            continue
        key = (datetime.fromisoformat(e["occurred_at"]), position)
        if e["station"] not in latest or latest[e["station"]][:2] < key:
            latest[e["station"]] = (*key, e)
    counted = [e for s, (_, _, e) in latest.items() if s in in_scope]
    votes: dict[str, int] = {}
    for e in counted:
        for choice, n in e["votes"].items():
            votes[choice] = votes.get(choice, 0) + n
    return {
        "votes": {c: votes.get(c, 0) for c in "abcd"},  # every defined choice
        "stations_reporting": len(counted),
        "stations_total": len(in_scope),
        "ballots_cast": sum(e["ballots_cast"] for e in counted),
        "invalid": sum(e["invalid"] for e in counted),
        "registered_voters": sum(stations[e["station"]]["registered_voters"] for e in counted),
    }


FIELDS = ["votes", "stations_reporting", "stations_total", "ballots_cast", "invalid",
          "registered_voters"]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(events=nights(), cuts=st.lists(st.integers(min_value=1, max_value=30), max_size=4),
       questions=st.lists(st.tuples(st.sampled_from([*OFFSETS, -1, 10**6]),
                                    st.sampled_from(["board", "watch"]),
                                    st.sampled_from([None, "North", "South", "N-a", "S-a"]),
                                    st.integers(min_value=0, max_value=5)),
                          min_size=1, max_size=8),
       block_bits=st.sampled_from([0, 1, 2, steps.BLOCK_BITS]))
def test_tally_as_of_any_moment_equals_a_naive_fold(
    events: list[dict[str, Any]], cuts: list[int], questions: list[tuple], block_bits: int
) -> None:
    # Small blocks of ledger time, so that a few dozen events span several of them.
    default, steps.BLOCK_BITS = steps.BLOCK_BITS, block_bits
    try:
        _check_against_the_naive_fold(events, cuts, questions)
    finally:
        steps.BLOCK_BITS = default


def _check_against_the_naive_fold(events: list[dict[str, Any]], cuts: list[int],
                                  questions: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        ledger = Ledger(locate(str(root / "ledger.db")))
        incremental = open_read_models(root / "incremental.db")
        try:
            bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
            for start, stop in itertools.pairwise(bounds):
                text = "".join(json.dumps(e) + "\n" for e in events[start:stop])
                ledger.append(read_lines(io.BytesIO(text.encode())))
                catch_up(incremental, ledger)
            incremental.conn.close()
            rebuild(root / "rebuilt.db", ledger)
        finally:
            ledger.close()
        for models in ("incremental.db", "rebuilt.db"):
            with closing(sqlite3.connect(root / models)) as db:
                recorded = [r for (r,) in db.execute("SELECT recorded_at FROM events ORDER BY position")]
                assert len(recorded) == len(events)  # every line was accepted
                election = load_election(db, None)
                scopes = {e.get(f) for e in events if e["type"] == "StationRegistered"
                          for f in ("region", "district")}
                reporters = {"board"} | {e.get("reported_by") for e in events}
                for offset, reporter, scope, batch in questions:
                    if scope is not None and scope not in scopes:
                        continue  # refused as an unknown region, with or without steps
                    if reporter not in reporters:
                        continue  # refused as an unknown reporter
                    as_of = _moment(offset)
                    # Known-at: present knowledge, or as known when batch k was in, or
                    # just before the first batch (nothing known).
                    known_at = (None if batch >= len(bounds) else
                                "2000-01-01T00:00:00.000000Z" if batch == 0 else
                                recorded[bounds[batch] - 1])
                    moment = Moment(as_of=datetime.fromisoformat(as_of),
                                    known_at=_parse(known_at) if known_at else None)
                    got = tally(db, election, moment, reporter=reporter, scope=scope)
                    expected = naive_tally(events, recorded, as_of, known_at, reporter, scope)
                    assert {f: got[f] for f in FIELDS} == expected, (models, as_of, known_at,
                                                                      reporter, scope)


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_final_tallies_from_the_steps_equal_the_full_query(tmp_path: Path) -> None:
    """A final tally leaves out contested, annulled and awaiting-recount stations: the steps
    less those stations' own steps must give what the full effective-protocol query gives
    (written before the steps, and sharing no code with them), at every moment of the
    bundled night, on present knowledge and as known after each batch."""
    from importlib.resources import files

    from projections import running

    night = files("ledger").joinpath("samples/council-2030.jsonl").read_bytes()
    # Its appeals name stations with several protocols; one more appeal, against n1, whose
    # one protocol per reporter is a step, contests it and then annuls it.
    lines = night.splitlines(keepends=True) + [(json.dumps(e) + "\n").encode() for e in (
        ev("AppealFiled", "08T12:00:00", appeal="z", filed_by="c", stations=["n1"],
           grounds="ballot stuffing", demand="annul"),
        ev("AppealDecided", "09T12:00:00", appeal="z", decision="upheld", remedy="annul"),
    )]
    ledger = Ledger(locate(str(tmp_path / "ledger.db")))
    try:
        for start, stop in itertools.pairwise([0, 8, 13, 15, 17, len(lines)]):
            ledger.append(read_lines(io.BytesIO(b"".join(lines[start:stop]))))
        rebuild(tmp_path / "models.db", ledger)
    finally:
        ledger.close()
    stamps = sorted({json.loads(line)["occurred_at"] for line in lines})
    moments = [offset(stamp, seconds) for stamp in stamps for seconds in (-1, 0, 1)]
    with closing(sqlite3.connect(tmp_path / "models.db")) as db:
        election = load_election(db, None)
        known = [None, *(k for (k,) in db.execute(
            "SELECT recorded_at FROM tally_batches ORDER BY position"))][:-1]
        excluded_somewhere = False
        for as_of, known_at, reporter in itertools.product(moments, known, ["board", "watch"]):
            moment = Moment(as_of=datetime.fromisoformat(as_of),
                            known_at=_parse(known_at) if known_at else None)
            by_steps = tally(db, election, moment, stage="final", reporter=reporter)
            available, running.available = running.available, lambda db: False
            try:
                by_query = tally(db, election, moment, stage="final", reporter=reporter)
            finally:
                running.available = available
            assert by_steps == by_query, (as_of, known_at, reporter)
            excluded_somewhere |= bool(by_query["contested"] or by_query["annulled"]
                                       or by_query["awaiting_recount"])
    assert excluded_somewhere  # the night's appeals left stations out at some moments


def offset(stamp: str, seconds: int) -> str:
    return (datetime.fromisoformat(stamp) + timedelta(seconds=seconds)).isoformat()
