"""The read models' JSON columns, encoded and decoded by msgspec, loaded on first use.

A query answered from the running totals reads no vote map; not importing msgspec saves
about a sixth of such a query process's whole run.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any


@cache
def vote_maps() -> Callable[[str | bytes], dict[str, int]]:
    """Decode a ``{choice: votes}`` map, strictly."""
    import msgspec

    return msgspec.json.Decoder(dict[str, int]).decode


@cache
def sorted_json() -> Callable[[Any], bytes]:
    """Encode a value as compact JSON with sorted keys (stable bytes for equal values)."""
    import msgspec

    return msgspec.json.Encoder(order="sorted").encode
