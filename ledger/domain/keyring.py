"""Which keys speak for which reporter, at each position of the log.

docs/events.md, "Reporters and signed events": a reporter's valid keys are the ones
registered for it less the ones revoked, in log order. A reporter that ever held a key stays
*keyed*, even once every key is revoked: its reports need a signature, and none can be made
until a new key is registered. One public key speaks for one reporter in an election, and a
revoked key never returns.

The rules about keys themselves are here, one function each; the rules about the signatures
events carry are in ``ledger.trust.signatures``, which reads this keyring.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from ledger.domain.events import ReporterKeyRevoked, ReporterRegistered

if TYPE_CHECKING:  # loaded when a key is first handled: unsigned appends skip it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

KeyEvent = ReporterRegistered | ReporterKeyRevoked
KEY_EVENTS = ("ReporterRegistered", "ReporterKeyRevoked")


def fingerprint(raw_public_key: bytes) -> str:
    """A short name for a key, shown beside each signed event: 16 hex of its SHA-256."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


@dataclass(frozen=True)
class ReporterKey:
    raw: bytes
    fingerprint: str = field(compare=False)
    public_key: Ed25519PublicKey = field(compare=False)


@lru_cache(maxsize=4096)  # loading a key costs more than a verification; reporters are few
def reporter_key(public_key_b64: str) -> ReporterKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = base64.b64decode(public_key_b64, validate=True)
    return ReporterKey(raw, fingerprint(raw), Ed25519PublicKey.from_public_bytes(raw))


@dataclass
class ReporterKeys:
    """One reporter's keys in one election: those that speak for it now, those revoked."""

    valid: list[ReporterKey] = field(default_factory=list)
    revoked: list[ReporterKey] = field(default_factory=list)

    @property
    def keyed(self) -> bool:
        return bool(self.valid or self.revoked)


_NONE = ReporterKeys()


class Keyring:
    """The keys known so far, per (election, reporter), in log order.

    A planner fills it from the stored key events of the reporters a chunk names (their
    reporter streams), or of a whole election when a key event must be checked against every
    reporter's keys; it then applies the batch's own key events as it accepts them. ``verify``
    fills it as it reads the log. Either way a key counts only for what comes after it.
    """

    def __init__(self) -> None:
        self._reporters: dict[tuple[str, str], ReporterKeys] = {}
        # Elections whose every key event is loaded: raw key -> the reporter it was
        # registered for (revoked keys included: they never change hands).
        self._owners: dict[str, dict[bytes, str]] = {}

    def known(self, election: str, reporter: str) -> bool:
        return (election, reporter) in self._reporters or election in self._owners

    def complete(self, election: str) -> bool:
        """Whether every key event of ``election`` is loaded (the owners of its keys known)."""
        return election in self._owners

    def load(self, election: str, reporter: str, events: Iterable[KeyEvent]) -> None:
        """One reporter's key events, read from its stream."""
        self._reporters[(election, reporter)] = ReporterKeys()
        for event in events:
            self.apply(event)

    def load_election(self, election: str, events: Iterable[KeyEvent]) -> None:
        """Every key event of an election, in log order."""
        for key in [k for k in self._reporters if k[0] == election]:
            del self._reporters[key]
        self._owners[election] = {}
        for event in events:
            self.apply(event)

    def start(self, election: str) -> None:
        """An election with no key event yet, read from its beginning (``verify``)."""
        self._owners.setdefault(election, {})

    def apply(self, event: KeyEvent) -> None:
        keys = self._reporters.setdefault((event.election, event.reporter), ReporterKeys())
        key = reporter_key(event.public_key)
        if isinstance(event, ReporterRegistered):
            if key not in keys.valid and key not in keys.revoked:
                keys.valid.append(key)
            if (owners := self._owners.get(event.election)) is not None:
                owners.setdefault(key.raw, event.reporter)
        elif key in keys.valid:
            keys.valid.remove(key)
            keys.revoked.append(key)

    def _of(self, election: str, reporter: str) -> ReporterKeys:
        return self._reporters.get((election, reporter), _NONE)

    def keys(self, election: str, reporter: str) -> Sequence[ReporterKey]:
        """The keys that speak for the reporter now."""
        return self._of(election, reporter).valid

    def revoked(self, election: str, reporter: str) -> Sequence[ReporterKey]:
        return self._of(election, reporter).revoked

    def keyed(self, election: str, reporter: str) -> bool:
        """Whether the reporter ever held a key: its reports must then be signed."""
        return self._of(election, reporter).keyed

    def holds(self, event: KeyEvent) -> bool:
        """Whether the reporter holds this key now (a registration of it restates it)."""
        return reporter_key(event.public_key) in self.keys(event.election, event.reporter)

    def owner(self, election: str, public_key_b64: str) -> str | None:
        """The reporter a key was registered for; only for a ``complete`` election."""
        return self._owners[election].get(reporter_key(public_key_b64).raw)

    def forget(self) -> None:
        self._reporters.clear()
        self._owners.clear()

    def __bool__(self) -> bool:
        return bool(self._reporters)


# -- the rules of keys (field ``public_key``) ----------------------------------------------


def key_of_another_reporter(keyring: Keyring, registration: ReporterRegistered) -> str | None:
    """One key speaks for one reporter: a key registered for another is refused."""
    owner = keyring.owner(registration.election, registration.public_key)
    if owner is None or owner == registration.reporter:
        return None
    return (f"this key is already registered for reporter {owner!r} in "
            f"{registration.election!r}: one key speaks for one reporter")


def revoked_key_registered_again(keyring: Keyring, registration: ReporterRegistered) -> str | None:
    """A revoked key never returns: whoever stole it would speak again."""
    key = reporter_key(registration.public_key)
    if key not in keyring.revoked(registration.election, registration.reporter):
        return None
    return (f"this key of {registration.reporter!r} was revoked; a revoked key is never "
            "registered again (make a new one: ledger keygen)")


def registration_refusal(keyring: Keyring, registration: ReporterRegistered) -> str | None:
    """Why this key may not be registered for this reporter, if it may not."""
    return (revoked_key_registered_again(keyring, registration)
            or key_of_another_reporter(keyring, registration))


def revocation_refusal(keyring: Keyring, revocation: ReporterKeyRevoked) -> str | None:
    """Only a key the reporter holds can be revoked."""
    if keyring.holds(revocation):
        return None
    key = reporter_key(revocation.public_key)
    if key in keyring.revoked(revocation.election, revocation.reporter):
        return f"this key of {revocation.reporter!r} is already revoked"
    return (f"reporter {revocation.reporter!r} does not hold this key in "
            f"{revocation.election!r}: only a registered key can be revoked")


def key_event_refusal(keyring: Keyring, event: KeyEvent) -> str | None:
    if isinstance(event, ReporterRegistered):
        return registration_refusal(keyring, event)
    return revocation_refusal(keyring, event)


def adds_a_key(keyring: Keyring, registration: ReporterRegistered) -> bool:
    """A registration that gives a reporter holding a valid key one more: a rotation, which
    only the reporter itself may make (signed by one of its valid keys)."""
    return bool(keyring.keys(registration.election, registration.reporter)) and not keyring.holds(
        registration)
