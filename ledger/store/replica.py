"""A verified replica of a served ledger: what ``ledger mirror`` does, checkpoint by checkpoint.

The source is trusted for nothing. Its checkpoint counts only as ``verify`` would count it
(``accept``: the log's signature, a witness quorum); every served line must be exactly the
rendering of the entry it carries (``trust.logrow``); every event is planned again by the
``Planner`` that ``append`` uses, against the replica's own log, at the recorded_at the source
gave it, and must come out byte for byte as served (schemas, signatures by keys registered
before it, the rules of validity, its stream and version); the tree is extended in the same
transaction and the transaction commits only if its root is the checkpoint's. One checkpoint
is all or nothing.

A checkpoint that cannot extend what the replica holds is a split view: the source's key
signed two histories. The replica then stores nothing and returns evidence that proves it
offline (``trust.evidence``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import groupby
from typing import Any, Protocol

import msgspec

from ledger.errors import BadInput, Failure
from ledger.input.reader import Line, Problem, parse_line
from ledger.store.application import Ledger
from ledger.store.batch import BatchState, Planner
from ledger.store.codec import Payload
from ledger.store.session import Accepted, Held, IntegrityIndex, WriteSession, utc_now
from ledger.trust import evidence, merkle
from ledger.trust.checkpoint import Checkpoint
from ledger.trust.logrow import BadRow, LogRow, parse

PAGE = 10_000


class Source(Protocol):
    """A served ledger (``ledger.remote.client.Remote`` over HTTP)."""

    url: str

    def checkpoint(self) -> str: ...
    def pages(self, after: int, count: int) -> Iterator[list[bytes]]: ...
    def consistency(self, old: int, new: int) -> list[bytes] | None: ...


class NotAReplica(BadInput):
    """The local ledger holds events of its own, or a replica of another log."""


class MirrorFailed(Failure):
    """What the source served does not check; nothing was stored. Names the first failing
    position where there is one."""


class SplitView(Failure):
    """The source's signed checkpoint cannot extend the replica; nothing was stored."""

    def __init__(self, message: str, size: int, proof: dict[str, Any]) -> None:
        super().__init__(message)
        self.size = size  # of the source's checkpoint
        self.evidence = proof


@dataclass(frozen=True)
class Mirrored:
    """One checkpoint mirrored (or found already held)."""

    size: int
    root: bytes
    added: int
    head: int  # the replica's last position
    newest_recorded_at: datetime | None = None  # of the last event added
    committed_at: datetime | None = None

    @property
    def lag(self) -> float | None:
        """Seconds from the source recording the newest event to the replica committing it."""
        if self.newest_recorded_at is None or self.committed_at is None:
            return None
        return (self.committed_at - self.newest_recorded_at).total_seconds()


Accept = Callable[[str], Checkpoint]


def mirror(ledger: Ledger, source: Source, accept: Accept,
           tick: Callable[[int, int], None] | None = None) -> Mirrored:
    """Mirror the source's current checkpoint into ``ledger``. ``tick(done, total)`` is called
    as entries are checked (a progress bar)."""
    note = source.checkpoint()
    checkpoint = accept(note)
    index = ledger.recorder.integrity_index()
    held, size = index.held(), index.size()
    if held is None and size:
        raise NotAReplica(f"the local ledger holds {size} event(s) of its own: it is not a replica "
                          f"of {checkpoint.origin}; mirror into an empty ledger (another --db)")
    if held is not None and held.origin != checkpoint.origin:
        raise NotAReplica(f"the local ledger is a replica of {held.origin} (from {held.source}), "
                          f"not of {checkpoint.origin}")
    if checkpoint.size <= size:
        if merkle.root_hash(checkpoint.size, index.read_node) == checkpoint.root:
            return Mirrored(size, merkle.root_hash(size, index.read_node), 0, ledger.head())
        if held is None:
            raise MirrorFailed("the checkpoint signs an empty log with another root than the "
                               "empty tree's")
        raise _split_view(ledger, source, held, checkpoint, note)
    verified = 0  # how many leaves of what the replica holds the source has proven it extends
    if held is not None:
        proof = source.consistency(size, checkpoint.size)
        if proof is not None:
            try:
                merkle.verify_consistency(size, checkpoint.size, held.root, checkpoint.root, proof)
            except merkle.ProofError:
                raise _split_view(ledger, source, held, checkpoint, note) from None
            verified = size
    try:
        return _extend(ledger, source, checkpoint, note, size, tick)
    except _RootDiffers as differs:
        raise _diagnose(ledger, source, held, checkpoint, note, differs, verified) from None


# -- extending the replica ---------------------------------------------------------------------


class _RootDiffers(Exception):
    """Everything checked, but the tree's root is not the checkpoint's (rolled back)."""

    def __init__(self, leaves: list[bytes], positions: list[int]) -> None:
        self.leaves, self.positions = leaves, positions


def _extend(ledger: Ledger, source: Source, checkpoint: Checkpoint, note: str, size: int,
            tick: Callable[[int, int], None] | None) -> Mirrored:
    wanted = checkpoint.size - size
    leaves: list[bytes] = []
    positions: list[int] = []
    newest: datetime | None = None
    with ledger.recorder.writing() as session:
        if session.tree_size() != size:
            raise MirrorFailed("the replica changed while it was being mirrored (another "
                               "`ledger mirror` on it?); run it again")
        head = ledger.head()
        copier = _Copier(session, head, size)
        for page in source.pages(head, wanted):
            rows = [_row(line) for line in page]
            leaves.extend(copier.copy(rows))
            positions.extend(row.position for row in rows)
            if tick is not None:
                tick(len(leaves), wanted)
        newest = copier.last_at
        root = merkle.root_hash(checkpoint.size, session.read_node)
        if root != checkpoint.root:
            raise _RootDiffers(leaves, positions)
        session.record_held(Held(checkpoint.size, checkpoint.root, checkpoint.origin, note,
                                 source.url, utc_now().isoformat()))
    return Mirrored(checkpoint.size, checkpoint.root, wanted, positions[-1], newest, utc_now())


def _row(line: bytes) -> LogRow:
    try:
        return parse(line)
    except BadRow as error:
        raise MirrorFailed(str(error)) from None


class _Copier:
    """Writes served rows into the replica, each planned as ``append`` would plan it."""

    def __init__(self, session: WriteSession, head: int, size: int) -> None:
        self.session = session
        self.state = BatchState(session)
        self.last_position = head
        self.last_at = session.last_recorded_at()
        self.size = size  # of the tree

    def copy(self, rows: Sequence[LogRow]) -> list[bytes]:
        """Check and insert one page; return the leaf hashes added."""
        decoded = [(row, self._payload(row)) for row in rows]
        leaves: list[bytes] = []
        for recorded_at, group in groupby(decoded, key=lambda pair: pair[1].recorded_at):
            leaves.extend(self._copy_group(recorded_at, list(group)))
        self.state.forget(keep_definitions=True)
        return leaves

    def _payload(self, row: LogRow) -> Payload:
        where = f"position {row.position}"
        if row.position <= self.last_position:
            raise MirrorFailed(f"{where}: positions must rise (the one before was "
                               f"{self.last_position})")
        self.last_position = row.position
        # The payload's members, decoded from their copies (held to its bytes by ``parse``).
        payload = Payload(row.recorded_at, row.event, row.signed, row.offset)
        if self.last_at is not None and payload.recorded_at < self.last_at:
            raise MirrorFailed(f"{where}: recorded_at {payload.recorded_at.isoformat()} is before "
                               f"the entry before it ({self.last_at.isoformat()})")
        self.last_at = payload.recorded_at
        return payload

    def _copy_group(self, recorded_at: datetime, group: list[tuple[LogRow, Payload]]
                    ) -> list[bytes]:
        """Rows the source recorded at one instant: one of its transactions (or several)."""
        planner = Planner(self.state, recorded_at, keep_rejected=False)
        accepted = planner.add([as_submitted(row.position, payload) for row, payload in group])
        if planner.outcome.problems:
            problem = planner.outcome.problems[0]
            what = f"{problem.field}: {problem.reason}" if problem.field else problem.reason
            raise MirrorFailed(f"position {problem.line}: append would refuse it: {what}")
        taken = iter(accepted)
        pending = next(taken, None)
        for row, payload in group:
            if pending is None or pending.event_id != payload.event.event_id:
                raise MirrorFailed(f"position {row.position}: append would not record it (it "
                                   "restates what the log already holds)")
            _same_as_served(row, pending)
            pending = next(taken, None)
        # Each stored entry is byte for byte the served one: its leaf is the row's.
        positions = self.session.insert_events(accepted, recorded_at, self.size,
                                               [row.position for row, _ in group])
        leaves = self.session.extend_tree(self.size, positions, accepted)
        self.size += len(leaves)
        return leaves


def as_submitted(position: int, payload: Payload) -> Line:
    """The line a reporter or the operator sent to have ``payload`` recorded, as ``append``
    reads it: a signed event as it was signed (its canonical form with its signature, read by
    the reader, since the signature covers those bytes); an unsigned one as the event it
    decoded to (the reader's schema is the payload's), with ``occurred_at`` at the offset it
    was written with."""
    event = payload.event
    if payload.signed is None:
        if payload.offset:
            try:
                written = timezone(timedelta(seconds=payload.offset))
                event = msgspec.structs.replace(event,
                                                occurred_at=event.occurred_at.astimezone(written))
            except (ValueError, OverflowError):
                return Line(position, b"", None, Problem(
                    position, "offset", f"{payload.offset} s is not an offset occurred_at can "
                    "have been written with"))
        return Line(position, b"", event, None)
    submitted = bytes(payload.signed.submitted).lstrip()
    if not event.signature or not submitted.startswith(b"{"):
        text = submitted
    else:
        signature = msgspec.json.encode(event.signature)
        rest = submitted[1:].lstrip()
        text = b'{"signature":' + signature + (b"," if rest != b"}" else b"") + rest
    return parse_line(position, text)


def _same_as_served(row: LogRow, accepted: Accepted) -> None:
    stored = accepted.stored
    where = f"position {row.position}: append would store it"
    if stored.originator_id.hex != row.stream:
        raise MirrorFailed(f"{where} in stream {stored.originator_id.hex}, not {row.stream}")
    if stored.originator_version != row.version:
        raise MirrorFailed(f"{where} as version {stored.originator_version} of its stream, not "
                           f"{row.version}")
    if stored.topic != row.topic:
        raise MirrorFailed(f"{where} as {stored.topic!r}, not {row.topic!r}")
    if bytes(stored.state) != row.state:
        raise MirrorFailed(f"{where} otherwise than served (the stored event differs from what "
                           "its line, as submitted, makes of it)")


# -- when the root differs -----------------------------------------------------------------------


def _diagnose(ledger: Ledger, source: Source, held: Held | None, checkpoint: Checkpoint,
              note: str, differs: _RootDiffers, verified: int) -> Failure:
    """Name the first served entry that departs from the signed tree; a split view if the
    departure is in what the replica already holds."""
    index = ledger.recorder.integrity_index()
    size = index.size()
    leaves = _stored_leaves(index, size) + differs.leaves
    first_bad = _first_departure(source, leaves, checkpoint, verified)
    if first_bad is None:
        return MirrorFailed(f"the log served does not hash to the root of the checkpoint of "
                            f"{checkpoint.size} entries; nothing stored")
    if first_bad < size and held is not None:
        return _split_view(ledger, source, held, checkpoint, note)
    position = differs.positions[first_bad - size]
    return MirrorFailed(f"position {position}: the entry served is not the one the checkpoint of "
                        f"{checkpoint.size} entries signs (altered on the way, or by the source); "
                        "nothing stored")


def _stored_leaves(index: IntegrityIndex, size: int) -> list[bytes]:
    leaves: list[bytes] = []
    while len(leaves) < size:
        page = index.level(0, len(leaves) - 1, PAGE)
        if not page:
            break
        leaves.extend(value for _, value in page)
    return leaves[:size]


def _first_departure(source: Source, leaves: list[bytes], checkpoint: Checkpoint,
                     verified: int) -> int | None:
    """The first leaf index at which ``leaves`` stop being a prefix of the signed tree, found
    by bisection with the source's consistency proofs (a proof can only confirm a prefix
    that is one); None if the source serves no proofs."""
    tree = merkle.MemoryTree(leaves, hashed=True)
    good, bad = verified, len(leaves)  # the prefix of ``good`` leaves is known to be right
    while bad - good > 1:
        middle = (good + bad) // 2
        proof = source.consistency(middle, checkpoint.size)
        if proof is None:
            return None
        try:
            merkle.verify_consistency(middle, checkpoint.size, tree.root(middle), checkpoint.root,
                                      proof)
            good = middle
        except merkle.ProofError:
            bad = middle
    return bad - 1


# -- split view ------------------------------------------------------------------------------------


def _split_view(ledger: Ledger, source: Source, held: Held, checkpoint: Checkpoint,
                note: str) -> Failure:
    """Evidence that the key signed ``checkpoint`` and ``held``, which are not one history; or,
    if that cannot be shown, the failure of what the source served."""
    index = ledger.recorder.integrity_index()
    size = held.size
    consistency = None
    if checkpoint.size < size:
        consistency = evidence.Consistency(
            checkpoint.size, merkle.root_hash(checkpoint.size, index.read_node),
            merkle.consistency_proof(checkpoint.size, size, index.read_node))
    theirs = _their_log(source, checkpoint)
    difference = _first_difference(ledger, theirs, min(size, checkpoint.size)) if theirs else None
    if difference is None and checkpoint.size > size:
        # Their tree at our size cannot be shown to differ: not a split view, a bad log.
        return MirrorFailed(f"the checkpoint of {checkpoint.size} entries does not extend the "
                            f"replica's of {size} by the proof served, and the log served does "
                            "not show why (altered on the way?); nothing stored")
    entries = leaf_index = None
    if difference is not None:
        leaf_index, ours = difference
        their_row = theirs[leaf_index]  # type: ignore[index]
        their_tree = merkle.MemoryTree([row.leaf() for row in theirs], hashed=True)  # type: ignore[union-attr]
        entries = {
            "replica": evidence.Entry(ours.position, ours.entry(),
                                      merkle.inclusion_proof(leaf_index, size, index.read_node)),
            "source": evidence.Entry(their_row.position, their_row.entry(),
                                     their_tree.inclusion_proof(leaf_index, checkpoint.size)),
        }
    proof = evidence.build(checkpoint.origin, held.note, note, leaf_index=leaf_index,
                           entries=entries, consistency=consistency)
    where = (f"; first difference at leaf {leaf_index} (position {entries['replica'].position} "
             f"here, {entries['source'].position} there)" if entries else "")
    return SplitView(
        f"split view: {source.url} serves a checkpoint of {checkpoint.size} entries that "
        f"contradicts the checkpoint of {size} entries, signed by the same key, that this replica "
        f"holds{where}; nothing stored", checkpoint.size, proof)


def _their_log(source: Source, checkpoint: Checkpoint) -> list[LogRow] | None:
    """The source's whole log up to its checkpoint, if it serves one that hashes to it."""
    try:
        rows = [parse(line) for page in source.pages(0, checkpoint.size) for line in page]
    except (BadRow, Failure):
        return None
    tree = merkle.MemoryTree([row.leaf() for row in rows], hashed=True)
    return rows if tree.root() == checkpoint.root else None


def _first_difference(ledger: Ledger, theirs: list[LogRow], common: int
                      ) -> tuple[int, _Own] | None:
    """The first leaf index below ``common`` where the two logs differ, with our entry."""
    after, index = 0, 0
    while index < common:
        page = ledger.recorder.select_entries(after, PAGE)
        if not page:
            return None
        for row in page:
            if index >= common:
                return None
            ours = _Own(*row)
            if merkle.leaf_hash(ours.entry()) != theirs[index].leaf():
                return index, ours
            index += 1
        after = page[-1][0]
    return None


@dataclass(frozen=True)
class _Own:
    """One entry of the replica's own log, its bytes exactly as stored."""

    position: int
    originator_id: str
    originator_version: int
    topic: str
    state: bytes

    def entry(self) -> bytes:
        return merkle.entry_bytes(self.position, self)


# -- following ------------------------------------------------------------------------------------


def follow(ledger: Ledger, source: Any, accept: Accept, report: Callable[[Mirrored], None], *,
           transient: type[Exception], stop: Callable[[], bool] = lambda: False,
           tick: Callable[[int, int], None] | None = None,
           unreachable: Callable[[str, float], None] | None = None,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Mirror each checkpoint the source announces on its feed, until ``stop()``. After a
    ``transient`` error (the network, a source restarting), connect again with backoff
    (0.5 s doubling to 10 s). A split view or a failed check ends it (raised)."""
    backoff = 0.5
    while not stop():
        notices = _Notices(source.notices())
        try:
            wanted = 0
            while not stop():
                latest = notices.next(timeout=0.5)
                if latest is None:
                    continue
                wanted = max(wanted, latest)
                while not stop():
                    done = mirror(ledger, source, accept, tick)
                    backoff = 0.5
                    if done.added:
                        report(done)
                    if done.head >= wanted or notices.pending():
                        break
                    sleep(0.2)  # the source's checkpoint is behind its feed: ask again shortly
        except transient as error:
            if unreachable is not None:
                unreachable(str(error), backoff)
            sleep(backoff)
            backoff = min(backoff * 2, 10.0)
        finally:
            notices.close()


class _Notices:
    """The feed read on a thread of its own, so that a mirror in progress never makes the
    source's feed wait, and notices that arrive meanwhile coalesce."""

    def __init__(self, feed: Any) -> None:
        self._latest: int | None = None
        self._error: BaseException | None = None
        self._arrived = threading.Condition()
        self._feed = feed
        self._thread = threading.Thread(target=self._read, name="mirror-feed", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for last in self._feed:
                with self._arrived:
                    self._latest = max(self._latest or 0, last)
                    self._arrived.notify()
        except BaseException as error:
            with self._arrived:
                self._error = error
                self._arrived.notify()

    def pending(self) -> bool:
        with self._arrived:
            return self._latest is not None or self._error is not None

    def next(self, timeout: float) -> int | None:
        """The latest position announced since the last call (0 on connecting); None if
        nothing came within ``timeout``. Raises what ended the feed."""
        with self._arrived:
            if self._latest is None and self._error is None:
                self._arrived.wait(timeout)
            if self._latest is not None:
                latest, self._latest = self._latest, None
                return latest
            if self._error is not None:
                raise self._error
            return None

    def close(self) -> None:
        self._feed.close()
