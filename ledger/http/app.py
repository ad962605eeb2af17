"""The HTTP adapter: routes over the same ``LedgerService`` the command line uses.

Each read endpoint turns query parameters into the arguments of one service method and
answers with the same JSON as the command line's ``--format json``; writes go through the
group-commit writer. Sync endpoints run in Starlette's thread pool, so a slow query never
holds up the event loop (and the feed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ledger.errors import BadInput, Failure
from ledger.http.answers import Answers, FromMemory
from ledger.http.body import BodyTooLarge, BodyTooSlow, read_body
from ledger.http.feed import Feed
from ledger.http.intake import problem_json, refusal_status, screen
from ledger.http.writer import Busy, GroupCommitWriter, Saturated
from ledger.input.reader import Problem
from ledger.service import LedgerService, NotFound, when
from ledger.store.application import Appended, BatchRejected
from ledger.store.session import ReadOnlyReplica

logger = logging.getLogger("ledger.serve")

if TYPE_CHECKING:
    from ledger.witnessing import Witnessing

MAX_BODY_BYTES = 4 << 20       # 4 MiB: a few thousand protocols
MAX_LINES = 2_000              # per request; one request is planned whole in memory
BODY_SECONDS = 10.0            # to send the whole body: a slow client is cut off (408)
MAX_LOG_LIMIT = 10_000
RETRY_AFTER_SECONDS = "1"


class Refusal(Exception):
    """A request answered with a 4xx/5xx and ``{"problems": [...]}``."""

    def __init__(self, status: int, problems: list[Problem], headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.problems, self.headers = status, problems, headers


def _problem(reason: str, field: str | None = None) -> list[Problem]:
    return [Problem(0, field, reason)]


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


# -- query parameters ------------------------------------------------------------------------

MOMENT = ("as_of", "known_at")


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once and each one this endpoint knows (400)."""
    params = request.query_params
    problems = [Problem(0, name, f"unknown query parameter; this endpoint takes "
                        f"{', '.join(allowed) or 'none'}") for name in params if name not in allowed]
    problems += [Problem(0, name, "given more than once") for name in set(params)
                 if len(params.getlist(name)) > 1]
    if problems:
        raise Refusal(400, problems)
    return dict(params)


def _moment(query: dict[str, str]) -> Any:
    """The moment asked about; a bad bound is a 400 naming its parameter."""
    problems = []
    for name in MOMENT:
        try:
            when(*(query.get(bound) if bound == name else None for bound in MOMENT), names=MOMENT)
        except BadInput as error:
            problems.append(Problem(0, name, str(error).removeprefix(f"{name}: ")))
    if problems:
        raise Refusal(400, problems)
    return when(query.get("as_of"), query.get("known_at"), names=MOMENT)


def _stage(query: dict[str, str]) -> str:
    stage = query.get("stage", "preliminary")
    if stage not in ("preliminary", "final"):
        raise Refusal(400, _problem("expected preliminary or final", "stage"))
    return stage


# -- reads -----------------------------------------------------------------------------------


def _service(request: Request) -> LedgerService:
    return request.app.state.service


def _answers(request: Request) -> Answers:
    return request.app.state.answers


async def elections(request: Request) -> Response:
    query = _query(request, MOMENT)
    at = _moment(query)
    return await _answers(request).respond(request, at, lambda s: {"elections": s.elections(at)})


Answer = Callable[[LedgerService, Any, str, dict[str, str]], Any]


def _election_view(allowed: tuple[str, ...], answer: Answer) -> Callable[..., Any]:
    """An endpoint under /v1/elections/{id}: checks the parameters, then answers from memory
    (ledger/http/answers.py) or asks the service, after checking that the election (and
    station, and reporter) exist (404)."""

    async def endpoint(request: Request) -> Response:
        query = _query(request, allowed)
        at = _moment(query)
        if "stage" in allowed:
            _stage(query)
        election = request.path_params["election"]

        def ask(service: LedgerService) -> Any:
            service.require(election, query.get("station"), query.get("reporter"))
            return answer(service, at, election, query)

        return await _answers(request).respond(request, at, ask)

    return endpoint


tally = _election_view(
    (*MOMENT, "stage", "reporter", "scope"),
    lambda s, at, e, q: s.tally(at, election=e, stage=_stage(q), reporter=q.get("reporter"),
                                scope=q.get("scope")))
seats = _election_view(
    (*MOMENT, "stage", "reporter", "scope"),
    lambda s, at, e, q: s.seats(at, election=e, stage=_stage(q), reporter=q.get("reporter"),
                                scope=q.get("scope")))
TALLY_OPTIONS = (*MOMENT, "stage", "reporter", "scope")


def _confidence(query: dict[str, str]) -> float:
    text = query.get("confidence")
    if text is None:
        return 0.95
    try:
        value = float(text) if len(text) <= 40 else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise Refusal(400, _problem(f"expected a number between 0 and 1, such as 0.95; got "
                                    f"{text[:40]!r}", "confidence"))
    return value


forensics = _election_view(
    (*TALLY_OPTIONS, "choice"),
    lambda s, at, e, q: s.forensics(at, election=e, stage=_stage(q), reporter=q.get("reporter"),
                                    scope=q.get("scope"), choice=q.get("choice")))
estimate = _election_view(
    (*TALLY_OPTIONS, "confidence"),
    lambda s, at, e, q: s.estimate(at, election=e, stage=_stage(q), reporter=q.get("reporter"),
                                   scope=q.get("scope"), confidence=_confidence(q)))
audit = _election_view(
    (*MOMENT, "station"), lambda s, at, e, q: s.audit(at, election=e, station=q.get("station")))
history = _election_view(
    (*MOMENT, "station"),
    lambda s, at, e, q: {"events": s.history(at, election=e, station=q.get("station"))})
withheld = _election_view(MOMENT, lambda s, at, e, q: s.withheld(at, election=e))
appeals = _election_view(MOMENT, lambda s, at, e, q: {"appeals": s.appeals(at, election=e)})
reporters = _election_view(MOMENT, lambda s, at, e, q: s.reporters(at, election=e))


# -- for auditors and mirrors ----------------------------------------------------------------


def _whole_number(query: dict[str, str], name: str, default: int, most: int | None = None) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise Refusal(400, _problem(f"expected a whole number, got {text[:40]!r}", name))
    value = int(text)
    if most is not None and not 1 <= value <= most:
        raise Refusal(400, _problem(f"expected 1 to {most}, got {value}", name))
    return value


def log(request: Request) -> Response:
    query = _query(request, ("after", "limit"))
    after = _whole_number(query, "after", 0)
    limit = _whole_number(query, "limit", 1_000, MAX_LOG_LIMIT)
    service = _service(request)
    head = service.head()
    # Each line carries what its Merkle leaf hashes (ledger/trust/logrow.py).
    body = service.log(after, limit)
    return Response(body, media_type="application/x-ndjson", headers={"X-Ledger-Head": str(head)})


def checkpoint(request: Request) -> Response:
    _query(request, ())
    state = request.app.state
    if state.witnessing is not None:
        published = state.witnessing.checkpoint()
        if published is None:
            raise Refusal(503, _problem("no checkpoint has been cosigned by the witnesses' "
                                        "quorum yet; see /v1/witnesses"),
                          {"Retry-After": RETRY_AFTER_SECONDS})
        return PlainTextResponse(published)
    # A replica's is its source's note, verbatim (with every cosignature it came with).
    return PlainTextResponse(_service(request).published_checkpoint(state.key, state.key_name))


def witnesses(request: Request) -> Response:
    """Whom the ledger asks to cosign its checkpoints, and how each answered last."""
    _query(request, ())
    witnessing = request.app.state.witnessing
    if witnessing is None:
        return _json({"quorum": None, "latest_size": None, "published_size": None,
                      "witnesses": []})
    return _json(witnessing.status())


def consistency(request: Request) -> Response:
    query = _query(request, ("from", "to"))
    for name in ("from", "to"):
        if name not in query:
            raise Refusal(400, _problem("needed: the two sizes, ?from=M&to=N", name))
    old, new = _whole_number(query, "from", 0), _whole_number(query, "to", 0)
    try:
        proof = _service(request).consistency(old, new)
    except BadInput as error:
        raise Refusal(400, _problem(str(error), "from")) from None
    return PlainTextResponse("".join(base64.b64encode(h).decode() + "\n" for h in proof))


def proof(request: Request) -> Response:
    _query(request, ())
    try:
        return _json(_service(request).prove(request.path_params["event_id"]))
    except BadInput as error:
        raise NotFound(str(error)) from None


# -- writes ----------------------------------------------------------------------------------


async def _read_body(request: Request) -> bytes:
    """The body, within the size and time limits (413, 408)."""
    try:
        return await read_body(request, MAX_BODY_BYTES, request.app.state.body_seconds)
    except BodyTooLarge as error:
        raise Refusal(413, _problem(f"{error}; split it")) from None
    except BodyTooSlow as error:
        raise Refusal(408, _problem(str(error)), {"Connection": "close"}) from None


async def post_events(request: Request) -> Response:
    _query(request, ())
    await _refuse_on_replica(request)
    body = await _read_body(request)
    if sum(1 for line in body.split(b"\n") if line.strip()) > MAX_LINES:
        raise Refusal(413, _problem(f"more than {MAX_LINES} lines in one request; split it"))
    screened = await run_in_threadpool(screen, body) if len(body) > 65_536 else screen(body)
    if not screened.lines:
        raise Refusal(422, _problem("the body holds no events (JSON Lines, one event a line)"))
    if screened.problems:
        forged: list[Problem] = []
        if not screened.unsigned and not screened.forbidden:
            # Refused for its content; but signatures come first: a forged line among the
            # ones that decoded makes it a 403.
            forged = await run_in_threadpool(_service(request).signature_problems,
                                             [line for line in screened.lines if line.event])
        problems = sorted([*forged, *screened.problems], key=lambda p: p.line)
        raise Refusal(refusal_status(screened, forged), problems)
    writer: GroupCommitWriter = request.app.state.writer
    try:
        future = writer.submit(screened.lines)
    except Saturated:
        raise Refusal(503, _problem("the writer is saturated; retry shortly"),
                      {"Retry-After": RETRY_AFTER_SECONDS}) from None
    try:
        appended: Appended = await future
    except BatchRejected as rejected:
        problems = rejected.outcome.problems
        raise Refusal(refusal_status(None, problems), problems) from None
    except Busy:
        raise Refusal(503, _problem("the ledger is busy with another writer; retry shortly"),
                      {"Retry-After": RETRY_AFTER_SECONDS}) from None
    except ReadOnlyReplica as refused:
        raise Refusal(405, _problem(str(refused)), {"Allow": "GET"}) from None
    outcome = appended.outcome
    reply: dict[str, Any] = {
        "appended": appended.count,
        "already_recorded": outcome.already_recorded,
        "first_position": appended.first_position,
        "last_position": appended.last_position,
        "flagged": problem_json(outcome.flagged),
    }
    key = request.app.state.key
    if key is not None:
        from ledger.trust.receipt import issue

        origin = request.app.state.origin or await run_in_threadpool(_service(request).origin)
        request.app.state.origin = origin  # a log's origin never changes once it has an event
        # Lines already recorded are receipted at the positions the log holds them: a
        # reporter whose answer was lost (a crash, a dropped connection) sends again and
        # gets the receipt it never saw.
        written = sorted((*appended.written, *appended.known), key=lambda w: w.position)
        reply["receipt"] = issue(origin, written, key)
    return _json(reply)


async def _refuse_on_replica(request: Request) -> None:
    """A replica holds its source's log and nothing else: it takes no writes (405)."""
    state = request.app.state
    if state.replica_of is None:
        held = await run_in_threadpool(_service(request).held)
        if held is None:
            return
        state.replica_of = held  # a replica never stops being one
    raise Refusal(405, _problem(str(ReadOnlyReplica(state.replica_of))), {"Allow": "GET"})


# -- live ------------------------------------------------------------------------------------


async def feed(request: Request) -> Response:
    _query(request, ())
    state = request.app.state
    return StreamingResponse(state.feed.stream(state.stopping), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def page(request: Request) -> Response:
    return HTMLResponse(resources.files("ledger.http").joinpath("live.html").read_text("utf-8"))


MIRRORED_POLL = 0.25  # seconds between looks at a replica's head


async def _announce_mirrored(app: Starlette, announced: int) -> None:
    """On a replica the log grows by another process (``ledger mirror --follow``): announce
    on the feed what it adds beyond ``announced``, so that a replica of this one can follow
    it in turn."""
    state, service = app.state, app.state.service
    polls = 0
    while not state.stopping():
        await asyncio.sleep(MIRRORED_POLL)
        polls += 1
        try:
            if state.replica_of is None:
                if polls % 8 != 1:  # an empty ledger may become a replica: look now and then
                    continue
                state.replica_of = await run_in_threadpool(service.held)
                if state.replica_of is None:
                    continue
            head = await run_in_threadpool(service.head)
        except Exception as error:  # the next look may do better; never end the server
            logger.warning("could not read the replica's head: %s", error)
            continue
        if head > announced:
            state.feed.publish(announced + 1, head)
            announced = head


# -- errors ----------------------------------------------------------------------------------


def _refused(problems: list[Problem], status: int, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"problems": problem_json(problems)}, status_code=status, headers=headers)


async def on_refusal(request: Request, error: Exception) -> Response:
    assert isinstance(error, Refusal)
    return _refused(error.problems, error.status, error.headers)


async def on_bad_input(request: Request, error: Exception) -> Response:
    return _refused(_problem(str(error)), 404 if isinstance(error, NotFound) else 400)


async def on_failure(request: Request, error: Exception) -> Response:
    return _refused(_problem(str(error)), 503, {"Retry-After": RETRY_AFTER_SECONDS})


async def on_http(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    reason = {404: "no such resource", 405: "method not allowed here"}.get(error.status_code,
                                                                         str(error.detail))
    return _refused(_problem(reason), error.status_code, dict(error.headers or {}) or None)


async def on_disconnect(request: Request, error: Exception) -> Response:
    return _refused(_problem("the client went away"), 400)


async def on_anything(request: Request, error: Exception) -> Response:
    from ledger.errors import explain_failure

    return _refused(_problem(explain_failure(error)), 500)  # type: ignore[arg-type]


ROUTES = [
    Route("/", page),
    Route("/v1/elections", elections),
    Route("/v1/elections/{election}/tally", tally),
    Route("/v1/elections/{election}/seats", seats),
    Route("/v1/elections/{election}/forensics", forensics),
    Route("/v1/elections/{election}/estimate", estimate),
    Route("/v1/elections/{election}/audit", audit),
    Route("/v1/elections/{election}/withheld", withheld),
    Route("/v1/elections/{election}/appeals", appeals),
    Route("/v1/elections/{election}/history", history),
    Route("/v1/elections/{election}/reporters", reporters),
    Route("/v1/log", log),
    Route("/v1/checkpoint", checkpoint),
    Route("/v1/consistency", consistency),
    Route("/v1/witnesses", witnesses),
    Route("/v1/proof/{event_id:path}", proof),
    Route("/v1/feed", feed),
    Route("/v1/events", post_events, methods=["POST"]),
]


def create_app(service: LedgerService, *, key: Any = None, key_name: str | None = None,
               body_seconds: float = BODY_SECONDS, capacity: int | None = None,
               witnessing: Witnessing | None = None) -> Starlette:
    """The ASGI app over ``service``; its lifespan starts the writer and, on shutdown,
    drains it and closes the event store."""
    feed_ = Feed()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        feed_.bind(asyncio.get_running_loop())
        await run_in_threadpool(service.ledger)  # creates an empty ledger if there is none
        writer = GroupCommitWriter(service, on_commit=feed_.publish,
                                   **({"capacity": capacity} if capacity else {}))
        app.state.writer = writer
        writer.start()
        if witnessing is not None:
            witnessing.start()
        # What the log holds now: anything a mirror adds from here on is announced.
        start = await run_in_threadpool(service.head)
        watcher = asyncio.create_task(_announce_mirrored(app, start))
        try:
            yield
        finally:
            watcher.cancel()
            if witnessing is not None:
                await run_in_threadpool(witnessing.stop)
            if await run_in_threadpool(writer.stop):
                service.close()

    answers = Answers(service)
    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={
        Refusal: on_refusal, BadInput: on_bad_input, Failure: on_failure,
        HTTPException: on_http, ClientDisconnect: on_disconnect, Exception: on_anything,
    }, middleware=[Middleware(FromMemory, answers)])
    app.state.service = service
    app.state.answers = answers
    app.state.key, app.state.key_name = key, key_name
    app.state.origin = None
    app.state.replica_of = None
    app.state.witnessing = witnessing
    app.state.feed = feed_
    app.state.body_seconds = body_seconds
    app.state.stopping = lambda: False
    return app
