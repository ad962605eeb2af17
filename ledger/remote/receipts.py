"""Checking a receipt against a served ledger, without a copy of its database.

The receipt's signature is checked first (``trust.receipt``). Then, for each event, the
server's inclusion proof (``GET /v1/proof``) must hold exactly the receipted entry at the
receipted position, and lead to a root that a checkpoint signed by the ledger's key is
consistent with (``GET /v1/consistency``): the checkpoint given, or else the one the server
publishes. Nothing the server says is taken on its word.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.remote.client import BadAnswer, NotServed, Remote
from ledger.store.integrity import check_proof
from ledger.trust import merkle
from ledger.trust.accept import accept_checkpoint
from ledger.trust.checkpoint import BadCheckpoint, Checkpoint
from ledger.trust.policy import Policy
from ledger.trust.receipt import BadReceipt


def check_receipt_served(remote: Remote, receipt: dict[str, Any], events: list[dict[str, Any]],
                         public_key: Ed25519PublicKey, anchor: Checkpoint | None,
                         policy: Policy | None = None) -> Checkpoint:
    """That the served log, under ``anchor`` (else the served checkpoint, signed by
    ``public_key`` and, with a ``policy``, cosigned to its quorum), holds each receipted
    event; returns the checkpoint used."""
    if anchor is None:
        try:
            anchor = accept_checkpoint(remote.checkpoint(), public_key, policy)
        except BadCheckpoint as error:
            raise BadReceipt(f"{remote.url}/v1/checkpoint: {error}") from None
    if anchor.origin != receipt["origin"]:
        raise BadReceipt(f"the checkpoint is of log {anchor.origin!r}, the receipt of "
                         f"{receipt['origin']!r}")
    for event in events:
        _check_one(remote, event, anchor)
    return anchor


def _check_one(remote: Remote, event: dict[str, Any], anchor: Checkpoint) -> None:
    where = f"event {event['event_id']!r} (position {event['position']})"
    try:
        proof = remote.proof(event["event_id"])
    except NotServed:
        raise BadReceipt(f"{where}: the ledger at {remote.url} does not hold it") from None
    try:
        entry = check_proof(proof)
        index, size = int(proof["leaf_index"]), int(proof["tree_size"])
    except (merkle.ProofError, KeyError, TypeError, ValueError) as error:
        raise BadAnswer(f"{remote.url}/v1/proof: {error}") from None
    if entry.split(b"\n", 2)[1:2] != [str(event["position"]).encode()]:
        raise BadReceipt(f"{where}: the log holds it at another position")
    if merkle.leaf_hash(entry).hex() != event["leaf_hash"]:
        raise BadReceipt(f"{where}: the entry the log holds differs from the one receipted")
    if index >= anchor.size:
        raise BadReceipt(f"{where}: recorded after the checkpoint of {anchor.size} entries; "
                         "check again against a later one")
    # The proof leads to the root of the server's tree now; the checkpoint must be a prefix.
    root = base64.b64decode(proof["root"], validate=True)  # check_proof read it already
    consistency = [] if size == anchor.size else remote.consistency(anchor.size, size)
    if consistency is None:
        raise BadReceipt(f"{where}: {remote.url} serves no consistency proofs to tie it to the "
                         "checkpoint")
    try:
        merkle.verify_consistency(anchor.size, size, anchor.root, root, consistency)
    except merkle.ProofError as error:
        raise BadReceipt(f"{where}: the log served is not an extension of the checkpoint: "
                         f"{error}") from None
