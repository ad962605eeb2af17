"""Which witnesses a party trusts and how many must agree: a C2SP tlog-policy file.

::

    # comments on lines of their own
    witness golos   obs-golos+1a2b3c4d+BMx…  http://127.0.0.1:8081
    witness party-b party-b+5e6f7a8b+BKq…
    group both 2 golos party-b          # K of the members; or all, or any
    quorum both                          # or: quorum none

Fields are separated by spaces and tabs. A group names only witnesses and groups defined on
earlier lines, and each name is a member of at most one group, so a witness counts at most once
towards the quorum. ``log`` lines are allowed and ignored: the log's key comes from elsewhere
(``--public-key``). Names are the policy's own; a witness's vkey carries the name its
cosignatures are signed under. Every bad line is reported as ``line N: why``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ledger.errors import BadInput
from ledger.trust import note
from ledger.trust.note import COSIGNATURE_V1, BadNote, VerifierKey

NONE = "none"  # the predefined name of the empty quorum
_ALLOWED = re.compile(rb"[^\x09\x0a\x20-\x7e\x80-\xff]")
_FIELDS = re.compile(r"[ \t]+")
SHOWN_PROBLEMS = 5


class BadPolicy(BadInput):
    """A policy file that does not parse; ``problems`` holds ``(line, why)`` for each bad line."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        shown = [f"line {n}: {why}" if n else why for n, why in problems[:SHOWN_PROBLEMS]]
        more = len(problems) - SHOWN_PROBLEMS
        super().__init__(f"{source}: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else ""))


@dataclass(frozen=True)
class Witness:
    name: str
    key: VerifierKey
    url: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    quorum: str
    witnesses: dict[str, Witness] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)


def read_policy(path: Path) -> Policy:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise BadInput(f"{path}: {error.strerror or error}") from None
    return parse_policy(data, str(path))


def parse_policy(data: bytes | str, source: str = "policy") -> Policy:
    """A policy, strictly; ``BadPolicy`` naming every bad line."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    reader = _Reader()
    for number, raw in enumerate(data.split(b"\n"), start=1):
        bad = _ALLOWED.search(raw)
        if bad:
            reader.problems.append((number, f"control character 0x{bad[0][0]:02x}; only tab and "
                                            "newline are allowed"))
            continue
        line = raw.decode("utf-8", "surrogateescape").strip(" \t")
        if not line or line.startswith("#"):
            continue
        try:
            reader.read(_FIELDS.split(line))
        except _BadLine as why:
            reader.problems.append((number, str(why)))
    if reader.quorum is None and not reader.problems:
        reader.problems.append((0, "no quorum line: a policy needs one (quorum NAME, or quorum none)"))
    if reader.problems:
        raise BadPolicy(source, reader.problems)
    assert reader.quorum is not None
    return Policy(reader.quorum, reader.witnesses, reader.groups)


class _BadLine(Exception):
    pass


class _Reader:
    """The definitions read so far: a group or the quorum may name only these."""

    def __init__(self) -> None:
        self.witnesses: dict[str, Witness] = {}
        self.groups: dict[str, Group] = {}
        self.quorum: str | None = None
        self.problems: list[tuple[int, str]] = []
        self.defined: set[str] = set()       # with names from bad lines: no cascade of errors
        self.in_group: dict[str, str] = {}   # member -> the group that lists it

    def read(self, fields: list[str]) -> None:
        keyword, args = fields[0], fields[1:]
        if keyword == "log":
            if not 1 <= len(args) <= 2:
                raise _BadLine(f"log takes a vkey and an optional URL, got {len(args)} fields")
        elif keyword == "witness":
            self.witness(args)
        elif keyword == "group":
            self.group(args)
        elif keyword == "quorum":
            self.set_quorum(args)
        else:
            raise _BadLine(f"unknown keyword {keyword!r}: expected log, witness, group or quorum "
                           "(comments start with #)")

    def define(self, name: str) -> None:
        if name == NONE:
            raise _BadLine("'none' is predefined (the empty quorum); choose another name")
        if name in self.defined:
            raise _BadLine(f"{name!r} is already defined")
        self.defined.add(name)

    def witness(self, args: list[str]) -> None:
        if args:
            self.define(args[0])  # even if the rest is wrong: no error on the lines naming it
        if not 2 <= len(args) <= 3:
            raise _BadLine(f"witness takes a name, a vkey and an optional URL, got {len(args)} "
                           "fields (comments go on lines of their own)")
        name, text = args[0], args[1]
        try:
            key = note.parse_vkey(_utf8(text, "vkey"), COSIGNATURE_V1)
        except BadNote as error:
            raise _BadLine(f"witness {name!r}: {error}") from None
        for other in self.witnesses.values():
            if other.key.public_key == key.public_key:
                raise _BadLine(f"witness {name!r} has the same public key as witness {other.name!r}")
        url = args[2] if len(args) == 3 else None
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _BadLine(f"witness {name!r}: URL {url!r} is not an http:// or https:// URL "
                               "(its submission prefix)")
        self.witnesses[name] = Witness(name, key, url)

    def group(self, args: list[str]) -> None:
        if args:
            self.define(args[0])
        if len(args) < 3:
            raise _BadLine("group takes a name, all|any|K and at least one member")
        name, rule, members = args[0], args[1], args[2:]
        n = len(members)
        if rule == "all":
            threshold = n
        elif rule == "any":
            threshold = 1
        elif rule.isascii() and rule.isdigit() and rule == str(int(rule)) and 1 <= int(rule) <= n:
            threshold = int(rule)
        else:
            raise _BadLine(f"group {name!r}: {rule!r} is not all, any or a number from 1 to its "
                           f"{n} member(s)")
        for member in members:
            if member == NONE:
                raise _BadLine(f"group {name!r}: 'none' cannot be a member")
            if member not in self.defined:
                raise _BadLine(f"group {name!r}: member {member!r} is not defined on an earlier line")
            if member in self.in_group:
                earlier = self.in_group[member]
                where = "twice" if earlier == name else f"in group {earlier!r} too"
                raise _BadLine(f"group {name!r}: {member!r} is listed {where}; a name may be a "
                               "member once, so that it counts once")
            self.in_group[member] = name
        self.groups[name] = Group(name, threshold, tuple(members))

    def set_quorum(self, args: list[str]) -> None:
        if len(args) != 1:
            raise _BadLine(f"quorum takes one name (or none), got {len(args)} fields")
        if self.quorum is not None:
            raise _BadLine(f"a second quorum line (the first says {self.quorum!r})")
        name = args[0]
        if name != NONE and name not in self.defined:
            raise _BadLine(f"quorum {name!r} is not defined on an earlier line")
        self.quorum = name


def _utf8(text: str, what: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _BadLine(f"the {what} is not valid UTF-8") from None
    return text


def quorum_satisfied(policy: Policy, verified_witness_names: Iterable[str]) -> bool:
    """Whether witnesses named ``verified_witness_names`` (the policy's names for the witnesses
    whose cosignatures verified; each counted once) satisfy the policy's quorum."""
    verified = set(verified_witness_names)
    met: dict[str, bool] = {NONE: True}
    met.update((name, name in verified) for name in policy.witnesses)
    # Members are always defined on earlier lines, so one pass in file order settles each group.
    for group in policy.groups.values():
        met[group.name] = sum(met[m] for m in group.members) >= group.threshold
    return met[policy.quorum]


def describe_quorum(policy: Policy) -> str:
    """The quorum in words, e.g. ``quorum 'both': 2 of golos, party-b``."""
    if policy.quorum == NONE:
        return "quorum none (no cosignature required)"

    def rule(name: str) -> str:
        group = policy.groups.get(name)
        if group is None:
            return name
        inner = ", ".join(rule(m) for m in group.members)
        return f"{group.threshold} of ({inner})"

    return f"quorum {policy.quorum!r}: {rule(policy.quorum)}"
