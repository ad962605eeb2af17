"""The effective protocol: which of a station's protocols counts, for each reporter.

docs/projections.md: the latest visible protocol of that reporter (by ``occurred_at``, ties by log
position), leaving out any protocol that a visible protocol ``supersedes``. This module is
the one place that rule is written; the tallies, the audit views, the NIST export and the
report all build on the CTE it returns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from projections.moment import visible


class _Protocol(Protocol):
    @property
    def event_id(self) -> str: ...
    @property
    def supersedes(self) -> str | None: ...


def counts_alone(protocols: Sequence[_Protocol], superseded: Collection[str]) -> bool:
    """Whether a (station, reporter)'s ``protocols`` are one protocol that supersedes none and
    that no protocol (its ``event_id`` not in ``superseded``) supersedes. By the rule above it
    is then the effective protocol from the moment it is visible, and never anything else, so
    the running totals may add its figures as a step (projections/steps.py) instead of asking
    ``effective_protocols``. ``COMPLEX_GROUPS`` is the same rule, set-wise, for a rebuild."""
    return (len(protocols) == 1 and protocols[0].supersedes is None
            and protocols[0].event_id not in superseded)


# Every (election, station, reporter) whose protocols do not count alone (``counts_alone``):
# more than one, one that supersedes, one superseded. (A protocol of a station never
# registered is complex too, for the steps need the station's register: see steps.build.)
COMPLEX_GROUPS = """
SELECT election, station, reported_by FROM protocols
GROUP BY election, station, reported_by HAVING COUNT(*) > 1
UNION SELECT election, station, reported_by FROM protocols WHERE supersedes IS NOT NULL
UNION SELECT p.election, p.station, p.reported_by FROM protocols p
      WHERE p.event_id IN (SELECT supersedes FROM protocols WHERE supersedes IS NOT NULL)
"""


def effective_protocols(*, one_reporter: bool = True, one_station: bool = False,
                        among: str | None = None) -> str:
    """SQL ``WITH`` clauses ending in ``effective``: one row per (station, reporter) with
    ``position, station, reported_by, occurred_at, supersedes, event_id``.

    Binds ``:election``, ``:as_of`` and ``:known_at``; with ``one_reporter``, ``:reporter``
    (the query then uses the (election, reporter, occurred_at) index); with ``one_station``,
    ``:station``; with ``among``, only the stations that SQL subquery returns. Join
    ``protocols USING (position)`` for the figures.
    """
    only = (" AND reported_by = :reporter" if one_reporter else "") + (
        " AND station = :station" if one_station else "") + (
        f" AND station IN ({among})" if among else "")
    # A few stations among many: look them up by station, not by scanning the reporter's.
    source = "protocols INDEXED BY idx_protocols_election_station" if among else "protocols"
    return f"""
WITH superseded AS (
    SELECT supersedes FROM protocols
    WHERE election = :election AND supersedes IS NOT NULL AND {visible()}
),
ranked AS (
    SELECT position, station, reported_by, occurred_at, supersedes, event_id,
           ROW_NUMBER() OVER (
               PARTITION BY station, reported_by ORDER BY occurred_at DESC, position DESC
           ) AS recency
    FROM {source}
    WHERE election = :election AND {visible()}{only}
      AND event_id NOT IN (SELECT supersedes FROM superseded)
),
effective AS (
    SELECT position, station, reported_by, occurred_at, supersedes, event_id
    FROM ranked WHERE recency = 1
)"""
