"""The HTML report, built from a real demo ledger and from the hand-built night of
test_tally.py, and opened in a real browser (headless Chromium) to see the charts render."""

from __future__ import annotations

import base64
import io
import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from projections.forensics import Stations, analyse, fingerprint_grid, forensics
from projections.moment import Moment, moment
from projections.report import PALETTE, render_report
from projections.schema import connect
from projections.tally import load_election, seats, tally
from tests import duma
from tests.conftest import (
    LATER,
    NIGHT,
    LedgerUnderTest,
    definition,
    missing,
    protocol,
    require_shared,
    station,
)

SECTIONS = ("results", "night", "forensics", "withheld", "disputes")
MIDNIGHT = "2007-08-19T00:00:00+06:00"
# seats, the night, turnout against share, the fingerprint, whole percentages, withheld against copied
DEMO_CHARTS = 6


@pytest.fixture
def backend() -> str:
    """The report reads the SQLite read models whatever store holds the log: one is enough."""
    return "sqlite"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo") / "kz"
    result = subprocess.run(
        [sys.executable, "-m", "ledger", "demo", "--dir", str(directory), "--stations", "1500"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return directory / "ledger.projections.db"


@pytest.fixture(scope="module")
def demo_page(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("page") / "report.html"
    path.write_text(_render(demo, moment()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium"):
        if found := shutil.which(name):
            return found
    missing("no chromium binary found (apt-get install chromium): the browser checks need one")


def _render(path: Path, at: Moment) -> str:
    db = connect(path)
    try:
        return render_report(db, load_election(db, None), at)
    finally:
        db.close()


class Tables(HTMLParser):
    """Every table of a page by id: its header cells and its rows as (data-key, cell texts)."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.headers: dict[str, list[str]] = {}
        self.rows: dict[str, list[tuple[str | None, list[str]]]] = {}
        self._table: str | None = None
        self._row: tuple[str | None, list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "table":
            self._table = named.get("id") or ""
            self.headers[self._table], self.rows[self._table] = [], []
        elif tag == "tr" and self._table is not None:
            self._row = (named.get("data-key"), [])
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row and self._table is not None:
            text = "".join(self._cell).strip()
            (self.headers[self._table] if tag == "th" else self._row[1]).append(text)
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._row[1]:
                self.rows[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def column(self, table: str, header: str) -> dict[str | None, str]:
        index = self.headers[table].index(header)
        return {key: cells[index] for key, cells in self.rows[table]}


class Markup(HTMLParser):
    """The elements a page really contains, and its visible text, as a browser parses them."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: set[str] = set()
        self.attributes: list[str] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.add(tag)
        self.attributes += [value or "" for _, value in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _number(text: str) -> int:
    return int(text.replace(",", "").replace("\u2212", "-"))


def _browser(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120)


# --- the demo ledger ---------------------------------------------------------------------


def test_the_demo_report_has_every_section_and_states_its_moment(demo_page: Path) -> None:
    page = demo_page.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
    for heading in ("Preliminary tally", "Final tally", "Seats", "Through the night",
                    "Turnout and vote share, station by station", "Withheld protocols",
                    "Announcements against the protocols", "Conflicting protocols", "Appeals"):
        assert f"{heading}</h" in page, heading
    assert "no bound: everything the ledger holds" in page and "Times are shown in UTC" in page
    assert page.count('<figure class="chart"') == DEMO_CHARTS
    assert page.count("<svg") == DEMO_CHARTS
    assert "recomputed at 24 moments" in page
    assert "1,500 stations shown" in page  # one dot per station in the forensics chart


@pytest.mark.parametrize("as_of", [None, MIDNIGHT])
def test_the_tables_show_the_tally_of_the_moment(demo: Path, as_of: str | None) -> None:
    at = moment(as_of)
    page = _render(demo, at)
    db = connect(demo)
    try:
        election = load_election(db, None)
        preliminary = tally(db, election, at)
        final = tally(db, election, at, stage="final")
        allocation = seats(db, election, at, stage="final")
    finally:
        db.close()
    tables = Tables(page)
    for table, expected in (("preliminary-tally", preliminary), ("final-tally", final)):
        shown = {k: _number(v) for k, v in tables.column(table, "Votes").items()}
        assert shown == {c: expected["votes"].get(c, 0) for c, _, _ in election.choices}
        shares = tables.column(table, "Share of valid")
        assert all(shares[c] == f"{s:.2f}%" for c, s in expected["shares"].items())
    assert {k: _number(v) for k, v in tables.column("seats", "Seats").items()} == allocation["seats"]
    assert (f"{preliminary['stations_reporting']:,} of {preliminary['stations_total']:,} "
            "stations counted") in page
    if as_of:  # midnight: part of the night only, times in the offset the moment was written in
        assert 0 < preliminary["stations_reporting"] < preliminary["stations_total"]
        assert "19 Aug 2007, 00:00" in page and "UTC+06:00" in page


def test_withheld_conflicts_and_appeals_are_tabled(demo_page: Path) -> None:
    tables = Tables(demo_page.read_text(encoding="utf-8"))
    (osdp,) = tables.rows["withheld-comparison"]
    assert osdp[1][:2] == ["osdp (Nationwide Social Democratic Party)", "62"]
    assert len(tables.rows["withheld-list"]) == 62
    assert len({cells[0] for _, cells in tables.rows["conflicts"]}) == 5  # five disputed stations
    (appeal,) = tables.rows["appeals"]
    assert appeal[1][0] == "ak-zhol-recount" and "rejected" in appeal[1]
    assert [cells[-1] for _, cells in tables.rows["discrepancies"]] == ["yes", "yes"]


def test_nothing_in_the_page_would_be_fetched(demo_page: Path) -> None:
    page = demo_page.read_text(encoding="utf-8")
    for tag in ("<script", "<link", "<iframe", "<object", "<embed", "@import", "<?xml", "<!DOCTYPE svg"):
        assert tag.lower() not in page.lower(), tag
    # Every reference points inside the page: an id or an inline (data:) image.
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page, flags=re.IGNORECASE)
    assert references and all(r.startswith(("#", "data:")) for r in references)
    assert not re.search(r"url\(\s*['\"]?(?!#|data:)", page)
    # SVG namespace declarations are names, not addresses a browser loads.
    names = re.sub(r'\sxmlns(?::\w+)?="http://www\.w3\.org/[^"]*"', "", page)
    assert "http://" not in names and "https://" not in names


# --- the fingerprint and the whole percentages ---------------------------------------------

BLANK = (241, 241, 241)  # an empty cell (#F1F1F1)


def fingerprint_pixels(page: str) -> Any:
    """The fingerprint heat map's picture as a reader sees it: the PNG inlined in the SVG,
    turned the right way up if the SVG flips it (matplotlib draws origin="lower" so)."""
    from matplotlib.image import imread

    tag = re.search(r'<image [^>]*id="fingerprint-image"[^>]*>', page)
    assert tag, "no fingerprint image in the page"
    data = re.search(r'xlink:href="data:image/png;base64,([^"]+)"', tag[0])
    pixels = (imread(io.BytesIO(base64.b64decode(data[1])), format="png")[..., :3] * 255).round()
    return pixels[::-1] if "scale(1 -1)" in tag[0] else pixels


def cell_colours(pixels: Any) -> Any:
    """The colour at the centre of each cell, as ``colours[share][turnout]``: 101 cells
    across and up, share 0 at the bottom."""
    import numpy as np

    height, width = pixels.shape[:2]
    centres = (np.arange(101) + 0.5) / 101
    rows = ((1 - centres) * height).astype(int)
    columns = (centres * width).astype(int)
    return pixels[rows][:, columns].astype(int)


def scale_positions(colours: Any) -> Any:
    """Where on the viridis scale (0 to 1) each colour sits: the nearest of 256 steps."""
    import numpy as np
    from matplotlib import colormaps

    steps = np.round(255 * colormaps["viridis"](np.linspace(0, 1, 256))[:, :3])
    distance = np.abs(colours[..., None, :] - steps).sum(axis=-1)
    return distance.argmin(axis=-1) / 255


def assert_drawn_cell_by_cell(pixels: Any, found: dict[str, Any]) -> Any:
    """Every cell of the 101 x 101 grid is where it belongs: coloured when stations fall in
    it, blank when none do, and at log(n) / log(most) of the colour scale. Returns each
    cell's place on the scale (-1 for a blank one)."""
    import numpy as np

    grid = np.array(fingerprint_grid(found["fingerprint"]))
    colours = cell_colours(pixels)
    blank = (colours == BLANK).all(axis=-1)
    assert (blank == (grid == 0)).all(), np.argwhere(blank != (grid == 0))[:5].tolist()
    expected = np.log(np.maximum(grid, 1)) / math.log(grid.max())
    drawn = np.where(blank, -1.0, scale_positions(colours))
    wrong = np.argwhere(~blank & (np.abs(drawn - expected) > 0.02))
    assert not len(wrong), [(t, s, grid[s, t], drawn[s, t]) for s, t in wrong[:5].tolist()]
    return drawn


def test_the_fingerprint_and_the_whole_percentages_of_the_demo(demo: Path, demo_page: Path) -> None:
    page = demo_page.read_text(encoding="utf-8")
    db = connect(demo)
    try:
        found = forensics(db, load_election(db, None), moment())
    finally:
        db.close()
    assert found["choice"] == "nur-otan" and found["stations"] == 1500
    assert '<h3 id="fingerprint">' in page and '<h3 id="integer-percent">' in page
    assert_drawn_cell_by_cell(fingerprint_pixels(page), found)
    # A bar per whole percentage that has a station, in each histogram, and no other.
    for name, counts in (("turnout-percent", found["turnout_percent"]),
                         ("share-percent", found["share_percent"])):
        drawn = {int(k) for k in re.findall(rf'id="{name}-(\d+)"', page)}
        assert drawn == {k for k, n in enumerate(counts) if n}, name
    integer = found["integer_turnout"]
    assert (f"{integer['observed']:,} of 1,500 stations have a whole turnout here, where "
            f"{integer['expected']:,.1f} would by chance") in " ".join(page.split())


def test_the_comet_of_russia_2016_shows_on_the_log_colour_scale() -> None:
    """Duma 2016, every station of the national table: the fingerprint of United Russia is
    drawn cell by cell, and its comet (the tail from the main cloud to 100% turnout and 100%
    share) stands out: in every turnout column from 50% to 100%, the fullest cell at a share
    within 10 points of the turnout or above is in the upper part of the colour scale. On a
    linear scale the same cells would be nearly black (22 stations against the core's 164)."""
    require_shared(duma.ZIP)
    from projections.report import charts

    rows = [r for r in duma.rows() if r.registered and r.valid]
    found = analyse(Stations([r.registered for r in rows], [r.cast for r in rows],
                             [r.valid for r in rows], [r.votes for r in rows]), "ur")
    found["name"] = "United Russia"
    with charts.report_style():
        svg = charts.fingerprint_chart(SimpleNamespace(forensics=found))
    drawn = assert_drawn_cell_by_cell(fingerprint_pixels(svg), found)
    core = max(found["fingerprint"], key=lambda cell: cell[2])
    assert 30 <= core[0] <= 45 and 35 <= core[1] <= 45  # the cloud: about 35% turnout and share
    for turnout in range(50, 101):
        assert drawn[max(0, turnout - 10):, turnout].max() > 0.5, turnout


# --- a real browser ----------------------------------------------------------------------


def test_a_browser_builds_every_chart_into_the_dom(demo_page: Path, chromium: str,
                                                  tmp_path: Path) -> None:
    result = _browser(chromium, tmp_path, "--dump-dom", demo_page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert '<section id="forensics">' in dom
    assert dom.count("<svg") >= demo_page.read_text(encoding="utf-8").count('<figure class="chart"')
    assert dom.count("<svg") >= DEMO_CHARTS


def test_a_browser_screenshot_is_not_blank(demo_page: Path, chromium: str, tmp_path: Path) -> None:
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    result = _browser(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,3000",
                      demo_page.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = (imread(str(shot))[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (3000, 1200)
    inked = (pixels.sum(axis=-1) < 3 * 235).mean()
    assert inked > 0.03, f"only {inked:.1%} of the page is not white"
    colours = {tuple(p) for p in pixels[::3, ::3].reshape(-1, 3).tolist()}
    assert len(colours) > 200
    # The seat chart's big bar, in the first party's colour: a chart was drawn, not just text.
    blue = tuple(int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5))
    near = (abs(pixels - blue).sum(axis=-1) < 12).sum()
    assert near > 3000, f"{near} pixels of the first party's colour"


# --- the hand-built night ----------------------------------------------------------------


def _page_of(ledger: LedgerUnderTest, at: Moment | None = None) -> str:
    return _render(ledger.directory / "read-models.db", at or Moment())


def test_the_hand_built_night_renders_with_its_hand_computed_numbers(
    registered: LedgerUnderTest,
) -> None:
    registered.append(*NIGHT)
    registered.append(*LATER)
    page = _page_of(registered)
    tables = Tables(page)
    # By hand (test_tally.py): a = 400 (n1) + 110 (n2, corrected) + 550 (s1, recount).
    assert _number(tables.column("preliminary-tally", "Votes")["a"]) == 1060
    # Final: n2 annulled on appeal y, so a = 400 + 550.
    assert _number(tables.column("final-tally", "Votes")["a"]) == 950
    assert "Annulled on appeal: n2" in page
    assert [_number(v) for v in tables.column("seats", "Seats").values()] == [3, 2, 0, 0]
    assert [(cells[0], cells[6]) for _, cells in tables.rows["appeals"]] == [
        ("x", "upheld"), ("y", "upheld")]
    assert [(cells[0], cells[2]) for _, cells in tables.rows["conflicts"]] == [
        ("n1", "votes for Party A"), ("n1", "votes for Party B")]
    # The preliminary announcement claimed a 1200 where the board's protocols summed to 1110.
    assert tables.rows["discrepancies"][0][1][6] == "Party A +90"
    assert tables.rows["withheld-comparison"][0][1][0] == "watch (not on the ballot)"
    assert "<summary>The refusal</summary>" in page
    # y's decision names no stations: its remedy falls on the appeal's own.
    assert [cells[-1] for _, cells in tables.rows["appeals"]] == ["s1", "the stations appealed"]
    # Turnout needs the station's electorate (1000, 500, 1500): three dots.
    assert "3 stations shown" in page
    # No withheld chart; the fingerprint and the whole percentages (n1: 860 of 1000, 86%).
    assert page.count("<svg") == page.count('<figure class="chart"') == 5


def test_the_visible_text_of_the_hand_built_night_states_its_figures(
    registered: LedgerUnderTest,
) -> None:
    """What a reader sees, whatever the markup around it. By hand (tests/test_tally.py):
    n1 850 valid + 10 invalid, n2 corrected 370 + 5, s1 recounted 1200 + 20; 3000 registered."""
    registered.append(*NIGHT)
    registered.append(*LATER)
    page = _page_of(registered)
    text = " ".join(" ".join(Markup(page).text).split())
    assert "3 of 3 stations counted · turnout 81.83% · 2,420 valid votes · 35 invalid" in text
    assert "Party A, 43.80%" in text  # the leader: 1060 / 2420
    # Final: n2 annulled leaves 2050 valid votes; the threshold is 10% of them.
    assert "5 seats allocated by D'Hondt among the parties over the threshold (205 votes)" in text
    tables = Tables(page)
    # The preliminary announcement said 1200 for a; today's protocols sum to 1060.
    assert tables.column("preliminary-tally", "Announced \u2212 computed")["a"] == "+140"
    assert tables.column("preliminary-tally", "Share of valid") == {
        "a": "43.80%", "b": "34.71%", "c": "14.46%", "d": "7.02%"}  # 1060, 840, 350, 170 of 2420


def test_a_moment_before_any_protocol_still_renders(registered: LedgerUnderTest) -> None:
    registered.append(*NIGHT)
    page = _page_of(registered, moment("2030-04-07T19:00:00+02:00"))
    assert "No official protocol is visible at this moment." in page
    assert "No station with a known electorate has reported yet." in page
    assert "0 of 3 stations counted" in page


def test_a_single_official_protocol_is_a_single_moment(registered: LedgerUnderTest) -> None:
    registered.append(*NIGHT)
    page = _page_of(registered, moment("2030-04-07T20:15:00+02:00"))
    assert "when the only official protocol so far arrived (7 Apr 2030, 20:00)" in page
    assert "1 station shown" in page and "UTC+02:00" in page
    assert _number(Tables(page).column("preliminary-tally", "Votes")["a"]) == 400


SCRIPT = "<script>alert(1)</script>"


def test_names_from_the_ledger_are_escaped(ledger: LedgerUnderTest) -> None:
    """Names, ids and reporters come from whoever appended the events: the page shows them
    as text and never as markup, in table cells, sentences, headings and attributes."""
    hostile = 'Party <script>alert("x")</script> & $1$ & Co'
    ledger.append(
        definition(name="<b>Council</b>", choices=[{"id": 'a"><i>', "name": hostile},
                                                   {"id": "b", "name": SCRIPT}]),
        station(SCRIPT, "North", 1000),
        protocol(SCRIPT, "07T20:00:00", {'a"><i>': 400, "b": 300}, registered=1000),
        protocol(SCRIPT, "07T20:30:00", {'a"><i>': 380, "b": 320}, by="<img src=x>"),
    )
    page = _page_of(ledger)
    parsed = Markup(page)
    assert not parsed.elements & {"script", "b", "i", "img"}, parsed.elements
    text = "".join(parsed.text)
    assert text.count(hostile) >= 3  # both tallies and the seats table
    assert "<b>Council</b>: results report" in text and "<img src=x>" in text
    assert Tables(page).column("conflicts", "Station") == {None: SCRIPT}
    assert text.count(SCRIPT) >= 4  # the party's rows and the conflicting station
    # The choice id is a row's data-key: it stays inside its quotes.
    assert Tables(page).column("seats", "Votes") == {'a"><i>': "400", "b": "300"}
    assert 'a"><i>' in parsed.attributes


def test_a_recount_days_later_does_not_stretch_the_night(registered: LedgerUnderTest) -> None:
    """The night is 20:00-22:00 on the 7th; the s1 recount comes on the 11th. The chart spans
    the night only, and the recount is listed after it."""
    registered.append(*NIGHT)
    registered.append(*LATER)
    page = _page_of(registered)
    assert ("between the first official protocol (7 Apr 2030, 18:00) and the last "
            "(7 Apr 2030, 20:00)") in page  # in UTC: no moment was given
    later = Tables(page).rows["after-night"]
    assert [cells[1:] for _, cells in later] == [["s1", "s1-r", "s1-b"]]
    assert "1 official protocol arrived more than 24 hours after the first" in page


def test_without_later_protocols_there_is_no_after_the_night_list(
    registered: LedgerUnderTest,
) -> None:
    registered.append(*NIGHT)
    page = _page_of(registered)
    assert "After the night" not in page and "after-night" not in page
