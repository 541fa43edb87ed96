"""The daemon: one listener per configured connection on a uvloop event loop,
the admin listener, signal handling, reload and graceful shutdown.

SIGTERM/SIGINT: stop accepting, let live sessions finish up to
``gateway.drain_timeout``, end the rest with a message, flush recordings,
exit 0.

SIGHUP: load and validate the file again. If it is invalid, every problem is
logged and the running config stays. Otherwise removed connections stop
accepting, changed ones are restarted with the new settings, new ones start;
live sessions keep the settings they started with and are never dropped.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path
from typing import Any

from hoopd.admin import AdminServer
from hoopd.aio import spawn
from hoopd.config import ConfigError, ConnectionConfig, GatewayConfig, load_config
from hoopd.gateway import AuthenticatorSlot, Gateway
from hoopd.handler import ProtocolHandler
from hoopd.metrics import Metrics
from hoopd.registry import Registry
from hoopd.revocations import RevocationWatcher
from hoopd.tls import ensure_tls_material

log = logging.getLogger("hoopd.server")


def build_recorder(config: GatewayConfig, metrics: Metrics) -> Any:
    from recorder.keys import export_public_key, load_or_create_signing_key
    from recorder.writer import Recorder, RecorderSettings

    rec = config.recording
    key = load_or_create_signing_key(config.recording_key_path)
    recordings = config.recording_dir
    recordings.mkdir(parents=True, exist_ok=True)
    export_public_key(key, recordings)
    settings = RecorderSettings(
        dir=recordings,
        rotate_bytes=rec.rotate_bytes,
        rotate_seconds=rec.rotate_seconds,
        fsync=rec.fsync,
        fsync_interval=rec.fsync_interval,
        checkpoint_frames=rec.checkpoint_frames,
        checkpoint_seconds=rec.checkpoint_seconds,
        queue_max_frames=rec.queue_max_frames,
        queue_max_bytes=rec.queue_max_bytes,
    )
    return Recorder(settings, key, metrics)


async def build_identity(config: GatewayConfig) -> tuple[Any, Any]:
    """(authenticator, gateway token issuer) from the identity section."""
    from hoopd.identity.authenticator import Authenticator

    auth = Authenticator.from_data_dir(
        config.identity, config.gateway.data_dir, gateway_id=config.gateway.id
    )
    return auth, auth.tokens


class Daemon:
    def __init__(self, config: GatewayConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.metrics = Metrics()
        self.handlers: dict[str, ProtocolHandler] = {}
        self.gateway: Gateway | None = None
        self.admin: AdminServer | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.revocations: RevocationWatcher | None = None
        self.ready = False

    # -- start / stop --------------------------------------------------------
    async def start(self) -> None:
        config = self.config
        config.gateway.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tls = ensure_tls_material(
            config.gateway.data_dir,
            config.gateway.tls.cert,
            config.gateway.tls.key,
            config.gateway.tls.hostnames,
        )
        recorder = build_recorder(config, self.metrics)
        recorder.start()
        authenticator, tokens = await build_identity(config)
        approvals, notifier = await self._open_approvals(config)
        self.gateway = Gateway(
            config,
            self.metrics,
            recorder,
            tls,
            authenticator=AuthenticatorSlot(authenticator),
            approvals=approvals,
            notifier=notifier,
            tokens=tokens,
        )
        self.revocations = RevocationWatcher(self.gateway)
        await self.revocations.start()
        if config.gateway.admin_listen is not None:
            self.admin = AdminServer(self, config.gateway.admin_listen)
            await self.admin.start()
        failures = []
        for conn in config.connections:
            try:
                await self._start_connection(conn)
            except OSError as exc:
                failures.append(f"{conn.name}: cannot listen on {conn.listen}: {exc.strerror}")
        if failures:
            await self.stop()
            raise RuntimeError("; ".join(failures))
        self.ready = True
        log.info(
            "hoopd ready: %d connection(s)%s",
            len(self.handlers),
            f", admin on {self.admin.bound}" if self.admin else "",
        )

    async def _open_approvals(self, config: GatewayConfig) -> tuple[Any, Any]:
        from hoopd.approvals.store import open_store
        from hoopd.approvals.webhook import WebhookNotifier

        # Opening never blocks on the network. While the store is down every
        # held command is denied with the reason (fail closed) and /readyz
        # says so; the store reconnects by itself.
        store = open_store(config.gateway.state, config.gateway.data_dir)
        try:
            # Connect now so a shared store's LISTEN channel is up before the
            # first held command; a store that is down is only logged here.
            await store.health()
        except Exception as exc:
            log.error("approval store unavailable (held commands will be denied): %s", exc)
        hook = config.gateway.webhook
        notifier = None
        if hook is not None:
            notifier = WebhookNotifier(
                hook.url,
                hook.format,
                hook.retries,
                hook.backoff,
                secret=hook.secret.reveal() if hook.secret else None,
                public_url=hook.public_url,
            )
        return store, notifier

    async def _start_connection(self, conn: ConnectionConfig) -> None:
        assert self.gateway is not None
        handler_cls = self.registry.get(conn.protocol)
        handler = handler_cls(conn, self.gateway)
        await handler.start()
        self.handlers[conn.name] = handler
        self.gateway.connection_metrics(conn)
        self.metrics.listeners_up.labels(conn.protocol).inc()
        log.info("listening: %s (%s) on %s", conn.name, conn.protocol, handler.bound_address)

    async def _stop_connection(self, name: str) -> None:
        handler = self.handlers.pop(name)
        await handler.stop()
        self.metrics.listeners_up.labels(handler.connection.protocol).dec()
        log.info("stopped listening: %s", name)

    async def stop(self) -> None:
        """Graceful shutdown (idempotent)."""
        self.ready = False
        for name in list(self.handlers):
            await self._stop_connection(name)
        if self.revocations is not None:
            await self.revocations.stop()
        gateway = self.gateway
        if gateway is not None:
            gateway.accepting = False
            drained = await gateway.wait_sessions(self.config.gateway.drain_timeout)
            if not drained:
                log.warning(
                    "drain timeout: ending %d live session(s)", len(gateway.sessions)
                )
                gateway.terminate_all("shutdown", "the gateway is shutting down")
                await gateway.wait_sessions(5.0)
            await asyncio.get_running_loop().run_in_executor(None, gateway.recorder.close)
            for closable in (gateway.notifier, gateway.approvals, gateway.authenticator):
                if closable is None:
                    continue
                try:
                    await closable.close()
                except Exception as exc:  # pragma: no cover - best effort at exit
                    log.warning("closing %s: %s", type(closable).__name__, exc)
        if self.admin is not None:
            await self.admin.stop()
            self.admin = None

    def request_stop(self) -> None:
        log.info("shutdown requested")
        self._stop.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: spawn(self.reload(), name="reload"))
        await self._stop.wait()
        await self.stop()

    # -- reload --------------------------------------------------------------
    async def reload(self) -> bool:
        async with self._reload_lock:
            source = self.config.source
            if source is None:
                log.error("reload: this config has no file to reload from")
                return False
            try:
                new = load_config(source, self.registry)
            except ConfigError as exc:
                self.metrics.config_reloads.labels("invalid").inc()
                log.error("reload refused, keeping the running config; problems:")
                for problem in exc.problems:
                    log.error("  %s", problem)
                return False
            await self._apply(new)
            self.metrics.config_reloads.labels("ok").inc()
            return True

    async def _reload_identity(self, new: GatewayConfig) -> None:
        """New API keys, revocations and OIDC settings apply to new logins at
        once; sessions already open keep the identity they proved."""
        assert self.gateway is not None
        authenticator, tokens = await build_identity(new)
        if self.revocations is not None:
            self.revocations.apply_to(tokens)  # before the new verifier takes a login
        await self.gateway.authenticator.swap(authenticator)
        self.gateway.tokens = tokens
        log.info("reload: identity settings replaced")

    async def _apply(self, new: GatewayConfig) -> None:
        assert self.gateway is not None
        old = {c.name: c for c in self.config.connections}
        fresh = {c.name: c for c in new.connections}
        # Policy and approval settings apply to new sessions at once; the
        # recorder, TLS and state store are process-wide and need a restart.
        for section in ("gateway", "recording"):
            if getattr(new, section) != getattr(self.config, section):
                log.warning("reload: changes to %r take effect after a restart", section)
        if new.identity != self.config.identity:
            await self._reload_identity(new)
        self.config = new.model_copy(
            update={"gateway": self.config.gateway, "recording": self.config.recording}
        )
        self.gateway.config = self.config
        # Live sessions keep the maskers they hold; new ones compile from the
        # new connection configs.
        self.gateway.forget_maskers()
        for name in old.keys() - fresh.keys():
            await self._stop_connection(name)
        for name, conn in fresh.items():
            if name in old and old[name] == conn:
                continue
            if name in old:
                await self._stop_connection(name)
            try:
                await self._start_connection(conn)
            except OSError as exc:
                log.error("reload: %s cannot listen on %s: %s", name, conn.listen, exc.strerror)
        log.info("config reloaded: %d connection(s)", len(self.handlers))


def tune_gc_for_serving() -> None:
    """Once the daemon is up: move everything allocated at start-up (modules,
    config, compiled patterns, handlers) out of the collector's view, and let
    the young generation grow before it is collected. With the defaults
    (700, 10, 10) every few statements triggered a generation-0 pass, and the
    periodic full passes re-scanned the start-up objects each time:
    in-process, CPU per pgbench statement 49.2 -> 41.1 us (all threads); with
    real sockets 163 -> 156 us per transaction (bench/RESULTS.md, postgres).
    Reference counting still frees what start-up objects stop using; only a
    reference cycle among frozen objects would stay until exit."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def serve(config_path: Path, registry: Registry) -> int:
    """Entry point of ``hoopd serve``. Returns the process exit code."""
    import uvloop

    try:
        config = load_config(config_path, registry)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{config_path}: {problem}", flush=True)
        return 2

    from hoopd.log import setup_logging

    setup_logging(config.gateway.log_format, config.gateway.log_level)

    async def main() -> int:
        daemon = Daemon(config, registry)
        try:
            await daemon.start()
        except Exception as exc:
            log.error("cannot start: %s", exc)
            return 1
        tune_gc_for_serving()
        await daemon.run_until_stopped()
        log.info("hoopd stopped")
        return 0

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())
