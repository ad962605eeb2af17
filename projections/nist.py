"""One election as a NIST SP 1500-100 v2 Election Results Reporting (ERR) JSON ``ElectionReport``.

The report is precinct-level: every station is a ``precinct`` ReportingUnit with the counts of
the authority's effective protocol, rolled up into its region and the whole election. Like every
projection it is a function of the events visible at the moment; for the final stage the
stations the final tally leaves out (contested, annulled, awaiting a recount) are left out here
too. The mapping and the status rules are in ``docs/nist.md``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from projections.moment import Moment, visible
from projections.tally import (
    COUNTED,
    NO_EXCLUSIONS,
    Election,
    Exclusions,
    QueryError,
    final_exclusions,
    tally,
)

VENDOR = "election-ledger"
STAGES = ("preliminary", "final")
# BCP 47 "undetermined": the ledger keeps names as the source wrote them, not their language.
LANGUAGE = "und"
# The ledger records no kind of election; the contests it models are general elections.
ELECTION_TYPE = "general"


@dataclass(frozen=True)
class Station:
    id: str
    region: str
    registered_voters: int | None


@dataclass(frozen=True)
class Protocol:
    station: str
    ballots_cast: int
    invalid: int
    votes: dict[str, int]
    supersedes: str | None


@dataclass
class Counts:
    """The sums of the counted protocols within one reporting unit."""

    stations: int = 0
    ballots_cast: int = 0
    invalid: int = 0
    votes: dict[str, int] = field(default_factory=dict)

    def add(self, protocol: Protocol) -> None:
        self.stations += 1
        self.ballots_cast += protocol.ballots_cast
        self.invalid += protocol.invalid
        for choice, count in protocol.votes.items():
            self.votes[choice] = self.votes.get(choice, 0) + count


# xsd:ID values are NCNames. Letters, digits, '.' and '-' pass through; anything else becomes
# '_<hex code point>_'. Since '_' itself is escaped, distinct ledger ids give distinct @ids,
# and the same ledger id gives the same @id in every report.
_NOT_ID = re.compile(r"[^A-Za-z0-9.-]")


def xml_id(kind: str, ledger_id: str) -> str:
    """The report's ``@id`` for a ledger id of one kind (no kind's prefix starts another's)."""
    return f"{kind}-" + _NOT_ID.sub(lambda m: f"_{ord(m.group()):x}_", ledger_id)


def election_report(
    db: Any, election: Election, moment: Moment, *, stage: str = "preliminary"
) -> dict[str, Any]:
    """The ERR ``ElectionReport`` of one election as of the moment, for one tally stage."""
    if stage not in STAGES:
        raise QueryError(f"--stage: {stage!r} is not one of {', '.join(STAGES)}")
    params: dict[str, Any] = {
        "election": election.id, **moment.bounds(), "reporter": election.authority, "scope": None,
        "excluded": "[]",
    }
    stations = _stations(db, params)
    effective = _effective_protocols(db, params)
    exclusions = final_exclusions(db, election, moment, params) if stage == "final" else NO_EXCLUSIONS
    counted = {s: p for s, p in effective.items() if s not in exclusions.stations}
    # Certification is the tally's rule (the authority's final national announcement); ask it
    # rather than restate it.
    certified = stage == "final" and bool(tally(db, election, moment, stage="final")["certified"])
    outstanding = _outstanding(stations, effective, exclusions)
    status = _status(effective, counted, outstanding, certified)
    country = xml_id("gp-country", election.id)
    counts = _roll_up(stations, counted, country)
    return {
        "@type": "ElectionResults.ElectionReport",
        "Format": "precinct-level",
        "GeneratedDate": _generated_date(moment),
        "Issuer": election.authority,
        "IssuerAbbreviation": election.authority,
        "SequenceStart": 1,
        "SequenceEnd": 1,
        "Status": status,
        "VendorApplicationId": VENDOR,
        "Notes": _notes(election, moment, stage, exclusions),
        "GpUnit": _gp_units(election, stations, counts, country),
        "Party": _parties(election),
        "Election": [_election(db, election, params, stations, counts, country, outstanding)],
    }


# --- what the ledger knows at the moment -----------------------------------------------------

def _stations(db: Any, params: dict[str, Any]) -> list[Station]:
    rows = db.execute(
        "SELECT station, region, registered_voters FROM stations WHERE election = :election "
        f"AND {visible()} ORDER BY position",
        params,
    )
    return [Station(*row) for row in rows]


def _effective_protocols(db: Any, params: dict[str, Any]) -> dict[str, Protocol]:
    """The authority's effective protocol of each visible station (the tally's own query)."""
    rows = db.execute(
        COUNTED + "SELECT in_scope.station, p.ballots_cast, p.invalid, p.votes, p.supersedes "
        "FROM in_scope JOIN protocols p USING (position)",
        params,
    )
    return {
        station: Protocol(station, cast, invalid, json.loads(votes), supersedes)
        for station, cast, invalid, votes, supersedes in rows
    }


def _election_date(db: Any, election: Election, params: dict[str, Any]) -> str:
    """The (UTC) date of the first visible protocol, else of the election's definition.

    The ledger keeps instants in UTC, not the offset they were written with, so a protocol
    signed late in the evening west of Greenwich dates to the next day.
    """
    first = db.execute(
        f"SELECT MIN(occurred_at) FROM protocols WHERE election = :election AND {visible()}",
        params,
    ).fetchone()[0]
    if first is None:
        first = db.execute(
            "SELECT occurred_at FROM elections WHERE election = ?", [election.id]
        ).fetchone()[0]
    return first[:10]


def _outstanding(
    stations: list[Station], effective: dict[str, Protocol], exclusions: Exclusions
) -> list[str]:
    """Stations whose counts are still to come: no protocol yet, a pending appeal, or an
    ordered recount not in yet. An annulled station is settled: it counts for nothing."""
    pending = set(exclusions.contested) | set(exclusions.awaiting_recount)
    return [s.id for s in stations if s.id not in effective or s.id in pending]


def _status(
    effective: dict[str, Protocol], counted: dict[str, Protocol], outstanding: list[str],
    certified: bool,
) -> str:
    """The ERR ResultsStatus; see docs/nist.md for the rules and their order."""
    if certified:
        return "certified"
    if not effective:
        return "pre-election"  # nothing reported: the report only defines the election
    if any(p.supersedes is not None for p in counted.values()):
        return "recount"
    return "unofficial-partial" if outstanding else "unofficial-complete"


def _roll_up(stations: list[Station], counted: dict[str, Protocol], country: str) -> dict[str, Counts]:
    """Counts per GpUnit @id, for the units with at least one counted station."""
    counts: dict[str, Counts] = {}
    for station in stations:
        protocol = counted.get(station.id)
        if protocol is None:
            continue
        for unit in (xml_id("gp-station", station.id), xml_id("gp-region", station.region), country):
            counts.setdefault(unit, Counts()).add(protocol)
    return counts


# --- the report's parts ----------------------------------------------------------------------

def _text(content: str) -> dict[str, Any]:
    return {
        "@type": "ElectionResults.InternationalizedText",
        "Text": [{"@type": "ElectionResults.LanguageString", "Language": LANGUAGE, "Content": content}],
    }


def _ledger_id(value: str) -> list[dict[str, Any]]:
    """The ledger's own id, kept because an ``@id`` may have had characters escaped."""
    return [{"@type": "ElectionResults.ExternalIdentifier", "Type": "other",
             "OtherType": VENDOR, "Value": value}]


def _gp_units(
    election: Election, stations: list[Station], counts: dict[str, Counts], country: str
) -> list[dict[str, Any]]:
    regions: dict[str, list[Station]] = {}
    for station in stations:
        regions.setdefault(station.region, []).append(station)
    units = [_reporting_unit(country, "country", election.name, election.id, stations, counts,
                             [xml_id("gp-region", r) for r in regions])]
    units += [
        _reporting_unit(xml_id("gp-region", region), "region", region, region, members, counts,
                        [xml_id("gp-station", s.id) for s in members])
        for region, members in regions.items()
    ]
    units += [_precinct(station) for station in stations]
    return units


def _reporting_unit(
    unit_id: str, kind: str, name: str, ledger_id: str, stations: list[Station],
    counts: dict[str, Counts], composing: list[str],
) -> dict[str, Any]:
    """The country or a region: what it is made of, and how many of its stations count."""
    unit: dict[str, Any] = {"@id": unit_id, "@type": "ElectionResults.ReportingUnit"}
    # ERR has no region type; "state" would claim more than the ledger knows.
    unit.update({"Type": "country"} if kind == "country" else {"Type": "other", "OtherType": kind})
    unit["Name"] = _text(name)
    unit["ExternalIdentifier"] = _ledger_id(ledger_id)
    if composing:
        unit["ComposingGpUnitIds"] = composing
    unit["TotalSubUnits"] = len(stations)
    unit["SubUnitsReported"] = counts[unit_id].stations if unit_id in counts else 0
    registered = [s.registered_voters for s in stations if s.registered_voters is not None]
    if registered and len(registered) == len(stations):  # a partial sum would understate it
        unit["VotersRegistered"] = sum(registered)
    return unit


def _precinct(station: Station) -> dict[str, Any]:
    unit: dict[str, Any] = {
        "@id": xml_id("gp-station", station.id),
        "@type": "ElectionResults.ReportingUnit",
        "Type": "precinct",
        "Name": _text(station.id),
        "ExternalIdentifier": _ledger_id(station.id),
    }
    if station.registered_voters is not None:
        unit["VotersRegistered"] = station.registered_voters
    return unit


def _candidate_ballot(election: Election) -> bool:
    """Plurality elections choose among candidates; every other method among party lists."""
    return election.method == "plurality"


def _parties(election: Election) -> list[dict[str, Any]]:
    """On a party-list ballot every choice is a party (or stands for ``party``); on a
    candidate ballot only the candidates' ``party`` values are parties, named by their id."""
    names: dict[str, str] = {}
    for choice, name, party in election.choices:
        if _candidate_ballot(election):
            if party is not None:
                names.setdefault(party, party)
        else:
            names.setdefault(party or choice, name)
    return [
        {"@id": xml_id("party", party), "@type": "ElectionResults.Party", "Name": _text(name),
         "ExternalIdentifier": _ledger_id(party)}
        for party, name in names.items()
    ]


def _election(
    db: Any, election: Election, params: dict[str, Any], stations: list[Station],
    counts: dict[str, Counts], country: str, outstanding: list[str],
) -> dict[str, Any]:
    date = _election_date(db, election, params)
    units = _units_bottom_up(stations, counts, country)
    result: dict[str, Any] = {
        "@type": "ElectionResults.Election",
        "Name": _text(election.name),
        "StartDate": date,
        "EndDate": date,
        "Type": ELECTION_TYPE,
        "ElectionScopeId": country,
        "ExternalIdentifier": _ledger_id(election.id),
        "CountStatus": [{"@type": "ElectionResults.CountStatus", "Type": "total",
                         "Status": _count_status(counts, country, outstanding)}],
        "BallotCounts": [
            {"@type": "ElectionResults.BallotCounts", "GpUnitId": unit, "Type": "total",
             "BallotsCast": counts[unit].ballots_cast, "BallotsRejected": counts[unit].invalid}
            for unit in units
        ],
        "Contest": [_contest(election, stations, counts, country, units)],
    }
    if _candidate_ballot(election):
        result["Candidate"] = [_candidate(choice, name, party) for choice, name, party in election.choices]
    return result


def _units_bottom_up(stations: list[Station], counts: dict[str, Counts], country: str) -> list[str]:
    """The units that have counts, precincts first, then regions, then the whole election."""
    ordered = [xml_id("gp-station", s.id) for s in stations]
    ordered += list(dict.fromkeys(xml_id("gp-region", s.region) for s in stations))
    ordered.append(country)
    return [unit for unit in ordered if unit in counts]


def _count_status(counts: dict[str, Counts], country: str, outstanding: list[str]) -> str:
    if country not in counts:
        return "not-processed"
    return "in-process" if outstanding else "completed"


def _contest(
    election: Election, stations: list[Station], counts: dict[str, Counts], country: str,
    units: list[str],
) -> dict[str, Any]:
    candidates = _candidate_ballot(election)
    contest: dict[str, Any] = {
        "@id": xml_id("contest", election.id),
        "@type": "ElectionResults.CandidateContest" if candidates else "ElectionResults.PartyContest",
        "Name": election.name,
        "ElectionDistrictId": country,
        "VoteVariation": "plurality" if candidates else "proportional",
        "TotalSubUnits": len(stations),
        "SubUnitsReported": counts[country].stations if country in counts else 0,
    }
    if candidates:
        # One vote per ballot: a protocol's votes plus its invalid ballots make up ballots cast.
        contest.update({"VotesAllowed": 1, "NumberElected": election.seats})
    contest["ContestSelection"] = [
        _selection(choice, party, order, candidates, counts, units)
        for order, (choice, _, party) in enumerate(election.choices, start=1)
    ]
    return contest


def _selection(
    choice: str, party: str | None, order: int, candidates: bool, counts: dict[str, Counts],
    units: list[str],
) -> dict[str, Any]:
    selection: dict[str, Any] = {"@id": xml_id("sel", choice)}
    if candidates:
        selection.update({"@type": "ElectionResults.CandidateSelection",
                          "CandidateIds": [xml_id("cand", choice)]})
    else:
        selection.update({"@type": "ElectionResults.PartySelection",
                          "PartyIds": [xml_id("party", party or choice)]})
    selection["SequenceOrder"] = order
    # A counted protocol without an entry for a choice gave it no votes: report 0, not nothing.
    selection["VoteCounts"] = [
        {"@type": "ElectionResults.VoteCounts", "GpUnitId": unit, "Type": "total",
         "Count": counts[unit].votes.get(choice, 0)}
        for unit in units
    ]
    return selection


def _candidate(choice: str, name: str, party: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "@id": xml_id("cand", choice),
        "@type": "ElectionResults.Candidate",
        "BallotName": _text(name),
        "ExternalIdentifier": _ledger_id(choice),
    }
    if party is not None:
        candidate["PartyId"] = xml_id("party", party)
    return candidate


def _generated_date(moment: Moment) -> str:
    # Whole seconds: ERR's DateTimeWithZone pattern has no fractional part.
    when = moment.known_at or datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _notes(election: Election, moment: Moment, stage: str, exclusions: Exclusions) -> str:
    when = moment.describe()
    notes = (f"{stage} results of {election.id} from the protocols of {election.authority}, "
             f"as of {when['as_of'] or 'the latest event'}, "
             f"known at {when['known_at'] or 'the time of export'}")
    left_out = [f"{why}: {', '.join(sorted(stations))}" for why, stations in (
        ("contested", exclusions.contested), ("annulled", exclusions.annulled),
        ("awaiting recount", exclusions.awaiting_recount)) if stations]
    return notes + (f"; left out ({'; '.join(left_out)})" if left_out else "")
