"""``kubernetes``: the Kubernetes API through the gateway.

kubectl (or any client) talks HTTPS to the gateway with a gateway bearer token
(OIDC JWT, gateway token, API key) from a kubeconfig that ``hoopd kubeconfig``
prints. Every request becomes a ``k8s`` Command with a risk assessment; risky
ones wait for a reviewer (or, with ``approval.mode: retry``, are refused with
the approval id and succeed once when retried after approval). The gateway
forwards to the API server with its own credential (the client's
Authorization is never forwarded), asks for JSON instead of protobuf, and
masks every response: objects, lists, Tables, watch streams, logs and
exec/attach terminals (recorded like SSH, with resizes).

One session per client TCP connection: a kubectl invocation is typically one
session for its API calls plus one per exec/attach websocket.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web_protocol, web_server

from hoopd.handler import Loc, ServerHandler

from .config import KubeOptions, KubeUpstream
from .proxy import ClientConn, KubeProxy
from .server import FastConn

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig
    from hoopd.gateway import Gateway


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's per-connection protocol, with a hook to end our session."""

    def __init__(self, manager: web_server.Server, **kw: Any) -> None:
        super().__init__(manager, **kw)
        self.kube = ClientConn(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self.kube.closed(exc)


class _Server(web_server.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class KubernetesHandler(ServerHandler):
    name = "kubernetes"
    description = "Kubernetes API (kubectl): per-request risk and approvals, masked responses, recorded exec"
    supports_masking = True
    supports_commands = True
    upstream_model = KubeUpstream
    options_model = KubeOptions

    @classmethod
    def check_connection(cls, conn: ConnectionConfig) -> list[tuple[Loc, str]]:
        problems = super().check_connection(conn)
        if conn.tls is not None and not conn.tls.enabled:
            problems.append(
                (
                    ("tls", "enabled"),
                    "kubectl does not send bearer tokens over plain http; the kubernetes "
                    "listener needs TLS",
                )
            )
        if conn.auth == "tls-client-cert" and (conn.tls is None or conn.tls.client_ca is None):
            problems.append((("tls", "client_ca"), "required when auth is tls-client-cert"))
        return problems

    def __init__(self, connection: ConnectionConfig, gateway: Gateway) -> None:
        super().__init__(connection, gateway)
        self.proxy = KubeProxy(connection, gateway)
        self._server: asyncio.Server | None = None
        self._web: _Server | None = None

    def protocol(self) -> FastConn:
        """A client connection: plain requests on the raw fast path, the rest
        handed to aiohttp's protocol (``self._web``)."""
        assert self._web is not None
        return FastConn(self.proxy, self._web)

    async def start(self) -> None:
        conn = self.connection
        await self.proxy.start()
        self._web = _Server(
            self.proxy.handle,
            access_log=None,
            keepalive_timeout=120,
            max_field_size=65536,
            max_line_size=65536,
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.protocol,
            conn.listen.host,
            conn.listen.port,
            ssl=self.gateway.server_ssl_context(conn),
            # a handshake that stalls holds no more than a request head may
            ssl_handshake_timeout=self.proxy.options.header_timeout,
            reuse_address=True,
            backlog=1024,
        )
