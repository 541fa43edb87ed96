"""A sans-IO HTTP/1.1 message parser and serializer.

Bytes go in (``feed``), events come out; nothing here awaits or touches a
socket, so every split of the input gives the same events (property-tested).

* ``RequestParser`` parses what a client sends: request heads, bodies framed
  by ``Content-Length`` or ``Transfer-Encoding: chunked``.
* ``ResponseParser`` parses what an upstream sends back: interim (1xx) heads,
  final heads, bodies framed by length, chunks or the end of the connection;
  it must be told the request method (a response to HEAD has no body).

After a complete message the parser stops (``DONE``) and buffers what follows
(pipelined requests) until ``next_message()``; the driver calls it once it has
answered. After a ``101 Switching Protocols`` the connection is a tunnel:
``take_buffer()`` returns the bytes that followed, and the driver relays raw.

Smuggling guards: a request with both ``Transfer-Encoding`` and
``Content-Length``, conflicting lengths, a transfer coding other than a final
``chunked``, obsolete line folding, or whitespace before a header colon is
refused with 400. Trailers are parsed and dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_CHUNK_LINE = 4096


class ProtocolError(Exception):
    """The peer broke HTTP/1.1. ``status`` is the response a server would give."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_FIELD = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)\r?")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FIELD_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET_BAD_STR = re.compile(r"[\x00-\x20\x7f-\xff]")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}\Z")

Header = tuple[str, str, str]
"""(lowercased name, name as sent, value)"""


@dataclass(slots=True)
class Headers:
    items: list[Header] = field(default_factory=list)

    def get(self, lname: str, default: str | None = None) -> str | None:
        for n, _, v in self.items:
            if n == lname:
                return v
        return default

    def get_all(self, lname: str) -> list[str]:
        return [v for n, _, v in self.items if n == lname]

    def tokens(self, lname: str) -> list[str]:
        """Comma-separated list values of every field with this name, lowercased."""
        out: list[str] = []
        for n, _, v in self.items:
            if n == lname:
                out.extend(t.strip().lower() for t in v.split(",") if t.strip())
        return out

    def has(self, lname: str) -> bool:
        return any(n == lname for n, _, _ in self.items)

    def remove(self, *lnames: str) -> None:
        drop = set(lnames)
        self.items = [h for h in self.items if h[0] not in drop]

    def set(self, name: str, value: str) -> None:
        lname = name.lower()
        self.remove(lname)
        self.items.append((lname, name, value))

    def add(self, name: str, value: str) -> None:
        self.items.append((name.lower(), name, value))

    def copy(self) -> Headers:
        return Headers(list(self.items))


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str
    version: str
    """``1.1`` or ``1.0``."""
    headers: Headers
    keep_alive: bool
    chunked: bool
    length: int
    """Content-Length (0 when chunked or absent)."""
    connection: list[str]
    """The ``Connection`` tokens, lowercased."""
    upgrade: str
    """The protocol asked for in ``Upgrade`` (lowercased) when ``Connection`` names it."""
    raw: bytes
    """The head as received (without the final empty line)."""

    @property
    def has_body(self) -> bool:
        return self.chunked or self.length > 0


@dataclass(slots=True)
class ResponseHead:
    status: int
    reason: str
    version: str
    headers: Headers
    keep_alive: bool
    framing: str
    """``none`` | ``length`` | ``chunked`` | ``close``."""
    length: int
    connection: list[str]
    raw: bytes


@dataclass(slots=True)
class Data:
    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    pass


END = EndOfMessage()
Event = RequestHead | ResponseHead | Data | EndOfMessage

# parser states
HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILERS, UNTIL_CLOSE, DONE, TUNNEL = range(9)


def _find_head_end(buf: bytearray, start: int) -> tuple[int, int]:
    """(end of head, start of what follows) or (-1, -1). Lines may end in CRLF or LF."""
    crlf = buf.find(b"\r\n\r\n", start)
    lf = buf.find(b"\n\n", start, crlf + 2 if crlf >= 0 else len(buf))
    if lf >= 0 and (crlf < 0 or lf < crlf + 1):
        # a bare-LF ending comes first; "\n\r\n" is handled below
        i = lf
        j = buf.find(b"\n\r\n", start, i)
        if j >= 0:
            return j, j + 3
        return i, i + 2
    if crlf >= 0:
        j = buf.find(b"\n\r\n", start, crlf)
        if j >= 0:
            return j, j + 3
        return crlf + 1, crlf + 4
    j = buf.find(b"\n\r\n", start)
    if j >= 0:
        return j, j + 3
    return -1, -1


def _parse_fields(lines: list[str]) -> Headers:
    """Header lines (latin-1 decoded, possibly ending in CR) -> Headers."""
    items: list[Header] = []
    match = _FIELD.fullmatch
    for line in lines:
        m = match(line)
        if m is None:
            if line in ("", "\r"):
                continue
            if line[0] in " \t":
                raise ProtocolError("obsolete header line folding is not accepted")
            raise ProtocolError("malformed header field")
        name, value = m.groups()
        if value and value[-1] in " \t":
            value = value.rstrip(" \t")
        items.append((name.lower(), name, value))
    return Headers(items)


def _content_length(headers: Headers) -> int | None:
    values = headers.get_all("content-length")
    if not values:
        return None
    found: set[str] = set()
    for v in values:
        found.update(p.strip() for p in v.split(","))
    if len(found) != 1:
        raise ProtocolError("conflicting Content-Length values")
    text = found.pop()
    # ASCII digits only: str.isdigit() also accepts '²' and other Unicode
    # digits (a latin-1 decoded head can hold them), which int() then rejects
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise ProtocolError("invalid Content-Length")
    return int(text)


class _Parser:
    max_head: int

    def __init__(self, max_head: int = 65536) -> None:
        self.max_head = max_head
        self._buf = bytearray()
        self._state = HEAD
        self._remaining = 0
        self._scan = 0

    @property
    def state(self) -> int:
        return self._state

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def take_buffer(self) -> bytes:
        """Switch to tunnel mode and return whatever was buffered."""
        self._state = TUNNEL
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def feed(self, data: bytes) -> list[Event]:
        if data:
            state = self._state
            if state == TUNNEL:
                raise ProtocolError("parser is in tunnel mode")
            if state == HEAD and not self._buf and data[0] not in (10, 13):
                # A message that starts a read (the usual case) needs no copy
                # through the buffer when its head is in it whole and ends in
                # the first CRLF CRLF (what _find_head_end finds then).
                end = data.find(b"\r\n\r\n")
                if (
                    end > 0
                    and end + 4 <= self.max_head
                    and data.find(b"\n\n", 0, end + 2) < 0
                    and data.find(b"\n\r\n", 0, end) < 0
                ):
                    return self._whole_head(data, end)
            self._buf += data
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def _whole_head(self, data: bytes, end: int) -> list[Event]:
        """``feed`` of ``data`` into an empty buffer in state HEAD, the head
        ending at ``end`` (its CRLF CRLF): the same events and state as the
        general loop, without copying the head and a body through the buffer."""
        nxt = end + 4
        events: list[Event] = [self._head(data[: end + 1])]
        self._scan = 0
        size = len(data)
        state = self._state
        if state == DONE:
            events.append(END)
        elif nxt < size and state == LENGTH:
            n = min(size - nxt, self._remaining)
            events.append(Data(data[nxt : nxt + n]))
            nxt += n
            self._remaining -= n
            if self._remaining == 0:
                events.append(END)
                self._state = DONE
        elif nxt < size:
            self._buf += memoryview(data)[nxt:]
            while self._step(events):
                pass
            return events
        if nxt < size:
            self._buf += memoryview(data)[nxt:]
        return events

    def feed_eof(self) -> list[Event]:
        """The peer closed. Ends an until-close body; an incomplete message is an error."""
        events = self.feed(b"")
        if self._state == UNTIL_CLOSE:
            events.append(END)
            self._state = DONE
        elif self._state != DONE and (self._state != HEAD or self._buf.strip()):
            raise ProtocolError("connection closed in the middle of a message")
        return events

    def next_message(self) -> None:
        if self._state != DONE:
            raise RuntimeError("next_message() before the current message ended")
        self._state = HEAD
        self._scan = 0

    def _head(self, head: bytes) -> Event:
        raise NotImplementedError

    def _step(self, events: list[Event]) -> bool:
        state = self._state
        buf = self._buf
        if state == HEAD:
            # skip empty lines before a message (RFC 9112 2.2)
            if buf and buf[0] in (10, 13):
                while buf[:2] == b"\r\n" or buf[:1] == b"\n":
                    del buf[: 2 if buf[:1] == b"\r" else 1]
            if not buf:
                return False
            end, nxt = _find_head_end(buf, self._scan)
            if end < 0:
                if len(buf) > self.max_head:
                    raise ProtocolError("header section too large", 431)
                self._scan = max(0, len(buf) - 3)
                return False
            if nxt > self.max_head:
                raise ProtocolError("header section too large", 431)
            head = bytes(buf[:end])
            del buf[:nxt]
            self._scan = 0
            ev = self._head(head)
            events.append(ev)
            if self._state == DONE:
                events.append(END)
                return False
            return True
        if state == LENGTH:
            if not buf:
                return False
            n = min(len(buf), self._remaining)
            events.append(Data(bytes(buf[:n])))
            del buf[:n]
            self._remaining -= n
            if self._remaining == 0:
                events.append(END)
                self._state = DONE
            return bool(buf) and self._state != DONE
        if state == CHUNK_SIZE:
            i = buf.find(b"\n")
            if i < 0:
                if len(buf) > MAX_CHUNK_LINE:
                    raise ProtocolError("chunk size line too long")
                return False
            line = bytes(buf[:i]).rstrip(b"\r")
            del buf[: i + 1]
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not _HEX.match(size_text):
                raise ProtocolError("invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                self._state = TRAILERS
            else:
                self._remaining = size
                self._state = CHUNK_DATA
            return True
        if state == CHUNK_DATA:
            if not buf:
                return False
            n = min(len(buf), self._remaining)
            events.append(Data(bytes(buf[:n])))
            del buf[:n]
            self._remaining -= n
            if self._remaining == 0:
                self._state = CHUNK_CRLF
            return bool(buf)
        if state == CHUNK_CRLF:
            if buf[:2] == b"\r\n":
                del buf[:2]
            elif buf[:1] == b"\n":
                del buf[:1]
            elif len(buf) >= 2 or (buf and buf[:1] != b"\r"):
                raise ProtocolError("missing CRLF after chunk data")
            else:
                return False
            self._state = CHUNK_SIZE
            return True
        if state == TRAILERS:
            i = buf.find(b"\n")
            if i < 0:
                if len(buf) > self.max_head:
                    raise ProtocolError("trailer section too large", 431)
                return False
            line = bytes(buf[:i]).rstrip(b"\r")
            del buf[: i + 1]
            if not line:
                events.append(END)
                self._state = DONE
                return False
            _parse_fields([line.decode("latin-1")])  # validate, then drop
            return True
        if state == UNTIL_CLOSE:
            if buf:
                events.append(Data(bytes(buf)))
                buf.clear()
            return False
        return False  # DONE or TUNNEL: keep buffering


HEAD_CACHE_MAX = 8192
"""Heads up to this size are memoized (``cache=``), keyed by their exact bytes."""
HEAD_CACHE_ENTRIES = 1024


def _remember(cache: dict[bytes, Any], head: bytes, value: Any) -> None:
    if len(head) <= HEAD_CACHE_MAX:
        if len(cache) >= HEAD_CACHE_ENTRIES:
            cache.clear()
        cache[head] = value


class RequestParser(_Parser):
    """Parses requests from a client.

    ``cache``: a dict shared by the parsers of one listener; a head seen before
    (byte for byte: a client repeating a request) is not parsed again. Heads
    are immutable by convention; nothing changes one after parsing."""

    def __init__(self, max_head: int = 65536, cache: dict[bytes, RequestHead] | None = None) -> None:
        super().__init__(max_head)
        self._cache = cache

    def _head(self, head: bytes) -> Event:
        cache = self._cache
        if cache is not None:
            req = cache.get(head)
            if req is None:
                req = self._parse(head)
                _remember(cache, head, req)
        else:
            req = self._parse(head)
        if req.chunked:
            self._state = CHUNK_SIZE
        elif req.length:
            self._state = LENGTH
            self._remaining = req.length
        else:
            self._state = DONE
        return req

    def _parse(self, head: bytes) -> RequestHead:
        text = head.decode("latin-1")
        lines = text.split("\n")
        first = lines[0].rstrip("\r")
        parts = first.split(" ")
        if len(parts) != 3:
            raise ProtocolError("malformed request line")
        method, target, version = parts
        if method not in _KNOWN_METHODS and not _METHOD.fullmatch(method):
            raise ProtocolError("invalid method")
        if not target or _TARGET_BAD_STR.search(target):
            raise ProtocolError("invalid request target")
        if version == "HTTP/1.1":
            ver = "1.1"
        elif version == "HTTP/1.0":
            ver = "1.0"
        elif version.startswith("HTTP/"):
            raise ProtocolError("HTTP version not supported", 505)
        else:
            raise ProtocolError("malformed request line")
        headers = _parse_fields(lines[1:])
        length: int | None = None
        chunked = False
        host = 0
        conn_tokens: list[str] = []
        upgrade_tokens: list[str] = []
        te: list[str] = []
        for lname, _, value in headers.items:
            if lname == "host":
                host += 1
            elif lname == "content-length":
                length = _content_length(headers)
            elif lname == "transfer-encoding":
                te.extend(t.strip().lower() for t in value.split(",") if t.strip())
            elif lname == "connection":
                conn_tokens.extend(t.strip().lower() for t in value.split(",") if t.strip())
            elif lname == "upgrade":
                upgrade_tokens.extend(t.strip().lower() for t in value.split(",") if t.strip())
        if te:
            if length is not None:
                raise ProtocolError("both Transfer-Encoding and Content-Length")
            if te[-1] != "chunked" or te.count("chunked") != 1 or ver == "1.0":
                raise ProtocolError("unsupported Transfer-Encoding", 501 if ver != "1.0" else 400)
            chunked = True
        keep_alive = "close" not in conn_tokens if ver == "1.1" else "keep-alive" in conn_tokens
        if host == 0 and ver == "1.1":
            raise ProtocolError("missing Host header")
        if host > 1:
            raise ProtocolError("more than one Host header")
        upgrade = upgrade_tokens[0] if upgrade_tokens and "upgrade" in conn_tokens else ""
        return RequestHead(
            method, target, ver, headers, keep_alive, chunked, length or 0, conn_tokens, upgrade, head
        )


class ResponseParser(_Parser):
    """Parses responses from an upstream. Call ``expect(method)`` before each response."""

    def __init__(self, max_head: int = 65536, cache: dict[bytes, ResponseHead] | None = None) -> None:
        super().__init__(max_head)
        self._method = "GET"
        self._state = DONE
        self._cache = cache

    def feed(self, data: bytes) -> list[Event]:
        try:
            return super().feed(data)
        except ProtocolError as exc:
            raise ProtocolError(exc.message, 502) from None

    def feed_eof(self) -> list[Event]:
        try:
            return super().feed_eof()
        except ProtocolError as exc:
            raise ProtocolError(exc.message, 502) from None

    def expect(self, method: str) -> None:
        self._method = method
        self._state = HEAD
        self._scan = 0

    @property
    def fresh(self) -> bool:
        """Waiting for a response head, nothing buffered: what ``feed`` then
        makes of a read depends on that read (and the method) only."""
        return self._state == HEAD and not self._buf

    def skip_message(self) -> None:
        """From ``fresh``: the state ``feed`` leaves after a read that held
        one whole response and nothing more (a replayed response, see
        ``exchange.Replay``)."""
        assert self.fresh
        self._state = DONE
        self._scan = 0
        self._remaining = 0

    def _head(self, head: bytes) -> Event:
        cache = self._cache
        if cache is None or self._method == "HEAD":
            return self._parse(head)
        resp = cache.get(head)
        if resp is None:
            resp = self._parse(head)
            _remember(cache, head, resp)
            return resp
        # the state _parse would have set (same bytes, same method class)
        framing = resp.framing
        if framing == "none":
            if not 100 <= resp.status < 200 or resp.status == 101:
                self._state = DONE
        elif framing == "chunked":
            self._state = CHUNK_SIZE
        elif framing == "close":
            self._state = UNTIL_CLOSE
        elif resp.length:
            self._state, self._remaining = LENGTH, resp.length
        else:
            self._state = DONE
        return resp

    def _parse(self, head: bytes) -> ResponseHead:
        lines = head.decode("latin-1").split("\n")
        first = lines[0].rstrip("\r")
        version, _, rest = first.partition(" ")
        code, _, reason = rest.partition(" ")
        if version == "HTTP/1.1":
            ver = "1.1"
        elif version == "HTTP/1.0":
            ver = "1.0"
        else:
            raise ProtocolError("malformed status line", 502)
        if len(code) != 3 or not (code.isascii() and code.isdigit()):
            raise ProtocolError("malformed status code", 502)
        status = int(code)
        try:
            headers = _parse_fields(lines[1:])
        except ProtocolError as exc:
            raise ProtocolError(exc.message, 502) from None
        conn_tokens = headers.tokens("connection")
        keep_alive = "close" not in conn_tokens if ver == "1.1" else "keep-alive" in conn_tokens
        if 100 <= status < 200 and status != 101:
            # interim response: the final one follows
            return ResponseHead(status, reason, ver, headers, keep_alive, "none", 0, conn_tokens, head)
        try:
            length = _content_length(headers)
        except ProtocolError as exc:
            raise ProtocolError(exc.message, 502) from None
        te = headers.tokens("transfer-encoding")
        if status == 101 or self._method == "HEAD" or status in (204, 304) or status < 200:
            framing, self._state = "none", DONE
        elif te:
            if te[-1] == "chunked":
                framing, self._state = "chunked", CHUNK_SIZE
            else:
                framing, self._state = "close", UNTIL_CLOSE
                keep_alive = False
        elif length is not None:
            framing = "length"
            if length:
                self._state, self._remaining = LENGTH, length
            else:
                self._state = DONE
        else:
            framing, self._state = "close", UNTIL_CLOSE
            keep_alive = False
        resp = ResponseHead(
            status, reason, ver, headers, keep_alive, framing, length or 0, conn_tokens, head
        )
        return resp


# -- serializing ---------------------------------------------------------------

REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


def serialize_head(first_line: str, headers: Headers) -> bytes:
    fields = "".join([f"{name}: {value}\r\n" for _, name, value in headers.items])
    return f"{first_line}\r\n{fields}\r\n".encode("latin-1")


def request_head_bytes(method: str, target: str, headers: Headers) -> bytes:
    return serialize_head(f"{method} {target} HTTP/1.1", headers)


def status_line(status: int, reason: str) -> str:
    """The status line the gateway sends: the upstream's reason phrase, or
    the standard one when it gave none."""
    return f"HTTP/1.1 {status} {reason or REASONS.get(status, '')}"


def response_head_bytes(status: int, reason: str, headers: Headers) -> bytes:
    return serialize_head(status_line(status, reason), headers)


def chunk(data: bytes) -> bytes:
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
