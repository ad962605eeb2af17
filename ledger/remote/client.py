"""The HTTP API of a served ledger, as a client reads it (``ledger serve``, docs/api.md).

Nothing read here is trusted: the mirror checks every line against a signed checkpoint and
the receipt checker every proof against one. This module only fetches, with one kept-alive
connection per thread, and says in one line why a request failed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import queue
import socket
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from ledger.errors import BadInput, Failure

PAGE = 10_000  # the most rows GET /v1/log answers at once
TIMEOUT = 30.0  # seconds; the feed sends a keepalive every 15


class Unreachable(Failure):
    """The source did not answer, or answered that it cannot now (5xx): try again later."""


class BadAnswer(Failure):
    """The source answered something the API does not say it answers."""


class NotServed(BadAnswer):
    """The source does not serve this (404): an older ledger, or an unknown event."""


class Remote:
    """One served ledger, by the URL it is served at (``http://host:port`` or https)."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"URL: {url!r} is not an http:// or https:// address of `ledger serve`")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as error:
            raise BadInput(f"URL: {url!r}: {error}") from None
        self.url = url.rstrip("/")
        self._parts = parts
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._local = threading.local()

    def __str__(self) -> str:
        return self.url

    # -- requests ------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._parts.scheme == "https" else \
                http.client.HTTPConnection
            connection = kind(self._parts.hostname or "", self._parts.port, timeout=self._timeout)
            self._local.connection = connection
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def get(self, path: str) -> bytes:
        """The body of a ``200`` to ``GET path``; ``Unreachable``, ``NotServed`` or
        ``BadAnswer`` otherwise. A kept-alive connection the server closed is opened again
        once."""
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request("GET", self._prefix + path)
                response = connection.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as error:
                self._drop()
                if attempt == 2:
                    raise Unreachable(f"{self.url}: {_reason(error)}") from None
                continue
            except (OSError, http.client.HTTPException) as error:
                self._drop()
                raise Unreachable(f"{self.url}: {_reason(error)}") from None
            if response.status == 200:
                return body
            raise _refusal(self.url + path, response.status, body)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- what a mirror reads -------------------------------------------------------------------

    def checkpoint(self) -> str:
        try:
            return self.get("/v1/checkpoint").decode("utf-8")
        except UnicodeDecodeError:
            raise BadAnswer(f"{self.url}/v1/checkpoint: not UTF-8 text") from None

    def rows(self, after: int, limit: int) -> list[bytes]:
        """Up to ``limit`` served lines of the log after position ``after``."""
        body = self.get(f"/v1/log?after={after}&limit={min(limit, PAGE)}")
        return [line + b"\n" for line in body.split(b"\n") if line]

    def pages(self, after: int, count: int) -> Iterator[list[bytes]]:
        """Exactly ``count`` served lines after position ``after``, a page at a time; the
        next page is fetched while the caller works on this one."""
        ahead: queue.Queue[list[bytes] | BaseException | None] = queue.Queue(maxsize=2)
        stop = threading.Event()

        def fetch() -> None:
            position, left = after, count
            try:
                while left > 0 and not stop.is_set():
                    page = self.rows(position, min(left, PAGE))
                    if not page:
                        raise BadAnswer(f"{self.url}/v1/log ends after position {position}, "
                                        f"{left} entries short of the checkpoint")
                    page = page[:left]
                    position = _position_of(page[-1], self.url)
                    left -= len(page)
                    ahead.put(page)
                ahead.put(None)
            except BaseException as error:  # handed to the reader, raised there
                ahead.put(error)
            finally:
                self._drop()

        worker = threading.Thread(target=fetch, name="mirror-fetch", daemon=True)
        worker.start()
        try:
            while (item := ahead.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a fetcher waiting to put a page
                with contextlib.suppress(queue.Empty):
                    ahead.get(timeout=0.05)

    def consistency(self, old: int, new: int) -> list[bytes] | None:
        """The served consistency proof from ``old`` to ``new`` leaves; None when the source
        does not serve proofs (a ledger from before v3)."""
        try:
            body = self.get(f"/v1/consistency?from={old}&to={new}")
        except NotServed:
            return None
        try:
            return [base64.b64decode(line, validate=True) for line in body.split(b"\n") if line]
        except binascii.Error:
            raise BadAnswer(f"{self.url}/v1/consistency: not one base64 hash a line") from None

    def proof(self, event_id: str) -> dict[str, Any]:
        body = self.get(f"/v1/proof/{quote(event_id, safe='')}")
        try:
            answer = json.loads(body)
        except ValueError:
            raise BadAnswer(f"{self.url}/v1/proof: not JSON") from None
        if not isinstance(answer, dict):
            raise BadAnswer(f"{self.url}/v1/proof: not a proof")
        return answer

    def notices(self) -> Feed:
        """``/v1/feed``, to iterate from another thread and close from this one."""
        kind = http.client.HTTPSConnection if self._parts.scheme == "https" else \
            http.client.HTTPConnection
        connection = kind(self._parts.hostname or "", self._parts.port, timeout=self._timeout)
        return Feed(self.url, connection, self._prefix + "/v1/feed")


class Feed:
    """Following ``/v1/feed``: iterating yields 0 once connected and at each keepalive (a
    time to look again, should a notice have been lost), the last position of each commit
    announced, and raises ``Unreachable`` when the connection ends (the caller connects
    again)."""

    def __init__(self, url: str, connection: http.client.HTTPConnection, path: str) -> None:
        self.url, self._connection, self._path = url, connection, path
        self._closed = False

    def __iter__(self) -> Iterator[int]:
        where = f"{self.url}/v1/feed"
        try:
            try:
                self._connection.request("GET", self._path)
                response = self._connection.getresponse()
            except (OSError, http.client.HTTPException) as error:
                raise Unreachable(f"{where}: {_reason(error)}") from None
            if response.status != 200:
                raise _refusal(where, response.status, response.read())
            yield 0
            while not self._closed:
                try:
                    line = response.readline()
                except (OSError, http.client.HTTPException, ValueError) as error:
                    raise Unreachable(f"{where}: {_reason(error)}") from None
                if not line:
                    raise Unreachable(f"{where}: the source closed the feed")
                if line.startswith(b":"):
                    yield 0
                elif line.startswith(b"data:"):
                    try:
                        yield int(json.loads(line[5:])["last_position"])
                    except (ValueError, KeyError, TypeError):
                        raise BadAnswer(f"{where}: a notice that is not "
                                        "{first_position, last_position}") from None
        finally:
            self._connection.close()

    def close(self) -> None:
        """Stop following: the reading thread ends at once (its socket is shut)."""
        self._closed = True
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _position_of(line: bytes, url: str) -> int:
    head = line[:40]
    if not head.startswith(b'{"position":'):
        raise BadAnswer(f"{url}/v1/log: a line that does not start with its position")
    digits = head[12:].split(b",", 1)[0]
    if not digits.isdigit():
        raise BadAnswer(f"{url}/v1/log: a line that does not start with its position")
    return int(digits)


def _refusal(where: str, status: int, body: bytes) -> Failure:
    try:
        problems = json.loads(body)["problems"]
        reason = "; ".join(str(p.get("reason")) for p in problems)
    except (ValueError, KeyError, TypeError, AttributeError):
        reason = body[:200].decode("utf-8", "replace").strip()
    message = f"{where}: HTTP {status}" + (f": {reason}" if reason else "")
    if status == 404:
        return NotServed(message)
    if status >= 500 or status in (408, 429):
        return Unreachable(message)
    return BadAnswer(message)


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
