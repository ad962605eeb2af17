"""C2SP signed notes: the published examples of ../shared/c2sp/vectors.json (from C2SP
signed-note.md and Go's sumdb/note), and what a strict reader refuses."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.trust import note
from ledger.trust.note import BadNote, Ed25519Verifier, Verdict
from tests.conftest import SHARED, require_shared

VECTORS = SHARED / "c2sp" / "vectors.json"
# The signer key of Go's sumdb/note package documentation (golang.org/x/mod/sumdb/note), whose
# note is the second of vectors.json's signed_note: PRIVATE+KEY+NAME+ID+base64(0x01 || seed).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"


def vectors() -> dict[str, Any]:
    require_shared(VECTORS)
    return json.loads(VECTORS.read_text())


def test_the_published_notes_verify_with_their_vkeys() -> None:
    for case in vectors()["signed_note"]:
        key = note.parse_vkey(case["vkey"])
        assert key.key_type == note.ED25519 and key.text() == case["vkey"]
        parsed = note.parse(case["note"])
        assert parsed.signed() == case["note"]
        assert note.verdict(parsed, Ed25519Verifier(key.ed25519(), key.name)) is Verdict.VERIFIED
        # One changed character of the text, and the same signature no longer verifies.
        altered = note.parse(case["note"].replace("is", "was", 1))
        assert note.verdict(altered, Ed25519Verifier(key.ed25519(), key.name)) is Verdict.FAILED


def test_signing_is_byte_for_byte_the_published_note() -> None:
    case = vectors()["signed_note"][1]
    _, _, name, key_hex, encoded = GO_SKEY.split("+", 4)
    seed = base64.b64decode(encoded)
    assert seed[0] == note.ED25519
    private = Ed25519PrivateKey.from_private_bytes(seed[1:])
    text = case["note"].split("\n\n")[0] + "\n"
    signed = note.Note(text, (note.sign(text, private, name),)).signed()
    assert signed == case["note"]
    assert note.sign(text, private, name).key_id.hex() == key_hex


def test_a_key_id_is_the_first_four_bytes_of_the_specified_hash() -> None:
    public = bytes(range(32))
    assert note.key_id("example.com/foo", 4, public) == \
        hashlib.sha256(b"example.com/foo\n\x04" + public).digest()[:4]


def test_signatures_of_other_keys_are_ignored() -> None:
    case = vectors()["signed_note"][0]
    key = note.parse_vkey(case["vkey"])
    other = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    parsed = note.parse(case["note"])
    # Another key's line (same name, other key id) is not this key's, before or after.
    extra = note.sign(parsed.text, other, key.name)
    doubled = note.Note(parsed.text, (extra, *parsed.signatures, extra))
    assert note.verdict(note.parse(doubled.signed()), Ed25519Verifier(key.ed25519(), key.name)) \
        is Verdict.VERIFIED
    assert note.verdict(parsed, Ed25519Verifier(other.public_key())) is Verdict.UNSIGNED
    # A PEM key has no name: any name counts whose key id the key gives.
    assert note.verdict(parsed, Ed25519Verifier(key.ed25519())) is Verdict.VERIFIED
    assert note.verdict(parsed, Ed25519Verifier(key.ed25519(), "another")) is Verdict.UNSIGNED


@pytest.mark.parametrize("message, why", [
    ("text\n\u2014 a AAAAAAA=\n", "no blank line"),
    ("text\n\n\u2014 a AAAAAAA=", "each end in a newline"),
    ("text\n\n", "each end in a newline"),
    ("text\n\n- a AAAAAAA=\n", "does not start with an em dash"),
    ("text\n\n\u2014  AAAAAAA=\n", "empty or holds a space"),
    ("text\n\n\u2014 a+b AAAAAAA=\n", "empty or holds a space or '+'"),
    ("text\n\n\u2014 a\u00a0b AAAAAAA=\n", "empty or holds a space"),
    ("text\n\n\u2014 a AAAAAA\n", "not base64"),
    ("text\n\n\u2014 a AAAAAAA= \n", "not base64"),
    ("text\n\n\u2014 a \n", "0 bytes"),
    ("text\n\n\u2014 a AAAAAA==\n", "4 bytes"),
    ("te\txt\n\n\u2014 a AAAAAAA=\n", "control character U+0009"),
    ("text\r\n\n\u2014 a AAAAAAA=\n", "control character U+000D"),
    (b"t\xffext\n\n\xe2\x80\x94 a AAAAAAA=\n", "not valid UTF-8"),
    ("text\n\n" + "\u2014 a AAAAAAA=\n" * 101, "101 signature lines"),
])
def test_malformed_notes_are_refused_saying_why(message: str | bytes, why: str) -> None:
    with pytest.raises(BadNote, match=re.escape(why)):
        note.parse(message)


def test_a_hundred_signatures_and_blank_lines_in_the_text_are_read() -> None:
    parsed = note.parse("a\n\nb\n\n" + "\u2014 a AAAAAAA=\n" * 100)
    assert parsed.text == "a\n\nb\n" and len(parsed.signatures) == 100


@pytest.mark.parametrize("vkey, why", [
    ("example.com/foo", "not NAME\\+KEYID\\+KEY"),
    ("example.com/foo+530d903a", "not NAME\\+KEYID\\+KEY"),
    ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "empty or holds"),
    ("example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "not 8 hex digits"),
    ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
    ("example.com/fou+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
    ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "not base64"),
    ("example.com/foo+530d903a+AkyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k=", "0x02"),
    ("example.com/foo+530d903a+Aeky", "32 bytes"),
])
def test_malformed_vkeys_are_refused_saying_why(vkey: str, why: str) -> None:
    with pytest.raises(BadNote, match=why):
        note.parse_vkey(vkey)


def test_a_vkey_of_the_wrong_type_is_refused_when_a_type_is_asked_for() -> None:
    with pytest.raises(BadNote, match="expected 0x04"):
        note.parse_vkey(vectors()["signed_note"][0]["vkey"], note.COSIGNATURE_V1)
