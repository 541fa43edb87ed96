"""A statement's text as the recording keeps it.

Bind parameters are recorded masked; the same values written as literals in
the SQL text (``insert ... values ('123-45-6789')``) are masked the same way
here, by the connection's content rules, and a string literal after
``PASSWORD`` (``CREATE ROLE ... PASSWORD '...'``, ``ALTER USER``, a user
mapping's ``OPTIONS (password '...')``) is replaced by ``'[REDACTED]'``.
Only the recording sees this text: the risk scorer gets the statement as
sent, and an approval stays bound to it; reviewers see it as sent but for
the PASSWORD literal (``for_reviewers``).

A text longer than ``RECORDED_SQL_BYTES`` is recorded by its length, SHA-256
and masked first ``HEAD_BYTES``: masking megabytes dense with personal data
(a bulk INSERT) would hold the event loop for a second or more.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

RECORDED_SQL_BYTES = 256 * 1024
HEAD_BYTES = 4096

_PASSWORD_LITERAL = re.compile(
    r"""\b(password\s*=?\s*)(?:[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|\$(\w*)\$.*?\$\2\$)""",
    re.IGNORECASE | re.DOTALL,
)
"""PASSWORD followed by a string constant: standard, escape (E'...') or
dollar-quoted."""


def recorded_sql(masking: Any, text: str) -> str:
    """``text`` as recorded (``text`` itself when nothing is masked).
    ``masking``: the connection's ``StreamMasking`` (active)."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > RECORDED_SQL_BYTES:
        return _in_part(masking, raw)
    out = for_reviewers(text)
    if masking.scans:
        # (the masker's own scan decides the common no-match case: ~1 us for
        # a pgbench statement, where a separate RE2 search costs ~2-3 us)
        data = raw if out is text else out.encode("utf-8", "surrogatepass")
        masked, counts = masking.masker.mask_value(data)
        if counts:
            out = masked.decode("utf-8", "surrogatepass")
    return out


def for_reviewers(text: str) -> str:
    """``text`` as reviewers see it: only a PASSWORD literal redacted (they
    judge the statement as it will run, values included, but need no
    password; the approval store keeps what they see)."""
    if "password" not in text.lower():
        return text
    return _PASSWORD_LITERAL.sub(_redacted, text)


def _redacted(m: re.Match[str]) -> str:
    return m.group(1) + "'[REDACTED]'"


def _in_part(masking: Any, raw: bytes) -> str:
    digest = hashlib.sha256(raw).hexdigest()
    note = f"-- statement of {len(raw)} bytes, recorded in part (sha256 {digest})"
    head = raw[:HEAD_BYTES]
    if b"password" in head.lower():
        return note  # a PASSWORD literal may be cut at the end of the head
    if masking.scans:
        # Fed without flush, a stream masker gives back only what no later
        # byte can change, and holds back at most max_hold bytes: fed that
        # much more than the head, what it gives covers the head, and a
        # value that starts there is masked whole, never cut.
        stream = masking.masker.stream()
        head = stream.feed(raw[: HEAD_BYTES + stream.max_hold])[:HEAD_BYTES]
    return note + "\n" + head.decode("utf-8", "replace")
