"""Tampering with a real ledger file (or PostgreSQL schema), as an attacker with database
access would: triggers dropped first, then rows edited, deleted or moved. Verify must notice."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from ledger.trust.merkle import entry_bytes
from tests.conftest import LATER, NIGHT, PG_SERVER, LedgerUnderTest

SAMPLE = Path(__file__).resolve().parents[1] / "ledger" / "samples" / "council-2030.jsonl"


@pytest.fixture
def signed(registered: LedgerUnderTest) -> tuple[LedgerUnderTest, Path, Path]:
    """A ledger of 10 events with a signed checkpoint of all 10; then 7 more events."""
    registered.append(*NIGHT)
    directory = registered.directory
    assert registered.run("keygen", str(directory / "cec")).code == 0
    note = registered.run("checkpoint", "--key", str(directory / "cec.key"))
    assert note.code == 0, note.err
    (directory / "night.ckpt").write_text(note.out)
    registered.append(*LATER)
    return registered, directory / "night.ckpt", directory / "cec.pub"


def _sql(ledger: LedgerUnderTest, *statements: str) -> None:
    """Run statements directly against the event store, bypassing the ledger."""
    if ledger.backend == "sqlite":
        with sqlite3.connect(ledger.db) as connection:
            for statement in statements:
                connection.execute(statement.format(events="stored_events", index="ledger_index",
                                                    merkle="ledger_merkle", schema="main"))
        return
    schema = ledger.db.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_SERVER) as connection:
        connection.execute(f'SET search_path TO "{schema}"')
        for statement in statements:
            connection.execute(statement.format(events="ledger_events", index="ledger_index",
                                                merkle="ledger_merkle", schema=schema))


def _drop_triggers(ledger: LedgerUnderTest) -> None:
    if ledger.backend == "sqlite":
        with sqlite3.connect(ledger.db) as connection:
            names = [r[0] for r in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'")]
            for name in names:
                connection.execute(f"DROP TRIGGER {name}")
        return
    _sql(ledger, *(f"ALTER TABLE {t} DISABLE TRIGGER USER"
                   for t in ("{events}", "{index}", "{merkle}")))


def _id(ledger: LedgerUnderTest, position: int) -> str:
    return "rowid" if ledger.backend == "sqlite" else "notification_id"


def test_an_intact_ledger_verifies_against_its_signed_checkpoint(
    signed: tuple[LedgerUnderTest, Path, Path],
) -> None:
    ledger, note, key = signed
    result = ledger.run("verify", "--checkpoint", str(note), "--public-key", str(key))
    assert result.code == 0, result.err
    assert result.out.startswith("ok: 17 events intact") and "extends the checkpoint of 10" in result.out


def _tampered(ledger: LedgerUnderTest, note: Path) -> str:
    result = ledger.run("verify", "--checkpoint", str(note))
    assert result.code == 1
    assert result.err.count("\n") == 1 and "Traceback" not in result.err
    return result.err


def test_an_edited_payload_is_caught(signed: tuple[LedgerUnderTest, Path, Path]) -> None:
    ledger, note, _ = signed
    _drop_triggers(ledger)
    key = _id(ledger, 6)
    if ledger.backend == "sqlite":
        _sql(ledger, f"UPDATE {{events}} SET state = CAST(replace(CAST(state AS TEXT), "
                     f"'\"a\":600', '\"a\":900') AS BLOB) WHERE {key} = 10")
    else:
        _sql(ledger, f"UPDATE {{events}} SET state = convert_to(replace(convert_from(state, "
                     f"'UTF8'), '\"a\":600', '\"a\":900'), 'UTF8') WHERE {key} = 10")
    assert "position 10: the stored event does not match leaf 9" in _tampered(ledger, note)


def test_a_deleted_event_in_the_middle_is_caught(signed: tuple[LedgerUnderTest, Path, Path]) -> None:
    ledger, note, _ = signed
    _drop_triggers(ledger)
    _sql(ledger, f"DELETE FROM {{events}} WHERE {_id(ledger, 0)} = 7")
    assert "position 8: the stored event does not match leaf 6" in _tampered(ledger, note)


def test_a_deleted_tail_is_caught_by_the_tree(signed: tuple[LedgerUnderTest, Path, Path]) -> None:
    ledger, note, _ = signed
    _drop_triggers(ledger)
    _sql(ledger, f"DELETE FROM {{events}} WHERE {_id(ledger, 0)} > 15")
    assert "leaf 15: the tree has more leaves than the log has events (15)" in _tampered(
        ledger, note)


def test_a_cleanly_truncated_log_is_caught_by_the_checkpoint(
    signed: tuple[LedgerUnderTest, Path, Path],
) -> None:
    ledger, note, _ = signed
    _drop_triggers(ledger)
    # The attacker removes the last 9 events and every trace of them in the tree, the index
    # and the recorded checkpoints: the log is self-consistent, only the published note knows.
    _sql(ledger, f"DELETE FROM {{events}} WHERE {_id(ledger, 0)} > 8",
         "DELETE FROM {index} WHERE position > 8", "DELETE FROM {merkle}",
         *(["DELETE FROM ledger_checkpoints"] if ledger.backend == "sqlite" else
           ["ALTER TABLE ledger_checkpoints DISABLE TRIGGER USER",
            "DELETE FROM ledger_checkpoints"]))
    _rebuild_tree(ledger, 8)
    alone = ledger.run("verify")
    assert alone.code == 0, alone.err  # nothing inside the database betrays it
    assert ("the log has 8 events but the checkpoint commits to 10: events after position 8 "
            "were removed (truncated)") in _tampered(ledger, note)


def _rebuild_tree(ledger: LedgerUnderTest, size: int) -> None:
    """What a careful attacker would do: recompute a valid tree over the shortened log."""
    from ledger.store.application import Ledger
    from ledger.store.config import locate
    from ledger.trust import merkle
    from ledger.trust.merkle import UNSTORED_LEVELS, entry_bytes

    app = Ledger(locate(ledger.db))
    try:
        events = app.recorder.select_notifications(0, size, inclusive_of_start=False)
        tree = merkle.MemoryTree([merkle.leaf_hash(entry_bytes(e.id, e)) for e in events],
                                 hashed=True)
        rows = [node for node in tree.nodes() if node[0] not in UNSTORED_LEVELS]
    finally:
        app.close()
    if ledger.backend == "sqlite":
        with sqlite3.connect(ledger.db) as connection:
            connection.executemany("INSERT INTO ledger_merkle VALUES (?, ?, ?)", rows)
        return
    schema = ledger.db.rsplit("schema=", 1)[1]
    with psycopg.connect(PG_SERVER) as connection, connection.cursor() as cursor:
        cursor.executemany(f'INSERT INTO "{schema}".ledger_merkle VALUES (%s, %s, %s)', rows)


def test_reordered_events_are_caught(signed: tuple[LedgerUnderTest, Path, Path]) -> None:
    ledger, note, _ = signed
    _drop_triggers(ledger)
    key = _id(ledger, 0)
    _sql(ledger,
         f"UPDATE {{events}} SET {key} = 1000 WHERE {key} = 6",
         f"UPDATE {{events}} SET {key} = 6 WHERE {key} = 7",
         f"UPDATE {{events}} SET {key} = 7 WHERE {key} = 1000")
    assert "position 6: the stored event does not match leaf 5" in _tampered(ledger, note)


def test_a_forged_signature_is_caught(signed: tuple[LedgerUnderTest, Path, Path]) -> None:
    ledger, note, key = signed
    body, _, signature = note.read_text().partition("\n\n")
    name, blob = signature.split(" ")[1:3]
    raw = bytearray(base64.b64decode(blob))
    raw[10] ^= 1
    forged = ledger.directory / "forged.ckpt"
    forged.write_text(f"{body}\n\n\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n")
    result = ledger.run("verify", "--checkpoint", str(forged), "--public-key", str(key))
    assert result.code == 1 and "does not verify: forged or altered" in result.err
    other = ledger.directory / "other"
    assert ledger.run("keygen", str(other)).code == 0
    result = ledger.run("verify", "--checkpoint", str(note), "--public-key", f"{other}.pub")
    assert result.code == 1 and "no signature by this public key" in result.err
    # A note whose body was changed keeps a valid-looking signature line that no longer verifies.
    lines = note.read_text().split("\n")
    lines[1] = "9"
    altered = ledger.directory / "altered.ckpt"
    altered.write_text("\n".join(lines))
    result = ledger.run("verify", "--checkpoint", str(altered), "--public-key", str(key))
    assert result.code == 1 and "forged or altered" in result.err


def test_an_inclusion_proof_checks_offline(signed: tuple[LedgerUnderTest, Path, Path]) -> None:
    ledger, note, key = signed
    proof = ledger.run("prove", "s1-b", "--checkpoint", str(note))
    assert proof.code == 0, proof.err
    path = ledger.directory / "s1.proof"
    path.write_text(proof.out)
    assert json.loads(proof.out)["tree_size"] == 10
    checked = ledger.run("check-proof", str(path), "--checkpoint", str(note), "--public-key",
                         str(key))
    assert checked.code == 0, checked.err
    # The event_id comes from the proved entry itself (not the proof's unhashed metadata).
    assert checked.out.startswith("ok: event 's1-b' at position 10 is leaf 9 of the log of 10 events")
    tampered = json.loads(proof.out)
    entry = base64.b64decode(tampered["entry"]).replace(b'"a":600', b'"a":900')
    tampered["entry"] = base64.b64encode(entry).decode()
    path.write_text(json.dumps(tampered))
    assert ledger.run("check-proof", str(path), "--checkpoint", str(note)).code == 1
    later = ledger.run("prove", "s1-r", "--checkpoint", str(note))
    assert later.code == 2 and "recorded after the checkpoint of size 10" in later.err


def test_proofs_hold_in_a_larger_tree_and_an_edited_node_is_caught(
    ledger: LedgerUnderTest,
) -> None:
    from ledger.store.application import Ledger
    from ledger.store.config import locate
    from ledger.store.integrity import IntegrityFailure, check_proof, checkpoint_of, inclusion_proof
    from ledger.store.integrity import verify as verify_log
    from ledger.trust import merkle
    from tests.conftest import definition, station

    ledger.append(definition(), *(station(f"x{i}", "R", 100 + i) for i in range(299)))
    app = Ledger(locate(ledger.db))
    try:
        tree = app.recorder.integrity_index()
        assert tree.size() == 300
        note = checkpoint_of(tree)
        assert note.root == merkle.MemoryTree(
            [merkle.leaf_hash(entry_bytes(e.id, e))
             for e in app.recorder.select_notifications(0, 300, inclusive_of_start=False)],
            hashed=True).root()
        for event in app.recorder.select_notifications(0, 300, inclusive_of_start=False)[::7]:
            event_id = json.loads(event.state)["event"]["event_id"]
            check_proof(inclusion_proof(app.recorder, tree, event_id, note), note)
        assert verify_log(app.recorder, tree, note).size == 300
    finally:
        app.close()
    _drop_triggers(ledger)
    _sql(ledger, "UPDATE {merkle} SET hash = " + (
        "zeroblob(32)" if ledger.backend == "sqlite" else "decode(repeat('00', 32), 'hex')"
    ) + " WHERE level = 5 AND idx = 3")
    app = Ledger(locate(ledger.db))
    try:
        with pytest.raises(IntegrityFailure, match=r"tree node \(level 5, index 3\) over leaves 96-127"):
            verify_log(app.recorder, app.recorder.integrity_index(), None)
    finally:
        app.close()
