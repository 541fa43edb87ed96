"""``http``: a reverse proxy for internal web services and APIs.

Clients authenticate with ``Authorization: Bearer <gateway token | API key |
OIDC token>``; the gateway strips it, adds the upstream's own credential,
turns every request into a ``Command`` (``GET /api/v1/items?limit=10``),
decides it (method/path rules, risk levels, approvals), masks response bodies
by content type and records the exchange. One client TCP connection is one
session; keep-alive carries many requests. See docs/http.md.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from hoopd.handler import Loc, ServerHandler

from .config import HttpOptions, HttpUpstream
from .proxy import ClientConnection
from .shared import HttpProxy

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig

__all__ = ["HttpHandler", "HttpOptions", "HttpUpstream"]


class HttpHandler(ServerHandler):
    name = "http"
    description = (
        "HTTP/1.1 reverse proxy: bearer identity, injected upstream credentials, "
        "per-request rules and approvals, masked bodies, websockets and SSE"
    )
    supports_masking = True
    supports_commands = True
    upstream_model = HttpUpstream
    options_model = HttpOptions

    @classmethod
    def check_connection(cls, conn: ConnectionConfig) -> list[tuple[Loc, str]]:
        problems = super().check_connection(conn)
        client_ca = conn.tls.client_ca if conn.tls and conn.tls.enabled else None
        if conn.auth == "tls-client-cert" and client_ca is None:
            problems.append((("tls", "client_ca"), "required when auth is tls-client-cert"))
        upstream = conn.upstream
        if isinstance(upstream, HttpUpstream) and upstream.ca is not None and not upstream.tls:
            problems.append((("upstream", "ca"), "only meaningful with an https:// url"))
        return problems

    def __init__(self, connection: ConnectionConfig, gateway: Any) -> None:
        super().__init__(connection, gateway)
        self._server: asyncio.Server | None = None
        self.proxy: HttpProxy | None = None

    async def start(self) -> None:
        conn = self.connection
        self.proxy = HttpProxy(conn, self.gateway)
        ssl_ctx = None
        if conn.tls is not None and conn.tls.enabled:
            ssl_ctx = self.gateway.server_ssl_context(conn)
        loop = asyncio.get_running_loop()
        proxy = self.proxy
        self._server = await loop.create_server(
            lambda: ClientConnection(proxy),
            conn.listen.host,
            conn.listen.port,
            ssl=ssl_ctx,
            # a handshake that stalls holds no more than a request head may
            ssl_handshake_timeout=proxy.options.header_timeout if ssl_ctx is not None else None,
            reuse_address=True,
            backlog=1024,
        )
