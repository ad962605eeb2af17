"""The report's tables as rows of plain values, built from the facts: which columns each
table has, and what each cell says. The template decides how a cell is drawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from .display import MINUS, Num, listing, pct, points, signed, when
from .facts import Facts, Tally

ROW_LIMIT = 200  # longer tables are cut: the CLI's audit views list everything


@dataclass(frozen=True)
class Party:
    """A party cell: its name beside a swatch of its chart colour."""

    name: str
    color: str


Cell = int | float | str | Party | None


@dataclass(frozen=True)
class Table:
    id: str
    headers: list[str]
    rows: list[list[Cell]]
    keys: list[str] | None = None  # each row's choice id, for readers that look rows up
    total: int | None = None  # rows there were before the cut to ROW_LIMIT
    numeric: list[bool] = field(init=False)

    def __post_init__(self) -> None:
        # A column is aligned as numbers if any of its cells is one.
        object.__setattr__(self, "numeric", [
            any(is_number(row[i]) for row in self.rows) for i in range(len(self.headers))])


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | Num) and not isinstance(value, bool)


def tally_table(facts: Facts, result: Tally, colors: dict[str, str], table_id: str) -> Table:
    announced = result["announced"]
    headers = ["Party", "Votes", "Share of valid", "Passes threshold"]
    if announced:
        headers += ["Announced", f"Announced {MINUS} computed"]
    rows = []
    for choice, name, _ in facts.election.choices:
        votes = result["votes"].get(choice, 0)
        row: list[Cell] = [Party(name, colors[choice]), votes, pct(result["shares"].get(choice)),
                           "yes" if choice in result["passing"] else "no"]
        if announced:
            said = announced["votes"].get(choice)
            row += [said, signed(said - votes) if said is not None else None]
        rows.append(row)
    return Table(table_id, headers, rows, keys=[c for c, _, _ in facts.election.choices])


def seats_table(facts: Facts, colors: dict[str, str]) -> Table:
    alloc = facts.allocation
    valid = sum(alloc["votes"].values())
    rows: list[list[Cell]] = []
    for choice, name, _ in facts.election.choices:
        votes, won = alloc["votes"].get(choice, 0), alloc["seats"].get(choice, 0)
        rows.append([Party(name, colors[choice]), votes, pct(100 * votes / valid if valid else None),
                     won, pct(100 * won / alloc["seats_total"] if alloc["seats_total"] else None)])
    return Table("seats", ["Party", "Votes", "Share of valid", "Seats", "Share of seats"], rows,
                 keys=[c for c, _, _ in facts.election.choices])


def after_night_table(facts: Facts, zone: tzinfo) -> Table:
    rows: list[list[Cell]] = [[when(p.occurred_at, zone), p.station, p.event_id, p.supersedes or ""]
                              for p in facts.after_night[:ROW_LIMIT]]
    return Table("after-night", ["Occurred", "Station", "Event", "Supersedes"], rows,
                 total=len(facts.after_night))


def withheld_tables(facts: Facts, zone: tzinfo) -> tuple[Table, Table]:
    """The comparison per requester, and the list of refusals folded under it."""
    comparison: list[list[Cell]] = [
        [requester(facts, c["requested_by"], c["choice"]),
         c["stations_withheld"], pct(c["official_share_where_withheld_pct"]),
         c["stations_copied"], pct(c["official_share_where_copied_pct"]),
         pct(c["own_count_share_where_copied_pct"]), points(c["gap_pct_points"])]
        for c in facts.withheld["comparison"]]
    refusals: list[list[Cell]] = [
        [w["station"], w["requested_by"], when(w["withheld_at"], zone), w["reason"],
         when(w["copy_received_at"], zone) if w["copy_received_at"] else "no"]
        for w in facts.withheld["withheld"]]
    return (
        Table("withheld-comparison", ["Requested by", "Stations withheld", "Official share there",
                                      "Stations copied", "Official share there",
                                      "Own count where copied", f"Gap (withheld {MINUS} copied)"],
              comparison),
        Table("withheld-list", ["Station", "Requested by", "Refused at", "Reason given",
                                "Copy received later"], refusals),
    )


def requester(facts: Facts, requested_by: str, choice: str | None) -> str:
    if choice is None:
        return f"{requested_by} (not on the ballot)"
    name = facts.election.names[choice]
    return requested_by if requested_by == name else f"{requested_by} ({name})"


def discrepancies_table(facts: Facts, zone: tzinfo) -> Table:
    rows: list[list[Cell]] = [
        [when(d["announced_at"], zone), d["stage"], d["scope"], d["stations_reporting"],
         d["announced_total"], d["computed_total"], differences(facts, d["difference"]),
         "yes" if d["matches"] else "no"] for d in facts.discrepancies]
    return Table("discrepancies", ["Announced", "Stage", "Scope", "Stations counted then",
                                   "Announced votes", "Protocols sum", f"Announced {MINUS} computed",
                                   "Matches"], rows)


def differences(facts: Facts, difference: dict[str, int]) -> str:
    names = facts.election.names
    return "; ".join(f"{names.get(c, c)} {signed(d)}" for c, d in difference.items()) or "—"


def conflicts_table(facts: Facts) -> Table:
    rows: list[list[Cell]] = [
        [c["station"], c["reporter"], field_name(facts, c["field"]), c["authority"], c["reported"],
         signed(c["authority"] - c["reported"]) if _both_counts(c) else None]
        for c in facts.conflicts[:ROW_LIMIT]]
    return Table("conflicts", ["Station", "Copy from", "Field", "Official", "Copy",
                               f"Official {MINUS} copy"], rows, total=len(facts.conflicts))


def field_name(facts: Facts, name: str) -> str:
    """A protocol field as a reader would say it."""
    if name.startswith("votes."):
        choice = name.removeprefix("votes.")
        return f"votes for {facts.election.names.get(choice, choice)}"
    if name.startswith("lines."):
        return f"protocol line {name.removeprefix('lines.')}"
    return name.replace("_", " ")


def _both_counts(conflict: dict[str, Any]) -> bool:
    return isinstance(conflict["authority"], int) and isinstance(conflict["reported"], int)


def appeals_table(facts: Facts, zone: tzinfo) -> Table:
    rows: list[list[Cell]] = [
        [a["appeal"], a["filed_by"], when(a["filed_at"], zone), a["demand"],
         listing(a["stations"]) or "the result as a whole", a["grounds"], a["status"],
         when(a["decided_at"], zone) if a["decided_at"] else None, a["remedy"], remedy_scope(a)]
        for a in facts.appeals[:ROW_LIMIT]]
    return Table("appeals", ["Appeal", "Filed by", "Filed", "Demand", "Stations", "Grounds", "Status",
                             "Decided", "Remedy", "Remedy applies to"], rows, total=len(facts.appeals))


def remedy_scope(appeal: dict[str, Any]) -> str | None:
    if appeal["remedy_stations"]:
        return listing(appeal["remedy_stations"])
    # A decision that names no stations applies its remedy to the appeal's own.
    return "the stations appealed" if appeal["remedy"] not in (None, "none") else None


def control_failures_table(facts: Facts, zone: tzinfo) -> Table:
    rows: list[list[Cell]] = [
        [f["station"], f["reporter"], when(f["occurred_at"], zone), "; ".join(map(str, f["failures"]))]
        for f in facts.control_failures[:ROW_LIMIT]]
    return Table("control-failures", ["Station", "Reported by", "Issued", "Failed checks"], rows,
                 total=len(facts.control_failures))


def signers_table(facts: Facts) -> Table:
    rows: list[list[Cell]] = [
        [s["reporter"], s["protocols"], s["signed_protocols"], ", ".join(s["keys"]) or None,
         ", ".join(s["revoked_keys"]) or None]
        for s in facts.signers]
    return Table("signers", ["Reporter", "Protocols", "Signed", "Keys", "Revoked keys"], rows)


KEY_ACTS = {"registered": "key registered", "rotated": "key added (rotation)",
            "revoked": "key revoked"}


def key_acts_table(facts: Facts, zone: tzinfo) -> Table:
    """Who gave or took each key: the operator's acts stand out from the reporters' own."""
    rows: list[list[Cell]] = [
        [when(k["occurred_at"], zone), k["position"], k["reporter"], KEY_ACTS[k["act"]], k["key"],
         "the operator" if k["act"] != "rotated" else f"{k['acted_by']} (signed)", k["reason"]]
        for k in facts.key_acts[:ROW_LIMIT]]
    return Table("key-acts", ["Occurred", "Position", "Reporter", "Act", "Key", "By", "Reason"],
                 rows, total=len(facts.key_acts))


def final_status(final: Tally) -> str:
    if final["certified"]:
        return "certified"
    if final["status"] == "contested":
        return "not certified; stations contested"
    return "not certified"


def reproduce_command(facts: Facts) -> str:
    """The command that writes this page again; without a known-at bound, the time of
    writing becomes one, or events appended later would change a rerun."""
    at = facts.moment
    command = ["ledger report --out FILE.html", f"--election {facts.election.id}"]
    if at.as_of:
        command.append(f"--as-of {at.as_of.isoformat()}")
    command.append(f"--known-at {(at.known_at or datetime.now(UTC)).isoformat(timespec='seconds')}")
    return " ".join(command)
