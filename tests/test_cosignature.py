"""Witness cosignatures (C2SP tlog-cosignature v1): the published vector byte for byte, and
counting cosignatures of a signed checkpoint against a policy's quorum."""

from __future__ import annotations

import base64
import hashlib
import json
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.trust import cosignature, note
from ledger.trust.checkpoint import BadCheckpoint, Checkpoint, sign
from ledger.trust.cosigned import add_cosignatures, check_cosigned
from ledger.trust.note import Verdict
from ledger.trust.policy import parse_policy
from tests.conftest import SHARED, require_shared

VECTORS = SHARED / "c2sp" / "vectors.json"


def vector() -> dict[str, object]:
    require_shared(VECTORS)
    return json.loads(VECTORS.read_text())["cosignature_v1"]


def test_the_published_cosignature_byte_for_byte() -> None:
    v = vector()
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(str(v["seed_hex"])))
    name, body, time = str(v["name"]), str(v["checkpoint_body"]), int(str(v["time"]))
    assert cosignature.vkey(name, key.public_key()) == v["vkey"]
    made = cosignature.sign(body, key, name, time)
    assert made.line() == v["line"]
    assert cosignature.timestamp(made) == time
    verifier = cosignature.CosignatureVerifier(note.parse_vkey(str(v["vkey"])))
    assert verifier.accepts(made) and verifier.verify(body.encode(), made.signature)
    assert not verifier.verify(body.replace("10", "11").encode(), made.signature)


def test_the_line_verifies_as_the_specification_reads() -> None:
    """Checked here from the spec's text, not through the module: key id, time, message."""
    v = vector()
    public = note.parse_vkey(str(v["vkey"])).ed25519()
    _, name, encoded = str(v["line"]).rstrip("\n").split(" ")
    blob = base64.b64decode(encoded)
    raw = base64.b64decode(str(v["vkey"]).split("+", 2)[2])
    assert blob[:4] == hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    (time,) = struct.unpack(">Q", blob[4:12])
    public.verify(blob[12:], f"cosignature/v1\ntime {time}\n".encode() + str(v["checkpoint_body"]).encode())


def test_a_timestamp_beyond_two_to_the_63_is_refused() -> None:
    with pytest.raises(ValueError):
        cosignature.message("o\n1\nAA==\n", 2**63)


# -- counting cosignatures against a policy --------------------------------------------------


def key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


LOG = key(1)
WITNESSES = {"golos": key(2), "party-b": key(3), "court": key(4)}


def policy_text(rule: str = "2") -> str:
    lines = [f"witness {name} {cosignature.vkey('w/' + name, k.public_key())} http://127.0.0.1:1"
             for name, k in WITNESSES.items()]
    return "\n".join([*lines, f"group trio {rule} golos party-b court", "quorum trio", ""])


def signed_checkpoint() -> Checkpoint:
    return sign(Checkpoint("example.org/log", 7, bytes(range(32))), LOG, "example.org/log")


def cosign(checkpoint: Checkpoint, *names: str, time: int = 1_700_000_000) -> Checkpoint:
    lines = [cosignature.sign(checkpoint.body, WITNESSES[n], "w/" + n, time) for n in names]
    return Checkpoint(checkpoint.origin, checkpoint.size, checkpoint.root,
                      (*checkpoint.signatures, *lines))


def test_cosignatures_are_counted_against_the_quorum() -> None:
    policy = parse_policy(policy_text())
    one = check_cosigned(cosign(signed_checkpoint(), "golos").text(), LOG.public_key(), policy)
    assert one.verified == ("golos",) and not one.quorum_met and not one.ok
    two = check_cosigned(cosign(signed_checkpoint(), "court", "golos").text(), LOG.public_key(), policy)
    assert set(two.verified) == {"golos", "court"} and two.quorum_met and two.ok
    assert two.summary().startswith("2 of 3 trusted witnesses cosigned") and " met" in two.summary()


def test_a_witness_counts_once_however_often_it_cosigned() -> None:
    policy = parse_policy(policy_text())
    twice = cosign(signed_checkpoint(), "golos", "golos", time=1)
    twice = cosign(twice, "golos", time=2)
    result = check_cosigned(twice.text(), LOG.public_key(), policy)
    assert result.verified == ("golos",) and not result.quorum_met


def test_a_forged_cosignature_does_not_count_and_is_named() -> None:
    policy = parse_policy(policy_text())
    checkpoint = cosign(signed_checkpoint(), "golos", "party-b")
    forged = list(checkpoint.signatures)
    last = forged[-1]
    forged[-1] = note.Signature(last.name, last.key_id, last.signature[:-1] + bytes([last.signature[-1] ^ 1]))
    text = Checkpoint(checkpoint.origin, checkpoint.size, checkpoint.root, tuple(forged)).text()
    result = check_cosigned(text, LOG.public_key(), policy)
    assert result.verified == ("golos",) and result.failed == ("party-b",) and not result.quorum_met
    assert "do not verify: party-b" in result.summary()


def test_a_cosignature_of_another_checkpoint_does_not_count() -> None:
    policy = parse_policy(policy_text("any"))
    other = cosign(sign(Checkpoint("example.org/log", 8, bytes(32)), LOG, "example.org/log"), "golos")
    moved = Checkpoint("example.org/log", 7, bytes(range(32)),
                       (*signed_checkpoint().signatures, other.signatures[-1]))
    result = check_cosigned(moved.text(), LOG.public_key(), policy)
    assert result.verified == () and result.failed == ("golos",) and not result.ok


def test_without_the_logs_signature_the_checkpoint_does_not_count() -> None:
    policy = parse_policy(policy_text("any"))
    unsigned_by_log = cosign(Checkpoint("example.org/log", 7, bytes(range(32))), "golos")
    result = check_cosigned(unsigned_by_log.text(), LOG.public_key(), policy)
    assert result.quorum_met and result.log_signature is Verdict.UNSIGNED and not result.ok
    other_log = check_cosigned(cosign(signed_checkpoint(), "golos").text(), key(9).public_key(), policy)
    assert not other_log.ok


def test_quorum_none_needs_only_the_log() -> None:
    result = check_cosigned(signed_checkpoint().text(), LOG.public_key(), parse_policy("quorum none\n"))
    assert result.ok and result.witnesses == 0


def test_a_witness_answer_adds_its_valid_cosignatures() -> None:
    policy = parse_policy(policy_text("any"))
    checkpoint = signed_checkpoint()
    answer = cosign(checkpoint, "golos").signatures[-1].line()
    stranger = cosignature.sign(checkpoint.body, key(8), "w/golos", 5).line()
    merged = add_cosignatures(checkpoint.text(), answer + stranger, policy.witnesses["golos"])
    assert merged == checkpoint.text() + answer
    assert add_cosignatures(merged, answer, policy.witnesses["golos"]) == merged
    assert check_cosigned(merged, LOG.public_key(), policy).ok
    with pytest.raises(BadCheckpoint, match="witness 'golos' answered"):
        add_cosignatures(checkpoint.text(), "not a signature\n", policy.witnesses["golos"])
