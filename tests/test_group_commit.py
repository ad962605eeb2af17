"""Group commit below HTTP: ``Ledger.append_each`` and the writer's bounded queue, on real ledgers."""

from __future__ import annotations

import asyncio
import json

import pytest

from ledger.http.writer import GroupCommitWriter, Saturated
from ledger.input.reader import parse_line
from ledger.service import LedgerService
from ledger.store.application import Appended, BatchRejected, Ledger
from ledger.store.config import Location
from tests.conftest import LedgerUnderTest, protocol


def batch(*events: dict) -> list:
    return [parse_line(n, json.dumps(e).encode()) for n, e in enumerate(events, start=1)]


def test_each_batch_is_atomic_alone_in_one_transaction(registered: LedgerUnderTest) -> None:
    before = registered.stored_events()
    first = protocol("n1", "07T20:00:00", {"a": 10}, event_id="first")
    recount = protocol("n1", "07T22:00:00", {"a": 11}, event_id="recount", supersedes="first")
    orphan = protocol("n2", "07T20:00:00", {"a": 12}, event_id="orphan")
    needs_orphan = protocol("n2", "07T22:00:00", {"a": 13}, event_id="late", supersedes="orphan")
    ledger = Ledger(Location(registered.db))
    try:
        results = ledger.append_each([
            batch(first),
            batch(orphan, protocol("n2", "07T20:00:00", {"zz": 1})),   # refused whole
            batch(recount),            # relies on batch 1, written in the same transaction
            batch(needs_orphan),       # relies on the refused batch: must not see "orphan"
            batch({**first, "votes": {"a": 99}}),   # same event_id, other content
            batch(first),              # already recorded (by batch 1)
        ])
    finally:
        ledger.close()
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["Appended", "BatchRejected", "Appended", "BatchRejected", "BatchRejected",
                     "Appended"]
    assert isinstance(results[0], Appended) and isinstance(results[2], Appended)
    assert results[2].first_position == results[0].first_position + 1
    assert isinstance(results[3], BatchRejected)
    assert [p.field for p in results[3].outcome.problems] == ["supersedes"]
    assert isinstance(results[5], Appended)
    assert (results[5].count, results[5].outcome.already_recorded) == (0, 1)
    assert results[5].first_position is None
    assert registered.stored_events() == before + 2
    ids = [e["event_id"] for e in registered.query("history")["events"]]
    assert ids[-2:] == ["first", "recount"] and "orphan" not in ids
    assert registered.run("verify").code == 0


def test_a_full_queue_refuses_at_once(registered: LedgerUnderTest) -> None:
    service = LedgerService(Location(registered.db))
    writer = GroupCommitWriter(service, on_commit=lambda first, last: None, capacity=2)

    async def submit_three() -> None:
        writer.submit(batch(protocol("n1", "07T20:00:00", {"a": 1})))
        writer.submit(batch(protocol("n1", "07T20:00:00", {"a": 2})))
        with pytest.raises(Saturated):
            writer.submit(batch(protocol("n1", "07T20:00:00", {"a": 3})))

    try:
        asyncio.run(submit_three())  # the writer thread is not started: nothing drains
    finally:
        service.close()
    assert registered.stored_events() == 4
