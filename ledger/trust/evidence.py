"""Split-view evidence: proof, checkable offline, that a log's key signed two histories.

A log is append-only: the entry at each leaf never changes, and the tree of a smaller size is
a prefix of every larger one. Two checkpoints signed by the log's key that cannot both be
true of one such log prove that its operator equivocated (showed different parties
different histories). ``ledger mirror`` writes this JSON when it meets one::

    {"format": "election-ledger/split-view/v1",
     "origin": "<the log's origin>",
     "checkpoints": {"replica": "<signed note>", "source": "<signed note>"},
     "leaf_index": i,                                  # with "entries"
     "entries": {"replica": {"position", "entry", "inclusion_path"},
                 "source":  {"position", "entry", "inclusion_path"}},
     "consistency": {"size", "root", "proof"}}         # optional

``checkpoints`` are the note the replica had accepted and the one the source then served,
each whole (with its signatures). ``entries`` are the two versions of the first leaf where
the histories differ (``entry``: base64 of the bytes the leaf hashes, ``merkle.entry_bytes``),
each with its RFC 9162 inclusion path in its own checkpoint. ``consistency`` proves that the
larger checkpoint's tree had, at the smaller one's size, a root other than the smaller one
signs. Any one of these proves the split view: two roots for one size; two entries at one
leaf, each included under a signed root; or a signed tree whose prefix is not the other
signed tree. Every part present must verify, and every byte of the file is covered by a
hash or a signature, or is checked against one: an altered file is rejected.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.trust import merkle
from ledger.trust.checkpoint import BadCheckpoint, Checkpoint, parse, verify_signature

FORMAT = "election-ledger/split-view/v1"
SIDES = ("replica", "source")
_MEMBERS = {"format", "origin", "checkpoints", "leaf_index", "entries", "consistency"}


class NotProven(ValueError):
    """The evidence does not prove a split view; the message says what fails."""


@dataclass(frozen=True)
class Entry:
    """One version of the differing leaf, with its inclusion path in its checkpoint."""

    position: int
    entry: bytes
    inclusion_path: list[bytes]


@dataclass(frozen=True)
class Consistency:
    size: int
    root: bytes
    proof: list[bytes]


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def build(origin: str, replica_note: str, source_note: str, *,
          leaf_index: int | None = None, entries: dict[str, Entry] | None = None,
          consistency: Consistency | None = None) -> dict[str, Any]:
    """The evidence as JSON-ready values."""
    evidence: dict[str, Any] = {"format": FORMAT, "origin": origin,
                                "checkpoints": {"replica": replica_note, "source": source_note}}
    if entries is not None:
        evidence["leaf_index"] = leaf_index
        evidence["entries"] = {
            side: {"position": e.position, "entry": _b64(e.entry),
                   "inclusion_path": [_b64(h) for h in e.inclusion_path]}
            for side, e in entries.items()
        }
    if consistency is not None:
        evidence["consistency"] = {"size": consistency.size, "root": _b64(consistency.root),
                                   "proof": [_b64(h) for h in consistency.proof]}
    return evidence


def check(evidence: Any, log_key: Ed25519PublicKey) -> str:
    """What the evidence proves, in one line; ``NotProven`` unless it proves a split view."""
    if not isinstance(evidence, dict) or evidence.get("format") != FORMAT:
        raise NotProven(f"not {FORMAT} evidence")
    if unknown := set(evidence) - _MEMBERS:
        raise NotProven(f"unknown member(s) {', '.join(sorted(unknown))}")
    origin = evidence.get("origin")
    notes = evidence.get("checkpoints")
    if not isinstance(notes, dict) or set(notes) != set(SIDES):
        raise NotProven("checkpoints: expected the replica's and the source's")
    signed = {side: _signed(notes[side], side, log_key, origin) for side in SIDES}
    replica, source = signed["replica"], signed["source"]
    if (replica.size, replica.root) == (source.size, source.root):
        raise NotProven("the two checkpoints agree (same size, same root)")
    findings = []
    if replica.size == source.size:
        findings.append(f"two roots signed for the same size {replica.size}")
    if "entries" in evidence or "leaf_index" in evidence:
        findings.append(_check_entries(evidence, signed))
    if "consistency" in evidence:
        findings.append(_check_consistency(evidence["consistency"], replica, source))
    if not findings:
        raise NotProven("nothing shows the two checkpoints disagree: the sizes differ and "
                        "neither entries nor a consistency proof are given")
    return (f"split view proven: the key of {origin} signed checkpoints of {replica.size} and "
            f"{source.size} entries that are not one history: " + "; ".join(findings))


def _signed(note: Any, side: str, log_key: Ed25519PublicKey, origin: Any) -> Checkpoint:
    if not isinstance(note, str):
        raise NotProven(f"checkpoints.{side}: not a signed note")
    try:
        checkpoint = parse(note)
        verify_signature(checkpoint, log_key)
    except BadCheckpoint as error:
        raise NotProven(f"checkpoints.{side}: {error}") from None
    if checkpoint.text() != note:
        raise NotProven(f"checkpoints.{side}: not a note in its canonical form")
    if checkpoint.origin != origin:
        raise NotProven(f"checkpoints.{side}: of log {checkpoint.origin!r}, not {origin!r}")
    return checkpoint


def _check_entries(evidence: dict[str, Any], signed: dict[str, Checkpoint]) -> str:
    index = evidence.get("leaf_index")
    entries = evidence.get("entries")
    if type(index) is not int or index < 0:
        raise NotProven("leaf_index: expected a whole number")
    if not isinstance(entries, dict) or set(entries) != set(SIDES):
        raise NotProven("entries: expected the replica's and the source's")
    found = {side: _included(entries[side], side, index, signed[side]) for side in SIDES}
    if found["replica"].entry == found["source"].entry:
        raise NotProven(f"entries: both checkpoints hold the same entry at leaf {index}")
    return (f"leaf {index} is {_describe(found['replica'])} under the replica's checkpoint and "
            f"{_describe(found['source'])} under the source's")


def _included(value: Any, side: str, index: int, checkpoint: Checkpoint) -> Entry:
    where = f"entries.{side}"
    if not isinstance(value, dict) or set(value) != {"position", "entry", "inclusion_path"}:
        raise NotProven(f"{where}: expected position, entry and inclusion_path")
    try:
        entry = base64.b64decode(value["entry"], validate=True)
        path = [base64.b64decode(h, validate=True) for h in value["inclusion_path"]]
    except (TypeError, binascii.Error):
        raise NotProven(f"{where}: entry and inclusion_path must be base64") from None
    position = value["position"]
    if type(position) is not int or _position_in(entry) != position:
        raise NotProven(f"{where}: position is not the one the entry's bytes hold")
    try:
        merkle.verify_inclusion(merkle.leaf_hash(entry), index, checkpoint.size, path,
                                checkpoint.root)
    except merkle.ProofError as error:
        raise NotProven(f"{where}: not in the {side}'s checkpoint: {error}") from None
    return Entry(position, entry, path)


def _check_consistency(value: Any, replica: Checkpoint, source: Checkpoint) -> str:
    if not isinstance(value, dict) or set(value) != {"size", "root", "proof"}:
        raise NotProven("consistency: expected size, root and proof")
    smaller, larger = sorted((replica, source), key=lambda c: c.size)
    if smaller.size == larger.size or value["size"] != smaller.size:
        raise NotProven("consistency: its size must be the smaller checkpoint's")
    try:
        root = base64.b64decode(value["root"], validate=True)
        proof = [base64.b64decode(h, validate=True) for h in value["proof"]]
    except (TypeError, binascii.Error):
        raise NotProven("consistency: root and proof must be base64") from None
    if root == smaller.root:
        raise NotProven("consistency: the root given is the smaller checkpoint's own")
    try:
        merkle.verify_consistency(smaller.size, larger.size, root, larger.root, proof)
    except merkle.ProofError as error:
        raise NotProven(f"consistency: {error}") from None
    return (f"the tree signed at size {larger.size} had another root at size {smaller.size} "
            "than the checkpoint signed for it")


def _position_in(entry: bytes) -> int | None:
    """The position an entry's bytes hold (their second line), if they hold one."""
    lines = entry.split(b"\n", 2)
    if len(lines) < 3 or lines[0] != b"election-ledger entry v1" or not lines[1].isdigit():
        return None
    return int(lines[1])


def _describe(entry: Entry) -> str:
    """The event an entry holds, for the one line a person reads."""
    payload = entry.entry.split(b"\n", 5)[-1]
    try:
        event = json.loads(payload)["event"]
        return f"{event['type']} {event.get('event_id')!r} (position {entry.position})"
    except (ValueError, KeyError, TypeError):
        return f"an entry at position {entry.position}"
