"""Decoders for the messages the gateway looks inside, sans-IO.

Each function takes the buffer and the span of one framed message (as
returned by ``_wire.Framer.feed``) so nothing is copied until a field is
actually needed. Malformed bodies raise ``ProtocolViolation``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ._wire import ProtocolViolation

_I16 = struct.Struct("!h")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


class Reader:
    """Cursor over one message body."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise ProtocolViolation("message body is too short")

    def int16(self) -> int:
        self._need(2)
        v: int = _I16.unpack_from(self.buf, self.pos)[0]
        self.pos += 2
        return v

    def int32(self) -> int:
        self._need(4)
        v: int = _I32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def uint32(self) -> int:
        self._need(4)
        v: int = _U32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def byte(self) -> int:
        self._need(1)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def bytes_(self, n: int) -> bytes:
        self._need(n)
        v = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return v

    def cstr_bytes(self) -> bytes:
        i = self.buf.find(b"\0", self.pos, self.end)
        if i < 0:
            raise ProtocolViolation("unterminated string")
        v = bytes(self.buf[self.pos : i])
        self.pos = i + 1
        return v

    def cstr(self) -> str:
        return self.cstr_bytes().decode("utf-8", "replace")

    def rest(self) -> bytes:
        v = bytes(self.buf[self.pos : self.end])
        self.pos = self.end
        return v

    def at_end(self) -> bool:
        return self.pos >= self.end


def body(buf: bytes, start: int, end: int) -> Reader:
    """Reader over a typed message's body (after type and length)."""
    return Reader(buf, start + 5, end)


# -- startup phase ---------------------------------------------------------------


def startup_code(buf: bytes, start: int, end: int) -> int:
    return int(_I32.unpack_from(buf, start + 4)[0])


def startup_params(buf: bytes, start: int, end: int) -> dict[str, str]:
    r = Reader(buf, start + 8, end)
    params: dict[str, str] = {}
    while True:
        key = r.cstr()
        if not key:
            break
        params[key] = r.cstr()
        if len(params) > 64:
            raise ProtocolViolation("too many startup parameters")
    return params


def cancel_key(buf: bytes, start: int, end: int) -> tuple[int, int]:
    if end - start != 16:
        raise ProtocolViolation("invalid CancelRequest length")
    pid, key = struct.unpack_from("!ii", buf, start + 8)
    return pid, key


# -- frontend ---------------------------------------------------------------------


def query_text(buf: bytes, start: int, end: int) -> str:
    r = body(buf, start, end)
    return r.cstr()


@dataclass(slots=True)
class ParseMsg:
    name: str
    query: str
    param_types: tuple[int, ...]


def parse_msg(buf: bytes, start: int, end: int) -> ParseMsg:
    r = body(buf, start, end)
    name = r.cstr()
    sql = r.cstr()
    n = r.int16()
    types = tuple(r.uint32() for _ in range(max(n, 0)))
    return ParseMsg(name, sql, types)


@dataclass(slots=True)
class BindMsg:
    portal: str
    statement: str
    param_formats: tuple[int, ...]
    params: tuple[bytes | None, ...]
    result_formats: tuple[int, ...]

    def param_format(self, i: int) -> int:
        f = self.param_formats
        if not f:
            return 0
        return f[0] if len(f) == 1 else (f[i] if i < len(f) else 0)


def bind_msg(buf: bytes, start: int, end: int) -> BindMsg:
    r = body(buf, start, end)
    portal = r.cstr()
    stmt = r.cstr()
    nf = r.int16()
    formats = tuple(r.int16() for _ in range(max(nf, 0)))
    np_ = r.int16()
    params: list[bytes | None] = []
    for _ in range(max(np_, 0)):
        n = r.int32()
        params.append(None if n < 0 else r.bytes_(n))
    nr = r.int16()
    rformats = tuple(r.int16() for _ in range(max(nr, 0)))
    return BindMsg(portal, stmt, formats, tuple(params), rformats)


def execute_msg(buf: bytes, start: int, end: int) -> tuple[str, int]:
    r = body(buf, start, end)
    return r.cstr(), r.int32()


def describe_or_close(buf: bytes, start: int, end: int) -> tuple[int, str]:
    """Describe and Close share a layout: kind ('S' statement / 'P' portal), name."""
    r = body(buf, start, end)
    kind = r.byte()
    if kind not in (ord("S"), ord("P")):
        raise ProtocolViolation("invalid Describe/Close kind")
    return kind, r.cstr()


def function_call(buf: bytes, start: int, end: int) -> tuple[int, list[bytes | None]]:
    r = body(buf, start, end)
    oid = r.uint32()
    nf = r.int16()
    for _ in range(max(nf, 0)):
        r.int16()
    na = r.int16()
    args: list[bytes | None] = []
    for _ in range(max(na, 0)):
        n = r.int32()
        args.append(None if n < 0 else r.bytes_(n))
    return oid, args


def password(buf: bytes, start: int, end: int) -> bytes:
    """A PasswordMessage: NUL-terminated, but tolerate a missing terminator."""
    data = bytes(buf[start + 5 : end])
    return data[:-1] if data.endswith(b"\0") else data


# -- backend ----------------------------------------------------------------------


def auth_code(buf: bytes, start: int, end: int) -> int:
    return body(buf, start, end).int32()


def error_fields(buf: bytes, start: int, end: int) -> dict[str, str]:
    """ErrorResponse / NoticeResponse fields by code letter (S, C, M, D, ...)."""
    r = body(buf, start, end)
    out: dict[str, str] = {}
    while not r.at_end():
        code = r.byte()
        if code == 0:
            break
        out[chr(code)] = r.cstr()
    return out


def error_field_list(buf: bytes, start: int, end: int) -> list[tuple[int, bytes]]:
    r = body(buf, start, end)
    out: list[tuple[int, bytes]] = []
    while not r.at_end():
        code = r.byte()
        if code == 0:
            break
        out.append((code, r.cstr_bytes()))
    return out


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    table_oid: int
    column: int
    type_oid: int
    type_len: int
    type_mod: int
    format: int


def row_description(buf: bytes, start: int, end: int) -> list[Column]:
    r = body(buf, start, end)
    n = r.int16()
    cols = []
    for _ in range(max(n, 0)):
        name = r.cstr()
        table = r.uint32()
        colno = r.int16()
        typ = r.uint32()
        tlen = r.int16()
        tmod = r.int32()
        fmt = r.int16()
        cols.append(Column(name, table, colno, typ, tlen, tmod, fmt))
    return cols


def data_row_values(buf: bytes, start: int, end: int) -> list[bytes | None]:
    r = body(buf, start, end)
    n = r.int16()
    values: list[bytes | None] = []
    for _ in range(max(n, 0)):
        ln = r.int32()
        values.append(None if ln < 0 else r.bytes_(ln))
    return values


def command_tag(buf: bytes, start: int, end: int) -> str:
    return body(buf, start, end).cstr()


def ready_status(buf: bytes, start: int, end: int) -> bytes:
    return bytes(buf[start + 5 : start + 6])


def parameter_status(buf: bytes, start: int, end: int) -> tuple[str, str]:
    r = body(buf, start, end)
    return r.cstr(), r.cstr()


def backend_key(buf: bytes, start: int, end: int) -> tuple[int, int]:
    r = body(buf, start, end)
    return r.int32(), r.int32()


def copy_response(buf: bytes, start: int, end: int) -> tuple[int, tuple[int, ...]]:
    r = body(buf, start, end)
    overall = r.byte()
    n = r.int16()
    return overall, tuple(r.int16() for _ in range(max(n, 0)))


def notification(buf: bytes, start: int, end: int) -> tuple[int, str, bytes]:
    r = body(buf, start, end)
    pid = r.int32()
    channel = r.cstr()
    payload = r.cstr_bytes()
    return pid, channel, payload


def rows_from_tag(tag: str) -> int | None:
    """``SELECT 5`` -> 5, ``INSERT 0 3`` -> 3, ``CREATE TABLE`` -> None."""
    parts = tag.rsplit(" ", 1)
    if len(parts) == 2 and parts[1].isdigit():
        return int(parts[1])
    return None
