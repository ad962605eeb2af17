"""``ledger report``: one self-contained HTML page about an election as of a moment.

The page holds the preliminary and final tallies, the seats, how the count moved through
the night, the turnout-versus-share forensics chart, withheld versus copied protocols and the
disputes. CSS is inline and charts are matplotlib SVG inlined in the page, so the file can be
mailed, archived or opened offline and shows the same thing everywhere: nothing is fetched.
"""

from __future__ import annotations

import html
import io
import json
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from projections.audit import (
    appeals_of,
    conflicts,
    control_failures,
    discrepancies,
    signers,
    withheld,
)
from projections.moment import Moment, stamp, visible
from projections.schema import applied_position
from projections.tally import COUNTED, Election, seats, tally

NIGHT_POINTS = 24
# An election night, counted from the first official protocol: long enough for the slowest
# station to report, short of the recounts and corrections that come days later.
NIGHT_WINDOW = timedelta(hours=24)
FORENSICS_PARTIES = 4
ROW_LIMIT = 200  # longer tables are cut: the CLI's audit views list everything
METHODS = {
    "dhondt": "D'Hondt", "sainte_lague": "Sainte-Laguë", "modified_sainte_lague": "modified Sainte-Laguë",
    "hare": "Hare largest remainder", "droop": "Droop largest remainder",
    "hagenbach_bischoff": "Hagenbach-Bischoff", "plurality": "plurality",
    "hare_to_largest_parties": "Hare quota, leftover seats to the largest parties",
}
# Okabe-Ito, reordered so the first parties get the most distinct hues; colour-blind safe.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D1F", "#555555"]
OTHER = "#BDBDBD"
MINUS = "\u2212"  # the typographic minus, as newspapers set it
STYLE = {
    "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 9.5,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False,
    "axes.spines.right": False, "axes.edgecolor": "#888888", "axes.labelcolor": "#333333",
    "xtick.color": "#555555", "ytick.color": "#555555", "axes.grid": True,
    "grid.color": "#E6E6E6", "grid.linewidth": 0.8, "axes.axisbelow": True,
    "legend.frameon": False, "figure.facecolor": "white", "svg.fonttype": "path",
}


class Html(str):
    """Markup built here from escaped parts: table cells take it as it is."""


class Num(str):
    """A number already formatted (a percentage, a signed difference): aligned as a number."""


@dataclass(frozen=True)
class Context:
    db: Any
    election: Election
    moment: Moment
    zone: tzinfo
    colors: dict[str, str]
    preliminary: dict[str, Any]
    final: dict[str, Any]
    allocation: dict[str, Any]


def render_report(db: Any, election: Election, moment: Moment) -> str:
    """The whole report as one HTML document, computed from what is visible at ``moment``."""
    plt = _pyplot()
    ctx = Context(
        db, election, moment, _display_zone(moment), _palette(election),
        preliminary=tally(db, election, moment),
        final=tally(db, election, moment, stage="final"),
        allocation=seats(db, election, moment, stage="final"),
    )
    with plt.rc_context(STYLE):
        body = "".join([
            _header(ctx), _results(ctx), _night(ctx), _forensics(ctx), _withheld(ctx),
            _disputes(ctx), _footer(ctx),
        ])
    return _page(election.name, body)


def _pyplot() -> Any:
    # Imported here, not at module level: matplotlib costs about a second to import and only
    # this command needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------
# Sections


def _header(ctx: Context) -> str:
    e, prelim, final = ctx.election, ctx.preliminary, ctx.final
    base = "valid votes" if e.threshold_base == "valid" else "ballots cast"
    dek = (f"{e.seats} seats by {METHODS.get(e.method, e.method)}; threshold {e.threshold_pct:g}% "
           f"of {base}; official results reported by {e.authority}.")
    leader = max(prelim["votes"], key=prelim["votes"].get, default=None)
    figures = [
        ("Stations reporting", f"{prelim['stations_reporting']:,} of {prelim['stations_total']:,}"),
        ("Turnout", _pct(prelim["turnout_pct"]) or "—"),
        ("Leading", f"{e.names[leader]}, {_pct(prelim['shares'][leader])}" if leader else "—"),
        ("Final result", _final_status(final)),
    ]
    return (
        '<header><p class="kicker">Election results report</p>'
        f"<h1>{_esc(e.name)}</h1><p class=\"dek\">{_esc(dek)}</p>"
        f'<dl class="moment">{_moment_terms(ctx)}</dl>'
        '<p class="note">Every figure below is computed from the events the ledger shows at this '
        "moment: those that had occurred by the <em>as of</em> time and had been recorded by the "
        "<em>known at</em> time. Later events, and corrections recorded later, are not in it. "
        f"Times are shown in {_esc(_zone_label(ctx.zone))}.</p>"
        '<div class="figures">'
        + "".join(f"<div><span>{_esc(k)}</span><strong>{_esc(v)}</strong></div>" for k, v in figures)
        + "</div></header>"
    )


def _moment_terms(ctx: Context) -> str:
    as_of, known = ctx.moment.as_of, ctx.moment.known_at
    terms = [
        ("As of (when things happened)",
         _when(as_of, ctx.zone) if as_of else "no bound: everything that has happened"),
        ("Known at (when the ledger recorded them)",
         _when(known, ctx.zone) if known else "no bound: everything the ledger holds"),
        ("Ledger log position", f"{applied_position(ctx.db):,} events applied"),
    ]
    return "".join(f"<div><dt>{_esc(t)}</dt><dd>{_esc(d)}</dd></div>" for t, d in terms)


def _results(ctx: Context) -> str:
    prelim, final = ctx.preliminary, ctx.final
    parts = [
        '<section id="results"><h2>Results</h2>',
        "<h3>Preliminary tally</h3>",
        "<p>The sum of the official protocols of the stations that have reported. Where the "
        "authority announced a preliminary result, its figures are set beside the sum of its own "
        "protocols.</p>",
        _summary_line(prelim),
        _tally_table(ctx, prelim, "preliminary-tally"),
        "<h3>Final tally</h3>",
        "<p>As the preliminary tally, but leaving out stations under an appeal that is not yet "
        "decided, stations whose result was annulled, and recounted stations whose new protocol "
        "has not arrived.</p>",
        _summary_line(final),
        _exclusions(final),
        _tally_table(ctx, final, "final-tally"),
        _seats_part(ctx),
        "</section>",
    ]
    return "".join(parts)


def _summary_line(result: dict[str, Any]) -> str:
    facts = [
        f"{result['stations_reporting']:,} of {result['stations_total']:,} stations counted",
        f"turnout {_pct(result['turnout_pct']) or 'unknown'}",
        f"{result['valid_votes']:,} valid votes",
        f"{result['invalid']:,} invalid",
        f"status: {result['status']}",
    ]
    return f'<p class="facts">{_esc(" · ".join(facts))}</p>'


def _exclusions(final: dict[str, Any]) -> str:
    kinds = [("contested", "Left out while an appeal is pending"),
             ("annulled", "Annulled on appeal"),
             ("awaiting_recount", "Awaiting a recount protocol")]
    items = [f"<li>{_esc(label)}: {_esc(_list(final[key]))}</li>"
             for key, label in kinds if final[key]]
    return f'<ul class="excluded">{"".join(items)}</ul>' if items else ""


def _tally_table(ctx: Context, result: dict[str, Any], table_id: str) -> str:
    announced = result["announced"]
    headers = ["Party", "Votes", "Share of valid", "Passes threshold"]
    if announced:
        headers += ["Announced", f"Announced {MINUS} computed"]
    rows, keys = [], []
    for choice, name, _ in ctx.election.choices:
        votes = result["votes"].get(choice, 0)
        row: list[Any] = [_party(ctx, choice, name), votes, _pct(result["shares"].get(choice)),
                          "yes" if choice in result["passing"] else "no"]
        if announced:
            said = announced["votes"].get(choice)
            row += [said, _signed(said - votes) if said is not None else None]
        rows.append(row)
        keys.append(choice)
    return _table(headers, rows, keys=keys, table_id=table_id) + _announced_note(ctx, result)


def _announced_note(ctx: Context, result: dict[str, Any]) -> str:
    announced = result["announced"]
    if not announced:
        return ""
    # The tally's comparison is with today's protocols, corrections and recounts included;
    # the discrepancies table compares with what was visible when the figure was announced.
    return (f'<p class="note">Announced: the {_esc(result["stage"])} result announced on '
            f"{_esc(_when(announced['occurred_at'], ctx.zone))}, set against the protocols visible "
            "at this report's moment, later corrections and recounts included. Below, "
            "<em>Announcements against the protocols</em> compares it with the protocols visible "
            "when it was announced.</p>")


def _seats_part(ctx: Context) -> str:
    alloc = ctx.allocation
    rows, keys = [], []
    valid = sum(alloc["votes"].values())
    for choice, name, _ in ctx.election.choices:
        votes, won = alloc["votes"].get(choice, 0), alloc["seats"].get(choice, 0)
        rows.append([_party(ctx, choice, name), votes, _pct(100 * votes / valid if valid else None),
                     won, _pct(100 * won / alloc["seats_total"] if alloc["seats_total"] else None)])
        keys.append(choice)
    ties = "".join(f"<p class=\"note\">Tie: {_esc(str(t))}</p>" for t in alloc["ties"])
    return (
        "<h3>Seats</h3>"
        f"<p>{alloc['seats_total']:,} seats allocated by "
        f"{_esc(METHODS.get(alloc['method'], alloc['method']))} "
        f"among the parties over the threshold ({alloc['threshold_votes']:,.0f} votes), from the "
        "final tally. The chart sets each party's share of the seats beside its share of the "
        "votes: the gap is what the threshold and the method do.</p>"
        + _figure(_seats_chart(ctx), "Share of seats and share of votes, by party")
        + _table(["Party", "Votes", "Share of valid", "Seats", "Share of seats"], rows, keys=keys,
                 table_id="seats")
        + ties
    )


def _night(ctx: Context) -> str:
    series = _night_series(ctx)
    head = '<section id="night"><h2>Through the night</h2>'
    if not series:
        return head + "<p>No official protocol is visible at this moment.</p></section>"
    return _night_chart_part(ctx, series, head) + _after_the_night(ctx, series[0][0])


def _after_the_night(ctx: Context, first: datetime) -> str:
    """Protocols after the night window (recounts, corrections days later), as a list: on
    the chart they would stretch the time axis until the night filled its first step."""
    later = ctx.db.execute(
        "SELECT occurred_at, station, event_id, supersedes FROM protocols "
        f"WHERE election = :election AND reported_by = :reporter AND {visible()} "
        "AND occurred_at > :night_end ORDER BY occurred_at, position",
        {"election": ctx.election.id, "reporter": ctx.election.authority,
         **ctx.moment.bounds(), "night_end": stamp(first + NIGHT_WINDOW)},
    ).fetchall()
    if not later:
        return "</section>"
    rows = [[_when(_instant(at), ctx.zone), station, event_id, supersedes or ""]
            for at, station, event_id, supersedes in later[:ROW_LIMIT]]
    return (
        f"<h3>After the night</h3><p>{_esc(_plural(len(later), 'official protocol'))} arrived "
        f"more than {NIGHT_WINDOW // timedelta(hours=1)} hours after the first; the chart above leaves "
        "them out so that the night stays readable. The tallies above include them.</p>"
        + _table(["Occurred", "Station", "Event", "Supersedes"], rows, table_id="after-night")
        + _cut(len(later)) + "</section>"
    )


def _night_chart_part(ctx: Context, series: list[tuple[datetime, dict[str, Any]]],
                      head: str) -> str:
    first, last = series[0][0], series[-1][0]
    span = (f"at {len(series)} moments between the first official protocol "
            f"({_when(first, ctx.zone)}) and the last ({_when(last, ctx.zone)})" if len(series) > 1
            else f"when the only official protocol so far arrived ({_when(first, ctx.zone)})")
    return (
        head
        + f"<p>The preliminary tally recomputed {_esc(span)}. "
        "Early returns often come from a few kinds of places (cities, or stations near the "
        "counting centre), so shares drift as the rest arrives; a late, sharp move deserves a "
        "look at which stations reported then.</p>"
        + _figure(_night_chart(ctx, series),
                  "Share of valid votes per party (top) and share of stations reporting (bottom)")
    )


def _night_series(ctx: Context) -> list[tuple[datetime, dict[str, Any]]]:
    params = {"election": ctx.election.id, "reporter": ctx.election.authority,
              **ctx.moment.bounds()}
    first = ctx.db.execute(
        "SELECT MIN(occurred_at) FROM protocols WHERE election = :election "
        f"AND reported_by = :reporter AND {visible()}", params,
    ).fetchone()[0]
    if first is None:
        return []
    start = _instant(first)
    # The night is the window after the first protocol; what comes later is listed apart.
    last = ctx.db.execute(
        "SELECT MAX(occurred_at) FROM protocols WHERE election = :election "
        f"AND reported_by = :reporter AND {visible()} AND occurred_at <= :night_end",
        {**params, "night_end": stamp(start + NIGHT_WINDOW)},
    ).fetchone()[0]
    end = _instant(last)
    steps = NIGHT_POINTS - 1 if end > start else 0
    # The known-at bound stays: the night as the ledger knew it at the report's moment.
    times = [start + (end - start) * i / steps if steps else start for i in range(steps + 1)]
    return [(t, tally(ctx.db, ctx.election, Moment(as_of=t, known_at=ctx.moment.known_at)))
            for t in times]


def _forensics(ctx: Context) -> str:
    points = _station_points(ctx)
    top = [c for c in sorted(ctx.preliminary["votes"], key=ctx.preliminary["votes"].get, reverse=True)
           if ctx.preliminary["votes"][c]][:FORENSICS_PARTIES]
    head = ('<section id="forensics"><h2>Turnout and vote share, station by station</h2>'
            "<p>Each dot is one polling station, from its official protocol: across, the turnout "
            "(ballots cast over registered voters); up, the party's share of the valid votes. "
            "The dashed lines mark the party's national share and the national turnout.</p>")
    if not points or not top:
        return head + "<p>No station with a known electorate has reported yet.</p></section>"
    return (
        head
        + f'<p class="note">{_plural(len(points), "station")} shown; stations whose electorate is '
        "unknown are left out.</p>"
        + _figure(_forensics_chart(ctx, points, top),
                  "Turnout against vote share, one dot per station, for the largest parties")
        + "<p><strong>How to read it.</strong> In a clean count the dots usually form a compact, "
        "roughly round cloud: turnout and support vary from place to place without being tied "
        "together. Election forensics (Klimek, Yegorov, Hanel and Thurner, <em>PNAS</em> 2012) looks "
        "for a smear towards the top right (stations where turnout and one party's share are both "
        "near 100%), a second cluster there, or dots piled on round numbers: patterns that ballot "
        "stuffing and written-in results leave behind.</p>"
        "<p><strong>Limits.</strong> A pattern is a question, not proof. Real places differ "
        "(a village that votes as one, a barracks, a hospital), small stations give noisy shares, "
        "and stations with unusual registers sit off the cloud for dull reasons. A suspicious shape "
        "tells you which stations to look at: their protocols, the observers' copies, the appeals."
        "</p></section>"
    )


def _station_points(ctx: Context) -> list[tuple[float, dict[str, float]]]:
    """(turnout %, share % per party) of each station's effective official protocol."""
    params = {"election": ctx.election.id, **ctx.moment.bounds(),
              "reporter": ctx.election.authority, "scope": None, "excluded": "[]"}
    points = []
    for registered, cast, votes_json in ctx.db.execute(
        COUNTED + "SELECT counted.registered_voters, p.ballots_cast, p.votes "
        "FROM counted JOIN protocols p USING (position)", params,
    ):
        votes = json.loads(votes_json)
        valid = sum(votes.values())
        if not registered or not valid:  # no electorate known, or nothing to share out
            continue
        points.append((100 * cast / registered, {c: 100 * v / valid for c, v in votes.items()}))
    return points


def _withheld(ctx: Context) -> str:
    found = withheld(ctx.db, ctx.moment, election=ctx.election.id)
    head = '<section id="withheld"><h2>Withheld protocols</h2>'
    if not found["withheld"]:
        return head + "<p>No party or observer has recorded a refused protocol.</p></section>"
    rows = [[_requester(ctx, c["requested_by"], c["choice"]),
             c["stations_withheld"], _pct(c["official_share_where_withheld_pct"]),
             c["stations_copied"], _pct(c["official_share_where_copied_pct"]),
             _pct(c["own_count_share_where_copied_pct"]), _points(c["gap_pct_points"])]
            for c in found["comparison"]]
    listed = [[w["station"], w["requested_by"], _when(w["withheld_at"], ctx.zone), w["reason"],
               _when(w["copy_received_at"], ctx.zone) if w["copy_received_at"] else "no"]
              for w in found["withheld"]]
    return (
        head
        + "<p>Parties and observers ask each station commission for a signed copy of its protocol. "
        "When a copy is refused where the party did well, its own count cannot contradict the "
        "official one there. This compares the party's <em>official</em> share at the stations "
        "where its copy was refused with the stations where it got one. A large gap says the "
        "refusals were not random; it does not show by itself that the official figures are "
        "false.</p>"
        + _figure(_withheld_chart(ctx, found["comparison"]),
                  "Official share where the protocol was withheld versus where a copy was given")
        + _table(["Requested by", "Stations withheld", "Official share there", "Stations copied",
                  "Official share there", "Own count where copied", f"Gap (withheld {MINUS} copied)"],
                 rows, table_id="withheld-comparison")
        + f"<details><summary>{_refusals(len(listed))}</summary>"
        + _table(["Station", "Requested by", "Refused at", "Reason given", "Copy received later"],
                 listed, table_id="withheld-list")
        + "</details></section>"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _refusals(count: int) -> str:
    return "The refusal" if count == 1 else f"All {count:,} refusals"


def _requester(ctx: Context, requester: str, choice: str | None) -> str:
    if choice is None:
        return f"{requester} (not on the ballot)"
    name = ctx.election.names[choice]
    return requester if requester == name else f"{requester} ({name})"


def _disputes(ctx: Context) -> str:
    return (
        '<section id="disputes"><h2>Disputes and discrepancies</h2>'
        + _discrepancies(ctx) + _conflicts(ctx) + _appeals(ctx) + _control_failures(ctx)
        + _signed_protocols(ctx) + "</section>"
    )


def _discrepancies(ctx: Context) -> str:
    found = discrepancies(ctx.db, ctx.election, ctx.moment)
    head = ("<h3>Announcements against the protocols</h3><p>Each announced result set beside the "
            "tally of the announcer's own protocols visible when it was announced.</p>")
    if not found:
        return head + "<p>No result has been announced.</p>"
    rows = [[_when(d["announced_at"], ctx.zone), d["stage"], d["scope"], d["stations_reporting"],
             d["announced_total"], d["computed_total"], _differences(ctx, d["difference"]),
             "yes" if d["matches"] else "no"] for d in found]
    return head + _table(["Announced", "Stage", "Scope", "Stations counted then", "Announced votes",
                          "Protocols sum", f"Announced {MINUS} computed", "Matches"], rows,
                         table_id="discrepancies")


def _conflicts(ctx: Context) -> str:
    found = conflicts(ctx.db, ctx.election, ctx.moment)
    head = ("<h3>Conflicting protocols</h3><p>Stations where a party's or observer's signed copy "
            f"differs from the official protocol of {_esc(ctx.election.authority)}.</p>")
    if not found:
        return head + "<p>None: every copy matches the official protocol.</p>"
    rows = [[c["station"], c["reporter"], _field(ctx, c["field"]), c["authority"], c["reported"],
             _signed(c["authority"] - c["reported"]) if _both_ints(c) else None]
            for c in found[:ROW_LIMIT]]
    headers = ["Station", "Copy from", "Field", "Official", "Copy", f"Official {MINUS} copy"]
    return head + _table(headers, rows, table_id="conflicts") + _cut(len(found))


def _appeals(ctx: Context) -> str:
    found = appeals_of(ctx.db, ctx.election, ctx.moment)
    head = "<h3>Appeals</h3>"
    if not found:
        return head + "<p>No appeal has been filed.</p>"
    rows = [[a["appeal"], a["filed_by"], _when(a["filed_at"], ctx.zone), a["demand"],
             _list(a["stations"]) or "the result as a whole", a["grounds"], a["status"],
             _when(a["decided_at"], ctx.zone) if a["decided_at"] else None, a["remedy"],
             _remedy_scope(a)]
            for a in found[:ROW_LIMIT]]
    return head + _table(["Appeal", "Filed by", "Filed", "Demand", "Stations", "Grounds", "Status",
                          "Decided", "Remedy", "Remedy applies to"], rows, table_id="appeals") + _cut(
        len(found))


def _remedy_scope(appeal: dict[str, Any]) -> str | None:
    if appeal["remedy_stations"]:
        return _list(appeal["remedy_stations"])
    # A decision that names no stations applies its remedy to the appeal's own.
    return "the stations appealed" if appeal["remedy"] not in (None, "none") else None


def _control_failures(ctx: Context) -> str:
    found = control_failures(ctx.db, ctx.election, ctx.moment)
    head = ("<h3>Protocols that fail the control checks</h3><p>Recorded as issued, but their "
            "arithmetic does not add up (votes plus invalid ballots against ballots cast, ballots "
            "cast against ballots issued, ballots issued against registered voters).</p>")
    if not found:
        return head + "<p>None.</p>"
    rows = [[f["station"], f["reporter"], _when(f["occurred_at"], ctx.zone),
             "; ".join(map(str, f["failures"]))] for f in found[:ROW_LIMIT]]
    return head + _table(["Station", "Reported by", "Issued", "Failed checks"], rows,
                         table_id="control-failures") + _cut(len(found))


def _signed_protocols(ctx: Context) -> str:
    found = signers(ctx.db, ctx.election, ctx.moment)
    head = ("<h3>Signed protocols</h3><p>Per reporter, how many of its protocols carry its "
            "Ed25519 signature (checked when appended, and again by <code>ledger verify</code>), "
            "and the fingerprints of its registered keys.</p>")
    rows = [[s["reporter"], s["protocols"], s["signed_protocols"], ", ".join(s["keys"]) or None]
            for s in found]
    return head + _table(["Reporter", "Protocols", "Signed", "Keys"], rows, table_id="signers")


def _footer(ctx: Context) -> str:
    command = ["ledger report --out FILE.html", f"--election {ctx.election.id}"]
    if ctx.moment.as_of:
        command.append(f"--as-of {ctx.moment.as_of.isoformat()}")
    command.append(f"--known-at {(ctx.moment.known_at or datetime.now(UTC)).isoformat(timespec='seconds')}")
    return (
        "<footer><p>Produced from an append-only, tamper-evident election ledger. The same figures "
        "come from <code>ledger tally</code>, <code>ledger seats</code>, <code>ledger withheld</code>, "
        "<code>ledger audit</code> and <code>ledger appeals</code> with the same moment; to "
        f"reproduce this page: <code>{_esc(' '.join(command))}</code>.</p></footer>"
    )


# ---------------------------------------------------------------------------------------
# Charts


def _seats_chart(ctx: Context) -> str:
    alloc = ctx.allocation
    valid = sum(alloc["votes"].values())
    shown = [c for c, _, _ in ctx.election.choices if alloc["votes"].get(c) or alloc["seats"].get(c)]
    if not valid or not alloc["seats_total"] or not shown:
        return ""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 0.62 * len(shown) + 0.9))
    at = list(range(len(shown)))
    seat_share = [100 * alloc["seats"].get(c, 0) / alloc["seats_total"] for c in shown]
    vote_share = [100 * alloc["votes"].get(c, 0) / valid for c in shown]
    bars = ax.barh([y - 0.2 for y in at], seat_share, height=0.38,
                   color=[ctx.colors[c] for c in shown], label="share of seats")
    ax.bar_label(bars, labels=[f"{alloc['seats'].get(c, 0)} seats ({s:.1f}%)"
                               for c, s in zip(shown, seat_share, strict=True)],
                 padding=3, fontsize=8.5, color="#333333")
    votes = ax.barh([y + 0.2 for y in at], vote_share, height=0.38, color=OTHER,
                    label="share of valid votes")
    ax.bar_label(votes, labels=[f"{v:.1f}%" for v in vote_share], padding=3, fontsize=8.5,
                 color="#666666")
    ax.set_yticks(at, labels=[_label(ctx.election.names[c]) for c in shown])
    ax.invert_yaxis()
    ax.set_xlim(0, 115)
    ax.set_xticks([0, 25, 50, 75, 100], labels=["0%", "25%", "50%", "75%", "100%"])
    ax.grid(axis="y", visible=False)
    ax.tick_params(axis="y", length=0)
    ax.legend(loc="lower right", fontsize=8.5)
    return _svg(fig, "seats")


def _night_chart(ctx: Context, series: list[tuple[datetime, dict[str, Any]]]) -> str:
    import matplotlib.dates as mdates

    plt = _pyplot()
    fig, (shares, reporting) = plt.subplots(
        2, 1, sharex=True, figsize=(9.5, 5.6), gridspec_kw={"height_ratios": [3, 1.3]})
    times = [t for t, _ in series]
    end = series[-1][1]["shares"]
    marker = "o" if len(times) == 1 else None  # a single moment draws no line
    for choice in sorted(end, key=end.get, reverse=True):
        shares.plot(times, [r["shares"].get(choice, 0.0) for _, r in series], color=ctx.colors[choice],
                    linewidth=2, marker=marker,
                    label=f"{_label(ctx.election.names[choice])} ({end[choice]:.1f}%)")
    shares.set_ylabel("share of valid votes (%)")
    highest = max((max(r["shares"].values(), default=0.0) for _, r in series), default=0.0)
    shares.set_ylim(0, max(5.0, 1.08 * highest))  # headroom, so a top dot is not cut in half
    shares.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8.5, handlelength=1.4)
    reported = [100 * r["stations_reporting"] / r["stations_total"] if r["stations_total"] else 0.0
                for _, r in series]
    reporting.fill_between(times, reported, color="#9EC3E0", linewidth=0)
    reporting.plot(times, reported, color="#2F6EA5", linewidth=1.5, marker=marker)
    reporting.set_ylim(0, 105)
    reporting.set_yticks([0, 50, 100])
    reporting.set_ylabel("stations\nreporting (%)")
    reporting.set_xlabel(f"time ({_zone_label(ctx.zone)})")
    locator = mdates.AutoDateLocator(tz=ctx.zone)
    reporting.xaxis.set_major_locator(locator)
    reporting.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=ctx.zone))
    if len(times) == 1:  # otherwise matplotlib spans years around a single moment
        reporting.set_xlim(times[0] - timedelta(hours=1), times[0] + timedelta(hours=1))
    fig.align_ylabels([shares, reporting])
    return _svg(fig, "night")


def _forensics_chart(ctx: Context, points: list[tuple[float, dict[str, float]]],
                     parties: list[str]) -> str:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(parties), figsize=(2.45 * len(parties) + 0.4, 2.9), squeeze=False)
    turnout = [t for t, _ in points]
    # Thousands of dots become a picture in the SVG, keeping the file small; a few stay vectors.
    dense = len(points) > 300
    size, alpha = _dot_style(len(points))
    for ax, choice in zip(axes[0], parties, strict=True):
        share = [s.get(choice, 0.0) for _, s in points]
        ax.scatter(turnout, share, s=size, alpha=alpha, color=ctx.colors[choice], linewidths=0,
                   rasterized=dense)
        ax.axhline(ctx.preliminary["shares"][choice], color="#444444", linewidth=0.8, linestyle="--")
        if ctx.preliminary["turnout_pct"] is not None:
            ax.axvline(ctx.preliminary["turnout_pct"], color="#444444", linewidth=0.8, linestyle="--")
        ax.set_xlim(0, max(100.0, *turnout))
        ax.set_ylim(0, min(100.0, max(5.0, 1.1 * max(share))))
        ax.set_title(f"{_label(ctx.election.names[choice])}\n{ctx.preliminary['shares'][choice]:.1f}% "
                     "nationally", loc="left")
        ax.set_xlabel("turnout (%)")
    axes[0][0].set_ylabel("party's share of valid votes (%)")
    fig.tight_layout()
    return _svg(fig, "forensics")


def _dot_style(points: int) -> tuple[float, float]:
    """Dot size and opacity for a scatter of ``points`` stations: at a national scale
    (Russia's 96,871 stations) dots must be small and faint, or the dense core is one solid
    blob and the structure inside it (a comet tail, peaks at round percentages) is lost."""
    if points <= 300:
        return 22, 0.75
    if points <= 20_000:
        return 5, max(0.12, min(0.6, 250 / points))
    return 1.5, max(0.03, min(0.12, 4_000 / points))


def _withheld_chart(ctx: Context, comparison: list[dict[str, Any]]) -> str:
    rows = [c for c in comparison if c["choice"] and c["official_share_where_withheld_pct"] is not None
            and c["official_share_where_copied_pct"] is not None]
    if not rows:
        return ""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(9.5, 1.5 * len(rows) + 0.3), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        color = ctx.colors[row["choice"]]
        bars = [
            (f"official, where withheld ({_plural(row['withheld_with_official_protocol'], 'station')})",
             row["official_share_where_withheld_pct"], color, color),
            (f"official, where copied ({_plural(row['copied_with_official_protocol'], 'station')})",
             row["official_share_where_copied_pct"], OTHER, OTHER),
        ]
        if row["own_count_share_where_copied_pct"] is not None:
            bars.append(("party's own copies, where copied", row["own_count_share_where_copied_pct"],
                         "white", color))
        drawn = ax.barh(range(len(bars)), [b[1] for b in bars], height=0.62,
                        color=[b[2] for b in bars], edgecolor=[b[3] for b in bars], linewidth=1.2)
        ax.bar_label(drawn, labels=[f"{b[1]:.1f}%" for b in bars], padding=3, fontsize=8.5)
        ax.set_yticks(range(len(bars)), labels=[b[0] for b in bars])
        ax.invert_yaxis()
        ax.set_xlim(0, 1.18 * max(b[1] for b in bars) or 1)
        ax.set_title(f"{_label(ctx.election.names[row['choice']])}: share of valid votes", loc="left")
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", length=0)
    fig.tight_layout()
    return _svg(fig, "withheld")


def _svg(fig: Any, name: str) -> str:
    """The figure as an inline <svg> element: no XML prolog or DTD (an HTML page has its
    own), no metadata, and ids salted per chart so that charts sharing a page never share
    an id (clip paths are looked up by id across the whole document)."""
    import matplotlib

    plt = _pyplot()
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"report-{name}"}):
        fig.savefig(buffer, format="svg", dpi=160, bbox_inches="tight",
                    metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


# ---------------------------------------------------------------------------------------
# HTML pieces


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}: results report</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def _figure(svg: str, caption: str) -> str:
    if not svg:
        return ""
    return (f'<figure class="chart" role="img" aria-label="{_esc(caption)}">{svg}'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, table_id: str,
           keys: Sequence[str] | None = None) -> str:
    rows = list(rows)
    numeric = [any(_is_number(r[i]) for r in rows) for i in range(len(headers))]
    head = "".join(f"<th{_align(n)}>{_esc(h)}</th>" for h, n in zip(headers, numeric, strict=True))
    body = []
    for index, row in enumerate(rows):
        key = f' data-key="{_esc(keys[index])}"' if keys else ""
        cells = "".join(f"<td{_align(n)}>{_cell(v)}</td>" for v, n in zip(row, numeric, strict=True))
        body.append(f"<tr{key}>{cells}</tr>")
    return (f'<div class="table"><table id="{_esc(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _align(numeric: bool) -> str:
    return ' class="num"' if numeric else ""


def _cell(value: Any) -> str:
    if isinstance(value, Html):
        return value
    if value is None:
        return '<span class="none">—</span>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return _esc(str(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Num) and not isinstance(value, bool)


def _party(ctx: Context, choice: str, name: str) -> Html:
    return Html(f'<span class="swatch" style="background:{ctx.colors[choice]}"></span>{_esc(name)}')


def _cut(total: int) -> str:
    if total <= ROW_LIMIT:
        return ""
    return (f'<p class="note">The first {ROW_LIMIT} of {total:,} are shown; '
            "<code>ledger audit</code> lists them all.</p>")


def _differences(ctx: Context, difference: dict[str, int]) -> str:
    return "; ".join(f"{ctx.election.names.get(c, c)} {_signed(d)}" for c, d in difference.items()) or "—"


def _field(ctx: Context, field: str) -> str:
    if field.startswith("votes."):
        choice = field.removeprefix("votes.")
        return f"votes for {ctx.election.names.get(choice, choice)}"
    if field.startswith("lines."):
        return f"protocol line {field.removeprefix('lines.')}"
    return field.replace("_", " ")


def _both_ints(conflict: dict[str, Any]) -> bool:
    return isinstance(conflict["authority"], int) and isinstance(conflict["reported"], int)


def _final_status(final: dict[str, Any]) -> str:
    if final["certified"]:
        return "certified"
    if final["status"] == "contested":
        return "not certified; stations contested"
    return "not certified"


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _list(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _pct(value: float | None) -> Num | None:
    return None if value is None else Num(f"{value:.2f}%")


def _points(value: float | None) -> Num | None:
    return None if value is None else Num(f"{value:+.2f} points")


def _signed(value: int) -> Num:
    return Num(f"{value:+,}".replace("-", MINUS) if value else "0")


def _label(name: str, width: int = 24) -> str:
    """A party name as a chart label: at most two lines, and a '$' kept literal (matplotlib
    would otherwise read text between two of them as a formula)."""
    lines = textwrap.wrap(name, width) or [""]
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), width, placeholder="…")]
    return "\n".join(lines).replace("$", r"\$")


# ---------------------------------------------------------------------------------------
# Time and colour


def _instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _when(moment: datetime | str, zone: tzinfo) -> str:
    local = (_instant(moment) if isinstance(moment, str) else moment).astimezone(zone)
    return f"{local.day} {local:%b %Y, %H:%M}"


def _display_zone(moment: Moment) -> tzinfo:
    """The reader's clock is the one they wrote the moment in; the read models keep UTC only."""
    given = moment.as_of or moment.known_at
    return given.tzinfo if given is not None and given.tzinfo is not None else UTC


def _zone_label(zone: tzinfo) -> str:
    offset = datetime(2000, 1, 1, tzinfo=zone).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    if not minutes:
        return "UTC"
    sign = "+" if minutes > 0 else MINUS
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _palette(election: Election) -> dict[str, str]:
    """One colour per choice in ballot order, so a party keeps its colour in every chart
    and at every moment."""
    colors = list(PALETTE)
    if len(election.choices) > len(colors):
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

        colors += [to_hex(c) for c in colormaps["tab20"].colors]
    return {choice: colors[i % len(colors)] for i, (choice, _, _) in enumerate(election.choices)}


CSS = """
:root { --ink: #1d1d1f; --muted: #5f6368; --rule: #e3e3e3; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--ink);
  font: 16px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 32px 24px 64px; }
h1, h2, h3 { font-family: Georgia, "Times New Roman", serif; line-height: 1.2; }
h1 { font-size: 2.1rem; margin: 0.2rem 0 0.4rem; }
h2 { font-size: 1.55rem; margin: 2.8rem 0 0.6rem; padding-top: 1rem; border-top: 2px solid var(--ink); }
h3 { font-size: 1.15rem; margin: 1.8rem 0 0.4rem; }
p { max-width: 46rem; margin: 0.5rem 0; }
.kicker { text-transform: uppercase; letter-spacing: 0.08em; font-size: 0.8rem; color: var(--accent);
  font-weight: 600; margin: 0; }
.dek { font-size: 1.1rem; color: var(--muted); }
.note, figcaption, .facts { color: var(--muted); font-size: 0.9rem; }
.moment { display: flex; flex-wrap: wrap; gap: 0 2rem; margin: 1rem 0 0.5rem; padding: 0.7rem 1rem;
  background: #f5f7fa; border-left: 4px solid var(--accent); }
.moment div { margin: 0.2rem 0; }
.moment dt { font-size: 0.78rem; text-transform: uppercase; letter-spacing: 0.05em; color: var(--muted); }
.moment dd { margin: 0; font-weight: 600; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px;
  margin: 1.2rem 0 0; }
.figures div { border-top: 3px solid var(--ink); padding-top: 0.4rem; }
.figures span { display: block; font-size: 0.8rem; color: var(--muted); text-transform: uppercase;
  letter-spacing: 0.05em; }
.figures strong { font-size: 1.15rem; }
.table { overflow-x: auto; margin: 0.8rem 0 1.2rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th { text-align: left; font-weight: 600; border-bottom: 2px solid var(--ink); padding: 6px 10px 6px 0;
  vertical-align: bottom; }
td { border-bottom: 1px solid var(--rule); padding: 5px 10px 5px 0; vertical-align: top; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
.none { color: #9aa0a6; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 0.45em;
  vertical-align: -0.05em; }
figure.chart { margin: 1.2rem 0 1.6rem; }
figure.chart svg { display: block; max-width: 100%; height: auto; }
figcaption { margin-top: 0.3rem; }
.excluded { color: var(--muted); font-size: 0.9rem; }
details { margin: 0.6rem 0 1rem; }
summary { cursor: pointer; color: var(--accent); }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 0.88em;
  background: #f3f3f3; padding: 0.05em 0.3em; border-radius: 3px; }
footer { margin-top: 3rem; padding-top: 1rem; border-top: 1px solid var(--rule); }
footer p { color: var(--muted); font-size: 0.85rem; }
"""
