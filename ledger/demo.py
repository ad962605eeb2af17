"""``ledger demo``: the Mazhilis election of Kazakhstan, 18 August 2007, as a ledger.

Station results are synthetic but reproducible (seeded) and calibrated so the national
totals reproduce the officially reported shares (see docs/demo.md for the sources). The
story follows the seed case: the Nationwide Social Democratic Party (OSDP) obtains
protocol copies from two thirds of Astana's 184 stations and is refused them at the
rest, which are the stations where it did best; Ak Zhol appeals and demands a recount.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ELECTION = "kz-2007-mazhilis"
AUTHORITY = "cec"
ALMATY_TZ = timezone(timedelta(hours=6))
# Officially reported national shares of valid votes (CEC final results, 2007) and turnout.
OFFICIAL_SHARES = {
    "nur-otan": 88.41, "osdp": 4.54, "ak-zhol": 3.09, "auyl": 1.51, "kpnk": 1.29,
    "patriots": 0.78, "rukhaniyat": 0.37,
}
OFFICIAL_TURNOUT = 64.56
CHOICES = [
    {"id": "nur-otan", "name": "People's Democratic Party Nur Otan"},
    {"id": "osdp", "name": "Nationwide Social Democratic Party"},
    {"id": "ak-zhol", "name": "Democratic Party of Kazakhstan Ak Zhol"},
    {"id": "auyl", "name": "Kazakhstan Social Democratic Party Auyl"},
    {"id": "kpnk", "name": "Communist People's Party of Kazakhstan"},
    {"id": "patriots", "name": "Party of Patriots of Kazakhstan"},
    {"id": "rukhaniyat", "name": "Rukhaniyat Party"},
]
# Regions with their share of the country's stations; Astana's 184 are fixed by the seed.
REGIONS = {
    "Akmola": 0.06, "Aktobe": 0.05, "Almaty Region": 0.11, "Almaty City": 0.06,
    "Atyrau": 0.03, "East Kazakhstan": 0.09, "Jambyl": 0.07, "Karaganda": 0.09,
    "Kostanay": 0.07, "Kyzylorda": 0.04, "Mangystau": 0.03, "Pavlodar": 0.05,
    "North Kazakhstan": 0.05, "South Kazakhstan": 0.13, "West Kazakhstan": 0.05,
}
ASTANA_STATIONS = 184
OPPOSITION = "osdp"
APPELLANT = "ak-zhol"


def at(day: int, hour: int, minute: int = 0) -> str:
    return datetime(2007, 8, day, hour, minute, tzinfo=ALMATY_TZ).isoformat()


@dataclass
class Station:
    id: str
    region: str
    registered: int
    issued: int
    cast: int
    invalid: int
    votes: dict[str, int]


def scenario(stations: int = 10_000, seed: int = 2007) -> dict[str, list[dict[str, Any]]]:
    """The whole story as batches of events, in the order they would reach the ledger.

    The OSDP's copies at the last five copied stations show more OSDP votes than the CEC's
    protocols for the same stations: those are the conflicts the audit view finds.
    """
    rng = random.Random(seed)
    night = _stations(rng, stations)
    astana = [s for s in night if s.region == "Astana"]
    # Refusals fall where the opposition did best: the accusation the ledger lets one test.
    by_strength = sorted(astana, key=lambda s: s.votes[OPPOSITION] / max(1, sum(s.votes.values())))
    copied = by_strength[: len(astana) * 2 // 3]
    refused = by_strength[len(astana) * 2 // 3 :]
    appealed = [s.id for s in night if s.region == "Almaty City"][:12]

    definition = {
        "type": "ElectionDefined", "election": ELECTION, "occurred_at": at(1, 9),
        "event_id": f"{ELECTION}/definition",
        "name": "Mazhilis of the Parliament of Kazakhstan, party lists, 18 August 2007",
        "seats": 98, "threshold_pct": 7.0, "threshold_base": "cast", "method": "hare",
        "authority": AUTHORITY, "choices": CHOICES,
    }
    registrations = [
        {"type": "StationRegistered", "election": ELECTION, "occurred_at": at(3, 12),
         "station": s.id, "region": s.region, "registered_voters": s.registered}
        for s in night
    ]
    protocols = []
    for index, s in enumerate(night):
        # Protocols reach the CEC from 20:30 until about 05:00 the next morning.
        minutes = 30 + int(510 * (index / len(night)) ** 0.7) + rng.randint(0, 20)
        issued = datetime(2007, 8, 18, 20, tzinfo=ALMATY_TZ) + timedelta(minutes=minutes)
        protocols.append(_protocol(s, AUTHORITY, issued.isoformat(), f"{s.id}/cec"))
    copies = []
    for s in copied:
        copy = _protocol(s, OPPOSITION, at(18, 21, rng.randint(0, 59)), f"{s.id}/osdp")
        copies.append(copy)
    # At a few stations the copy the observers signed differs from what the CEC reports.
    for s in copied[-5:]:
        moved = max(1, s.votes[OPPOSITION] // 3)
        official = next(p for p in protocols if p["station"] == s.id)
        official["votes"] = dict(official["votes"])
        official["votes"][OPPOSITION] -= moved
        official["votes"]["nur-otan"] += moved
    withheld = [
        {"type": "ProtocolWithheld", "election": ELECTION, "occurred_at": at(18, 21, rng.randint(0, 59)),
         "station": s.id, "requested_by": OPPOSITION,
         "reason": "come back tomorrow, after consultation with the akimat"}
        for s in refused
    ]
    preliminary_totals = _sum(protocols)
    preliminary = {
        "type": "ResultAnnounced", "election": ELECTION, "occurred_at": at(19, 10),
        "event_id": f"{ELECTION}/preliminary", "authority": AUTHORITY, "stage": "preliminary",
        "scope": "national", "votes": preliminary_totals,
        "turnout_pct": OFFICIAL_TURNOUT,
    }
    appeal = {
        "type": "AppealFiled", "election": ELECTION, "occurred_at": at(20, 11),
        "event_id": f"{ELECTION}/appeal/ak-zhol", "appeal": "ak-zhol-recount",
        "filed_by": APPELLANT, "stations": appealed, "demand": "recount",
        "grounds": "Ak Zhol rejects the preliminary results and insists on a new vote count",
    }
    decision = {
        "type": "AppealDecided", "election": ELECTION, "occurred_at": at(23, 15),
        "event_id": f"{ELECTION}/appeal/ak-zhol/decision", "appeal": "ak-zhol-recount",
        "decision": "rejected", "remedy": "none",
    }
    final = {
        "type": "ResultAnnounced", "election": ELECTION, "occurred_at": at(25, 12),
        "event_id": f"{ELECTION}/final", "authority": AUTHORITY, "stage": "final",
        "scope": "national", "votes": preliminary_totals, "turnout_pct": OFFICIAL_TURNOUT,
        "seats": {"nur-otan": 98},
    }
    return {
        "1-definition-and-stations": [definition, *registrations],
        "2-election-night": sorted([*protocols, *copies, *withheld], key=_when),
        "3-preliminary-announcement": [preliminary],
        "4-appeal": [appeal],
        "5-decision-and-final-result": [decision, final],
    }


def _when(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["occurred_at"])


def _protocol(s: Station, reporter: str, occurred_at: str, event_id: str) -> dict[str, Any]:
    return {
        "type": "ProtocolIssued", "election": ELECTION, "occurred_at": occurred_at,
        "event_id": event_id, "station": s.id, "reported_by": reporter,
        "registered_voters": s.registered, "ballots_issued": s.issued,
        "ballots_cast": s.cast, "invalid": s.invalid, "votes": dict(s.votes),
        "protocol_no": f"{s.id.upper()}-{'01' if reporter == AUTHORITY else 'C'}",
    }


def _sum(protocols: list[dict[str, Any]]) -> dict[str, int]:
    totals = {c["id"]: 0 for c in CHOICES}
    for p in protocols:
        for choice, votes in p["votes"].items():
            totals[choice] += votes
    return totals


def _stations(rng: random.Random, count: int) -> list[Station]:
    regions = ["Astana"] * min(ASTANA_STATIONS, count)
    rest = count - len(regions)
    for region, weight in REGIONS.items():
        regions += [region] * round(rest * weight / sum(REGIONS.values()))
    regions = regions[:count] + ["South Kazakhstan"] * (count - len(regions))
    # Each station's leaning: the opposition is far stronger in Astana and Almaty.
    leaning = {"Astana": {"osdp": 11.5, "ak-zhol": 2.5}, "Almaty City": {"osdp": 3.0, "ak-zhol": 2.5}}
    weights = []
    for region in regions:
        w = {c: OFFICIAL_SHARES[c] * rng.lognormvariate(0, 0.35) for c in OFFICIAL_SHARES}
        for c, factor in leaning.get(region, {}).items():
            w[c] *= factor * rng.lognormvariate(0, 0.4)
        weights.append(w)
    _calibrate(weights)
    stations = []
    counters: dict[str, int] = {}
    for region, w in zip(regions, weights, strict=True):
        counters[region] = counters.get(region, 0) + 1
        registered = rng.randint(400, 1500)
        turnout = min(0.99, max(0.2, rng.gauss(OFFICIAL_TURNOUT / 100, 0.08)))
        cast = round(registered * turnout)
        issued = cast + rng.randint(0, 6)
        invalid = round(cast * rng.uniform(0.005, 0.03))
        votes = _apportion(cast - invalid, w)
        slug = region.lower().replace(" ", "-")
        stations.append(Station(f"{slug}-{counters[region]:04d}", region, registered, issued,
                                cast, invalid, votes))
    return stations


def _calibrate(weights: list[dict[str, float]]) -> None:
    """Scale every party's weight so the national shares land on the official ones."""
    for _ in range(8):
        share_of = {c: 0.0 for c in OFFICIAL_SHARES}
        for w in weights:
            total = sum(w.values())
            for c, v in w.items():
                share_of[c] += v / total
        grand = sum(share_of.values())
        for w in weights:
            for c in w:
                w[c] *= OFFICIAL_SHARES[c] / (100 * share_of[c] / grand)


def _apportion(valid: int, weights: dict[str, float]) -> dict[str, int]:
    """Whole votes in proportion to the weights, summing exactly to ``valid``."""
    total = sum(weights.values())
    exact = {c: valid * w / total for c, w in weights.items()}
    votes = {c: int(v) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: exact[c] - votes[c], reverse=True)[: valid - sum(votes.values())]:
        votes[c] += 1
    return votes


def write_batches(directory: Path, stations: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, events in scenario(stations).items():
        path = directory / f"{name}.jsonl"
        with path.open("w") as out:
            for event in events:
                out.write(json.dumps(event) + "\n")
        paths.append(path)
    return paths


MOMENTS = ["2007-08-18T22:00:00+06:00", "2007-08-19T00:00:00+06:00",
           "2007-08-19T03:00:00+06:00", "2007-08-19T06:00:00+06:00"]


def run(directory: Path, main: Callable[[list[str]], int], stations: int | None = None) -> int:
    """Build the scenario in ``directory`` and show it, running each step through ``main``
    (the command line's entry point, so the demo prints exactly what a user would see)."""

    if directory.exists():
        if not (directory / "ledger.db").exists() and any(directory.iterdir()):
            from ledger.errors import BadInput

            raise BadInput(f"--dir: {directory} exists and is not a demo ledger; choose another")
        shutil.rmtree(directory)
    db = str(directory / "ledger.db")
    paths = write_batches(directory / "events", stations or 10_000)

    def say(text: str) -> None:
        print(f"\n### {text}", flush=True)

    def ledger(*args: str) -> None:
        code = main([*args, "--db", db])
        if code:
            raise SystemExit(code)

    say(f"Building the Kazakhstan 2007 Mazhilis ledger in {directory}")
    for path in paths:
        print(f"$ ledger append {path.relative_to(directory)}", flush=True)
        ledger("append", str(path))
    for moment in MOMENTS:
        say(f"The preliminary tally as of {moment}")
        ledger("tally", "--as-of", moment)
    say("The final tally while Ak Zhol's appeal is pending (22 August): appealed stations left out")
    ledger("tally", "--stage", "final", "--as-of", "2007-08-22T12:00:00+06:00")
    say("The final tally, certified")
    ledger("tally", "--stage", "final")
    say("Seats: 98 by Hare largest remainder, 7% threshold of ballots cast")
    ledger("seats", "--stage", "final")
    say("Astana, as the OSDP's own copies count it (parallel tally)")
    ledger("tally", "--reporter", OPPOSITION, "--scope", "Astana")
    say("Withheld versus copied: the OSDP's official share where copies were refused and given")
    ledger("withheld")
    say("One station where the OSDP's signed copy differs from the CEC's protocol")
    disputed = _first_disputed(paths[1])
    ledger("audit", "--station", disputed)
    say("Done. Try: ledger --db " + db + " history --station astana-0001")
    return 0


def _first_disputed(night: Path) -> str:
    protocols: dict[str, dict[str, dict[str, int]]] = {}
    with night.open() as events:
        for line in events:
            event = json.loads(line)
            if event["type"] == "ProtocolIssued":
                protocols.setdefault(event["station"], {})[event["reported_by"]] = event["votes"]
    return next(s for s, by in protocols.items() if len(set(map(json.dumps, by.values()))) > 1)

