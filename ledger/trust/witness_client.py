"""Asking a witness to cosign: one C2SP tlog-witness ``add-checkpoint`` request.

For the ledger's own submitter and for mirrors. A witness that does not know the log's size
yet answers ``409`` with the size it last cosigned (:func:`conflict_size`); send the consistency
proof from there. A ``200`` body holds the cosignature line(s): add them to the checkpoint with
``ledger.trust.cosigned.add_cosignatures``, which keeps only those that verify.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from urllib.parse import urlsplit

from ledger.trust import note

MAX_ANSWER_BYTES = 64 * 1024  # a few cosignature lines; a hostile witness cannot flood memory
SIZE_TYPE = "text/x.tlog.size"


def request_body(old_size: int, proof: Sequence[bytes], signed_checkpoint: str) -> bytes:
    """``old N``, one base64 hash a line, an empty line, then the signed checkpoint."""
    if old_size < 0:
        raise ValueError(f"old size {old_size} is negative")
    lines = [f"old {old_size}", *(note.encode_base64(h) for h in proof)]
    return ("".join(line + "\n" for line in lines) + "\n" + signed_checkpoint).encode()


def add_checkpoint_url(prefix: str) -> str:
    """The endpoint under a witness's submission prefix (a policy line's URL)."""
    parts = urlsplit(prefix)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{prefix!r} is not an http:// or https:// submission prefix")
    return prefix.rstrip("/") + "/add-checkpoint"


def submit(url: str, old_size: int, proof: Sequence[bytes], signed_checkpoint: str,
           *, timeout: float = 10.0) -> tuple[int, str]:
    """POST to the witness at submission prefix ``url``; ``(status, body)`` for any answer.

    A witness that cannot be reached, or does not answer within ``timeout`` seconds, raises
    ``OSError`` (``urllib.error.URLError`` and ``TimeoutError`` are both).
    """
    request = urllib.request.Request(
        add_checkpoint_url(url), data=request_body(old_size, proof, signed_checkpoint),
        method="POST", headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _text(response.read(MAX_ANSWER_BYTES))
    except urllib.error.HTTPError as error:
        with error:
            return error.code, _text(error.read(MAX_ANSWER_BYTES))


def conflict_size(body: str) -> int:
    """The size a witness last cosigned, from its ``409`` body ``N\\n``; ``ValueError`` if not."""
    digits = body.removesuffix("\n")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise ValueError(f"a 409 body is a size and a newline, not {body[:40]!r}")
    return int(digits)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")
