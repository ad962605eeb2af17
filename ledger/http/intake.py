"""What a write request must be before it reaches the writer, and the status a refusal gets.

Over HTTP every line must be signed by its acting reporter (docs/events.md, "Signed events"): an unsigned line
is 401, a definition (the operator's, appended locally) is 403. These are decided here, from
the raw JSON, before any line is planned. Problems found when planning (the ledger's own
rules, signature verification among them) come back from the writer;
``refusal_status`` turns either kind into the one status of the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ledger.domain.events import APPENDED_LOCALLY
from ledger.input.reader import Line, Problem, parse_line

SIGNATURE = "signature"


class _Envelope(msgspec.Struct):
    """The two members screened before decoding; every other member is the decoder's."""

    type: Any = None
    signature: Any = msgspec.UNSET


_envelope = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True)
class Screened:
    """A request's lines, decoded, and the problems found before planning."""

    lines: list[Line]
    unsigned: list[Problem]     # 401
    forbidden: list[Problem]    # 403: definitions, malformed signature objects
    malformed: list[Problem]    # 422: lines that do not decode to an event

    @property
    def problems(self) -> list[Problem]:
        return [*self.unsigned, *self.forbidden, *self.malformed]


def screen(body: bytes) -> Screened:
    """Split a JSON Lines body and check each line's envelope, then decode it."""
    lines: list[Line] = []
    unsigned: list[Problem] = []
    forbidden: list[Problem] = []
    malformed: list[Problem] = []
    for number, raw in enumerate(body.split(b"\n"), start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            envelope = _envelope.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            envelope = None  # the decoder below says precisely what is wrong
        if envelope is not None:
            if isinstance(envelope.type, str) and envelope.type in APPENDED_LOCALLY:
                forbidden.append(Problem(number, "type", f"{envelope.type} is the operator's: "
                                         "definitions are appended locally, not over HTTP"))
            elif envelope.signature is msgspec.UNSET:
                unsigned.append(Problem(number, SIGNATURE, "missing: every line sent over HTTP "
                                        "must be signed by its acting reporter"))
            elif not _well_formed(envelope.signature):
                forbidden.append(Problem(number, SIGNATURE, 'expected {"by": REPORTER, '
                                         '"ed25519": BASE64}'))
        line = parse_line(number, text)
        lines.append(line)
        if line.problem is None:
            pass
        elif (line.problem.field or "").split(".")[0] == SIGNATURE:
            # A signature object of the right keys whose values are not a reporter id or
            # base64 of 64 bytes: malformed, so 403 like any signature that cannot verify.
            if not any(p.line == number for p in forbidden):
                forbidden.append(line.problem)
        else:
            malformed.append(line.problem)
    return Screened(lines, unsigned, forbidden, malformed)


def _well_formed(signature: Any) -> bool:
    return (isinstance(signature, dict) and set(signature) == {"by", "ed25519"}
            and all(isinstance(v, str) and v for v in signature.values()))


def refusal_status(screened: Screened | None, planned: Sequence[Problem] = ()) -> int:
    """The one status of a refused request: the first that applies of 401, 403, 422
    (signatures are checked before content)."""
    if screened is not None and screened.unsigned:
        return 401
    if (screened is not None and screened.forbidden) or any(
            (p.field or "").split(".")[0] == SIGNATURE for p in planned):
        return 403
    return 422


def problem_json(problems: Sequence[Problem]) -> list[dict[str, Any]]:
    return [{"line": p.line, "field": p.field, "reason": p.reason} for p in problems]
