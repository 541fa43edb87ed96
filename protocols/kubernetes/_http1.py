"""A sans-IO HTTP/1.1 response parser for the upstream leg (bytes in, events out).

The gateway sends one request at a time on a keep-alive connection to the API
server and reads the answer with this parser: status line, headers, then the
body by ``Content-Length``, ``chunked`` or until the connection closes.
``Content-Encoding: gzip/deflate`` bodies are decompressed (the gateway asks
for ``identity``, but masking must see plain text whatever the server does),
in pieces of at most ``PIECE`` bytes. ``limit`` caps the body bytes of a
response (after decoding; ``BodyTooLarge`` past it), checked piece by piece:
a few MiB of gzip can hold gigabytes of zeros, and decoding a whole read at
once would hold a thousand times the read in memory.

``feed(data)`` returns a list of events: ``Head``, body ``bytes``, ``END``.
Malformed input raises ``ParseError``; the driver then closes the connection.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

MAX_HEAD = 256 * 1024
MAX_CHUNK_LINE = 4096
PIECE = 1 << 20


class ParseError(Exception):
    pass


class BodyTooLarge(ParseError):
    """The response body is over the parser's ``limit``."""


@dataclass(slots=True)
class Head:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    length: int | None  # body length, None when chunked or until close
    chunked: bool
    keep_alive: bool
    encoding: str = ""

    def get(self, name: str, default: str = "") -> str:
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return default


class _End:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = _End()
Event = Head | bytes | _End

# states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class ResponseParser:
    """One response at a time: call ``start(method)`` before each request."""

    def __init__(self) -> None:
        self._buf = b""
        self._state = _DONE
        self._method = "GET"
        self._left = 0
        self._decoder: zlib._Decompress | None = None
        self.head: Head | None = None
        self.limit: int | None = None
        """Most body bytes (decoded) a response may have; None: no limit."""
        self._body_bytes = 0

    def start(self, method: str) -> None:
        self._state = _HEAD
        self._method = method
        self.head = None
        self._decoder = None
        self._body_bytes = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def decoding(self) -> bool:
        """A compressed body is being read."""
        return self._decoder is not None and self._state != _DONE

    @property
    def pending(self) -> bytes:
        """Bytes received after the end of the response (a misbehaving server)."""
        return self._buf

    def feed(self, data: bytes) -> list[Event]:
        if data:
            self._buf = self._buf + data if self._buf else data
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def feed_eof(self) -> list[Event]:
        """The connection closed: ends a read-until-close body, else an error
        unless the response was complete."""
        if self._state == _UNTIL_CLOSE:
            events: list[Event] = []
            self._body(self._buf, events)
            self._buf = b""
            self._finish(events)
            return events
        if self._state == _DONE:
            return []
        raise ParseError("connection closed in the middle of a response")

    # ---------------------------------------------------------------- internals
    def _step(self, events: list[Event]) -> bool:
        state = self._state
        buf = self._buf
        if state == _HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ParseError("response head too large")
                return False
            head = self._parse_head(buf[:end])
            self._buf = buf[end + 4 :]
            if 100 <= head.status < 200 and head.status != 101:
                return True  # interim response: wait for the real one
            self.head = head
            events.append(head)
            if head.encoding in ("gzip", "x-gzip", "deflate"):
                wbits = 47 if head.encoding != "deflate" else zlib.MAX_WBITS
                self._decoder = zlib.decompressobj(wbits)
            if self._method == "HEAD" or head.status in (204, 304) or head.status == 101:
                self._finish(events)
            elif head.chunked:
                self._state = _CHUNK_SIZE
            elif head.length is not None:
                self._left = head.length
                self._state = _LENGTH
                if not head.length:
                    self._finish(events)
                elif len(self._buf) == head.length and self._decoder is None:
                    # the usual small answer, whole in this read: no second step
                    self._body(self._buf, events)
                    self._buf = b""
                    self._left = 0
                    self._finish(events)
                    return False
            else:
                head.keep_alive = False
                self._state = _UNTIL_CLOSE
            return True
        if not buf:
            return False
        if state == _LENGTH:
            take = buf[: self._left]
            self._buf = buf[len(take) :]
            self._left -= len(take)
            self._body(take, events)
            if not self._left:
                self._finish(events)
            return bool(self._buf) and self._state != _DONE
        if state == _CHUNK_SIZE:
            nl = buf.find(b"\r\n")
            if nl < 0:
                if len(buf) > MAX_CHUNK_LINE:
                    raise ParseError("chunk size line too long")
                return False
            line = buf[:nl].split(b";", 1)[0].strip()
            try:
                if not line or len(line) > 16:
                    raise ValueError
                size = int(line, 16)
            except ValueError:
                raise ParseError("bad chunk size") from None
            if size < 0:
                raise ParseError("bad chunk size")
            self._buf = buf[nl + 2 :]
            if size == 0:
                self._state = _TRAILER
            else:
                self._left = size
                self._state = _CHUNK_DATA
            return True
        if state == _CHUNK_DATA:
            take = buf[: self._left]
            self._buf = buf[len(take) :]
            self._left -= len(take)
            self._body(take, events)
            if not self._left:
                self._state = _CHUNK_CRLF
            return bool(self._buf)
        if state == _CHUNK_CRLF:
            if len(buf) < 2:
                return False
            if buf[:2] != b"\r\n":
                raise ParseError("missing CRLF after chunk")
            self._buf = buf[2:]
            self._state = _CHUNK_SIZE
            return True
        if state == _TRAILER:
            nl = buf.find(b"\r\n")
            if nl < 0:
                if len(buf) > MAX_HEAD:
                    raise ParseError("trailer too large")
                return False
            self._buf = buf[nl + 2 :]
            if nl == 0:
                self._finish(events)
                return False
            return True
        if state == _UNTIL_CLOSE:
            self._buf = b""
            self._body(buf, events)
            return False
        return False  # _DONE: extra bytes stay in pending

    def _body(self, data: bytes, events: list[Event]) -> None:
        decoder = self._decoder
        if decoder is None:
            if data:
                self._count(len(data))
                events.append(data)
            return
        try:
            while data:
                piece = decoder.decompress(data, PIECE)
                data = decoder.unconsumed_tail
                if piece:
                    self._count(len(piece))
                    events.append(piece)
        except zlib.error as exc:
            raise ParseError(f"bad compressed body: {exc}") from None

    def _count(self, n: int) -> None:
        self._body_bytes += n
        if self.limit is not None and self._body_bytes > self.limit:
            raise BodyTooLarge(f"the response body is over {self.limit} bytes")

    def _finish(self, events: list[Event]) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error as exc:
                raise ParseError(f"bad compressed body: {exc}") from None
            if tail:
                self._count(len(tail))
                events.append(tail)
            self._decoder = None
        self._state = _DONE
        events.append(END)

    def _parse_head(self, raw: bytes) -> Head:
        try:
            text = raw.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
            raise ParseError("bad response head") from None
        lines = text.split("\r\n")
        status_line = lines[0]
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not _ascii_digits(parts[1]):
            raise ParseError(f"bad status line {status_line[:80]!r}")
        version = parts[0]
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        keep_alive = version != "HTTP/1.0"
        encoding = ""
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or "\n" in line or "\r" in line:
                raise ParseError(f"bad header line {line[:80]!r}")
            value = value.strip()
            headers.append((name, value))
            low = name.lower()
            if low == "content-length":
                if not _ascii_digits(value) or (length is not None and int(value) != length):
                    raise ParseError("bad content-length")
                length = int(value)
            elif low == "transfer-encoding":
                codings = [c.strip().lower() for c in value.split(",")]
                if codings[-1] == "chunked":
                    chunked = True
                elif value:
                    raise ParseError(f"unsupported transfer-encoding {value[:40]!r}")
            elif low == "connection":
                tokens = {t.strip().lower() for t in value.split(",")}
                if "close" in tokens:
                    keep_alive = False
                elif "keep-alive" in tokens:
                    keep_alive = True
            elif low == "content-encoding":
                encoding = value.lower()
                if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
                    raise ParseError(f"unsupported content-encoding {value[:40]!r}")
        if chunked:
            length = None
        return Head(status, reason, headers, length, chunked, keep_alive, encoding)


def _ascii_digits(text: str) -> bool:
    """``str.isdigit()`` alone also accepts '²' and other Unicode digits
    (heads are decoded as latin-1), which ``int()`` then rejects with a
    ValueError instead of a ParseError."""
    return text.isascii() and text.isdigit()
