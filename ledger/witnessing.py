"""The ledger asks its witnesses: ``ledger serve --key LOG.key --witnesses POLICY``.

A clock thread signs the log's checkpoint at most once per interval, when the log has grown.
Each witness of the policy that has a submission URL gets a thread of its own, so a witness
that is down, slow or refusing holds up nobody: not the writers (nothing here runs in a
write transaction, and reading the tree never blocks one), not the other witnesses. A
witness thread sends the latest checkpoint from the size that witness last cosigned (C2SP
tlog-witness: ``old N``, the consistency proof from N, the signed note); when that size is
unknown, it learns it from the witness's ``409``. A failure is retried with exponential
backoff and kept for ``GET /v1/witnesses``.

A checkpoint is *published* once the valid cosignatures gathered for it satisfy the policy's
quorum; every published checkpoint is recorded in the ledger with its cosignatures, and
``GET /v1/checkpoint`` answers the latest one.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.trust.checkpoint import BadCheckpoint, Checkpoint
from ledger.trust.cosigned import add_cosignatures, check_cosigned
from ledger.trust.policy import Policy, Witness, describe_quorum
from ledger.trust.witness_client import conflict_size, submit

TIMEOUT_SECONDS = 10.0
FIRST_BACKOFF_SECONDS = 0.5
MOST_BACKOFF_SECONDS = 60.0
KEPT_CHECKPOINTS = 16   # the latest signed checkpoints whose cosignatures are still gathered


@dataclass
class WitnessStatus:
    """What the ledger knows of one witness, as ``GET /v1/witnesses`` shows it."""

    name: str
    url: str
    cosigned_size: int | None = None     # the size it last cosigned, once known
    last_error: str | None = None
    last_error_at: str | None = None
    last_cosigned_at: str | None = None
    failures: int = 0                    # in a row
    retry_at: float = 0.0                # monotonic clock

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "last_size_cosigned": self.cosigned_size,
                "last_cosigned_at": self.last_cosigned_at, "last_error": self.last_error,
                "last_error_at": self.last_error_at, "failures_in_a_row": self.failures}


@dataclass
class Gathering:
    """One signed checkpoint and the cosignatures gathered for it so far."""

    checkpoint: Checkpoint
    note: str


@dataclass
class Witnessing:
    """The background submission of ``sign()``'s checkpoints to the policy's witnesses."""

    policy: Policy
    log_key: Any                                   # the log's Ed25519 public key
    sign: Callable[[], Checkpoint]                 # the current checkpoint, signed by the log
    consistency: Callable[[int, int], list[bytes]]  # the proof between two sizes
    record: Callable[[Checkpoint, str], None]      # keep a published checkpoint with its note
    interval: float = 1.0
    statuses: dict[str, WitnessStatus] = field(default_factory=dict)
    published: Gathering | None = None
    latest: Gathering | None = None

    def __post_init__(self) -> None:
        self.statuses = {name: WitnessStatus(name, witness.url)
                         for name, witness in self.policy.witnesses.items() if witness.url}
        self._gathered: dict[int, Gathering] = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- running ---------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._clock, name="witnessing-clock", daemon=True)]
        self._threads += [threading.Thread(target=self._ask, args=(name,), daemon=True,
                                           name=f"witness-{name}") for name in self.statuses]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=TIMEOUT_SECONDS + 1)

    def _clock(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(Exception):  # a failing read of the log: the next tick
                self.refresh()
            self._stopping.wait(self.interval)

    def refresh(self) -> None:
        """Sign the current checkpoint if the log has grown, and wake the witnesses."""
        checkpoint = self.sign()
        if checkpoint.size == 0 or (self.latest is not None
                                    and checkpoint.size <= self.latest.checkpoint.size):
            return
        with self._changed:
            self.latest = self._gathered.setdefault(checkpoint.size,
                                                    Gathering(checkpoint, checkpoint.text()))
            for size in sorted(self._gathered)[:-KEPT_CHECKPOINTS]:
                del self._gathered[size]
            self._changed.notify_all()
        self._publish_if_quorum(self.latest)  # a policy with quorum none needs no witness

    def _ask(self, name: str) -> None:
        status = self.statuses[name]
        witness = self.policy.witnesses[name]
        while not self._stopping.is_set():
            with self._changed:
                target = self.latest
                if (target is None or status.cosigned_size == target.checkpoint.size
                        or time.monotonic() < status.retry_at):
                    wait = max(0.0, status.retry_at - time.monotonic()) or None
                    self._changed.wait(timeout=wait if wait else self.interval)
                    continue
            try:
                self._submit(status, witness, target)
            except Exception as error:  # a witness's thread never dies: it says why, and retries
                self._failed(status, f"unexpected {type(error).__name__}: {error}")

    # -- one submission ----------------------------------------------------------------------

    def _submit(self, status: WitnessStatus, witness: Witness, target: Gathering) -> None:
        size = target.checkpoint.size
        for _ in range(2):  # a 409 teaches the witness's size: then once more, from there
            old = status.cosigned_size or 0
            if old > size:
                self._failed(status, f"the witness has cosigned size {old}, beyond this log's "
                                     f"{size}: another history, or another server of this log")
                return
            proof = self.consistency(old, size) if 0 < old < size else []
            try:
                code, text = submit(status.url, old, proof, target.note, timeout=TIMEOUT_SECONDS)
            except (OSError, ValueError) as error:
                self._failed(status, f"unreachable: {getattr(error, 'reason', error)}")
                return
            if code == 409 and (learnt := _size(text)) is not None and learnt != old:
                status.cosigned_size = learnt
                continue
            if code != 200:
                self._failed(status, f"{code} {text.strip()[:200]}")
                return
            with self._changed:
                before = target.note
                try:
                    target.note = add_cosignatures(before, text, witness)
                except BadCheckpoint as error:
                    target.note = before
                    self._failed(status, str(error))
                    return
            if target.note == before:
                self._failed(status, "200 without a valid cosignature by its key")
                return
            status.cosigned_size, status.failures, status.last_error = size, 0, None
            status.last_cosigned_at = _now()
            self._publish_if_quorum(target)
            return

    def _failed(self, status: WitnessStatus, reason: str) -> None:
        status.failures += 1
        status.last_error, status.last_error_at = reason, _now()
        backoff = min(MOST_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (status.failures - 1))
        status.retry_at = time.monotonic() + backoff * random.uniform(0.8, 1.2)

    def _publish_if_quorum(self, gathered: Gathering) -> None:
        with self._changed:
            if self.published is not None and gathered.checkpoint.size <= self.published.checkpoint.size:
                return
            if not check_cosigned(gathered.note, self.log_key, self.policy).ok:
                return
            self.published = Gathering(gathered.checkpoint, gathered.note)
        self.record(gathered.checkpoint, gathered.note)

    # -- what the API shows --------------------------------------------------------------------

    def checkpoint(self) -> str | None:
        """The latest published checkpoint (a whole note with every cosignature), if any."""
        published = self.published
        return published.note if published else None

    def status(self) -> dict[str, Any]:
        return {
            "quorum": describe_quorum(self.policy),
            "latest_size": self.latest.checkpoint.size if self.latest else None,
            "published_size": self.published.checkpoint.size if self.published else None,
            "witnesses": [status.json() for status in self.statuses.values()],
        }


def _size(text: str) -> int | None:
    try:
        return conflict_size(text)
    except ValueError:
        return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
