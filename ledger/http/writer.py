"""Group commit: one writer thread turns many concurrent requests into one transaction.

Request handlers ``submit`` their decoded lines and await a future. The writer takes every
submission waiting (up to a cap), plans each on its own inside one write transaction
(``Ledger.append_each``: a refused request is dropped alone) and commits once; only then
are the futures resolved, so a ``200`` always means durable. Positions follow commit order.
The queue is bounded: when it is full the server says 503 instead of queueing without end.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger.input.reader import Line
from ledger.service import LedgerService
from ledger.store.application import Appended, BatchRejected

log = logging.getLogger("ledger.serve")

DEFAULT_CAPACITY = 1_024         # requests waiting; beyond this, 503
DEFAULT_GROUP_LINES = 4_000      # lines in one transaction: keeps a commit short
# Writes first: the writer catches the read models up only once no request has come for
# CATCH_UP_IDLE, or at most every CATCH_UP_EVERY under a steady stream of writes (so that
# the backlog a first read would meet stays short). One catch-up of many commits costs far
# less than one per commit, and a read that finds the models behind the log catches them up
# itself (ledger/http/answers.py: one at a time), so no answer is ever stale.
CATCH_UP_IDLE = 0.05  # seconds
CATCH_UP_EVERY = 1.0  # seconds


class Saturated(Exception):
    """The writer's queue is full: the request was not taken; retry later."""


class Busy(Exception):
    """The ledger was locked by another writer (another process) for too long."""


@dataclass
class Submission:
    lines: Sequence[Line]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()

    def settle(self, result: Appended | BaseException) -> None:
        self.loop.call_soon_threadsafe(_settle, self.future, result)


def _settle(future: asyncio.Future[Any], result: Appended | BaseException) -> None:
    if future.done():  # the client went away; its events are stored all the same
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


_STOP = object()


class GroupCommitWriter:
    """The one writer of this process. ``on_commit(first, last)`` is called after each commit
    that stored something (the feed); the read models are caught up after it."""

    def __init__(self, service: LedgerService, *, on_commit: Callable[[int, int], None],
                 capacity: int = DEFAULT_CAPACITY, group_lines: int = DEFAULT_GROUP_LINES) -> None:
        self.service = service
        self.on_commit = on_commit
        self.group_lines = group_lines
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self.commits = 0
        self.stopping = False

    def start(self) -> None:
        self._thread.start()

    def submit(self, lines: Sequence[Line]) -> asyncio.Future[Any]:
        """Queue one request; its future resolves to ``Appended`` or raises ``BatchRejected``,
        ``Busy`` or the unexpected error. ``Saturated`` if the queue is full."""
        if self.stopping:  # after the last group: nobody would ever write it
            raise Saturated
        submission = Submission(lines, asyncio.get_running_loop())
        try:
            self._queue.put_nowait(submission)
        except queue.Full:
            raise Saturated from None
        return submission.future

    def stop(self, timeout: float = 30.0) -> bool:
        """Write everything already queued, then end the thread; False if it is still
        writing after ``timeout`` (the event store must then stay open)."""
        self.stopping = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        behind = False  # committed events the read models do not hold yet
        caught_up_at = time.monotonic()
        while not stopping:
            group: list[Submission] = []
            lines = 0
            try:
                item = self._queue.get(timeout=CATCH_UP_IDLE if behind else None)
            except queue.Empty:
                self._catch_up()
                behind, caught_up_at = False, time.monotonic()
                continue
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    group.append(item)
                    lines += len(item.lines)
                if stopping or lines >= self.group_lines:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if group and self._commit(group):
                behind = True
            if behind and (stopping or time.monotonic() - caught_up_at >= CATCH_UP_EVERY):
                self._catch_up()
                behind, caught_up_at = False, time.monotonic()

    def _catch_up(self) -> None:
        """Bring the read models up to the log."""
        try:
            self.service.refresh_read_models()
        except Exception as error:  # the log is committed; a read catches the models up
            log.warning("read models not caught up after a commit: %s", error)

    def _commit(self, group: list[Submission]) -> bool:
        """Write one group; True if it stored anything."""
        results = self._append_each(group)
        for submission, result in zip(group, results, strict=True):
            submission.settle(result)
        stored = [r for r in results if isinstance(r, Appended) and r.first_position is not None]
        if not stored:
            return False
        self.commits += 1
        self.on_commit(min(r.first_position for r in stored),  # type: ignore[type-var]
                       max(r.last_position for r in stored))  # type: ignore[type-var]
        return True

    def _append_each(self, group: list[Submission]) -> list[Appended | BaseException]:
        from ledger.store.session import LedgerBusy

        ledger = self.service.ledger()
        try:
            return list(ledger.append_each([s.lines for s in group]))
        except Exception as error:
            if len(group) == 1:
                return [Busy(str(error)) if isinstance(error, LedgerBusy) else error]
        # The shared transaction failed: write each request alone, so that whatever broke
        # it (a lock held elsewhere, an unforeseen bug with one request) costs only its own.
        return [self._append_each([submission])[0] for submission in group]


__all__ = ["BatchRejected", "Busy", "GroupCommitWriter", "Saturated"]
