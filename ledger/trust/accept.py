"""Whether a served checkpoint counts: the one decision a mirror makes before it reads a log."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.trust.checkpoint import BadCheckpoint, Checkpoint, parse, verify_signature


def accept_checkpoint(note_text: str, log_key: Ed25519PublicKey, policy: Any = None) -> Checkpoint:
    """The checkpoint ``note_text`` holds, if ``verify`` would accept it: signed by the log's
    key and, with a witness policy, cosigned to its quorum. ``BadCheckpoint`` otherwise."""
    checkpoint = parse(note_text)
    verify_signature(checkpoint, log_key)
    if policy is not None:
        raise BadCheckpoint("--witnesses: checking cosignatures against a policy is not in this "
                            "build yet")
    return checkpoint
