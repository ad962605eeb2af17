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
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

if TYPE_CHECKING:
    from ledger.store.application import Written

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
