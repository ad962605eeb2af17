"""``ledger report``: one self-contained HTML page about an election as of a moment.

The page holds the preliminary and final tallies, the seats, how the count moved through
the night, the turnout-versus-share forensics charts (a scatter per party, the fingerprint heat map and
the integer-percent histograms), withheld versus copied protocols and the
disputes. CSS is inline and charts are matplotlib SVG inlined in the page, so the file can be
mailed, archived or opened offline and shows the same thing everywhere: nothing is fetched.

The work is split by job: ``facts`` asks the read models, ``charts`` draws, ``view`` lays the
tables out as plain values, and the Jinja templates under ``templates/`` write the HTML.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from typing import Any

import jinja2

from projections.moment import Moment
from projections.tally import Election

from . import charts, display, view
from .display import PALETTE
from .facts import NIGHT_WINDOW, gather

__all__ = ["PALETTE", "render_report"]

FORENSICS_PARTIES = 4


def render_report(db: Any, election: Election, moment: Moment) -> str:
    """The whole report as one HTML document, computed from what is visible at ``moment``."""
    facts = gather(db, election, moment)
    zone, colors = display.display_zone(moment), display.palette(election)
    parties = facts.largest_parties(FORENSICS_PARTIES)
    with charts.report_style():
        drawn = {
            "seats": charts.seats_chart(facts, colors),
            "night": charts.night_chart(facts, colors, zone),
            "forensics": charts.forensics_chart(facts, parties, colors),
            "fingerprint": charts.fingerprint_chart(facts),
            "integer_percent": charts.integer_percent_chart(facts),
            "withheld": charts.withheld_chart(facts, colors) if facts.withheld["withheld"] else "",
        }
    comparison, refusals = view.withheld_tables(facts, zone)
    tables = {t.id: t for t in (
        view.tally_table(facts, facts.preliminary, colors, "preliminary-tally"),
        view.tally_table(facts, facts.final, colors, "final-tally"),
        view.seats_table(facts, colors),
        view.after_night_table(facts, zone),
        comparison, refusals,
        view.discrepancies_table(facts, zone),
        view.conflicts_table(facts),
        view.appeals_table(facts, zone),
        view.control_failures_table(facts, zone),
        view.signers_table(facts),
        view.key_acts_table(facts, zone),
    )}
    return _templates().get_template("report.html.j2").render(
        facts=facts, zone=zone, charts=drawn, tables=tables, forensics_parties=parties,
        final_status=view.final_status(facts.final), command=view.reproduce_command(facts),
        night_hours=NIGHT_WINDOW // timedelta(hours=1),
    )


@cache
def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("projections.report", "templates"),
        # Names, reasons and ids come from whoever appended events: never trust them as markup.
        autoescape=True,
        # A misspelt name in a template fails the render instead of printing nothing.
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        count=display.count, decimal=display.decimal, pct=display.pct, plural=display.plural,
        listing=display.listing, when=display.when, zone_label=display.zone_label,
        method=display.method_name,
    )
    environment.tests["party"] = lambda value: isinstance(value, view.Party)
    return environment
