"""Masking of the backend stream, sans-IO.

Decoding every DataRow in Python costs ~15 MB/s, so the relay never does that
for rows that cannot change. Instead:

1. a *prefilter* -- one RE2 alternation of every content rule with its
   boundary assertions (``\\b``, ``^``, ``$``) removed, so it matches a
   superset of what the engine matches -- runs over the whole received
   buffer (framing bytes included) in one C call;
2. only messages that contain a prefilter hit are decoded and handed to the
   masking engine value by value (the engine applies boundaries, validators
   and allow-lists on the isolated value), then re-framed;
3. a result set whose columns match a field (column) rule is rewritten row
   by row, because every row changes.

Removing an assertion can only make a regex match more, and a value's bytes
are a substring of the buffer, so a value the engine would mask always
contains a prefilter hit: skipping rows without hits is safe.

Binary-format values are masked in place only for types whose binary form is
their text (text, varchar, bpchar, name, json, xml, unknown; jsonb after its
version byte). A binary value of any other type that a rule hits is replaced
by NULL: never passed unmasked, never corrupted. The same holds in text
format for types whose loaders reject a ``[LABEL]`` (numbers, inet, arrays of
numbers...); json/jsonb stay JSON (a replaced column is a JSON string, a hit
outside a JSON string re-serializes the document).
"""

from __future__ import annotations

import bisect
import fnmatch
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from masking._regex import pattern_pieces
from masking.engine import KV_ID
from masking.replacements import looks_masked

from ._messages import Column, data_row_values, error_field_list, notification
from ._wire import (
    COPY_DATA,
    DATA_ROW,
    ERROR,
    NOTICE,
    NOTIFICATION,
    PARAMETER_STATUS,
    cstr,
    data_row,
    message,
)

Counts = dict[str, int]
_LENGTH = struct.Struct("!i")

TEXT_OIDS = frozenset({25, 1043, 1042, 19, 114, 142, 705, 18, 2275})
"""Types whose binary format is their text bytes."""
JSONB_OID = 3802
OPAQUE_OIDS = frozenset(
    {16, 1082, 1083, 1266, 1114, 1184, 1186, 2950, 700, 701, 26, 2205, 2206, 28, 29, 27, 3220}
)
"""Types that cannot carry text (bool, dates, uuid, floats...): never scanned,
as in ``masking.rows.OPAQUE_TYPES``."""
USER_OID_MIN = 16384

INT_OIDS = {21: 2, 23: 4, 20: 8}
NUMERIC_OID = 1700
INET_OIDS = frozenset({869, 650})
NUMBER_ARRAY_OIDS = frozenset({1005, 1007, 1016, 1231, 1041, 651})
"""int2[], int4[], int8[], numeric[], inet[], cidr[]."""
RECORD_OID = 2249
DECODED_OIDS = frozenset({*INT_OIDS, NUMERIC_OID, *INET_OIDS, *NUMBER_ARRAY_OIDS, RECORD_OID})
"""Binary numbers and addresses are decoded to text to be scanned (a card
number stored as bigint is still a card number, an inet still an IP
address); the prefilter cannot see them, so result sets with such columns
are checked row by row."""

JSON_OIDS = frozenset({114, JSONB_OID})
TEXT_LIKE_OIDS = frozenset({1009, 1015, 1014, 1003, 1002, 143, 2249})
"""Text forms where a replacement inside a value keeps the value loadable:
arrays of text types (``{a,[EMAIL]}``) and anonymous records."""

PASS, SCAN, SCAN_OR_NULL, REPLACE, NULL, DECODE, REPLACE_JSON, SCAN_JSON, SCAN_HEX, JSON_KEYS = range(10)
"""Per-column plan kinds. Whatever replaces a value is something a driver's
loader for the column's type accepts: text for text types, a JSON string
for json/jsonb, NULL for anything else (a number column holding ``[CARD]``
fails psycopg's int loader, and ``[SSN]`` is no jsonb binary value)."""
_FORCED = frozenset({REPLACE, NULL, DECODE, REPLACE_JSON, SCAN_HEX, JSON_KEYS})
"""JSON_KEYS: a json/jsonb value on a connection with column rules: its
keys are names too (``row_to_json(p)``, ``{"ssn": ...}``), masked by the
same rules as columns, so every row is looked at."""
BYTEA_OIDS = frozenset({17, 1001})
"""bytea and bytea[]: in text format their bytes are hex (``\\x616e6e40...``),
which the prefilter cannot see: decoded and scanned row by row, a hit
replaced in place by the masked bytes' hex (SCAN_HEX)."""
_HEX_RUN = re.compile(rb"\\x((?:[0-9a-fA-F]{2})+)")
_SCANS = frozenset({SCAN, SCAN_OR_NULL, SCAN_JSON})


def strip_assertions(pattern: str) -> str:
    """Remove zero-width assertions outside character classes."""
    out: list[str] = []
    skip_to = 0  # past a rewritten {m,n}
    for i, piece, rewritable in pattern_pieces(pattern):
        if i < skip_to:
            continue
        if rewritable and (piece in ("^", "$") or (piece[0] == "\\" and piece[1:2] in ("b", "B", "A", "z"))):
            continue
        if rewritable and piece == "{":
            close = pattern.find("}", i)
            body = pattern[i + 1 : close] if close > 0 else ""
            if "," in body and body.split(",", 1)[1].strip().isdigit():
                # {m,n} -> {m,}: a superset without counting states (an
                # unanchored DFA with counters blows up and RE2 falls back
                # to its slow NFA)
                out.append("{" + body.split(",", 1)[0] + ",}")
                skip_to = close + 1
                continue
        out.append(piece)
    return "".join(out)


def min_match_width(patterns: Sequence[str]) -> int:
    """The fewest bytes any match of any of ``patterns`` spans (0 if unknown).

    Uses Python's regex parser for the width; a pattern it cannot read (RE2
    only syntax) counts as 0, which turns the shortcut off. Widths are in
    characters, and a UTF-8 character is at least one byte, so this never
    overestimates."""
    import re._parser as sre_parse

    low = None
    for pat in patterns:
        try:
            width = int(sre_parse.parse(pat).getwidth()[0])
        except Exception:
            return 0
        low = width if low is None else min(low, width)
    return low or 0


def prefilter_parts(config: Any) -> list[str]:
    """The content rules of ``config`` with assertions removed."""
    from masking._regex import strip_group_names
    from masking.recognizers import BY_ID

    parts: list[str] = []
    for rid in config.recognizers.active_ids():
        if rid == "pem_private_key":
            parts.append("-----BEGIN ")
            continue
        parts.append(strip_assertions(strip_group_names(BY_ID[rid].pattern)))
    for rule in config.rules:
        if rule.pattern is not None:
            pat = strip_assertions(strip_group_names(rule.pattern))
            parts.append(f"(?i:{pat})" if rule.ignore_case else pat)
    return parts


def content_parts(config: Any, literal: str = "") -> list[str]:
    """What a content scan must find: ``literal``, the masker's
    injected-secret pattern (``Masker.literal_pattern``, on even when
    ``config`` is disabled), and the content rules of an enabled ``config``."""
    parts = [literal] if literal else []
    if config is not None and getattr(config, "enabled", True):
        parts += prefilter_parts(config)
    return parts


def build_prefilter(parts: list[str]) -> Any:
    """A compiled superset matcher for ``parts`` (``content_parts``), or None."""
    from masking._regex import Compiled

    if not parts:
        return None
    # never_nl as in the engine: no value match crosses a newline, so none
    # crosses one here either (framing bytes are outside values).
    return Compiled("|".join(f"(?:{p})" for p in parts).encode(), never_nl=True)


@dataclass(slots=True)
class RowPlan:
    kinds: list[int]
    rules: list[str]
    forced: bool
    """Some column is replaced whole: every row changes."""
    scans: bool


class StreamMasking:
    """Per-connection masking of backend messages (shared by sessions)."""

    def __init__(self, masker: Any, config: Any) -> None:
        self.masker = masker
        self.active = bool(masker is not None and masker.active)
        self.scans = bool(self.active and masker.scans_content)
        parts = content_parts(config, getattr(masker, "literal_pattern", "")) if self.scans else []
        self.prefilter = build_prefilter(parts)
        if self.prefilter is None:
            self.scans = False
        self.min_width = min_match_width(parts) if self.scans else 0
        """No content rule matches fewer bytes: shorter values need no scan."""
        self._qualified: list[tuple[str, str]] = []
        for rule in getattr(config, "rules", ()) or ():
            for field in rule.fields:
                if "." in field:
                    self._qualified.append((rule.id, field.split(".", 1)[1].lower()))
        self._plans: dict[tuple[tuple[str, int, int, tuple[str, str] | None], ...], RowPlan] = {}
        self._json: Any = None
        rules = getattr(config, "rules", ()) or ()
        self.by_name = self.active and (
            (getattr(config, "enabled", True) and any(rule.fields for rule in rules))
            or self.masker.secret_key_name("password")
        )
        """Some values are masked by their column's name (a ``fields:`` rule,
        or a secret-like name with secret_key_value on): a COPY TO STDOUT,
        which names no columns, needs them learned first (``_copy_probe``)."""

    # -- planning ---------------------------------------------------------------
    def column_rule(self, name: str, origin: tuple[str, str] | None = None) -> str | None:
        """The rule masking a result column named ``name`` whose values come
        from ``origin`` (table, column: learned from the catalog by the
        RowDescription's table OID and column number), if any."""
        masker = self.masker
        rid: str | None = masker.field_rule(name)
        if rid is not None:
            return rid
        if origin is not None:
            # the column's own name and table, whatever the query labelled it
            rid = masker.field_rule(origin[1], origin[0])
            if rid is not None:
                return rid
            if masker.secret_key_name(origin[1]):
                return KV_ID
        else:
            low = name.lower()
            for qrid, pat in self._qualified:
                # No known table: a table-qualified rule masks every column
                # of that name (over-masking is the safe side).
                if fnmatch.fnmatchcase(low, pat):
                    return qrid
        if masker.secret_key_name(name):
            # a column named like a secret (password, api_key...) with
            # secret_key_value on: replaced whole, as masking.rows does
            return KV_ID
        return None

    def plan(
        self,
        columns: Sequence[Column],
        formats: Sequence[int] | None = None,
        origins: Sequence[tuple[str, str] | None] | None = None,
    ) -> RowPlan:
        """Plan for a result set. ``formats`` (from Bind) override the
        RowDescription formats (a statement Describe reports 0 for all);
        ``origins`` are the columns' table and column names where known."""
        fmts = [_format_of(formats, i, c.format) for i, c in enumerate(columns)]
        if origins is None:
            origins = (None,) * len(columns)
        key = tuple(
            (c.name, c.type_oid, f, o) for c, f, o in zip(columns, fmts, origins, strict=True)
        )
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        kinds: list[int] = []
        rules: list[str] = []
        for col, fmt, origin in zip(columns, fmts, origins, strict=True):
            oid = col.type_oid
            rid = self.column_rule(col.name, origin) if self.active else None
            if rid is not None:
                if oid in JSON_OIDS:
                    kinds.append(REPLACE_JSON)
                elif oid in TEXT_OIDS or (fmt == 0 and oid >= USER_OID_MIN):
                    # (user types in text: enums, citext... are loaded as str)
                    kinds.append(REPLACE)
                else:
                    kinds.append(NULL)
                rules.append(rid)
                continue
            rules.append("")
            if oid in JSON_OIDS and self.by_name:
                kinds.append(JSON_KEYS)
            elif not self.scans or oid in OPAQUE_OIDS:
                kinds.append(PASS)
            elif oid in JSON_OIDS:
                kinds.append(SCAN_JSON)
            elif fmt == 0 and oid in BYTEA_OIDS:
                kinds.append(SCAN_HEX)
            elif oid in TEXT_OIDS or (fmt == 0 and (oid >= USER_OID_MIN or oid in TEXT_LIKE_OIDS)):
                kinds.append(SCAN)
            elif fmt != 0 and oid in DECODED_OIDS:
                kinds.append(DECODE)
            else:
                # numbers, inet, arrays of numbers... in text, any binary value
                kinds.append(SCAN_OR_NULL)
        plan = RowPlan(
            kinds,
            rules,
            any(k in _FORCED for k in kinds),
            any(k in _SCANS for k in kinds),
        )
        if len(self._plans) < 1024:
            self._plans[key] = plan
        return plan

    # -- scanning -----------------------------------------------------------------
    def hits(self, buf: bytes, start: int, end: int) -> Hits | None:
        """Spans of prefilter matches in buf[start:end] (a run of complete
        messages), or None.

        Matches are leftmost and non-overlapping, so a message must be
        checked when any span *intersects* it (a span that starts in one
        message can cover the start of a match in the next one). One span
        per message is enough: after a match the search goes on from the
        end of its message (or of the match, if that is later). Searched
        from any position, the spans intersect every match that starts at
        or after it, so a message holding a value the engine masks (a
        prefilter match inside it) is still touched; a message only a
        skipped match ran into has no match of its own and needs no look.
        Enumerating every match instead made one search call per e-mail of
        a text cell dense with them, more CPU than masking the cell."""
        pf = self.prefilter
        if pf is None:
            return None
        search = pf.raw_search
        spans = search(buf, start, end)
        s, e = spans[0]
        if s < 0:
            return None
        starts: list[int] = []
        ends: list[int] = []
        unpack = _LENGTH.unpack_from
        msg = start  # a message start at or before s
        while True:
            pos = e if e > s else s + 1
            starts.append(s)
            ends.append(pos)
            while msg < end:
                nxt = msg + 1 + unpack(buf, msg + 1)[0]
                if nxt <= msg or nxt > s:
                    break
                msg = nxt
            else:
                break
            if nxt > pos:
                pos = nxt
            if pos >= end:
                break
            s, e = search(buf, pos, end)[0]
            if s < 0:
                break
        return Hits(starts, ends)

    def mask_value(self, value: bytes, kind: int, type_oid: int, rid: str) -> tuple[bytes | None, Counts]:
        m = self.masker
        if kind in (REPLACE_JSON, SCAN_JSON, JSON_KEYS):
            # jsonb in binary is a version byte and the text
            prefix = value[:1] if type_oid == JSONB_OID and value[:1] == b"\x01" else b""
            doc = value[len(prefix) :]
            if kind == REPLACE_JSON:
                if rid == KV_ID:
                    replaced = m.replace_secret_value(doc)
                else:
                    replaced = m.replace_value(rid, doc)
                quoted = json.dumps(replaced.decode("utf-8", "replace"), ensure_ascii=False)
                return prefix + quoted.encode(), {rid: 1}
            if kind == JSON_KEYS:
                masked_doc, counts = self.mask_json_keys(doc)
            else:
                masked_doc, counts = self.mask_json(doc)
            if not counts:
                return value, counts
            return (None if masked_doc is None else prefix + masked_doc), counts
        if kind == REPLACE:
            if rid == KV_ID:
                if looks_masked(value):
                    return value, {}
                return m.replace_secret_value(value), {rid: 1}
            return m.replace_value(rid, value), {rid: 1}
        if kind == NULL:
            return None, {rid: 1}
        if kind == SCAN:
            masked, counts = m.mask_bytes(value)
            return (masked if counts else value), counts
        if kind == SCAN_HEX:
            return self._mask_hex(value)
        if kind == DECODE:
            if type_oid in NUMBER_ARRAY_OIDS or type_oid == RECORD_OID:
                parts = binary_parts(value, type_oid)
                if parts is None:
                    # malformed: scan the raw bytes as any other binary value
                    parts = [value]
                counts = {}
                for part in parts:
                    _, c = m.mask_bytes(part)
                    for k, n in c.items():
                        counts[k] = counts.get(k, 0) + n
                return (None if counts else value), counts
            text = binary_number_text(value, type_oid)
            if text is None:
                return value, {}
            _, counts = m.mask_bytes(text)
            return (None if counts else value), counts
        # SCAN_OR_NULL: a value whose type has no room for a replacement
        _, counts = m.mask_bytes(value)
        return (None if counts else value), counts

    def _mask_hex(self, value: bytes) -> tuple[bytes | None, Counts]:
        """A bytea (or bytea[]) value in text format: each hex run decoded
        and masked, written back as hex; the rest (escape format) as text."""
        m = self.masker
        counts: Counts = {}

        def one(found: re.Match[bytes]) -> bytes:
            raw = bytes.fromhex(found.group(1).decode("ascii"))
            masked, c = m.mask_bytes(raw)
            if not c:
                return found.group(0)
            for k, n in c.items():
                counts[k] = counts.get(k, 0) + n
            return found.group(0)[: found.start(1) - found.start(0)] + masked.hex().encode()

        out = _HEX_RUN.sub(one, value)
        masked, c = m.mask_bytes(out)
        if c:
            out = masked
            for k, n in c.items():
                counts[k] = counts.get(k, 0) + n
        return (out if counts else value), counts

    def mask_json_keys(self, doc: bytes) -> tuple[bytes | None, Counts]:
        """Mask a JSON document by its keys (column rules, secret-like
        names) and then by content (``mask_json``); re-serialized only if a
        key rule fired."""
        m = self.masker
        if self._json is None:
            self._json = m.json()
        counts: Counts = {}
        try:
            obj = json.loads(doc, parse_constant=_reject)
        except (ValueError, RecursionError):
            obj = None
            if not self.scans:
                return None, {"json": 1}  # cannot be looked at by key: fail closed
        if obj is not None:
            try:
                out, counts = self._json.mask_obj(obj)
            except RecursionError:
                return None, {"json": 1}
            if counts:
                doc = json.dumps(out, ensure_ascii=False, allow_nan=False).encode()
        if not self.scans:
            return doc, counts
        masked, more = self.mask_json(doc)
        for k, n in more.items():
            counts[k] = counts.get(k, 0) + n
        return masked, counts

    def mask_json(self, doc: bytes) -> tuple[bytes | None, Counts]:
        """Mask a JSON document by content, in place where that keeps it
        JSON (a match inside a string); else (a card number as a JSON
        number: ``{"card": [CARD]}``) structurally, re-serialized; None if
        neither gives valid JSON without a hit."""
        m = self.masker
        masked, counts = m.mask_bytes(doc)
        if not counts or _is_json(masked):
            return masked, counts
        if self._json is None:
            self._json = m.json()
        try:
            obj = json.loads(doc, parse_constant=_reject)
            out, _ = self._json.mask_obj(obj)
        except (ValueError, RecursionError):
            # (RecursionError: nested deeper than the parser or the walk go:
            # NULL, as for a document that does not parse)
            return None, counts
        text = json.dumps(out, ensure_ascii=False, allow_nan=False).encode()
        again, more = m.mask_bytes(text)
        if more:
            if not _is_json(again):
                return None, counts
            text = again
        return text, counts

    def mask_row(
        self, buf: bytes, start: int, end: int, plan: RowPlan, columns: Sequence[Column]
    ) -> tuple[bytes | None, Counts]:
        """Re-framed DataRow, or None if unchanged."""
        values = data_row_values(buf, start, end)
        if len(values) != len(plan.kinds):
            # Shape mismatch (should not happen): mask every value by content,
            # NULL anything non-textual that hits.
            return self._mask_row_blind(values)
        counts: Counts = {}
        changed = False
        for i, kind in enumerate(plan.kinds):
            v = values[i]
            if kind == PASS or v is None:
                continue
            nv, c = self.mask_value(v, kind, columns[i].type_oid, plan.rules[i])
            if c:
                for k, n in c.items():
                    counts[k] = counts.get(k, 0) + n
            if nv is not v:
                values[i] = nv
                changed = True
        if not changed:
            return None, counts
        return data_row(values), counts

    def _mask_row_blind(self, values: list[bytes | None]) -> tuple[bytes | None, Counts]:
        counts: Counts = {}
        changed = False
        for i, v in enumerate(values):
            if v is None:
                continue
            masked, c = self.masker.mask_bytes(v)
            if c:
                values[i] = masked
                changed = True
                for k, n in c.items():
                    counts[k] = counts.get(k, 0) + n
        return (data_row(values) if changed else None), counts

    def mask_other(self, t: int, buf: bytes, start: int, end: int, copy_binary: bool) -> tuple[bytes | None, Counts]:
        """Mask a non-DataRow message that had a prefilter hit (or None)."""
        m = self.masker
        if t == COPY_DATA:
            data = bytes(buf[start + 5 : end])
            masked, counts = m.mask_bytes(data)
            if not counts:
                return None, counts
            if copy_binary:
                raise BinaryCopyHit(counts)
            return message(COPY_DATA, masked), counts
        if t == NOTIFICATION:
            pid, channel, payload = notification(buf, start, end)
            masked, counts = m.mask_bytes(payload)
            if not counts:
                return None, counts
            return message(NOTIFICATION, struct.pack("!i", pid) + cstr(channel) + cstr(masked)), counts
        if t in (ERROR, NOTICE):
            fields = error_field_list(buf, start, end)
            counts = {}
            changed = False
            out = []
            for code, value in fields:
                if code not in _KEPT_ERROR_FIELDS:
                    masked, c = m.mask_bytes(value)
                    if c:
                        changed = True
                        value = masked
                        for k, n in c.items():
                            counts[k] = counts.get(k, 0) + n
                out.append(bytes((code,)) + cstr(value))
            if not changed:
                return None, counts
            return message(t, b"".join(out) + b"\0"), counts
        if t == PARAMETER_STATUS:
            # a reported setting's value can be set from query results
            # (set_config('application_name', (select email ...), false))
            body = bytes(buf[start + 5 : end])
            name, _, rest = body.partition(b"\0")
            value = rest[:-1] if rest.endswith(b"\0") else rest
            masked, counts = m.mask_bytes(value)
            if not counts:
                return None, counts
            return message(PARAMETER_STATUS, cstr(name) + cstr(masked)), counts
        return None, {}

    def mask_error_fields(self, fields: dict[str, str]) -> dict[str, str]:
        """The fields of an ErrorResponse as the client sees them after
        ``mask_other``, for what is recorded of it (the Command's error, the
        session's error events) -- the recording must not hold more than the
        client was shown."""
        if not self.scans:
            return fields
        mask = self.masker.mask_text
        out = {}
        for code, value in fields.items():
            if len(code) == 1 and ord(code) not in _KEPT_ERROR_FIELDS:
                value = mask(value)[0]
            out[code] = value
        return out


_KEPT_ERROR_FIELDS = frozenset(b"SVCPpL")
"""ErrorResponse/NoticeResponse fields passed unscanned: severity (S, V),
SQLSTATE (C), positions (P, p) and the source line (L) -- codes and numbers
clients act on, which cannot hold a value. Every other field is scanned,
including ones a newer server may add: besides the message, DETAIL
(``Key (email)=(...) already exists.``), HINT, CONTEXT and the internal
query, which echo values and statement text, the schema, table, column,
data type and constraint names are user-chosen text too (fail closed)."""


class BinaryCopyHit(Exception):
    """A binary COPY row contains a value a rule hits: it cannot be masked in
    place, so the session is ended (fail closed)."""

    def __init__(self, counts: Counts) -> None:
        super().__init__("masking rule hit inside binary COPY data")
        self.counts = counts


def _reject(name: str) -> Any:
    raise ValueError(name)


def _is_json(data: bytes) -> bool:
    """(False too for a document nested deeper than Python's parser goes.)"""
    try:
        json.loads(data, parse_constant=_reject)
    except (ValueError, RecursionError):
        return False
    return True


def binary_number_text(value: bytes, type_oid: int) -> bytes | None:
    """Text form of a binary int2/int4/int8/numeric/inet/cidr value (None if
    malformed)."""
    if type_oid in INET_OIDS:
        return _inet_text(value)
    size = INT_OIDS.get(type_oid)
    if size is not None:
        if len(value) != size:
            return None
        return str(int.from_bytes(value, "big", signed=True)).encode()
    if len(value) < 8:
        return None
    ndigits, weight, sign, _dscale = struct.unpack_from("!hhHh", value, 0)
    if sign == 0xC000:
        return b"NaN"
    if len(value) != 8 + 2 * ndigits:
        return None
    digits = struct.unpack_from(f"!{ndigits}h", value, 8)
    whole = 0
    for d in digits:
        whole = whole * 10000 + d
    # value = whole * 10000 ** (weight - ndigits + 1)
    exp = 4 * (weight - ndigits + 1)
    text = str(whole)
    if exp >= 0:
        text += "0" * exp
    else:
        text = text.rjust(-exp + 1, "0")
        text = text[:exp] + "." + text[exp:]
    return (("-" if sign == 0x4000 else "") + text).encode()


def binary_parts(value: bytes, type_oid: int, depth: int = 0) -> list[bytes] | None:
    """The values inside a binary array or record, as text where they are
    numbers or addresses (raw bytes otherwise), to be scanned one by one;
    None if malformed."""
    if depth > 8:
        return None
    try:
        out: list[bytes] = []
        if type_oid == RECORD_OID:
            (nfields,) = struct.unpack_from("!i", value, 0)
            pos = 4
            for _ in range(nfields):
                oid, size = struct.unpack_from("!Ii", value, pos)
                pos += 8
                if size < 0:
                    continue
                _part(value[pos : pos + size], oid, depth, out)
                pos += size
            return out if pos == len(value) else None
        ndim, _flags, elem = struct.unpack_from("!iiI", value, 0)
        pos = 12
        count = 1 if ndim else 0
        for _ in range(ndim):
            (dim,) = struct.unpack_from("!i", value, pos)
            count *= dim
            pos += 8
        for _ in range(count):
            (size,) = struct.unpack_from("!i", value, pos)
            pos += 4
            if size < 0:
                continue
            _part(value[pos : pos + size], elem, depth, out)
            pos += size
        return out if pos == len(value) else None
    except (struct.error, ValueError):
        return None


def _part(value: bytes, oid: int, depth: int, out: list[bytes]) -> None:
    if oid in INT_OIDS or oid == NUMERIC_OID or oid in INET_OIDS:
        text = binary_number_text(value, oid)
        if text is None:
            raise ValueError("malformed value")
        out.append(text)
    elif oid in NUMBER_ARRAY_OIDS or oid == RECORD_OID:
        inner = binary_parts(value, oid, depth + 1)
        if inner is None:
            raise ValueError("malformed value")
        out += inner
    else:
        out.append(value)


def _inet_text(value: bytes) -> bytes | None:
    import ipaddress

    if len(value) < 4 or len(value) != 4 + value[3]:
        return None
    family, bits, is_cidr = value[0], value[1], value[2]
    raw = bytes(value[4:])
    try:
        addr = ipaddress.ip_address(raw) if family in (2, 3) else None
    except ValueError:
        return None
    if addr is None:
        return None
    text = str(addr)
    if is_cidr or bits != addr.max_prefixlen:
        text += f"/{bits}"
    return text.encode()


def _format_of(formats: Sequence[int] | None, i: int, default: int) -> int:
    if formats is None:
        return default
    if not formats:
        return 0
    if len(formats) == 1:
        return formats[0]
    return formats[i] if i < len(formats) else 0


class Hits:
    """Sorted, non-overlapping prefilter match spans."""

    __slots__ = ("ends", "starts")

    def __init__(self, starts: list[int], ends: list[int]) -> None:
        self.starts = starts
        self.ends = ends

    def touch(self, start: int, end: int) -> bool:
        """Does any span intersect buf[start:end]?"""
        i = bisect.bisect_left(self.starts, end) - 1
        return i >= 0 and self.ends[i] > start and end > start


def frame_index(starts: list[int], pos: int) -> int:
    """Index of the frame containing ``pos`` given sorted frame starts."""
    return bisect.bisect_right(starts, pos) - 1


__all__ = [
    "DATA_ROW",
    "BinaryCopyHit",
    "Hits",
    "RowPlan",
    "StreamMasking",
    "build_prefilter",
    "frame_index",
    "min_match_width",
    "prefilter_parts",
    "strip_assertions",
]
