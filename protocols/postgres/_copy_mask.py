"""Column masking of one ``COPY ... TO STDOUT`` (text or CSV), sans-IO.

The probe (``_copy_probe``) gave the columns, ``StreamMasking.plan`` which
of them a column rule (or a secret-like name) replaces whole. Each CopyData
message is split into rows (PostgreSQL sends one row per message, but the
protocol does not promise it: a row cut between messages is held until it
is complete); in every row only the fields of those columns are decoded,
replaced as in a DataRow (placeholder text, a JSON string for json/jsonb,
NULL where the type has no room for text) and written back escaped for the
format. A message whose rows all stay as they were is passed on as is.
Content rules still apply to the whole message afterwards (the relay's
``mask_other``), as for any COPY.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _wire as w
from ._copy_format import (
    CopyFormat,
    RowSplitter,
    decode_field,
    encode_field,
    field_spans,
    split_terminator,
)
from ._masking import NULL, REPLACE, REPLACE_JSON
from ._messages import Column

Counts = dict[str, int]
_WHOLE = frozenset({REPLACE, REPLACE_JSON, NULL})


class CopyShapeError(Exception):
    """A COPY row has another number of fields than the probe said: which
    field is which is unknown, so nothing can be masked by column."""


class CopyColumns:
    """Masking state of one COPY TO stream."""

    __slots__ = ("_cols", "_fmt", "_header", "_kinds", "_masking", "_ncols", "_rules", "_split")

    def __init__(self, masking: Any, plan: Any, columns: Sequence[Column], fmt: CopyFormat) -> None:
        self._masking = masking
        self._fmt = fmt
        self._split = RowSplitter(fmt)
        self._header = fmt.header
        self._ncols = len(plan.kinds)
        self._cols = list(columns)
        self._kinds = [(i, k, plan.rules[i]) for i, k in enumerate(plan.kinds) if k in _WHOLE]
        self._rules = plan.rules

    def feed(self, payload: bytes) -> tuple[bytes | None, Counts]:
        """The CopyData payload to send instead of ``payload`` (None: send it
        unchanged; b"": nothing yet, all of it is held)."""
        held = bool(self._split.tail)
        rows = self._split.feed(payload)
        counts: Counts = {}
        out: list[bytes] = []
        changed = held or bool(self._split.tail)
        for row in rows:
            new = self._row(row, counts)
            if new is not None:
                changed = True
                out.append(new)
            else:
                out.append(row)
        if not changed:
            return None, counts
        return b"".join(out), counts

    def finish(self) -> tuple[bytes, Counts]:
        """At CopyDone: the held rest (a last row without a terminator)."""
        tail = self._split.take_tail()
        if not tail:
            return b"", {}
        counts: Counts = {}
        new = self._row(tail, counts)
        return (tail if new is None else new), counts

    def _row(self, row: bytes, counts: Counts) -> bytes | None:
        if self._header:
            self._header = False  # the column names: no values
            return None
        fmt = self._fmt
        content, term = split_terminator(row, fmt)
        spans = field_spans(content, fmt)
        if len(spans) != self._ncols:
            raise CopyShapeError(f"a COPY row has {len(spans)} fields, {self._ncols} were expected")
        masking = self._masking
        pieces: list[bytes] = []
        pos = 0
        for i, kind, rid in self._kinds:
            s, e = spans[i]
            value = decode_field(content[s:e], fmt)
            if value is None:
                continue
            new, c = masking.mask_value(value, kind, self._cols[i].type_oid, rid)
            for k, n in c.items():
                counts[k] = counts.get(k, 0) + n
            if new is value:
                continue
            pieces.append(content[pos:s])
            pieces.append(encode_field(new, fmt))
            pos = e
        if not pieces:
            return None
        pieces.append(content[pos:])
        pieces.append(term)
        return b"".join(pieces)


def copy_data(payload: bytes) -> bytes:
    return w.message(w.COPY_DATA, payload)


__all__ = ["CopyColumns", "CopyShapeError", "copy_data"]
