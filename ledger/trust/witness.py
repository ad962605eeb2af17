"""A witness (C2SP tlog-witness ``add-checkpoint``), apart from HTTP.

A witness cosigns a log's checkpoint only if it is consistent with the last one it cosigned for
that origin, so that a log cannot show two histories to parties who check cosignatures. A
request is::

    old N
    <consistency proof from size N, one base64 hash a line>

    <the signed checkpoint>

It is checked in this order, and the first failure answers: ``400`` unparseable; ``404`` origin
not witnessed; ``403`` no valid signature by that log's key; ``400`` N above the checkpoint's
size; ``409`` N is not the size last cosigned for the origin (0 if never; the body is that size
and a newline, ``text/x.tlog.size``); ``422`` the proof does not verify, a proof comes with
``old 0``, or the same size has another root; else ``200`` with the cosignature line.

The check of N and the update are one SQLite transaction (``BEGIN IMMEDIATE``, a compare and
swap on the stored size), committed with ``synchronous=FULL`` before the ``200`` is returned: of
concurrent requests from one size exactly one is cosigned, and a witness killed and restarted
still refuses what it refused before.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import BadInput
from ledger.trust import cosignature, note
from ledger.trust.checkpoint import MAX_SIZE, BadCheckpoint, Checkpoint, parse_body
from ledger.trust.merkle import EMPTY_ROOT, ProofError, verify_consistency
from ledger.trust.note import BadNote, Verdict
from ledger.trust.witness_key import Cosigner

MAX_PROOF_LINES = 63  # tlog-witness: a client sends no more (a proof of a 2^63-leaf tree)
SIZE_TYPE = "text/x.tlog.size"
SIGNATURES_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Answer:
    """What the witness answers: a status, and either its body or why it refused."""

    status: int
    body: str = ""
    content_type: str = SIGNATURES_TYPE
    reason: str = ""          # a refusal's reason, one line
    field: str | None = None  # which part of the request: old, proof, checkpoint, origin, signature
    line: int = 0             # its line in the request body, when it has one


class Unparseable(BadInput):
    def __init__(self, reason: str, field: str, line: int = 0) -> None:
        super().__init__(reason)
        self.field, self.line = field, line


@dataclass(frozen=True)
class AddCheckpoint:
    old: int
    proof: tuple[bytes, ...]
    note: note.Note
    checkpoint: Checkpoint


def parse_request(body: bytes) -> AddCheckpoint:
    """An ``add-checkpoint`` body, strictly; ``Unparseable`` naming the part and line."""
    head, blank, signed = body.partition(b"\n\n")
    if not blank:
        raise Unparseable("no empty line before the checkpoint", "checkpoint")
    first, *proof_lines = head.split(b"\n")
    digits = first.removeprefix(b"old ")
    if digits == first or not digits.isdigit() or (digits.startswith(b"0") and digits != b"0"):
        raise Unparseable("the first line must be 'old N' (N in decimal, no leading zeros)", "old", 1)
    if len(digits) > len(str(MAX_SIZE)) or int(digits) > MAX_SIZE:
        raise Unparseable("the old size is above 2^63 - 1", "old", 1)
    if len(proof_lines) > MAX_PROOF_LINES:
        raise Unparseable(f"{len(proof_lines)} proof lines; a proof has at most {MAX_PROOF_LINES}",
                          "proof", 2 + MAX_PROOF_LINES)
    proof = []
    for number, line in enumerate(proof_lines, start=2):
        try:
            value = note.decode_canonical_base64(line.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            value = b""
        if len(value) != 32:
            raise Unparseable("a proof line is one 32-byte hash in base64", "proof", number)
        proof.append(value)
    try:
        opened = note.parse(signed)
        checkpoint = parse_body(opened.text)
    except (BadNote, BadCheckpoint) as error:
        raise Unparseable(f"the checkpoint: {error}", "checkpoint", len(proof_lines) + 3) from None
    return AddCheckpoint(int(digits), tuple(proof), opened, checkpoint)


# -- state -----------------------------------------------------------------------------------


SCHEMA = """
CREATE TABLE IF NOT EXISTS witnessed (
    origin      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL CHECK (size >= 0),
    root        BLOB NOT NULL CHECK (length(root) = 32),
    checkpoint  TEXT NOT NULL,     -- the signed note last cosigned, as the log sent it
    cosigned_at INTEGER NOT NULL   -- the cosignature's timestamp
) STRICT
"""


class WitnessState:
    """The last checkpoint cosigned per origin, in a SQLite file of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a commit reaches the disk before 200
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master "
                                                          "WHERE type = 'table'")}
            if tables and "witnessed" not in tables:
                raise BadInput(f"{path} holds other tables: not a witness state file")
            self._db.execute(SCHEMA)
        except sqlite3.OperationalError as error:  # permissions, a full disk, a locked file
            raise BadInput(f"{path}: cannot open the witness state ({error})") from None
        except sqlite3.DatabaseError as error:
            raise BadInput(f"{path}: not a witness state file ({error})") from None
        # One connection, one transaction at a time in this process; BEGIN IMMEDIATE orders it
        # against any other process on the same file.
        self._lock = threading.Lock()

    def cosigned(self, origin: str) -> tuple[int, bytes | None]:
        """The size and root last cosigned for ``origin``; (0, None) if never."""
        row = self._db.execute("SELECT size, root FROM witnessed WHERE origin = ?", (origin,)).fetchone()
        return (row[0], bytes(row[1])) if row else (0, None)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class Conflict(Exception):
    """Another request moved the stored size between the read and the swap."""


def _swap(db: sqlite3.Connection, old: int, request: AddCheckpoint, cosigned_at: int) -> None:
    c = request.checkpoint
    changed = db.execute(
        "INSERT INTO witnessed (origin, size, root, checkpoint, cosigned_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
        "checkpoint = excluded.checkpoint, cosigned_at = excluded.cosigned_at WHERE size = ?",
        (c.origin, c.size, c.root, request.note.signed(), cosigned_at, old)).rowcount
    if changed != 1:
        raise Conflict


# -- the witness -----------------------------------------------------------------------------


class Witness:
    """Answers ``add-checkpoint`` requests for the logs in ``logs`` (origin -> the log's key)."""

    def __init__(self, cosigner: Cosigner, logs: Mapping[str, note.Verifier], state: WitnessState,
                 clock: Callable[[], float] = time.time) -> None:
        self.cosigner, self.logs, self.state, self.clock = cosigner, dict(logs), state, clock

    def add_checkpoint(self, body: bytes) -> Answer:
        try:
            request = parse_request(body)
        except Unparseable as error:
            return Answer(400, reason=str(error), field=error.field, line=error.line)
        except Exception as error:  # a body the parser did not foresee is still the body's fault
            return Answer(400, reason=f"the request cannot be read ({type(error).__name__})")
        c = request.checkpoint
        verifier = self.logs.get(c.origin)
        if verifier is None:
            return Answer(404, reason=f"this witness does not witness the log {c.origin!r}",
                          field="origin")
        found = note.verdict(request.note, verifier)
        if found is not Verdict.VERIFIED:
            return Answer(403, reason=f"the checkpoint: {found.value} (the key of {c.origin!r})",
                          field="signature")
        if request.old > c.size:
            return Answer(400, reason=f"old size {request.old} is above the checkpoint's size {c.size}",
                          field="old", line=1)
        try:
            with self.state.transaction() as db:
                return self._decide(db, request)
        except Conflict:  # cannot happen while the transaction orders requests; kept as a guard
            return self._conflict(self.state.cosigned(c.origin)[0])

    def _decide(self, db: sqlite3.Connection, request: AddCheckpoint) -> Answer:
        c = request.checkpoint
        row = db.execute("SELECT size, root FROM witnessed WHERE origin = ?", (c.origin,)).fetchone()
        known_size, known_root = (row[0], bytes(row[1])) if row else (0, None)
        if request.old != known_size:
            return self._conflict(known_size)
        problem = _inconsistency(request, known_root)
        if problem:
            return Answer(422, reason=problem, field="proof")
        now = int(self.clock())
        line = cosignature.sign(request.note.text, self.cosigner.private_key, self.cosigner.name, now)
        _swap(db, known_size, request, now)
        return Answer(200, body=line.line())

    @staticmethod
    def _conflict(size: int) -> Answer:
        return Answer(409, body=f"{size}\n", content_type=SIZE_TYPE,
                      reason=f"the last checkpoint cosigned for this log has size {size}")


def _inconsistency(request: AddCheckpoint, known_root: bytes | None) -> str | None:
    """Why the checkpoint does not extend the one cosigned at ``request.old``; None if it does."""
    c = request.checkpoint
    if request.old == 0:
        if request.proof:
            return "a proof from old size 0: it must be empty"
        if c.size == 0 and c.root != EMPTY_ROOT:
            return "a tree of 0 leaves has one root, SHA-256 of nothing; this is another"
        return None
    assert known_root is not None
    try:
        verify_consistency(request.old, c.size, known_root, c.root, request.proof)
    except ProofError as error:
        return f"the consistency proof does not verify: {error}"
    return None
