"""RFC 9162 (Certificate Transparency v2) Merkle tree over SHA-256, built for an append-only log.

Hashing (RFC 9162 §2.1.1, identical to RFC 6962 §2.1):

* empty tree: ``MTH({}) = SHA-256("")``
* leaf:       ``SHA-256(0x00 || data)``
* interior:   ``SHA-256(0x01 || left || right)``
* for n > 1:  ``MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n]))`` where k is the largest power of two
  strictly less than n.

Storage model: a node is addressed by ``(level, index)`` and is the root of the *perfect* subtree
over leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes. A log
of ``size`` leaves stores exactly the perfect nodes with ``(index + 1) * 2**level <= size``.
Appending never changes a stored node, it only adds new ones (:func:`new_nodes`), so the nodes of
every earlier tree size stay readable. Every hash RFC 9162 needs (tree heads, proof elements) is
a right-to-left fold of the few stored perfect nodes that tile its leaf range, so roots and proofs
cost O(log n) node reads and never touch the leaves themselves.

Verification (:func:`verify_inclusion`, :func:`verify_consistency`) follows RFC 9162 §2.1.3.2 and
§2.1.4.2, plus the edge-case rules of the transparency-dev/merkle test vectors: ``size1 == 0`` is
always an error, ``size1 == size2`` needs an empty proof and equal roots, and leaf hashes must be
32 bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol
from uuid import UUID

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "UNSTORED_LEVELS",
    "MemoryTree",
    "NodeReader",
    "ProofError",
    "compact_range",
    "consistency_proof",
    "entry_bytes",
    "fold",
    "inclusion_proof",
    "leaf_hash",
    "new_nodes",
    "node_hash",
    "root_hash",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class NodeReader(Protocol):
    """Returns the stored perfect node ``(level, index)``; only ever asked for nodes that exist."""

    def __call__(self, level: int, index: int) -> bytes: ...


class ProofError(ValueError):
    """A proof did not verify; the message says which check failed."""


def _perfect_cover(start: int, end: int) -> Iterator[tuple[int, int]]:
    """The perfect nodes that tile ``[start, end)``, largest first.

    Only meaningful when ``start`` is a multiple of the smallest power of two >= ``end - start``,
    which holds for every range the RFC 9162 recursion produces; then each piece is aligned.
    """
    pos = start
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            yield level, pos >> level
            pos += 1 << level


def _split(n: int) -> int:
    """Largest power of two strictly less than ``n`` (n >= 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"tree size must not be negative, got {size}")


def new_nodes(size: int, leaf_hashes: Sequence[bytes], read: NodeReader) -> list[tuple[int, int, bytes]]:
    """The nodes ``(level, index, hash)`` that appending ``leaf_hashes`` to ``size`` leaves creates.

    Each node comes after both of its children and indices rise within a level, so the list can be
    inserted in order even with foreign keys between nodes. Old nodes are read lazily: only those of
    the old compact range that the new leaves actually complete a parent with.
    """
    _check_size(size)
    # The frontier is the compact range of the growing tree, largest first; a None hash marks an
    # old node that has not been needed (read) yet.
    frontier: list[tuple[int, int, bytes | None]] = [
        (level, index, None) for level, index in _perfect_cover(0, size)
    ]
    created: list[tuple[int, int, bytes]] = []
    for position, value in enumerate(leaf_hashes, start=size):
        if len(value) != HASH_SIZE:
            raise ValueError(f"leaf hash {position} is {len(value)} bytes, expected {HASH_SIZE}")
        level, index = 0, position
        created.append((level, index, value))
        while frontier and frontier[-1][0] == level:
            _, left_index, left = frontier.pop()
            if left is None:
                left = read(level, left_index)
            value = node_hash(left, value)
            level, index = level + 1, index >> 1
            created.append((level, index, value))
        frontier.append((level, index, value))
    return created


def compact_range(size: int, read: NodeReader) -> list[bytes]:
    """The perfect subtree roots that make up leaves ``[0, size)``, largest first."""
    _check_size(size)
    return [read(level, index) for level, index in _perfect_cover(0, size)]


def subtree_hash(start: int, end: int, read: NodeReader) -> bytes:
    """``MTH(D[start:end])`` for a range the RFC 9162 recursion can produce.

    Those are the non-empty ranges whose start is a multiple of the smallest power of two that is
    >= their length; their tree shape then lines up with the stored perfect nodes. Other ranges
    would need leaves, which is exactly what this module avoids, so they are refused.
    """
    width = end - start
    if start < 0 or width <= 0:
        raise ValueError(f"leaf range [{start}, {end}) is empty or negative")
    if start % (1 << (width - 1).bit_length()):
        raise ValueError(f"leaf range [{start}, {end}) is not a subtree of any RFC 9162 tree")
    nodes = [read(level, index) for level, index in _perfect_cover(start, end)]
    # A smaller remainder always hangs on the right of the larger perfect subtree before it.
    value = nodes.pop()
    while nodes:
        value = node_hash(nodes.pop(), value)
    return value


def root_hash(size: int, read: NodeReader) -> bytes:
    """The tree head ``MTH(D[0:size])``; ``EMPTY_ROOT`` for an empty tree."""
    _check_size(size)
    return subtree_hash(0, size, read) if size else EMPTY_ROOT


def inclusion_proof(index: int, size: int, read: NodeReader) -> list[bytes]:
    """RFC 9162 ``PATH(index, D[0:size])``, from the leaf's sibling up to the root's child."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            path.append(subtree_hash(mid, hi, read))
            hi = mid
        else:
            path.append(subtree_hash(lo, mid, read))
            lo = mid
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, read: NodeReader) -> list[bytes]:
    """RFC 9162 ``PROOF(old_size, D[0:new_size])``; empty when the sizes are equal."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size} leaves: need 0 < old <= new")
    path: list[bytes] = []
    lo, hi = 0, new_size
    # RFC 9162 SUBPROOF's flag b: while the old tree is a left-aligned prefix of [lo, hi) its root
    # is the verifier's own old root, so it is not sent; once we step right it must be.
    old_root_known = True
    while old_size != hi:
        mid = lo + _split(hi - lo)
        if old_size <= mid:
            path.append(subtree_hash(mid, hi, read))
            hi = mid
        else:
            path.append(subtree_hash(lo, mid, read))
            lo = mid
            old_root_known = False
    if not old_root_known:
        path.append(subtree_hash(lo, hi, read))
    path.reverse()
    return path


def _check_proof_elements(proof: Sequence[bytes]) -> None:
    # RFC 9162 would reject these too, only later and as a vague root mismatch.
    for i, element in enumerate(proof):
        if len(element) != HASH_SIZE:
            raise ProofError(f"proof element {i} is {len(element)} bytes, expected {HASH_SIZE}")


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that leaf hash ``leaf`` is at ``index`` in the ``size``-leaf tree with ``root``."""
    if index < 0 or size < 0:
        raise ProofError(f"leaf index {index} and tree size {size} must not be negative")
    if index >= size:
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    if len(leaf) != HASH_SIZE:
        # Otherwise an empty leaf, empty root and empty proof would "verify" for size 1.
        raise ProofError(f"leaf hash is {len(leaf)} bytes, expected {HASH_SIZE}")
    _check_proof_elements(proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError(f"proof is too long for leaf {index} of a tree of {size} leaves")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            # An even fn here is the last node of its level: skip the levels where it is alone.
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"proof is too short for leaf {index} of a tree of {size} leaves")
    if r != root:
        raise ProofError(f"leaf {index} and the proof do not lead to the given root of {size} leaves")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the ``new_size``-leaf tree with ``new_root`` extends the one with ``old_root``."""
    if old_size <= 0:
        raise ProofError(f"old tree size must be at least 1, got {old_size}")
    if old_size > new_size:
        raise ProofError(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError(f"proof must be empty when both trees have {old_size} leaves")
        if old_root != new_root:
            raise ProofError(f"roots differ although both trees have {old_size} leaves")
        return
    if not proof:
        raise ProofError(f"proof from {old_size} to {new_size} leaves is empty")
    _check_proof_elements(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is then a single stored node of the new one, so the proof leaves it out.
        proof = [old_root, *proof]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError(f"proof from {old_size} to {new_size} leaves is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError(f"proof from {old_size} to {new_size} leaves is too short")
    if fr != old_root:
        raise ProofError(f"proof does not lead to the given root of the old tree ({old_size} leaves)")
    if sr != new_root:
        raise ProofError(f"proof does not lead to the given root of the new tree ({new_size} leaves)")


class MemoryTree:
    """A list-backed tree for tests and offline tools, using the same storage model as the log.

    ``read`` is a :class:`NodeReader`; ``root``, ``inclusion_proof`` and ``consistency_proof`` take
    an optional earlier tree size and default to the current one.
    """

    def __init__(self, entries: Iterable[bytes] = (), *, hashed: bool = False) -> None:
        self._levels: list[list[bytes]] = []
        self.append(entries, hashed=hashed)

    @property
    def size(self) -> int:
        return len(self._levels[0]) if self._levels else 0

    def append(
        self, entries: bytes | Iterable[bytes], *, hashed: bool = False
    ) -> list[tuple[int, int, bytes]]:
        """Append entries (raw data, or leaf hashes when ``hashed``); returns the new nodes.

        A single bytes object is one entry, not a sequence of them.
        """
        if isinstance(entries, bytes | bytearray | memoryview):
            entries = [bytes(entries)]
        hashes = [bytes(e) for e in entries] if hashed else [leaf_hash(bytes(e)) for e in entries]
        created = new_nodes(self.size, hashes, self.read)
        for level, index, value in created:
            if level == len(self._levels):
                self._levels.append([])
            assert index == len(self._levels[level]), "new_nodes skipped or repeated a node"
            self._levels[level].append(value)
        return created

    def read(self, level: int, index: int) -> bytes:
        """A stored node; KeyError for any other, so that a stray read cannot go unnoticed."""
        try:
            if level >= 0 and index >= 0:  # a negative list index would quietly count from the end
                return self._levels[level][index]
        except IndexError:
            pass
        raise KeyError(f"node (level {level}, index {index}) is not stored")

    def nodes(self) -> Iterator[tuple[int, int, bytes]]:
        """Every stored node, level by level."""
        for level, hashes in enumerate(self._levels):
            for index, value in enumerate(hashes):
                yield level, index, value

    def leaf_hash(self, index: int) -> bytes:
        return self.read(0, index)

    def root(self, size: int | None = None) -> bytes:
        return root_hash(self._size(size), self.read)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self._size(size), self.read)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return consistency_proof(old_size, self._size(new_size), self.read)

    def _size(self, size: int | None) -> int:
        """Any earlier size is fine: its nodes are still stored unchanged."""
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is outside 0..{self.size}")
        return size


# -- what the ledger's leaves commit to, and how unstored levels are recomputed -------------


def entry_bytes(position: int, stored: Any) -> bytes:
    """The canonical bytes of a recorded event: what its Merkle leaf commits to.

    Position, stream, version, type and the stored payload (which holds ``recorded_at``):
    everything that defines the entry, so that editing, moving or re-dating it changes the leaf.
    """
    originator = stored.originator_id
    stream = originator.hex if isinstance(originator, UUID) else UUID(str(originator)).hex
    header = f"election-ledger entry v1\n{position}\n{stream}\n{stored.originator_version}\n"
    state = stored.state
    # Bytes as stored; a tampered row may hold text instead, which must still hash, not crash.
    payload = state.encode() if isinstance(state, str) else bytes(state)
    return header.encode() + stored.topic.encode() + b"\n" + payload


# Levels 1-3 of the tree are not stored but recomputed from at most 8 leaves when a proof
# needs them: that halves the rows each append writes, for a few more hashes per proof.
UNSTORED_LEVELS = frozenset({1, 2, 3})


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root of a perfect subtree from its 2**k consecutive nodes of one level."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(left, right) for left, right in zip(level[::2], level[1::2], strict=True)]
    return level[0]
