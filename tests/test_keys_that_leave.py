"""Keys that leave (../shared/DESIGN.md v3): a key added to a keyed reporter needs that reporter's
signature, a revoked key signs nothing from its position on, one key speaks for one
reporter, and ``verify`` checks each signature against the keys valid at its position.

Every signature is made here with `cryptography` and `rfc8785` directly (tests/test_signatures.py's
``Reporter``), never with the ledger's own signer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from tests.conftest import LedgerUnderTest, definition, ev, protocol, station
from tests.serving import Server, lines
from tests.test_signatures import N1, N2, Reporter


@pytest.fixture
def board() -> Reporter:
    return Reporter("board")


@pytest.fixture
def keyed(ledger: LedgerUnderTest, board: Reporter) -> LedgerUnderTest:
    ledger.append(definition(), station("n1", "North", 1000), station("n2", "North", 500),
                  station("s1", "South", 1500), board.registration())
    return ledger


def revocation(reporter: Reporter, at: str = "07T22:00:00", **fields: Any) -> dict[str, Any]:
    return ev("ReporterKeyRevoked", at, reporter=reporter.id, public_key=reporter.public,
              reason="the laptop was stolen", **fields)


def refused_for(ledger: LedgerUnderTest, field: str, *events: dict[str, Any] | str) -> str:
    """Append, expect exit 2 naming ``field`` on the last line, and nothing stored."""
    before = ledger.stored_events()
    result = ledger.append(*events, expect=2)
    assert f"line {len(events)}: {field}:" in result.err, result.err
    assert ledger.stored_events() == before
    return result.err


def test_a_key_added_to_a_keyed_reporter_must_be_signed_by_it(
    keyed: LedgerUnderTest, board: Reporter
) -> None:
    rotated = Reporter("board")
    # The operator alone cannot give itself a voice in the board's name...
    err = refused_for(keyed, "signature", rotated.registration(at="07T23:00:00"))
    assert "signed by one of its keys" in err
    # ... nor can the new key vouch for itself, nor another reporter's key.
    refused_for(keyed, "signature", rotated.sign(rotated.registration(at="07T23:00:00")))
    watch = Reporter("watch")
    keyed.append(watch.registration())
    refused_for(keyed, "signature", watch.sign(rotated.registration(at="07T23:00:00"), by="board"))
    # Signed with the board's registered key, it is the board's own act.
    keyed.append(board.sign(N1), board.sign(rotated.registration(at="07T23:00:00")))
    keyed.append(rotated.sign(N2))
    keys = {e["station"]: e["signing_key"] for e in keyed.query("history")["events"]
            if e["type"] == "ProtocolIssued"}
    assert keys == {"n1": board.fingerprint, "n2": rotated.fingerprint}
    acts = [(a["reporter"], a["act"], a["key"], a["acted_by"])
            for a in keyed.query("audit")["key_acts"]]
    assert acts == [("board", "registered", board.fingerprint, "operator"),
                    ("watch", "registered", watch.fingerprint, "operator"),
                    ("board", "rotated", rotated.fingerprint, "board")]
    assert keyed.run("verify").code == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_ledger_sign_signs_a_rotation_with_the_old_key(keyed: LedgerUnderTest, tmp_path: Path) -> None:
    made = keyed.run("keygen", "old")
    assert made.code == 0, made.err
    keyed.append(ev("ReporterRegistered", "01T13:00:00", reporter="watch", name="Watch",
                    public_key=made.out.strip().splitlines()[-1]))
    new = Reporter("watch")
    line = tmp_path / "rotation.jsonl"
    line.write_text(json.dumps(new.registration(at="07T23:00:00")) + "\n")
    signed = keyed.run("sign", "--key", "old.key", str(line))
    assert signed.code == 0, signed.err
    assert json.loads(signed.out)["signature"]["by"] == "watch"
    keyed.append(signed.out.strip())
    keyed.append(new.sign(protocol("n1", "07T20:30:00", {"a": 1}, by="watch")))
    assert keyed.run("verify").code == 0


def test_a_revoked_key_signs_nothing_from_its_position_on(keyed: LedgerUnderTest,
                                                          board: Reporter) -> None:
    keyed.append(board.sign(N1))
    keyed.append(revocation(board))
    # Signed by the revoked key: refused, whoever sends it; unsigned: refused too (the board
    # stays keyed, and holds no key to sign with until a new one is registered).
    err = refused_for(keyed, "signature", board.sign(N2))
    assert "revoked" in err
    assert "until a new key is registered" in refused_for(keyed, "signature", N2)
    # A revoked key never returns, not even by the operator.
    refused_for(keyed, "public_key", board.registration(at="08T00:00:00"))
    # The board's new key: the operator's act, unsigned, now that every key is revoked.
    new = Reporter("board")
    keyed.append(new.registration(at="08T00:00:00"))
    keyed.append(new.sign(N2))
    # What the revoked key signed before its revocation stays valid.
    assert keyed.run("verify").code == 0
    assert keyed.query("tally")["stations_reporting"] == 2
    (signer,) = keyed.query("audit")["signers"]
    assert (signer["keys"], signer["revoked_keys"]) == ([new.fingerprint], [board.fingerprint])
    acts = [(a["act"], a["key"], a["acted_by"], a["reason"]) for a in keyed.query("audit")["key_acts"]]
    assert acts == [("registered", board.fingerprint, "operator", None),
                    ("revoked", board.fingerprint, "operator", "the laptop was stolen"),
                    ("registered", new.fingerprint, "operator", None)]
    # The same report sent again with the revoked key is refused, not a no-op.
    refused_for(keyed, "signature", board.sign(N1))


def test_only_a_held_key_is_revoked_and_one_key_speaks_for_one_reporter(
    keyed: LedgerUnderTest, board: Reporter
) -> None:
    watch = Reporter("watch")
    err = refused_for(keyed, "public_key", revocation(watch))
    assert "does not hold this key" in err
    # The board's key, revoked as watch's: watch does not hold it.
    refused_for(keyed, "public_key", {**revocation(board), "reporter": "watch"})
    # The board's key registered for watch as well: refused, in a batch or alone.
    err = refused_for(keyed, "public_key", {**board.registration(), "reporter": "watch"})
    assert "already registered for reporter 'board'" in err
    refused_for(keyed, "public_key", watch.registration(), {**watch.registration(), "reporter": "c"})
    keyed.append(revocation(board))
    assert "already revoked" in refused_for(keyed, "public_key", revocation(board, at="08T00:00:00"))
    # Revoked for the board, it speaks for nobody else either.
    refused_for(keyed, "public_key", {**board.registration(), "reporter": "watch"})
    # A signature on a revocation is refused: it is the operator's act.
    refused_for(keyed, "signature", board.sign(revocation(board, at="08T00:00:00")))
    assert keyed.run("verify").code == 0


def _rogue_append(monkeypatch: pytest.MonkeyPatch, ledger: LedgerUnderTest, *events: Any) -> None:
    """An operator running a ledger patched to skip every rule about keys and signatures:
    the Merkle tree then agrees with what it wrote, so only verify's own checks can tell."""
    import ledger.store.batch as batch
    import ledger.trust.signatures as signatures

    def accept_anything(event: Any, text: Any, election: Any, keyring: Any) -> Any:
        if not event.signature:
            return None
        form = signatures.canonical_submitted(text)
        key = signatures.verifying_key(
            [*keyring.keys(event.election, event.signature.by),
             *keyring.revoked(event.election, event.signature.by)],
            event.signature.ed25519, signatures.signed_message(form))
        return signatures.Signed(submitted=signatures.msgspec.Raw(form), key=key.fingerprint)

    with monkeypatch.context() as patched:
        patched.setattr(batch, "authenticate", accept_anything)
        patched.setattr(batch, "unsigned_refusal", lambda *_: None)
        patched.setattr(batch, "check", lambda *_: [])
        ledger.append(*events)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
@pytest.mark.parametrize("forgery", ["revoked key", "unsigned rotation", "key returns",
                                     "key of another"])
def test_verify_checks_each_signature_against_the_keys_valid_at_its_position(
    keyed: LedgerUnderTest, board: Reporter, monkeypatch: pytest.MonkeyPatch, forgery: str
) -> None:
    keyed.append(board.sign(N1), revocation(board))
    assert keyed.run("verify").code == 0
    if forgery == "revoked key":
        _rogue_append(monkeypatch, keyed, board.sign(N2))
        why = "every key of reporter 'board' in 'council-2030' is revoked"
    elif forgery == "unsigned rotation":
        keyed.append(Reporter("board").registration(at="08T00:00:00"))
        _rogue_append(monkeypatch, keyed, Reporter("board").registration(at="08T01:00:00"))
        why = "without its signature"
    elif forgery == "key returns":
        _rogue_append(monkeypatch, keyed, board.registration(at="08T00:00:00"))
        why = "never registered again"
    else:
        _rogue_append(monkeypatch, keyed, {**board.registration(), "reporter": "watch"})
        why = "one key speaks for one reporter"
    position = keyed.stored_events()
    result = keyed.run("verify")
    assert result.code == 1
    assert f"position {position}:" in result.err and why in result.err, result.err


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_the_read_side_shows_revocations(keyed: LedgerUnderTest, board: Reporter,
                                         tmp_path: Path) -> None:
    keyed.append(board.sign(N1), revocation(board))
    new = Reporter("board")
    keyed.append(new.registration(at="08T00:00:00"), new.sign(N2))
    assert keyed.run("replay").code == 0
    history = keyed.query("history")["events"]
    revoked = [e for e in history if e["type"] == "ReporterKeyRevoked"]
    assert [e["event"]["reason"] for e in revoked] == ["the laptop was stolen"]
    table = keyed.run("audit")
    assert table.code == 0 and "== key acts (3)" in table.out
    (reporter,) = [r for r in keyed.query("reporters")["reporters"] if r["reporter"] == "board"]
    assert (reporter["keys_registered"], reporter["keys_revoked"]) == (2, 1)
    out = tmp_path / "night.html"
    assert keyed.run("report", "--out", str(out)).code == 0
    acts = out.read_text().split('id="key-acts"')[1].split("</table>")[0]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in acts.split("<tr")[2:]]
    assert [(c[2], c[3], c[5]) for c in cells] == [
        ("board", "key registered", "the operator"), ("board", "key revoked", "the operator"),
        ("board", "key registered", "the operator")]
    export = keyed.run("export", "--format", "nist-err")
    assert export.code == 0, export.err
    assert json.loads(export.out)["@type"] == "ElectionResults.ElectionReport"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_over_http_a_revocation_is_the_operators_and_a_revoked_key_is_403(
    keyed: LedgerUnderTest, board: Reporter
) -> None:
    keyed.append(board.sign(N1), revocation(board))
    server = Server(keyed.db, keyed.directory).start()
    try:
        answer = server.post(lines(revocation(board, at="08T00:00:00")))
        assert answer.status == 403 and answer.json()["problems"][0]["field"] == "type"
        answer = server.post(lines(board.sign(N2)))
        assert answer.status == 403, answer.body
        assert answer.json()["problems"][0]["field"] == "signature"
        rotation = board.sign(Reporter("board").registration(at="08T00:00:00"))
        assert server.post(lines(rotation)).status == 403
    finally:
        assert server.stop() == 0
    assert keyed.stored_events() == 7


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # nothing backend-specific
def test_the_documented_third_party_check_follows_revocations_and_rotations(
    keyed: LedgerUnderTest, board: Reporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    text = (Path(__file__).resolve().parents[1] / "docs" / "integrity.md").read_text()
    (snippet,) = [code for code in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
                  if "signatures verify" in code]
    rotated = Reporter("board")
    keyed.append(board.sign(N1), board.sign(rotated.registration(at="07T21:30:00")),
                 revocation(board), rotated.sign(N2))

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", snippet], cwd=keyed.directory,
                              capture_output=True, text=True, timeout=60)

    done = check()
    assert (done.returncode, done.stdout.strip()) == (0, "ok: 3 signatures verify"), done.stderr
    _rogue_append(monkeypatch, keyed, board.sign(protocol("s1", "07T22:30:00", {"a": 1})))
    done = check()
    assert done.returncode != 0 and "does not verify" in done.stderr
    assert rfc8785  # the snippet needs it installed, as the docs say
