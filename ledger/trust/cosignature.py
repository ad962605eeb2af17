"""Witness cosignatures, C2SP tlog-cosignature v1 (signature type 0x04, Ed25519).

A cosignature is a note signature line on a checkpoint, by a witness that checked the
checkpoint is consistent with everything it cosigned before for that log::

    — <witness name> base64(key id ‖ timestamp as 8-byte big-endian ‖ Ed25519 signature)

The witness signs ``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint's note
text; the key id is SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]. The message does not name the
witness, so one key must serve one witness only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.trust import note
from ledger.trust.note import COSIGNATURE_V1, BadNote, Signature, VerifierKey

MAX_TIMESTAMP = 2**63 - 1
SIGNATURE_BYTES = 8 + 64


def message(checkpoint_text: str, timestamp: int) -> bytes:
    """What the witness signs: header, time line, then the checkpoint's note text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError(f"timestamp {timestamp} is outside 0..2^63-1")
    return f"cosignature/v1\ntime {timestamp}\n".encode() + checkpoint_text.encode()


def vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """The witness's verifier key ``NAME+ID+base64(0x04 ‖ key)``."""
    if not note.valid_name(name):
        raise BadNote(f"witness name {name!r} is empty or holds a space or '+'")
    return VerifierKey(name, COSIGNATURE_V1, note.raw_public_key(public_key)).text()


def sign(checkpoint_text: str, private_key: Ed25519PrivateKey, name: str, timestamp: int) -> Signature:
    """The witness's cosignature of a checkpoint's note text, made at ``timestamp``."""
    if not checkpoint_text.endswith("\n"):
        raise BadNote("a checkpoint's note text ends in a newline")
    key = VerifierKey(name, COSIGNATURE_V1, note.raw_public_key(private_key.public_key()))
    signature = private_key.sign(message(checkpoint_text, timestamp))
    return Signature(name, key.key_id, struct.pack(">Q", timestamp) + signature)


def timestamp(signature: Signature) -> int:
    """When the witness says it cosigned (POSIX seconds)."""
    return struct.unpack(">Q", signature.signature[:8])[0]


@dataclass(frozen=True)
class CosignatureVerifier:
    """A ``note.Verifier`` for one witness key: its lines are those with its name and key id."""

    key: VerifierKey

    def __post_init__(self) -> None:
        if self.key.key_type != COSIGNATURE_V1:
            raise BadNote(f"{self.key.name}: a witness key is of signature type 0x04")

    def accepts(self, signature: Signature) -> bool:
        return signature.name == self.key.name and signature.key_id == self.key.key_id

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_BYTES:
            return False
        time = struct.unpack(">Q", signature[:8])[0]
        if time > MAX_TIMESTAMP:
            return False
        try:
            self.key.ed25519().verify(signature[8:], message(text.decode(), time))
        except InvalidSignature:
            return False
        return True
