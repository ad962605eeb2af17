"""The live page as a journalist uses it, on the demo night in headless Chromium: every
reporter (the opposition party's copies and refusals, not only the commission), a slider
over the whole night, the withheld-versus-copied comparison, seats with the threshold, the
estimate beside the count, and the fingerprint pictures — checked against the JSON API of the
same server."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing
from tests.serving import Server

ELECTION = "kz-2007-mazhilis"
STATIONS = 1500


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("live") / "kz"
    built = subprocess.run(
        [sys.executable, "-m", "ledger", "demo", "--dir", str(directory), "--stations", str(STATIONS)],
        capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    running = Server(str(directory / "ledger.db"), directory, env={"LEDGER_READ_MODELS": ""}).start()
    try:
        yield running
    finally:
        assert running.stop() == 0


def ask(server: Server, what: str, **query: str) -> Any:
    path = f"/v1/elections/{ELECTION}/{what}"
    answer = server.get(path + ("?" + urllib.parse.urlencode(query) if query else ""))
    assert answer.status == 200, answer.body
    return answer.json()


def test_the_reporters_endpoint_names_the_opposition_and_the_night(server: Server) -> None:
    answer = ask(server, "reporters")
    found = {r["reporter"]: r for r in answer["reporters"]}
    assert list(found) == ["cec", "ak-zhol", "osdp"]
    assert (found["cec"]["role"], found["cec"]["protocols"]) == ("authority", STATIONS)
    # The seed's story: copies from two thirds of Astana's 184 stations, refused at the rest.
    assert (found["osdp"]["role"], found["osdp"]["protocols"], found["osdp"]["stations"],
            found["osdp"]["withheld_requests"]) == ("party", 122, 122, 62)
    assert (found["ak-zhol"]["appeals"], found["ak-zhol"]["protocols"]) == (1, 0)
    history = ask(server, "history")["events"]
    protocols = sorted(e["occurred_at"] for e in history if e["type"] == "ProtocolIssued")
    assert answer["protocols"]["count"] == len(protocols) == STATIONS + 122
    assert (answer["protocols"]["first_occurred_at"], answer["protocols"]["last_occurred_at"]) == (
        protocols[0], protocols[-1])
    assert answer["events"]["count"] == len(history)
    # As the other endpoints: an unknown election is a 404, a bad parameter a 400.
    unknown = server.get("/v1/elections/nope/reporters")
    assert unknown.status == 404 and "unknown election" in unknown.json()["problems"][0]["reason"]
    for query, field in (("stage=final", "stage"), ("as_of=yesterday", "as_of")):
        bad = server.get(f"/v1/elections/{ELECTION}/reporters?{query}")
        assert bad.status == 400 and bad.json()["problems"][0]["field"] == field


def _browser(directory: Path) -> Any:
    chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(chromedriver).exists():
        missing("no chromedriver (apt-get install chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1200,2400", f"--user-data-dir={directory / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=DriverService(chromedriver))


def _rows(browser: Any, table: str) -> dict[str, list[str]]:
    """A table's rows by their data key, read in one script (the page redraws as it goes)."""
    rows = browser.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)]"
        ".map(r => [Object.values(r.dataset)[0] || r.cells[0].textContent,"
        " [...r.cells].map(c => c.textContent.trim())])", table)
    return dict(rows)


def _number(text: str) -> int:
    assert "," in text or len(text) < 4, f"{text!r}: no thousands separator"
    return int(text.replace(",", ""))


def test_the_live_page_on_the_demo_night(server: Server, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    reporters = ask(server, "reporters")
    forensics = ask(server, "forensics")
    estimate = ask(server, "estimate")
    browser = _browser(tmp_path)
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)
        shown = "return document.body.dataset.shown"
        wait.until(lambda _: browser.execute_script(shown) == "live")
        text = browser.find_element("tag name", "body").text

        # Every reporter, with its counts, thousands separated.
        listed = _rows(browser, "reporters")
        assert list(listed) == ["cec", "ak-zhol", "osdp"]
        osdp = listed["osdp"]
        assert osdp[0] == "osdp (Nationwide Social Democratic Party)" and osdp[1] == "party"
        assert [_number(n) for n in osdp[2:6]] == [122, 122, 62, 0]
        assert _number(listed["cec"][2]) == STATIONS and listed["cec"][2] == "1,500"
        # Each reporter's parallel tally: the osdp's own count over its 122 stations.
        parallel = _rows(browser, "parallel")
        assert list(parallel) == ["cec", "osdp"]
        osdp_tally = ask(server, "tally", reporter="osdp")
        assert _number(parallel["osdp"][1]) == 122
        assert parallel["osdp"][2].startswith(f"{osdp_tally['votes']['nur-otan']:,} (")
        # The withheld-versus-copied comparison and the seed's story in words.
        (comparison,) = _rows(browser, "withheld-comparison").values()
        assert [comparison[1], comparison[3]] == ["62", "122"]
        withheld = ask(server, "withheld")["comparison"][0]
        assert comparison[2] == f"{withheld['official_share_where_withheld_pct']:.2f}%"
        assert "stations that refused osdp a copy" in text
        assert "The refusals (62)" in browser.page_source
        (appeal,) = _rows(browser, "appeals").values()
        assert appeal[:2] == ["ak-zhol-recount", "ak-zhol"] and appeal[6] == "rejected"
        seats = ask(server, "seats")
        assert f"threshold 7% of ballots cast: {seats['votes_to_pass']:,} votes to pass" in text
        assert _number(_rows(browser, "seats")["nur-otan"][3]) == seats["seats"]["nur-otan"]

        # The estimate beside the count, marked as one, with its interval.
        assert "Estimate, not a count" in browser.find_element("id", "estimate-note").text
        assert "ESTIMATE" in browser.find_element("css selector", "#tally thead").text.upper()
        cells = browser.execute_script(
            "return [...document.querySelectorAll('#tally td.estimate')].map(c => "
            "[c.parentElement.dataset.choice, c.dataset.low, c.dataset.high, c.textContent])")
        assert {c for c, *_ in cells} == set(estimate["shares"])
        for choice, low, high, label in cells:
            assert [float(low), float(high)] == estimate["intervals"][choice]
            assert f"{100 * estimate['shares'][choice]:.2f}%" in label and "\u2013" in label

        # The fingerprint: one cell per [t, s, n] of the API, coloured on a log scale; the
        # histograms: a bar per whole percentage that has a station.
        picture = browser.execute_script(
            "const count = (s) => document.querySelectorAll(s).length;"
            "const fills = new Set([...document.querySelectorAll('#heatmap-svg g.cells rect')]"
            ".map(r => r.getAttribute('fill')));"
            "return [count('#heatmap-svg g.cells rect'), fills.size,"
            " count('#turnout-histogram-svg g.bars rect'), count('#share-histogram-svg g.bars rect'),"
            " document.querySelector('#heatmap-svg').getBoundingClientRect().width]")
        assert picture[0] == len(forensics["fingerprint"]) > 100
        assert picture[1] > 5  # more than one colour: the counts differ, and so do the cells
        assert picture[2] == sum(1 for n in forensics["turnout_percent"] if n) > 0
        assert picture[3] == sum(1 for n in forensics["share_percent"] if n) > 0
        assert picture[4] > 200

        # The slider spans the night as the server knows it: its far left is the first
        # protocol, and there the first station is counted.
        slider = browser.find_element("id", "moment")
        assert slider.get_attribute("data-first") == reporters["protocols"]["first_occurred_at"]
        assert slider.get_attribute("data-last") == reporters["protocols"]["last_occurred_at"]
        browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))",
                               slider)
        wait.until(lambda _: browser.execute_script(shown) not in (None, "live"))
        at = browser.execute_script(shown)
        first = ask(server, "tally", as_of=at)
        assert first["stations_reporting"] >= 1
        assert browser.find_element("id", "summary").text.startswith(
            f"{first['stations_reporting']} of 1,500 stations reporting")
        stamp = reporters["protocols"]["first_occurred_at"]
        assert browser.find_element("id", "moment-label").text == (
            f"as of {stamp[:10]} {stamp[11:16]} UTC")
        # A moment earlier, nothing was counted: the slider does not start before the night.
        earlier = datetime.fromisoformat(stamp) - timedelta(microseconds=1)
        assert ask(server, "tally", as_of=earlier.isoformat())["stations_reporting"] == 0
    finally:
        browser.quit()

