"""Tallies, seats and audit views on a small night whose answers were worked out by hand.

Stations: n1 (North, 1000 voters), n2 (North, 500), s1 (South, 1500). Authority: board.
5 seats by D'Hondt, threshold 10% of valid votes.
"""

from __future__ import annotations

import pytest

from tests.conftest import LATER, NIGHT, LedgerUnderTest, T, ev, protocol


@pytest.mark.parametrize(
    ("args", "votes", "reporting"),
    [
        (["--as-of", T("07T20:15:00")], {"a": 400, "b": 300, "c": 100, "d": 50}, 1),
        (["--as-of", T("07T21:15:00")], {"a": 500, "b": 500, "c": 150, "d": 70}, 2),
        (["--as-of", T("07T21:45:00")], {"a": 510, "b": 490, "c": 150, "d": 70}, 2),
        (["--as-of", T("07T23:00:00")], {"a": 1110, "b": 790, "c": 350, "d": 170}, 3),
        ([], {"a": 1060, "b": 840, "c": 350, "d": 170}, 3),
        (["--reporter", "watch"], {"a": 380, "b": 320, "c": 100, "d": 50}, 1),
        (["--scope", "South"], {"a": 550, "b": 350, "c": 200, "d": 100}, 1),
        (["--scope", "North", "--as-of", T("07T21:15:00")],
         {"a": 500, "b": 500, "c": 150, "d": 70}, 2),
    ],
)
def test_preliminary_tallies(night: tuple[LedgerUnderTest, str], args: list[str],
                             votes: dict[str, int], reporting: int) -> None:
    ledger, _ = night
    got = ledger.query("tally", *args)
    assert got["votes"] == votes
    assert got["stations_reporting"] == reporting


def test_the_night_complete_in_detail(night: tuple[LedgerUnderTest, str]) -> None:
    got = night[0].query("tally", "--as-of", T("07T23:00:00"))
    assert got["stations_total"] == 3
    assert got["valid_votes"] == 2420
    assert got["invalid"] == 35
    assert got["ballots_cast"] == 2455
    assert got["turnout_pct"] == 81.83  # 2455 / 3000
    assert got["shares"] == {"a": 45.87, "b": 32.64, "c": 14.46, "d": 7.02}
    assert got["passing"] == ["a", "b", "c"]  # d has 170 < 242 (10% of 2420)
    assert got["status"] == "complete"
    assert got["names"] == {"a": "Party A", "b": "Party B", "c": "Party C", "d": "Party D"}


def test_first_protocol_only_is_partial(night: tuple[LedgerUnderTest, str]) -> None:
    got = night[0].query("tally", "--as-of", T("07T20:15:00"))
    assert (got["turnout_pct"], got["status"], got["invalid"]) == (86.0, "partial", 10)


@pytest.mark.parametrize(
    ("as_of", "votes", "contested", "annulled", "awaiting", "status"),
    [
        (T("08T12:00:00"), {"a": 400, "b": 300, "c": 100, "d": 50}, ["n2", "s1"], [], [],
         "contested"),
        (T("09T12:00:00"), {"a": 400, "b": 300, "c": 100, "d": 50}, ["s1"], ["n2"], [],
         "contested"),
        (T("10T12:00:00"), {"a": 400, "b": 300, "c": 100, "d": 50}, [], ["n2"], ["s1"],
         "contested"),
        (T("11T12:00:00"), {"a": 950, "b": 650, "c": 300, "d": 150}, [], ["n2"], [], "partial"),
        (None, {"a": 950, "b": 650, "c": 300, "d": 150}, [], ["n2"], [], "certified"),
    ],
)
def test_final_tallies_follow_the_appeals(
    night: tuple[LedgerUnderTest, str], as_of: str | None, votes: dict[str, int],
    contested: list[str], annulled: list[str], awaiting: list[str], status: str,
) -> None:
    args = ["--stage", "final", *(["--as-of", as_of] if as_of else [])]
    got = night[0].query("tally", *args)
    assert got["votes"] == votes
    assert (got["contested"], got["annulled"], got["awaiting_recount"]) == (
        contested, annulled, awaiting)
    assert got["status"] == status
    assert got["certified"] is (as_of is None)


def test_known_at_hides_what_the_ledger_had_not_yet_recorded(
    night: tuple[LedgerUnderTest, str],
) -> None:
    ledger, between = night
    got = ledger.query("tally", "--known-at", between)
    assert got["votes"] == {"a": 1110, "b": 790, "c": 350, "d": 170}
    final = ledger.query("tally", "--stage", "final", "--known-at", between)
    assert final["contested"] == [] and final["certified"] is False
    before = ledger.query("tally", "--known-at", "2020-01-01T00:00:00Z")
    assert (before["votes"], before["stations_total"]) == (dict.fromkeys("abcd", 0), 0)


def test_seats_by_dhondt_with_the_threshold(night: tuple[LedgerUnderTest, str]) -> None:
    ledger, _ = night
    # a 1060 530 353.3 | b 840 420 | c 350 just misses the fifth seat; d under 10%.
    assert ledger.query("seats")["seats"] == {"a": 3, "b": 2, "c": 0, "d": 0}
    final = ledger.query("seats", "--stage", "final")
    assert final["seats"] == {"a": 3, "b": 2, "c": 0, "d": 0}
    assert final["threshold_votes"] == 205.0 and final["passing"] == ["a", "b", "c"]


def test_audit_finds_the_conflict_and_the_announcement_that_does_not_add_up(
    night: tuple[LedgerUnderTest, str],
) -> None:
    audit = night[0].query("audit")
    assert [(c["station"], c["field"], c["authority"], c["reported"]) for c in audit["conflicts"]
            ] == [("n1", "votes.a", 400, 380), ("n1", "votes.b", 300, 320)]
    preliminary, final = audit["discrepancies"]
    assert (preliminary["matches"], preliminary["difference"]) == (False, {"a": 90})
    assert (final["matches"], final["difference"]) == (True, {})
    assert [a["status"] for a in audit["appeals"]] == ["upheld", "upheld"]


def test_a_station_timeline(night: tuple[LedgerUnderTest, str]) -> None:
    audit = night[0].query("audit", "--station", "s1")
    assert [e["type"] for e in audit["timeline"]] == [
        "StationRegistered", "ProtocolWithheld", "ProtocolIssued", "ProtocolIssued"]
    assert audit["withheld"] == [{
        "station": "s1", "requested_by": "watch", "withheld_at": "2030-04-07T19:40:00.000000Z",
        "reason": "come back tomorrow", "copy_received_at": None, "signed_by": None}]
    assert [a["appeal"] for a in audit["appeals"]] == ["x"]


def test_withheld_and_appeals_views(night: tuple[LedgerUnderTest, str]) -> None:
    ledger, _ = night
    withheld = ledger.query("withheld")
    assert [w["station"] for w in withheld["withheld"]] == ["s1"]
    assert withheld["comparison"][0]["stations_withheld"] == 1
    assert withheld["comparison"][0]["choice"] is None  # "watch" is not on the ballot
    appeals = ledger.query("appeals")["appeals"]
    assert [(a["appeal"], a["status"], a["remedy"], a["remedy_stations"]) for a in appeals] == [
        ("x", "upheld", "recount", ["s1"]), ("y", "upheld", "annul", None)]
    pending = ledger.query("appeals", "--as-of", T("08T12:00:00"))["appeals"]
    assert [a["status"] for a in pending] == ["pending", "pending"]


def test_withheld_compares_the_requesting_partys_share(registered: LedgerUnderTest) -> None:
    registered.append(
        protocol("n1", "07T20:00:00", {"a": 100, "b": 900, "c": 0, "d": 0}),
        protocol("n2", "07T20:00:00", {"a": 300, "b": 100, "c": 0, "d": 0}),
        protocol("s1", "07T20:00:00", {"a": 10, "b": 90, "c": 0, "d": 0}),
        protocol("n1", "07T20:10:00", {"a": 100, "b": 900, "c": 0, "d": 0}, by="b"),
        ev("ProtocolWithheld", "07T20:20:00", station="n2", requested_by="b"),
        ev("ProtocolWithheld", "07T20:20:00", station="s1", requested_by="b"),
    )
    (row,) = registered.query("withheld")["comparison"]
    # Withheld: n2 + s1 -> b has 190 of 500 = 38%; copied: n1 -> 900 of 1000 = 90%.
    assert row["choice"] == "b"
    assert (row["stations_withheld"], row["official_share_where_withheld_pct"]) == (2, 38.0)
    assert (row["stations_copied"], row["official_share_where_copied_pct"]) == (1, 90.0)
    assert row["own_count_share_where_copied_pct"] == 90.0
    assert row["gap_pct_points"] == -52.0


def test_history_and_elections(night: tuple[LedgerUnderTest, str]) -> None:
    ledger, _ = night
    assert ledger.query("elections") == {"elections": [{"id": "council-2030",
                                                         "name": "Council 2030"}]}
    events = ledger.query("history", "--station", "n2")["events"]
    assert [e["event_id"] for e in events][1:] == ["n2-b", "n2-b2"]
    assert len(ledger.query("history")["events"]) == 4 + len(NIGHT) + len(LATER)


def test_table_and_csv_formats(night: tuple[LedgerUnderTest, str]) -> None:
    ledger, _ = night
    table = ledger.run("tally")
    assert table.code == 0 and "3/3 stations" in table.out and "1060" in table.out
    csv = ledger.run("tally", "--format", "csv")
    assert csv.out.splitlines()[0] == "choice,name,votes,share_pct,passes"
    assert csv.out.splitlines()[1] == "a,Party A,1060,43.8,True"


def test_an_unknown_election_region_or_station_is_bad_input(
    night: tuple[LedgerUnderTest, str],
) -> None:
    ledger, _ = night
    for args, message in [
        (("tally", "--election", "nope"), "unknown election 'nope'"),
        (("tally", "--scope", "West"), "no station of 'council-2030' is in region 'West'"),
        (("audit", "--station", "zz"), "unknown station 'zz'"),
        (("tally", "--as-of", "2030-04-07T23:00:00"), "has no UTC offset"),
    ]:
        result = ledger.run(*args)
        assert result.code == 2 and message in result.err, (args, result.err)


def test_replay_rebuilds_the_same_answers(night: tuple[LedgerUnderTest, str]) -> None:
    ledger, _ = night
    before = ledger.query("tally", "--stage", "final", "--as-of", T("09T12:00:00"))
    result = ledger.run("replay")
    assert result.code == 0 and "rebuilt the read models from 17 event(s)" in result.out
    assert ledger.query("tally", "--stage", "final", "--as-of", T("09T12:00:00")) == before
