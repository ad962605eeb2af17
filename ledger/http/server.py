"""Running the HTTP API under uvicorn: ``ledger serve``."""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

from ledger.errors import Failure
from ledger.service import LedgerService
from ledger.store.config import Location


def serve(location: Location, *, host: str, port: int, key_file: str | None = None,
          body_seconds: float | None = None, queue: int | None = None,
          witnesses: str | None = None, checkpoint_interval: float = 1.0) -> int:
    """Serve until SIGINT or SIGTERM (uvicorn's handlers), then drain the writer and close
    the event store (the app's lifespan)."""
    import uvicorn

    from ledger.http.app import BODY_SECONDS, create_app
    from ledger.trust.checkpoint import load_private_key

    key = load_private_key(Path(key_file)) if key_file else None
    policy = None
    if witnesses:
        from ledger.trust.policy import read_policy

        policy = read_policy(Path(witnesses))  # a bad line: exit 2 before anything listens
    # Bound here, before uvicorn starts: a port in use is then one line and exit 1, not
    # uvicorn's log and its own exit code.
    listening = listen(host, port)
    service = LedgerService(location, unsynced_read_models=True)
    witnessing = None
    if policy is not None and key is not None:
        from ledger.witnessing import Witnessing

        witnessing = Witnessing(policy, key.public_key(),
                                sign=lambda: service.checkpoint(key), consistency=service.consistency,
                                record=service.record_checkpoint, interval=checkpoint_interval)
    app = create_app(service, key=key, body_seconds=body_seconds or BODY_SECONDS, capacity=queue,
                     witnessing=witnessing)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=10,
                            # Request lines and headers are small; bodies are limited by the app.
                            h11_max_incomplete_event_size=64 * 1024)
    server = uvicorn.Server(config)
    app.state.stopping = lambda: server.should_exit  # ends the feed's streams on shutdown
    logging.getLogger("ledger.serve").info("serving %s on http://%s:%d", location.describe(),
                                           host, port)
    print(f"serving {location.describe()} on http://{host}:{port} (Ctrl-C to stop)", flush=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again for
    # the handlers outside it: here, a stop that was asked for is a clean exit (0).
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda *_: None)
    server.run(sockets=[listening])
    return 0 if server.started else 1


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, or ``Failure`` saying why it cannot be."""
    try:
        family, kind, proto, _, _ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # With its protocol named (IPPROTO_TCP), not 0: asyncio sets TCP_NODELAY only on
        # sockets that say they are TCP. Without it every answer, written as a head and a
        # body, waited about 40 ms for the client's delayed ACK (Nagle's algorithm).
        listening = socket.socket(family, kind, proto)
    except OSError as error:
        raise Failure(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise Failure(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listening
