"""The stored form of an event: msgspec JSON, in place of eventsourcing's JSON transcoder."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder

from ledger.domain.events import ElectionEvent, Event
from ledger.trust.signatures import Signed


class Entry(msgspec.Struct, frozen=True):
    """One recorded event: the fact, where it sits, and when the ledger learnt it."""

    originator_id: UUID
    originator_version: int
    event: ElectionEvent
    recorded_at: datetime
    signed: Signed | None = None
    offset: int | None = None


class Payload(msgspec.Struct, frozen=True, omit_defaults=True):
    recorded_at: datetime
    event: ElectionEvent
    # Only on signed events: the submitted form the signature covers. Being in the payload,
    # it is in the Merkle leaf too: stripping it (or the signature) changes the root.
    signed: Signed | None = None
    # The UTC offset, in seconds, that ``occurred_at`` was written with (the event itself is
    # kept in UTC so that equal instants hash and sort alike); absent when it was UTC.
    offset: int | None = None


_payload_encoder = msgspec.json.Encoder()
_payload_decoder = msgspec.json.Decoder(Payload)
# The topic stored with each event is a name in the log's format, not where its class lives
# today: the Merkle leaf hashes it (``merkle.entry_bytes``), so it is frozen as the first
# ledgers wrote it, when the schemas lived in the module ``ledger.events``.
_TOPICS = {cls: f"ledger.events:{cls.__struct_config__.tag}" for cls in ElectionEvent.__args__}


def encode_payload(event: Event, recorded_at: datetime, signed: Signed | None = None,
                   offset: int | None = None) -> bytes:
    return _payload_encoder.encode(
        Payload(recorded_at=recorded_at, event=event, signed=signed, offset=offset or None)
    )


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
            state=encode_payload(entry.event, entry.recorded_at, entry.signed, entry.offset),
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
            offset=payload.offset,
        )


class NullTranscoder(Transcoder):
    """The mapper encodes with msgspec itself; the library's transcoder is never used."""

    def encode(self, obj: Any) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:  # pragma: no cover
        raise NotImplementedError
