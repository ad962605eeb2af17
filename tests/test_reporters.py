"""`ledger reporters`: who reported what in an election, and the span of its events and
protocols on both time axes, on the hand-built night of conftest (figures counted by hand
from NIGHT and LATER, not by the code under test)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import LedgerUnderTest
from tests.serving import Reporter

# Every stamp as the read models write it: UTC, microseconds. The night is written at +02:00.
T = "2030-04-{}.000000Z".format


@pytest.fixture
def backend() -> str:
    """The answer comes from the SQLite read models whatever store holds the log."""
    return "sqlite"


def by_reporter(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["reporter"]: r for r in answer["reporters"]}


def test_every_reporter_with_its_counts_and_the_night_on_both_axes(
        night: tuple[LedgerUnderTest, str]) -> None:
    ledger, _ = night
    press = Reporter("press")
    ledger.append(press.registration("council-2030"))
    answer = ledger.query("reporters")
    assert answer["authority"] == "board" and answer["as_of"] is None
    # The authority first, then by id: a registered key counts as a reporter, with nothing
    # reported yet.
    assert [r["reporter"] for r in answer["reporters"]] == ["board", "c", "press", "watch"]
    found = by_reporter(answer)
    assert found["board"] == {
        "reporter": "board", "name": None, "role": "authority", "choice": None,
        # n1-b, n2-b, n2-b2, s1-b and the recount s1-r
        "protocols": 5, "stations": 3, "withheld_requests": 0, "appeals": 0,
        "announcements": 2, "decisions": 2, "keys_registered": 0, "keys_revoked": 0,
        "first_reported_at": T("07T18:00:00"), "last_reported_at": T("12T08:00:00"),
    }
    assert found["watch"] == {
        "reporter": "watch", "name": None, "role": "observer", "choice": None,
        "protocols": 1, "stations": 1, "withheld_requests": 1, "appeals": 1,
        "announcements": 0, "decisions": 0, "keys_registered": 0, "keys_revoked": 0,
        "first_reported_at": T("07T18:30:00"), "last_reported_at": T("08T08:00:00"),
    }
    # "c" is a choice on the ballot: its appeal makes it a reporter, as a party.
    assert found["c"]["role"] == "party" and found["c"]["choice"] == "c"
    assert (found["c"]["appeals"], found["c"]["protocols"]) == (1, 0)
    assert found["c"]["first_reported_at"] == found["c"]["last_reported_at"] == T("08T09:00:00")
    assert found["press"]["name"] == "PRESS" and found["press"]["keys_registered"] == 1
    assert found["press"]["first_reported_at"] is None
    # 1 definition + 3 stations + 6 of the night + 7 later + 1 key registration (dated the 1st).
    events = answer["events"]
    assert events["count"] == 18
    assert (events["first_occurred_at"], events["last_occurred_at"]) == (T("01T10:00:00"),
                                                                       T("12T08:00:00"))
    assert events["first_recorded_at"] <= events["last_recorded_at"]
    protocols = answer["protocols"]
    assert protocols["count"] == 6
    assert (protocols["first_occurred_at"], protocols["last_occurred_at"]) == (T("07T18:00:00"),
                                                                             T("11T08:00:00"))
    assert events["first_recorded_at"] < protocols["first_recorded_at"]
    assert protocols["last_recorded_at"] < events["last_recorded_at"]  # the key came last


def test_as_of_and_known_at_bound_what_is_listed(night: tuple[LedgerUnderTest, str]) -> None:
    ledger, between = night
    # 21:45 on the night: after the refusal (21:40), before s1's protocol (22:00).
    found = by_reporter(ledger.query("reporters", "--as-of", "2030-04-07T21:45:00+02:00"))
    assert list(found) == ["board", "watch"]
    assert (found["board"]["protocols"], found["board"]["stations"]) == (3, 2)
    assert (found["watch"]["protocols"], found["watch"]["withheld_requests"],
            found["watch"]["appeals"]) == (1, 1, 0)
    # Known at the moment between the two batches: nothing of LATER.
    answer = ledger.query("reporters", "--known-at", between)
    found = by_reporter(answer)
    assert list(found) == ["board", "watch"]
    assert (found["board"]["protocols"], found["board"]["announcements"],
            found["board"]["decisions"]) == (4, 0, 0)
    assert answer["events"]["count"] == 10
    assert answer["protocols"]["last_occurred_at"] == T("07T20:00:00")
    # Before the night: the authority alone, nothing reported, no protocol span.
    answer = ledger.query("reporters", "--as-of", "2030-04-02T00:00:00+02:00")
    assert [r["reporter"] for r in answer["reporters"]] == ["board"]
    assert answer["protocols"] == {"count": 0, "first_occurred_at": None, "last_occurred_at": None,
                                   "first_recorded_at": None, "last_recorded_at": None}


def test_the_table_and_bad_questions(night: tuple[LedgerUnderTest, str]) -> None:
    ledger, _ = night
    shown = ledger.run("reporters")
    assert shown.code == 0
    assert "6 protocols occurred 2030-04-07T18:00:00.000000Z to 2030-04-11T08:00:00" in shown.out
    assert "watch     observer" in shown.out
    unknown = ledger.run("reporters", "--election", "nope")
    assert unknown.code == 2 and "unknown election 'nope'" in unknown.err
    bad = ledger.run("reporters", "--as-of", "yesterday")
    assert bad.code == 2 and "--as-of" in bad.err
