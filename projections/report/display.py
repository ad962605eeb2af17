"""How the report writes numbers, times, names and colours: one rule each, shared by the
tables, the sentences of the template (as Jinja filters) and the charts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo

from ledger.domain.methods import SEAT_METHODS
from projections.moment import Moment
from projections.tally import Election

# Okabe-Ito, reordered so the first parties get the most distinct hues; colour-blind safe.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D1F", "#555555"]
OTHER = "#BDBDBD"
MINUS = "\u2212"  # the typographic minus, as newspapers set it


class Num(str):
    """A number already written out (a percentage, a signed difference): a table aligns it
    as a number."""


def method_name(method: str) -> str:
    return SEAT_METHODS.get(method, method)


def pct(value: float | None) -> Num | None:
    return None if value is None else Num(f"{value:.2f}%")


def points(value: float | None) -> Num | None:
    return None if value is None else Num(f"{value:+.2f} points")


def signed(value: int) -> Num:
    return Num(f"{value:+,}".replace("-", MINUS) if value else "0")


def count(value: int) -> str:
    return f"{value:,}"


def decimal(value: float, places: int = 2) -> str:
    return f"{value:,.{places}f}"


def plural(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def listing(items: Sequence[str], limit: int = 12) -> str:
    """A list of names cut to ``limit``, saying how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def instant(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def when(moment: datetime | str, zone: tzinfo) -> str:
    local = (instant(moment) if isinstance(moment, str) else moment).astimezone(zone)
    return f"{local.day} {local:%b %Y, %H:%M}"


def display_zone(moment: Moment) -> tzinfo:
    """The reader's clock is the one they wrote the moment in; the read models keep UTC only."""
    given = moment.as_of or moment.known_at
    return given.tzinfo if given is not None and given.tzinfo is not None else UTC


def zone_label(zone: tzinfo) -> str:
    offset = datetime(2000, 1, 1, tzinfo=zone).utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    if not minutes:
        return "UTC"
    sign = "+" if minutes > 0 else MINUS
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def palette(election: Election) -> dict[str, str]:
    """One colour per choice in ballot order, so a party keeps its colour in every chart,
    every table and at every moment."""
    colors = list(PALETTE)
    if len(election.choices) > len(colors):
        from matplotlib import colormaps
        from matplotlib.colors import to_hex

        colors += [to_hex(c) for c in colormaps["tab20"].colors]
    return {choice: colors[i % len(colors)] for i, (choice, _, _) in enumerate(election.choices)}
