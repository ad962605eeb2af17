"""A request's body, read within a size and a time limit: both HTTP apps (the ledger's API
and the witness) read bodies through this one function, and answer its two refusals their way."""

from __future__ import annotations

import asyncio

from starlette.requests import Request


class BodyTooLarge(Exception):
    """More than the limit was declared or sent (answer 413)."""


class BodyTooSlow(Exception):
    """The body did not arrive in time (answer 408 and close the connection)."""


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The whole body, refused as soon as it is known to exceed ``limit`` bytes, or when it
    has not arrived within ``seconds`` (a slow client is cut off)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"the body is larger than {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow(f"the body did not arrive within {seconds:g} seconds") from None
    return b"".join(chunks)
