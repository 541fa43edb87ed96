"""The asyncio driver: one ``ClientConnection`` per client TCP connection (one
session), one ``UpstreamConnection`` at a time behind it (kept alive across
requests, reconnected when the upstream closes it).

Requests on a connection are handled one after the other by a single task
(``ClientConnection.serve``): authenticate, read a bounded body prefix,
record the command, decide, forward. Once a connection is established, a
plain bodyless request with the same credential whose decision needs no
reviewer is handled in the read callback itself (``_fast``), without waking
the task; everything else takes the general path. Responses flow back in the upstream
protocol's callbacks (``Exchange``) without any await, through the body
masker, to the client. Pipelined requests wait in the parser until the
response before them is done.

Flow control: the client's write buffer pauses upstream reads, the
upstream's write buffer pauses request-body streaming, queued request body
bytes pause client reads, and a congested recorder pauses both sides.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from hoopd.aio import spawn
from hoopd.gateway import AuthFailed, SessionRefused
from hoopd.model import AuthMethod, CommandKind, Decision, Identity, Output, Stream, Verdict
from hoopd.policy import decide_command
from hoopd.tls import identity_from_peercert

from . import ws
from .approval import APPROVAL_HEADER, decide_retry
from .bodies import charset, foreign_charset, json_summary, media_type
from .exchange import Exchange, UpstreamConnection
from .h1 import (
    LAST_CHUNK,
    Data,
    EndOfMessage,
    Event,
    ProtocolError,
    RequestHead,
    RequestParser,
    chunk,
)
from .recording import RequestRecorder
from .risk import MAX_READINGS, body_method_readings
from .shared import TOO_MANY_READINGS, HttpProxy, Prepared, expire, json_response, ms

if TYPE_CHECKING:
    from hoopd.session import Session

log = logging.getLogger("hoopd.http")

QUEUE_LIMIT = 256 * 1024
"""Request body bytes queued from a client before its reads pause."""


class ClientConnection(asyncio.Protocol):
    def __init__(self, proxy: HttpProxy) -> None:
        self.proxy = proxy
        opts = proxy.options
        self.parser = RequestParser(opts.max_header_bytes, proxy.request_heads)
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
        self._idle_timer: asyncio.TimerHandle | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        """Armed while a request head is awaited and overdue (header_timeout)."""
        self.timed_out: tuple[str, str] | None = None
        """(reason, message) once the client was too slow: how the session ends."""
        self.last_active = 0.0
        self.awaiting_head = False
        """The serve task waits for the next request head (nothing in flight)."""
        self.fast_busy = False
        """A request taken by the callback fast path is in flight."""
        self.client_ip = "unknown"
        self.ws_in: ws.Upstream | None = None
        self.ws_out: ws.Downstream | None = None
        self.tunnel_seq = 0
        self._decisions: dict[Prepared, Decision] = {}
        """Decisions (command_seq 0) by request, for this connection's identity."""

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer:
            self.client_addr = f"{peer[0]}:{peer[1]}"
            self.client_ip = str(peer[0])
        # the first head is due header_timeout after connecting, bytes or not
        self._head_timer = self.proxy.loop.call_later(
            self.proxy.options.header_timeout, self._head_timeout
        )
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
        self._dispatch(events)
        if self._head_timer is None and self.awaiting_head:
            self._watch_head()

    def _watch_head(self) -> None:
        """Part of a next request head is here while none is in flight: it is
        due within header_timeout (the first byte ends idle_timeout)."""
        if self.parser.buffered and not self.fast_busy and not self.events and not self.closed:
            self._head_timer = self.proxy.loop.call_later(
                self.proxy.options.header_timeout, self._head_timeout
            )

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.closed or self.tunnel is not None or not self.awaiting_head:
            return
        if self.fast_busy or self.events:  # a head came meanwhile
            return
        partial = self.parser.buffered > 0
        timeout = self.proxy.options.header_timeout
        log.info(
            "%s: client %s sent no complete request head within %.0f s (%s): closing",
            self.proxy.connection.name, self.client_addr, timeout,
            f"{self.parser.buffered} bytes of it" if partial else "nothing",
        )  # fmt: skip
        message = f"no complete request head within {timeout:g} s"
        if self.session is None:  # never identified: counted as a failed login
            self.proxy.gateway.connection_metrics(self.proxy.connection).auth_failed(
                "header_timeout"
            )
        self._timed_out("header_timeout", message, answer=partial)

    def _timed_out(self, reason: str, message: str, *, answer: bool) -> None:
        """The client was too slow: 408 if ``answer`` (and nothing of a
        response was sent yet), then close; the serve task ends the session
        with ``reason``."""
        self.timed_out = (reason, message)
        ex = self.exchange
        if answer and (ex is None or not ex.head_sent):
            self.write(json_response(408, {"error": reason, "message": message}, close=True))
        if self.transport is not None:
            self.transport.close()
        w = self.waiter
        if w is not None:
            expire(w)

    def _dispatch(self, events: list[Event]) -> None:
        if self._head_timer is not None and any(isinstance(ev, RequestHead) for ev in events):
            self._head_timer.cancel()
            self._head_timer = None
        if (
            len(events) == 2
            and self.awaiting_head
            and not self.fast_busy
            and not self.events
            and self.exchange is None
            and isinstance(events[0], RequestHead)
            and isinstance(events[1], EndOfMessage)  # not [head, first body bytes]
            and self._fast(events[0])
        ):
            return
        for ev in events:
            if isinstance(ev, Data):
                self.queued += len(ev.data)
        self.events.extend(events)
        if self.queued > QUEUE_LIMIT or self.parser.buffered > self.proxy.options.max_header_bytes:
            self.pause("backlog")
        if events or self.error is not None:
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
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
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
            if self.closed or (self.eof and not self.fast_busy):
                return None
            loop = self.proxy.loop
            waiter = self.waiter = loop.create_future()
            timer = loop.call_later(idle, self._idle, waiter, idle) if idle is not None else None
            try:
                timed_out = await waiter
            finally:
                self.waiter = None
                if self._idle_timer is not None:
                    self._idle_timer.cancel()
                    self._idle_timer = None
                elif timer is not None:
                    timer.cancel()
            if timed_out:
                return None
        ev = self.events.popleft()
        if isinstance(ev, Data):
            self.queued -= len(ev.data)
            if self.queued <= QUEUE_LIMIT // 2:
                self.resume("backlog")
        return ev

    def _idle(self, waiter: asyncio.Future[bool], idle: float) -> None:
        """Idle timeout, unless fast-path requests kept the connection busy
        meanwhile (then look again when the idle time would be up)."""
        if waiter.done():
            return
        loop = self.proxy.loop
        left = self.last_active + idle - loop.time()
        if self.fast_busy or left > 0:
            self._idle_timer = loop.call_later(max(left, 0.05), self._idle, waiter, idle)
            return
        expire(waiter)

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    # -- the request loop ----------------------------------------------------
    async def serve(self) -> None:
        reason, error = "client_closed", ""
        try:
            while not self.closed:
                self.awaiting_head = True
                if self._head_timer is None:
                    self._watch_head()
                try:
                    ev = await self.next_event(idle=self.proxy.options.idle_timeout)
                except ProtocolError as exc:
                    self.write(
                        json_response(
                            exc.status, {"error": "bad_request", "message": exc.message}, close=True
                        )
                    )
                    if self.session is not None:
                        self.session.error(exc.message, "protocol_error")
                    reason, error = "protocol_error", exc.message
                    break
                finally:
                    self.awaiting_head = False
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
            if self.timed_out is not None:
                reason, error = self.timed_out
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
            self.write(json_response(503, {"error": reason, "message": message}, close=True))
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
            json_response(
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
            self.write(json_response(403, {"error": exc.reason, "message": exc.message}, close=True))
            return False
        self.session = session
        session.set_terminator(self._terminate)
        return True

    # -- the callback fast path ------------------------------------------------------
    def _fast(self, head: RequestHead) -> bool:
        """Handle a bodyless request entirely in callbacks, without waking the
        serve task: same identity as before, upstream connection open, plain
        request, and a decision that needs no reviewer. Returns False (having
        recorded nothing) when the request needs the general path."""
        proxy = self.proxy
        session = self.session
        upstream = self.upstream
        if session is None or upstream is None or not upstream.usable or head.upgrade:
            return False
        prep = proxy.prepare(head)
        if (proxy.bearer_auth and prep.bearer != self.token) or prep.npath == "*" or prep.refusal:
            return False
        tmpl = self._decisions.get(prep)
        if tmpl is None:
            tmpl = decide_command(
                0, proxy.connection.risk, session.identity, prep.found, break_glass=session.break_glass
            )
            if len(self._decisions) >= 256:
                self._decisions.clear()
            self._decisions[prep] = tmpl
        if tmpl.verdict is Verdict.REVIEW:
            return False
        started = time.perf_counter()
        cmd = session.command(CommandKind.HTTP, prep.cmd_text, prep.attrs)
        session.record(Output(Stream.STDIN, prep.recorded_head, cmd.seq))
        decision = session.final_decision(
            Decision(
                cmd.seq, tmpl.verdict, tmpl.risk, tmpl.reasons, tmpl.rule_ids, break_glass=tmpl.break_glass
            )
        )
        self.fast_busy = True
        self.last_active = proxy.loop.time()
        if decision.verdict is Verdict.DENY:
            self._deny(cmd, decision, started, keep=head.keep_alive)
            self._after_request(head.keep_alive)
            return True
        up_head = prep.up_heads.get(self.client_ip)
        if up_head is None:
            up_head = self._upstream_head(head, prep, b"", True)[0]
            if len(prep.up_heads) < 64:
                prep.up_heads[self.client_ip] = up_head
        ex = Exchange(self, upstream, cmd, head, started, True, prep)
        ex.on_done = self._fast_done
        self.exchange = ex
        upstream.reused = True
        upstream.begin(ex)
        upstream.write(up_head)
        # the recorder's backlog is looked at once the response is recorded
        # (Exchange.flush_record), before the next request is read
        return True

    def _fast_done(self, ex: Exchange, result: str) -> None:
        self.exchange = None
        upstream = ex.upstream
        if result == "retry":  # a kept-alive upstream connection closed under us
            spawn(self._fast_retry(ex.cmd, ex.head, ex.prep, ex.started), name="http-retry")
            return
        if not ex.upstream_keep:
            if self.upstream is upstream:
                self.upstream = None
            if upstream.transport is not None:
                upstream.transport.close()
        self._after_request(result == "keep" and ex.head.keep_alive)

    async def _fast_retry(self, cmd: Any, head: RequestHead, prep: Prepared, started: float) -> None:
        recorder = RequestRecorder(self, cmd.seq, head, "", "")
        try:
            keep = await self._forward(cmd, head, prep, b"", True, started, recorder, retried=True)
        except Exception:
            log.exception("http retry failed")
            keep = False
        self._after_request(keep)

    def _after_request(self, keep: bool) -> None:
        """A fast-path request is done: close, or go on with what the client sent next."""
        self.fast_busy = False
        self.last_active = self.proxy.loop.time()
        if not keep or self.closed:
            if self.transport is not None:
                self.transport.close()
            self._wake()
            return
        parser = self.parser
        parser.next_message()
        if parser.buffered:  # the client sent more meanwhile (pipelined)
            try:
                events = parser.feed(b"")
            except ProtocolError as exc:
                self.error = exc
                events = []
            self.resume("backlog")
            self._dispatch(events)
        else:  # nothing to parse (_dispatch of no events: only an error to wake for)
            self.resume("backlog")
            if self.error is not None:
                self._dispatch([])
        if self._head_timer is None and self.awaiting_head:
            self._watch_head()
        if self.eof:
            self._wake()  # the client half-closed meanwhile: let the task finish up

    def _deny(self, cmd: Any, decision: Any, started: float, *, keep: bool) -> None:
        payload: dict[str, Any] = {
            "error": "denied",
            "message": "request denied by policy",
            "reasons": list(decision.reasons),
        }
        if decision.approval_id:
            payload["approval_id"] = decision.approval_id
        self.write(json_response(403, payload, close=not keep))
        assert self.session is not None
        self.session.result(cmd, "403", duration_ms=ms(started), error="denied")

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

    async def _body_event(self) -> Event | None:
        """The next event of a request body, within body_timeout of the last
        one (None: the client left or was too slow)."""
        timeout = self.proxy.options.body_timeout
        while True:
            ev = await self.next_event(idle=timeout)
            if ev is not None or self.closed or self.eof or self.timed_out is not None:
                return ev
            if "recorder" in self._pauses:  # the gateway stopped reading, not the client
                continue
            log.info(
                "%s: client %s sent no request body bytes for %.0f s: closing",
                self.proxy.connection.name, self.client_addr, timeout,
            )  # fmt: skip
            self._timed_out("body_timeout", f"no request body bytes for {timeout:g} s", answer=True)
            return None

    async def _peek(self) -> Event | None:
        ev = await self._body_event()
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
        prep = proxy.prepare(head)
        if prep.path == "*" and head.method != "OPTIONS":
            self.write(json_response(400, {"error": "bad_request", "message": "invalid target"}, close=True))
            return False
        if prep.refusal:
            self.write(json_response(400, {"error": "bad_request", "message": prep.refusal}, close=True))
            session.error(prep.refusal, "protocol_error")
            return False
        try:
            got = await self._body_prefix(head)
        except ProtocolError as exc:
            self.write(json_response(exc.status, {"error": "bad_request", "message": exc.message}, close=True))
            session.error(exc.message, "protocol_error")
            return False
        if got is None:
            return False
        body, complete = got
        ctype = media_type(head.headers)
        cenc = (head.headers.get("content-encoding") or "").strip().lower()
        attrs = prep.attrs
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
            attrs = {**attrs, "body": battrs}
        found = prep.found
        extra = body_method_readings(body) if body else ()
        if extra:
            # a _method field in the body: the backend may act on that method
            methods = tuple(dict.fromkeys((*prep.methods, *extra)))
            if len(methods) > MAX_READINGS:
                message = TOO_MANY_READINGS
                self.write(json_response(400, {"error": "bad_request", "message": message}, close=True))
                session.error(message, "protocol_error")
                return False
            if methods != prep.methods:
                found = proxy.scorer.assess_readings(methods, prep.npath, prep.text, prep.targets)
                attrs = {**attrs, "method_readings": [proxy.mask_text(m) for m in methods]}
        cmd = session.command(CommandKind.HTTP, prep.cmd_text, attrs)
        text_charset = foreign_charset(charset(head.headers)) if head.has_body else ""
        recorder = RequestRecorder(self, cmd.seq, head, ctype, cenc, text_charset)
        recorder.start(body, complete, prep.recorded_head)
        self.check_recorder()
        params = {
            "request": prep.request_hash,
            "body": body_sha if complete else f"streamed:{head.length if not head.chunked else 'chunked'}",
        }
        keep_after_refusal = complete and head.keep_alive
        if proxy.connection.approval.mode == "retry":
            outcome = await decide_retry(
                session, cmd, found, params, head.headers.get(APPROVAL_HEADER), complete
            )
            if outcome.pending:
                self.write(
                    json_response(
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
                session.result(cmd, "403", duration_ms=ms(started), error="approval required")
                return keep_after_refusal
            decision = outcome.decision
        else:
            decision = await session.decide(cmd, found, params=params)
        if self.closed:
            return False
        if decision.verdict is Verdict.DENY:
            self._deny(cmd, decision, started, keep=keep_after_refusal)
            return keep_after_refusal
        return await self._forward(cmd, head, prep, body, complete, started, recorder)

    def _upstream_head(
        self, head: RequestHead, prep: Prepared, body: bytes, complete: bool
    ) -> tuple[bytes, bool]:
        """(request head for the upstream, stream the rest chunked?)."""
        framing: tuple[str, str] | None = None
        chunked = False
        if complete:
            if head.has_body or head.headers.has("content-length"):
                framing = ("Content-Length", str(len(body)))
        elif head.chunked:
            framing = ("Transfer-Encoding", "chunked")
            chunked = True
        else:
            framing = ("Content-Length", str(head.length))
        return self.proxy.upstream_head(head, prep, self.client_ip, framing), chunked

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
        prep: Prepared,
        body: bytes,
        complete: bool,
        started: float,
        recorder: RequestRecorder,
        *,
        retried: bool = False,
    ) -> bool:
        session = self.session
        assert session is not None
        up_head, chunked = self._upstream_head(head, prep, body, complete)
        attempt = 1 if retried else 0
        while True:
            try:
                upstream = await self._connect()
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                why = str(exc) or type(exc).__name__
                session.metrics.upstream_errors.inc()
                session.error(f"upstream unreachable: {why}", "upstream_unreachable")
                self.write(
                    json_response(
                        502,
                        {"error": "upstream_unreachable", "message": "the upstream cannot be reached"},
                        close=not (complete and head.keep_alive),
                    )
                )
                session.result(cmd, "502", duration_ms=ms(started), error=why)
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
            result = await ex.wait()
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
        self, upstream: UpstreamConnection, ex: Exchange, chunked: bool, recorder: RequestRecorder
    ) -> bool:
        session = self.session
        assert session is not None
        while True:
            if ex.result is not None:
                ex.finished_early = True
                return True
            ev = await self._body_event()
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
    def start_tunnel(self, upstream: UpstreamConnection, leftover_client: bytes, seq: int = 0) -> None:
        proxy = self.proxy
        masker = proxy.masker if proxy.masking else None
        self.ws_in = ws.Upstream(masker)
        self.ws_out = ws.Downstream(
            masker, proxy.masking, refuse_binary=proxy.options.unmaskable == "refuse"
        )
        self.tunnel_seq = seq
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
        """Client -> upstream: relayed as it came; recorded as unmasked, content-masked payloads."""
        up = self.tunnel
        session = self.session
        if up is None or up.transport is None or session is None or self.ws_in is None:
            return
        try:
            rec, counts = self.ws_in.feed(data)
        except ws.WsError as exc:
            self._tunnel_error(f"invalid websocket frame from the client: {exc}")
            return
        session.client_data(data, record=False)
        if rec:
            session.record(Output(Stream.STDIN, rec, self.tunnel_seq, counts))
        up.transport.write(data)
        self.check_recorder()

    def tunnel_out(self, data: bytes) -> None:
        """Upstream -> client: text messages masked (re-framed), the rest as it came."""
        session = self.session
        if session is None or self.ws_out is None:
            return
        try:
            out, rec, counts = self.ws_out.feed(data)
        except ws.UnmaskableMessage as exc:
            self._tunnel_deliver(exc.out, exc.record, exc.counts)
            self._tunnel_error(f"websocket message refused: {exc}", 1003, "unmaskable")
            return
        except ws.WsError as exc:
            self._tunnel_error(f"invalid websocket frame from the upstream: {exc}")
            return
        self._tunnel_deliver(out, rec, counts)
        self.check_recorder()

    def _tunnel_deliver(self, out: bytes, rec: bytes, counts: dict[str, int]) -> None:
        session = self.session
        assert session is not None
        session.upstream_data(out, Stream.STDOUT, record=False, masked=counts)
        if rec:
            session.record(Output(Stream.STDOUT, rec, self.tunnel_seq, counts))
        if out:
            self.write(out)

    def _tunnel_error(self, message: str, code: int = 1002, reason: str = "protocol error") -> None:
        """Fail closed: a frame the gateway cannot read (close 1002 to the
        client) or may not pass (1003) ends the tunnel."""
        if self.session is not None:
            self.session.error(message, "protocol_error" if code == 1002 else reason)
        self.write(ws.frame(True, ws.CLOSE, code.to_bytes(2, "big") + reason.encode()))
        if self.tunnel is not None and self.tunnel.transport is not None:
            self.tunnel.transport.abort()
        if self.transport is not None:
            self.transport.close()
        self.tunnel_closed()

    def tunnel_closed(self) -> None:
        if self.tunnel_done is not None and not self.tunnel_done.done():
            self.tunnel_done.set_result(None)
