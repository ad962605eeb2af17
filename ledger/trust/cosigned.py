"""Whether a signed checkpoint counts under a policy: the log's signature, and valid
cosignatures of enough trusted witnesses to satisfy the quorum (each witness counted once).

Used wherever a checkpoint is accepted: ``verify --checkpoint --witnesses``, ``check-proof``,
``check-receipt``, the ledger's witness client and mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.trust import note
from ledger.trust.checkpoint import BadCheckpoint, Checkpoint, parse
from ledger.trust.cosignature import CosignatureVerifier
from ledger.trust.note import BadNote, Verdict
from ledger.trust.policy import Policy, Witness, describe_quorum, quorum_satisfied


@dataclass(frozen=True)
class Cosigned:
    checkpoint: Checkpoint
    log_signature: Verdict          # VERIFIED, UNSIGNED, or FAILED (a line by the log's key is bad)
    verified: tuple[str, ...]       # the policy's names of witnesses whose cosignature verified
    failed: tuple[str, ...]         # trusted witnesses with a cosignature line that does not verify
    witnesses: int                  # how many witnesses the policy trusts
    quorum: str                     # the quorum in words
    quorum_met: bool

    @property
    def ok(self) -> bool:
        """The checkpoint counts: signed by the log, and the quorum is met."""
        return self.log_signature is Verdict.VERIFIED and self.quorum_met

    def summary(self) -> str:
        """One line, e.g. ``2 of 3 trusted witnesses cosigned (golos, party-b); quorum 'both':
        2 of (golos, party-b) met``."""
        names = f" ({', '.join(self.verified)})" if self.verified else ""
        line = (f"{len(self.verified)} of {self.witnesses} trusted witnesses cosigned{names}; "
                f"{self.quorum} {'met' if self.quorum_met else 'NOT met'}")
        if self.failed:
            line += f"; cosignatures that do not verify: {', '.join(self.failed)}"
        if self.log_signature is not Verdict.VERIFIED:
            line = f"log signature: {self.log_signature.value}; " + line
        return line


def check_cosigned(signed_checkpoint: str, log_key: Ed25519PublicKey, policy: Policy) -> Cosigned:
    """Count the cosignatures on ``signed_checkpoint`` (a whole note) that verify against the
    policy's witness keys, and check the log's signature; ``BadCheckpoint`` if it does not parse."""
    checkpoint = parse(signed_checkpoint)
    signed = note.Note(checkpoint.body, checkpoint.signatures)
    log_signature = note.verdict(signed, note.Ed25519Verifier(log_key))
    verified, failed = [], []
    for name, witness in policy.witnesses.items():
        found = note.verdict(signed, CosignatureVerifier(witness.key))
        if found is Verdict.VERIFIED:
            verified.append(name)
        elif found is Verdict.FAILED:
            failed.append(name)
    return Cosigned(checkpoint, log_signature, tuple(verified), tuple(failed),
                    len(policy.witnesses), describe_quorum(policy), quorum_satisfied(policy, verified))


def add_cosignatures(signed_checkpoint: str, response: str, witness: Witness) -> str:
    """The checkpoint with the witness's valid cosignature lines from an ``add-checkpoint``
    ``200`` response added (lines of other keys and invalid ones are dropped; a line the
    note already holds is not repeated). ``BadCheckpoint`` if the response is not signature lines."""
    checkpoint = parse(signed_checkpoint)
    try:
        lines = note.parse_signature_lines(response)
    except BadNote as error:
        raise BadCheckpoint(f"witness {witness.name!r} answered: {error}") from None
    verifier = CosignatureVerifier(witness.key)
    text = checkpoint.body.encode()
    new = [s for s in lines if verifier.accepts(s) and verifier.verify(text, s.signature)
           and s not in checkpoint.signatures]
    return note.Note(checkpoint.body, (*checkpoint.signatures, *dict.fromkeys(new))).signed()
