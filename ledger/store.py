"""What both event-store backends share: streams, stored payloads and the write session.

Each election, station and appeal is one stream (an aggregate in eventsourcing's terms):
its first version defines it, later versions are what happened to it. Every event also
gets an entry in the ledger index, keyed by its identity, which is what makes appends
idempotent and lets a recount protocol name the protocol it supersedes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from uuid import UUID, uuid5

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic

from ledger.events import (
    AppealDecided,
    AppealFiled,
    ElectionDefined,
    ElectionEvent,
    Event,
    ProtocolIssued,
    ProtocolWithheld,
    ReporterRegistered,
    ResultAnnounced,
    StationRegistered,
)
from ledger.merkle import leaf_hash, new_nodes, node_hash
from ledger.signatures import Signed
from ledger.validation import Recorded

_NAMESPACE = UUID("6f1d3c52-8a4e-4c1b-9d0e-5b7f2a9c4e11")


StreamKey = tuple[str, ...]


def stream_key(event: Event) -> StreamKey:
    """The thing an event is about: its election, its station or its appeal."""
    if isinstance(event, ElectionDefined | ResultAnnounced):
        return ("election", event.election)
    if isinstance(event, StationRegistered | ProtocolIssued | ProtocolWithheld):
        return ("station", event.election, event.station)
    if isinstance(event, AppealFiled | AppealDecided):
        return ("appeal", event.election, event.appeal)
    if isinstance(event, ReporterRegistered):
        return reporter_stream(event.election, event.reporter)
    raise TypeError(f"no stream for {type(event).__name__}")  # pragma: no cover


def reporter_stream(election: str, reporter: str) -> StreamKey:
    """A reporter's registrations (its keys) within one election."""
    return ("reporter", election, reporter)


@lru_cache(maxsize=1 << 15)  # a chunk touches at most a few thousand streams
def stream_id(key: StreamKey) -> UUID:
    # Ids cannot contain control characters, so the unit separator keeps names unambiguous.
    return uuid5(_NAMESPACE, "\x1f".join(key))


class Entry(msgspec.Struct, frozen=True):
    """One recorded event: the fact, where it sits, and when the ledger learnt it."""

    originator_id: UUID
    originator_version: int
    event: ElectionEvent
    recorded_at: datetime
    signed: Signed | None = None


class Payload(msgspec.Struct, frozen=True, omit_defaults=True):
    recorded_at: datetime
    event: ElectionEvent
    # Only on signed events: the submitted form the signature covers. Being in the payload,
    # it is in the Merkle leaf too: stripping it (or the signature) changes the root.
    signed: Signed | None = None


_payload_encoder = msgspec.json.Encoder()
_payload_decoder = msgspec.json.Decoder(Payload)
_TOPICS = {cls: get_topic(cls) for cls in ElectionEvent.__args__}


def encode_payload(event: Event, recorded_at: datetime, signed: Signed | None = None) -> bytes:
    return _payload_encoder.encode(Payload(recorded_at=recorded_at, event=event, signed=signed))


def decode_payload(state: bytes) -> Payload:
    return _payload_decoder.decode(state)


class LedgerMapper(Mapper):
    """Stores entries as msgspec JSON instead of the library's default JSON transcoder."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        entry: Entry = domain_event
        return StoredEvent(
            originator_id=entry.originator_id,
            originator_version=entry.originator_version,
            topic=_TOPICS[type(entry.event)],
            state=encode_payload(entry.event, entry.recorded_at, entry.signed),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        payload = decode_payload(stored_event.state)
        originator_id = stored_event.originator_id
        return Entry(
            originator_id=originator_id if isinstance(originator_id, UUID) else UUID(originator_id),
            originator_version=stored_event.originator_version,
            event=payload.event,
            recorded_at=payload.recorded_at,
            signed=payload.signed,
        )


class NullTranscoder(Transcoder):
    """The mapper encodes with msgspec itself; the library's transcoder is never used."""

    def encode(self, obj: Any) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:  # pragma: no cover
        raise NotImplementedError


class NewEntry(msgspec.Struct, frozen=True):
    """An event accepted into a batch, ready to be written."""

    stored: StoredEvent
    event_id: str
    digest: str
    type: str
    election: str
    station: str | None


def entry_bytes(position: int, stored: StoredEvent) -> bytes:
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


class LedgerBusy(RuntimeError):
    """Another writer holds the ledger; the batch was not written and may be retried."""


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
    def recorded(self, event_ids: Sequence[str]) -> dict[str, Recorded]:
        """The index entries of the events with these identities."""

    @abstractmethod
    def last_recorded_at(self) -> datetime | None: ...

    @abstractmethod
    def insert_events(
        self, entries: Sequence[NewEntry], recorded_at: datetime, first_leaf: int
    ) -> list[int]:
        """Write the entries and their index rows; return their log positions."""

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

    def insert(self, entries: Sequence[NewEntry], recorded_at: datetime) -> list[int]:
        """Write the entries and extend the Merkle tree over them, in this transaction."""
        size = self.tree_size()
        positions = self.insert_events(entries, recorded_at, size)
        self.extend_tree(size, positions, entries)
        return positions

    def extend_tree(self, size: int, positions: Sequence[int], entries: Sequence[NewEntry]) -> None:
        leaves = [
            leaf_hash(entry_bytes(position, e.stored))
            for position, e in zip(positions, entries, strict=True)
        ]
        self.insert_nodes(
            [node for node in new_nodes(size, leaves, self.read_node) if node[0] not in UNSTORED_LEVELS]
        )


class MissingNode(LookupError):
    def __init__(self, level: int, index: int) -> None:
        super().__init__(f"the stored tree has no node at level {level}, index {index}")
        self.level, self.index = level, index


class Tree(ABC):
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


def utc_now() -> datetime:
    return datetime.now(UTC)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
