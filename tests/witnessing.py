"""Helpers for the witness tests: a log that signs checkpoints, a real `ledger witness serve`
process, and a cosignature check written from the C2SP text (not through ledger/ code)."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.trust.checkpoint import Checkpoint, sign
from ledger.trust.merkle import MemoryTree
from tests.serving import Answer, free_port


class Log:
    """A log of numbered leaves with its own key, signing checkpoints under its origin."""

    def __init__(self, origin: str, seed: int, leaves: int = 0) -> None:
        self.origin = origin
        self.key = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
        self.tree = MemoryTree([f"{origin} leaf {i}".encode() for i in range(leaves)])

    def write_public_key(self, path: Path) -> Path:
        path.write_bytes(self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        return path

    def checkpoint(self, size: int, root: bytes | None = None) -> str:
        note = Checkpoint(self.origin, size, self.tree.root(size) if root is None else root)
        return sign(note, self.key, self.origin).text()

    def proof(self, old: int, new: int) -> list[bytes]:
        return self.tree.consistency_proof(old, new) if old else []

    def request(self, old: int, new: int, proof: list[bytes] | None = None,
                checkpoint: str | None = None) -> bytes:
        lines = [f"old {old}", *(base64.b64encode(h).decode() for h in
                                 (self.proof(old, new) if proof is None else proof))]
        return ("\n".join(lines) + "\n\n" + (checkpoint or self.checkpoint(new))).encode()


def cosigned_at(body: str, name: str, public: Ed25519PublicKey, checkpoint: str) -> int | None:
    """The time of a valid cosignature/v1 line by (name, key) over the checkpoint's note text,
    read as C2SP tlog-cosignature says; None if the body holds none."""
    text = checkpoint.split("\n\n")[0] + "\n"
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(name.encode() + b"\n\x04" + raw).digest()[:4]
    for line in body.splitlines():
        dash, signer, encoded = [*line.split(" "), "", "", ""][:3]
        blob = base64.b64decode(encoded) if dash == "\u2014" and signer == name else b""
        if len(blob) == 76 and blob[:4] == key_id:
            (when,) = struct.unpack(">Q", blob[4:12])
            try:
                public.verify(blob[12:], f"cosignature/v1\ntime {when}\n".encode() + text.encode())
            except InvalidSignature:
                return None
            return when
    return None


@dataclass
class WitnessProcess:
    """`ledger witness serve` as a subprocess on a free loopback port."""

    directory: Path
    key: str
    logs: list[str]
    state: str
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WitnessProcess:
        self.port = self.port or free_port()
        log = (self.directory / f"witness-{self.port}.log").open("ab")
        arguments = [sys.executable, "-m", "ledger", "witness", "serve", "--key", self.key,
                     "--state", self.state, "--port", str(self.port), *self.extra]
        for given in self.logs:
            arguments += ["--log", given]
        self.process = subprocess.Popen(arguments, cwd=self.directory, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            if self.process.poll() is not None:
                raise AssertionError(f"ledger witness serve exited: {self.log()}")
            try:
                if self.post(b"").status == 400:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"ledger witness serve did not answer: {self.log()}")

    def log(self) -> str:
        return (self.directory / f"witness-{self.port}.log").read_text(errors="replace")

    def post(self, body: bytes, path: str = "/add-checkpoint", method: str = "POST",
             headers: dict[str, str] | None = None) -> Answer:
        request = urllib.request.Request(self.url + path, data=body if method == "POST" else None,
                                         method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Answer(response.status, response.read(),
                              {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as error:
            return Answer(error.code, error.read(), {k.lower(): v for k, v in error.headers.items()})

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        return self.process.wait(timeout=30)
