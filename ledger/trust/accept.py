"""Whether a served checkpoint counts: the one decision a mirror makes before it reads a log."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.trust.checkpoint import BadCheckpoint, Checkpoint, parse, verify_signature
from ledger.trust.cosigned import check_cosigned
from ledger.trust.policy import Policy


def accept_checkpoint(note_text: str, log_key: Ed25519PublicKey, policy: Policy | None = None
                      ) -> Checkpoint:
    """The checkpoint ``note_text`` holds, if ``verify`` would accept it: signed by the log's
    key and, with a witness policy, cosigned by enough of its witnesses to meet its quorum
    (each counted once). ``BadCheckpoint`` saying why not, otherwise."""
    checkpoint = parse(note_text)
    verify_signature(checkpoint, log_key)
    if policy is not None:
        cosigned = check_cosigned(note_text, log_key, policy)
        if not cosigned.ok:
            raise BadCheckpoint(f"the witnesses' quorum is not met: {cosigned.summary()}")
    return checkpoint
