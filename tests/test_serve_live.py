"""`ledger serve` under stress and in a browser: SIGKILL mid-load, two servers on one
PostgreSQL ledger, and the live page in headless Chromium."""

from __future__ import annotations

import http.client
import re
import shutil
import signal
import threading
import urllib.error
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.conftest import (
    PG_SERVER,
    LedgerUnderTest,
    definition,
    missing,
    protocol,
    require_postgres,
    station,
)
from tests.serving import Reporter, Server, lines
from tests.test_serve import BOARD, WATCH, signed


@pytest.fixture
def keyed(registered: LedgerUnderTest) -> LedgerUnderTest:
    registered.append(BOARD.registration("council-2030"), WATCH.registration("council-2030"))
    return registered


def test_sigkill_mid_load_loses_no_acknowledged_event_and_resubmitting_stores_each_once(
        keyed: LedgerUnderTest) -> None:
    reporters = [Reporter(f"copy-{i}") for i in range(8)]
    keyed.append(*(r.registration("council-2030") for r in reporters))
    before = keyed.stored_events()
    bodies = [lines(reporters[i % 8].sign(protocol(
        "n1", "07T20:00:00", {"a": i, "b": 1}, by=f"copy-{i % 8}", event_id=f"p{i}")))
        for i in range(400)]
    server = Server(keyed.db, keyed.directory).start()
    acknowledged: set[str] = set()
    lock = threading.Lock()
    enough = threading.Event()

    def report(worker: int) -> None:
        for i in range(worker, len(bodies), 8):
            try:
                answer = server.post(bodies[i])
            except (urllib.error.URLError, http.client.HTTPException, OSError):
                return
            if answer.status == 200:
                with lock:
                    acknowledged.add(f"p{i}")
                    if len(acknowledged) >= 60:
                        enough.set()

    workers = [threading.Thread(target=report, args=(w,)) for w in range(8)]
    for w in workers:
        w.start()
    enough.wait(120)
    server.stop(signal.SIGKILL)
    for w in workers:
        w.join()
    assert len(acknowledged) >= 60
    stored = {e["event_id"] for e in keyed.query("history")["events"]}
    assert acknowledged <= stored
    assert keyed.run("verify").code == 0

    server = Server(keyed.db, keyed.directory).start()
    try:
        for body in bodies:
            assert server.post(body).status == 200
    finally:
        assert server.stop() == 0
    assert keyed.stored_events() == before + len(bodies)
    assert keyed.run("verify").code == 0


def test_two_servers_on_one_postgresql_ledger_see_each_others_writes(tmp_path: Path) -> None:
    require_postgres()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    db = f"{PG_SERVER}?schema={schema}"
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    defs = first_dir / "defs.jsonl"
    regs = [BOARD.registration("council-2030")]
    defs.write_bytes(lines(definition(), station("n1", "North", 1000), station("s1", "South", 1500),
                           *regs))
    import subprocess
    import sys

    appended = subprocess.run([sys.executable, "-m", "ledger", "append", str(defs), "--db", db],
                              cwd=first_dir, capture_output=True, text=True)
    assert appended.returncode == 0, appended.stderr
    # Each server keeps its own read models (a local SQLite file in its working directory).
    env = {"LEDGER_READ_MODELS": ""}
    one = Server(db, first_dir, env={**env, "LEDGER_READ_MODELS": str(first_dir / "rm.db")}).start()
    two = Server(db, second_dir, env={**env, "LEDGER_READ_MODELS": str(second_dir / "rm.db")}).start()
    try:
        tally = "/v1/elections/council-2030/tally"
        assert two.get(tally).json()["stations_reporting"] == 0
        assert one.post(signed(protocol("n1", "07T20:00:00", {"a": 7, "b": 3}))).status == 200
        assert two.get(tally).json()["votes"] == {"a": 7, "b": 3, "c": 0, "d": 0}
        assert two.post(signed(protocol("s1", "07T21:00:00", {"a": 1, "c": 5}))).status == 200
        assert one.get(tally).json()["votes"] == {"a": 8, "b": 3, "c": 5, "d": 0}
    finally:
        assert one.stop() == 0
        assert two.stop() == 0
        with psycopg.connect(PG_SERVER, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_the_live_page_shows_the_tally_and_updates_after_a_post(keyed: LedgerUnderTest) -> None:
    chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(chromedriver).exists():
        missing("no chromedriver (apt-get install chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # A name from the ledger is text, never markup, wherever the page shows it.
    hostile = '<img src=x onerror="document.body.dataset.pwned=1">'
    keyed.append({**Reporter("press").registration("council-2030"), "name": hostile})
    server = Server(keyed.db, keyed.directory).start()
    assert server.post(signed(protocol("n1", "07T20:00:00", {"a": 400, "b": 300}))).status == 200
    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--user-data-dir={keyed.directory / 'profile'}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=DriverService(chromedriver))
    try:
        page = server.get("/").body.decode()
        # Nothing is fetched but the API: no CDN, no font, no image; url() only to an id.
        assert not re.search(r"<link|src=|@import|url\(\s*['\"]?(?!#)", page)
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 60)

        def votes() -> dict[str, str]:
            # Read in one script: the page redraws the table as the feed arrives, and an
            # element found a moment earlier may already be gone.
            return browser.execute_script(
                "return Object.fromEntries([...document.querySelectorAll('#tally tbody tr')]"
                ".map(r => [r.dataset.choice, r.querySelectorAll('td')[1].textContent.trim()]))")

        wait.until(lambda _: votes().get("a") == "400")
        assert votes() == {"a": "400", "b": "300", "c": "0", "d": "0"}
        wait.until(lambda _: browser.find_element(By.ID, "connection").text == "live")
        assert "1 of 3 stations reporting" in browser.find_element(By.ID, "summary").text
        press = browser.execute_script(
            "return document.querySelector('#reporters tr[data-reporter=press] td').textContent")
        assert press == f"press ({hostile})"
        assert browser.execute_script("return document.querySelectorAll('img').length") == 0
        assert browser.execute_script("return document.body.dataset.pwned") is None
        assert server.post(signed(protocol("s1", "07T21:00:00", {"a": 50, "c": 25}))).status == 200
        wait.until(lambda _: votes().get("a") == "450")
        assert votes() == {"a": "450", "b": "300", "c": "25", "d": "0"}
        assert "2 of 3 stations reporting" in browser.find_element(By.ID, "summary").text
        # Scrub back to the start of the night: the slider's far left is the first protocol
        # (20:00 at +02:00), as the server knows the night, so that one station is in.
        slider = browser.find_element(By.ID, "moment")
        browser.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))",
                               slider)
        wait.until(lambda _: browser.find_element(By.ID, "summary").text.startswith("1 of "))
        assert votes() == {"a": "400", "b": "300", "c": "0", "d": "0"}
        assert browser.find_element(By.ID, "moment-label").text == "as of 2030-04-07 18:00 UTC"
        shot = keyed.directory / "live.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 5_000
    finally:
        browser.quit()
        assert server.stop() == 0
