"""The nine facts an election ledger records, as msgspec schemas.

One tagged union on ``type`` means one decode both parses and validates a line: unknown
fields and types are rejected, counts are bounded non-negative integers and every timestamp
must carry a UTC offset (``normalised`` then stores it as UTC).

Each type's tag is written out: it is the ``type`` member of every stored event, hashed into
the Merkle leaves, so it must never follow a class being renamed.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

from ledger.domain.methods import SEAT_METHODS

MAX_COUNT = 10**12  # far above any real electorate, far below SQLite's 64-bit sums
MAX_ID_LENGTH = 200

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
Seats = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
# Identifiers end up in command lines, file names and tables: no control characters.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
Text = Annotated[str, msgspec.Meta(max_length=10_000, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$")]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
# Standard base64 of a raw 32-byte Ed25519 public key and of a 64-byte Ed25519 signature.
PublicKey = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")]
SignatureBytes = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9+/]{85}[AQgw]==$")]

Method = Literal[tuple(SEAT_METHODS)]  # type: ignore[valid-type]


class Signature(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A reporter's Ed25519 signature over the event as submitted (see ledger.trust.signatures)."""

    by: Id
    ed25519: SignatureBytes


class Event(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, frozen=True, kw_only=True):
    election: Id
    occurred_at: Timestamp
    event_id: Id | None = None
    # UNSET, not None: an unsigned event encodes (and hashes, and is stored) exactly as in v1.
    signature: Signature | msgspec.UnsetType = msgspec.UNSET


class Choice(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: Id
    name: Text
    party: Id | None = None


class ProtocolLine(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: Id
    name: Text


class ElectionDefined(Event, tag="ElectionDefined"):
    name: Text
    seats: Seats
    method: Method
    authority: Id
    choices: Annotated[list[Choice], msgspec.Meta(min_length=1, max_length=10_000)]
    threshold_pct: Percent = 0.0
    threshold_base: Literal["valid", "cast"] = "valid"
    # Whole protocols (v2): the protocol's further lines and the law's control relations
    # between them (grammar in ledger/domain/relations.py).
    protocol_lines: Annotated[list[ProtocolLine], msgspec.Meta(max_length=1_000)] | None = None
    control_relations: Annotated[list[Text], msgspec.Meta(max_length=1_000)] | None = None


class StationRegistered(Event, tag="StationRegistered"):
    station: Id
    region: Id
    registered_voters: Count | None  # null only where the source does not give it
    district: Id | None = None


class ReporterRegistered(Event, tag="ReporterRegistered"):
    """A reporter's public key; registering the same reporter again adds a key (rotation)."""

    reporter: Id
    name: Text
    public_key: PublicKey


class ReporterKeyRevoked(Event, tag="ReporterKeyRevoked"):
    """A reporter's key stops speaking for it (v3): signatures by it are refused from here on."""

    reporter: Id
    public_key: PublicKey
    reason: Text | None = None


class ProtocolIssued(Event, tag="ProtocolIssued"):
    station: Id
    reported_by: Id
    ballots_cast: Count
    invalid: Count
    votes: dict[Id, Count]
    registered_voters: Count | None = None
    ballots_issued: Count | None = None
    protocol_no: Id | None = None
    document_sha256: Sha256 | None = None
    supersedes: Id | None = None
    lines: dict[Id, Count] | None = None  # protocol line id -> count (v2)


class ProtocolWithheld(Event, tag="ProtocolWithheld"):
    station: Id
    requested_by: Id
    reason: Text | None = None


class ResultAnnounced(Event, tag="ResultAnnounced"):
    authority: Id
    stage: Literal["preliminary", "final"]
    scope: Id
    votes: dict[Id, Count]
    turnout_pct: Percent | None = None
    seats: dict[Id, Count] | None = None


class AppealFiled(Event, tag="AppealFiled"):
    appeal: Id
    filed_by: Id
    grounds: Text
    demand: Literal["recount", "annul", "other"]
    stations: list[Id] = []


class AppealDecided(Event, tag="AppealDecided"):
    appeal: Id
    decision: Literal["upheld", "rejected", "partially_upheld"]
    remedy: Literal["recount", "annul", "none"]
    stations: list[Id] | None = None


ElectionEvent = (
    ElectionDefined | StationRegistered | ProtocolIssued | ProtocolWithheld | ResultAnnounced
    | AppealFiled | AppealDecided | ReporterRegistered | ReporterKeyRevoked
)
EVENT_TYPES: tuple[type[Event], ...] = (
    ElectionDefined, StationRegistered, ProtocolIssued, ProtocolWithheld, ResultAnnounced,
    AppealFiled, AppealDecided, ReporterRegistered, ReporterKeyRevoked,
)
TYPE_NAMES = tuple(cls.__struct_config__.tag for cls in EVENT_TYPES)

# Who speaks in each event. A report names its reporter in one field: that reporter's key must
# sign it. A registration names the reporter it gives a key to: adding a key to a reporter that
# holds one is that reporter's own act (signed); an appeal's decision speaks for the election's
# authority (``ledger.trust.signatures.acting_reporter`` reads this table).
ACTING_FIELD: dict[type[Event], str] = {
    ProtocolIssued: "reported_by", ProtocolWithheld: "requested_by", AppealFiled: "filed_by",
    ResultAnnounced: "authority", ReporterRegistered: "reporter",
}
# The operator's acts: they define the election or take a key away, and carry no signature.
OPERATORS_ACTS: tuple[type[Event], ...] = (ElectionDefined, StationRegistered, ReporterKeyRevoked)
# Appended only where the ledger lives, never over the network: the operator's acts, and every
# registration (a first key is the operator's act; a rotation, signed, is appended locally too).
APPENDED_LOCALLY = frozenset(cls.__struct_config__.tag for cls in (*OPERATORS_ACTS, ReporterRegistered))

decoder = msgspec.json.Decoder(ElectionEvent)
_encoder = msgspec.json.Encoder(order="sorted")


def normalised(event: Event) -> Event:
    """The event with its timestamp in UTC, so equal instants hash and sort equally."""
    if event.occurred_at.tzinfo is UTC:
        return event
    return msgspec.structs.replace(event, occurred_at=event.occurred_at.astimezone(UTC))


def content_digest(event: Event) -> str:
    """SHA-256 of the event's canonical JSON, leaving out its ``event_id`` and ``signature``.

    Two lines that state the same fact, whatever their key order, spacing, UTC offset or
    signature, have the same digest: that is what makes re-appending a file (or the same
    report signed again after a key rotation) a no-op.
    """
    event = msgspec.structs.replace(normalised(event), event_id=None, signature=msgspec.UNSET)
    if any(getattr(event, name, ...) is None for name in LATER_FIELDS):
        # A v1 event must keep its v1 digest (and so its derived event_id): fields added
        # later are left out of the canonical form while they are absent.
        content = msgspec.to_builtins(event)
        canonical = _encoder.encode(
            {k: v for k, v in content.items() if not (k in LATER_FIELDS and v is None)}
        )
    else:
        canonical = _encoder.encode(event)
    return hashlib.sha256(canonical).hexdigest()


# Optional fields added after v1, left out of the canonical form while absent.
LATER_FIELDS = frozenset({"protocol_lines", "control_relations", "lines"})


def identity(event: Event, digest: str | None = None) -> str:
    """The event's ledger identity: its ``event_id``, or one derived from its content
    (``digest``, when the caller already has it)."""
    return event.event_id or f"sha256:{digest or content_digest(event)}"


def control_check_failures(
    protocol: ProtocolIssued, station_register: int | None = None
) -> list[str]:
    """The arithmetic checks a protocol fails. Failing ones are recorded and flagged, not refused.

    The register is the protocol's own ``registered_voters``, else the station's
    (``station_register``): a protocol that leaves it out must not escape the check that
    catches ballot stuffing, more ballots than voters.
    """
    failures = []
    total = sum(protocol.votes.values()) + protocol.invalid
    if total != protocol.ballots_cast:
        failures.append(
            f"votes + invalid = {total}, but ballots_cast = {protocol.ballots_cast}"
        )
    if protocol.ballots_issued is not None and protocol.ballots_cast > protocol.ballots_issued:
        failures.append(
            f"ballots_cast {protocol.ballots_cast} > ballots_issued {protocol.ballots_issued}"
        )
    register = protocol.registered_voters
    whose = "registered_voters"
    if register is None and station_register is not None:
        register, whose = station_register, "the station's registered_voters"
    if register is not None:
        # ballots_issued bounds ballots_cast (checked above); without it, compare the cast.
        if protocol.ballots_issued is not None:
            name, ballots = "ballots_issued", protocol.ballots_issued
        else:
            name, ballots = "ballots_cast", protocol.ballots_cast
        if ballots > register:
            failures.append(f"{name} {ballots} > {whose} {register}")
    return failures


def station_of(event: Event) -> str | None:
    return getattr(event, "station", None)
