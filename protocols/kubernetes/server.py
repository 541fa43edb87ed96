"""The client side for plain requests: a raw asyncio protocol, not aiohttp's server.

kubectl's ordinary API calls (get, list, apply, delete: one request at a time
on a keep-alive connection, a Content-Length body at most) are parsed here and
answered by writing the response bytes straight to the transport: no request
and response objects, handler task, payload writer or header multidict of a
general web server per request (about a third of the gateway's CPU per
request, measured with bench/kubernetes/inproc_kubernetes.py).

Everything else is handed to aiohttp, which then owns the connection for the
rest of its life: websocket upgrades (exec, attach, port-forward) and SPDY,
watches, logs and ``proxy`` (long streams, where aiohttp's flow control is
worth its cost), HEAD/OPTIONS, HTTP/1.0, ``Connection`` other than
keep-alive, ``Expect``, chunked request bodies, absolute-form targets and any
head this parser does not accept (aiohttp then answers the error as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.helpers import HeadersMixin, rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .proxy import ClientConn
from .status import status_response

if TYPE_CHECKING:
    from .proxy import KubeProxy

log = logging.getLogger("hoopd.kubernetes")

FAST_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
STREAMING_VERBS = frozenset({"watch", "logs", "proxy", "exec", "attach", "portforward"})
HANDED_OVER = frozenset({"upgrade", "transfer-encoding", "expect"})
MAX_HEAD = 64 * 1024  # aiohttp's max_line_size / max_field_size as configured before
KEEPALIVE = 120.0  # idle seconds before the connection is closed (aiohttp's keepalive_timeout)
TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
EMPTY_BODY_STATUS = frozenset({204, 304})


class RawRequest(HeadersMixin):
    """The parts of aiohttp's ``BaseRequest`` the proxy reads, for a request
    parsed by :class:`FastConn` (``content_type`` and ``content_length`` come
    from aiohttp's own mixin, so they read the same)."""

    def __init__(
        self,
        conn: FastConn,
        method: str,
        raw_path: str,
        path: str,
        query_string: str,
        headers: CIMultiDictProxy[str],
        raw_headers: str,
        body: bytes,
    ) -> None:
        self.protocol = conn
        self.transport = conn.transport
        self.method = method
        self.raw_path = raw_path
        self.path = path
        self.query_string = query_string
        self._headers = headers
        self.raw_headers = raw_headers  # the header lines as sent: only a cache key (request_head)
        self._body = body
        self.content = self  # request.content.read(n)

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._headers  # type: ignore[return-value]

    @property
    def can_read_body(self) -> bool:
        return bool(self._body)

    @property
    def whole_body(self) -> bytes:
        """The body, complete (FastConn reads all of it before the request starts)."""
        return self._body

    async def read(self, n: int = -1) -> bytes:
        return self._body if n < 0 else self._body[:n]

    def respond(self, status: int, headers: list[tuple[str, str]], body: bytes, has_type: bool) -> RawResponse:
        """A complete response from upstream headers already filtered by the
        proxy (no Content-Length, Date or Server among them)."""
        return RawResponse(status, headers, body, has_type)

    def open_stream(self, status: int, headers: CIMultiDict[str]) -> RawStream:
        """A chunked response the proxy writes as the upstream's body arrives."""
        return RawStream(self.protocol, status, None, headers)


class RawResponse:
    """What :meth:`RawRequest.respond` returns: written by FastConn as is."""

    __slots__ = ("body", "has_type", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, has_type: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.has_type = has_type


class _Target:
    """A request target split the way aiohttp does (``path`` and
    ``query_string`` percent-decoded by yarl), cached: clients repeat them."""

    __slots__ = ("path", "query_string")

    def __init__(self, raw: str) -> None:
        path, _, query = raw.partition("?")
        url = URL.build(path=path, query_string=query, encoded=True)
        self.path = url.path
        self.query_string = url.query_string


class FastConn(asyncio.Protocol):
    """One client connection while its requests take the fast path."""

    def __init__(self, proxy: KubeProxy, fallback: Callable[[], Any]) -> None:
        self.proxy = proxy
        self.fallback = fallback  # makes the aiohttp protocol a connection is handed to
        self.kube = ClientConn(self)
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._busy = False
        self._closed = False
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last = 0.0  # loop time the last response ended
        self._fresh = True  # no request started yet: the first head is due from connecting
        self._head_at = 0.0  # loop time the pending request's first byte came (or connecting)
        self._read_at = 0.0  # loop time of the last read
        self._loop: asyncio.AbstractEventLoop  # set once connected
        self._targets: dict[str, _Target] = {}
        self._heads: dict[str, tuple[CIMultiDictProxy[str], int]] = {}  # header block -> parsed

    # ------------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        now = self._read_at = self._loop.time()
        if self._buf:
            self._buf += data
        else:
            self._buf = data
            if not self._fresh:
                self._head_at = now
        if not self._busy:
            self._next()
            if self._buf and not self._busy:  # part of a request: its deadline may come sooner
                self._watch()
        elif len(self._buf) > MAX_HEAD + self.proxy.options.max_body and self.transport is not None:
            self.transport.pause_reading()  # a client sending ahead of the answers
            self._paused = True

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
        self._wake_drain()
        self.kube.closed(exc)

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_drain()

    def _wake_drain(self) -> None:
        fut, self._drain = self._drain, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionResetError("the client closed the connection")
        if self._drain is not None:
            await self._drain

    def _arm_idle(self) -> None:
        # one timer for the connection, not one per request: it looks at the
        # state of the connection when it fires (_due)
        loop = self._loop = asyncio.get_running_loop()
        self._last = self._head_at = self._read_at = loop.time()
        self._idle = loop.call_at(self._due()[0], self._idle_timeout)

    def _due(self) -> tuple[float, str]:
        """When the connection is closed if nothing changes, and why: idle
        between requests (KEEPALIVE), a head not complete (header_timeout,
        from connecting for the first request), a body not complete
        (body_timeout since the last read)."""
        opts = self.proxy.options
        if not self._buf:
            if self._fresh:
                return self._head_at + opts.header_timeout, "header_timeout"
            return self._last + KEEPALIVE, "idle"
        if self._buf.find(b"\r\n\r\n") < 0:
            return self._head_at + opts.header_timeout, "header_timeout"
        return self._read_at + opts.body_timeout, "body_timeout"

    def _watch(self) -> None:
        """Bring the timer forward to the deadline of a request in progress."""
        timer = self._idle
        if timer is None or self._closed:
            return
        due = self._due()[0]
        if due < timer.when():
            timer.cancel()
            self._idle = self._loop.call_at(due, self._idle_timeout)

    def _idle_timeout(self) -> None:
        loop = self._loop
        now = loop.time()
        if self._busy:
            self._idle = loop.call_at(max(self._last + KEEPALIVE, now + 1.0), self._idle_timeout)
            return
        due, why = self._due()
        if due > now:
            self._idle = loop.call_at(due, self._idle_timeout)
        elif why == "idle":
            if self.transport is not None:
                self.transport.close()
        else:
            self._timed_out(why)

    def _timed_out(self, why: str) -> None:
        """A head or body too slow: 408 if part of a request came, then close."""
        self._idle = None
        transport = self.transport
        if transport is None or self._closed:
            return
        opts = self.proxy.options
        proxy = self.proxy
        peer = transport.get_extra_info("peername")
        client = peer[0] if peer else "unknown"
        if why == "header_timeout":
            message = f"no complete request head within {opts.header_timeout:g} s"
        else:
            message = f"no request body bytes for {opts.body_timeout:g} s"
        log.info("%s: client %s: %s: closing", proxy.connection.name, client, message)
        if self.kube.session is None:  # never identified: counted as a failed login
            proxy.gateway.connection_metrics(proxy.connection).auth_failed(why)
        else:
            self.kube.timed_out = (why, f"hoopd: {message}")
        if self._buf:
            self._write(status_response(408, f"hoopd: {message}", "Timeout"), keep_alive=False)
        self._buf = b""
        transport.close()

    # ------------------------------------------------------------------ requests
    def _next(self) -> None:
        """Start the buffered request if its head (and body) are complete."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if len(buf) > MAX_HEAD:
                self._too_large()
            return
        parsed = self._parse(buf, end)
        if parsed is None:
            self._hand_over()
            return
        method, raw_path, headers, raw_headers, length = parsed
        if len(buf) < end + 4 + length:
            return  # the body is still arriving
        body = buf[end + 4 : end + 4 + length]
        self._buf = buf[end + 4 + length :]
        target = self._targets.get(raw_path)
        if target is None:
            target = _Target(raw_path)
            if len(self._targets) >= 256:
                self._targets.clear()
            self._targets[raw_path] = target
        kr = self.proxy.request_info(method, target.path, raw_path.partition("?")[2]).kr
        if kr.verb in STREAMING_VERBS:
            self._buf = buf
            self._hand_over()
            return
        self._busy = True
        self._fresh = False
        request = RawRequest(self, method, raw_path, target.path, target.query_string, headers, raw_headers, body)
        asyncio.get_running_loop().create_task(self._serve(request))

    def _parse(self, buf: bytes, end: int) -> tuple[str, str, CIMultiDictProxy[str], str, int] | None:
        """(method, target, headers, header block, body length) of a head the
        fast path takes, None for anything to hand to aiohttp."""
        try:
            text = buf[:end].decode("ascii")
        except UnicodeDecodeError:
            return None
        nl = text.find("\r\n")
        line, block = (text, "") if nl < 0 else (text[:nl], text[nl:])
        parts = line.split(" ")
        if len(parts) != 3 or parts[2] != "HTTP/1.1" or parts[0] not in FAST_METHODS or not line.isprintable():
            return None
        raw_path = parts[1]
        if not raw_path.startswith("/") or "#" in raw_path:
            return None
        # a client repeats the same few header blocks: parse each once
        parsed = self._heads.get(block)
        if parsed is None:
            parsed = self._parse_headers(block)
            if parsed is None:
                return None
            if len(self._heads) >= 32:
                self._heads.clear()
            self._heads[block] = parsed
        return parts[0], raw_path, parsed[0], block, parsed[1]

    def _parse_headers(self, block: str) -> tuple[CIMultiDictProxy[str], int] | None:
        if block.count("\r") != block.count("\n"):
            return None  # a bare CR or LF: aiohttp decides
        headers: CIMultiDict[str] = CIMultiDict()
        length = 0
        seen_length = False
        for line in block.split("\r\n")[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or not TOKEN.issuperset(name) or not line.isprintable():
                return None  # also a tab or control character: aiohttp's parser decides
            value = value.strip(" ")
            low = name.lower()
            if low in HANDED_OVER:
                return None
            if low == "content-length":
                if seen_length or not (value.isascii() and value.isdigit()):
                    return None
                seen_length = True
                length = int(value)
                if length > self.proxy.options.max_body:
                    return None  # aiohttp's path answers 413 without reading it
            elif low == "connection" and value.lower() != "keep-alive":
                return None
            headers.add(name, value)
        return CIMultiDictProxy(headers), length

    def _too_large(self) -> None:
        """A head over MAX_HEAD: 431 and close. (Handed to aiohttp, it was
        read on: aiohttp bounds each line, not the block, and took 128
        headers of 64 KiB, an 8 MiB head per connection.)"""
        self._buf = b""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if self.transport is not None:
            self._write(status_response(431, "hoopd: request header fields too large"), keep_alive=False)
            self.transport.close()

    def _hand_over(self) -> None:
        """aiohttp's protocol takes the connection from here (same ClientConn,
        so the session and the upstream connection carry on)."""
        transport = self.transport
        if transport is None or self._closed:
            return
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        proto = self.fallback()
        proto.kube = self.kube
        self.kube.protocol = proto
        self._closed = True  # connection_lost now goes to aiohttp's protocol
        transport.set_protocol(proto)
        proto.connection_made(transport)
        if self._paused:
            transport.resume_reading()
        buf, self._buf = self._buf, b""
        if buf:
            proto.data_received(buf)

    async def _serve(self, request: RawRequest) -> None:
        try:
            resp = await self.proxy.handle(request)  # type: ignore[arg-type]
        except Exception:
            log.exception("kubernetes request failed")
            resp = status_response(500, "hoopd: internal error")
            self._write(resp, keep_alive=False)
            return
        if isinstance(resp, RawResponse):
            keep = self._write_raw(resp)
        elif isinstance(resp, RawStream):
            keep = resp.complete
        else:
            keep = isinstance(resp, web.Response) and self._write(resp)
        if not keep or self._closed or self.transport is None:
            if self.transport is not None:
                self.transport.close()
            return
        self._busy = False
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        self._last = self._head_at = asyncio.get_running_loop().time()
        if self._buf:
            self._next()
            if self._buf and not self._busy:
                self._watch()

    def _write_raw(self, resp: RawResponse) -> bool:
        """The proxy's usual answer: as :meth:`_write` would write it."""
        if self.transport is None or self._closed:
            return False
        status = resp.status
        empty = status in EMPTY_BODY_STATUS or 100 <= status < 200
        out = [head_line(status, None)]
        out += [f"{key}: {value}\r\n" for key, value in resp.headers]
        body = resp.body
        if not empty:
            out.append(f"Content-Length: {len(body)}\r\n")
            if body and not resp.has_type:
                out.append("Content-Type: application/octet-stream\r\n")
        out.append(f"Date: {rfc822_formatted_time()}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n")
        head = "".join(out).encode("utf-8")
        self.transport.write(head + body if body and not empty else head)
        return True

    def _write(self, resp: web.Response, keep_alive: bool = True) -> bool:
        """Write a complete response as aiohttp would serialise it (the same
        headers: Content-Length, a default Content-Type, Date and Server)."""
        if self.transport is None or self._closed:
            return False
        status = resp.status
        body = resp.body
        assert body is None or isinstance(body, bytes)
        data = body or b""
        empty = status in EMPTY_BODY_STATUS or 100 <= status < 200
        out = [head_line(status, resp.reason)]
        headers = resp.headers
        for key, value in headers.items():
            if empty and key.lower() in ("content-length", "transfer-encoding"):
                continue
            out.append(f"{key}: {value}\r\n")
        if not empty:
            if "Content-Length" not in headers:
                out.append(f"Content-Length: {len(data)}\r\n")
            if data and "Content-Type" not in headers:
                out.append("Content-Type: application/octet-stream\r\n")
        if "Date" not in headers:
            out.append(f"Date: {rfc822_formatted_time()}\r\n")
        if "Server" not in headers:
            out.append(f"Server: {SERVER_SOFTWARE}\r\n")
        if not keep_alive:
            out.append("Connection: close\r\n")
        out.append("\r\n")
        head = "".join(out).encode("utf-8")
        self.transport.write(head + data if data and not empty else head)
        return keep_alive


def head_line(status: int, reason: str | None) -> str:
    """The status line; ``reason`` None: the standard phrase, as aiohttp's."""
    if reason is not None:
        return f"HTTP/1.1 {status} {reason}\r\n"
    line = STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n"
    return line


STATUS_LINES: dict[int, str] = {}


class RawStream:
    """A chunked response on a :class:`FastConn`: the part of aiohttp's
    ``StreamResponse`` the proxy uses (``write``, ``write_eof``)."""

    def __init__(self, conn: FastConn, status: int, reason: str | None, headers: CIMultiDict[str]) -> None:
        self.conn = conn
        self.status = status
        self.complete = False
        self._empty = status in EMPTY_BODY_STATUS or 100 <= status < 200
        out = [head_line(status, reason)]
        for key, value in headers.items():
            if key.lower() not in ("content-length", "transfer-encoding"):
                out.append(f"{key}: {value}\r\n")
        if not self._empty:
            out.append("Transfer-Encoding: chunked\r\n")
            if "Content-Type" not in headers:
                out.append("Content-Type: application/octet-stream\r\n")
        if "Date" not in headers:
            out.append(f"Date: {rfc822_formatted_time()}\r\n")
        if "Server" not in headers:
            out.append(f"Server: {SERVER_SOFTWARE}\r\n")
        out.append("\r\n")
        self._send("".join(out).encode("utf-8"))

    def _send(self, data: bytes) -> None:
        transport = self.conn.transport
        if transport is None or self.conn._closed or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)

    async def write(self, data: bytes) -> None:
        if data and not self._empty:
            self._send(b"%x\r\n%b\r\n" % (len(data), data))
            await self.conn.drain()

    async def write_eof(self) -> None:
        if not self.complete:
            with contextlib.suppress(ConnectionResetError):
                if not self._empty:
                    self._send(b"0\r\n\r\n")
                self.complete = True
