"""The report's charts: matplotlib figures drawn from the facts, each returned as an inline
``<svg>`` element (an empty string when there is nothing to draw)."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, tzinfo
from typing import Any

from .display import OTHER, plural, zone_label
from .facts import Facts, StationPoint, Tally

STYLE = {
    "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 9.5,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False,
    "axes.spines.right": False, "axes.edgecolor": "#888888", "axes.labelcolor": "#333333",
    "xtick.color": "#555555", "ytick.color": "#555555", "axes.grid": True,
    "grid.color": "#E6E6E6", "grid.linewidth": 0.8, "axes.axisbelow": True,
    "legend.frameon": False, "figure.facecolor": "white", "svg.fonttype": "path",
}


def _pyplot() -> Any:
    # Imported here, not at module level: matplotlib costs about a second to import and only
    # this command needs it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def report_style() -> Iterator[None]:
    """The report's look for every chart drawn inside, without touching the caller's."""
    with _pyplot().rc_context(STYLE):
        yield


def seats_chart(facts: Facts, colors: dict[str, str]) -> str:
    alloc, names = facts.allocation, facts.election.names
    valid = sum(alloc["votes"].values())
    shown = [c for c, _, _ in facts.election.choices if alloc["votes"].get(c) or alloc["seats"].get(c)]
    if not valid or not alloc["seats_total"] or not shown:
        return ""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 0.62 * len(shown) + 0.9))
    at = list(range(len(shown)))
    seat_share = [100 * alloc["seats"].get(c, 0) / alloc["seats_total"] for c in shown]
    vote_share = [100 * alloc["votes"].get(c, 0) / valid for c in shown]
    bars = ax.barh([y - 0.2 for y in at], seat_share, height=0.38,
                   color=[colors[c] for c in shown], label="share of seats")
    ax.bar_label(bars, labels=[f"{alloc['seats'].get(c, 0)} seats ({s:.1f}%)"
                               for c, s in zip(shown, seat_share, strict=True)],
                 padding=3, fontsize=8.5, color="#333333")
    votes = ax.barh([y + 0.2 for y in at], vote_share, height=0.38, color=OTHER,
                    label="share of valid votes")
    ax.bar_label(votes, labels=[f"{v:.1f}%" for v in vote_share], padding=3, fontsize=8.5,
                 color="#666666")
    ax.set_yticks(at, labels=[label(names[c]) for c in shown])
    ax.invert_yaxis()
    ax.set_xlim(0, 115)
    ax.set_xticks([0, 25, 50, 75, 100], labels=["0%", "25%", "50%", "75%", "100%"])
    ax.grid(axis="y", visible=False)
    ax.tick_params(axis="y", length=0)
    ax.legend(loc="lower right", fontsize=8.5)
    return _svg(fig, "seats")


def night_chart(facts: Facts, colors: dict[str, str], zone: tzinfo) -> str:
    import matplotlib.dates as mdates

    series: list[tuple[datetime, Tally]] = facts.night
    if not series:
        return ""
    plt = _pyplot()
    fig, (shares, reporting) = plt.subplots(
        2, 1, sharex=True, figsize=(9.5, 5.6), gridspec_kw={"height_ratios": [3, 1.3]})
    times = [t for t, _ in series]
    end = series[-1][1]["shares"]
    marker = "o" if len(times) == 1 else None  # a single moment draws no line
    for choice in sorted(end, key=end.get, reverse=True):
        shares.plot(times, [r["shares"].get(choice, 0.0) for _, r in series], color=colors[choice],
                    linewidth=2, marker=marker,
                    label=f"{label(facts.election.names[choice])} ({end[choice]:.1f}%)")
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
    reporting.set_xlabel(f"time ({zone_label(zone)})")
    locator = mdates.AutoDateLocator(tz=zone)
    reporting.xaxis.set_major_locator(locator)
    reporting.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=zone))
    if len(times) == 1:  # otherwise matplotlib spans years around a single moment
        reporting.set_xlim(times[0] - timedelta(hours=1), times[0] + timedelta(hours=1))
    fig.align_ylabels([shares, reporting])
    return _svg(fig, "night")


def forensics_chart(facts: Facts, parties: list[str], colors: dict[str, str]) -> str:
    points: list[StationPoint] = facts.stations
    if not points or not parties:
        return ""
    national = facts.preliminary
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(parties), figsize=(2.45 * len(parties) + 0.4, 2.9), squeeze=False)
    turnout = [p.turnout_pct for p in points]
    # Thousands of dots become a picture in the SVG, keeping the file small; a few stay vectors.
    dense = len(points) > 300
    size, alpha = _dot_style(len(points))
    for ax, choice in zip(axes[0], parties, strict=True):
        share = [p.shares_pct.get(choice, 0.0) for p in points]
        ax.scatter(turnout, share, s=size, alpha=alpha, color=colors[choice], linewidths=0,
                   rasterized=dense)
        ax.axhline(national["shares"][choice], color="#444444", linewidth=0.8, linestyle="--")
        if national["turnout_pct"] is not None:
            ax.axvline(national["turnout_pct"], color="#444444", linewidth=0.8, linestyle="--")
        ax.set_xlim(0, max(100.0, *turnout))
        ax.set_ylim(0, min(100.0, max(5.0, 1.1 * max(share))))
        ax.set_title(f"{label(facts.election.names[choice])}\n{national['shares'][choice]:.1f}% "
                     "nationally", loc="left")
        ax.set_xlabel("turnout (%)")
    axes[0][0].set_ylabel("party's share of valid votes (%)")
    fig.tight_layout()
    return _svg(fig, "forensics")


def fingerprint_chart(facts: Facts) -> str:
    """The turnout x share fingerprint (Klimek et al. 2012) of the leading choice as a heat
    map: stations per 1-point cell on a log colour scale, so that the few stations of a comet
    tail show beside the thousands of the core; empty cells stay pale."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    from projections.forensics import fingerprint_grid

    found = facts.forensics
    if not found["fingerprint"]:
        return ""
    plt = _pyplot()
    grid = np.ma.masked_equal(np.array(fingerprint_grid(found["fingerprint"]), dtype=float), 0)
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    # Cell t spans turnouts from t% up to t+1% (t = 100 holds exactly 100%): extent 0 to 101.
    image = ax.imshow(grid, origin="lower", extent=(0, 101, 0, 101), aspect="equal",
                      interpolation="nearest", cmap=colormaps["viridis"].with_extremes(bad="#F1F1F1"),
                      norm=LogNorm(vmin=1, vmax=max(2, int(grid.max()))))
    image.set_gid("fingerprint-image")
    fig.colorbar(image, ax=ax, shrink=0.85, label="stations per 1-point cell (log scale)")
    ax.set_xlim(0, 101)
    ax.set_ylim(0, 101)
    ax.set_xticks(range(0, 101, 20))
    ax.set_yticks(range(0, 101, 20))
    ax.grid(False)
    ax.set_xlabel("turnout (%)")
    ax.set_ylabel(f"share of {label(found['name'], 40)} (%)")
    ax.set_title(f"{len(found['fingerprint']):,} cells, {found['stations']:,} stations", loc="left")
    return _svg(fig, "fingerprint")


def integer_percent_chart(facts: Facts) -> str:
    """Stations whose turnout, and whose leading choice's share, is exactly a whole
    percentage (Kobak, Shpilkin and Pshenichnikov 2016): a bar per percentage that has one.
    Each bar carries an id (turnout-percent-K, share-percent-K) a reader can find it by."""
    found = facts.forensics
    if not found["stations"]:
        return ""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 2.9))
    panels = (("turnout-percent", found["turnout_percent"], "turnout (%)"),
              ("share-percent", found["share_percent"], f"share of {label(found['name'], 40)} (%)"))
    for ax, (name, counts, title) in zip(axes, panels, strict=True):
        at = [k for k, n in enumerate(counts) if n]
        bars = ax.bar(at, [counts[k] for k in at], width=0.8, color="#0072B2", align="edge")
        for k, bar in zip(at, bars, strict=True):
            bar.set_gid(f"{name}-{k}")
        ax.set_xlim(0, 101)
        ax.set_xticks(range(0, 101, 10))
        ax.set_xlabel(title)
        ax.grid(axis="x", visible=False)
        if at:
            # A log scale: the round-number peaks (tens of stations) show beside the thousands
            # of tiny stations at exactly 100% turnout, and a bar of one station stays visible.
            ax.set_yscale("log")
            ax.set_ylim(0.7, 1.6 * max(counts))
    axes[0].set_ylabel("stations at exactly k%\n(log scale)")
    fig.tight_layout()
    return _svg(fig, "integer-percent")


def _dot_style(points: int) -> tuple[float, float]:
    """Dot size and opacity for a scatter of ``points`` stations: at a national scale
    (Russia's 96,871 stations) dots must be small and faint, or the dense core is one solid
    blob and the structure inside it (a comet tail, peaks at round percentages) is lost."""
    if points <= 300:
        return 22, 0.75
    if points <= 20_000:
        return 5, max(0.12, min(0.6, 250 / points))
    return 1.5, max(0.03, min(0.12, 4_000 / points))


def withheld_chart(facts: Facts, colors: dict[str, str]) -> str:
    rows = [c for c in facts.withheld["comparison"]
            if c["choice"] and c["official_share_where_withheld_pct"] is not None
            and c["official_share_where_copied_pct"] is not None]
    if not rows:
        return ""
    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 1, figsize=(9.5, 1.5 * len(rows) + 0.3), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        color = colors[row["choice"]]
        bars = [
            (f"official, where withheld ({plural(row['withheld_with_official_protocol'], 'station')})",
             row["official_share_where_withheld_pct"], color, color),
            (f"official, where copied ({plural(row['copied_with_official_protocol'], 'station')})",
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
        ax.set_title(f"{label(facts.election.names[row['choice']])}: share of valid votes", loc="left")
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", length=0)
    fig.tight_layout()
    return _svg(fig, "withheld")


def label(name: str, width: int = 24) -> str:
    """A party name as a chart label: at most two lines, and a '$' kept literal (matplotlib
    would otherwise read text between two of them as a formula)."""
    lines = textwrap.wrap(name, width) or [""]
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), width, placeholder="…")]
    return "\n".join(lines).replace("$", r"\$")


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
