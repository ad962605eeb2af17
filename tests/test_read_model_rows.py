"""The named rows the fold writes are the read-model tables' columns, in the tables' order:
rows are inserted positionally, so a field out of place would land in another column."""

from __future__ import annotations

import pytest

from projections.schema import ROWS, TABLES


@pytest.mark.parametrize("table", sorted(ROWS))
def test_a_named_row_has_its_table_s_columns_in_order(table: str) -> None:
    assert list(ROWS[table]._fields) == list(TABLES[table]["columns"])
