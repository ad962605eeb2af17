"""Who has reported what in an election, and when its night began and ended.

A reporter is anyone the log names as acting (docs/events.md, "the acting reporter"): the
authority (protocols, announcements, appeal decisions), parties and observer groups
(protocol copies, withheld requests, appeals), and whoever holds a registered key. A page
or a journalist asks this instead of guessing reporters and the night's span from whatever
part of the log it happened to read.
"""

from __future__ import annotations

from typing import Any

from projections.audit import choice_of
from projections.moment import Moment, visible
from projections.tally import Election

# What each reporter is counted for: (the key in the answer, the table, its acting-reporter
# column). Decisions have no column: the election's authority makes them.
REPORTS = (
    ("protocols", "protocols", "reported_by"),
    ("withheld_requests", "withheld", "requested_by"),
    ("appeals", "appeals", "filed_by"),
    ("announcements", "announcements", "authority"),
)
# A group of history rows: how many, and their first and last stamps on both axes.
SPAN = "COUNT(*), MIN(occurred_at), MAX(occurred_at), MIN(recorded_at), MAX(recorded_at)"


def role(election: Election, reporter: str) -> str:
    """``authority`` (the election's official reporter), ``party`` (a reporter that stands
    for a choice on the ballot) or ``observer`` (anyone else)."""
    if reporter == election.authority:
        return "authority"
    return "party" if choice_of(election, reporter) is not None else "observer"


def span(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Count and first and last stamps on both axes of rows of (count, first occurred, last
    occurred, first recorded, last recorded); stamps are None when there is no row."""
    rows = [r for r in rows if r[0]]
    if not rows:
        return {"count": 0, "first_occurred_at": None, "last_occurred_at": None,
                "first_recorded_at": None, "last_recorded_at": None}
    return {"count": sum(r[0] for r in rows),
            "first_occurred_at": min(r[1] for r in rows),
            "last_occurred_at": max(r[2] for r in rows),
            "first_recorded_at": min(r[3] for r in rows),
            "last_recorded_at": max(r[4] for r in rows)}


def reporters(db: Any, election: Election, moment: Moment) -> dict[str, Any]:
    """Every reporter of ``election`` visible at ``moment`` with what it reported, and the
    span of the election's events and of its protocols on both time axes."""
    params = {"election": election.id, **moment.bounds()}
    counts: dict[str, dict[str, int]] = {election.authority: {}}
    spans: dict[str, list[tuple[Any, ...]]] = {}
    protocols: list[tuple[Any, ...]] = []
    for key, table, column in REPORTS:
        for reporter, *row in db.execute(
            f"SELECT {column}, {SPAN} FROM {table} WHERE election = :election AND {visible()} "
            f"GROUP BY {column}", params,
        ):
            counts.setdefault(reporter, {})[key] = row[0]
            spans.setdefault(reporter, []).append(tuple(row))
            if table == "protocols":
                protocols.append(tuple(row))
    decided = db.execute(f"SELECT {SPAN} FROM decisions WHERE election = :election "
                         f"AND {visible()}", params).fetchone()
    counts[election.authority]["decisions"] = decided[0]
    spans.setdefault(election.authority, []).append(tuple(decided))
    stations = dict(db.execute(
        "SELECT reported_by, COUNT(DISTINCT station) FROM protocols "
        f"WHERE election = :election AND {visible()} GROUP BY reported_by", params).fetchall())
    names: dict[str, str] = {}
    keys: dict[str, int] = {}
    # With MAX(position), SQLite takes the bare column (name) from the latest registration.
    for reporter, name, count, _ in db.execute(
        "SELECT reporter, name, COUNT(*), MAX(position) FROM reporters "
        f"WHERE election = :election AND {visible()} GROUP BY reporter", params,
    ):
        counts.setdefault(reporter, {})
        names[reporter], keys[reporter] = name, count
    revoked = dict(db.execute(
        "SELECT reporter, COUNT(*) FROM revocations "
        f"WHERE election = :election AND {visible()} GROUP BY reporter", params).fetchall())
    listed = [election.authority, *sorted(counts.keys() - {election.authority})]
    return {
        "election": election.id,
        **moment.describe(),
        "authority": election.authority,
        "reporters": [
            {"reporter": reporter, "name": names.get(reporter), "role": role(election, reporter),
             "choice": choice_of(election, reporter),
             **{key: counts[reporter].get(key, 0) for key, _, _ in REPORTS},
             "stations": stations.get(reporter, 0),
             "decisions": counts[reporter].get("decisions", 0),
             "keys_registered": keys.get(reporter, 0),
             "keys_revoked": revoked.get(reporter, 0),
             "first_reported_at": reported["first_occurred_at"],
             "last_reported_at": reported["last_occurred_at"]}
            for reporter in listed for reported in [span(spans.get(reporter, []))]
        ],
        "events": span([db.execute(f"SELECT {SPAN} FROM events WHERE election = :election "
                                   f"AND {visible()}", params).fetchone()]),
        "protocols": span(protocols),
    }
