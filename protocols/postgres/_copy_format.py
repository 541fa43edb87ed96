"""COPY text and CSV rows, sans-IO: split a CopyData stream into rows, a row
into fields, and decode/encode one field exactly as PostgreSQL writes it.

Column masking of ``COPY ... TO STDOUT`` replaces single fields: it needs
the field's *value* (a ``fields:`` rule with ``replace: hmac`` hashes the
value, not its escaped form) and must write the replacement back escaped
for the format, so a client's COPY reader (psql, psycopg) reads the
replacement and every other field unchanged. Fields a rule does not hit are
never decoded: their bytes are kept as they came.

Text format (PostgreSQL ``CopyAttributeOutText``): fields separated by the
delimiter (tab), a row ends at ``\\n``; a backslash escapes the next byte
(``\\b \\f \\n \\r \\t \\v``, octal ``\\NNN``, hex ``\\xHH``, anything else
stands for itself); a field whose raw bytes equal the NULL string (``\\N``)
is NULL.

CSV (``CopyAttributeOutCSV``): a field is quoted when it holds the
delimiter, the quote, CR or LF, or equals the NULL string (empty by
default); inside quotes the escape byte (default: the quote) precedes every
quote and escape byte; only an *unquoted* field equal to the NULL string is
NULL; rows end at ``\\n`` outside quotes (a quoted field may span lines).

Only ASCII-compatible client encodings can be split this way (in SJIS,
BIG5, GBK... a trailing byte may equal ``\\``): callers refuse the others.
"""

from __future__ import annotations

from dataclasses import dataclass

_TEXT_ESCAPES = {ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("v"): 11}
_TEXT_OUT = {8: b"\\b", 12: b"\\f", 10: b"\\n", 13: b"\\r", 9: b"\\t", 11: b"\\v"}
_BACKSLASH = 0x5C
_NL = 0x0A
_CR = 0x0D
_OCTAL = frozenset(b"01234567")
_HEX = frozenset(b"0123456789abcdefABCDEF")

ASCII_SAFE_ENCODINGS = frozenset(
    {
        "UTF8", "UNICODE", "SQL_ASCII", "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5",
        "LATIN6", "LATIN7", "LATIN8", "LATIN9", "LATIN10", "WIN1250", "WIN1251", "WIN1252",
        "WIN1253", "WIN1254", "WIN1255", "WIN1256", "WIN1257", "WIN1258", "WIN866", "WIN874",
        "KOI8R", "KOI8U", "ISO_8859_5", "ISO_8859_6", "ISO_8859_7", "ISO_8859_8", "EUC_JP",
        "EUC_CN", "EUC_KR", "EUC_TW", "EUC_JIS_2004", "MULE_INTERNAL",
    }
)  # fmt: skip
"""Server-side encodings whose multi-byte characters never contain an ASCII
byte (PostgreSQL's own list of client-only encodings is SJIS, BIG5, GBK,
UHC, GB18030, JOHAB, SHIFT_JIS_2004): in these a byte equal to ``\\``, the
delimiter or the quote is that character."""


def ascii_safe(encoding: str) -> bool:
    """Can a COPY stream in ``encoding`` be split byte-wise?"""
    return encoding.upper().replace("-", "_") in ASCII_SAFE_ENCODINGS or encoding.upper() in (
        "UTF-8",
    )


@dataclass(frozen=True, slots=True)
class CopyFormat:
    """The options of one COPY that shape its text: format, delimiter,
    NULL string, quote and escape (CSV), header."""

    csv: bool = False
    delimiter: int = 9
    null: bytes = b"\\N"
    quote: int = 0x22
    escape: int = 0x22
    header: bool = False

    @classmethod
    def text(
        cls, delimiter: bytes = b"\t", null: bytes = b"\\N", header: bool = False
    ) -> CopyFormat:
        return cls(False, delimiter[0], null, 0x22, 0x22, header)

    @classmethod
    def make_csv(
        cls,
        delimiter: bytes = b",",
        null: bytes = b"",
        quote: bytes = b'"',
        escape: bytes | None = None,
        header: bool = False,
    ) -> CopyFormat:
        q = quote[0]
        return cls(True, delimiter[0], null, q, escape[0] if escape else q, header)


class RowSplitter:
    """Splits a COPY TO stream into complete rows, however it is chunked.

    ``feed`` returns the rows completed by ``data`` (each with its line
    terminator) and keeps the rest; ``tail`` is what is held. Joining every
    row returned and the final ``tail`` gives back the input exactly. CSV
    quote state carries across chunks, so a held row is never re-scanned."""

    __slots__ = ("_esc_next", "_fmt", "_in_quote", "_scanned", "tail")

    def __init__(self, fmt: CopyFormat) -> None:
        self._fmt = fmt
        self.tail = b""
        self._scanned = 0
        """Bytes of ``tail`` already scanned (their quote state is known)."""
        self._in_quote = False
        self._esc_next = False

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.tail + data if self.tail else data
        rows: list[bytes] = []
        start = 0
        if not self._fmt.csv:
            # a newline is always escaped inside a text-format value
            pos = buf.find(b"\n", self._scanned)
            while pos >= 0:
                rows.append(buf[start : pos + 1])
                start = pos + 1
                pos = buf.find(b"\n", start)
            self.tail = buf[start:]
            self._scanned = len(self.tail)
            return rows
        quote = self._fmt.quote
        esc = self._fmt.escape
        in_quote = self._in_quote
        esc_next = self._esc_next
        i = start + self._scanned
        n = len(buf)
        while i < n:
            c = buf[i]
            if in_quote:
                if esc_next:
                    esc_next = False
                elif c == esc and esc != quote:
                    esc_next = True
                elif c == quote:
                    # a doubled quote (escape == quote) closes and reopens
                    in_quote = False
            elif c == quote:
                in_quote = True
            elif c == _NL:
                rows.append(buf[start : i + 1])
                start = i + 1
            i += 1
        self._in_quote = in_quote
        self._esc_next = esc_next
        self.tail = buf[start:]
        self._scanned = len(self.tail)
        return rows

    def take_tail(self) -> bytes:
        tail, self.tail = self.tail, b""
        self._scanned = 0
        self._in_quote = self._esc_next = False
        return tail


def split_terminator(row: bytes, fmt: CopyFormat) -> tuple[bytes, bytes]:
    """(fields part, line terminator: ``\\n``, ``\\r\\n`` or nothing)."""
    if row.endswith(b"\r\n") and (fmt.csv or not _escaped_at(row, len(row) - 2)):
        return row[:-2], row[-2:]
    if row.endswith(b"\n"):
        return row[:-1], row[-1:]
    return row, b""


def _escaped_at(row: bytes, i: int) -> bool:
    """Is row[i] preceded by an odd number of backslashes (text format)?"""
    n = 0
    while i - n - 1 >= 0 and row[i - n - 1] == _BACKSLASH:
        n += 1
    return n % 2 == 1


def field_spans(content: bytes, fmt: CopyFormat) -> list[tuple[int, int]]:
    """(start, end) of every field of a row without its terminator."""
    spans: list[tuple[int, int]] = []
    delim = fmt.delimiter
    start = 0
    i = 0
    n = len(content)
    if not fmt.csv:
        while i < n:
            c = content[i]
            if c == _BACKSLASH:
                i += 2
                continue
            if c == delim:
                spans.append((start, i))
                start = i + 1
            i += 1
        spans.append((start, n))
        return spans
    quote, esc = fmt.quote, fmt.escape
    in_quote = False
    while i < n:
        c = content[i]
        if in_quote:
            if c == esc and esc != quote and i + 1 < n:
                i += 2
                continue
            if c == quote:
                in_quote = False
        elif c == quote:
            in_quote = True
        elif c == delim:
            spans.append((start, i))
            start = i + 1
        i += 1
    spans.append((start, n))
    return spans


def decode_field(raw: bytes, fmt: CopyFormat) -> bytes | None:
    """The value of one field's raw bytes (None: NULL)."""
    if fmt.csv:
        return _decode_csv(raw, fmt)
    if raw == fmt.null:
        return None
    if _BACKSLASH not in raw:
        return raw
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c != _BACKSLASH or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = raw[i + 1]
        i += 2
        if nxt in _OCTAL:
            val = nxt - 48
            for _ in range(2):
                if i < n and raw[i] in _OCTAL:
                    val = val * 8 + raw[i] - 48
                    i += 1
            out.append(val & 0xFF)
        elif nxt == ord("x") and i < n and raw[i] in _HEX:
            j = i + 1 if not (i + 1 < n and raw[i + 1] in _HEX) else i + 2
            out.append(int(raw[i:j], 16))
            i = j
        else:
            out.append(_TEXT_ESCAPES.get(nxt, nxt))
    return bytes(out)


def _decode_csv(raw: bytes, fmt: CopyFormat) -> bytes | None:
    quote, esc = fmt.quote, fmt.escape
    if quote not in raw:
        return None if raw == fmt.null else raw
    out = bytearray()
    in_quote = False
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if in_quote:
            if (
                c == esc
                and i + 1 < n
                and raw[i + 1] in (quote, esc)
                and (esc != quote or raw[i + 1] == quote)
            ):
                out.append(raw[i + 1])
                i += 2
                continue
            if c == quote:
                in_quote = False
            else:
                out.append(c)
        elif c == quote:
            in_quote = True
        else:
            out.append(c)
        i += 1
    return bytes(out)


def encode_field(value: bytes | None, fmt: CopyFormat) -> bytes:
    """A value written as PostgreSQL writes it in this format."""
    if value is None:
        return fmt.null
    if fmt.csv:
        return _encode_csv(value, fmt)
    delim = fmt.delimiter
    if not any(c < 0x20 or c in (_BACKSLASH, delim) for c in value):
        return value
    out = bytearray()
    for c in value:
        if c < 0x20:
            special = _TEXT_OUT.get(c)
            if special is not None:
                out += special
                continue
            if c == delim:
                out.append(_BACKSLASH)
            out.append(c)
        elif c in (_BACKSLASH, delim):
            out.append(_BACKSLASH)
            out.append(c)
        else:
            out.append(c)
    return bytes(out)


def _encode_csv(value: bytes, fmt: CopyFormat) -> bytes:
    quote, esc, delim = fmt.quote, fmt.escape, fmt.delimiter
    needs = value == fmt.null or any(c in (delim, quote, _NL, _CR) for c in value)
    if not needs:
        return value
    out = bytearray((quote,))
    for c in value:
        if c in (quote, esc):
            out.append(esc)
        out.append(c)
    out.append(quote)
    return bytes(out)


__all__ = [
    "CopyFormat",
    "RowSplitter",
    "ascii_safe",
    "decode_field",
    "encode_field",
    "field_spans",
    "split_terminator",
]
