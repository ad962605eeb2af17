"""The witness's decisions, in the contract's order, on a real SQLite state file (no HTTP):
the request sequence of ../shared/c2sp/vectors.json, then every status code with its reason."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.trust.checkpoint import Checkpoint, sign
from ledger.trust.merkle import EMPTY_ROOT
from ledger.trust.note import Ed25519Verifier
from ledger.trust.witness import Answer, Witness, WitnessState
from ledger.trust.witness_key import Cosigner
from tests.conftest import SHARED, require_shared
from tests.witnessing import Log, cosigned_at

VECTORS = SHARED / "c2sp" / "vectors.json"
ORIGIN = "example.org/log"
COSIGNER = Cosigner("witness.example/w1", Ed25519PrivateKey.from_private_bytes(b"\x05" * 32))


def make_witness(state: Path, *logs: Log, clock: float = 1_700_000_000) -> Witness:
    return Witness(COSIGNER, {log.origin: Ed25519Verifier(log.key.public_key()) for log in logs},
                   WitnessState(state), clock=lambda: clock)


def cosignature_of(answer: Answer, checkpoint: str) -> int | None:
    return cosigned_at(answer.body, COSIGNER.name, COSIGNER.private_key.public_key(), checkpoint)


def test_the_published_request_sequence(tmp_path: Path) -> None:
    require_shared(VECTORS)
    scenario = json.loads(VECTORS.read_text())["witness_scenario"]
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(scenario["log_public_key_hex"]))
    witness = Witness(COSIGNER, {scenario["origin"]: Ed25519Verifier(key)},
                      WitnessState(tmp_path / "w.state"), clock=lambda: 1234)
    for step in scenario["requests"]:
        body = f"old {step['old']}\n" + "".join(h + "\n" for h in step["proof"]) + "\n" + step["checkpoint"]
        answer = witness.add_checkpoint(body.encode())
        assert answer.status == step["want"], (step.get("note"), answer)
        if answer.status == 409:
            assert answer.body == step["body"] and answer.content_type == "text/x.tlog.size"
        if answer.status == 200:
            assert cosignature_of(answer, step["checkpoint"]) == 1234


@pytest.fixture
def log() -> Log:
    return Log(ORIGIN, seed=1, leaves=9)


@pytest.fixture
def witness(tmp_path: Path, log: Log) -> Witness:
    return make_witness(tmp_path / "w.state", log)


@pytest.mark.parametrize("body, field, line", [
    (b"", "checkpoint", 0),
    (b"old 0\n", "checkpoint", 0),
    (b"old 0\nQUJD\n", "checkpoint", 0),
    (b"new 0\n\nx", "old", 1),
    (b"old -1\n\nx", "old", 1),
    (b"old 01\n\nx", "old", 1),
    (b"old 1 \n\nx", "old", 1),
    (b"old 0x1\n\nx", "old", 1),
    (b"old \xd9\xa3\n\nx", "old", 1),
    (b"old 9223372036854775808\n\nx", "old", 1),
    (b"old " + b"9" * 5000 + b"\n\nx", "old", 1),
    (b"old 1\nnot base64!\n\nx", "proof", 2),
    (b"old 1\n" + base64.b64encode(bytes(31)) + b"\n\nx", "proof", 2),
    (b"old 1\r\n" + base64.b64encode(bytes(32)) + b"\n\nx", "old", 1),
    (b"old 1\n" + (base64.b64encode(bytes(32)) + b"\n") * 64 + b"\nx", "proof", 65),
    (b"old 0\n\nexample.org/log\n1\n", "checkpoint", 3),
    (b"old 0\n\n\xff\xfe\n\n\xe2\x80\x94 a AAAAAAA=\n", "checkpoint", 3),
    (b"old 0\n\nexample.org/log\n01\n" + base64.b64encode(bytes(32)) + b"\n\n\xe2\x80\x94 a AAAAAAA=\n",
     "checkpoint", 3),
])
def test_a_body_that_cannot_be_parsed_is_400(witness: Witness, body: bytes, field: str, line: int) -> None:
    answer = witness.add_checkpoint(body)
    assert (answer.status, answer.field, answer.line) == (400, field, line), answer
    assert answer.reason and "\n" not in answer.reason


def test_parsing_comes_before_the_origin(witness: Witness) -> None:
    """An unknown origin in a body that does not parse is still a 400."""
    assert witness.add_checkpoint(b"old 01\n\nnobody.example/log\n1\nx\n\n\xe2\x80\x94 a AAAAAAA=\n"
                                  ).status == 400


def test_an_origin_not_witnessed_is_404_even_unsigned(witness: Witness) -> None:
    stranger = Log("example.org/other", seed=2, leaves=3)
    assert witness.add_checkpoint(stranger.request(0, 3)).status == 404
    unsigned = Checkpoint("example.org/other", 3, stranger.tree.root(3)).body + "\n\u2014 x AAAAAAA=\n"
    assert witness.add_checkpoint(f"old 5\n\n{unsigned}".encode()).status == 404


def test_no_valid_signature_by_the_logs_key_is_403(witness: Witness, log: Log) -> None:
    impostor = Log(ORIGIN, seed=3, leaves=9)
    answer = witness.add_checkpoint(impostor.request(0, 9))
    assert answer.status == 403 and "no signature line by this key" in answer.reason
    # Signed by the log's key, but over other bytes: the log's line fails.
    honest = log.checkpoint(9)
    swapped = honest.replace(base64.b64encode(log.tree.root(9)).decode(),
                             base64.b64encode(log.tree.root(8)).decode())
    answer = witness.add_checkpoint(log.request(0, 9, checkpoint=swapped))
    assert answer.status == 403 and "does not verify" in answer.reason
    # 403 comes before the size checks: old above the size, or a wrong old size.
    assert witness.add_checkpoint(impostor.request(12, 9, proof=[])).status == 403
    assert witness.add_checkpoint(impostor.request(4, 9)).status == 403


def test_another_keys_signature_beside_the_logs_is_ignored(witness: Witness, log: Log) -> None:
    both = sign(sign(Checkpoint(ORIGIN, 9, log.tree.root(9)), Log(ORIGIN, 4).key, "mirror"),
                log.key, ORIGIN)
    assert witness.add_checkpoint(log.request(0, 9, checkpoint=both.text())).status == 200


def test_old_above_the_checkpoints_size_is_400(witness: Witness, log: Log) -> None:
    # On a fresh witness this would otherwise be a 409 (old 7, nothing cosigned): 400 comes first.
    answer = witness.add_checkpoint(log.request(7, 5, proof=[]))
    assert (answer.status, answer.field) == (400, "old")


def test_a_wrong_old_size_is_409_with_the_size_cosigned(witness: Witness, log: Log) -> None:
    first = witness.add_checkpoint(log.request(0, 4))
    assert first.status == 200
    for old in (0, 2, 5):
        answer = witness.add_checkpoint(log.request(old, 9))
        assert (answer.status, answer.body, answer.content_type) == (409, "4\n", "text/x.tlog.size")
    assert witness.add_checkpoint(log.request(4, 9)).status == 200
    replayed = witness.add_checkpoint(log.request(4, 9))
    assert (replayed.status, replayed.body) == (409, "9\n")


def test_a_proof_that_does_not_verify_is_422(witness: Witness, log: Log) -> None:
    assert witness.add_checkpoint(log.request(0, 3)).status == 200
    proof = log.proof(3, 9)
    for bad in ([], proof[:-1], [*proof, proof[0]], list(reversed(proof)),
                [bytes(32), *proof[1:]]):
        answer = witness.add_checkpoint(log.request(3, 9, proof=bad))
        assert (answer.status, answer.field) == (422, "proof"), bad
    assert witness.add_checkpoint(log.request(3, 9)).status == 200


def test_a_proof_from_old_zero_is_422(witness: Witness, log: Log) -> None:
    answer = witness.add_checkpoint(log.request(0, 9, proof=[bytes(32)]))
    assert answer.status == 422 and "old size 0" in answer.reason


def test_the_same_size_with_another_root_is_422(witness: Witness, log: Log) -> None:
    assert witness.add_checkpoint(log.request(0, 5)).status == 200
    fork = log.checkpoint(5, root=log.tree.root(4))
    answer = witness.add_checkpoint(log.request(5, 5, proof=[], checkpoint=fork))
    assert answer.status == 422 and "roots differ" in answer.reason
    # The same checkpoint again is consistent with itself, and cosigned again.
    assert witness.add_checkpoint(log.request(5, 5, proof=[])).status == 200


def test_an_empty_tree_has_one_root(witness: Witness, log: Log) -> None:
    assert witness.add_checkpoint(log.request(0, 0, checkpoint=log.checkpoint(0, bytes(32)))).status == 422
    assert witness.add_checkpoint(log.request(0, 0, checkpoint=log.checkpoint(0, EMPTY_ROOT))).status == 200


def test_a_cosignature_is_over_the_checkpoint_as_the_log_signed_it(witness: Witness, log: Log) -> None:
    checkpoint = log.checkpoint(9)
    answer = witness.add_checkpoint(log.request(0, 9, checkpoint=checkpoint))
    assert answer.status == 200 and answer.body.count("\n") == 1
    assert cosignature_of(answer, checkpoint) == 1_700_000_000


def test_extension_lines_are_cosigned_too(witness: Witness, log: Log) -> None:
    extended = Checkpoint(ORIGIN, 9, log.tree.root(9), extensions=("extra line",))
    checkpoint = sign(extended, log.key, ORIGIN).text()
    answer = witness.add_checkpoint(log.request(0, 9, checkpoint=checkpoint))
    assert answer.status == 200 and cosignature_of(answer, checkpoint) is not None


def test_each_origin_is_witnessed_on_its_own(tmp_path: Path, log: Log) -> None:
    other = Log("example.org/second", seed=6, leaves=4)
    witness = make_witness(tmp_path / "w.state", log, other)
    assert witness.add_checkpoint(log.request(0, 9)).status == 200
    assert witness.add_checkpoint(other.request(0, 2)).status == 200
    assert witness.add_checkpoint(other.request(2, 4)).status == 200
    assert witness.add_checkpoint(log.request(4, 9)).body == "9\n"


def test_the_state_survives_a_new_witness_on_the_same_file(tmp_path: Path, log: Log) -> None:
    first = make_witness(tmp_path / "w.state", log)
    assert first.add_checkpoint(log.request(0, 6)).status == 200
    first.state.close()
    again = make_witness(tmp_path / "w.state", log)
    assert again.add_checkpoint(log.request(0, 9)).body == "6\n"
    assert again.add_checkpoint(log.request(6, 9)).status == 200


def test_a_file_that_is_not_a_witness_state_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from ledger.errors import BadInput

    other = tmp_path / "ledger.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE stored_events (x)")
    with pytest.raises(BadInput, match="not a witness state file"):
        WitnessState(other)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(BadInput, match="not a witness state file"):
        WitnessState(garbage)
