"""Checkpoints keep their exact bytes: every note the ledger signs is compared with one built
here by hand from C2SP signed-note and tlog-checkpoint, independently of ledger/ code."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.trust.checkpoint import Checkpoint, parse, sign
from tests.conftest import LedgerUnderTest

SEEDS = [bytes([n]) * 32 for n in (1, 2)]


def naive_note(origin: str, size: int, root: bytes, signers: list[tuple[str, Ed25519PrivateKey]]) -> str:
    """A checkpoint written straight from the two specifications."""
    body = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
    if not signers:
        return body
    lines = ""
    for name, key in signers:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        key_id = hashlib.sha256(name.encode() + b"\n" + b"\x01" + raw).digest()[:4]
        lines += f"\u2014 {name} {base64.b64encode(key_id + key.sign(body.encode())).decode()}\n"
    return body + "\n" + lines


@pytest.mark.parametrize("origin, size, names", [
    ("election-ledger/0123456789abcdef", 17, ["election-ledger/0123456789abcdef"]),
    ("election-ledger/empty", 0, []),
    ("example.org/log", 2**40 + 3, ["cec", "example.org/second"]),
])
def test_signed_checkpoints_are_byte_for_byte_the_specified_notes(
        origin: str, size: int, names: list[str]) -> None:
    root = hashlib.sha256(f"{origin}/{size}".encode()).digest()
    keys = [Ed25519PrivateKey.from_private_bytes(seed) for seed in SEEDS]
    note = Checkpoint(origin, size, root)
    for name, key in zip(names, keys, strict=False):
        note = sign(note, key, name)
    expected = naive_note(origin, size, root, list(zip(names, keys, strict=False)))
    assert note.text() == expected
    assert parse(expected) == note
    assert parse(expected).text() == expected


def test_the_checkpoint_command_prints_the_specified_note(registered: LedgerUnderTest) -> None:
    directory = registered.directory
    assert registered.run("keygen", str(directory / "cec")).code == 0
    result = registered.run("checkpoint", "--key", str(directory / "cec.key"), "--name", "cec")
    assert result.code == 0, result.err
    origin, size, root = result.out.split("\n")[:3]
    key = serialization.load_pem_private_key((directory / "cec.key").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    assert result.out == naive_note(origin, int(size), base64.b64decode(root), [("cec", key)])
    unsigned = registered.run("checkpoint")
    assert unsigned.out == naive_note(origin, int(size), base64.b64decode(root), [])


def test_a_checkpoint_file_round_trips(tmp_path: Path) -> None:
    text = naive_note("example.org/log", 5, bytes(range(32)),
                      [("example.org/log", Ed25519PrivateKey.from_private_bytes(SEEDS[0]))])
    assert parse(text).text() == text
