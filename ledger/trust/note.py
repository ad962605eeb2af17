"""C2SP signed notes (c2sp.org/signed-note), as golang.org/x/mod/sumdb/note reads and writes them.

A signed note is a text ending in a newline, a blank line, and one or more signature lines
``— NAME base64(key id ‖ signature)``. The key id is the first four bytes of
SHA-256(NAME ‖ 0x0A ‖ signature type ‖ public key). A verifier key (*vkey*) is written
``NAME+<key id, 8 hex>+base64(signature type ‖ public key)``.

Checkpoints (0x01, Ed25519 over the note text) and witness cosignatures (0x04, see
``cosignature.py``) are both signed notes; this module is the one place that parses and writes
them. Parsing is as strict as Go's ``note.Open``: valid UTF-8, no control character but newline,
at most ``MAX_SIGNATURES`` signature lines, names without spaces or ``+``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import BadInput

ED25519 = 0x01          # a log's signature over the note text
COSIGNATURE_V1 = 0x04   # a witness's timestamped Ed25519 cosignature (c2sp.org/tlog-cosignature)
KEY_TYPES = {ED25519: "Ed25519", COSIGNATURE_V1: "Ed25519 cosignature/v1"}
DASH = "\u2014"
# Go's note.Open refuses more; the specification asks every verifier to accept at least 16.
MAX_SIGNATURES = 100


class BadNote(BadInput):
    """A note, a signature line or a verifier key that the format does not allow."""


def valid_name(name: str) -> bool:
    """A key name: non-empty, no Unicode space, no ``+`` (it separates a vkey's parts)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) \
        and not any(ord(c) < 0x20 for c in name)


def key_id(name: str, key_type: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([key_type]) + public_key).digest()[:4]


def decode_base64(text: str) -> bytes:
    """Standard base64 with its padding, nothing else; ``binascii.Error`` otherwise.

    Like Go's ``base64.StdEncoding`` it does not insist that unused trailing bits are zero.
    """
    return base64.b64decode(text.encode("ascii", "strict"), validate=True)


def decode_canonical_base64(text: str) -> bytes:
    """Base64 that has exactly one spelling for its bytes (hashes, keys)."""
    value = decode_base64(text)
    if base64.b64encode(value).decode() != text:
        raise binascii.Error("not the canonical base64 of its bytes")
    return value


def encode_base64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@dataclass(frozen=True)
class Signature:
    """One signature line: the signer's name, its 4-byte key id, and what the key signed."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{DASH} {self.name} {encode_base64(self.key_id + self.signature)}\n"


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...] = ()

    def signed(self) -> str:
        """The note as it travels: text, blank line, one line per signature."""
        return self.text + "\n" + "".join(s.line() for s in self.signatures)


def check_text(message: str) -> None:
    """What every note must be: UTF-8, no control character other than newline."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadNote(f"not valid UTF-8 (character {error.start})") from None
    for position, char in enumerate(message):
        if char < " " and char != "\n":
            raise BadNote(f"control character U+{ord(char):04X} at character {position}; "
                          "a note allows only newlines")


def parse(message: str | bytes) -> Note:
    """A signed note, its signatures not yet verified; ``BadNote`` saying what is wrong."""
    if isinstance(message, bytes):
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BadNote(f"not valid UTF-8 (byte {error.start})") from None
    check_text(message)
    split = message.rfind("\n\n")
    if split < 0:
        raise BadNote("no blank line before the signature lines")
    return Note(message[:split + 1], parse_signature_lines(message[split + 2:]))


def parse_signature_lines(block: str) -> tuple[Signature, ...]:
    """One or more signature lines, each ending in a newline (as a witness answers them)."""
    check_text(block)
    if not block.endswith("\n"):
        raise BadNote("the signature lines must each end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise BadNote(f"{len(lines)} signature lines; at most {MAX_SIGNATURES} are read")
    return tuple(_signature(number, line) for number, line in enumerate(lines, 1))


def _signature(number: int, line: str) -> Signature:
    where = f"signature line {number}"
    if not line.startswith(DASH + " "):
        raise BadNote(f"{where} does not start with an em dash and a space")
    name, _, encoded = line[2:].partition(" ")
    if not valid_name(name):
        raise BadNote(f"{where}: key name {name!r} is empty or holds a space or '+'")
    try:
        blob = decode_base64(encoded)
    except (binascii.Error, UnicodeEncodeError):
        raise BadNote(f"{where}: the signature of {name!r} is not base64") from None
    if len(blob) < 5:
        raise BadNote(f"{where}: the signature of {name!r} is {len(blob)} bytes; a key id "
                      "and a signature are at least 5")
    return Signature(name, blob[:4], blob[4:])


# -- keys ------------------------------------------------------------------------------------


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class VerifierKey:
    """A named public key of one signature type: what a vkey says."""

    name: str
    key_type: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.key_type, self.public_key)

    def text(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{encode_base64(bytes([self.key_type]) + self.public_key)}"

    def ed25519(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)


def parse_vkey(text: str, key_type: int | None = None) -> VerifierKey:
    """A vkey ``NAME+ID+KEY`` of a known type (of ``key_type`` when given); ``BadNote`` why not."""
    name, plus, rest = text.partition("+")
    hex_id, plus2, encoded = rest.partition("+")
    if not plus or not plus2:
        raise BadNote(f"vkey {text!r} is not NAME+KEYID+KEY")
    if not valid_name(name):
        raise BadNote(f"vkey {text!r}: name {name!r} is empty or holds a space or '+'")
    if len(hex_id) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_id):
        raise BadNote(f"vkey {text!r}: key id {hex_id!r} is not 8 hex digits")
    try:
        blob = decode_canonical_base64(encoded)
    except (binascii.Error, UnicodeEncodeError):
        raise BadNote(f"vkey {text!r}: the key is not base64") from None
    if not blob or blob[0] not in KEY_TYPES:
        found = f"0x{blob[0]:02x}" if blob else "nothing"
        raise BadNote(f"vkey {text!r}: signature type {found} is not one of "
                      + ", ".join(f"0x{t:02x} ({what})" for t, what in KEY_TYPES.items()))
    if key_type is not None and blob[0] != key_type:
        raise BadNote(f"vkey {text!r}: signature type 0x{blob[0]:02x} ({KEY_TYPES[blob[0]]}); "
                      f"expected 0x{key_type:02x} ({KEY_TYPES[key_type]})")
    if len(blob) != 33:
        raise BadNote(f"vkey {text!r}: an Ed25519 key is 32 bytes, not {len(blob) - 1}")
    key = VerifierKey(name, blob[0], blob[1:])
    if key.key_id.hex() != hex_id.lower():
        raise BadNote(f"vkey {text!r}: key id {hex_id} does not match the name and key "
                      f"(expected {key.key_id.hex()})")
    try:
        key.ed25519()
    except ValueError:
        raise BadNote(f"vkey {text!r}: not an Ed25519 public key") from None
    return key


# -- signing and verifying -------------------------------------------------------------------


class Verifier(Protocol):
    """One trusted key: which signature lines are its own, and whether one verifies."""

    def accepts(self, signature: Signature) -> bool: ...

    def verify(self, text: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True)
class Ed25519Verifier:
    """A signer of type 0x01. With ``name`` None, a line under any name counts as this key's
    when its key id is the one that name and this key give: a PEM public key has no name."""

    public_key: Ed25519PublicKey
    name: str | None = None

    def accepts(self, signature: Signature) -> bool:
        if self.name is not None and signature.name != self.name:
            return False
        return signature.key_id == key_id(signature.name, ED25519, raw_public_key(self.public_key))

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


class Verdict(Enum):
    UNSIGNED = "no signature line by this key"
    VERIFIED = "signed by this key"
    FAILED = "a signature line by this key does not verify"


def verdict(note: Note, verifier: Verifier) -> Verdict:
    """Whether ``verifier``'s key signed ``note``. Lines of other keys are ignored, as the
    specification requires; one failing line of this key fails the note, as it recommends."""
    lines = [s for s in note.signatures if verifier.accepts(s)]
    if not lines:
        return Verdict.UNSIGNED
    text = note.text.encode()
    return Verdict.VERIFIED if all(verifier.verify(text, s.signature) for s in lines) \
        else Verdict.FAILED


def sign(text: str, private_key: Ed25519PrivateKey, name: str) -> Signature:
    """An Ed25519 (0x01) signature line over the note text."""
    if not text.endswith("\n"):
        raise BadNote("a note text must end in a newline")
    if not valid_name(name):
        raise BadNote(f"key name {name!r} is empty or holds a space or '+'")
    public = raw_public_key(private_key.public_key())
    return Signature(name, key_id(name, ED25519, public), private_key.sign(text.encode()))
