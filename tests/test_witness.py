"""`ledger keygen --cosigner` and `ledger witness serve` as real processes on the loopback:
every status code over HTTP, the request size limit, a race of concurrent requests (one 200),
SIGKILL right after a 200, the command line's refusals, and the client the ledger will use."""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ledger.trust import witness_client
from ledger.trust.cosigned import add_cosignatures, check_cosigned
from ledger.trust.policy import parse_policy
from tests.witnessing import Log, WitnessProcess, cosigned_at

ORIGIN = "election-ledger/0123456789abcdef"


def ledger(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line, in this process (the witness's own tests start real servers)."""
    from contextlib import chdir, redirect_stderr, redirect_stdout
    from io import StringIO

    from ledger.cli.main import main

    out, err = StringIO(), StringIO()
    with chdir(cwd), redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's own refusals
            code = int(exit.code or 0)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def cosigner_key(directory: Path, name: str = "golos") -> tuple[str, bytes]:
    made = ledger("keygen", name, "--cosigner", cwd=directory)
    assert made.returncode == 0, made.stderr
    vkey = (directory / f"{name}.vkey").read_text().strip()
    assert made.stdout == vkey + "\n"
    return vkey, base64.b64decode(vkey.split("+", 2)[2])[1:]


@pytest.fixture
def log() -> Log:
    return Log(ORIGIN, seed=1, leaves=40)


@pytest.fixture
def witness(tmp_path: Path, log: Log) -> WitnessProcess:
    cosigner_key(tmp_path)
    log.write_public_key(tmp_path / "cec.pub")
    running = WitnessProcess(tmp_path, "golos.key", [f"{ORIGIN}=cec.pub"], "golos.state").start()
    yield running
    running.stop()


def test_keygen_cosigner_writes_a_key_and_its_vkey(tmp_path: Path) -> None:
    vkey, public = cosigner_key(tmp_path, "obs-golos")
    name, key_id, _ = vkey.split("+", 2)
    import hashlib

    assert name == "obs-golos" and key_id == hashlib.sha256(b"obs-golos\n\x04" + public).digest()[:4].hex()
    key = serialization.load_pem_private_key((tmp_path / "obs-golos.key").read_bytes(), None)
    assert key.public_key().public_bytes(serialization.Encoding.Raw,  # type: ignore[union-attr]
                                         serialization.PublicFormat.Raw) == public
    assert (tmp_path / "obs-golos.key").stat().st_mode & 0o077 == 0
    again = ledger("keygen", "obs-golos", "--cosigner", cwd=tmp_path)
    assert again.returncode == 2 and "exists; not overwriting" in again.stderr
    named = ledger("keygen", "w1", "--cosigner", "--name", "witness.example.org/w1", cwd=tmp_path)
    assert named.returncode == 0 and named.stdout.startswith("witness.example.org/w1+")
    for bad in (["bad name", "--cosigner"], ["x", "--cosigner", "--name", "a+b"], ["y", "--name", "z"]):
        refused = ledger("keygen", *bad, cwd=tmp_path)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr


def test_every_status_code_over_http(witness: WitnessProcess, log: Log) -> None:
    key = serialization.load_pem_private_key((witness.directory / "golos.key").read_bytes(), None)
    public = key.public_key()  # type: ignore[union-attr]
    first = witness.post(log.request(0, 10))
    assert first.status == 200 and first.headers["content-type"].startswith("text/plain")
    assert cosigned_at(first.body.decode(), "golos", public, log.checkpoint(10)) is not None  # type: ignore[arg-type]
    stale = witness.post(log.request(3, 20))
    assert (stale.status, stale.body, stale.headers["content-type"]) == (409, b"10\n", "text/x.tlog.size")
    assert witness.post(log.request(10, 20, proof=log.proof(9, 20))).status == 422
    assert witness.post(log.request(12, 11, proof=[])).status == 400
    assert witness.post(Log(ORIGIN, seed=9, leaves=20).request(10, 20)).status == 403
    assert witness.post(Log("example.org/other", seed=1, leaves=3).request(0, 3)).status == 404
    unparseable = witness.post(b"old ten\n\n" + log.checkpoint(20).encode())
    assert unparseable.status == 400
    assert unparseable.json()["problems"][0]["field"] == "old"
    assert witness.post(log.request(10, 20)).status == 200


def test_unexpected_requests_are_4xx_never_500(witness: WitnessProcess, log: Log) -> None:
    assert witness.post(b"", method="GET").status == 405
    assert witness.post(b"x", path="/v1/elections").status == 404
    assert witness.post(log.request(0, 1), path="/add-checkpoint?x=1").status == 400
    for junk in (b"\x00" * 100, b"old 0\n\n" + b"\xff" * 50, "old 0\n\n\u2014\n\n\u2014 \n".encode(),
                 b"\n\n\n\n", b"old 0\n\n" + log.checkpoint(1).encode().replace(b"\n", b"\r\n"),
                 b"old 0\n\n" + log.checkpoint(1).encode()[:-1]):
        assert witness.post(junk).status == 400, junk


def raw(witness: WitnessProcess, data: bytes) -> bytes:
    """Send bytes on a socket; what the witness answers before it closes (or 30 s)."""
    with socket.create_connection(("127.0.0.1", witness.port), timeout=30) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
            if b"\r\n\r\n" in reply and reply.rstrip().endswith(b"}"):
                break
        return reply


def test_a_body_above_the_limit_is_413(witness: WitnessProcess, log: Log) -> None:
    from ledger.http.witness import MAX_BODY_BYTES

    # Refused from its declared length, before the body is read.
    reply = raw(witness, b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\nold"
                % (MAX_BODY_BYTES + 1))
    assert reply.startswith(b"HTTP/1.1 413") and b'"problems"' in reply, reply[:300]
    # Refused as it streams in, when no length is declared (chunked): just past the limit.
    chunk = b"y" * 65536
    body = b"%x\r\n%s\r\n" % (len(chunk), chunk) * (MAX_BODY_BYTES // len(chunk) + 1)
    reply = raw(witness, b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n" + body)
    assert reply.startswith(b"HTTP/1.1 413") and b'"problems"' in reply, reply[:300]
    # A request within the limit is still read and answered.
    assert witness.post(log.request(0, 1)).status == 200


def race(witness_urls: list[WitnessProcess], bodies: list[bytes]) -> list[int]:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda pair: pair[0].post(pair[1]).status,
                             [(witness_urls[i % len(witness_urls)], b) for i, b in enumerate(bodies)]))


def test_concurrent_requests_from_one_size_get_exactly_one_200(
        tmp_path: Path, witness: WitnessProcess, log: Log) -> None:
    statuses = race([witness], [log.request(0, 5)] * 24)
    assert sorted(statuses) == [200] + [409] * 23
    # From one old size to different new sizes: only one may win, or the other would roll back.
    statuses = race([witness], [log.request(5, n) for n in range(6, 30)])
    assert sorted(statuses) == [200] + [409] * 23
    # Two witness processes on one state file: the transaction orders them too.
    twin = WitnessProcess(tmp_path, "golos.key", [f"{ORIGIN}=cec.pub"], "golos.state").start()
    try:
        size = int(witness.post(log.request(0, 40)).body)
        statuses = race([witness, twin], [log.request(size, 40)] * 24)
        assert sorted(statuses) == [200] + [409] * 23
    finally:
        twin.stop()


def test_a_witness_killed_right_after_a_200_still_refuses_that_size(
        witness: WitnessProcess, log: Log) -> None:
    assert witness.post(log.request(0, 7)).status == 200
    witness.stop(signal.SIGKILL)
    witness.start()
    replay = witness.post(log.request(0, 7))
    assert (replay.status, replay.body) == (409, b"7\n")
    assert witness.post(log.request(7, 12)).status == 200
    witness.stop(signal.SIGKILL)
    witness.start()
    assert witness.post(log.request(7, 12)).body == b"12\n"


def test_the_client_learns_the_size_then_cosigns_a_checkpoint_that_meets_a_quorum(
        witness: WitnessProcess, log: Log) -> None:
    vkey = (witness.directory / "golos.vkey").read_text().strip()
    policy = parse_policy(f"witness golos {vkey} {witness.url}\nquorum golos\n")
    prefix = policy.witnesses["golos"].url
    assert prefix is not None
    assert witness_client.submit(prefix, 0, [], log.checkpoint(8)) [0] == 200
    signed = log.checkpoint(30)
    status, body = witness_client.submit(prefix, 0, [], signed)
    assert status == 409
    old = witness_client.conflict_size(body)
    status, body = witness_client.submit(prefix, old, log.proof(old, 30), signed)
    assert status == 200
    cosigned = add_cosignatures(signed, body, policy.witnesses["golos"])
    result = check_cosigned(cosigned, log.key.public_key(), policy)
    assert result.ok and result.verified == ("golos",)
    assert not check_cosigned(signed, log.key.public_key(), policy).quorum_met


def test_an_unreachable_witness_raises_oserror() -> None:
    from tests.serving import free_port

    with pytest.raises(OSError):
        witness_client.submit(f"http://127.0.0.1:{free_port()}", 0, [], "x\n", timeout=2)


def test_bad_command_lines_are_one_line_and_exit_2(tmp_path: Path, log: Log) -> None:
    cosigner_key(tmp_path)
    cosigner_key(tmp_path, "other")
    log.write_public_key(tmp_path / "cec.pub")
    (tmp_path / "junk.pub").write_text("not a key\n")
    (tmp_path / "mismatch.key").write_bytes((tmp_path / "other.key").read_bytes())
    (tmp_path / "mismatch.vkey").write_text((tmp_path / "golos.vkey").read_text())
    (tmp_path / "lonely.key").write_bytes((tmp_path / "golos.key").read_bytes())
    good = f"{ORIGIN}=cec.pub"
    for args, why in [
        (["--key", "golos.key"], "required: --log"),
        (["--key", "golos.key", "--log", "cec.pub"], "expected ORIGIN=FILE"),
        (["--key", "golos.key", "--log", f"{ORIGIN}=missing.pub"], "missing.pub"),
        (["--key", "golos.key", "--log", f"{ORIGIN}=junk.pub"], "neither a PEM public key nor"),
        (["--key", "golos.key", "--log", good, "--log", good], "given twice"),
        (["--key", "nope.key", "--log", good], "nope.key"),
        (["--key", "cec.pub", "--log", good], "not a readable private key"),
        (["--key", "lonely.key", "--log", good], "lonely.vkey"),
        (["--key", "mismatch.key", "--log", good], "is not the vkey of mismatch.key"),
        (["--key", "golos.key", "--log", good, "--port", "0"], "expected a port"),
        (["--key", "golos.key", "--log", good, "--state", "nodir/x.state"], "does not exist"),
    ]:
        result = ledger("witness", "serve", *args, cwd=tmp_path)
        assert result.returncode == 2 and why in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_log_given_as_a_vkey(tmp_path: Path, log: Log) -> None:
    from ledger.trust.note import ED25519, VerifierKey, raw_public_key

    cosigner_key(tmp_path)
    vkey = VerifierKey(ORIGIN, ED25519, raw_public_key(log.key.public_key())).text()
    (tmp_path / "cec.vkey").write_text(vkey)
    running = WitnessProcess(tmp_path, "golos.key", [f"{ORIGIN}=cec.vkey"], "golos.state").start()
    try:
        assert running.post(log.request(0, 3)).status == 200
    finally:
        running.stop()
