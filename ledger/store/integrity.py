"""Proving the log was not rewritten: verification, inclusion proofs and checkpoints.

``verify`` trusts nothing stored about hashes: it recomputes every leaf from the stored
events themselves, checks every stored tree node against its children, and only then uses
the tree to check that the log extends a published checkpoint.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ledger.store.codec import decode_payload
from ledger.store.session import IntegrityIndex
from ledger.trust import merkle
from ledger.trust.checkpoint import Checkpoint
from ledger.trust.merkle import UNSTORED_LEVELS, entry_bytes, fold
from ledger.trust.receipt import BadReceipt
from ledger.trust.signatures import SignatureAudit

PAGE = 10_000


class IntegrityFailure(Exception):
    """The log or its tree is not what was recorded; the message names the first failure."""


@dataclass(frozen=True)
class Verified:
    size: int
    root: bytes
    checkpoint: Checkpoint | None


def origin(tree: IntegrityIndex) -> str:
    """A name unique to this log: derived from its first leaf, so it never changes."""
    if tree.size() == 0:
        return "election-ledger/empty"
    return f"election-ledger/{tree.read_node(0, 0).hex()[:16]}"


def checkpoint_of(tree: IntegrityIndex) -> Checkpoint:
    size = tree.size()
    return Checkpoint(origin(tree), size, merkle.root_hash(size, tree.read_node))


def verify(recorder: Any, tree: IntegrityIndex, checkpoint: Checkpoint | None = None) -> Verified:
    """Check the whole log against its tree, and the tree against ``checkpoint``."""
    size = _verify_leaves(recorder, tree)
    _verify_interior(tree, size)
    root = merkle.root_hash(size, tree.read_node)
    for anchor in filter(None, [checkpoint, _recorded(tree), _held(tree)]):
        _verify_extends(tree, size, root, anchor)
    return Verified(size, root, checkpoint)


def _recorded(tree: IntegrityIndex) -> Checkpoint | None:
    latest = tree.latest_checkpoint()
    return Checkpoint("recorded", latest[0], latest[1]) if latest else None


def _held(tree: IntegrityIndex) -> Checkpoint | None:
    """A replica's latest accepted checkpoint: signed by its source, so it must still hold."""
    held = tree.held()
    return Checkpoint("held", held.size, held.root) if held else None


def _stored_nodes(tree: IntegrityIndex, level: int) -> Iterator[tuple[int, bytes]]:
    after = -1
    while True:
        page = tree.level(level, after, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1][0]


def _events(recorder: Any) -> Iterator[Any]:
    after = 0
    while True:
        page = recorder.select_notifications(after, PAGE, inclusive_of_start=False)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].id


def _verify_leaves(recorder: Any, tree: IntegrityIndex) -> int:
    leaves = _stored_nodes(tree, 0)
    count = 0
    signatures = SignatureAudit()
    for index, event in enumerate(_events(recorder)):
        stored = next(leaves, None)
        if stored is None:
            raise IntegrityFailure(
                f"position {event.id}: this event is not in the Merkle tree "
                "(written around the ledger, not through it)"
            )
        if stored[0] != index:
            raise IntegrityFailure(f"position {event.id}: leaf {index} is missing from the tree")
        if merkle.leaf_hash(entry_bytes(event.id, event)) != stored[1]:
            raise IntegrityFailure(
                f"position {event.id}: the stored event does not match leaf {index} of the "
                "tree (it was edited, or an event before it deleted or moved)"
            )
        _check_signatures(signatures, event)
        count += 1
    extra = next(leaves, None)
    if extra is not None:
        raise IntegrityFailure(
            f"leaf {extra[0]}: the tree has more leaves than the log has events "
            f"({count}): events after the last one were deleted"
        )
    return count


def _check_signatures(signatures: SignatureAudit, stored: Any) -> None:
    """Authorship, checked after the leaf: even a rebuilt tree cannot hide a forged signature."""
    state = stored.state.encode() if isinstance(stored.state, str) else bytes(stored.state)
    if not signatures.needs(state):
        return
    try:
        payload = decode_payload(state)
    except (ValueError, UnicodeDecodeError):  # msgspec's errors are ValueErrors
        raise IntegrityFailure(f"position {stored.id}: the stored event cannot be read") from None
    failure = signatures.check(stored.id, payload.event, payload.signed)
    if failure is not None:
        raise IntegrityFailure(failure)


def _verify_interior(tree: IntegrityIndex, size: int) -> None:
    """Each stored node must be the fold of the stored nodes one stored level below."""
    required = [0, *(lv for lv in range(1, size.bit_length()) if lv not in UNSTORED_LEVELS)]
    unexpected = set(tree.levels()) - set(required)
    if unexpected:
        raise IntegrityFailure(f"the tree has nodes at level {min(unexpected)}, which it never stores")
    for lower, level in itertools.pairwise(required):
        span = 1 << (level - lower)
        children = _stored_nodes(tree, lower)
        seen = 0
        for index, value in _stored_nodes(tree, level):
            group = list(itertools.islice(children, span))
            if (
                index != seen or len(group) != span
                or [i for i, _ in group] != list(range(index * span, (index + 1) * span))
                or fold([h for _, h in group]) != value
            ):
                first = index << level
                raise IntegrityFailure(
                    f"tree node (level {level}, index {index}) over leaves {first}-"
                    f"{first + (1 << level) - 1} does not match its children"
                )
            seen += 1
        if seen != size >> level:
            raise IntegrityFailure(
                f"the tree has {seen} nodes at level {level}, a log of {size} needs {size >> level}"
            )


def _verify_extends(tree: IntegrityIndex, size: int, root: bytes, anchor: Checkpoint) -> None:
    what = {"recorded": "the last checkpoint recorded",
            "held": "the source's checkpoint this replica accepted last"}.get(anchor.origin,
                                                                            "the checkpoint")
    if anchor.size > size:
        raise IntegrityFailure(
            f"the log has {size} events but {what} commits to {anchor.size}: "
            f"events after position {size} were removed (truncated)"
        )
    if anchor.size == 0:
        return
    if anchor.size == size:
        if anchor.root != root:
            raise IntegrityFailure(f"the root of the log differs from {what} of the same size")
        return
    proof = merkle.consistency_proof(anchor.size, size, tree.read_node)
    try:
        merkle.verify_consistency(anchor.size, size, anchor.root, root, proof)
    except merkle.ProofError as error:
        raise IntegrityFailure(
            f"the log is not an extension of {what} (size {anchor.size}): {error}"
        ) from None


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def inclusion_proof(
    recorder: Any, tree: IntegrityIndex, event_id: str, checkpoint: Checkpoint | None = None
) -> dict[str, Any]:
    """Everything needed to check offline that one event is in the log."""
    found = tree.locate(event_id)
    if found is None:
        raise LookupError(f"no event with event_id {event_id!r} in the ledger")
    position, leaf = found
    size = checkpoint.size if checkpoint else tree.size()
    if leaf >= size:
        raise LookupError(
            f"event {event_id!r} (position {position}) was recorded after the checkpoint "
            f"of size {size}"
        )
    root = merkle.root_hash(size, tree.read_node)
    if checkpoint is not None and root != checkpoint.root:
        raise IntegrityFailure(f"the log's root at size {size} differs from the checkpoint's")
    (event,) = recorder.select_notifications(position, 1)
    data = entry_bytes(position, event)
    return {
        "event_id": event_id,
        "position": position,
        "leaf_index": leaf,
        "tree_size": size,
        "root": _b64(root),
        "origin": origin(tree),
        "entry": _b64(data),
        "leaf_hash": _b64(merkle.leaf_hash(data)),
        "inclusion_path": [_b64(h) for h in merkle.inclusion_proof(leaf, size, tree.read_node)],
    }


def check_proof(proof: dict[str, Any], checkpoint: Checkpoint | None = None) -> bytes:
    """Verify a proof from ``inclusion_proof`` without the ledger; return the entry's bytes."""
    try:
        data = base64.b64decode(proof["entry"], validate=True)
        path = [base64.b64decode(h, validate=True) for h in proof["inclusion_path"]]
        index, size = int(proof["leaf_index"]), int(proof["tree_size"])
        root = base64.b64decode(proof["root"], validate=True)
    except (KeyError, TypeError, ValueError) as error:
        raise merkle.ProofError(f"not a proof made by `ledger prove`: {error}") from None
    if checkpoint is not None:
        if checkpoint.size != size:
            raise merkle.ProofError(
                f"the proof is for a tree of {size} events, the checkpoint for {checkpoint.size}"
            )
        root = checkpoint.root
    merkle.verify_inclusion(merkle.leaf_hash(data), index, size, path, root)
    return data


def check_receipt_against_log(receipt: dict[str, Any], events: list[dict[str, Any]], recorder: Any,
                      tree: Any, checkpoint: Checkpoint | None) -> None:
    """That the log (and the checkpoint's tree) holds each event as the receipt says."""
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
