"""The ledger application: append batches of events, read the ordered log back."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from eventsourcing.application import Application
from eventsourcing.utils import get_topic

from ledger.domain.events import ElectionDefined
from ledger.domain.streams import stream_id
from ledger.input.reader import Line
from ledger.store.batch import BatchState, Outcome, Planner
from ledger.store.codec import LedgerMapper, NullTranscoder, Payload, decode_payload
from ledger.store.config import Location
from ledger.store.session import WriteSession, utc_now
from ledger.trust.merkle import entry_bytes, leaf_hash

CHUNK_LINES = 5_000
CHUNK_BYTES = 4 << 20


class BatchRejected(ValueError):
    """A batch had bad lines and nothing of it was stored."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(f"{outcome.problem_count} problem(s); nothing was appended")
        self.outcome = outcome


@dataclass(frozen=True)
class Written:
    """One event as the log holds it: what a receipt signs."""

    position: int
    event_id: str
    leaf_hash: bytes


@dataclass(frozen=True)
class Appended:
    outcome: Outcome
    first_position: int | None
    last_position: int | None
    written: tuple[Written, ...] = ()  # filled by ``append_each`` only
    # The lines already recorded, where the log holds them (``append_each`` only): a reporter
    # who resends after a lost answer gets the receipt it missed.
    known: tuple[Written, ...] = ()

    @property
    def count(self) -> int:
        return self.outcome.accepted


@dataclass(frozen=True)
class Logged:
    position: int
    entry: Payload


class Ledger(Application):
    """An append-only log of election events on SQLite or PostgreSQL."""

    name = "Ledger"
    env: ClassVar[dict[str, str]] = {
        "MAPPER_TOPIC": get_topic(LedgerMapper),
        "TRANSCODER_TOPIC": get_topic(NullTranscoder),
    }

    def __init__(self, location: Location) -> None:
        self.location = location
        # Topics, not classes: only the backend in use gets imported (psycopg is slow to load).
        super().__init__(env=location.environment(
            sqlite_recorder="ledger.store.sqlite:SQLiteLedgerRecorder",
            postgres_recorder="ledger.store.postgres:PostgresLedgerRecorder",
        ))

    def append(self, lines: Iterable[Line], *, skip_invalid: bool = False) -> Appended:
        """Check every line, then store the accepted ones in one transaction.

        Unless ``skip_invalid``, one bad line means nothing is stored: the whole batch is
        still checked, so the user learns every problem at once.
        """
        first = last_position = None
        with self.recorder.writing() as session:
            session.refuse_if_replica()
            recorded_at = _recorded_at(session)
            state = BatchState(session)
            planner = Planner(state, recorded_at, keep_rejected=skip_invalid)
            for chunk in _chunked(lines, CHUNK_LINES):
                writable = skip_invalid or not planner.outcome.problems
                if writable:
                    state.forget(keep_definitions=True)
                entries = planner.add(chunk)
                if entries and (skip_invalid or not planner.outcome.problems):
                    positions = session.insert(entries, recorded_at)
                    first = first or positions[0]
                    last_position = positions[-1]
            if planner.outcome.problems and not skip_invalid:
                raise BatchRejected(planner.outcome)
        return Appended(planner.outcome, first, last_position)

    def append_each(self, batches: Sequence[Sequence[Line]]) -> list[Appended | BatchRejected]:
        """Group commit: plan each batch on its own, store the good ones in ONE transaction.

        Each batch stays atomic: one with a problem is refused whole and the others are
        planned as if it had never been sent (the caches are dropped, so the next batch sees
        only what the session really holds). Batches meant to be small (one request each):
        a batch is planned whole before any of it is written.
        """
        results: list[Appended | BatchRejected] = []
        with self.recorder.writing() as session:
            session.refuse_if_replica()
            recorded_at = _recorded_at(session)
            state = BatchState(session)
            for lines in batches:
                planner = Planner(state, recorded_at, keep_rejected=False, remember_known=True)
                entries = [e for chunk in _chunked(lines, CHUNK_LINES) for e in planner.add(chunk)]
                if planner.outcome.problems:
                    state.forget()
                    results.append(BatchRejected(planner.outcome))
                    continue
                positions = session.insert(entries, recorded_at) if entries else []
                results.append(Appended(
                    planner.outcome, positions[0] if positions else None,
                    positions[-1] if positions else None,
                    tuple(Written(p, e.event_id, leaf_hash(entry_bytes(p, e.stored)))
                          for p, e in zip(positions, entries, strict=True)),
                    _known(session, planner.outcome.known),
                ))
        return results

    def entries(self, after: int = 0, *, page: int = 5_000) -> Iterator[Logged]:
        """Every recorded event after position ``after``, in log order: what projections read.

        Reads only positions and payloads: building the library's notification objects (and
        a UUID for each) would cost more than decoding the events themselves.
        """
        while True:
            rows = self.recorder.select_payloads(after, page)
            for position, state in rows:
                yield Logged(position, decode_payload(state))
            if len(rows) < page:
                return
            after = rows[-1][0]

    def head(self) -> int:
        """The position of the last recorded event (0 for an empty ledger)."""
        return self.recorder.max_notification_id() or 0


def _recorded_at(session: WriteSession) -> datetime:
    """One ``recorded_at`` per transaction, never before the last one (clocks step back)."""
    last = session.last_recorded_at()
    now = utc_now()
    return max(now, last) if last else now


def _known(session: WriteSession, event_ids: Sequence[str]) -> tuple[Written, ...]:
    """Where the log holds these already recorded events, and their leaves."""
    if not event_ids:
        return ()
    located = session.located(event_ids)
    found = []
    for event_id in dict.fromkeys(event_ids):
        if event_id in located:
            position, leaf = located[event_id]
            found.append(Written(position, event_id, session.read_leaves(leaf, leaf + 1)[0]))
    return tuple(found)


def _chunked(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    """Chunks of at most ``size`` lines and about CHUNK_BYTES of text: memory stays flat
    whether a file has many short lines or a few enormous ones."""
    chunk: list[Line] = []
    held = 0
    for line in lines:
        chunk.append(line)
        held += len(line.text)
        if len(chunk) == size or held >= CHUNK_BYTES:
            yield chunk
            chunk, held = [], 0
    if chunk:
        yield chunk


def stored_election(ledger: Any, election: str) -> ElectionDefined | None:
    """The election as the ledger holds it: the first event of its stream is its definition."""

    stored = ledger.recorder.select_events(stream_id(("election", election)), limit=1)
    found = decode_payload(stored[0].state).event if stored else None
    return found if isinstance(found, ElectionDefined) else None
