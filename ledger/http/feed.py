"""The live feed: one Server-Sent Event per commit, to every listener of this process.

The writer thread publishes; each ``GET /v1/feed`` has its own small queue on the event
loop. A listener too slow to keep up loses the oldest notices, never slows the writer: a
notice only says "positions a to b are new", and the next one supersedes it for a reader
that refetches what it shows.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

KEEPALIVE_SECONDS = 15.0
LISTENER_BACKLOG = 64


class Feed:
    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[tuple[int, int]]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, first: int, last: int) -> None:
        """From any thread: tell every listener that positions first..last were committed."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, (first, last))

    def _deliver(self, notice: tuple[int, int]) -> None:
        for listener in self._listeners:
            if listener.full():
                listener.get_nowait()
            listener.put_nowait(notice)

    async def stream(self, stopping: Callable[[], bool], poll: float = 0.5) -> AsyncIterator[str]:
        """The text/event-stream of one listener, until the server shuts down."""
        listener: asyncio.Queue[tuple[int, int]] = asyncio.Queue(LISTENER_BACKLOG)
        self._listeners.add(listener)
        try:
            yield "retry: 2000\n\n"
            idle = 0.0
            while not stopping():
                try:
                    first, last = await asyncio.wait_for(listener.get(), poll)
                except TimeoutError:
                    idle += poll
                    if idle >= KEEPALIVE_SECONDS:
                        idle = 0.0
                        yield ": keepalive\n\n"
                    continue
                idle = 0.0
                data = json.dumps({"first_position": first, "last_position": last})
                yield f"event: appended\ndata: {data}\n\n"
        finally:
            self._listeners.discard(listener)
