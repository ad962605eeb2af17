"""The seat allocation methods an election may name, and how people call them.

One list, read by the event schema (which methods ``ElectionDefined`` accepts), by the
allocation (``projections.seats``) and by the report (their names in prose). How each one
allocates, with its sources, is in ``projections/seats.py`` and docs/seats.md.
"""

SEAT_METHODS: dict[str, str] = {
    "dhondt": "D'Hondt",
    "sainte_lague": "Sainte-Laguë",
    "modified_sainte_lague": "modified Sainte-Laguë",
    "hare": "Hare largest remainder",
    "droop": "Droop largest remainder",
    "hagenbach_bischoff": "Hagenbach-Bischoff",
    "plurality": "plurality",
    "hare_to_largest_parties": "Hare quota, leftover seats to the largest parties",
}
