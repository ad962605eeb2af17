"""Who said what: reporters' Ed25519 keys and the signatures on their events.

The Merkle log proves history was not rewritten; a signature proves authorship. The signed
message is ``election-ledger/event/v1\\n`` followed by the RFC 8785 (JCS) canonical JSON of
the event object exactly as submitted, without its ``signature`` member. The ledger stores
that canonical form beside the normalised event, so anyone can check the signature again
from the log alone (``verify`` does, for every stored signature).

The rules, in one place: once a reporter has held a key in an election, every later event
whose acting reporter it is must carry a valid signature by one of its valid keys (none, once
all are revoked, until a new one is registered); a signature by a reporter without a valid
key, one that does not verify, or one whose ``by`` is not the acting reporter refuses the
line. A registration that adds a key to a reporter holding a valid key is the reporter's own
act and must be signed by it; every other definition (and a revocation) is the operator's and
carries none. Which keys are valid where is ``ledger.domain.keyring``'s.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ledger.domain.events import (
    ACTING_FIELD,
    OPERATORS_ACTS,
    AppealDecided,
    ElectionDefined,
    Event,
    ReporterKeyRevoked,
    ReporterRegistered,
    decoder,
    normalised,
)
from ledger.domain.keyring import Keyring, ReporterKey, adds_a_key, key_event_refusal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PREFIX = b"election-ledger/event/v1\n"
# JCS numbers are IEEE 754 doubles: integers beyond this lose digits when read back.
SAFE_INTEGER = 2**53 - 1


class SignatureRefused(ValueError):
    """A line's signature (or its absence) breaks the rules; the message says which."""


class Signed(msgspec.Struct, frozen=True):
    """What the ledger keeps beside a signed event to check its signature again later."""

    submitted: msgspec.Raw  # the canonical JSON that was signed, byte for byte
    key: str  # fingerprint of the registered key that verified it


def acting_reporter(event: Event, election: ElectionDefined | None) -> str | None:
    """The reporter who speaks in ``event``: the one whose key must sign it.

    ``None`` for the operator's acts, and for a decision on an election that is not defined
    (its authority is unknown; the content checks refuse that line anyway). A registration's
    is the reporter it registers: a key added to a reporter holding one is a rotation, which
    only that reporter may sign (the operator alone gives a first key, unsigned).
    """
    if isinstance(event, AppealDecided):
        return election.authority if election is not None else None
    field = ACTING_FIELD.get(type(event))
    return getattr(event, field) if field else None


def signed_message(canonical: bytes) -> bytes:
    return PREFIX + canonical


def canonical_submitted(text: bytes | str) -> bytes:
    """RFC 8785 canonical JSON of the submitted line's object, without ``signature``.

    Numbers are read as JCS reads them (IEEE 754 doubles): ``5.0`` and ``1e2`` become
    ``5`` and ``100``. An integer beyond 2^53 - 1 or a number beyond the double range
    cannot be represented exactly and refuses the line. (A member given twice never gets
    here: the reader refuses it as ambiguous, ``ledger.input.strict_json``.)
    """
    try:
        submitted = msgspec.json.decode(text)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
        raise SignatureRefused(f"the line cannot be canonicalised: {error}") from None
    if not isinstance(submitted, dict):
        raise SignatureRefused("a signed line must be a JSON object")
    submitted.pop("signature", None)
    return canonical_json(submitted)


_sorted_json = msgspec.json.Encoder(order="sorted")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of a decoded JSON value.

    ``rfc8785`` is the reference and handles everything; for the common case (no float, every
    integer within 2^53, no member name with a character from U+E000 up, where code-point
    and UTF-16 order can differ) msgspec's sorted encoding yields the same bytes — it escapes
    every character exactly as JCS does — at a twentieth of the cost. A property test holds
    the two to equality.
    """
    if _plain(value):
        return _sorted_json.encode(value)
    import rfc8785

    try:
        return rfc8785.dumps(value)
    except rfc8785.IntegerDomainError:
        raise SignatureRefused(
            "a number cannot be represented exactly in canonical JSON (integers are limited "
            f"to {SAFE_INTEGER})"
        ) from None
    except rfc8785.CanonicalizationError as error:
        raise SignatureRefused(f"cannot be represented exactly in canonical JSON: {error}") from None


def _plain(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -SAFE_INTEGER <= value <= SAFE_INTEGER
    if kind is dict:
        return all(type(k) is str and (k.isascii() or max(k) < "\ue000") and _plain(v)
                   for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    return False  # floats: JCS writes them its own way (5.0 is 5)


def authenticate(
    event: Event, text: bytes | str, election: ElectionDefined | None, keyring: Keyring
) -> Signed | None:
    """Check the signature a line carries; ``None`` if it carries none.

    Raises ``SignatureRefused`` for a signature on an operator's act, by someone other than
    the acting reporter, by a reporter with no valid key, or that does not verify with one.
    """
    if not event.signature:
        return None
    keys = _claimable_keys(event, election, keyring)
    message = signed_message(canonical_submitted(text))
    key = verifying_key(keys, event.signature.ed25519, message)
    if key is None:
        revoked = verifying_key(keyring.revoked(event.election, event.signature.by),
                                event.signature.ed25519, message)
        if revoked is not None:
            raise SignatureRefused(
                f"signed with key {revoked.fingerprint} of {event.signature.by!r}, which was "
                "revoked before this line: it speaks for nobody any more")
        raise SignatureRefused(
            f"does not verify with any key of {event.signature.by!r}: forged, altered after "
            "signing, or signed with an unregistered key"
        )
    return Signed(submitted=msgspec.Raw(message[len(PREFIX):]), key=key.fingerprint)


def _claimable_keys(
    event: Event, election: ElectionDefined | None, keyring: Keyring
) -> Sequence[ReporterKey]:
    """The keys that may sign ``event`` as its signature claims; refused if none may."""
    signature = event.signature
    assert signature
    if isinstance(event, OPERATORS_ACTS):
        raise SignatureRefused(
            f"{type(event).__name__} is the operator's, appended locally: it carries no "
            "signature"
        )
    actor = acting_reporter(event, election)
    if actor is None:
        raise SignatureRefused(f"election {event.election!r} is not defined: no reporter to sign as")
    if signature.by != actor:
        raise SignatureRefused(
            f"signed by {signature.by!r}, but {_acting_field(event)} is {actor!r}: "
            "a reporter signs only its own events"
        )
    keys = keyring.keys(event.election, actor)
    if keys:
        return keys
    if isinstance(event, ReporterRegistered):
        raise SignatureRefused(
            f"reporter {actor!r} holds no valid key in {event.election!r} to sign with: its first "
            "key, or a key after all its keys were revoked, is registered by the operator, unsigned")
    if keyring.keyed(event.election, actor):
        raise SignatureRefused(_all_revoked(event.election, actor))
    raise SignatureRefused(f"reporter {actor!r} has no registered key in {event.election!r}")


def _all_revoked(election: str, reporter: str) -> str:
    return (f"every key of reporter {reporter!r} in {election!r} is revoked: its reports are "
            "refused until a new key is registered")


class SignatureAudit:
    """Re-checks, in log order and from the log alone, every stored signature against the
    keys valid at its position; that no stored event lacks the signature its reporter's keys
    required there (a report, or a key added to a reporter holding one); and that no stored
    key event breaks the rules of keys (one key, one reporter; a revoked key never returns;
    only a held key is revoked)."""

    def __init__(self) -> None:
        self.keyring = Keyring()
        self._elections: dict[str, ElectionDefined] = {}

    def needs(self, state: bytes) -> bool:
        """Whether a stored payload must be decoded to be checked (the cheap path of a
        ledger nobody signs in: nothing is registered and nothing carries a signature)."""
        return bool(self.keyring) or b'"signature"' in state or b"ElectionDefined" in state \
            or b"ReporterRegistered" in state or b"ReporterKeyRevoked" in state

    def check(self, position: int, event: Event, signed: Signed | None) -> str | None:
        """The failure of the event stored at ``position``, or ``None``."""
        if isinstance(event, ElectionDefined):
            self._elections.setdefault(event.election, event)
        election = self._elections.get(event.election)
        self.keyring.start(event.election)  # read from the start: every key's owner is known
        failure = self._check(event, signed, election)
        if (failure is None and isinstance(event, ReporterRegistered | ReporterKeyRevoked)
                and (refusal := key_event_refusal(self.keyring, event)) is not None):
            failure = f"public_key: {refusal}"
        if isinstance(event, ReporterRegistered | ReporterKeyRevoked):
            self.keyring.apply(event)
        return None if failure is None else f"position {position}: {failure}"

    def _check(self, event: Event, signed: Signed | None, election: ElectionDefined | None) -> str | None:
        if not event.signature:
            if signed is not None:
                return "a signed submission is stored without its signature (stripped)"
            if unsigned_refusal(event, election, self.keyring) is None:
                return None
            if isinstance(event, ReporterRegistered):
                return (f"a key was added to {event.reporter!r}, which held a valid key, without "
                        "its signature (only the reporter may add a key to itself)")
            return (f"a report of {acting_reporter(event, election)!r} is stored without the "
                    "signature its registered key required")
        if signed is None:
            return "a signature is stored without the submission it covers"
        try:
            keys = _claimable_keys(event, election, self.keyring)
        except SignatureRefused as refused:
            return f"signature: {refused}"
        key = verifying_key(keys, event.signature.ed25519, signed_message(bytes(signed.submitted)))
        if key is None:
            return (f"the signature by {event.signature.by!r} does not verify with any of its "
                    "keys valid at this position")
        if key.fingerprint != signed.key:
            return f"the signature verifies with key {key.fingerprint}, not {signed.key} as stored"
        if not stored_form_matches(event, signed):
            return "the stored event differs from the submission its signature covers"
        return None


def verifying_key(keys: Sequence[ReporterKey], signature_b64: str, message: bytes) -> ReporterKey | None:
    """The key among ``keys`` under which the signature verifies, if any (newest first)."""
    from cryptography.exceptions import InvalidSignature

    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except binascii.Error:
        return None
    for key in reversed(keys):
        try:
            key.public_key.verify(signature, message)
        except InvalidSignature:
            continue
        return key
    return None


def unsigned_refusal(event: Event, election: ElectionDefined | None, keyring: Keyring) -> str | None:
    """Why an unsigned ``event`` may not be recorded, or ``None``: a report of a reporter that
    holds (or held) a key, or a key added to a reporter that holds a valid one."""
    if event.signature or isinstance(event, OPERATORS_ACTS):
        return None
    if isinstance(event, ReporterRegistered):
        if not adds_a_key(keyring, event):
            return None  # a first key, one after all were revoked, or a key it already holds
        return (
            f"required: reporter {event.reporter!r} holds a valid key in {event.election!r}, so a "
            "key added to it must be signed by one of its keys (ledger sign --key OLD.key); the "
            "operator alone registers only a first key, or one after all its keys were revoked"
        )
    actor = acting_reporter(event, election)
    if actor is None or not keyring.keyed(event.election, actor):
        return None
    if not keyring.keys(event.election, actor):
        return _all_revoked(event.election, actor)
    return (
        f"required: reporter {actor!r} has a registered key in {event.election!r}, so its "
        "events must be signed (ledger sign --key FILE.key)"
    )


def _acting_field(event: Event) -> str:
    if isinstance(event, AppealDecided):
        return "the election's authority"
    return ACTING_FIELD.get(type(event), "the acting reporter")


def reporters_named(event: Event, election: ElectionDefined | None) -> Iterable[str]:
    """The reporters whose keys deciding on ``event`` needs."""
    if isinstance(event, ReporterRegistered | ReporterKeyRevoked):
        yield event.reporter
    elif (actor := acting_reporter(event, election)) is not None:
        yield actor


def stored_form_matches(event: Event, signed: Signed) -> bool:
    """True when the stored event is the normalised form of what was signed.

    Without this an operator could keep a genuine signed submission and store different
    figures beside it: the projections read the normalised event, not the submission.
    """
    try:
        submitted = normalised(decoder.decode(bytes(signed.submitted)))
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return False
    if submitted.event_id is None:
        submitted = msgspec.structs.replace(submitted, event_id=event.event_id)
    return msgspec.structs.replace(submitted, signature=event.signature) == event


def sign_line(text: bytes, event: Event, private_key: Any, signer: str | None) -> bytes:
    """The line, signed by ``private_key`` as its acting reporter (or ``signer``).

    The output keeps the submitted members and their order and adds (or replaces) the
    ``signature`` member; what is signed is the canonical form, so spacing does not matter.
    ``signer`` is needed for an ``AppealDecided`` line: its acting reporter is the
    election's authority, which the line does not name.
    """
    if isinstance(event, OPERATORS_ACTS):
        raise SignatureRefused(f"{type(event).__name__} is the operator's: it is not signed")
    actor = acting_reporter(event, None)
    if actor is None and signer is None:
        raise SignatureRefused(
            f"{type(event).__name__} is signed by the election's authority, which the line does "
            "not name: give --as AUTHORITY"
        )
    if actor is not None and signer is not None and signer != actor:
        raise SignatureRefused(
            f"--as {signer!r}, but {_acting_field(event)} is {actor!r}: a reporter signs only "
            "its own events"
        )
    canonical = canonical_submitted(text)
    signature = private_key.sign(signed_message(canonical))
    submitted = json.loads(text)
    submitted.pop("signature", None)
    submitted["signature"] = {"by": signer or actor,
                              "ed25519": base64.b64encode(signature).decode()}
    return json.dumps(submitted, ensure_ascii=False, separators=(",", ":")).encode()


def raw_public_key_b64(public_key: Ed25519PublicKey) -> str:
    """The form ``ReporterRegistered`` carries: base64 of the raw 32-byte key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
