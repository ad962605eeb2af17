"""``ledger sign``: a reporter signs its JSON Lines offline, before handing them over."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO

from ledger.input.reader import Problem, read_lines
from ledger.trust.checkpoint import load_private_key
from ledger.trust.signatures import SignatureRefused, sign_line


def sign_lines(stream: IO[bytes], key_file: Path, signer: str | None) -> int:
    """Sign every line; print them all, or (exit 2) nothing and one line per problem.

    Lines are checked against the event schema first: a reporter should not sign what the
    ledger would refuse anyway.
    """
    key = load_private_key(key_file)
    signed: list[bytes] = []
    problems: list[Problem] = []
    for line in read_lines(stream):
        if line.event is None:
            assert line.problem is not None
            problems.append(line.problem)
            continue
        try:
            signed.append(sign_line(line.text, line.event, key, signer))
        except SignatureRefused as refused:
            problems.append(Problem(line.number, "signature", str(refused)))
    if problems:
        for problem in problems[:50]:
            print(problem, file=sys.stderr)
        print("nothing was signed: fix the lines above and try again", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    for line_bytes in signed:
        out.write(line_bytes + b"\n")
    out.flush()
    return 0
