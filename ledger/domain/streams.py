"""Streams: the thing each event is about, as eventsourcing's aggregates.

Each election, station, appeal and reporter is one stream: its first version defines it,
later versions are what happened to it. That is how validation asks "is this station
registered?" with one indexed read.
"""

from __future__ import annotations

from functools import lru_cache
from uuid import UUID, uuid5

from ledger.domain.events import (
    AppealDecided,
    AppealFiled,
    ElectionDefined,
    Event,
    ProtocolIssued,
    ProtocolWithheld,
    ReporterKeyRevoked,
    ReporterRegistered,
    ResultAnnounced,
    StationRegistered,
)

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
    if isinstance(event, ReporterRegistered | ReporterKeyRevoked):
        return reporter_stream(event.election, event.reporter)
    raise TypeError(f"no stream for {type(event).__name__}")  # pragma: no cover


def reporter_stream(election: str, reporter: str) -> StreamKey:
    """A reporter's key events (registrations and revocations) within one election."""
    return ("reporter", election, reporter)


@lru_cache(maxsize=1 << 15)  # a chunk touches at most a few thousand streams
def stream_id(key: StreamKey) -> UUID:
    # Ids cannot contain control characters, so the unit separator keeps names unambiguous.
    return uuid5(_NAMESPACE, "\x1f".join(key))
