"""The audit views: who reported what and when, where the figures disagree, what was withheld."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from projections.effective import effective_protocols
from projections.moment import Moment, visible
from projections.tally import (
    Election,
    announced_minus_computed,
    latest_decisions,
    load_election,
    tally,
)

# The log's stored form of the events at some positions: JSON with ``recorded_at``, the
# ``event`` and, for a signed event, ``signed`` (what was submitted, and the key). The events
# are kept there once; history reads them there (ledger.service passes the reader).
Stored = Callable[[Sequence[int]], Mapping[int, bytes]]

# Who signed the event behind a row of another table (NULL: unsigned).
SIGNED_BY = "(SELECT signed_by FROM events s WHERE s.position = {table}.position) AS signed_by"


def signers(db: Any, election: Election, moment: Moment) -> list[dict[str, Any]]:
    """Per reporter: its keys valid at the moment and those revoked, and how many of its
    visible protocols are signed."""
    keys: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for reporter, name, key in db.execute(
        "SELECT reporter, name, fingerprint FROM reporters "
        f"WHERE election = :election AND {visible()} ORDER BY position",
        _params(election, moment),
    ):
        if key not in keys.setdefault(reporter, []):
            keys[reporter].append(key)
        names.setdefault(reporter, name)
    revoked: dict[str, list[str]] = {}
    for reporter, key in db.execute(
        "SELECT reporter, fingerprint FROM revocations "
        f"WHERE election = :election AND {visible()} ORDER BY position",
        _params(election, moment),
    ):
        revoked.setdefault(reporter, []).append(key)
    counts = {reporter: (total, signed) for reporter, total, signed in db.execute(
        "SELECT p.reported_by, COUNT(*), COUNT(e.signed_by) FROM protocols p "
        "JOIN events e ON e.position = p.position "
        f"WHERE p.election = :election AND {visible('p')} GROUP BY p.reported_by",
        _params(election, moment),
    )}
    return [
        {"reporter": reporter, "name": names.get(reporter),
         "keys": [k for k in keys.get(reporter, []) if k not in revoked.get(reporter, [])],
         "revoked_keys": revoked.get(reporter, []),
         "protocols": counts.get(reporter, (0, 0))[0],
         "signed_protocols": counts.get(reporter, (0, 0))[1]}
        for reporter in sorted(keys.keys() | counts.keys())
    ]


OPERATOR = "operator"


def key_acts(db: Any, election: Election, moment: Moment) -> list[dict[str, Any]]:
    """Every key given to or taken from a reporter, in log order, and whose act it was.

    A first key, a key after all of a reporter's keys were revoked, and every revocation are
    the operator's acts, unsigned; a key added to a reporter holding one is the reporter's
    own, signed by one of its keys. So the operator can give itself a voice in a reporter's
    name only by revoking that reporter's keys first, here in the open.
    """
    rows = db.execute(
        f"""
        SELECT r.position, r.occurred_at, r.recorded_at, r.reporter, r.fingerprint,
               'registered' AS act, NULL AS reason, e.signed_by, e.signing_key
        FROM reporters r JOIN events e ON e.position = r.position
        WHERE r.election = :election AND {visible('r')}
        UNION ALL
        SELECT v.position, v.occurred_at, v.recorded_at, v.reporter, v.fingerprint,
               'revoked', v.reason, NULL, NULL
        FROM revocations v
        WHERE v.election = :election AND {visible('v')}
        ORDER BY 1
        """,
        _params(election, moment),
    )
    return [
        {"position": r[0], "occurred_at": r[1], "recorded_at": r[2], "reporter": r[3],
         "key": r[4], "act": "rotated" if r[7] else r[5],
         "acted_by": r[7] or OPERATOR, "signing_key": r[8], "reason": r[6]}
        for r in rows
    ]


def _params(election: Election, moment: Moment, station: str | None = None) -> dict[str, Any]:
    return {"election": election.id, **moment.bounds(), "station": station}


def require_station(db: Any, station: str, election: str | None) -> None:
    """The one rule for ``--station``, in every command: it must name a registered station
    (of ``election``, when one is given), else the question is bad input."""
    from projections.tally import QueryError

    if not db.execute(
        "SELECT 1 FROM stations WHERE station = :station "
        "AND (:election IS NULL OR election = :election) LIMIT 1",
        {"station": station, "election": election},
    ).fetchone():
        where = f" in {election!r}" if election is not None else ""
        raise QueryError(f"--station: unknown station {station!r}{where}")


def history(
    db: Any, moment: Moment, stored: Stored, *, election: str | None = None,
    station: str | None = None
) -> list[dict[str, Any]]:
    """Every visible event in log order, optionally of one election or station: found in the
    read models, the event itself (and what was submitted) read from the log."""
    if station is not None:
        require_station(db, station, election)
    rows = db.execute(
        "SELECT position, recorded_at, occurred_at, type, election, station, event_id, "
        f"signed_by, signing_key, occurred_at_offset FROM events WHERE {visible()} "
        "AND (:election IS NULL OR election = :election) "
        "AND (:station IS NULL OR station = :station) ORDER BY position",
        {**moment.bounds(), "election": election, "station": station},
    ).fetchall()
    states = stored([r[0] for r in rows])
    if missing := [r[0] for r in rows if r[0] not in states]:
        raise LookupError(f"the read models hold position {missing[0]}, which the log does not: "
                          "they were built from another ledger (ledger replay rebuilds them)")
    history = []
    for r in rows:
        state = json.loads(states[r[0]])
        signed = state.get("signed")
        history.append(
            {"position": r[0], "recorded_at": r[1], "occurred_at": r[2], "type": r[3],
             "election": r[4], "station": r[5], "event_id": r[6], "event": _sorted(state["event"]),
             **signer(r[7], r[8], signed["submitted"] if signed else None),
             "occurred_at_as_submitted": as_submitted(r[2], r[9])})
    return history


def _sorted(value: Any) -> Any:
    """``value`` with every object's keys in order, as an event has always been shown."""
    if isinstance(value, dict):
        return {key: _sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def as_submitted(occurred_at: str, offset: int | None) -> str:
    """``occurred_at`` (a UTC stamp) as it was written: in the UTC offset it was given with."""
    instant = datetime.fromisoformat(occurred_at.replace("Z", "+00:00"))
    zone = timezone(timedelta(seconds=offset)) if offset else UTC
    written = instant.astimezone(zone)
    text = written.isoformat(timespec="microseconds" if written.microsecond else "seconds")
    return text.replace("+00:00", "Z") if not offset else text


def signer(by: str | None, key: str | None, submitted: Any) -> dict[str, Any]:
    """Who signed an event, with which key, and what exactly was submitted."""
    return {"signed_by": by, "signing_key": key, "submitted": submitted}


def audit(
    db: Any, moment: Moment, stored: Stored, *, election: str | None = None,
    station: str | None = None
) -> dict[str, Any]:
    chosen = load_election(db, election)
    result: dict[str, Any] = {"election": chosen.id, "station": station, **moment.describe()}
    if station is not None:
        require_station(db, station, chosen.id)
        result["timeline"] = [
            {k: e[k] for k in ("position", "occurred_at", "recorded_at", "type", "event_id",
                               "signed_by", "signing_key")}
            | {"summary": _summary(e["event"])}
            for e in history(db, moment, stored, election=chosen.id, station=station)
        ]
    result["signers"] = signers(db, chosen, moment)
    result["key_acts"] = key_acts(db, chosen, moment)
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
    # Protocol lines: compared where both give the line (one reporter may copy fewer lines).
    official_lines, copy_lines = official["lines"] or {}, copy["lines"] or {}
    out += [(f"lines.{line}", official_lines[line], copy_lines[line]) for line in official_lines
            if line in copy_lines and official_lines[line] != copy_lines[line]]
    return out


def _effective_protocols(
    db: Any, election: Election, moment: Moment, station: str | None
) -> dict[str, dict[str, dict[str, Any]]]:
    cursor = db.execute(
        effective_protocols(one_reporter=False, one_station=station is not None)
        + " SELECT p.* FROM effective JOIN protocols p USING (position) "
        "ORDER BY p.station, p.reported_by",
        _params(election, moment, station),
    )
    columns = [d[0] for d in cursor.description]
    rows = [dict(zip(columns, r, strict=True)) for r in cursor.fetchall()]
    by_station: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        row["votes"] = json.loads(row["votes"])
        row["lines"] = json.loads(row["lines"]) if row["lines"] else None
        by_station.setdefault(row["station"], {})[row["reported_by"]] = row
    return by_station


def control_failures(
    db: Any, election: Election, moment: Moment, station: str | None = None
) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT station, reported_by, event_id, occurred_at, control_failures, "
        f"{SIGNED_BY.format(table='protocols')} FROM protocols "
        f"WHERE election = :election AND {visible()} AND control_failures IS NOT NULL "
        "AND (:station IS NULL OR station = :station) ORDER BY position",
        _params(election, moment, station),
    )
    return [
        {"station": r[0], "reporter": r[1], "event_id": r[2], "occurred_at": r[3],
         "failures": json.loads(r[4]), "signed_by": r[5]}
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
                  AND {visible('p')}) AS copy_received_at,
               {SIGNED_BY.format(table='w')}
        FROM withheld w
        WHERE w.election = :election AND {visible('w')}
          AND (:station IS NULL OR w.station = :station)
        ORDER BY w.position
        """,
        _params(election, moment, station),
    )
    return [
        {"station": r[0], "requested_by": r[1], "withheld_at": r[2], "reason": r[3],
         "copy_received_at": r[4], "signed_by": r[5]}
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


def choice_of(election: Election, reporter: str) -> str | None:
    """The ballot choice a reporter stands for: the choice whose id or party is its id (a
    party's own count, a party's refused copies), else none (an observer group)."""
    for choice, _, party in election.choices:
        if reporter in (choice, party):
            return choice
    return None


def _compare(db: Any, election: Election, moment: Moment, requester: str) -> dict[str, Any]:
    effective = _effective_protocols(db, election, moment, None)
    refused = {
        r[0] for r in db.execute(
            "SELECT station FROM withheld "
            f"WHERE election = :election AND {visible()} AND requested_by = :who",
            {**_params(election, moment), "who": requester},
        )
    }
    copied = {s for s, by in effective.items() if requester in by} - refused
    choice = choice_of(election, requester)

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
        f"WHERE election = :election AND {visible()} ORDER BY position",
        _params(election, moment),
    ).fetchall():
        announced = json.loads(votes_json)
        at = At(as_of=parse_time(occurred, "occurred_at"), known_at=moment.known_at)
        region = None if scope == "national" else scope
        try:
            computed = tally(db, election, at, stage=stage, reporter=authority, scope=region)
        except ValueError:
            computed = {"votes": {}, "stations_reporting": 0}
        difference = announced_minus_computed(announced, computed["votes"])
        found.append({
            "position": position, "authority": authority, "stage": stage, "scope": scope,
            "announced_at": occurred, "announced_total": sum(announced.values()),
            "computed_total": sum(computed["votes"].values()),
            "stations_reporting": computed["stations_reporting"],
            "matches": not difference, "difference": difference,
        })
    return found


def _signed_by(db: Any, position: int) -> str | None:
    row = db.execute("SELECT signed_by FROM events WHERE position = ?", [position]).fetchone()
    return row[0] if row else None


def appeals_of(db: Any, election: Election, moment: Moment) -> list[dict[str, Any]]:
    params = _params(election, moment)
    decided = {row[0]: row for row in latest_decisions(db, params)}
    found = []
    for appeal, filed_by, grounds, demand, stations, occurred, signed_by in db.execute(
        f"SELECT appeal, filed_by, grounds, demand, stations, occurred_at, "
        f"{SIGNED_BY.format(table='appeals')} FROM appeals "
        f"WHERE election = :election AND {visible()} ORDER BY position", params,
    ):
        decision = decided.get(appeal)
        found.append({
            "appeal": appeal, "filed_by": filed_by, "filed_at": occurred, "demand": demand,
            "stations": json.loads(stations), "grounds": grounds,
            "status": decision[1] if decision else "pending",
            "decided_at": decision[4] if decision else None,
            "remedy": decision[2] if decision else None,
            "remedy_stations": json.loads(decision[3]) if decision and decision[3] else None,
            "signed_by": signed_by,
            "decision_signed_by": _signed_by(db, decision[5]) if decision else None,
        })
    return found


def appeals(db: Any, moment: Moment, *, election: str | None = None) -> list[dict[str, Any]]:
    return appeals_of(db, load_election(db, election), moment)


def _summary(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind == "ProtocolIssued":
        text = (f"{event['reported_by']}: cast {event['ballots_cast']}, invalid "
                f"{event['invalid']}, votes {json.dumps(event['votes'])}")
        if event.get("lines"):
            text += f", lines {json.dumps(event['lines'])}"
        return text + (f", supersedes {event['supersedes']}" if event.get("supersedes") else "")
    if kind == "ProtocolWithheld":
        return f"withheld from {event['requested_by']}: {event.get('reason') or ''}".rstrip(": ")
    if kind == "StationRegistered":
        return f"region {event['region']}, {event['registered_voters']} registered voters"
    if kind == "ReporterRegistered":
        return f"key of {event['reporter']} ({event['name']}): {event['public_key']}"
    if kind == "ReporterKeyRevoked":
        return (f"key of {event['reporter']} revoked: {event['public_key']}"
                + (f" ({event['reason']})" if event.get("reason") else ""))
    return kind
