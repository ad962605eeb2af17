"""Deciding, line by line, what a batch adds to the ledger.

A batch is checked in order against the stored ledger plus the batch's own earlier lines
(a file may define an election and then report on it). Each line ends up accepted, a
no-op (already recorded, or a restated definition), or a problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import msgspec
from eventsourcing.persistence import StoredEvent

from ledger.events import (
    AppealFiled,
    ElectionDefined,
    Event,
    ProtocolIssued,
    StationRegistered,
    content_digest,
    control_check_failures,
    normalised,
    station_of,
)
from ledger.reader import Line, Problem
from ledger.store import (
    Entry,
    LedgerMapper,
    NewEntry,
    WriteSession,
    appeal_stream,
    decode_payload,
    election_stream,
    station_stream,
    stream_of,
)
from ledger.validation import Recorded, check, is_restatement


@dataclass
class Outcome:
    accepted: list[NewEntry] = field(default_factory=list)
    accepted_lines: list[int] = field(default_factory=list)
    already_recorded: int = 0
    problems: list[Problem] = field(default_factory=list)
    rejected_lines: list[Line] = field(default_factory=list)
    flagged: list[Problem] = field(default_factory=list)


class BatchState:
    """The ledger as a batch sees it: stored facts, then the batch's own accepted lines.

    Lookups are answered from caches filled by ``prefetch``, a few set-wise queries per
    chunk of lines rather than one query per line.
    """

    def __init__(self, session: WriteSession) -> None:
        self.session = session
        self._definitions: dict[UUID, Event | None] = {}
        self._heads: dict[UUID, int] = {}
        self._recorded: dict[str, Recorded | None] = {}

    def prefetch(self, events: Sequence[Event]) -> None:
        definitions: set[UUID] = set()
        for event in events:
            definitions.add(election_stream(event.election))
            if (station := station_of(event)) is not None:
                definitions.add(station_stream(event.election, station))
            for station in getattr(event, "stations", None) or ():
                definitions.add(station_stream(event.election, station))
            if (appeal := getattr(event, "appeal", None)) is not None:
                definitions.add(appeal_stream(event.election, appeal))
        missing = [s for s in definitions if s not in self._definitions]
        found = self.session.first_versions(missing)
        for stream in missing:
            state = found.get(stream)
            self._definitions[stream] = decode_payload(state).event if state else None
        streams = list({stream_of(e) for e in events} - self._heads.keys())
        found_heads = self.session.heads(streams)
        for stream in streams:
            self._heads[stream] = found_heads.get(stream, 0)
        ids = {self.identity(e) for e in events}
        ids.update(e.supersedes for e in events if isinstance(e, ProtocolIssued) and e.supersedes)
        missing_ids = [i for i in ids if i not in self._recorded]
        found_ids = self.session.recorded(missing_ids)
        for event_id in missing_ids:
            self._recorded[event_id] = found_ids.get(event_id)

    @staticmethod
    def identity(event: Event) -> str:
        return event.event_id or f"sha256:{content_digest(event)}"

    def _definition(self, stream: UUID) -> Event | None:
        if stream not in self._definitions:
            self.prefetch_stream(stream)
        return self._definitions[stream]

    def prefetch_stream(self, stream: UUID) -> None:
        state = self.session.first_versions([stream]).get(stream)
        self._definitions[stream] = decode_payload(state).event if state else None

    def election(self, election: str) -> ElectionDefined | None:
        return self._definition(election_stream(election))  # type: ignore[return-value]

    def station(self, election: str, station: str) -> StationRegistered | None:
        return self._definition(station_stream(election, station))  # type: ignore[return-value]

    def appeal(self, election: str, appeal: str) -> AppealFiled | None:
        return self._definition(appeal_stream(election, appeal))  # type: ignore[return-value]

    def recorded(self, event_id: str) -> Recorded | None:
        if event_id not in self._recorded:
            self._recorded[event_id] = self.session.recorded([event_id]).get(event_id)
        return self._recorded[event_id]

    def next_version(self, stream: UUID) -> int:
        if stream not in self._heads:
            self._heads.update(self.session.heads([stream]))
        version = self._heads.get(stream, 0) + 1
        self._heads[stream] = version
        return version

    def accept(self, event: Event, event_id: str, digest: str) -> None:
        stream = stream_of(event)
        if isinstance(event, ElectionDefined | StationRegistered | AppealFiled):
            self._definitions.setdefault(stream, None)
            if self._definitions[stream] is None:
                self._definitions[stream] = event
        self._recorded[event_id] = Recorded(
            digest=digest, type=type(event).__name__, election=event.election,
            station=station_of(event),
        )


class Planner:
    """Turns lines into entries to write, keeping every decision it made."""

    def __init__(self, state: BatchState, recorded_at: datetime) -> None:
        self.state = state
        self.recorded_at = recorded_at
        self.mapper = LedgerMapper(transcoder=None)  # type: ignore[arg-type]
        self.outcome = Outcome()

    def add(self, lines: Iterable[Line]) -> list[NewEntry]:
        lines = list(lines)
        self.state.prefetch([line.event for line in lines if line.event is not None])
        added = []
        for line in lines:
            entry = self._decide(line)
            if entry is not None:
                added.append(entry)
        return added

    def _decide(self, line: Line) -> NewEntry | None:
        if line.event is None:
            assert line.problem is not None
            return self._reject(line, [line.problem])
        event = normalised(line.event)
        digest = content_digest(event)
        event_id = event.event_id or f"sha256:{digest}"
        known = self.state.recorded(event_id)
        if known is not None:
            if known.digest == digest:
                self.outcome.already_recorded += 1
                return None
            return self._reject(
                line,
                [Problem(line.number, "event_id",
                         f"{event_id!r} is already recorded with different content")],
            )
        complaints = check(event, self.state)
        if complaints:
            return self._reject(line, [Problem(line.number, f, why) for f, why in complaints])
        if is_restatement(event, self.state):
            self.outcome.already_recorded += 1
            return None
        event = msgspec.structs.replace(event, event_id=event_id)
        self.state.accept(event, event_id, digest)
        if isinstance(event, ProtocolIssued):
            for failure in control_check_failures(event):
                self.outcome.flagged.append(Problem(line.number, "control check", failure))
        stream = stream_of(event)
        stored: StoredEvent = self.mapper.to_stored_event(
            Entry(stream, self.state.next_version(stream), event, self.recorded_at)
        )
        entry = NewEntry(
            stored=stored, event_id=event_id, digest=digest, type=type(event).__name__,
            election=event.election, station=station_of(event),
        )
        self.outcome.accepted.append(entry)
        self.outcome.accepted_lines.append(line.number)
        return entry

    def _reject(self, line: Line, problems: list[Problem]) -> None:
        self.outcome.problems.extend(problems)
        self.outcome.rejected_lines.append(line)
        return None
