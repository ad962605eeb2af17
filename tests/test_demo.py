"""The demo tells the Kazakhstan 2007 story, reproducibly and close to the official figures."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from ledger.demo import AUTHORITY, OFFICIAL_SHARES, scenario


def _ledger(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ledger", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _digest_in_a_fresh_process(hash_seed: str) -> str:
    code = ("import hashlib, json; from ledger.demo import scenario; "
            "print(hashlib.sha256(json.dumps(scenario(300), sort_keys=True).encode()).hexdigest())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONHASHSEED": hash_seed},
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_scenario_is_reproducible_across_processes() -> None:
    """Not the code compared with itself in one process: two interpreters with different
    string-hash seeds (set iteration order differs) must build byte-identical stories."""
    assert _digest_in_a_fresh_process("1") == _digest_in_a_fresh_process("4242")
    here = hashlib.sha256(json.dumps(scenario(300), sort_keys=True).encode()).hexdigest()
    assert here == _digest_in_a_fresh_process("7")
    assert scenario(300, seed=1) != scenario(300)


def test_the_scenario_tells_the_story_it_claims() -> None:
    """Counted naively from the events: one registration and one CEC protocol per station,
    and the CEC's protocols sum to within 0.2 points of the official 2007 shares."""
    story = scenario(300)
    events = [event for batch in story.values() for event in batch]
    registered = [e["station"] for e in events if e["type"] == "StationRegistered"]
    assert len(registered) == len(set(registered)) == 300
    cec = [e for e in events if e["type"] == "ProtocolIssued" and e["reported_by"] == AUTHORITY
           and not e.get("supersedes")]
    assert sorted(e["station"] for e in cec) == sorted(registered)
    totals: dict[str, int] = {}
    for protocol in cec:
        for party, votes in protocol["votes"].items():
            totals[party] = totals.get(party, 0) + votes
    valid = sum(totals.values())
    for party, share in OFFICIAL_SHARES.items():
        assert abs(100 * totals[party] / valid - share) < 0.2, party


def test_the_demo_runs_and_its_numbers_hold(tmp_path: Path) -> None:
    result = _ledger("demo", "--dir", "kz", "--stations", "1500", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for heading in ("The preliminary tally as of 2007-08-18T22:00:00+06:00",
                    "The final tally, certified", "Seats: 98 by Hare",
                    "Withheld versus copied"):
        assert heading in result.stdout
    db = str(tmp_path / "kz" / "ledger.db")
    final = json.loads(_ledger("tally", "--stage", "final", "--format", "json", "--db", db,
                               cwd=tmp_path).stdout)
    assert final["status"] == "certified" and final["stations_reporting"] == 1500
    for party, share in OFFICIAL_SHARES.items():
        assert abs(final["shares"][party] - share) < 0.6, (party, final["shares"][party])
    seats = json.loads(_ledger("seats", "--stage", "final", "--format", "json", "--db", db,
                               cwd=tmp_path).stdout)
    assert {k: v for k, v in seats["seats"].items() if v} == {"nur-otan": 98}
    withheld = json.loads(_ledger("withheld", "--format", "json", "--db", db,
                                  cwd=tmp_path).stdout)
    (osdp,) = withheld["comparison"]
    # 184 Astana stations: copies from two thirds, refusals at the rest, where OSDP did best.
    assert (osdp["stations_copied"], osdp["stations_withheld"]) == (122, 62)
    assert osdp["official_share_where_withheld_pct"] > osdp["official_share_where_copied_pct"]
    pending = json.loads(_ledger("tally", "--stage", "final", "--as-of",
                                 "2007-08-22T12:00:00+06:00", "--format", "json", "--db", db,
                                 cwd=tmp_path).stdout)
    assert pending["status"] == "contested" and len(pending["contested"]) == 12
