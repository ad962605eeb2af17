"""Control relations of a whole protocol: parsing them safely and checking a protocol.

Real protocols carry more lines than v1's five figures, and the election law ties them
together ("invalid = blank + spoiled"). An election states its relations as text in
``ElectionDefined.control_relations``; this module parses them (no ``eval``) and checks
each ``ProtocolIssued`` against them. A failed relation is recorded and flagged, never
refused: the ledger keeps what the commission issued.

Grammar (whitespace separates tokens; ``-`` is subtraction only as a token of its own,
because ids such as ``nur-otan`` contain hyphens)::

    relation := sum ("=" | "<=" | ">=") sum
    sum      := ["-"] term (("+" | "-") term)*
    term     := INTEGER | [INTEGER "*"] name
    name     := a protocol line id | registered_voters | ballots_issued | ballots_cast
              | invalid | valid | votes.CHOICE

``valid`` is the sum of the protocol's votes. ``2*x`` and ``2 * x`` are the same term.
A relation that names a figure the protocol does not give (a null ``registered_voters``,
a line or a choice left out) is skipped for that protocol, not failed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from ledger.domain.events import ElectionDefined, ProtocolIssued, control_check_failures

FIGURES = ("registered_voters", "ballots_issued", "ballots_cast", "invalid", "valid")
OPERATORS = {"=": "≠", "<=": ">", ">=": "<"}  # each comparison and the sign of its failure
# Characters that the grammar reads as operators: a line id holding one cannot be named.
RESERVED = re.compile(r"[\s+=<>*]")
_TOKENS = re.compile(r"\s*(<=|>=|=|\+|\*|<|>|[^\s+=<>*]+)")
_INTEGER = re.compile(r"^[0-9]{1,15}$")


class RelationError(ValueError):
    """A relation that cannot be parsed, or names something the election lacks."""


@dataclass(frozen=True)
class Term:
    sign: int  # +1 or -1
    factor: int
    name: str | None  # None: a constant term, worth ``factor``


@dataclass(frozen=True)
class Relation:
    text: str
    left: tuple[Term, ...]
    operator: str
    right: tuple[Term, ...]

    def names(self) -> set[str]:
        return {t.name for t in (*self.left, *self.right) if t.name is not None}

    def failure(self, figures: Mapping[str, int | None]) -> str | None:
        """Why the protocol with ``figures`` fails this relation; None if it holds or if a
        figure it names is not given."""
        values = {name: figures.get(name) for name in self.names()}
        if any(v is None for v in values.values()):
            return None
        left, right = _value(self.left, values), _value(self.right, values)  # type: ignore[arg-type]
        holds = {"=": left == right, "<=": left <= right, ">=": left >= right}[self.operator]
        if holds:
            return None
        shown = f"{_show(self.left, values)} {OPERATORS[self.operator]} {_show(self.right, values)}"
        return f"{self.text}: {shown}"


def parse(text: str) -> Relation:
    """One relation, or ``RelationError`` saying what is wrong with it."""
    tokens = _tokenize(text)
    comparisons = [i for i, t in enumerate(tokens) if t in OPERATORS]
    for token in tokens:
        if token in ("<", ">"):
            raise RelationError(f"{token!r} is not a comparison here; use =, <= or >=")
    if len(comparisons) != 1:
        raise RelationError("expected exactly one of =, <= or >= between two sums"
                            if not comparisons else "more than one comparison")
    at = comparisons[0]
    left, right = _sum(tokens[:at], "left"), _sum(tokens[at + 1:], "right")
    return Relation(" ".join(text.split()), left, tokens[at], right)


def check_names(relation: Relation, lines: Iterable[str], choices: Iterable[str]) -> list[str]:
    """The names in ``relation`` that the election does not define."""
    known = {*FIGURES, *lines, *(f"votes.{c}" for c in choices)}
    return sorted(relation.names() - known)


@lru_cache(maxsize=64)
def _parsed(relations: tuple[str, ...]) -> tuple[Relation, ...]:
    return tuple(parse(text) for text in relations)


def relations_of(election: ElectionDefined | None) -> tuple[Relation, ...]:
    """The election's parsed relations (parsed once per election, not per protocol).

    Only an election the ledger accepted gets here, so every relation parses."""
    if election is None or not election.control_relations:
        return ()
    return _parsed(tuple(election.control_relations))


def figures_of(protocol: ProtocolIssued) -> dict[str, int | None]:
    figures: dict[str, int | None] = {
        "registered_voters": protocol.registered_voters,
        "ballots_issued": protocol.ballots_issued,
        "ballots_cast": protocol.ballots_cast,
        "invalid": protocol.invalid,
        "valid": sum(protocol.votes.values()),
    }
    figures.update((f"votes.{c}", n) for c, n in protocol.votes.items())
    figures.update(protocol.lines or {})
    return figures


def protocol_failures(protocol: ProtocolIssued, election: ElectionDefined | None,
                      station_register: int | None = None) -> list[str]:
    """Every control check ``protocol`` fails: v1's (against the station's register when
    the protocol gives none), then the election's relations."""
    failures = control_check_failures(protocol, station_register)
    relations = relations_of(election)
    if relations:
        figures = figures_of(protocol)
        failures += [f for r in relations if (f := r.failure(figures)) is not None]
    return failures


def _tokenize(text: str) -> list[str]:
    tokens, at = [], 0
    text = text.rstrip()
    while at < len(text):
        match = _TOKENS.match(text, at)
        if match is None:  # pragma: no cover - the pattern matches any non-blank rest
            raise RelationError(f"cannot read {text[at:]!r}")
        tokens.append(match[1])
        at = match.end()
    if not tokens:
        raise RelationError("empty relation")
    return tokens


def _sum(tokens: list[str], side: str) -> tuple[Term, ...]:
    if not tokens:
        raise RelationError(f"the {side} side is empty")
    terms: list[Term] = []
    sign, at = 1, 0
    if tokens[0] == "-":
        sign, at = -1, 1
    while True:
        term, at = _term(tokens, at, side)
        terms.append(Term(sign, term[0], term[1]))
        if at == len(tokens):
            return tuple(terms)
        if tokens[at] not in ("+", "-"):
            raise RelationError(f"expected + or - before {tokens[at]!r} on the {side} side")
        sign, at = (1 if tokens[at] == "+" else -1), at + 1


def _term(tokens: list[str], at: int, side: str) -> tuple[tuple[int, str | None], int]:
    if at >= len(tokens):
        raise RelationError(f"the {side} side ends with an operator")
    token = tokens[at]
    if _INTEGER.match(token):
        if at + 1 < len(tokens) and tokens[at + 1] == "*":
            if at + 2 >= len(tokens) or not _is_name(tokens[at + 2]):
                raise RelationError(f"expected a name after {token}*")
            return (int(token), tokens[at + 2]), at + 3
        return (int(token), None), at + 1
    if not _is_name(token):
        raise RelationError(f"expected a name or a number, got {token!r}")
    return (1, token), at + 1


def _is_name(token: str) -> bool:
    return token not in ("+", "-", "*", "<", ">", *OPERATORS) and not _INTEGER.match(token)


def _value(terms: tuple[Term, ...], values: Mapping[str, int]) -> int:
    return sum(t.sign * t.factor * (1 if t.name is None else values[t.name]) for t in terms)


def _show(terms: tuple[Term, ...], values: Mapping[str, int]) -> str:
    parts = []
    for index, t in enumerate(terms):
        number = str(t.factor) if t.name is None else (
            f"{t.factor}*{values[t.name]}" if t.factor != 1 else str(values[t.name]))
        if index == 0:
            parts.append(f"-{number}" if t.sign < 0 else number)
        else:
            parts.append(f"{'+' if t.sign > 0 else '-'} {number}")
    return " ".join(parts)


def check_protocol_rules(election: ElectionDefined) -> list[tuple[str, str]]:
    """What is wrong with an election's protocol lines and control relations, as
    (field, reason) pairs: duplicate or unnameable line ids, relations that do not parse
    or name something the election does not define."""
    problems: list[tuple[str, str]] = []
    line_ids: list[str] = []
    for index, line in enumerate(election.protocol_lines or ()):
        where = f"protocol_lines[{index}].id"
        if line.id in line_ids:
            problems.append((where, f"line {line.id!r} is listed twice"))
        elif line.id in FIGURES or line.id.startswith("votes."):
            problems.append((where, f"{line.id!r} is a protocol figure already; choose another id"))
        elif RESERVED.search(line.id) or _INTEGER.match(line.id) or line.id == "-":
            problems.append((where, f"{line.id!r} cannot be named in a relation (no spaces, "
                                    "+, =, <, >, * and not a bare number)"))
        line_ids.append(line.id)
    choices = [choice.id for choice in election.choices]
    for index, text in enumerate(election.control_relations or ()):
        where = f"control_relations[{index}]"
        try:
            relation = parse(text)
        except RelationError as error:
            problems.append((where, f"{error} in {text!r}"))
            continue
        if unknown := check_names(relation, line_ids, choices):
            problems.append((where, f"unknown name(s) {', '.join(map(repr, unknown))} in {text!r}; "
                                    "expected protocol line ids, " + ", ".join(FIGURES)
                                    + " or votes.CHOICE"))
    return problems
