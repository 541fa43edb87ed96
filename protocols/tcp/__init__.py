"""``tcp``: an opaque TCP relay, recorded both ways.

The reference handler, and the smallest complete example of one. It cannot
parse commands or mask, so the config refuses masking and risk rules on it
(``ProtocolHandler.check_connection``). It carries no credential of its own:
clients are identified by a TLS client certificate when the connection names
a client CA, and are accepted anonymously only with an explicit
``auth: none``.

Flow control: each side's write buffer pauses the other side's reads, and a
congested recorder pauses the client (never drops a frame). Reads pause for
several reasons at once, so pauses are counted by reason and reading resumes
only when none is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field

from hoopd.aio import spawn
from hoopd.configtypes import Duration, Port
from hoopd.gateway import SessionRefused
from hoopd.handler import Loc, ServerHandler
from hoopd.model import AuthMethod, Identity, Stream
from hoopd.session import SessionEnded
from hoopd.tls import identity_from_peercert

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig
    from hoopd.session import Session

log = logging.getLogger("hoopd.tcp")

PENDING_LIMIT = 1024 * 1024
"""Bytes buffered from a client before its upstream is connected."""


class TcpUpstream(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str
    port: Port
    connect_timeout: Duration = 10.0


class TcpOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    idle_timeout: Duration | None = Field(default=600.0, gt=0)
    """Close a relay that carried no byte either way for this long, like
    nginx's stream ``proxy_timeout`` (10 min); null: never. A client that
    connects and sends nothing holds its upstream connection no longer."""


class TcpHandler(ServerHandler):
    name = "tcp"
    description = "opaque TCP relay, recorded both ways; identifies clients by TLS certificate"
    upstream_model = TcpUpstream
    options_model = TcpOptions

    @classmethod
    def check_connection(cls, conn: ConnectionConfig) -> list[tuple[Loc, str]]:
        problems = super().check_connection(conn)
        client_ca = conn.tls.client_ca if conn.tls and conn.tls.enabled else None
        if conn.auth == "default" and client_ca is None:
            problems.append(
                (
                    ("auth",),
                    "tcp carries no credential: set tls.client_ca to identify clients by "
                    "certificate, or auth: none to accept anonymous clients",
                )
            )
        if conn.auth == "tls-client-cert" and client_ca is None:
            problems.append((("tls", "client_ca"), "required when auth is tls-client-cert"))
        if conn.auth == "none" and client_ca is not None:
            problems.append((("auth",), "auth: none contradicts tls.client_ca"))
        return problems

    def __init__(self, connection: ConnectionConfig, gateway: Any) -> None:
        super().__init__(connection, gateway)
        self._server: asyncio.Server | None = None
        self.upstream: TcpUpstream = connection.upstream
        self.options: TcpOptions = connection.options  # type: ignore[assignment]

    async def start(self) -> None:
        conn = self.connection
        ssl_ctx = None
        if conn.tls is not None and conn.tls.enabled:
            ssl_ctx = self.gateway.server_ssl_context(conn)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientSide(self),
            conn.listen.host,
            conn.listen.port,
            ssl=ssl_ctx,
            reuse_address=True,
        )


class _Side(asyncio.Protocol):
    """State shared by both ends of the relay."""

    transport: asyncio.Transport | None = None

    def __init__(self) -> None:
        self._pauses: set[str] = set()

    def pause(self, why: str) -> None:
        if not self._pauses and self.transport is not None:
            self.transport.pause_reading()
        self._pauses.add(why)

    def resume(self, why: str) -> None:
        self._pauses.discard(why)
        if not self._pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class _ClientSide(_Side):
    def __init__(self, handler: TcpHandler) -> None:
        super().__init__()
        self.handler = handler
        self.session: Session | None = None
        self.upstream: _UpstreamSide | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._eof = False
        self._closed = False
        self._setup_task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self.active = 0.0
        """Loop time of the last byte either way (options.idle_timeout)."""
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        idle = self.handler.options.idle_timeout
        if idle is not None:
            self.active = self._loop.time()
            self._idle_timer = self._loop.call_later(idle, self._check_idle)
        self._setup_task = spawn(self._setup(), name="tcp-setup")

    def _check_idle(self) -> None:
        """One timer per relay: it looks at the last activity when it fires."""
        idle = self.handler.options.idle_timeout
        assert idle is not None
        left = self.active + idle - self._loop.time()
        if left > 0:
            self._idle_timer = self._loop.call_later(left, self._check_idle)
            return
        self._idle_timer = None
        if self._closed:
            return
        peer = self.transport.get_extra_info("peername") if self.transport else None
        message = f"no data either way for {idle:g} s"
        log.info(
            "%s: relay for %s idle (%s): closing",
            self.handler.connection.name, peer[0] if peer else "unknown", message,
        )  # fmt: skip
        self._terminate("idle_timeout", message)

    def data_received(self, data: bytes) -> None:
        self.active = self._loop.time()
        if self.upstream is None or self.upstream.transport is None:
            # uvloop ignores pause_reading() inside connection_made, so data can
            # arrive before the upstream is up: buffer it (bounded).
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > PENDING_LIMIT:
                self.pause("pending")
            return
        self._forward(data)

    def eof_received(self) -> bool:
        self._eof = True
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            if upstream.eof or not upstream.transport.can_write_eof():
                self._close_both()
            else:
                upstream.transport.write_eof()
        return True  # keep the upstream->client direction open

    def _close_both(self) -> None:
        """Both directions are finished: close, which ends the session."""
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._setup_task is not None and not self._setup_task.done():
            self._setup_task.cancel()
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()
        if self.session is not None:
            self.session.end("client_closed", str(exc) if exc else "")

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause("client_buffer")

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume("client_buffer")

    # -- relay -------------------------------------------------------------
    def _forward(self, data: bytes) -> None:
        session = self.session
        assert session is not None and self.upstream is not None
        assert self.upstream.transport is not None
        try:
            session.client_data(data)  # recorded before it moves on
        except SessionEnded:
            return
        self.upstream.transport.write(data)
        if session.congested:
            self._wait_for_recorder()

    def _wait_for_recorder(self) -> None:
        assert self.session is not None and self.upstream is not None
        self.pause("recorder")
        self.upstream.pause("recorder")

        async def wait() -> None:
            assert self.session is not None and self.upstream is not None
            await self.session.wait_uncongested()
            self.resume("recorder")
            self.upstream.resume("recorder")

        spawn(wait(), name="tcp-recorder-wait")

    def identity(self) -> Identity:
        conn = self.handler.connection
        assert self.transport is not None
        if conn.auth == "none":
            return Identity.ANONYMOUS
        found = identity_from_peercert(self.transport.get_extra_info("peercert"))
        if found is None:  # the TLS layer already required a cert; be safe anyway
            return Identity.ANONYMOUS
        subject, groups = found
        return Identity(subject=subject, groups=groups, method=AuthMethod.TLS_CLIENT_CERT)

    async def _setup(self) -> None:
        handler = self.handler
        gateway = handler.gateway
        conn = handler.connection
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername")
        client_addr = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        try:
            self.session = await gateway.open_session(
                conn,
                self.identity(),
                client_addr,
                {"upstream": f"{handler.upstream.host}:{handler.upstream.port}"},
            )
        except SessionRefused as exc:
            log.info("refused %s on %s: %s", client_addr, conn.name, exc.message)
            self.transport.abort()
            return
        session = self.session
        session.set_terminator(self._terminate)
        if self._closed:
            session.end("client_closed")
            return
        cm = session.metrics
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _UpstreamSide(self), handler.upstream.host, handler.upstream.port
                ),
                handler.upstream.connect_timeout,
            )
        except (TimeoutError, OSError) as exc:
            cm.upstream_errors.inc()
            reason = str(exc) or type(exc).__name__
            session.error(f"upstream unreachable: {reason}", "upstream_unreachable")
            session.end("upstream_unreachable", reason)
            self.transport.close()
            return
        cm.upstream_connect.observe(time.perf_counter() - started)
        self.upstream = upstream
        if self._closed:
            upstream.transport.close() if upstream.transport else None
            return
        pending, self._pending, self._pending_size = self._pending, [], 0
        for chunk in pending:
            self._forward(chunk)
        self.resume("pending")
        if self._eof:
            self.eof_received()

    def _terminate(self, reason: str, message: str) -> None:
        # Opaque TCP has no way to tell the client why; the reason is in the
        # log, the metrics and the recording.
        if self.session is not None:
            self.session.error(message, reason)
            self.session.end(reason, message)
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.abort()
        if self.transport is not None:
            self.transport.abort()


class _UpstreamSide(_Side):
    def __init__(self, client: _ClientSide) -> None:
        super().__init__()
        self.client = client
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        client = self.client
        client.active = client._loop.time()
        session = client.session
        if session is None or client.transport is None or client.transport.is_closing():
            return
        try:
            session.upstream_data(data, Stream.STDOUT)  # recorded before it moves on
        except SessionEnded:
            return
        client.transport.write(data)
        if session.congested:
            client._wait_for_recorder()

    def eof_received(self) -> bool:
        self.eof = True
        transport = self.client.transport
        if self.client._eof or transport is None or not transport.can_write_eof():
            self.client._close_both()
        else:
            transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        if client.session is not None:
            client.session.end("upstream_closed", str(exc) if exc else "")
        if client.transport is not None:
            client.transport.close()

    def pause_writing(self) -> None:
        self.client.pause("upstream_buffer")

    def resume_writing(self) -> None:
        self.client.resume("upstream_buffer")
