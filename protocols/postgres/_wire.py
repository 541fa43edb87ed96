"""PostgreSQL wire framing, sans-IO.

Theory of operation
-------------------
Every message after startup is ``type(1) length(4, includes itself) body``.
The startup phase is different: the client's first packet (StartupMessage,
SSLRequest, GSSENCRequest, CancelRequest) has no type byte, only
``length(4) code(4) ...``. Type letters mean different things in each
direction (frontend ``D`` is Describe, backend ``D`` is DataRow), so a framer
is always built for one direction.

The framers never copy message bodies: ``feed`` returns the buffer it parsed
and a list of ``(type, start, end)`` spans into it, so a relay can forward
whole runs of messages with one slice and decode only the messages it cares
about. Partial trailing data is kept for the next ``feed``. A long message
that arrives in many chunks is kept as a list of chunks and joined once it
is complete (``LONG_MESSAGE``): appending every chunk to one buffer would copy
it again on each read, quadratic in its length.
"""

from __future__ import annotations

import struct

# -- constants -----------------------------------------------------------------

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102

MAX_STARTUP_LENGTH = 10_000
"""PostgreSQL itself refuses startup packets longer than this."""

DEFAULT_MAX_FRONTEND = 256 * 1024 * 1024
DEFAULT_MAX_BACKEND = 1024 * 1024 * 1024 + 64
LONG_MESSAGE = 64 * 1024
"""A partial message longer than this is gathered as a list of chunks."""

# Frontend (client -> server) message types after startup.
FRONTEND_TYPES = frozenset(b"QPBEDCHSFdcfXp")
# Backend (server -> client) message types.
BACKEND_TYPES = frozenset(b"RKSZTDCEINst123nGHWdcAVvwF")

Q, P, B, E, D, C, H, S, F, X = (ord(c) for c in "QPBEDCHSFX")
COPY_DATA, COPY_DONE, COPY_FAIL = ord("d"), ord("c"), ord("f")
PASSWORD = ord("p")
# Backend letters (same values as some frontend letters; direction decides).
AUTH = ord("R")
BACKEND_KEY = ord("K")
PARAMETER_STATUS = ord("S")
READY = ord("Z")
ROW_DESCRIPTION = ord("T")
DATA_ROW = ord("D")
COMMAND_COMPLETE = ord("C")
ERROR = ord("E")
EMPTY_QUERY = ord("I")
NOTICE = ord("N")
PARAMETER_DESCRIPTION = ord("t")
PORTAL_SUSPENDED = ord("s")
PARSE_COMPLETE = ord("1")
BIND_COMPLETE = ord("2")
CLOSE_COMPLETE = ord("3")
NO_DATA = ord("n")
COPY_IN = ord("G")
COPY_OUT = ord("H")
COPY_BOTH = ord("W")
NOTIFICATION = ord("A")
FUNCTION_RESULT = ord("V")
NEGOTIATE_VERSION = ord("v")

STARTUP = 0
"""Pseudo type for untyped startup-phase packets."""

_I32 = struct.Struct("!i")
_I32I32 = struct.Struct("!ii")
_TYPE_LEN = struct.Struct("!BI")


class ProtocolViolation(Exception):
    """The peer sent bytes that are not the PostgreSQL protocol."""


Frame = tuple[int, int, int]
"""(type, start, end) of one message inside the buffer returned by ``feed``;
``start`` is the type byte (or the length, for startup packets)."""

RowsFrame = tuple[int, int, int, int]
"""(type, start, end, DataRows before it) as returned by ``Framer.feed_rows``."""


class Framer:
    """Splits one direction of a connection into messages.

    ``startup=True`` expects untyped startup packets until ``expect_typed()``
    is called (the client side, after it sent its StartupMessage).
    """

    __slots__ = ("_have", "_max", "_need", "_parts", "_startup", "_tail", "_types")

    def __init__(
        self, *, frontend: bool, startup: bool = False, max_length: int | None = None
    ) -> None:
        self._tail = b""
        self._parts: list[bytes] = []
        """The chunks of a long message still incomplete (``_tail`` is empty)."""
        self._have = 0
        self._need = 0
        """Bytes ``_parts`` must hold to complete its first message (0: none)."""
        self._startup = startup
        self._types = FRONTEND_TYPES if frontend else BACKEND_TYPES
        if max_length is None:
            max_length = DEFAULT_MAX_FRONTEND if frontend else DEFAULT_MAX_BACKEND
        self._max = max_length

    @property
    def in_startup(self) -> bool:
        return self._startup

    def expect_typed(self) -> None:
        self._startup = False

    def expect_startup(self) -> None:
        self._startup = True

    def pending(self) -> int:
        """Bytes held back waiting for the rest of a message."""
        return self._have if self._need else len(self._tail)

    def take_tail(self) -> bytes:
        """Hand over the partial data held back (and forget it)."""
        if self._need:
            parts, self._parts, self._have, self._need = self._parts, [], 0, 0
            return b"".join(parts)
        tail, self._tail = self._tail, b""
        return tail

    def _gather(self, data: bytes) -> bytes | None:
        """With a long message incomplete: add ``data`` to its chunks; the
        whole buffer once the message is complete, else None."""
        self._parts.append(data)
        self._have += len(data)
        if self._have < self._need:
            return None
        parts, self._parts, self._have, self._need = self._parts, [], 0, 0
        return b"".join(parts)

    def _keep(self, buf: bytes, pos: int, end: int, stop: int) -> None:
        """Keep ``buf[pos:end]``, the start of a message ending at ``stop``."""
        if stop - pos > LONG_MESSAGE:
            self._tail = b""
            self._parts = [buf[pos:end]]
            self._have = end - pos
            self._need = stop - pos
        else:
            self._tail = buf[pos:]

    def feed(self, data: bytes) -> tuple[bytes, list[Frame]]:
        """Add bytes; return the buffer and the complete messages in it.

        In the startup phase at most one packet is returned, because what
        follows it (TLS, or typed messages) must be framed differently.
        Raises ProtocolViolation on bytes that cannot be PostgreSQL.
        """
        buf = self._tail + data if self._tail else data
        frames: list[Frame] = []
        pos = 0
        end = len(buf)
        if self._startup:
            if end - pos < 8:
                if end >= 4:
                    self._check_startup_len(_I32.unpack_from(buf, 0)[0])
                self._tail = buf
                return buf, frames
            length = _I32.unpack_from(buf, 0)[0]
            self._check_startup_len(length)
            if length > end:
                self._tail = buf
                return buf, frames
            frames.append((STARTUP, 0, length))
            self._tail = buf[length:]
            return buf, frames
        if self._need:
            whole = self._gather(data)
            if whole is None:
                return b"", frames
            buf = whole
            end = len(buf)
        types = self._types
        limit = self._max
        unpack = _I32.unpack_from
        while end - pos >= 5:
            t = buf[pos]
            length = unpack(buf, pos + 1)[0]
            stop = pos + 1 + length
            if t not in types or length < 4 or length > limit:
                if t in types and length > limit:
                    raise ProtocolViolation(f"a message of {length} bytes is longer than the limit of {limit}")
                raise ProtocolViolation(
                    f"invalid message (type {t!r}, length {length}) at offset {pos}"
                )
            if stop > end:
                self._keep(buf, pos, end, stop)
                return buf, frames
            frames.append((t, pos, stop))
            pos = stop
        self._tail = buf[pos:] if pos < end else b""
        return buf, frames

    def feed_rows(self, data: bytes) -> tuple[bytes, int, int, list[RowsFrame], int]:
        """Backend hot path: like ``feed`` after startup, but DataRows are
        only counted, not listed.

        Returns ``(buf, start, end, others, rows)``: ``buf[start:end]`` holds
        complete messages; ``others`` lists every message that is not a
        DataRow as ``(type, start, end, rows_before)`` where ``rows_before``
        counts the DataRows before it in this call; ``rows`` counts all of
        them. Between two listed messages there are only DataRows.
        """
        others: list[RowsFrame] = []
        if self._need:
            whole = self._gather(data)
            if whole is None:
                return b"", 0, 0, others, 0
            buf = whole
        else:
            buf = self._tail + data if self._tail else data
        pos = 0
        end = len(buf)
        last = end - 5
        types = self._types
        limit = self._max
        unpack = _TYPE_LEN.unpack_from
        rows = 0
        while pos <= last:
            t, length = unpack(buf, pos)  # length unsigned: never negative
            stop = pos + 1 + length
            if t == 68 and 4 <= length <= limit:  # DataRow: the common case
                if stop > end:
                    self._keep(buf, pos, end, stop)
                    return buf, 0, pos, others, rows
                rows += 1
                pos = stop
                continue
            if t not in types or length < 4 or length > limit:
                raise ProtocolViolation(
                    f"invalid message (type {t!r}, length {length}) at offset {pos}"
                )
            if stop > end:
                self._keep(buf, pos, end, stop)
                return buf, 0, pos, others, rows
            others.append((t, pos, stop, rows))
            pos = stop
        self._tail = buf[pos:] if pos < end else b""
        return buf, 0, pos, others, rows

    @staticmethod
    def _check_startup_len(length: int) -> None:
        if length < 8 or length > MAX_STARTUP_LENGTH:
            raise ProtocolViolation(f"invalid startup packet length {length}")


# -- encoders --------------------------------------------------------------------


def message(t: int | bytes, body: bytes = b"") -> bytes:
    tb = bytes((t,)) if isinstance(t, int) else t
    return tb + _I32.pack(len(body) + 4) + body


def cstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    if b"\0" in b:
        b = b.replace(b"\0", b"?")
    return b + b"\0"


def startup_message(params: dict[str, str], version: int = PROTOCOL_3_0) -> bytes:
    body = _I32.pack(version) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return _I32.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    return _I32I32.pack(8, SSL_REQUEST)


def cancel_request(pid: int, key: int) -> bytes:
    return struct.pack("!iiii", 16, CANCEL_REQUEST, pid, key)


def password_message(password: str | bytes) -> bytes:
    return message(PASSWORD, cstr(password))


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(PASSWORD, cstr(mechanism) + _I32.pack(len(data)) + data)


def sasl_response(data: bytes) -> bytes:
    return message(PASSWORD, data)


def query(sql: str) -> bytes:
    return message(Q, cstr(sql))


def terminate() -> bytes:
    return message(X)


def sync() -> bytes:
    return message(S)


def parse(name: str, sql: str) -> bytes:
    return message(P, cstr(name) + cstr(sql) + b"\0\0")


def bind(portal: str, stmt: str) -> bytes:
    return message(B, cstr(portal) + cstr(stmt) + b"\0\0" + b"\0\0" + b"\0\0")


def execute(portal: str, max_rows: int = 0) -> bytes:
    return message(E, cstr(portal) + _I32.pack(max_rows))


# Backend messages the gateway writes itself.

NOTICE_FIELDS_ORDER = "SVCMDHPpqWstcdnFLR"


def error_fields(fields: dict[str, str]) -> bytes:
    return b"".join(k.encode() + cstr(v) for k, v in fields.items()) + b"\0"


def error_response(
    code: str, msg: str, *, severity: str = "ERROR", detail: str = "", hint: str = ""
) -> bytes:
    fields = {"S": severity, "V": severity, "C": code, "M": msg}
    if detail:
        fields["D"] = detail
    if hint:
        fields["H"] = hint
    return message(ERROR, error_fields(fields))


def notice_response(code: str, msg: str, *, detail: str = "", hint: str = "") -> bytes:
    fields = {"S": "NOTICE", "V": "NOTICE", "C": code, "M": msg}
    if detail:
        fields["D"] = detail
    if hint:
        fields["H"] = hint
    return message(NOTICE, error_fields(fields))


def auth_ok() -> bytes:
    return message(AUTH, _I32.pack(0))


def auth_cleartext() -> bytes:
    return message(AUTH, _I32.pack(3))


def auth_sasl(mechanisms: list[str]) -> bytes:
    return message(AUTH, _I32.pack(10) + b"".join(cstr(m) for m in mechanisms) + b"\0")


def auth_sasl_continue(data: bytes) -> bytes:
    return message(AUTH, _I32.pack(11) + data)


def auth_sasl_final(data: bytes) -> bytes:
    return message(AUTH, _I32.pack(12) + data)


def parameter_status(name: str, value: str) -> bytes:
    return message(PARAMETER_STATUS, cstr(name) + cstr(value))


def backend_key_data(pid: int, key: int) -> bytes:
    return message(BACKEND_KEY, struct.pack("!ii", pid, key))


def ready_for_query(status: bytes = b"I") -> bytes:
    return message(READY, status)


def negotiate_protocol_version(newest_minor: int, unrecognized: list[str]) -> bytes:
    body = struct.pack("!ii", newest_minor, len(unrecognized))
    body += b"".join(cstr(o) for o in unrecognized)
    return message(NEGOTIATE_VERSION, body)


def command_complete(tag: str) -> bytes:
    return message(COMMAND_COMPLETE, cstr(tag))


def data_row(values: list[bytes | None]) -> bytes:
    parts = [struct.pack("!h", len(values))]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_I32.pack(len(v)))
            parts.append(v)
    return message(DATA_ROW, b"".join(parts))
