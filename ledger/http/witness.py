"""``ledger witness serve``: a C2SP tlog-witness over HTTP, ``POST /add-checkpoint``.

The decisions are ``ledger.trust.witness``'s; this adapter reads the body within its limits
(``413`` above ``MAX_BODY_BYTES``, ``408`` if it does not arrive in time), runs the decision
off the event loop, and writes the answer: a ``200``'s cosignature line, a ``409``'s size, and
for every other refusal ``{"problems": [{"line", "field", "reason"}]}``. No request makes it
answer ``500``: what cannot be read is a ``400``; a state file that cannot be written, ``503``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger.trust.witness import Answer, Witness

# 63 proof lines and a note of up to 100 signature lines, even post-quantum ones, fit well.
MAX_BODY_BYTES = 256 * 1024
BODY_SECONDS = 10.0
RETRY_AFTER_SECONDS = "1"


class _Refused(Exception):
    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


def _problems(status: int, reason: str, field: str | None = None, line: int = 0,
              headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"problems": [{"line": line, "field": field, "reason": reason}]},
                        status_code=status, headers=headers)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Refused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(request.app.state.body_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _Refused(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise _Refused(408, f"the body did not arrive within {request.app.state.body_seconds:g} "
                            "seconds", {"Connection": "close"}) from None
    return b"".join(chunks)


async def add_checkpoint(request: Request) -> Response:
    if request.query_params:
        raise _Refused(400, "add-checkpoint takes no query parameters")
    body = await _read_body(request)
    witness: Witness = request.app.state.witness
    return render(await run_in_threadpool(witness.add_checkpoint, body))


def render(answer: Answer) -> Response:
    if answer.status in (200, 409):
        # Set whole: Starlette would add "; charset=utf-8" to text/x.tlog.size.
        return Response(answer.body.encode(), status_code=answer.status,
                        headers={"Content-Type": answer.content_type})
    return _problems(answer.status, answer.reason, answer.field, answer.line)


async def on_refused(request: Request, error: Exception) -> Response:
    assert isinstance(error, _Refused)
    return _problems(error.status, error.reason, headers=error.headers)


async def on_http(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    reason = {404: "no such resource: a witness answers POST /add-checkpoint",
              405: "method not allowed: POST /add-checkpoint"}.get(error.status_code, str(error.detail))
    return _problems(error.status_code, reason, headers=dict(error.headers or {}) or None)


async def on_disconnect(request: Request, error: Exception) -> Response:
    return _problems(400, "the client went away")


async def on_failure(request: Request, error: Exception) -> Response:
    # The request was fine; the witness could not record its state. Nothing was cosigned.
    logging.getLogger("ledger.witness").error("witness failure: %s", error)
    return _problems(503, f"the witness cannot record its state: {type(error).__name__}",
                     headers={"Retry-After": RETRY_AFTER_SECONDS})


def create_witness_app(witness: Witness, *, body_seconds: float = BODY_SECONDS) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            witness.state.close()

    app = Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])],
                    lifespan=lifespan, exception_handlers={
                        _Refused: on_refused, HTTPException: on_http,
                        ClientDisconnect: on_disconnect, sqlite3.Error: on_failure,
                        OSError: on_failure, Exception: on_failure})
    app.state.witness = witness
    app.state.body_seconds = body_seconds
    return app


def serve(witness: Witness, *, host: str, port: int) -> int:
    """Serve until SIGINT or SIGTERM; 0 after a clean stop."""
    import uvicorn

    from ledger.http.server import listen

    listening = listen(host, port)
    app = create_witness_app(witness)
    config: Any = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                 lifespan="on", timeout_graceful_shutdown=10,
                                 h11_max_incomplete_event_size=64 * 1024)
    server = uvicorn.Server(config)
    origins = ", ".join(sorted(witness.logs))
    print(f"witness {witness.cosigner.vkey()} on http://{host}:{port}/add-checkpoint for "
          f"{origins}; state in {witness.state.path} (Ctrl-C to stop)", flush=True)
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda *_: None)
    server.run(sockets=[listening])
    return 0 if server.started else 1
