"""What both event-store backends implement: the write session and the integrity index.

A batch is checked and written inside one ``WriteSession`` (one exclusive transaction);
the Merkle tree, the identity index and the checkpoints are read outside a write through an
``IntegrityIndex``. The stored form of an event is in ``ledger.store.codec``, its stream in
``ledger.domain.streams``, the tree's hashing in ``ledger.trust.merkle``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import StoredEvent

from ledger.domain.validation import Recorded
from ledger.errors import BadInput
from ledger.trust.merkle import UNSTORED_LEVELS, entry_bytes, fold, leaf_hash, new_nodes


class Accepted(msgspec.Struct, frozen=True):
    """An event accepted into a batch, ready to be written."""

    stored: StoredEvent
    event_id: str
    digest: str
    type: str
    election: str
    station: str | None


class LedgerBusy(RuntimeError):
    """Another writer holds the ledger; the batch was not written and may be retried."""


class ReadOnlyReplica(BadInput):
    """The ledger is a replica of another: it is written only by ``ledger mirror``."""

    def __init__(self, held: Held) -> None:
        super().__init__(
            f"this ledger is a read-only replica of {held.origin} (mirrored from {held.source}): "
            "append to the source; `ledger mirror` alone writes here")
        self.held = held


@dataclass(frozen=True)
class Held:
    """A checkpoint a replica accepted from its source: what it holds, and from where."""

    size: int
    root: bytes
    origin: str
    note: str  # the whole signed note, as the source served it (with every cosignature)
    source: str  # the URL it was mirrored from
    accepted_at: str


class WriteSession(ABC):
    """Reads and writes inside one exclusive write transaction.

    Everything read here is consistent with what will be written: no other writer can
    append between the checks and the insert.
    """

    @abstractmethod
    def first_versions(self, streams: Sequence[UUID]) -> dict[UUID, bytes]:
        """The defining (version 1) payload of each stream that exists."""

    @abstractmethod
    def heads(self, streams: Sequence[UUID]) -> dict[UUID, int]:
        """The current version of each stream that exists."""

    @abstractmethod
    def stream_payloads(self, streams: Sequence[UUID]) -> dict[UUID, list[bytes]]:
        """Every payload of each stream that exists, in version order."""

    @abstractmethod
    def payloads_of_types(self, election: str, types: Sequence[str]) -> list[bytes]:
        """Every payload of these event types in one election, in log order (read through
        the identity index; meant for rare events such as key registrations)."""

    @abstractmethod
    def recorded(self, event_ids: Sequence[str]) -> dict[str, Recorded]:
        """The index entries of the events with these identities."""

    @abstractmethod
    def located(self, event_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """The (position, leaf index) of each of these events the log holds."""

    @abstractmethod
    def last_recorded_at(self) -> datetime | None: ...

    @abstractmethod
    def insert_events(
        self, entries: Sequence[Accepted], recorded_at: datetime, first_leaf: int,
        positions: Sequence[int] | None = None,
    ) -> list[int]:
        """Write the entries and their index rows; return their log positions: the next ones,
        or ``positions`` (a replica holds its source's, gaps included)."""

    @abstractmethod
    def held(self) -> Held | None:
        """The latest checkpoint this ledger accepted as a replica; ``None`` if it is none."""

    @abstractmethod
    def record_held(self, held: Held) -> None: ...

    @abstractmethod
    def tree_size(self) -> int:
        """How many leaves the stored Merkle tree has."""

    @abstractmethod
    def read_stored_node(self, level: int, index: int) -> bytes: ...

    @abstractmethod
    def read_leaves(self, start: int, end: int) -> list[bytes]:
        """The stored leaf hashes ``start`` to ``end - 1``."""

    @abstractmethod
    def insert_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None: ...

    def read_node(self, level: int, index: int) -> bytes:
        if level in UNSTORED_LEVELS:
            return fold(self.read_leaves(index << level, (index + 1) << level))
        return self.read_stored_node(level, index)

    def insert(self, entries: Sequence[Accepted], recorded_at: datetime,
               positions: Sequence[int] | None = None) -> list[int]:
        """Write the entries and extend the Merkle tree over them, in this transaction."""
        size = self.tree_size()
        positions = self.insert_events(entries, recorded_at, size, positions)
        self.extend_tree(size, positions, entries)
        return positions

    def refuse_if_replica(self) -> None:
        """Only the mirror writes a replica: what it holds must stay its source's."""
        if (held := self.held()) is not None:
            raise ReadOnlyReplica(held)

    def extend_tree(self, size: int, positions: Sequence[int], entries: Sequence[Accepted]
                    ) -> list[bytes]:
        """Add the entries' leaves (and the nodes they complete) to the tree; return the leaves."""
        leaves = [
            leaf_hash(entry_bytes(position, e.stored))
            for position, e in zip(positions, entries, strict=True)
        ]
        self.insert_nodes(
            [node for node in new_nodes(size, leaves, self.read_node) if node[0] not in UNSTORED_LEVELS]
        )
        return leaves


class MissingNode(LookupError):
    def __init__(self, level: int, index: int) -> None:
        super().__init__(f"the stored tree has no node at level {level}, index {index}")
        self.level, self.index = level, index


class IntegrityIndex(ABC):
    """The stored Merkle tree, the index and the checkpoints, read outside a write."""

    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def read_stored_node(self, level: int, index: int) -> bytes:
        """The stored node; ``MissingNode`` if there is none."""

    def read_node(self, level: int, index: int) -> bytes:
        if level in UNSTORED_LEVELS:
            start, count = index << level, 1 << level
            rows = self.level(0, start - 1, count)
            if len(rows) != count or rows[0][0] != start:
                raise MissingNode(level, index)
            return fold([value for _, value in rows])
        return self.read_stored_node(level, index)

    @abstractmethod
    def level(self, level: int, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` stored nodes of ``level`` with index > ``after``, in index order."""

    @abstractmethod
    def levels(self) -> list[int]: ...

    @abstractmethod
    def locate(self, event_id: str) -> tuple[int, int] | None:
        """The (position, leaf index) of the event with this identity."""

    @abstractmethod
    def record_checkpoint(self, size: int, root: bytes, issued_at: str, note: str) -> None: ...

    @abstractmethod
    def latest_checkpoint(self) -> tuple[int, bytes] | None: ...

    @abstractmethod
    def held(self) -> Held | None:
        """The latest checkpoint this ledger accepted as a replica; ``None`` if it is none."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
