"""Reporter keys and signed events (../shared/DESIGN.md v2, "Reporters and signed events").

Every signature the ledger must accept is made here with `cryptography` and `rfc8785`
directly, exactly as ../shared/DESIGN.md states the signed message, never with the project's signer;
and what `ledger sign` prints is checked the same independent way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import LedgerUnderTest, definition, ev, protocol, station

PREFIX = b"election-ledger/event/v1\n"


class Reporter:
    """A reporter with its own key pair, signing as ../shared/DESIGN.md says (independently of the ledger)."""

    def __init__(self, reporter: str) -> None:
        self.id = reporter
        self.private = Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = base64.b64encode(raw).decode()
        self.fingerprint = hashlib.sha256(raw).hexdigest()[:16]

    def signature(self, body: dict[str, Any], by: str | None = None) -> dict[str, str]:
        body = {k: v for k, v in body.items() if k != "signature"}
        signed = self.private.sign(PREFIX + rfc8785.dumps(body))
        return {"by": by or self.id, "ed25519": base64.b64encode(signed).decode()}

    def sign(self, event: dict[str, Any], by: str | None = None) -> dict[str, Any]:
        return {**event, "signature": self.signature(event, by)}

    def sign_text(self, text: str, by: str | None = None) -> str:
        """Sign a hand-written line as it stands (its spacing, order and escapes kept)."""
        member = json.dumps(self.signature(json.loads(text), by))
        return text.rstrip()[:-1] + f', "signature": {member}}}'

    def registration(self, at: str = "01T13:00:00", name: str | None = None) -> dict[str, Any]:
        return ev("ReporterRegistered", at, reporter=self.id, name=name or self.id.upper(),
                  public_key=self.public)


def refused(ledger: LedgerUnderTest, *lines: dict[str, Any] | str) -> str:
    """Append, expect exit 2 naming the signature, and nothing stored; return stderr."""
    before = ledger.stored_events()
    result = ledger.append(*lines, expect=2)
    assert "signature" in result.err, result.err
    assert ledger.stored_events() == before
    return result.err


@pytest.fixture
def board() -> Reporter:
    return Reporter("board")


@pytest.fixture
def keyed(ledger: LedgerUnderTest, board: Reporter) -> LedgerUnderTest:
    """The night's election, stations n1, n2, s1, and the board's key registered."""
    ledger.append(definition(), station("n1", "North", 1000), station("n2", "North", 500),
                  station("s1", "South", 1500), board.registration())
    return ledger


N1 = protocol("n1", "07T20:00:00", {"a": 400, "b": 300, "c": 100, "d": 50}, invalid=10)
N2 = protocol("n2", "07T21:00:00", {"a": 100, "b": 200, "c": 50, "d": 20}, invalid=5)


def test_an_independently_signed_protocol_is_appended_and_verified(
    keyed: LedgerUnderTest, board: Reporter
) -> None:
    keyed.append(board.sign(N1))
    assert keyed.query("tally")["votes"] == {"a": 400, "b": 300, "c": 100, "d": 50}
    assert keyed.run("verify").code == 0
    (event,) = [e for e in keyed.query("history")["events"] if e["type"] == "ProtocolIssued"]
    assert (event["signed_by"], event["signing_key"]) == ("board", board.fingerprint)
    # The normalised event is UTC; the submitted form keeps the offset the reporter wrote.
    assert event["occurred_at"] == "2030-04-07T18:00:00.000000Z"
    assert event["occurred_at_as_submitted"] == "2030-04-07T20:00:00+02:00"
    assert event["submitted"] == N1


def test_ledger_sign_output_verifies_with_cryptography_and_rfc8785(
    ledger: LedgerUnderTest, tmp_path: Path
) -> None:
    made = ledger.run("keygen", "board")
    assert made.code == 0, made.err
    public_b64 = made.out.strip().splitlines()[-1]
    pem = serialization.load_pem_public_key((tmp_path / "board.pub").read_bytes())
    assert isinstance(pem, Ed25519PublicKey)
    raw = pem.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64decode(public_b64, validate=True) == raw

    ledger.append(definition(), station("n1", "North", 1000),
                  ev("ReporterRegistered", "01T13:00:00", reporter="board", name="Board",
                     public_key=public_b64))
    unsigned = tmp_path / "n1.jsonl"
    unsigned.write_text(json.dumps(N1) + "\n")
    signed = ledger.run("sign", "--key", "board.key", str(unsigned))
    assert signed.code == 0, signed.err
    (line,) = signed.out.splitlines()
    obj = json.loads(line)
    assert obj["signature"]["by"] == "board"
    body = {k: v for k, v in obj.items() if k != "signature"}
    assert body == N1
    public = Ed25519PublicKey.from_public_bytes(raw)
    public.verify(base64.b64decode(obj["signature"]["ed25519"]), PREFIX + rfc8785.dumps(body))
    with pytest.raises(InvalidSignature):  # the check above can fail: a changed figure does
        public.verify(base64.b64decode(obj["signature"]["ed25519"]),
                      PREFIX + rfc8785.dumps({**body, "invalid": 11}))
    ledger.append(line)
    assert ledger.run("verify").code == 0


def test_ledger_sign_needs_the_signer_of_a_decision_and_refuses_definitions(
    keyed: LedgerUnderTest, tmp_path: Path
) -> None:
    key = tmp_path / "board"
    assert keyed.run("keygen", str(key)).code == 0
    decision = tmp_path / "decision.jsonl"
    decision.write_text(json.dumps(ev("AppealDecided", "09T10:00:00", appeal="y",
                                      decision="rejected", remedy="none")) + "\n")
    without = keyed.run("sign", "--key", f"{key}.key", str(decision))
    assert without.code == 2 and "--as" in without.err and without.out == ""
    defs = tmp_path / "defs.jsonl"
    defs.write_text(json.dumps(station("n9", "North", 10)) + "\n")
    assert keyed.run("sign", "--key", f"{key}.key", str(defs)).code == 2
    other = keyed.run("sign", "--key", f"{key}.key", "--as", "watch", str(decision))
    assert other.code == 0
    assert json.loads(other.out)["signature"]["by"] == "watch"
    mismatch = tmp_path / "n1.jsonl"
    mismatch.write_text(json.dumps(N1) + "\n")
    assert keyed.run("sign", "--key", f"{key}.key", "--as", "watch", str(mismatch)).code == 2


def test_a_decision_is_signed_by_the_elections_authority(
    keyed: LedgerUnderTest, board: Reporter
) -> None:
    watch = Reporter("watch")
    keyed.append(watch.registration())
    filed = ev("AppealFiled", "08T10:00:00", appeal="x", filed_by="watch", stations=["s1"],
               grounds="withheld", demand="recount")
    refused(keyed, board.sign(filed, by="watch"))  # another's key, claiming to be watch
    keyed.append(watch.sign(filed))
    decided = ev("AppealDecided", "09T10:00:00", appeal="x", decision="rejected", remedy="none")
    assert "'board'" in refused(keyed, watch.sign(decided))  # the appellant cannot decide
    refused(keyed, decided)  # the authority has a key: its decision must be signed
    keyed.append(board.sign(decided))
    appeal = keyed.query("appeals")["appeals"][0]
    assert (appeal["signed_by"], appeal["decision_signed_by"]) == ("watch", "board")
    assert keyed.run("verify").code == 0


# Keys ordered by UTF-16 code units, not code points: U+1F600 (surrogates D83D DE00) sorts
# before U+FF01; "é" (U+00E9) before both. Members and spacing as a hand-typed line might have.
CORNERS_DEFINITION = (
    '{"type":"ElectionDefined","election":"corners","occurred_at":"2030-04-01T12:00:00+02:00",'
    '"name":"Corners","seats":3,"method":"sainte_lague","authority":"board","choices":['
    '{"id":"\\u00e9","name":"\\u00c9cologistes"},{"id":"😀","name":"Smile"},'
    '{"id":"\uff01","name":"Fullwidth"}]}'
)


def test_canonical_json_corners_verify_on_what_was_submitted(
    ledger: LedgerUnderTest, board: Reporter
) -> None:
    ledger.append(
        CORNERS_DEFINITION,
        {**station("😀-1", "Région", 100), "election": "corners"},
        {**station("é-2", "Région", 100), "election": "corners"},
        {**board.registration(), "election": "corners"},
    )
    # The test's own canonical form, worked out by hand for the key order and numbers:
    assert rfc8785.dumps({"\uff01": 1, "😀": 2, "é": 3, "z": 5.0, "y": 1e2}) == (
        '{"y":100,"z":5,"é":3,"😀":2,"\uff01":1}'.encode()
    )
    protocol_line = (
        '{ "votes" : {"\uff01": 1, "😀": 2, "\\u00e9": 3},  "reported_by":"board",'
        ' "station": "\\ud83d\\ude00-1", "type": "ProtocolIssued", "invalid": 0,'
        '\t"ballots_cast": 6, "election": "corners", "occurred_at": "2030-04-07T23:30:00-03:30",'
        ' "protocol_no": "N\\u00ba \\"7\\"\\/a" }'
    )
    announced = (
        '{"type":"ResultAnnounced","election":"corners","occurred_at":"2030-04-08T09:00:00+02:00",'
        '"authority":"board","stage":"preliminary","scope":"national","turnout_pct":1e2,'
        '"votes":{"é":3,"😀":2,"\uff01":1}}'
    )
    five = announced.replace('"turnout_pct":1e2', '"turnout_pct":5.0').replace(
        '"preliminary"', '"final"')
    # A decimal that is not a double (50.0000000000000000001) is refused before any
    # signature is looked at: see test_numbers_canonical_json_cannot_represent_refuse_the_line.
    withheld = ('{"type":"ProtocolWithheld","election":"corners","occurred_at":'
                '"2030-04-07T21:00:00+02:00","station":"é-2","requested_by":"board",'
                '"reason":"\\"come back\\"\\ntomorrow \\u2014 \\t\\u00e9"}')
    lines = [board.sign_text(t) for t in (protocol_line, announced, five, withheld)]
    result = ledger.append(*lines)
    assert "appended 4 event(s)" in result.out
    assert ledger.run("verify").code == 0
    events = ledger.query("history", "--election", "corners")["events"]
    signed = [e for e in events if e["signed_by"]]
    assert len(signed) == 4 and {e["signing_key"] for e in signed} == {board.fingerprint}
    first = signed[0]
    assert first["station"] == "😀-1" and first["occurred_at_as_submitted"] == "2030-04-07T23:30:00-03:30"
    assert first["event"]["protocol_no"] == 'Nº "7"/a'
    # The same lines re-appended (the same report) are a no-op.
    assert "appended 0 event(s); 4 already recorded" in ledger.append(*lines).out


def test_numbers_canonical_json_cannot_represent_refuse_the_line(
    keyed: LedgerUnderTest, board: Reporter
) -> None:
    announced = ev("ResultAnnounced", "08T09:00:00", authority="board", stage="preliminary",
                   scope="national", votes={"a": 1})
    good = board.sign(announced)
    text = json.dumps(good)
    huge = text.replace('"votes": {"a": 1}', '"votes": {"a": 9007199254740993}')
    out_of_range = text.replace('"scope"', '"turnout_pct": 1e400, "scope"')
    # JCS would read it as the double 50.0: what was signed is not what was written.
    long_decimal = text.replace('"scope"', '"turnout_pct": 50.0000000000000000001, "scope"')
    for line in (huge, out_of_range, long_decimal):
        before = keyed.stored_events()
        assert keyed.append(line, expect=2).code == 2
        assert keyed.stored_events() == before
    # A member given twice is ambiguous evidence (parsers differ on which one counts): the
    # line is refused, signed or not, so no signature can cover one reading of two.
    duplicated = text.replace('"scope": "national"', '"scope": "North", "scope": "national"')
    refused = keyed.append(duplicated, expect=2)
    assert "scope: ambiguous JSON: the key appears twice" in refused.err
    keyed.append(good)
    assert keyed.run("verify").code == 0


@pytest.mark.parametrize("case", ["unsigned", "wrong key", "by mismatch", "altered",
                                  "unknown signer", "definition", "malformed"])
def test_refusals(keyed: LedgerUnderTest, board: Reporter, case: str) -> None:
    impostor = Reporter("board")  # same name, a key nobody registered
    watch = Reporter("watch")  # has no registered key
    good = board.sign(N2)  # a valid line in the batch: the whole batch must still be refused
    line: dict[str, Any] | str
    if case == "unsigned":
        line = N1
    elif case == "wrong key":
        line = impostor.sign(N1)
    elif case == "by mismatch":
        line = board.sign(N1, by="watch")
    elif case == "altered":
        line = {**board.sign(N1), "invalid": 11}
    elif case == "unknown signer":
        line = watch.sign(protocol("n1", "07T20:30:00", {"a": 1}, by="watch"))
    elif case == "definition":
        line = board.sign(station("n9", "North", 10), by="board")
    else:
        line = {**N1, "signature": {"by": "board", "ed25519": "not base64"}}
    err = refused(keyed, good, line)
    assert "line 2: signature" in err


def test_unsigned_reports_of_reporters_without_a_key_still_append(
    keyed: LedgerUnderTest, board: Reporter
) -> None:
    copy = protocol("n1", "07T20:30:00", {"a": 380, "b": 320, "c": 100, "d": 50}, invalid=10,
                    by="watch")
    withheld = ev("ProtocolWithheld", "07T21:40:00", station="s1", requested_by="watch")
    keyed.append(copy, withheld, board.sign(N1))
    assert keyed.query("tally", "--reporter", "watch")["votes"]["a"] == 380
    signers = {s["reporter"]: s for s in keyed.query("audit")["signers"]}
    assert (signers["board"]["protocols"], signers["board"]["signed_protocols"]) == (1, 1)
    assert (signers["watch"]["protocols"], signers["watch"]["signed_protocols"]) == (1, 0)
    assert keyed.run("verify").code == 0


def test_an_unsigned_report_recorded_before_the_key_stays_valid(ledger: LedgerUnderTest,
                                                                 board: Reporter) -> None:
    ledger.append(definition(), station("n1", "North", 1000), station("n2", "North", 500), N1)
    ledger.append(board.registration())
    refused(ledger, N2)
    ledger.append(board.sign(N2))
    assert ledger.run("verify").code == 0


def test_rotation_adds_a_key_and_the_same_report_resigned_is_a_no_op(
    keyed: LedgerUnderTest, board: Reporter
) -> None:
    rotated = Reporter("board")
    refused(keyed, rotated.sign(N1))  # not registered yet
    keyed.append(board.sign(N1))
    # A key added to a reporter holding one is the reporter's act: signed with the old key.
    keyed.append(board.sign(rotated.registration(at="07T23:00:00")))
    again = keyed.append(rotated.sign(N1))  # same report, new key: nothing new
    assert "appended 0 event(s); 1 already recorded" in again.out
    keyed.append(board.sign(N2))  # the old key still verifies after the rotation
    s1 = protocol("s1", "07T22:00:00", {"a": 600, "b": 300, "c": 200, "d": 100}, invalid=20)
    keyed.append(rotated.sign(s1))
    keys = {e["station"]: e["signing_key"] for e in keyed.query("history")["events"]
            if e["type"] == "ProtocolIssued"}
    assert keys == {"n1": board.fingerprint, "n2": board.fingerprint, "s1": rotated.fingerprint}
    # Registering a key already registered adds nothing.
    assert "1 already recorded" in keyed.append(rotated.registration(at="08T01:00:00")).out
    assert keyed.run("verify").code == 0


def test_a_signed_line_and_its_registration_in_one_batch(ledger: LedgerUnderTest,
                                                          board: Reporter) -> None:
    """"Later" is later in the log: a key counts from the line after its registration."""
    ledger.append(definition())
    lines = [station("n1", "North", 1000), board.sign(N1), board.registration()]
    refused(ledger, *lines)
    lines[1], lines[2] = lines[2], lines[1]
    ledger.append(*lines)
    assert ledger.run("verify").code == 0


def test_verify_detects_a_tampered_stored_signature_in_the_sqlite_file(
    keyed: LedgerUnderTest, board: Reporter
) -> None:
    if keyed.backend != "sqlite":
        pytest.skip("tampers with the SQLite file itself")
    keyed.append(board.sign(N1))
    position = keyed.stored_events()
    forged = board.signature({**N1, "invalid": 11})["ed25519"]
    with sqlite3.connect(keyed.db) as db:
        db.execute("DROP TRIGGER stored_events_no_update")  # as an attacker with the file would
        (state,) = db.execute("SELECT state FROM stored_events WHERE rowid = ?", (position,)).fetchone()
        original = json.loads(state)["event"]["signature"]["ed25519"]
        db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?",
                   (bytes(state).replace(original.encode(), forged.encode()), position))
    result = keyed.run("verify")
    assert result.code == 1 and f"position {position}" in result.err


def _rogue_append(monkeypatch: pytest.MonkeyPatch, ledger: LedgerUnderTest, *lines: Any,
                  submitted: dict[str, Any] | None = None, key: str = "0" * 16) -> None:
    """An operator running a ledger patched to skip the signature rules: the Merkle tree is
    then consistent with what it wrote, so only the signature check can catch it."""
    import ledger.store.batch as batch
    import ledger.trust.signatures as signatures

    def accept_anything(event: Any, text: Any, election: Any, keyring: Any) -> Any:
        if not event.signature:
            return None
        form = rfc8785.dumps(submitted) if submitted else signatures.canonical_submitted(text)
        return signatures.Signed(submitted=signatures.msgspec.Raw(form), key=key)

    with monkeypatch.context() as patched:
        patched.setattr(batch, "authenticate", accept_anything)
        patched.setattr(batch, "unsigned_refusal", lambda *_: None)
        ledger.append(*lines)


@pytest.mark.parametrize("forgery", ["unsigned", "forged", "altered figures"])
def test_verify_names_the_position_of_a_report_that_breaks_the_rules(
    keyed: LedgerUnderTest, board: Reporter, monkeypatch: pytest.MonkeyPatch, forgery: str
) -> None:
    keyed.append(board.sign(N2))
    assert keyed.run("verify").code == 0
    if forgery == "unsigned":
        _rogue_append(monkeypatch, keyed, N1)
    elif forgery == "forged":
        _rogue_append(monkeypatch, keyed, Reporter("board").sign(N1))
    else:  # a genuine signature kept beside figures it does not cover
        _rogue_append(monkeypatch, keyed, {**board.sign(N1), "invalid": 11}, submitted=N1,
                      key=board.fingerprint)
    position = keyed.stored_events()
    result = keyed.run("verify")
    assert result.code == 1
    assert f"position {position}:" in result.err, result.err
    assert {"unsigned": "without the signature its registered key required", "forged": "does not verify",
            "altered figures": "differs from the submission"}[forgery] in result.err


def test_the_report_counts_each_reporters_signed_protocols(
    keyed: LedgerUnderTest, board: Reporter, tmp_path: Path
) -> None:
    copy = protocol("n1", "07T20:30:00", {"a": 380, "b": 320, "c": 100, "d": 50}, invalid=10,
                    by="watch")
    keyed.append(board.sign(N1), board.sign(N2), copy)
    out = tmp_path / "night.html"
    assert keyed.run("report", "--out", str(out)).code == 0
    html = out.read_text()
    assert "Signed protocols" in html
    rows = re.findall(r"<tr><td>(\w+)</td><td[^>]*>(\d+)</td><td[^>]*>(\d+)</td>",
                      html.split('id="signers"')[1].split("</table>")[0])
    assert rows == [("board", "2", "2"), ("watch", "1", "0")]


def test_registration_is_refused_for_an_unknown_election_or_a_malformed_key(
    ledger: LedgerUnderTest, board: Reporter
) -> None:
    ledger.append(definition())
    bad = ledger.append({**board.registration(), "public_key": board.public[:-2] + "=="},
                        expect=2)
    assert "public_key" in bad.err
    unknown = ledger.append({**board.registration(), "election": "nowhere"}, expect=2)
    assert "election" in unknown.err


def test_the_third_party_check_in_the_docs_runs_on_a_real_ledger(
    keyed: LedgerUnderTest, board: Reporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    if keyed.backend != "sqlite":
        pytest.skip("the documented snippet reads a SQLite copy of the log")
    text = (Path(__file__).resolve().parents[1] / "docs" / "integrity.md").read_text()
    (snippet,) = [code for code in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
                  if "signatures verify" in code]
    keyed.append(board.sign(N1), board.sign(N2))

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", snippet], cwd=keyed.directory,
                              capture_output=True, text=True, timeout=60)

    done = check()
    assert (done.returncode, done.stdout.strip()) == (0, "ok: 2 signatures verify"), done.stderr
    _rogue_append(monkeypatch, keyed, Reporter("board").sign(
        protocol("s1", "07T22:00:00", {"a": 1}, by="board")))
    done = check()
    assert done.returncode != 0 and "does not verify" in done.stderr


_json_values = st.recursive(
    st.none() | st.booleans() | st.text() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_json_values)
def test_the_fast_canonical_form_equals_rfc8785(value: Any) -> None:
    """The ledger canonicalises common lines without rfc8785 (for speed): it must produce
    exactly rfc8785's bytes, for any JSON value (non-ASCII and astral member names included)."""
    from ledger.trust.signatures import canonical_json

    assert canonical_json(value) == rfc8785.dumps(value)


def test_the_fast_canonical_form_on_the_orders_that_differ() -> None:
    from ledger.trust.signatures import canonical_json

    for value in ({"\uff01": 1, "😀": 2, "\ue000": 3, "a": 4}, {"x": [1, 2.5, {"é": 1e2}]},
                  {"big": 2**53 - 1, "ctl": "\x00\x1f\x7f\u2028\"\\/"}):
        assert canonical_json(value) == rfc8785.dumps(value)
