"""Checkpoints (c2sp.org/tlog-checkpoint): C2SP signed notes whose text is the log's origin,
its tree size and its base64 root hash, signed with Ed25519 (signature type 0x01).

::

    election-ledger/0123456789abcdef
    17
    <base64 root hash>

    — <key name> <base64(key id ‖ signature)>

It is the format certificate-transparency logs and their witnesses speak, so existing note
tooling reads it. The note format itself (parsing, key ids, signing) lives in
``ledger.trust.note``; this module adds what a checkpoint's text must be.
"""

from __future__ import annotations

import binascii
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import BadInput
from ledger.trust import note
from ledger.trust.note import BadNote, Signature, Verdict

MAX_SIZE = 2**63 - 1  # what a signed 64-bit size holds, as in Go's tlog and the witnesses


class BadCheckpoint(BadInput):
    """A checkpoint file, key or signature cannot be read or does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    signatures: tuple[Signature, ...] = ()
    # Opaque lines after the root (tlog-checkpoint allows them; this ledger writes none).
    extensions: tuple[str, ...] = ()

    @property
    def body(self) -> str:
        """The note text: what the log and its witnesses sign."""
        lines = [self.origin, str(self.size), note.encode_base64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    def text(self) -> str:
        if not self.signatures:
            return self.body
        return note.Note(self.body, self.signatures).signed()


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    return note.key_id(name, note.ED25519, note.raw_public_key(public_key))


def sign(checkpoint: Checkpoint, private_key: Ed25519PrivateKey, name: str) -> Checkpoint:
    try:
        line = note.sign(checkpoint.body, private_key, name)
    except BadNote as error:
        raise BadCheckpoint(str(error)) from None
    return dataclasses.replace(checkpoint, signatures=(*checkpoint.signatures, line))


def verify_signature(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> str:
    """The name of the key that signed ``checkpoint``; ``BadCheckpoint`` if none did.

    A PEM public key carries no name: a line under any name is this key's when its key id is
    the one that name and this key give (the signature then proves it).
    """
    verifier = note.Ed25519Verifier(public_key)
    found = note.verdict(note.Note(checkpoint.body, checkpoint.signatures), verifier)
    if found is Verdict.UNSIGNED:
        raise BadCheckpoint("the checkpoint carries no signature by this public key")
    name = next(s.name for s in checkpoint.signatures if verifier.accepts(s))
    if found is Verdict.FAILED:
        raise BadCheckpoint(f"the signature by {name!r} does not verify: forged or altered")
    return name


def parse(text: str) -> Checkpoint:
    """A checkpoint, signed (a note) or not (its text alone); ``BadCheckpoint`` if malformed."""
    try:
        if "\n\n" in text:
            signed = note.parse(text)
            return dataclasses.replace(parse_body(signed.text), signatures=signed.signatures)
        note.check_text(text)
    except BadNote as error:
        raise BadCheckpoint(str(error)) from None
    return parse_body(text)


def parse_body(text: str) -> Checkpoint:
    """A checkpoint's note text, strictly: it renders back to exactly ``text``."""
    if not text.endswith("\n"):
        raise BadCheckpoint("a checkpoint ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or not all(lines):
        raise BadCheckpoint("a checkpoint starts with three non-empty lines: origin, tree size, "
                            "root hash (and any extension line is non-empty)")
    origin, size_text, root_text = lines[:3]
    if not (size_text.isascii() and size_text.isdigit()) or (size_text[0] == "0" and size_text != "0"):
        raise BadCheckpoint(f"tree size {size_text!r} is not a decimal number without leading zeros")
    if len(size_text) > len(str(MAX_SIZE)) or int(size_text) > MAX_SIZE:
        raise BadCheckpoint(f"tree size {size_text[:40]} is above 2^63 - 1")
    try:
        root = note.decode_canonical_base64(root_text)
    except (binascii.Error, UnicodeEncodeError):
        raise BadCheckpoint(f"root hash {root_text!r} is not base64") from None
    if len(root) != 32:
        raise BadCheckpoint(f"root hash is {len(root)} bytes, expected 32")
    return Checkpoint(origin, int(size_text), root, extensions=tuple(lines[3:]))


def read_checkpoint(path: Path) -> Checkpoint:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise BadCheckpoint(f"{path}: {error}") from None


def generate_key_pair(prefix: Path) -> tuple[Path, Path]:
    private = Ed25519PrivateKey.generate()
    secret, public = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    secret.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    secret.chmod(0o600)
    public.write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
    ))
    return secret, public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise BadCheckpoint(f"{path}: not a readable private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadCheckpoint(f"{path}: not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as error:
        raise BadCheckpoint(f"{path}: not a readable public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadCheckpoint(f"{path}: not an Ed25519 key")
    return key


def load_log_verifier(path: Path) -> note.Ed25519Verifier:
    """A log's key from a PEM public key (its signature lines may carry any name whose key id
    the key gives) or from a vkey of type 0x01 (then only under that name)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BadCheckpoint(f"{path}: {error.strerror or error}") from None
    if data.lstrip().startswith(b"-----BEGIN"):
        return note.Ed25519Verifier(load_public_key(path))
    try:
        key = note.parse_vkey(data.decode("utf-8").strip(), note.ED25519)
    except (BadNote, UnicodeDecodeError) as error:
        raise BadCheckpoint(f"{path}: neither a PEM public key nor a log's vkey ({error})") from None
    return note.Ed25519Verifier(key.ed25519(), key.name)
