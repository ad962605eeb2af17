"""Helpers for the HTTP tests: a real `ledger serve` process, plain HTTP, signed lines."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PREFIX = b"election-ledger/event/v1\n"


class Reporter:
    """A reporter's Ed25519 key, signing lines exactly as ../shared/DESIGN.md v2 says."""

    def __init__(self, reporter: str) -> None:
        self.reporter, self.private = reporter, Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(serialization.Encoding.Raw,
                                                     serialization.PublicFormat.Raw)
        self.public = base64.b64encode(raw).decode()

    def sign(self, event: dict[str, Any], by: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in event.items() if k != "signature"}
        signature = self.private.sign(PREFIX + rfc8785.dumps(body))
        return {**body, "signature": {"by": by or self.reporter,
                                      "ed25519": base64.b64encode(signature).decode()}}

    def registration(self, election: str) -> dict[str, Any]:
        return {"type": "ReporterRegistered", "election": election,
                "occurred_at": "2030-04-01T12:10:00+02:00", "reporter": self.reporter,
                "name": self.reporter.upper(), "public_key": self.public}


def lines(*events: dict[str, Any] | str) -> bytes:
    return "".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in events).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    """`ledger serve` as a subprocess on a free loopback port."""

    db: str
    directory: Path
    extra: tuple[str, ...] = ()
    env: dict[str, str] | None = None
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.port = free_port()
        log = (self.directory / f"serve-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ledger", "serve", "--db", self.db, "--port", str(self.port),
             *self.extra],
            cwd=self.directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(self.env or {})})
        for _ in range(300):
            if self.process.poll() is not None:
                raise AssertionError(f"ledger serve exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                if self.get("/v1/elections").status in (200, 400):
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"ledger serve did not answer: {self.log()}")

    def log(self) -> str:
        return (self.directory / f"serve-{self.port}.log").read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 60) -> Answer:
        request = urllib.request.Request(
            self.url + path, method=method, data=body,
            headers=headers or ({"Content-Type": "application/x-ndjson"} if body else {}))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Answer(response.status, response.read(),
                              {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.read(), {k.lower(): v for k, v in error.headers.items()})

    def raw(self, head: bytes, body: bytes = b"") -> bytes:
        """Send a request's head (and part of a body) on a socket; read until the server
        has answered and closed, or 30 s."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(head + body)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
                if b"\r\n\r\n" in reply and reply.rstrip().endswith(b"}"):
                    break
            return reply

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, body: bytes) -> Answer:
        return self.request("POST", "/v1/events", body)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError("ledger serve did not stop on SIGTERM") from None
