"""The admin listener: ``/metrics`` for Prometheus, ``/healthz`` (the process
is alive), ``/readyz`` (listeners up, recorder writable, state store
reachable), and the admin API for approvals and grants."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hoopd.configtypes import HostPort
from hoopd.handler import listening_address
from hoopd.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from hoopd.server import Daemon

log = logging.getLogger("hoopd.admin")


class AdminServer:
    def __init__(self, daemon: Daemon, listen: HostPort) -> None:
        self.daemon = daemon
        self.listen = listen
        self.app = web.Application()
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self._add_api_routes()
        self._runner: web.AppRunner | None = None
        self.bound: HostPort | None = None

    def _add_api_routes(self) -> None:
        gateway = self.daemon.gateway
        if gateway is None or gateway.approvals is None or gateway.authenticator is None:
            return
        try:
            from hoopd.approvals.api import add_routes
        except ImportError:  # pragma: no cover
            return

        def reviewers_for(connection: str) -> set[str]:
            try:
                conn = self.daemon.config.connection(connection)
            except KeyError:
                return set()
            return set(conn.risk.reviewers) if conn.risk else set()

        add_routes(
            self.app,
            gateway.approvals,
            gateway.authenticator,
            reviewers_for,
            gateway.tokens,
            gateway.notifier,
        )

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen.host, self.listen.port, reuse_address=True)
        await site.start()
        self.bound = listening_address(site._server)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def metrics(self, request: web.Request) -> web.Response:
        body = self.daemon.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        checks: dict[str, Any] = {}
        daemon = self.daemon
        gateway = daemon.gateway
        checks["listeners"] = daemon.ready and len(daemon.handlers) == len(daemon.config.connections)
        if gateway is None:
            checks["recorder"] = False
        else:
            checks["recorder"] = bool(gateway.recorder.check_writable())
            checks["state_store"] = await _store_ok(gateway.approvals)
        ok = all(v is True for v in checks.values())
        return web.json_response(
            {"status": "ready" if ok else "not ready", "checks": checks},
            status=200 if ok else 503,
        )


async def _store_ok(store: Any) -> bool:
    if store is None:
        return False
    try:
        await store.health()
    except Exception as exc:
        log.warning("readiness: state store unreachable: %s", exc)
        return False
    return True
