"""Receipts: the ledger's signed word that it recorded these events at these positions.

A server started with ``--key`` answers each accepted write with a receipt. The signed
message is UTF-8 text, every line ending in a newline (0x0A):

    election-ledger/receipt/v1
    <origin of the log, as in its checkpoints>
    <position> <hex SHA-256 Merkle leaf hash of the entry at that position>   (one per event)

The leaf hash commits to everything of the entry (position, stream, version, type, the
stored event with its event_id, recorded_at), so a receipt pins exactly what was stored.
The receipt itself is JSON: ``format``, ``origin``, ``events`` (``position``, ``event_id``,
``leaf_hash`` in hex), ``key`` (base64 of the raw 32-byte public key) and ``ed25519`` (base64
signature). ``ledger check-receipt`` checks the signature against the ledger's published
public key, then that the log holds each event at its position with that leaf hash and, with
a checkpoint, that the checkpoint's tree includes it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.application import Written
from ledger.checkpoint import Checkpoint

FORMAT = "election-ledger/receipt/v1"


class BadReceipt(ValueError):
    """The receipt does not verify, or the log does not hold what it says."""


def message(origin: str, events: Sequence[tuple[int, str]]) -> bytes:
    """The signed bytes: format line, origin line, one ``position leaf-hash`` line per event."""
    body = "".join(f"{position} {leaf}\n" for position, leaf in events)
    return f"{FORMAT}\n{origin}\n{body}".encode()


def issue(origin: str, written: Sequence[Written], key: Ed25519PrivateKey) -> dict[str, Any]:
    events = [{"position": w.position, "event_id": w.event_id, "leaf_hash": w.leaf_hash.hex()}
              for w in written]
    signature = key.sign(message(origin, [(e["position"], e["leaf_hash"]) for e in events]))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"format": FORMAT, "origin": origin, "events": events,
            "key": base64.b64encode(raw).decode(), "ed25519": base64.b64encode(signature).decode()}


def check_signature(receipt: dict[str, Any], public_key: Ed25519PublicKey) -> list[dict[str, Any]]:
    """The receipt's events, once its signature verifies under ``public_key``."""
    try:
        if receipt["format"] != FORMAT:
            raise BadReceipt(f"not a {FORMAT} receipt")
        events = [{"position": int(e["position"]), "event_id": str(e["event_id"]),
                   "leaf_hash": str(e["leaf_hash"])} for e in receipt["events"]]
        signature = base64.b64decode(receipt["ed25519"], validate=True)
        signed = message(str(receipt["origin"]), [(e["position"], e["leaf_hash"]) for e in events])
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        if isinstance(error, BadReceipt):
            raise
        raise BadReceipt(f"not a receipt made by `ledger serve`: {error}") from None
    try:
        public_key.verify(signature, signed)
    except InvalidSignature:
        raise BadReceipt("the signature does not verify under this public key: forged or "
                         "altered") from None
    return events


def check_against_log(receipt: dict[str, Any], events: list[dict[str, Any]], recorder: Any,
                      tree: Any, checkpoint: Checkpoint | None) -> None:
    """That the log (and the checkpoint's tree) holds each event as the receipt says."""
    from ledger import merkle
    from ledger.integrity import IntegrityFailure, check_proof, inclusion_proof, origin
    from ledger.merkle import entry_bytes

    if receipt["origin"] != origin(tree):
        raise BadReceipt(f"the receipt is of log {receipt['origin']!r}, this ledger is "
                         f"{origin(tree)!r}")
    if checkpoint is not None and checkpoint.origin != receipt["origin"]:
        raise BadReceipt(f"the checkpoint is of log {checkpoint.origin!r}, the receipt of "
                         f"{receipt['origin']!r}")
    for event in events:
        where = f"event {event['event_id']!r} (position {event['position']})"
        found = tree.locate(event["event_id"])
        if found is None or found[0] != event["position"]:
            raise BadReceipt(f"{where}: the log does not hold it at that position")
        (stored,) = recorder.select_notifications(event["position"], 1)
        if merkle.leaf_hash(entry_bytes(event["position"], stored)).hex() != event["leaf_hash"]:
            raise BadReceipt(f"{where}: the stored entry differs from the one receipted")
        if checkpoint is not None:
            try:
                proof = inclusion_proof(recorder, tree, event["event_id"], checkpoint)
                data = check_proof(proof, checkpoint)
            except (LookupError, merkle.ProofError, IntegrityFailure) as error:
                raise BadReceipt(f"{where}: not in the checkpoint's tree: {error}") from None
            if merkle.leaf_hash(data).hex() != event["leaf_hash"]:
                raise BadReceipt(f"{where}: the checkpoint's tree holds a different entry")
