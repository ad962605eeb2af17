"""Checkpoints in the C2SP signed-note format, signed with Ed25519.

A checkpoint is three lines — origin, tree size, base64 root hash — and, when signed, a
blank line and one signature line per key: ``— <key name> <base64(key hash ‖ signature)>``,
where the key hash is the first four bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key).
It is the same format certificate-transparency logs publish, so existing note tooling reads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import BadInput

ED25519 = b"\x01"
DASH = "\u2014"


class BadCheckpoint(BadInput):
    """A checkpoint file, key or signature cannot be read or does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    signatures: tuple[tuple[str, bytes], ...] = ()

    @property
    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def text(self) -> str:
        if not self.signatures:
            return self.body
        lines = [f"{DASH} {name} {base64.b64encode(sig).decode()}" for name, sig in self.signatures]
        return self.body + "\n" + "\n".join(lines) + "\n"


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + raw).digest()[:4]


def sign(checkpoint: Checkpoint, private_key: Ed25519PrivateKey, name: str) -> Checkpoint:
    signature = private_key.sign(checkpoint.body.encode())
    line = (name, key_hash(name, private_key.public_key()) + signature)
    return Checkpoint(checkpoint.origin, checkpoint.size, checkpoint.root,
                      (*checkpoint.signatures, line))


def verify_signature(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> str:
    """The name of the key that signed ``checkpoint``; ``BadCheckpoint`` if none did."""
    for name, blob in checkpoint.signatures:
        if blob[:4] != key_hash(name, public_key):
            continue
        try:
            public_key.verify(blob[4:], checkpoint.body.encode())
        except InvalidSignature:
            raise BadCheckpoint(f"the signature by {name!r} does not verify: forged or altered") from None
        return name
    raise BadCheckpoint("the checkpoint carries no signature by this public key")


def parse(text: str) -> Checkpoint:
    body, _, signed = text.partition("\n\n")
    lines = body.split("\n")
    if len(lines) < 3 or not lines[0]:
        raise BadCheckpoint("a checkpoint starts with three lines: origin, tree size, root hash")
    origin, size_text, root_text = lines[:3]
    if not size_text.isdigit():
        raise BadCheckpoint(f"tree size {size_text!r} is not a whole number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise BadCheckpoint(f"root hash {root_text!r} is not base64") from None
    if len(root) != 32:
        raise BadCheckpoint(f"root hash is {len(root)} bytes, expected 32")
    signatures = []
    for line in filter(None, signed.split("\n")):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise BadCheckpoint(f"malformed signature line {line!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise BadCheckpoint(f"signature of {parts[1]!r} is not base64") from None
        signatures.append((parts[1], blob))
    return Checkpoint(origin, int(size_text), root, tuple(signatures))


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
