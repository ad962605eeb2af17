"""Checks that an event makes sense against what the ledger already holds.

Kept apart from storage: ``check`` reads a ``LedgerState`` and returns problems, it never
changes anything. Arithmetic that fails a protocol's control checks is not a problem here:
real protocols are sometimes wrong, and the ledger records what was issued.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import msgspec

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
from ledger.domain.keyring import Keyring, key_event_refusal
from ledger.domain.relations import check_protocol_rules


class Recorded(msgspec.Struct, frozen=True):
    """What the ledger remembers of an event it holds, keyed by its identity."""

    digest: str
    type: str
    election: str
    station: str | None


class LedgerState(Protocol):
    def election(self, election: str) -> ElectionDefined | None: ...
    def station(self, election: str, station: str) -> StationRegistered | None: ...
    def appeal(self, election: str, appeal: str) -> AppealFiled | None: ...
    def recorded(self, event_id: str) -> Recorded | None: ...
    def reporter_of(self, election: str, station: str, event_id: str) -> str | None: ...
    def election_keys(self, election: str) -> Keyring: ...


Complaint = tuple[str, str]  # (field, reason)


def check(event: Event, state: LedgerState) -> list[Complaint]:
    """Everything wrong with appending ``event`` to a ledger in ``state``."""
    if isinstance(event, ElectionDefined):
        return _check_definition(event, state)
    election = state.election(event.election)
    if election is None:
        return [("election", f"unknown election {event.election!r}; define it first")]
    if isinstance(event, StationRegistered):
        return _check_registration(event, state)
    if isinstance(event, ReporterRegistered | ReporterKeyRevoked):
        # The key's form is checked by the schema; here, whose it is and whether it is held.
        refusal = key_event_refusal(state.election_keys(event.election), event)
        return [] if refusal is None else [("public_key", refusal)]
    if isinstance(event, ProtocolIssued | ProtocolWithheld):
        problems = _unknown_stations(event.election, [event.station], state, "station")
        if isinstance(event, ProtocolIssued):
            problems += _unknown_choices(election, event.votes, "votes")
            problems += _unknown_lines(election, event.lines or {})
            problems += _check_supersedes(event, state)
        return problems
    if isinstance(event, ResultAnnounced):
        return _unknown_choices(election, event.votes, "votes") + _unknown_choices(
            election, event.seats or {}, "seats"
        )
    if isinstance(event, AppealFiled):
        problems = _unknown_stations(event.election, event.stations, state, "stations")
        filed = state.appeal(event.election, event.appeal)
        if filed is not None and _differs(filed, event):
            problems.append(("appeal", f"appeal {event.appeal!r} was already filed differently"))
        return problems
    if isinstance(event, AppealDecided):
        filed = state.appeal(event.election, event.appeal)
        if filed is None:
            return [("appeal", f"appeal {event.appeal!r} was never filed in {event.election!r}")]
        if event.occurred_at < filed.occurred_at:
            return [("occurred_at", f"the decision is dated before appeal {event.appeal!r} "
                                    f"was filed ({filed.occurred_at.isoformat()})")]
        return _unknown_stations(event.election, event.stations or [], state, "stations")
    raise TypeError(f"no checks for {type(event).__name__}")  # pragma: no cover


def is_restatement(event: Event, state: LedgerState) -> bool:
    """True when ``event`` only repeats a definition the ledger already holds.

    An election, station or appeal defined again with the same data (at another time or
    under another event_id) adds nothing: it is skipped, like a re-appended line.
    """
    if isinstance(event, ElectionDefined):
        known: Event | None = state.election(event.election)
    elif isinstance(event, StationRegistered):
        known = state.station(event.election, event.station)
    elif isinstance(event, AppealFiled):
        known = state.appeal(event.election, event.appeal)
    else:
        return False
    return known is not None and not _differs(known, event)


def _check_definition(event: ElectionDefined, state: LedgerState) -> list[Complaint]:
    problems: list[Complaint] = []
    ids = [choice.id for choice in event.choices]
    for index, choice_id in enumerate(ids):
        if choice_id in ids[:index]:
            problems.append((f"choices[{index}].id", f"choice {choice_id!r} is listed twice"))
    problems += check_protocol_rules(event)
    known = state.election(event.election)
    if known is not None and _differs(known, event):
        problems.append(
            ("election", f"election {event.election!r} is already defined with different rules")
        )
    return problems


def _unknown_lines(election: ElectionDefined, lines: dict[str, int]) -> list[Complaint]:
    defined = {line.id for line in election.protocol_lines or ()}
    return [
        (f"lines.{line}", f"unknown protocol line {line!r} in election {election.election!r}")
        for line in lines
        if line not in defined
    ]


def _check_registration(event: StationRegistered, state: LedgerState) -> list[Complaint]:
    known = state.station(event.election, event.station)
    if known is not None and _differs(known, event):
        return [("station", f"station {event.station!r} is already registered with different data")]
    return []


def _unknown_stations(
    election: str, stations: Iterable[str], state: LedgerState, field: str
) -> list[Complaint]:
    return [
        (field, f"unknown station {station!r} in election {election!r}")
        for station in stations
        if state.station(election, station) is None
    ]


def _unknown_choices(
    election: ElectionDefined, counts: dict[str, int], field: str
) -> list[Complaint]:
    choices = {choice.id for choice in election.choices}
    return [
        (f"{field}.{choice}", f"unknown choice {choice!r} in election {election.election!r}")
        for choice in counts
        if choice not in choices
    ]


def _check_supersedes(event: ProtocolIssued, state: LedgerState) -> list[Complaint]:
    if event.supersedes is None:
        return []
    earlier = state.recorded(event.supersedes)
    if earlier is None:
        return [("supersedes", f"no recorded protocol has event_id {event.supersedes!r}")]
    if earlier.type != "ProtocolIssued" or (earlier.election, earlier.station) != (
        event.election,
        event.station,
    ):
        return [
            ("supersedes", f"{event.supersedes!r} is not a protocol of station {event.station!r}")
        ]
    return supersedes_another_reporter(event, state.reporter_of(event.election, event.station,
                                                                event.supersedes))


def supersedes_another_reporter(event: ProtocolIssued, earlier_by: str | None) -> list[Complaint]:
    """A report acts only for its reporter: a protocol supersedes only its own reporter's
    earlier protocol. Otherwise an observer's copy could take the authority's protocol of a
    station out of the official tally (or the authority an observer's out of its count)."""
    if earlier_by == event.reported_by:
        return []
    return [("supersedes", f"{event.supersedes!r} is a protocol of {earlier_by!r}: a protocol "
                           f"supersedes only an earlier protocol of its own reporter "
                           f"({event.reported_by!r}); a reporter's events never change the "
                           "effect of another's")]


def _differs(known: Event, event: Event) -> bool:
    # When and under which id a definition was stated is not part of what it defines.
    def essence(e: Event) -> Event:
        return msgspec.structs.replace(e, occurred_at=known.occurred_at, event_id=None)

    return essence(known) != essence(event)
