"""The asyncio driver: one ``ClientConnection`` per client TCP connection (one
session), one ``UpstreamConnection`` at a time behind it (kept alive across
requests, reconnected when the upstream closes it).

Requests on a connection are handled one after the other by a single task
(``ClientConnection.serve``): authenticate, read a bounded body prefix,
record the command, decide, forward. Responses flow back in the upstream
protocol's callbacks (``Exchange``) without any await, through the body
masker, to the client. Pipelined requests wait in the parser until the
response before them is done.

Flow control: the client's write buffer pauses upstream reads, the
upstream's write buffer pauses request-body streaming, queued request body
bytes pause client reads, and a congested recorder pauses both sides.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import ssl
import time
import zlib
from collections import deque
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

from hoopd.aio import spawn
from hoopd.gateway import AuthFailed, SessionRefused
from hoopd.model import AuthMethod, CommandKind, Identity, Output, Stream, Verdict
from hoopd.tls import identity_from_peercert

from .approval import APPROVAL_HEADER, decide_retry
from .bodies import (
    DECODABLE,
    BodyMasker,
    BodyRefused,
    Plan,
    json_summary,
    mask_request_body,
    media_type,
    plan_response,
)
from .config import HttpOptions, HttpUpstream
from .h1 import (
    END,
    LAST_CHUNK,
    Data,
    EndOfMessage,
    Event,
    Headers,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    chunk,
    request_head_bytes,
    response_head_bytes,
    serialize_head,
)
from .risk import HttpRiskScorer, normalize_path, split_target

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig
    from hoopd.session import Session

log = logging.getLogger("hoopd.http")

QUEUE_LIMIT = 256 * 1024
"""Request body bytes queued from a client before its reads pause."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect", APPROVAL_HEADER}
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
RESPONSE_DROP = HOP_BY_HOP
SENSITIVE = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)


def _json_response(
    status: int, payload: dict[str, Any], *, close: bool, extra: list[tuple[str, str]] = ()  # type: ignore[assignment]
) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = Headers()
    headers.add("Content-Type", "application/json")
    headers.add("Content-Length", str(len(body)))
    headers.add("Cache-Control", "no-store")
    for name, value in extra:
        headers.add(name, value)
    if close:
        headers.add("Connection", "close")
    return response_head_bytes(status, "", headers) + body


class HttpProxy:
    """Per-connection (config) state shared by every client connection."""

    def __init__(self, connection: ConnectionConfig, gateway: Any) -> None:
        self.connection = connection
        self.gateway = gateway
        self.loop = asyncio.get_running_loop()
        self.upstream: HttpUpstream = connection.upstream
        self.options: HttpOptions = connection.options  # type: ignore[assignment]
        self.scorer = HttpRiskScorer(self.options.rules, connection.risk)
        self.masker = gateway.masker(connection)
        self.masking = bool(self.masker is not None and self.masker.active)
        self.listener_tls = bool(connection.tls is not None and connection.tls.enabled)
        up = self.upstream
        self.prefix = up.prefix
        self.authority = up.authority
        self.ssl: ssl.SSLContext | None = None
        if up.tls:
            ctx = ssl.create_default_context(cafile=str(up.ca) if up.ca else None)
            if not up.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.ssl = ctx
        self.inject: list[tuple[str, str]] = []
        self.inject_query = ""
        self.injected_names: frozenset[str] = frozenset()
        auth = up.auth
        if auth is not None:
            if auth.bearer is not None:
                self.inject.append(("Authorization", f"Bearer {auth.bearer.reveal()}"))
            if auth.basic is not None:
                pair = f"{auth.basic.user}:{auth.basic.password.reveal()}".encode()
                self.inject.append(("Authorization", "Basic " + base64.b64encode(pair).decode()))
            for name, secret in auth.headers.items():
                self.inject.append((name, secret.reveal()))
            self.inject_query = "&".join(
                f"{quote(k, safe='')}={quote(v.reveal(), safe='')}" for k, v in auth.query.items()
            )
            self.injected_names = frozenset(n.lower() for n, _ in self.inject)
        self.strip_client_auth = connection.auth != "none" or bool(self.inject)
        self.sensitive = SENSITIVE | self.injected_names
        self.inject_drop = frozenset(self.injected_names) | (
            {"authorization"} if self.strip_client_auth else set()
        )
        self.request_drop = REQUEST_DROP | self.inject_drop | (
            FORWARDED if self.options.forwarded_headers else frozenset()
        )
        self._text_cache: dict[str, str] = {}
        self._head_cache: dict[bytes, bytes] = {}

    # -- recording helpers -------------------------------------------------
    # Heads and command texts repeat across requests (same client, same
    # headers); their masked forms are memoized in small bounded maps.
    _CACHE_MAX = 2048

    def _cached(self, cache: dict[Any, Any], key: Any, make: Any) -> Any:
        try:
            return cache[key]
        except KeyError:
            pass
        value = make()
        if len(cache) >= self._CACHE_MAX:
            cache.clear()
        cache[key] = value
        return value

    def mask_text(self, text: str) -> str:
        if not self.masking:
            return text
        return str(self._cached(self._text_cache, text, lambda: self.masker.mask_text(text)[0]))

    def mask_bytes(self, data: bytes) -> tuple[bytes, dict[str, int]]:
        if not self.masking or not data:
            return data, {}
        out, counts = self.masker.mask_bytes(data)
        return bytes(out), dict(counts)

    def redacted_head(self, raw: bytes, first_line: str, headers: Headers) -> bytes:
        """The head as recorded: credentials redacted by header name, the rest
        masked. ``raw`` (the head's bytes on the wire) is the memo key."""
        return bytes(self._cached(self._head_cache, raw, lambda: self._redact(first_line, headers)))

    def _redact(self, first_line: str, headers: Headers) -> bytes:
        red = Headers()
        for lname, name, value in headers.items:
            if lname in self.sensitive:
                scheme = value.split(" ", 1)[0] if lname.endswith("authorization") else ""
                value = f"{scheme} [REDACTED]".strip() if " " in value and scheme else "[REDACTED]"
            red.items.append((lname, name, value))
        return self.mask_bytes(serialize_head(first_line, red))[0]


class ClientConnection(asyncio.Protocol):
    def __init__(self, proxy: HttpProxy) -> None:
        self.proxy = proxy
        opts = proxy.options
        self.parser = RequestParser(opts.max_header_bytes)
        self.events: deque[Event] = deque()
        self.queued = 0
        self.error: ProtocolError | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self.eof = False
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.token: str | None = None
        self.upstream: UpstreamConnection | None = None
        self.exchange: Exchange | None = None
        self.tunnel: UpstreamConnection | None = None
        self.tunnel_done: asyncio.Future[None] | None = None
        self.client_addr = "unknown"
        self.task: asyncio.Task[None] | None = None
        self._pauses: set[str] = set()
        self._write_paused = False
        self._terminated = False

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_addr = f"{peer[0]}:{peer[1]}"
        self.task = spawn(self.serve(), name="http-client")

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self._tunnel_in(data)
            return
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            self.error = exc
            events = []
            self.pause("error")
        for ev in events:
            if isinstance(ev, Data):
                self.queued += len(ev.data)
        self.events.extend(events)
        if self.queued > QUEUE_LIMIT or self.parser.buffered > self.proxy.options.max_header_bytes:
            self.pause("backlog")
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        if self.tunnel is not None and self.tunnel.transport is not None:
            if self.tunnel.transport.can_write_eof() and not self.tunnel.eof:
                self.tunnel.transport.write_eof()
            else:
                self.tunnel.transport.close()
        self._wake()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()
        if self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.close()
        if self.tunnel_done is not None and not self.tunnel_done.done():
            self.tunnel_done.set_result(None)
        ex = self.exchange
        if ex is not None:
            ex.client_gone()
        # Whatever the serve task waits on (the client, an exchange, a
        # reviewer), the client is gone: stop it; its finally ends the session.
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.upstream is not None:
            self.upstream.pause("client_buffer")
        if self.tunnel is not None:
            self.tunnel.pause("client_buffer")

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.upstream is not None:
            self.upstream.resume("client_buffer")
        if self.tunnel is not None:
            self.tunnel.resume("client_buffer")

    # -- flow control --------------------------------------------------------
    def pause(self, why: str) -> None:
        if not self._pauses and self.transport is not None:
            self.transport.pause_reading()
        self._pauses.add(why)

    def resume(self, why: str) -> None:
        if why not in self._pauses:
            return
        self._pauses.discard(why)
        if not self._pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(False)

    def check_recorder(self) -> None:
        session = self.session
        if session is None or not session.congested:
            return
        self.pause("recorder")
        up = self.upstream or self.tunnel
        if up is not None:
            up.pause("recorder")

        async def wait() -> None:
            assert session is not None
            await session.wait_uncongested()
            self.resume("recorder")
            up2 = self.upstream or self.tunnel
            if up2 is not None:
                up2.resume("recorder")

        spawn(wait(), name="http-recorder-wait")

    async def next_event(self, idle: float | None = None) -> Event | None:
        while not self.events:
            if self.error is not None:
                raise self.error
            if self.eof or self.closed:
                return None
            loop = self.proxy.loop
            waiter = self.waiter = loop.create_future()
            timer = loop.call_later(idle, _expire, waiter) if idle is not None else None
            try:
                timed_out = await waiter
            finally:
                self.waiter = None
                if timer is not None:
                    timer.cancel()
            if timed_out:
                return None
        ev = self.events.popleft()
        if isinstance(ev, Data):
            self.queued -= len(ev.data)
            if self.queued <= QUEUE_LIMIT // 2:
                self.resume("backlog")
        return ev

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    # -- the request loop ----------------------------------------------------
    async def serve(self) -> None:
        reason, error = "client_closed", ""
        try:
            while not self.closed:
                try:
                    ev = await self.next_event(idle=self.proxy.options.idle_timeout)
                except ProtocolError as exc:
                    self.write(
                        _json_response(
                            exc.status, {"error": "bad_request", "message": exc.message}, close=True
                        )
                    )
                    if self.session is not None:
                        self.session.error(exc.message, "protocol_error")
                    reason, error = "protocol_error", exc.message
                    break
                if ev is None:
                    break
                if not isinstance(ev, RequestHead):  # pragma: no cover - parser guarantees it
                    break
                keep = await self.handle(ev)
                if self.tunnel is not None:
                    assert self.tunnel_done is not None
                    await self.tunnel_done
                    break
                if not keep:
                    break
                self.parser.next_message()
                try:
                    self.events.extend(self.parser.feed(b""))
                except ProtocolError as exc:
                    self.error = exc
                self.resume("backlog")
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            log.exception("http session failed")
            reason, error = "error", str(exc) or type(exc).__name__
        finally:
            self._close_all()
            if self.session is not None:
                self.session.end(reason, error)

    def _close_all(self) -> None:
        for up in (self.upstream, self.tunnel):
            if up is not None and up.transport is not None:
                up.transport.close()
        self.upstream = None
        if self.transport is not None:
            self.transport.close()

    def _terminate(self, reason: str, message: str) -> None:
        self._terminated = True
        ex = self.exchange
        if ex is None or not ex.head_sent:
            self.write(_json_response(503, {"error": reason, "message": message}, close=True))
        if self.session is not None:
            self.session.error(message, reason)
        for up in (self.upstream, self.tunnel):
            if up is not None and up.transport is not None:
                up.transport.abort()
        if self.transport is not None:
            self.transport.close()
        task = self.task
        if task is not None and not task.done():
            task.cancel()

    # -- identity --------------------------------------------------------------
    def _send_401(self, message: str) -> None:
        self.write(
            _json_response(
                401,
                {"error": "unauthorized", "message": message},
                close=True,
                extra=[("WWW-Authenticate", 'Bearer realm="hoopd"')],
            )
        )

    async def _identify(self, head: RequestHead) -> bool:
        proxy = self.proxy
        conn = proxy.connection
        identity: Identity | None = None
        if conn.auth == "none":
            identity = Identity.ANONYMOUS
        elif conn.auth == "tls-client-cert":
            assert self.transport is not None
            found = identity_from_peercert(self.transport.get_extra_info("peercert"))
            if found is None:
                self._send_401("a client certificate is required")
                return False
            identity = Identity(subject=found[0], groups=found[1], method=AuthMethod.TLS_CLIENT_CERT)
        else:
            value = head.headers.get("authorization") or ""
            scheme, _, cred = value.partition(" ")
            cred = cred.strip()
            if scheme.lower() != "bearer" or not cred:
                self._send_401("a bearer credential is required (Authorization: Bearer <token>)")
                return False
            if self.session is not None and cred == self.token:
                return True
            try:
                identity = await proxy.gateway.authenticate(conn, cred)
            except AuthFailed:
                self._send_401("invalid credential")
                return False
            if self.session is not None:
                current = self.session.identity
                if identity.subject != current.subject or identity.groups != current.groups:
                    self._send_401("this connection already carries another identity; reconnect")
                    return False
                self.token = cred
                return True
            self.token = cred
        if self.session is not None:
            return True
        try:
            session = await proxy.gateway.open_session(
                conn, identity, self.client_addr, {"upstream": proxy.upstream.url}
            )
        except SessionRefused as exc:
            self.write(_json_response(403, {"error": exc.reason, "message": exc.message}, close=True))
            return False
        self.session = session
        session.set_terminator(self._terminate)
        return True

    # -- one request -------------------------------------------------------------
    async def _body_prefix(self, head: RequestHead) -> tuple[bytes, bool] | None:
        """Read the body up to ``inspect_body_bytes``: (bytes, complete) or None if the client left."""
        if not head.has_body:
            ev = await self.next_event()  # the END that follows a bodyless head
            return (b"", True) if isinstance(ev, EndOfMessage) else None
        if "100-continue" in head.headers.tokens("expect"):
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        cap = self.proxy.options.inspect_body_bytes
        if not head.chunked and head.length > cap:
            return b"", False
        parts: list[bytes] = []
        size = 0
        while True:
            ev = self.events[0] if self.events else await self._peek()
            if ev is None:
                return None
            if isinstance(ev, EndOfMessage):
                self.events.popleft()
                return b"".join(parts), True
            assert isinstance(ev, Data)
            if size + len(ev.data) > cap:
                return b"".join(parts), False
            self.events.popleft()
            self.queued -= len(ev.data)
            parts.append(ev.data)
            size += len(ev.data)
            if self.queued <= QUEUE_LIMIT // 2:
                self.resume("backlog")

    async def _peek(self) -> Event | None:
        ev = await self.next_event()
        if ev is not None:
            self.events.appendleft(ev)
            if isinstance(ev, Data):
                self.queued += len(ev.data)
        return ev

    async def handle(self, head: RequestHead) -> bool:
        proxy = self.proxy
        started = time.perf_counter()
        if not await self._identify(head):
            return False
        session = self.session
        assert session is not None
        path, query = split_target(head.target)
        if path == "*" and head.method != "OPTIONS":
            self.write(_json_response(400, {"error": "bad_request", "message": "invalid target"}, close=True))
            return False
        npath = normalize_path(path) if path != "*" else "*"
        text = f"{head.method} {npath}?{query}" if query else f"{head.method} {npath}"
        try:
            got = await self._body_prefix(head)
        except ProtocolError as exc:
            self.write(_json_response(exc.status, {"error": "bad_request", "message": exc.message}, close=True))
            session.error(exc.message, "protocol_error")
            return False
        if got is None:
            return False
        body, complete = got
        ctype = media_type(head.headers)
        cenc = (head.headers.get("content-encoding") or "").strip().lower()
        attrs: dict[str, Any] = {"method": head.method, "path": proxy.mask_text(npath)}
        if query:
            attrs["query"] = proxy.mask_text(query)
        body_sha = ""
        if head.has_body:
            battrs: dict[str, Any] = {"content_type": ctype}
            if head.chunked:
                battrs["chunked"] = True
            else:
                battrs["length"] = head.length
            if complete:
                body_sha = hashlib.sha256(body).hexdigest()
                battrs["sha256"] = body_sha
                if ctype.endswith("json") and not cenc:
                    battrs["summary"] = json_summary(body)
            else:
                battrs["streamed"] = True
            attrs["body"] = battrs
        if head.upgrade:
            attrs["upgrade"] = head.upgrade
        cmd = session.command(CommandKind.HTTP, proxy.mask_text(text), attrs)
        recorder = _RequestRecorder(self, cmd.seq, head, ctype, cenc)
        recorder.start(body, complete)
        self.check_recorder()
        found = proxy.scorer.assess(head.method, npath, text)
        params = {
            "request": hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest(),
            "body": body_sha if complete else f"streamed:{head.length if not head.chunked else 'chunked'}",
        }
        keep_after_refusal = complete and head.keep_alive
        if proxy.connection.approval.mode == "retry":
            outcome = await decide_retry(
                session, cmd, found, params, head.headers.get(APPROVAL_HEADER), complete
            )
            if outcome.pending:
                self.write(
                    _json_response(
                        403,
                        {
                            "error": "approval_required",
                            "approval_id": outcome.approval_id,
                            "message": outcome.message,
                            "retry": True,
                        },
                        close=not keep_after_refusal,
                        extra=[("X-Hoopd-Approval", outcome.approval_id)],
                    )
                )
                session.result(cmd, "403", duration_ms=_ms(started), error="approval required")
                return keep_after_refusal
            decision = outcome.decision
        else:
            decision = await session.decide(cmd, found, params=params)
        if self.closed:
            return False
        if decision.verdict is Verdict.DENY:
            payload: dict[str, Any] = {
                "error": "denied",
                "message": "request denied by policy",
                "reasons": list(decision.reasons),
            }
            if decision.approval_id:
                payload["approval_id"] = decision.approval_id
            self.write(_json_response(403, payload, close=not keep_after_refusal))
            session.result(cmd, "403", duration_ms=_ms(started), error="denied")
            return keep_after_refusal
        return await self._forward(cmd, head, npath, query, body, complete, started, recorder)

    def _upstream_head(
        self, head: RequestHead, npath: str, query: str, body: bytes, complete: bool
    ) -> tuple[bytes, bool]:
        """(request head for the upstream, stream the rest chunked?)."""
        proxy = self.proxy
        drop = proxy.request_drop
        conn_tokens = head.connection
        if conn_tokens:
            drop = drop | frozenset(conn_tokens)
        headers = Headers([h for h in head.headers.items if h[0] not in drop])
        headers.items.insert(0, ("host", "Host", proxy.authority))
        if proxy.options.forwarded_headers:
            ip = self.client_addr.rsplit(":", 1)[0]
            prior = head.headers.get("x-forwarded-for")
            add = headers.items.append
            add(("x-forwarded-for", "X-Forwarded-For", f"{prior}, {ip}" if prior else ip))
            add(("x-forwarded-proto", "X-Forwarded-Proto", "https" if proxy.listener_tls else "http"))
            host = head.headers.get("host")
            if host:
                add(("x-forwarded-host", "X-Forwarded-Host", host))
        if proxy.masking:
            accepted = [c for c in headers.tokens("accept-encoding")]
            keep = [c for c in accepted if c.split(";", 1)[0].strip() in DECODABLE or c.startswith("identity")]
            headers.remove("accept-encoding")
            if keep:
                headers.add("Accept-Encoding", ", ".join(keep))
        for name, value in proxy.inject:
            headers.add(name, value)
        if head.upgrade == "websocket":
            headers.add("Connection", "Upgrade")
            headers.add("Upgrade", "websocket")
        chunked = False
        if complete:
            if head.has_body or head.headers.has("content-length"):
                headers.add("Content-Length", str(len(body)))
        elif head.chunked:
            headers.add("Transfer-Encoding", "chunked")
            chunked = True
        else:
            headers.add("Content-Length", str(head.length))
        target = proxy.prefix + npath if npath != "*" else "*"
        if query:
            target += "?" + query
        if proxy.inject_query:
            target += ("&" if "?" in target else "?") + proxy.inject_query
        return request_head_bytes(head.method, target, headers), chunked

    async def _connect(self) -> UpstreamConnection:
        proxy = self.proxy
        up = self.upstream
        if up is not None and up.usable:
            up.reused = True
            return up
        if up is not None and up.transport is not None:
            up.transport.close()
        self.upstream = None
        loop = asyncio.get_running_loop()
        session = self.session
        started = time.perf_counter()
        u = proxy.upstream
        _, proto = await asyncio.wait_for(
            loop.create_connection(
                lambda: UpstreamConnection(self),
                u.host,
                u.port,
                ssl=proxy.ssl,
                server_hostname=u.host if proxy.ssl is not None else None,
            ),
            u.connect_timeout,
        )
        if session is not None:
            session.metrics.upstream_connect.observe(time.perf_counter() - started)
        self.upstream = proto
        if self._write_paused:
            proto.pause("client_buffer")
        return proto

    async def _forward(
        self,
        cmd: Any,
        head: RequestHead,
        npath: str,
        query: str,
        body: bytes,
        complete: bool,
        started: float,
        recorder: _RequestRecorder,
    ) -> bool:
        session = self.session
        assert session is not None
        up_head, chunked = self._upstream_head(head, npath, query, body, complete)
        attempt = 0
        while True:
            try:
                upstream = await self._connect()
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                why = str(exc) or type(exc).__name__
                session.metrics.upstream_errors.inc()
                session.error(f"upstream unreachable: {why}", "upstream_unreachable")
                self.write(
                    _json_response(
                        502,
                        {"error": "upstream_unreachable", "message": "the upstream cannot be reached"},
                        close=not (complete and head.keep_alive),
                    )
                )
                session.result(cmd, "502", duration_ms=_ms(started), error=why)
                return complete and head.keep_alive
            ex = Exchange(self, upstream, cmd, head, started, complete)
            self.exchange = ex
            upstream.begin(ex)
            if body:
                upstream.write(up_head + (chunk(body) if chunked else body))
            else:
                upstream.write(up_head)
            if body:
                session.client_data(body, record=False)
            if not complete:
                ok = await self._stream_body(upstream, ex, chunked, recorder)
                if not ok:
                    ex.client_gone()
                    return False
            else:
                recorder.finish()
            result = await ex.done
            self.exchange = None
            if result == "retry" and attempt == 0:
                attempt += 1
                continue
            if result == "tunnel":
                return True
            if not ex.upstream_keep:
                if self.upstream is upstream:
                    self.upstream = None
                if upstream.transport is not None:
                    upstream.transport.close()
            return result == "keep" and head.keep_alive and not (ex.finished_early and not complete)

    async def _stream_body(
        self, upstream: UpstreamConnection, ex: Exchange, chunked: bool, recorder: _RequestRecorder
    ) -> bool:
        session = self.session
        assert session is not None
        while True:
            if ex.done.done():
                ex.finished_early = True
                return True
            ev = await self.next_event()
            if ev is None:
                return False
            if isinstance(ev, EndOfMessage):
                if chunked:
                    upstream.write(LAST_CHUNK)
                recorder.finish()
                return True
            assert isinstance(ev, Data)
            upstream.write(chunk(ev.data) if chunked else ev.data)
            session.client_data(ev.data, record=False)
            recorder.feed(ev.data)
            self.check_recorder()
            if upstream.write_paused:
                await upstream.drained()

    # -- websocket tunnel ------------------------------------------------------------
    def start_tunnel(self, upstream: UpstreamConnection, leftover_client: bytes) -> None:
        self.tunnel = upstream
        self.tunnel_done = asyncio.get_running_loop().create_future()
        if self.upstream is upstream:
            self.upstream = None
        upstream.tunnel = True
        self.resume("backlog")
        if leftover_client:
            self._tunnel_in(leftover_client)
        if self.eof:
            self.eof_received()

    def _tunnel_in(self, data: bytes) -> None:
        up = self.tunnel
        session = self.session
        if up is None or up.transport is None or session is None:
            return
        session.client_data(data, record=False)
        session.record(Output(Stream.STDIN, data))
        up.transport.write(data)
        self.check_recorder()

    def tunnel_out(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        masked, counts = self.proxy.mask_bytes(data)
        session.upstream_data(data, Stream.STDOUT, record=False, masked=counts)
        session.record(Output(Stream.STDOUT, masked, 0, counts))
        self.write(data)
        self.check_recorder()

    def tunnel_closed(self) -> None:
        if self.tunnel_done is not None and not self.tunnel_done.done():
            self.tunnel_done.set_result(None)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


class _RequestRecorder:
    """Records the request line, headers (credentials redacted) and the first
    ``record_body_bytes`` of the body, masked."""

    def __init__(
        self, client: ClientConnection, seq: int, head: RequestHead, ctype: str, cenc: str
    ) -> None:
        self.client = client
        self.seq = seq
        self.head = head
        self.ctype = ctype
        self.cenc = cenc
        self.left = client.proxy.options.record_body_bytes
        self.stream: Any = None
        self.total = 0

    def start(self, body: bytes, complete: bool) -> None:
        proxy = self.client.proxy
        session = self.client.session
        assert session is not None
        head = self.head
        raw_head = proxy.redacted_head(
            head.raw, f"{head.method} {head.target} HTTP/{head.version}", head.headers
        )
        counts: dict[str, int] = {}
        data = body[: self.left]
        self.total = len(body)
        if data and complete and len(body) <= self.left:
            data, counts = mask_request_body(proxy.masker if proxy.masking else None, data, self.ctype, self.cenc)
        elif data:
            data = self._stream_mask(data)
        self.left -= min(len(body), self.left)
        session.record(Output(Stream.STDIN, raw_head + data, self.seq, counts))

    def _stream_mask(self, data: bytes) -> bytes:
        proxy = self.client.proxy
        if not proxy.masking or self.cenc:
            return data if not self.cenc else b""
        if self.stream is None:
            self.stream = proxy.masker.stream()
        return bytes(self.stream.feed(data))

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        if self.left <= 0:
            return
        part = data[: self.left]
        self.left -= len(part)
        out = self._stream_mask(part)
        if out:
            session = self.client.session
            assert session is not None
            session.record(Output(Stream.STDIN, out, self.seq))

    def finish(self) -> None:
        if self.stream is not None:
            tail = bytes(self.stream.flush())
            session = self.client.session
            if tail and session is not None:
                session.record(Output(Stream.STDIN, tail, self.seq, dict(self.stream.counts)))
            self.stream = None


class Exchange:
    """One request/response through the upstream; lives in callbacks."""

    def __init__(
        self,
        client: ClientConnection,
        upstream: UpstreamConnection,
        cmd: Any,
        head: RequestHead,
        started: float,
        request_complete: bool,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.cmd = cmd
        self.head = head
        self.started = started
        self.request_complete = request_complete
        loop = client.proxy.loop
        self.done: asyncio.Future[str] = loop.create_future()
        self.got_bytes = False
        self.head_sent = False
        self.status = 0
        self.body: BodyMasker | None = None
        self.chunked = False
        self.client_keep = head.keep_alive
        self.upstream_keep = False
        self.discard = False
        self.finished_early = False
        self.deferred: Headers | None = None
        self.reason = ""
        self.record_left = client.proxy.options.record_body_bytes
        self.rec: list[bytes] = []
        self.bytes_out = 0
        self.out: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = loop.call_later(
            client.proxy.upstream.response_timeout, self.on_timeout
        )

    # -- helpers -------------------------------------------------------------
    def _finish(self, result: str) -> None:
        self.flush_out()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.done.done():
            self.done.set_result(result)

    def _record(self, data: bytes) -> None:
        if self.record_left <= 0 or not data:
            return
        part = data[: self.record_left]
        self.record_left -= len(part)
        self.rec.append(part)

    def flush_record(self, final: bool = False) -> None:
        session = self.client.session
        if session is None:
            return
        if self.rec:
            counts = dict(self.body.counts) if final and self.body is not None else {}
            session.record(Output(Stream.STDOUT, b"".join(self.rec), self.cmd.seq, counts))
            self.rec = []
        self.client.check_recorder()

    def _send(self, data: bytes) -> None:
        """Queue bytes for the client; ``flush_out`` writes them in one call
        (once per upstream read: head and body of a small response go together)."""
        if not data:
            return
        self.bytes_out += len(data)
        self.out.append(data)

    def flush_out(self) -> None:
        out = self.out
        if out:
            self.client.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _error_response(self, status: int, code: str, message: str) -> None:
        """Before the head went out: answer with an error; after: cut the connection."""
        session = self.client.session
        if session is not None:
            session.error(message, code)
            session.result(self.cmd, str(status), duration_ms=_ms(self.started), error=message)
        if not self.head_sent:
            self.head_sent = True
            self.out.clear()
            self.client.write(
                _json_response(status, {"error": code, "message": message}, close=True)
            )
        elif self.client.transport is not None:
            self.out.clear()
            self.client.transport.abort()
        self.upstream_keep = False
        self._finish("close")

    # -- from the upstream -------------------------------------------------------
    def on_head(self, resp: ResponseHead) -> None:
        if 100 <= resp.status < 200 and resp.status != 101:
            return  # interim responses: Expect was answered by the gateway itself
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        proxy = self.client.proxy
        self.status = resp.status
        self.upstream_keep = resp.keep_alive and self.request_complete
        if resp.status == 101:
            if self.head.upgrade != "websocket":
                self._error_response(502, "bad_upstream", "unexpected 101 from the upstream")
                return
            headers = Headers([h for h in resp.headers.items if h[0] not in ("connection", "upgrade")])
            headers.add("Connection", "Upgrade")
            headers.add("Upgrade", resp.headers.get("upgrade") or "websocket")
            data = response_head_bytes(101, resp.reason, headers)
            self.head_sent = True
            self._send(data)
            self._record(proxy.redacted_head(data, f"HTTP/1.1 101 {resp.reason}", headers))
            return
        if resp.framing == "none":
            plan = Plan("none")
        else:
            plan = plan_response(resp.headers, proxy.masker, proxy.options.unmaskable)
        if plan.mode == "refuse":
            self.discard = True
            self._error_response(502, "unmaskable", f"response refused: {plan.reason}")
            return
        self.body = BodyMasker(plan, proxy.masker, proxy.options.mask_json_max_bytes, proxy.options.unmaskable)
        drop = RESPONSE_DROP | frozenset(resp.connection) if resp.connection else RESPONSE_DROP
        headers = Headers([h for h in resp.headers.items if h[0] not in drop])
        if plan.transforms:
            headers.remove("content-length", "content-encoding", "content-md5")
            etag = headers.get("etag")
            if etag is not None and not etag.startswith("W/"):
                headers.set("ETag", "W/" + etag)
        if plan.transforms and self.body.buffering:
            self.deferred = headers
            return
        if resp.framing == "none":
            pass
        elif not plan.transforms and resp.framing == "length":
            pass  # Content-Length kept
        elif self.head.version == "1.1":
            headers.add("Transfer-Encoding", "chunked")
            self.chunked = True
        else:
            self.client_keep = False
        self._send_head(resp.status, resp.reason, headers)

    def _send_head(self, status: int, reason: str, headers: Headers, body: bytes = b"") -> None:
        if not self.client_keep:
            headers.add("Connection", "close")
        elif self.head.version == "1.0":
            headers.add("Connection", "keep-alive")
        proxy = self.client.proxy
        data = response_head_bytes(status, reason, headers)
        self.head_sent = True
        self._send(data + body if body else data)
        if self.record_left > 0:
            self.rec.append(proxy.redacted_head(data, f"HTTP/1.1 {status} {reason}", headers))

    def on_data(self, data: bytes) -> None:
        if self.discard or self.body is None:
            return
        try:
            out = self.body.feed(data)
        except BodyRefused as exc:
            self.discard = True
            self._error_response(502, "unmaskable", f"response refused: {exc}")
            return
        except zlib.error as exc:
            self.discard = True
            self._error_response(502, "bad_upstream", f"cannot decode the response body: {exc}")
            return
        if out:
            self._out(out)

    def _out(self, out: bytes) -> None:
        session = self.client.session
        if session is not None:
            session.upstream_data(out, record=False)
        self._record(out)
        self._send(chunk(out) if self.chunked else out)

    def on_end(self) -> None:
        if self.done.done():
            return
        if self.status == 101:
            self.flush_record()
            self._finish("tunnel")
            return
        if self.discard or self.body is None:
            self._finish("close")
            return
        try:
            tail = self.body.finish()
        except (BodyRefused, zlib.error) as exc:
            self.discard = True
            self._error_response(502, "unmaskable", f"response refused: {exc}")
            return
        session = self.client.session
        if self.deferred is not None:
            headers = self.deferred
            headers.add("Content-Length", str(len(tail)))
            self._send_head(self.status, "", headers, tail)
            if session is not None:
                session.upstream_data(tail, record=False, masked=self.body.counts)
            self._record(tail)
        elif tail:
            self._out(tail)
        if self.chunked:
            self._send(LAST_CHUNK)
        if session is not None:
            if self.body.counts and self.deferred is None:
                session.upstream_data(b"", masked=self.body.counts, record=False)
            self.flush_record(final=True)
            attrs_err = "masked as text: JSON over the size limit" if self.body.fell_back else ""
            session.result(self.cmd, str(self.status), duration_ms=_ms(self.started), error=attrs_err)
        self._finish("keep" if self.client_keep else "close")

    def on_upstream_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if (
            not self.got_bytes
            and self.upstream.reused
            and self.request_complete
            and self.head.method in IDEMPOTENT
        ):
            self._finish("retry")  # a kept-alive connection closed under us: send again
            return
        why = str(exc) if exc else "upstream closed the connection"
        session = self.client.session
        if session is not None:
            session.metrics.upstream_errors.inc()
        self._error_response(502, "bad_upstream", f"upstream failed: {why}")

    def on_protocol_error(self, err: ProtocolError) -> None:
        self.discard = True
        self._error_response(502, "bad_upstream", f"invalid response from the upstream: {err.message}")

    def on_timeout(self) -> None:
        self.timer = None
        if self.done.done() or self.status:
            return
        self.discard = True
        self._error_response(504, "upstream_timeout", "the upstream did not answer in time")
        if self.upstream.transport is not None:
            self.upstream.transport.close()

    def client_gone(self) -> None:
        if self.upstream.transport is not None and not self.done.done():
            self.upstream.transport.abort()
        self._finish("close")


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.parser = ResponseParser(client.proxy.options.max_header_bytes)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.eof = False
        self.reused = False
        self.tunnel = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._pauses: set[str] = set()

    @property
    def usable(self) -> bool:
        return (
            not self.closed
            and not self.eof
            and self.transport is not None
            and not self.transport.is_closing()
            and (self.exchange is None or self.exchange.done.done())
        )

    def begin(self, ex: Exchange) -> None:
        self.exchange = ex
        self.parser.expect(ex.head.method)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- flow control ------------------------------------------------------------
    def pause(self, why: str) -> None:
        if not self._pauses and self.transport is not None:
            self.transport.pause_reading()
        self._pauses.add(why)

    def resume(self, why: str) -> None:
        if why not in self._pauses:
            return
        self._pauses.discard(why)
        if not self._pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drained(self) -> None:
        if not self.write_paused or self.closed:
            return
        self._drain = asyncio.get_running_loop().create_future()
        await self._drain

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            self.client.tunnel_out(data)
            return
        ex = self.exchange
        if ex is None or ex.done.done():
            # nothing was asked: a broken upstream; drop the connection
            if self.transport is not None:
                self.transport.close()
            return
        ex.got_bytes = True
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            ex.on_protocol_error(exc)
            if self.transport is not None:
                self.transport.close()
            return
        self._deliver(ex, events)

    def _deliver(self, ex: Exchange, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, Data):
                ex.on_data(ev.data)
            elif ev is END or isinstance(ev, EndOfMessage):
                ex.on_end()
                if ex.status == 101:
                    leftover = self.parser.take_buffer()
                    client_left = self.client.parser.take_buffer()
                    self.client.start_tunnel(self, client_left)
                    if leftover:
                        self.client.tunnel_out(leftover)
                    return
            else:
                assert isinstance(ev, ResponseHead)
                ex.on_head(ev)
        if not ex.done.done():
            ex.flush_out()
            ex.flush_record()

    def eof_received(self) -> bool:
        self.eof = True
        if self.tunnel:
            t = self.client.transport
            if t is not None and t.can_write_eof() and not self.client.eof:
                t.write_eof()
                return True
            self.client.tunnel_closed()
            return False
        ex = self.exchange
        if ex is not None and not ex.done.done():
            try:
                events = self.parser.feed_eof()
            except ProtocolError:
                return False  # connection_lost reports it
            self._deliver(ex, events)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.tunnel:
            self.client.tunnel_closed()
            if self.client.transport is not None:
                self.client.transport.close()
            return
        ex = self.exchange
        if ex is not None and not ex.done.done():
            ex.on_upstream_lost(exc)

