"""The event store library's non-public methods this ledger calls, pinned.

eventsourcing has no public way to check a batch against the log and insert it in the same
transaction (its ``insert_events`` opens and commits its own). So, like the library's own
``examples/searchabletimestamps``, the recorders call the protected insert steps inside a
transaction of their own. Should a release rename or reshape them, this fails first, with
the name of the seam, rather than the append path failing obscurely.
"""

from __future__ import annotations

import inspect

import pytest
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder

SEAMS = [
    (SQLiteApplicationRecorder, "_insert_events", ["self", "c", "stored_events", "_"]),
    (PostgresApplicationRecorder, "_lock_table", ["self", "curs"]),
    (PostgresApplicationRecorder, "_insert_stored_events", ["self", "curs", "stored_events", "kwargs"]),
    (PostgresApplicationRecorder, "_fetch_ids_after_insert_events",
     ["self", "curs", "stored_events", "_"]),
]


@pytest.mark.parametrize(("recorder", "name", "parameters"), SEAMS,
                         ids=[f"{r.__name__}.{n}" for r, n, _ in SEAMS])
def test_the_protected_insert_steps_keep_their_shape(
    recorder: type, name: str, parameters: list[str]
) -> None:
    method = getattr(recorder, name, None)
    assert method is not None, f"eventsourcing no longer has {recorder.__name__}.{name}"
    assert list(inspect.signature(method).parameters) == parameters, (
        f"{recorder.__name__}.{name} changed shape: {inspect.signature(method)}"
    )


def test_the_sqlite_insert_step_is_what_the_batch_insert_replaces() -> None:
    """SQLiteLedgerRecorder overrides ``_insert_events`` to insert a batch in one
    executemany; the library must still call it from ``insert_events``."""
    source = inspect.getsource(SQLiteApplicationRecorder.insert_events)
    assert "_insert_events(" in source
