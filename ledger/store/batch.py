"""Deciding, line by line, what a batch adds to the ledger.

A batch is checked in order against the stored ledger plus the batch's own earlier lines
(a file may define an election and then report on it). Each line ends up accepted, a
no-op (already recorded, or a restated definition), or a problem.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from ledger.domain.events import (
    AppealFiled,
    ElectionDefined,
    Event,
    ProtocolIssued,
    ReporterKeyRevoked,
    ReporterRegistered,
    StationRegistered,
    content_digest,
    identity,
    normalised,
    station_of,
)
from ledger.domain.keyring import KEY_EVENTS, Keyring
from ledger.domain.relations import protocol_failures
from ledger.domain.streams import StreamKey, reporter_stream, stream_id, stream_key
from ledger.domain.validation import Recorded, check, is_restatement
from ledger.input.reader import Line, Problem
from ledger.store.codec import Entry, LedgerMapper, decode_payload
from ledger.store.session import Accepted, WriteSession
from ledger.trust.signatures import (
    SignatureRefused,
    authenticate,
    reporters_named,
    unsigned_refusal,
)

MAX_PROBLEMS_KEPT = 1_000  # a refused batch reports its first problems, and counts the rest
MAX_DEFINITIONS_KEPT = 250_000  # stream definitions kept across chunks: about 100 MB at most


@dataclass
class Outcome:
    accepted: int = 0
    already_recorded: int = 0
    problem_count: int = 0
    rejected_count: int = 0  # lines refused, all of them (``problems`` keeps only the first)
    problems: list[Problem] = field(default_factory=list)
    # Kept only for a rejects file, each line with all its own reasons.
    rejected_lines: list[tuple[Line, list[Problem]]] = field(default_factory=list)
    flagged: list[Problem] = field(default_factory=list)
    # The event ids of lines already recorded, when the planner is asked to remember them.
    known: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    """A decoded line, in UTC, with its content digest and identity worked out once."""

    line: Line
    event: Event
    digest: str

    @property
    def event_id(self) -> str:
        return identity(self.event, self.digest)


def _referenced(event: Event) -> Iterable[StreamKey]:
    """The streams whose definitions checking ``event`` needs."""
    yield ("election", event.election)
    if (station := station_of(event)) is not None:
        yield ("station", event.election, station)
    for station in getattr(event, "stations", None) or ():
        yield ("station", event.election, station)
    if (appeal := getattr(event, "appeal", None)) is not None:
        yield ("appeal", event.election, appeal)


class BatchState:
    """The ledger as a batch sees it: stored facts, then the batch's own accepted lines.

    Lookups are answered from caches filled by ``prefetch``: a few set-wise queries per
    chunk of lines rather than one query per line.
    """

    def __init__(self, session: WriteSession) -> None:
        self.session = session
        self._definitions: dict[StreamKey, Event | None] = {}
        self._heads: dict[StreamKey, int] = {}
        self._recorded: dict[str, Recorded | None] = {}
        self.keyring = Keyring()
        # Who reported each protocol of the stations read so far, and of this chunk's own
        # accepted protocols: what a ``supersedes`` may name depends on it.
        self._reporters: dict[str, str] = {}
        self._stations_read: set[tuple[str, str]] = set()

    def forget(self, *, keep_definitions: bool = False) -> None:
        """Drop the caches. Safe once the batch's accepted lines are written (the session
        reads its own writes), and it keeps memory flat however long the batch.

        With ``keep_definitions``, what defines each stream stays (up to a bound): a first
        version never changes, and the next chunk of a national file names the stations
        the chunks before it registered — reading and decoding them back cost about a
        tenth of a bulk append."""
        if not keep_definitions or len(self._definitions) > MAX_DEFINITIONS_KEPT:
            self._definitions.clear()
        self._heads.clear()
        self._recorded.clear()
        self.keyring.forget()
        self._reporters.clear()
        self._stations_read.clear()

    def prefetch(self, candidates: Sequence[Candidate]) -> None:
        self._load_definitions({k for c in candidates for k in _referenced(c.event)})
        self.load_keys({(c.event.election, reporter) for c in candidates
                        for reporter in reporters_named(c.event, self.election(c.event.election))})
        for election in {c.event.election for c in candidates
                         if isinstance(c.event, ReporterRegistered | ReporterKeyRevoked)}:
            self.election_keys(election)
        self._read_stations({(c.event.election, c.event.station) for c in candidates
                             if isinstance(c.event, ProtocolIssued) and c.event.supersedes})
        keys = list({stream_key(c.event) for c in candidates} - self._heads.keys())
        heads = self.session.heads([stream_id(k) for k in keys])
        for key in keys:
            self._heads[key] = heads.get(stream_id(key), 0)
        ids = {c.event_id for c in candidates}
        ids.update(c.event.supersedes for c in candidates
                   if isinstance(c.event, ProtocolIssued) and c.event.supersedes)
        missing = [i for i in ids if i not in self._recorded]
        found = self.session.recorded(missing)
        for event_id in missing:
            self._recorded[event_id] = found.get(event_id)

    def _load_definitions(self, keys: Iterable[StreamKey]) -> None:
        missing = [k for k in keys if k not in self._definitions]
        found = self.session.first_versions([stream_id(k) for k in missing])
        for key in missing:
            state = found.get(stream_id(key))
            self._definitions[key] = decode_payload(state).event if state else None

    def load_keys(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Read the stored key events of these (election, reporter) pairs (their reporter
        streams) into the keyring."""
        missing = [p for p in pairs if not self.keyring.known(*p)]
        if not missing:
            return
        found = self.session.stream_payloads([stream_id(reporter_stream(*p)) for p in missing])
        for election, reporter in missing:
            states = found.get(stream_id(reporter_stream(election, reporter)), [])
            self.keyring.load(election, reporter, [decode_payload(s).event for s in states])  # type: ignore[misc]

    def election_keys(self, election: str) -> Keyring:
        """The keyring with every key event of ``election`` in it: checking a key event needs
        every reporter's keys (one key speaks for one reporter). Key events are few; this
        is read only for a chunk that holds one."""
        if not self.keyring.complete(election):
            states = self.session.payloads_of_types(election, KEY_EVENTS)
            self.keyring.load_election(election, [decode_payload(s).event for s in states])  # type: ignore[misc]
        return self.keyring

    def _read_stations(self, stations: Iterable[tuple[str, str]]) -> None:
        missing = [s for s in stations if s not in self._stations_read]
        if not missing:
            return
        found = self.session.stream_payloads([stream_id(("station", *s)) for s in missing])
        for station in missing:
            self._stations_read.add(station)
            for state in found.get(stream_id(("station", *station)), []):
                event = decode_payload(state).event
                if isinstance(event, ProtocolIssued):
                    self._reporters.setdefault(identity(event), event.reported_by)

    def reporter_of(self, election: str, station: str, event_id: str) -> str | None:
        """Who reported the protocol ``event_id`` of this station, if the ledger holds it."""
        self._read_stations([(election, station)])
        return self._reporters.get(event_id)

    def _definition(self, key: StreamKey) -> Event | None:
        if key not in self._definitions:
            self._load_definitions([key])
        return self._definitions[key]

    def election(self, election: str) -> ElectionDefined | None:
        return self._definition(("election", election))  # type: ignore[return-value]

    def station(self, election: str, station: str) -> StationRegistered | None:
        return self._definition(("station", election, station))  # type: ignore[return-value]

    def appeal(self, election: str, appeal: str) -> AppealFiled | None:
        return self._definition(("appeal", election, appeal))  # type: ignore[return-value]

    def recorded(self, event_id: str) -> Recorded | None:
        if event_id not in self._recorded:
            self._recorded[event_id] = self.session.recorded([event_id]).get(event_id)
        return self._recorded[event_id]

    def next_version(self, key: StreamKey) -> int:
        if key not in self._heads:
            self._heads[key] = self.session.heads([stream_id(key)]).get(stream_id(key), 0)
        self._heads[key] += 1
        return self._heads[key]

    def accept(self, event: Event, event_id: str, digest: str) -> None:
        if isinstance(event, ElectionDefined | StationRegistered | AppealFiled):
            key = stream_key(event)
            if self._definitions.get(key) is None:
                self._definitions[key] = event
        if isinstance(event, ReporterRegistered | ReporterKeyRevoked):
            self.load_keys([(event.election, event.reporter)])
            self.keyring.apply(event)
        if isinstance(event, ProtocolIssued):
            self._reporters[event_id] = event.reported_by
        self._recorded[event_id] = Recorded(
            digest=digest, type=type(event).__name__, election=event.election,
            station=station_of(event),
        )


class Planner:
    """Turns lines into entries to write, keeping every decision it made."""

    def __init__(self, state: BatchState, recorded_at: datetime, *, keep_rejected: bool,
                 remember_known: bool = False) -> None:
        self.state = state
        self.keep_rejected = keep_rejected
        self.remember_known = remember_known
        self.recorded_at = recorded_at
        self.mapper = LedgerMapper(transcoder=None)  # type: ignore[arg-type]
        self.outcome = Outcome()

    def add(self, lines: Iterable[Line]) -> list[Accepted]:
        candidates: list[Candidate | Line] = []
        for line in lines:
            if line.event is None:
                candidates.append(line)
            else:
                event = normalised(line.event)
                candidates.append(Candidate(line, event, content_digest(event)))
        self.state.prefetch([c for c in candidates if isinstance(c, Candidate)])
        added = []
        for candidate in candidates:
            if isinstance(candidate, Line):
                assert candidate.problem is not None
                self._reject(candidate, [candidate.problem])
            elif (entry := self._decide(candidate)) is not None:
                added.append(entry)
        return added

    def _decide(self, candidate: Candidate) -> Accepted | None:
        line, event, digest = candidate.line, candidate.event, candidate.digest
        event_id = candidate.event_id
        # Signatures first: a false claim of authorship is refused even on a repeated line.
        election = self.state.election(event.election)
        keyring = self.state.keyring
        self.state.load_keys((event.election, r) for r in reporters_named(event, election))
        try:
            signed = authenticate(event, line.text, election, keyring)
        except SignatureRefused as refused:
            return self._reject(line, [Problem(line.number, "signature", str(refused))])
        known = self.state.recorded(event_id)
        if known is not None:
            if known.digest == digest:
                self.outcome.already_recorded += 1
                if self.remember_known:
                    self.outcome.known.append(event_id)
                return None
            return self._reject(line, [Problem(
                line.number, "event_id", f"{event_id!r} is already recorded with different content"
            )])
        if (unsigned := unsigned_refusal(event, election, keyring)) is not None:
            return self._reject(line, [Problem(line.number, "signature", unsigned)])
        complaints = check(event, self.state)
        if complaints:
            return self._reject(line, [Problem(line.number, f, why) for f, why in complaints])
        if is_restatement(event, self.state) or (
            isinstance(event, ReporterRegistered) and keyring.holds(event)
        ):
            self.outcome.already_recorded += 1
            return None
        if event.event_id is None:
            event = msgspec.structs.replace(event, event_id=event_id)
        self.state.accept(event, event_id, digest)
        if isinstance(event, ProtocolIssued):
            station = self.state.station(event.election, event.station)
            register = station.registered_voters if station is not None else None
            election = self.state.election(event.election)
            for failure in protocol_failures(event, election, register):
                self.outcome.flagged.append(Problem(line.number, "control check", failure))
        key = stream_key(event)
        stored = self.mapper.to_stored_event(
            Entry(stream_id(key), self.state.next_version(key), event, self.recorded_at, signed,
                  submitted_offset(line.event))
        )
        self.outcome.accepted += 1
        return Accepted(
            stored=stored, event_id=event_id, digest=digest, type=type(event).__name__,
            election=event.election, station=station_of(event),
        )

    def _reject(self, line: Line, problems: list[Problem]) -> None:
        outcome = self.outcome
        outcome.problem_count += len(problems)
        outcome.rejected_count += 1
        outcome.problems.extend(problems[: max(0, MAX_PROBLEMS_KEPT - len(outcome.problems))])
        if self.keep_rejected:
            outcome.rejected_lines.append((line, problems))
        return None


def submitted_offset(event: Event | None) -> int | None:
    """The UTC offset, in seconds, the line's ``occurred_at`` was written with; None for UTC."""
    offset = event.occurred_at.utcoffset() if event is not None else None
    return int(offset.total_seconds()) or None if offset is not None else None
