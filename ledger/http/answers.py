"""The read endpoints' answers, kept in memory per question and log head; writes first.

Readers outnumber reporters by orders of magnitude, and between two commits they all ask the
same few questions. An answer is computed once per question (path and query string) and log
head, from one snapshot of the read models; asked again at the same head it costs one read
of the head and a dict lookup, answered by ``FromMemory`` before routing. Each answer says
which head it reflects (``ETag``), a client that already holds it gets ``304``, and
``Cache-Control`` lets a reverse proxy or CDN in front answer for us (docs/operations.md):

- an answer about the present may change with the next commit: ``public, max-age=1``;
- an answer that can never change (``known_at`` strictly before the last ``recorded_at`` the
  ledger holds: ``projections.moment.settled``): ``public, max-age=31536000, immutable``,
  and it is kept whatever the head;
- a question with a bound named ``now`` names another moment a second later: it is answered
  afresh each time, with no ETag.

Writes come first: one answer is computed at a time (``COMPUTATIONS``), all who ask one
question at one head wait for one computation of it, and one that waited its turn while
another computed it at a later head takes that answer; so a crowd of readers arriving after
a commit cannot take the interpreter from the group-commit writer. (Holding every read while
a write request was being handled was tried too: it cost the readers half their rate and did
not clearly help the writers; docs/performance.md.)
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ledger.service import LedgerService, Moment
from ledger.store.head import SQLiteHead

LATEST = "public, max-age=1"
SETTLED = "public, max-age=31536000, immutable"
COMPUTATIONS = 1           # answers computed at once; the rest wait their turn
MAX_ANSWERS = 2_048        # questions kept (least recently asked dropped first)
MAX_BYTES = 128 << 20      # of answers kept in all; a larger single answer is not kept
READS = "/v1/elections"    # the paths answered from memory start so

Question = tuple[str, bytes]  # the path and the query string, as sent
Ask = Callable[[LedgerService], Any]


@dataclass(frozen=True)
class Kept:
    """One answer as computed: the log position it reflects, and its JSON."""

    position: int
    body: bytes
    settled: bool

    @property
    def etag(self) -> str:
        return f'"{self.position}"'

    @property
    def cache_control(self) -> str:
        return SETTLED if self.settled else LATEST

    def fresh_at(self, head: int) -> bool:
        return self.settled or self.position == head


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: weak comparison of ``etag`` with the list a client holds."""
    if not if_none_match:
        return False
    held = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in held or etag in held


class Answers:
    """The answers of one server process (used from its event loop only)."""

    def __init__(self, service: LedgerService, *, computations: int = COMPUTATIONS,
                 max_answers: int = MAX_ANSWERS, max_bytes: int = MAX_BYTES) -> None:
        self.service = service
        self.max_answers, self.max_bytes = max_answers, max_bytes
        self._kept: OrderedDict[Question, Kept] = OrderedDict()
        self._bytes = 0
        self._pending: dict[tuple[Question, int], asyncio.Future[Kept]] = {}
        self._computing = asyncio.Semaphore(computations)
        self._sqlite_head = None if service.location.is_postgres else SQLiteHead(service.location.db)

    async def head(self) -> int:
        if self._sqlite_head is None:  # PostgreSQL: a round trip, not on the event loop
            return await run_in_threadpool(self.service.head)
        return self._sqlite_head()  # one indexed read of the SQLite file

    def kept(self, question: Question, head: int) -> Kept | None:
        """The answer to ``question`` if one kept is still the answer at ``head``."""
        kept = self._kept.get(question)
        if kept is None or not kept.fresh_at(head):
            return None
        self._kept.move_to_end(question)
        return kept

    async def respond(self, request: Request, at: Moment, ask: Ask) -> Response:
        """The answer to ``ask``, whose parameters are already checked, as of now."""
        if at.moving:
            kept = await self._compute(ask, at)
            return Response(kept.body, media_type="application/json",
                            headers={"Cache-Control": LATEST})
        question = (request.scope["path"], request.scope["query_string"])
        head = await self.head()
        kept = self.kept(question, head) or await self._fresh(question, head, ask, at)
        headers = {"ETag": kept.etag, "Cache-Control": kept.cache_control}
        if matches(request.headers.get("if-none-match"), kept.etag):
            return Response(status_code=304, headers=headers)
        return Response(kept.body, media_type="application/json", headers=headers)

    async def _fresh(self, question: Question, head: int, ask: Ask, at: Moment) -> Kept:
        """Computed once for all who ask ``question`` at ``head`` meanwhile; and not at all if,
        by its turn, an answer computed at ``head`` or after it is kept."""
        pending = self._pending.get((question, head))
        if pending is None:
            pending = asyncio.ensure_future(self._compute(ask, at, question, head))
            self._pending[(question, head)] = pending
            pending.add_done_callback(lambda done: self._settle(question, head, done))
        # Shielded: a client that goes away must not cancel the others' answer.
        return await asyncio.shield(pending)

    def _settle(self, question: Question, head: int, done: asyncio.Future[Kept]) -> None:
        del self._pending[(question, head)]
        if done.cancelled() or done.exception() is not None:
            return
        self._keep(question, done.result())

    def _keep(self, question: Question, kept: Kept) -> None:
        old = self._kept.get(question)
        if old is not None and (old.settled or old.position >= kept.position):
            return
        if len(kept.body) > self.max_bytes // 8:
            return
        if old is not None:
            self._bytes -= len(old.body)
        self._kept[question] = kept
        self._kept.move_to_end(question)
        self._bytes += len(kept.body)
        while len(self._kept) > self.max_answers or self._bytes > self.max_bytes:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= len(dropped.body)

    async def _compute(self, ask: Ask, at: Moment, question: Question | None = None,
                       head: int = 0) -> Kept:
        async with self._computing:
            # While this waited its turn, the log moved on and an answer was computed at a
            # later head: that one is as fresh as this one would be, and it is ready.
            kept = self._kept.get(question) if question else None
            if kept is not None and (kept.settled or kept.position >= head):
                return kept
            return await run_in_threadpool(self._answer, ask, at)

    def _answer(self, ask: Ask, at: Moment) -> Kept:
        with self.service.snapshot() as snapshot:
            value = ask(self.service)
        return Kept(snapshot.position, msgspec.json.encode(value), snapshot.settled(at))


class FromMemory:
    """ASGI middleware: a GET of a read endpoint whose answer is kept for the current head is
    answered here, before routing; everything else goes on to the app."""

    def __init__(self, app: ASGIApp, answers: Answers) -> None:
        self.app, self.answers = app, answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(READS)
                and await self._from_memory(scope, send)):
            return
        await self.app(scope, receive, send)

    async def _from_memory(self, scope: Scope, send: Send) -> bool:
        kept = self.answers.kept((scope["path"], scope["query_string"]), await self.answers.head())
        if kept is None:
            return False
        headers = [(b"etag", kept.etag.encode()), (b"cache-control", kept.cache_control.encode())]
        if_none_match = next((value for name, value in scope["headers"] if name == b"if-none-match"),
                             None)
        if if_none_match is not None and matches(if_none_match.decode("latin-1"), kept.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return True
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(kept.body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": kept.body})
        return True
