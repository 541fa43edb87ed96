"""Masking of typed result rows (PostgreSQL DataRow values and the like).

The plan is made once per result set from the column descriptions: a column
whose name matches a field rule is replaced whole; a column of a type that
cannot hold text (bool, dates, uuid, floats...) is passed through; every other
column is content-scanned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .engine import KV_ID, Counts, _cannot_match
from .replacements import looks_masked

if TYPE_CHECKING:
    from .engine import Masker

# Types whose text form cannot carry a recognizable secret. Integer and numeric
# types are still scanned (a card number stored as bigint is still a card number).
OPAQUE_TYPES = frozenset(
    {
        "bool",
        "boolean",
        "date",
        "time",
        "timetz",
        "time without time zone",
        "time with time zone",
        "timestamp",
        "timestamptz",
        "timestamp without time zone",
        "timestamp with time zone",
        "interval",
        "uuid",
        "float4",
        "float8",
        "real",
        "double precision",
        "oid",
        "regclass",
        "regtype",
        "xid",
        "cid",
        "tid",
        "pg_lsn",
    }
)

_PASS, _SCAN, _REPLACE, _SECRET = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    table: str | None = None
    type_name: str = "text"


class RowMasker:
    def __init__(self, masker: Masker, columns: Sequence[Column]) -> None:
        self._m = masker
        self.columns = tuple(columns)
        plan: list[tuple[int, str]] = []
        for col in self.columns:
            rid = masker.field_rule(col.name, col.table)
            if rid is not None:
                plan.append((_REPLACE, rid))
            elif masker.secret_key_name(col.name):
                plan.append((_SECRET, KV_ID))
            elif masker.scans_content and col.type_name.lower() not in OPAQUE_TYPES:
                plan.append((_SCAN, ""))
            else:
                plan.append((_PASS, ""))
        self._plan = plan
        self._scan = tuple(i for i, (kind, _) in enumerate(plan) if kind == _SCAN)
        self._whole = tuple(
            (i, kind, rid) for i, (kind, rid) in enumerate(plan) if kind in (_REPLACE, _SECRET)
        )
        self.active = bool(self._scan or self._whole)
        self.counts: Counts = {}
        self._mask_short = masker._mask_short
        self._prefilter = masker._prefilter

    def mask(self, values: Sequence[bytes | None]) -> tuple[list[bytes | None], bool, Counts]:
        """Mask one row. Returns (values, changed, counts for this row); ``counts``
        is also added to ``self.counts``."""
        out = list(values)
        if not self.active:
            return out, False, {}
        counts: Counts = {}
        if self._whole:
            self._replace_whole(out, counts)
        prefilter = self._prefilter
        for i in self._scan:
            v = out[i]
            if v is None:
                continue
            if type(v) is not bytes:
                v = bytes(v)
            if prefilter and _cannot_match(v):
                continue
            masked, c = self._mask_short(v)
            if c:
                out[i] = masked
                for k, n in c.items():
                    counts[k] = counts.get(k, 0) + n
        if not counts:
            return out, False, counts
        total = self.counts
        for k, n in counts.items():
            total[k] = total.get(k, 0) + n
        return out, True, counts

    def _replace_whole(self, out: list[bytes | None], counts: Counts) -> None:
        m = self._m
        for i, kind, rid in self._whole:
            v = out[i]
            if v is None:
                continue
            raw = bytes(v)
            if kind == _SECRET:
                if looks_masked(raw):
                    continue
                out[i] = m.replace_secret_value(raw)
            else:
                out[i] = m.replace_value(rid, raw)
            counts[rid] = counts.get(rid, 0) + 1

    def mask_field(self, index: int, value: bytes | None) -> tuple[bytes | None, Counts]:
        """Mask a single value of column ``index`` (for protocols that stream cells)."""
        vals, _, counts = self.mask(
            [None] * index + [value] + [None] * (len(self._plan) - index - 1)
        )
        return vals[index], counts
