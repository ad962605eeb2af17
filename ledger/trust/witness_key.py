"""A witness's key files: ``NAME.key`` (PEM, PKCS#8 Ed25519, kept secret) and ``NAME.vkey``
(its C2SP verifier key of type 0x04, ``NAME+ID+base64(0x04 ‖ key)``, published), and loading
them back as the cosigner they describe."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.errors import BadInput
from ledger.trust import cosignature, note
from ledger.trust.checkpoint import load_private_key
from ledger.trust.note import COSIGNATURE_V1, BadNote


@dataclass(frozen=True)
class Cosigner:
    """The witness's own key and the name its cosignatures carry."""

    name: str
    private_key: Ed25519PrivateKey

    def vkey(self) -> str:
        return cosignature.vkey(self.name, self.private_key.public_key())


def vkey_path(key_path: Path) -> Path:
    """Where the vkey of ``W.key`` lives: ``W.vkey`` beside it."""
    return key_path.with_suffix(".vkey") if key_path.suffix == ".key" else Path(f"{key_path}.vkey")


def generate_cosigner_key(key_path: Path, name: str) -> Cosigner:
    """A new key written to ``key_path`` (mode 0600, never over an existing file) and its vkey
    beside it."""
    if not note.valid_name(name):
        raise BadInput(f"witness name {name!r} is empty or holds a space or '+'")
    public = vkey_path(key_path)
    for path in (key_path, public):
        if path.exists():
            raise BadInput(f"{path} exists; not overwriting a key")
    cosigner = Cosigner(name, Ed25519PrivateKey.generate())
    pem = cosigner.private_key.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
    # Created 0600 from the start: never readable by others, not even for a moment.
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as secret:
        secret.write(pem)
    public.write_text(cosigner.vkey() + "\n", encoding="utf-8")
    return cosigner


def load_cosigner(key_path: Path) -> Cosigner:
    """The cosigner of ``W.key``, named by ``W.vkey`` beside it; ``BadInput`` if they disagree."""
    private = load_private_key(key_path)
    public = vkey_path(key_path)
    try:
        text = public.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"{public}: the witness's vkey, written beside its key by `ledger keygen "
                       f"NAME --cosigner`, cannot be read ({getattr(error, 'strerror', None) or error})"
                       ) from None
    try:
        key = note.parse_vkey(text, COSIGNATURE_V1)
    except BadNote as error:
        raise BadInput(f"{public}: {error}") from None
    if key.public_key != note.raw_public_key(private.public_key()):
        raise BadInput(f"{public} is not the vkey of {key_path}: their public keys differ")
    return Cosigner(key.name, private)
