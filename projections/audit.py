"""The audit views: who reported what and when, where the figures disagree, what was withheld."""

from __future__ import annotations

import json
from typing import Any

from projections.moment import Moment
from projections.tally import Election, load_election, tally

VISIBLE = "election = :e AND occurred_at <= :t AND recorded_at <= :k"

# The effective protocol of every (station, reporter) pair: as in the tally, for all reporters.
EFFECTIVE_ALL = f"""
WITH superseded AS (
    SELECT supersedes FROM protocols WHERE {VISIBLE} AND supersedes IS NOT NULL
),
ranked AS (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY station, reported_by ORDER BY occurred_at DESC, position DESC
    ) AS recency
    FROM protocols
    WHERE {VISIBLE} AND event_id NOT IN (SELECT supersedes FROM superseded)
      AND (:station IS NULL OR station = :station)
)
SELECT * FROM ranked WHERE recency = 1 ORDER BY station, reported_by
"""


def _params(election: Election, moment: Moment, station: str | None = None) -> dict[str, Any]:
    return {"e": election.id, "t": moment.t, "k": moment.k, "station": station}


def require_station(db: Any, station: str, election: str | None) -> None:
    """The one rule for ``--station``, in every command: it must name a registered station
    (of ``election``, when one is given), else the question is bad input."""
    from projections.tally import QueryError

    if not db.execute(
        "SELECT 1 FROM stations WHERE station = :s AND (:e IS NULL OR election = :e) LIMIT 1",
        {"s": station, "e": election},
    ).fetchone():
        where = f" in {election!r}" if election is not None else ""
        raise QueryError(f"--station: unknown station {station!r}{where}")


def history(
    db: Any, moment: Moment, *, election: str | None = None, station: str | None = None
) -> list[dict[str, Any]]:
    """Every visible event in log order, optionally of one election or station."""
    if station is not None:
        require_station(db, station, election)
    rows = db.execute(
        "SELECT position, recorded_at, occurred_at, type, election, station, event_id, payload "
        "FROM events WHERE occurred_at <= :t AND recorded_at <= :k "
        "AND (:e IS NULL OR election = :e) AND (:station IS NULL OR station = :station) "
        "ORDER BY position",
        {"t": moment.t, "k": moment.k, "e": election, "station": station},
    )
    return [
        {"position": r[0], "recorded_at": r[1], "occurred_at": r[2], "type": r[3],
         "election": r[4], "station": r[5], "event_id": r[6], "event": json.loads(r[7])}
        for r in rows
    ]


def audit(
    db: Any, moment: Moment, *, election: str | None = None, station: str | None = None
) -> dict[str, Any]:
    chosen = load_election(db, election)
    result: dict[str, Any] = {"election": chosen.id, "station": station, **moment.describe()}
    if station is not None:
        require_station(db, station, chosen.id)
        result["timeline"] = [
            {k: e[k] for k in ("position", "occurred_at", "recorded_at", "type", "event_id")}
            | {"summary": _summary(e["event"])}
            for e in history(db, moment, election=chosen.id, station=station)
        ]
    result["conflicts"] = conflicts(db, chosen, moment, station)
    result["control_failures"] = control_failures(db, chosen, moment, station)
    result["withheld"] = withheld_protocols(db, chosen, moment, station)
    result["appeals"] = [
        a for a in appeals_of(db, chosen, moment)
        if station is None or station in a["stations"] or station in (a["remedy_stations"] or [])
    ]
    if station is None:
        result["discrepancies"] = discrepancies(db, chosen, moment)
    return result


def conflicts(
    db: Any, election: Election, moment: Moment, station: str | None = None
) -> list[dict[str, Any]]:
    """Field-by-field differences between each reporter's protocol and the authority's."""
    effective = _effective_protocols(db, election, moment, station)
    found = []
    for station_id, by_reporter in effective.items():
        official = by_reporter.get(election.authority)
        if official is None:
            continue
        for reporter, copy in sorted(by_reporter.items()):
            if reporter == election.authority:
                continue
            for field, theirs, ours in _differences(official, copy):
                found.append({"station": station_id, "reporter": reporter, "field": field,
                              "authority": theirs, "reported": ours,
                              "authority_event": official["event_id"],
                              "reported_event": copy["event_id"]})
    return found


def _differences(official: dict[str, Any], copy: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    fields = ("registered_voters", "ballots_issued", "ballots_cast", "invalid")
    out = [(f, official[f], copy[f]) for f in fields
           if official[f] != copy[f] and None not in (official[f], copy[f])]
    choices = list(dict.fromkeys([*official["votes"], *copy["votes"]]))
    out += [(f"votes.{c}", official["votes"].get(c), copy["votes"].get(c)) for c in choices
            if official["votes"].get(c) != copy["votes"].get(c)]
    return out


def _effective_protocols(
    db: Any, election: Election, moment: Moment, station: str | None
) -> dict[str, dict[str, dict[str, Any]]]:
    cursor = db.execute(EFFECTIVE_ALL, _params(election, moment, station))
    columns = [d[0] for d in cursor.description]
    rows = [dict(zip(columns, r, strict=True)) for r in cursor.fetchall()]
    by_station: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        row["votes"] = json.loads(row["votes"])
        by_station.setdefault(row["station"], {})[row["reported_by"]] = row
    return by_station


def control_failures(
    db: Any, election: Election, moment: Moment, station: str | None = None
) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT station, reported_by, event_id, occurred_at, control_failures FROM protocols "
        f"WHERE {VISIBLE} AND control_failures IS NOT NULL "
        "AND (:station IS NULL OR station = :station) ORDER BY position",
        _params(election, moment, station),
    )
    return [
        {"station": r[0], "reporter": r[1], "event_id": r[2], "occurred_at": r[3],
         "failures": json.loads(r[4])}
        for r in rows
    ]


def withheld_protocols(
    db: Any, election: Election, moment: Moment, station: str | None = None
) -> list[dict[str, Any]]:
    """Each refusal, and the first copy the requester got for that station afterwards."""
    rows = db.execute(
        f"""
        SELECT w.station, w.requested_by, w.occurred_at, w.reason,
               (SELECT MIN(p.occurred_at) FROM protocols p
                WHERE p.election = w.election AND p.station = w.station
                  AND p.reported_by = w.requested_by AND p.occurred_at >= w.occurred_at
                  AND p.occurred_at <= :t AND p.recorded_at <= :k) AS copy_received_at
        FROM withheld w
        WHERE w.{VISIBLE.replace(' AND ', ' AND w.')}
          AND (:station IS NULL OR w.station = :station)
        ORDER BY w.position
        """,
        _params(election, moment, station),
    )
    return [
        {"station": r[0], "requested_by": r[1], "withheld_at": r[2], "reason": r[3],
         "copy_received_at": r[4]}
        for r in rows
    ]


def withheld(db: Any, moment: Moment, *, election: str | None = None) -> dict[str, Any]:
    """Withheld protocols, and the requester's official share where copies were refused
    versus where they were given: the accusation "they refused where we did well", made
    measurable."""
    chosen = load_election(db, election)
    refusals = withheld_protocols(db, chosen, moment)
    comparison = [
        _compare(db, chosen, moment, requester)
        for requester in sorted({r["requested_by"] for r in refusals})
    ]
    return {"election": chosen.id, **moment.describe(), "comparison": comparison,
            "withheld": refusals}


def _choice_of(election: Election, requester: str) -> str | None:
    for choice, _, party in election.choices:
        if requester in (choice, party):
            return choice
    return None


def _compare(db: Any, election: Election, moment: Moment, requester: str) -> dict[str, Any]:
    effective = _effective_protocols(db, election, moment, None)
    refused = {
        r[0] for r in db.execute(
            f"SELECT station FROM withheld WHERE {VISIBLE} AND requested_by = :who",
            {**_params(election, moment), "who": requester},
        )
    }
    copied = {s for s, by in effective.items() if requester in by} - refused
    choice = _choice_of(election, requester)

    def share(stations: set[str], reporter: str) -> tuple[int, float | None]:
        counted = [effective[s][reporter] for s in stations if reporter in effective.get(s, {})]
        valid = sum(sum(p["votes"].values()) for p in counted)
        mine = sum(p["votes"].get(choice, 0) for p in counted) if choice else 0
        return len(counted), (round(100 * mine / valid, 2) if valid and choice else None)

    n_refused, official_refused = share(refused, election.authority)
    n_copied, official_copied = share(copied, election.authority)
    _, own_copied = share(copied, requester)
    return {
        "requested_by": requester,
        "choice": choice,
        "stations_withheld": len(refused),
        "withheld_with_official_protocol": n_refused,
        "official_share_where_withheld_pct": official_refused,
        "stations_copied": len(copied),
        "copied_with_official_protocol": n_copied,
        "official_share_where_copied_pct": official_copied,
        "own_count_share_where_copied_pct": own_copied,
        "gap_pct_points": (round(official_refused - official_copied, 2)
                           if None not in (official_refused, official_copied) else None),
    }


def discrepancies(db: Any, election: Election, moment: Moment) -> list[dict[str, Any]]:
    """Every visible announcement against the tally computed from protocols at that moment."""
    from projections.moment import Moment as At
    from projections.moment import parse_time

    found = []
    for position, authority, stage, scope, occurred, votes_json in db.execute(
        f"SELECT position, authority, stage, scope, occurred_at, votes FROM announcements "
        f"WHERE {VISIBLE} ORDER BY position",
        _params(election, moment),
    ).fetchall():
        announced = json.loads(votes_json)
        at = At(as_of=parse_time(occurred, "occurred_at"), known_at=moment.known_at)
        region = None if scope == "national" else scope
        try:
            computed = tally(db, election, at, stage=stage, reporter=authority, scope=region)
        except ValueError:
            computed = {"votes": {}, "stations_reporting": 0}
        choices = list(dict.fromkeys([*announced, *computed["votes"]]))
        difference = {c: announced.get(c, 0) - computed["votes"].get(c, 0) for c in choices
                      if announced.get(c, 0) != computed["votes"].get(c, 0)}
        found.append({
            "position": position, "authority": authority, "stage": stage, "scope": scope,
            "announced_at": occurred, "announced_total": sum(announced.values()),
            "computed_total": sum(computed["votes"].values()),
            "stations_reporting": computed["stations_reporting"],
            "matches": not difference, "difference": difference,
        })
    return found


def appeals_of(db: Any, election: Election, moment: Moment) -> list[dict[str, Any]]:
    params = _params(election, moment)
    decided: dict[str, tuple[Any, ...]] = {}
    for row in db.execute(
        f"SELECT appeal, decision, remedy, stations, occurred_at FROM decisions WHERE {VISIBLE} "
        "ORDER BY occurred_at, position", params,
    ):
        decided[row[0]] = row
    found = []
    for appeal, filed_by, grounds, demand, stations, occurred in db.execute(
        f"SELECT appeal, filed_by, grounds, demand, stations, occurred_at FROM appeals "
        f"WHERE {VISIBLE} ORDER BY position", params,
    ):
        decision = decided.get(appeal)
        found.append({
            "appeal": appeal, "filed_by": filed_by, "filed_at": occurred, "demand": demand,
            "stations": json.loads(stations), "grounds": grounds,
            "status": decision[1] if decision else "pending",
            "decided_at": decision[4] if decision else None,
            "remedy": decision[2] if decision else None,
            "remedy_stations": json.loads(decision[3]) if decision and decision[3] else None,
        })
    return found


def appeals(db: Any, moment: Moment, *, election: str | None = None) -> list[dict[str, Any]]:
    return appeals_of(db, load_election(db, election), moment)


def _summary(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind == "ProtocolIssued":
        text = (f"{event['reported_by']}: cast {event['ballots_cast']}, invalid "
                f"{event['invalid']}, votes {json.dumps(event['votes'])}")
        return text + (f", supersedes {event['supersedes']}" if event.get("supersedes") else "")
    if kind == "ProtocolWithheld":
        return f"withheld from {event['requested_by']}: {event.get('reason') or ''}".rstrip(": ")
    if kind == "StationRegistered":
        return f"region {event['region']}, {event['registered_voters']} registered voters"
    return kind
