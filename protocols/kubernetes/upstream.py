"""The upstream leg for ordinary requests: one keep-alive connection to the API
server per client connection, on a plain asyncio Protocol.

kubectl sends its requests on a connection one after the other, so each client
connection gets its own upstream connection, reused request after request (no
pool lookups, cookie jar, tracing or per-request objects of a general HTTP
client). A response must be read to its end before the connection is reused;
one that is abandoned (client gone in the middle of a watch) closes it.
Websockets (exec, attach, port-forward) keep using aiohttp's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from ._http1 import END, BodyTooLarge, Event, Head, ParseError, ResponseParser

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
HIGH_WATER = 1 << 20  # unread body bytes before the upstream socket is paused
DECODE_SLICE = 4096
"""Compressed bytes handed to the parser at a time: one slice decodes to at
most ~4 MiB (deflate's ratio is ~1032:1), and between slices the response's
flow control applies -- a whole read (256 KiB) of a gzip bomb would decode
to ~260 MiB in one go."""
REUSE_IDLE = 30.0  # a non-idempotent request does not reuse a connection idle longer


class UpstreamError(Exception):
    """The API server could not be reached or answered garbage."""


class ResponseTooLarge(UpstreamError):
    """A response body over the connection's ``limit`` (before ``unlimit``)."""


class Target:
    """Where and how to connect (shared by all connections of a KubeProxy)."""

    def __init__(self, base_url: str, ssl_ctx: ssl.SSLContext | bool, connect_timeout: float) -> None:
        parts = urlsplit(base_url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        default = 443 if self.tls else 80
        netloc_host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = netloc_host if self.port == default else f"{netloc_host}:{self.port}"
        self.ssl: ssl.SSLContext | None = None
        if self.tls:
            self.ssl = ssl_ctx if isinstance(ssl_ctx, ssl.SSLContext) else ssl.create_default_context()
        self.connect_timeout = connect_timeout
        self.limit: int | None = None
        """Most body bytes of a response, until the reader lifts it (see
        UpstreamResponse.unlimit); None: no limit."""

    async def connect(self) -> UpstreamConn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(
                    UpstreamConn,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
        except TimeoutError:
            raise UpstreamError(f"connect to {self.host}:{self.port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(str(exc) or type(exc).__name__) from None
        proto.limit = self.limit
        return proto


class UpstreamConn(asyncio.Protocol):
    """One HTTP/1.1 connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False
        self.used = 0
        self.idle_since = time.monotonic()
        self._parser = ResponseParser()
        self._response: UpstreamResponse | None = None
        self._head: asyncio.Future[Head] | None = None
        self._got_bytes = False
        self.limit: int | None = None
        """Target.limit: each response starts with it."""
        self._raw = b""
        """Received bytes not parsed yet: a compressed body waits here while
        its reader is behind (see DECODE_SLICE)."""
        self._lost_later = False
        """connection_lost came while ``_raw`` was not empty (``_lost_exc``)."""
        self._lost_exc: BaseException | None = None

    # ------------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._response is None:  # bytes nobody asked for: the server is confused
            self._fail(UpstreamError("unexpected data from the API server"))
            return
        self._raw = self._raw + data if self._raw else data
        self._pump()

    def _pump(self) -> None:
        """Parse what was received: whole, or a compressed body a slice at a
        time until its reader is behind (the rest waits in ``_raw``)."""
        parser = self._parser
        while self._raw:
            resp = self._response
            if resp is None:  # bytes after the response: the server is confused
                self._raw = b""
                self.close()
                return
            if resp._paused:
                return
            data = self._raw
            if parser.decoding or parser.head is None:
                data = data[:DECODE_SLICE]
            self._raw = self._raw[len(data) :]
            try:
                events = parser.feed(data)
            except BodyTooLarge as exc:
                self._fail(ResponseTooLarge(str(exc)))
                return
            except ParseError as exc:
                self._fail(UpstreamError(f"bad response from the API server: {exc}"))
                return
            self._dispatch(events)
        if self._lost_later:
            self._lost_later = False
            self._lost(self._lost_exc)

    def eof_received(self) -> bool | None:
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.transport = None
        if self._raw and self._response is not None:
            self._lost_later, self._lost_exc = True, exc  # after what was received (_pump)
            return
        self._lost(exc)

    def _lost(self, exc: BaseException | None) -> None:
        if self._response is None:
            return
        try:
            events = self._parser.feed_eof()
        except BodyTooLarge as err:
            self._fail(ResponseTooLarge(str(err)))
            return
        except ParseError as err:
            self._fail(UpstreamError(f"the API server closed the connection: {exc or err}"))
            return
        self._dispatch(events)

    def pause_writing(self) -> None:  # request bodies are small; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    # ------------------------------------------------------------------ internals
    def _dispatch(self, events: list[Event]) -> None:
        resp = self._response
        assert resp is not None
        for ev in events:
            if isinstance(ev, Head):
                resp.head = ev
                fut = self._head
                if fut is not None and not fut.done():
                    fut.set_result(ev)
            elif ev is END:
                self._response = None
                resp._feed_eof()
                if not (resp.head is not None and resp.head.keep_alive) or self._parser.pending:
                    self.close()
            else:
                assert isinstance(ev, bytes)
                resp._feed(ev)
                if resp._size > HIGH_WATER and not resp._unbounded and not resp._paused:
                    resp._paused = True
                    if self.transport is not None:
                        self.transport.pause_reading()

    def _fail(self, exc: Exception) -> None:
        self._raw = b""
        self._lost_later = False
        resp, self._response = self._response, None
        fut = self._head
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        if resp is not None:
            resp._set_exception(exc)
        self.close()

    def _resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        if self._raw or self._lost_later:
            self._pump()

    # ------------------------------------------------------------------ API
    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, method: str, head: bytes, body: bytes) -> UpstreamResponse:
        """Send a request (``head`` ends with the blank line) and wait for the
        response head. The body is read from the returned response."""
        if self.closed or self.transport is None:
            raise UpstreamError("connection closed")
        assert not self.busy
        self.busy = True
        self.used += 1
        self._got_bytes = False
        resp = UpstreamResponse(self)
        self._response = resp
        self._parser.start(method)
        self._parser.limit = self.limit
        loop = asyncio.get_running_loop()
        self._head = fut = loop.create_future()
        if body:
            self.transport.write(head + body)
        else:
            self.transport.write(head)
        try:
            await fut
        finally:
            self._head = None
        return resp

    def _released(self, complete: bool) -> None:
        self.busy = False
        self.idle_since = time.monotonic()
        if not complete:
            self._response = None
            self.close()


class UpstreamResponse:
    """A response being read; mirrors the bits of aiohttp's ClientResponse the
    proxy uses (``status``, ``headers``, ``read``, ``readany``, ``iter_any``)."""

    def __init__(self, conn: UpstreamConn) -> None:
        self._conn = conn
        self.head: Head | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._unbounded = False  # read(): no flow control, the caller wants it all
        self._released = False

    # fed by the connection
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()

    def _feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def _set_exception(self, exc: Exception) -> None:
        self._exc = exc
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def _wait(self) -> None:
        self._waiter = w = asyncio.get_running_loop().create_future()
        await w

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        if self._paused:
            self._paused = False
            self._conn._resume()
        return data

    # read API
    @property
    def status(self) -> int:
        assert self.head is not None
        return self.head.status

    @property
    def complete(self) -> bool:
        return self._eof and not self._chunks

    def unlimit(self) -> None:
        """The body is streamed, not held: no limit on its size."""
        self._conn._parser.limit = None

    async def read(self) -> bytes:
        """The whole body (ResponseTooLarge: over the connection's limit,
        which stops reading it)."""
        self._unbounded = True
        if self._paused:
            self._paused = False
            self._conn._resume()
        while not self._eof:
            if self._exc is not None:
                raise self._exc
            await self._wait()
        if self._exc is not None and not self._eof:
            raise self._exc
        return self._take() if self._chunks else b""

    async def readany(self) -> bytes:
        """Whatever body bytes are there (waits for some); b"" at the end."""
        while not self._chunks:
            if self._eof:
                return b""
            if self._exc is not None:
                raise self._exc
            await self._wait()
        return self._take()

    async def iter_any(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    def release(self) -> None:
        """Done with the response: the connection is reused if the body was
        read to its end, closed otherwise."""
        if self._released:
            return
        self._released = True
        self._conn._released(self._eof and self._exc is None)
