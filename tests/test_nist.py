"""The NIST SP 1500-100 v2 export (ERR JSON) on the small night of tests/test_tally.py.

Every report built here is checked three ways: against the official schema (shared/nist), for
what that schema cannot see (dangling or mistyped references, duplicate or malformed @ids,
counts that are not non-negative integers, unanchored timestamps), and against numbers worked
out by hand:

    n1 (North, 1000): a 400  b 300  c 100  d 50, invalid 10, cast 860        (20:00)
    n2 (North,  500): a 110  b 190  c  50  d 20, invalid  5, cast 375        (21:30, corrects 21:00)
    s1 (South, 1500): a 600  b 300  c 200  d 100, invalid 20, cast 1220      (22:00)
    s1 recount (11th, supersedes s1-b): a 550 b 350 c 200 d 100; n2 annulled on the 9th.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator

from projections.moment import moment
from projections.nist import election_report
from projections.schema import connect
from projections.tally import QueryError, load_election
from tests.conftest import (
    SHARED,
    LedgerUnderTest,
    T,
    definition,
    ev,
    protocol,
    require_shared,
    station,
)

NIST = SHARED / "nist"
SCHEMA_FILE = NIST / "NIST_V2_election_results_reporting.json"
SAMPLES = ("jetsons_election_definition.json", "september_test_case.json",
           "minimal_party_list_precinct_example.json")

COUNTRY = "gp-country-council-2030"
NORTH, SOUTH = "gp-region-North", "gp-region-South"
N1, N2, S1 = "gp-station-n1", "gp-station-n2", "gp-station-s1"

Report = dict[str, Any]
Export = Callable[..., Report]


# --- the harness: the schema, and what it misses ----------------------------------------------

@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    require_shared(SCHEMA_FILE)
    return json.loads(SCHEMA_FILE.read_text())


def objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from objects(value)


def reference_fields(schema: dict[str, Any]) -> dict[str, set[str]]:
    """Each property that refers to an @id, and the @types it may refer to, read from the
    schema's own ``refTypes`` keyword (which validators ignore)."""
    fields: dict[str, set[str]] = {}
    for definition_ in schema["definitions"].values():
        for name, spec in definition_.get("properties", {}).items():
            types = spec.get("refTypes") or spec.get("items", {}).get("refTypes")
            if types:
                fields.setdefault(name, set()).update(types)
    return fields


NCNAME = re.compile(r"[A-Za-z_][A-Za-z0-9._-]*")
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
COUNT_FIELDS = {"Count", "BallotsCast", "BallotsOutstanding", "BallotsRejected", "Overvotes",
                "Undervotes", "WriteIns", "VotersRegistered", "VotersParticipated",
                "TotalSubUnits", "SubUnitsReported", "SequenceStart", "SequenceEnd"}
NOT_A_REFERENCE = {"VendorApplicationId"}


def reference_problems(report: Report, schema: dict[str, Any]) -> list[str]:
    fields = reference_fields(schema)
    found: list[str] = []
    ids = [o["@id"] for o in objects(report) if "@id" in o]
    found += [f"@id {i!r} is used {n} times" for i, n in Counter(ids).items() if n > 1]
    found += [f"@id {i!r} is not an xsd:ID (NCName)" for i in ids if not NCNAME.fullmatch(i)]
    types = {o["@id"]: o["@type"] for o in objects(report) if "@id" in o}
    for obj in objects(report):
        for key, value in obj.items():
            if key.endswith(("Id", "Ids")) and key not in fields and key not in NOT_A_REFERENCE:
                found.append(f"{key}: a reference field the harness does not know")
            if key not in fields:
                continue
            for target in value if isinstance(value, list) else [value]:
                if target not in types:
                    found.append(f"{key} {target!r} refers to no @id in the report")
                elif types[target] not in fields[key]:
                    found.append(f"{key} {target!r} is a {types[target]}, not one of {sorted(fields[key])}")
    return found


def value_problems(report: Report) -> list[str]:
    found = []
    for obj in objects(report):
        for key in COUNT_FIELDS & obj.keys():
            value = obj[key]
            if type(value) is not int or value < 0:
                found.append(f"{obj['@type']}.{key} = {value!r} is not a non-negative integer")
        if "GeneratedDate" in obj and not DATE_TIME.fullmatch(obj["GeneratedDate"]):
            found.append(f"GeneratedDate {obj['GeneratedDate']!r} is not a plain date-time")
        found += [f"{key} {obj[key]!r} is not a date" for key in ("StartDate", "EndDate")
                  if key in obj and not DATE.fullmatch(obj[key])]
    return found


def problems(report: Report, schema: dict[str, Any]) -> list[str]:
    """Everything wrong with a report: the schema's errors, then what the schema misses."""
    validator = Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    found = [f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
             for e in validator.iter_errors(report)]
    return found + reference_problems(report, schema) + value_problems(report)


# What the harness finds in the third-party samples beyond the schema: the Jetsons sample
# refers to "Person_Cogswell-Spencer", but the Person's @id is "Person_Cogswell_Spencer".
KNOWN_SAMPLE_PROBLEMS = {
    "jetsons_election_definition.json": [
        "PersonId 'Person_Cogswell-Spencer' refers to no @id in the report"],
}


@pytest.mark.parametrize("sample", SAMPLES)
def test_the_harness_on_the_shared_samples(schema: dict[str, Any], sample: str) -> None:
    instance = json.loads((NIST / sample).read_text())
    validator = Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    assert list(validator.iter_errors(instance)) == []
    assert problems(instance, schema) == KNOWN_SAMPLE_PROBLEMS.get(sample, [])


def test_the_harness_catches_what_the_schema_misses(schema: dict[str, Any]) -> None:
    report = json.loads((NIST / "minimal_party_list_precinct_example.json").read_text())
    selection = report["Election"][0]["Contest"][0]["ContestSelection"][0]
    selection["VoteCounts"][0]["Count"] = 410.5
    selection["VoteCounts"][1]["Count"] = -5
    selection["VoteCounts"][2]["GpUnitId"] = "gp-nowhere"
    selection["PartyIds"] = ["gp-country"]
    report["Party"].append(dict(report["Party"][0]))
    report["GeneratedDate"] = "at 2024-03-10T21:30:00Z or so"
    validator = Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
    assert list(validator.iter_errors(report)) == []  # all of it passes the schema alone
    assert sorted(problems(report, schema)) == sorted([
        "@id 'party-a' is used 2 times",
        "GpUnitId 'gp-nowhere' refers to no @id in the report",
        "PartyIds 'gp-country' is a ElectionResults.ReportingUnit, not one of "
        "['ElectionResults.Coalition', 'ElectionResults.Party']",
        "ElectionResults.VoteCounts.Count = 410.5 is not a non-negative integer",
        "ElectionResults.VoteCounts.Count = -5 is not a non-negative integer",
        "GeneratedDate 'at 2024-03-10T21:30:00Z or so' is not a plain date-time",
    ])


# --- reports of a real ledger -----------------------------------------------------------------

@pytest.fixture
def export(schema: dict[str, Any]) -> Export:
    """Builds a report from a ledger's read models, and fails on anything wrong with it."""

    def build(ledger: LedgerUnderTest, as_of: str | None = None, known_at: str | None = None,
              stage: str = "preliminary") -> Report:
        ledger.query("tally")  # any query catches the read models up with the log
        with closing(connect(os.environ["LEDGER_READ_MODELS"])) as db:
            report = election_report(db, load_election(db, None), moment(as_of, known_at),
                                     stage=stage)
        assert problems(report, schema) == []
        return report

    return build


def contest(report: Report) -> dict[str, Any]:
    (election,) = report["Election"]
    (only,) = election["Contest"]
    return only


def votes(report: Report, unit: str) -> dict[str, int]:
    """Selection @id -> the count at one GpUnit."""
    return {selection["@id"]: counts["Count"]
            for selection in contest(report)["ContestSelection"]
            for counts in selection["VoteCounts"] if counts["GpUnitId"] == unit}


def ballots(report: Report, unit: str) -> tuple[int, int] | None:
    found = [(b["BallotsCast"], b["BallotsRejected"])
             for b in report["Election"][0]["BallotCounts"] if b["GpUnitId"] == unit]
    assert len(found) <= 1
    return found[0] if found else None


def unit(report: Report, unit_id: str) -> dict[str, Any]:
    (found,) = [u for u in report["GpUnit"] if u["@id"] == unit_id]
    return found


def tally_of(a: int, b: int, c: int, d: int) -> dict[str, int]:
    return {"sel-a": a, "sel-b": b, "sel-c": c, "sel-d": d}


@pytest.mark.parametrize(
    ("stage", "as_of", "status"),
    [
        ("preliminary", T("07T19:00:00"), "pre-election"),  # registered, nothing reported
        ("preliminary", T("07T20:15:00"), "unofficial-partial"),
        ("preliminary", T("07T21:45:00"), "unofficial-partial"),
        ("preliminary", T("07T23:00:00"), "unofficial-complete"),
        ("preliminary", None, "recount"),  # s1's recount protocol supersedes s1-b
        ("final", T("07T23:00:00"), "unofficial-complete"),  # no appeal yet
        ("final", T("08T12:00:00"), "unofficial-partial"),  # n2 and s1 contested
        ("final", T("10T12:00:00"), "unofficial-partial"),  # s1 awaits its recount
        ("final", T("11T12:00:00"), "recount"),  # the recount is in, not yet certified
        ("final", None, "certified"),
    ],
)
def test_status_follows_the_ledger(night: tuple[LedgerUnderTest, str], export: Export,
                                   stage: str, as_of: str | None, status: str) -> None:
    assert export(night[0], as_of, stage=stage)["Status"] == status


def test_the_complete_night_by_station_region_and_nation(
    night: tuple[LedgerUnderTest, str], export: Export,
) -> None:
    report = export(night[0], T("07T23:00:00"))
    assert report["Status"] == "unofficial-complete"
    assert votes(report, COUNTRY) == tally_of(1110, 790, 350, 170)
    assert votes(report, NORTH) == tally_of(510, 490, 150, 70)
    assert votes(report, SOUTH) == tally_of(600, 300, 200, 100)
    assert votes(report, N1) == tally_of(400, 300, 100, 50)
    assert votes(report, N2) == tally_of(110, 190, 50, 20)  # the 21:30 correction
    assert votes(report, S1) == tally_of(600, 300, 200, 100)
    assert ballots(report, COUNTRY) == (2455, 35)
    assert ballots(report, NORTH) == (1235, 15)
    assert ballots(report, N2) == (375, 5)
    assert (unit(report, COUNTRY)["SubUnitsReported"], unit(report, COUNTRY)["TotalSubUnits"]) == (3, 3)
    assert unit(report, COUNTRY)["VotersRegistered"] == 3000
    assert unit(report, NORTH)["VotersRegistered"] == 1500
    assert report["Election"][0]["CountStatus"][0]["Status"] == "completed"
    every = [c for s in contest(report)["ContestSelection"] for c in s["VoteCounts"]]
    assert {c["Type"] for c in every} == {"total"}
    assert len(every) == 4 * 6  # four parties at three stations, two regions and the nation


def test_the_first_protocol_only(night: tuple[LedgerUnderTest, str], export: Export) -> None:
    report = export(night[0], T("07T20:15:00"))
    assert report["Status"] == "unofficial-partial"
    assert votes(report, COUNTRY) == votes(report, NORTH) == votes(report, N1) == tally_of(400, 300, 100, 50)
    assert votes(report, N2) == votes(report, S1) == votes(report, SOUTH) == {}
    assert ballots(report, COUNTRY) == (860, 10) and ballots(report, S1) is None
    assert [(unit(report, u)["SubUnitsReported"], unit(report, u)["TotalSubUnits"])
            for u in (COUNTRY, NORTH, SOUTH)] == [(1, 3), (1, 2), (0, 1)]
    assert report["Election"][0]["CountStatus"][0]["Status"] == "in-process"
    assert contest(report)["SubUnitsReported"] == 1


def test_final_and_certified_leaves_out_the_annulled_station(
    night: tuple[LedgerUnderTest, str], export: Export,
) -> None:
    report = export(night[0], stage="final")
    assert report["Status"] == "certified"
    assert votes(report, COUNTRY) == tally_of(950, 650, 300, 150)  # n1 + s1's recount
    assert votes(report, NORTH) == votes(report, N1) == tally_of(400, 300, 100, 50)
    assert votes(report, N2) == {} and ballots(report, N2) is None  # annulled on the 9th
    assert votes(report, S1) == votes(report, SOUTH) == tally_of(550, 350, 200, 100)
    assert ballots(report, COUNTRY) == (2080, 30)
    assert "annulled: n2" in report["Notes"]


def test_preliminary_now_carries_the_recount(night: tuple[LedgerUnderTest, str], export: Export) -> None:
    report = export(night[0])
    assert report["Status"] == "recount"
    assert votes(report, COUNTRY) == tally_of(1060, 840, 350, 170)
    assert votes(report, S1) == tally_of(550, 350, 200, 100)


def test_final_while_a_recount_is_awaited(night: tuple[LedgerUnderTest, str], export: Export) -> None:
    report = export(night[0], T("10T12:00:00"), stage="final")
    assert votes(report, COUNTRY) == tally_of(400, 300, 100, 50)  # n1 alone
    assert votes(report, S1) == {} and votes(report, N2) == {}
    assert "annulled: n2" in report["Notes"] and "awaiting recount: s1" in report["Notes"]
    recounted = export(night[0], T("11T12:00:00"), stage="final")
    assert recounted["Status"] == "recount"
    assert votes(recounted, COUNTRY) == tally_of(950, 650, 300, 150)


def test_known_at_hides_what_was_not_yet_recorded(
    night: tuple[LedgerUnderTest, str], export: Export,
) -> None:
    ledger, between = night
    report = export(ledger, known_at=between)
    assert report["Status"] == "unofficial-complete"  # the recount was not yet recorded
    assert votes(report, COUNTRY) == tally_of(1110, 790, 350, 170)
    final = export(ledger, known_at=between, stage="final")
    assert final["Status"] == "unofficial-complete"  # nor the appeals and the certification


def test_a_recount_before_the_other_stations_report(registered: LedgerUnderTest, export: Export) -> None:
    """Designed by hand: n1's board protocol is recounted; n2 and s1 have not reported."""
    registered.append(
        protocol("n1", "07T20:00:00", {"a": 400, "b": 300, "c": 100, "d": 50}, invalid=10,
                 event_id="n1-b"),
        protocol("n1", "08T12:00:00", {"a": 420, "b": 280, "c": 100, "d": 50}, invalid=10,
                 supersedes="n1-b", event_id="n1-r"),
    )
    before = export(registered, T("08T11:00:00"))
    assert before["Status"] == "unofficial-partial"
    assert votes(before, N1) == tally_of(400, 300, 100, 50)
    after = export(registered)
    assert after["Status"] == "recount"
    assert votes(after, N1) == votes(after, COUNTRY) == tally_of(420, 280, 100, 50)
    assert after["Election"][0]["CountStatus"][0]["Status"] == "in-process"  # still partial
    assert unit(after, COUNTRY)["SubUnitsReported"] == 1


def test_the_report_header_and_the_unit_hierarchy(
    night: tuple[LedgerUnderTest, str], export: Export,
) -> None:
    report = export(night[0], T("07T23:00:00"), known_at="2099-01-01T12:00:00.5+02:00")
    assert {k: report[k] for k in ("@type", "Format", "GeneratedDate", "Issuer", "IssuerAbbreviation",
                                   "SequenceStart", "SequenceEnd", "VendorApplicationId")} == {
        "@type": "ElectionResults.ElectionReport", "Format": "precinct-level",
        "GeneratedDate": "2099-01-01T10:00:00Z", "Issuer": "board", "IssuerAbbreviation": "board",
        "SequenceStart": 1, "SequenceEnd": 1, "VendorApplicationId": "election-ledger"}
    assert [u["@id"] for u in report["GpUnit"]] == [COUNTRY, NORTH, SOUTH, N1, N2, S1]
    assert unit(report, COUNTRY)["Type"] == "country"
    assert unit(report, COUNTRY)["ComposingGpUnitIds"] == [NORTH, SOUTH]
    assert unit(report, NORTH)["ComposingGpUnitIds"] == [N1, N2]
    assert unit(report, SOUTH)["ComposingGpUnitIds"] == [S1]
    assert {unit(report, s)["Type"] for s in (N1, N2, S1)} == {"precinct"}
    (election,) = report["Election"]
    assert (election["StartDate"], election["EndDate"]) == ("2030-04-07", "2030-04-07")
    assert (election["Type"], election["ElectionScopeId"]) == ("general", COUNTRY)
    assert election["Name"]["Text"][0]["Content"] == "Council 2030"
    party_contest = contest(report)
    assert party_contest["@type"] == "ElectionResults.PartyContest"
    assert party_contest["ElectionDistrictId"] == COUNTRY
    assert [(s["@id"], s["PartyIds"]) for s in party_contest["ContestSelection"]] == [
        ("sel-a", ["party-a"]), ("sel-b", ["party-b"]), ("sel-c", ["party-c"]), ("sel-d", ["party-d"])]
    assert [(p["@id"], p["Name"]["Text"][0]["Content"]) for p in report["Party"]] == [
        ("party-a", "Party A"), ("party-b", "Party B"), ("party-c", "Party C"), ("party-d", "Party D")]


def test_before_any_protocol_the_date_is_the_definition_s(
    registered: LedgerUnderTest, export: Export,
) -> None:
    report = export(registered)
    assert report["Status"] == "pre-election"
    assert report["Election"][0]["StartDate"] == "2030-04-01"
    assert report["Election"][0]["BallotCounts"] == []
    assert report["Election"][0]["CountStatus"][0]["Status"] == "not-processed"
    assert all(s["VoteCounts"] == [] for s in contest(report)["ContestSelection"])


def test_a_plurality_election_is_a_candidate_contest(ledger: LedgerUnderTest, export: Export) -> None:
    ledger.append(
        definition(method="plurality", seats=1, threshold_pct=0.0, choices=[
            {"id": "ann", "name": "Ann Lee", "party": "greens"},
            {"id": "bob", "name": "Bob Roe"},
            {"id": "cy", "name": "Cy Poe", "party": "greens"}]),
        station("w1", "West", 800), station("w2", "West", 700),
        protocol("w1", "07T20:00:00", {"ann": 300, "bob": 250, "cy": 50}, invalid=4),
    )
    report = export(ledger)
    race = contest(report)
    assert race["@type"] == "ElectionResults.CandidateContest"
    assert (race["VotesAllowed"], race["NumberElected"], race["VoteVariation"]) == (1, 1, "plurality")
    assert [(s["@id"], s["CandidateIds"]) for s in race["ContestSelection"]] == [
        ("sel-ann", ["cand-ann"]), ("sel-bob", ["cand-bob"]), ("sel-cy", ["cand-cy"])]
    assert [(c["@id"], c.get("PartyId")) for c in report["Election"][0]["Candidate"]] == [
        ("cand-ann", "party-greens"), ("cand-bob", None), ("cand-cy", "party-greens")]
    assert [p["@id"] for p in report["Party"]] == ["party-greens"]
    assert votes(report, "gp-station-w1") == {"sel-ann": 300, "sel-bob": 250, "sel-cy": 50}
    assert report["Status"] == "unofficial-partial"


def test_ids_are_escaped_into_distinct_xsd_ids(ledger: LedgerUnderTest, export: Export) -> None:
    ledger.append(definition(), station("n 1", "Юг:1", 10), station("n_1", "Юг:1", 20),
                  station("1n", "North", 30))
    report = export(ledger)  # the harness checks every @id is an NCName and unique
    stations = [u for u in report["GpUnit"] if u["Type"] == "precinct"]
    assert [(u["@id"], u["ExternalIdentifier"][0]["Value"]) for u in stations] == [
        ("gp-station-n_20_1", "n 1"), ("gp-station-n_5f_1", "n_1"), ("gp-station-1n", "1n")]
    assert unit(report, "gp-region-_42e__433__3a_1")["ExternalIdentifier"][0]["Value"] == "Юг:1"


def test_an_unknown_stage_is_refused(registered: LedgerUnderTest) -> None:
    registered.query("tally")
    with closing(connect(os.environ["LEDGER_READ_MODELS"])) as db, pytest.raises(QueryError, match="--stage"):
        election_report(db, load_election(db, None), moment(), stage="provisional")


def test_the_cli_exports_a_valid_report(night: tuple[LedgerUnderTest, str], schema: dict[str, Any]) -> None:
    result = night[0].run("export", "--format", "nist-err", "--stage", "final")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert problems(report, schema) == []
    assert report["Status"] == "certified"


def test_an_event_defined_later_than_the_moment_is_not_in_the_report(
    registered: LedgerUnderTest, export: Export,
) -> None:
    registered.append(ev("StationRegistered", "09T12:00:00", station="late", region="East",
                         registered_voters=10))
    assert "gp-station-late" not in {u["@id"] for u in export(registered, T("08T12:00:00"))["GpUnit"]}
    assert "gp-station-late" in {u["@id"] for u in export(registered)["GpUnit"]}


def test_the_documented_example_is_real_output(ledger: LedgerUnderTest, schema: dict[str, Any]) -> None:
    """Every complete one-line object and every scalar field shown in docs/nist.md's example is in
    the report the documented command prints for the bundled sample."""
    root = Path(__file__).resolve().parents[1]
    assert ledger.run("append", str(root / "ledger" / "samples" / "council-2030.jsonl")).code == 0
    result = ledger.run("export", "--format", "nist-err", "--stage", "final",
                        "--known-at", "2030-04-12T12:00:00+02:00")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert problems(report, schema) == []
    example = re.search(r"```jsonc\n(.*?)```", (root / "docs" / "nist.md").read_text(), re.S)
    assert example is not None
    real = list(objects(report))
    shown_objects, shown_fields = [], []
    for line in example.group(1).splitlines():
        text = line.strip().rstrip(",")
        if text.startswith("{") and (whole := _leading_object(text)) is not None:
            shown_objects.append(whole)
        elif field := re.fullmatch(r'"([@\w]+)": ("[^"…]*"|\d+)', text):
            shown_fields.append((field.group(1), json.loads(field.group(2))))
    assert len(shown_objects) >= 8 and len(shown_fields) >= 20
    assert [o for o in shown_objects if o not in real] == []
    assert [f for f in shown_fields if not any(o.get(f[0]) == f[1] for o in real)] == []


def _leading_object(text: str) -> dict[str, Any] | None:
    """The JSON object a line starts with, if the line shows it whole (no "…" inside)."""
    try:
        found, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError:
        return None
    return found if "…" not in text[:end] else None
