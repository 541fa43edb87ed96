"""``postgres``: the PostgreSQL wire protocol, natively.

Clients (psql, pgbench, asyncpg, psycopg, JDBC...) connect to the gateway as
to the database and send a gateway credential (gateway token, API key or
OIDC token) as their password. The gateway logs in to the database with the
connection's own stored credentials, scores every statement, holds risky
ones for a reviewer, masks result rows as they stream, and records what the
client saw. See docs/postgres.md.

Modules: ``_wire`` (framing, encoders), ``_messages`` (decoders),
``_tracker`` (which answer belongs to which statement), ``_masking``
(stream masking), ``_copy_stmt``/``_copy_probe``/``_copy_format``/``_copy_mask``
(column masking of COPY TO STDOUT), ``_scoring`` (adapter to the risk
scorer), ``_upstream`` (login to the database), ``_client`` (the asyncio
driver).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hoopd.configtypes import ConfigPath, Duration, Port, SecretRef, Size
from hoopd.handler import Loc, ServerHandler

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig

    from ._catalog import Catalog
    from ._client import ClientConnection

log = logging.getLogger("hoopd.postgres")


class PostgresUpstream(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str
    port: Port = 5432
    user: str
    password: SecretRef | None = None
    database: str = "postgres"
    sslmode: Literal["disable", "prefer", "require", "verify-full"] = "prefer"
    ca: ConfigPath | None = None
    """CA bundle for the server's certificate (verify-full; require verifies the chain when set)."""
    connect_timeout: Duration = 10.0


Passthrough = Literal["database", "application_name", "options"]


class PostgresOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    allow_plaintext_loopback: bool = False
    """Accept credentials without TLS from loopback clients (tests, sidecars)."""
    passthrough: tuple[Passthrough, ...] = ("application_name",)
    """Startup parameters the client may choose; the others come from ``upstream``."""
    max_rows_per_statement: int | None = Field(default=None, ge=1)
    max_bytes_per_statement: Size | None = None
    max_rows_per_session: int | None = Field(default=None, ge=1)
    max_bytes_per_session: Size | None = None
    login_timeout: Duration = Field(default=60.0, gt=0)
    """Seconds from connecting to being logged in (startup packets, TLS,
    credentials), like PostgreSQL's ``authentication_timeout``: a client that
    connects and stalls holds no connection slot longer. Then the connection
    is closed, after ``FATAL 57014`` once the client has sent its startup
    message."""
    max_client_message: Size = Field(default=256 * 1024 * 1024, ge=64 * 1024, le=1024 * 1024 * 1024)
    """Longest message a client may send (a Query's text, a Bind's
    parameters, one CopyData): the gateway holds a message whole before it
    judges it, so this bounds the memory one session can make it hold. A
    longer one ends the session (``FATAL 08P01``). PostgreSQL's own limit is
    1 GiB."""
    column_origins: bool = True
    """Mask a result column by the table column it comes from as well as by
    its label (``select ssn as x``), learning table and column names from the
    database's catalog on a connection of the gateway's own per database
    (docs/postgres.md). Off: by label only, and no extra connection."""
    max_parsed_sql: Size = Field(default=4 * 1024 * 1024, ge=1024)
    """Longest statement text (in characters) the risk scorer parses; a
    longer one counts as unparseable (the ``risk.unparseable`` policy
    decides; by default it is reviewed). Parsing takes ~1 s of CPU and
    ~75 bytes of memory per byte of SQL, in the gateway's parse worker for
    texts over 16 KiB; bulk loads belong in COPY, whose data is not parsed."""


class PostgresHandler(ServerHandler):
    name = "postgres"
    description = (
        "PostgreSQL wire protocol: injected database credentials, SQL risk scoring, "
        "held statements, masking of result rows"
    )
    supports_masking = True
    supports_commands = True
    upstream_model = PostgresUpstream
    options_model = PostgresOptions

    @classmethod
    def check_connection(cls, conn: ConnectionConfig) -> list[tuple[Loc, str]]:
        problems = super().check_connection(conn)
        up: PostgresUpstream = conn.upstream
        if up.sslmode in ("disable", "prefer") and up.ca is not None:
            problems.append((("upstream", "ca"), f"has no effect with sslmode {up.sslmode}"))
        if conn.auth == "tls-client-cert" and (conn.tls is None or conn.tls.client_ca is None):
            problems.append((("tls", "client_ca"), "required when auth is tls-client-cert"))
        if conn.tls is not None and not conn.tls.enabled:
            opts: PostgresOptions = conn.options  # type: ignore[assignment]
            if conn.auth == "default" and not opts.allow_plaintext_loopback:
                problems.append(
                    (
                        ("tls", "enabled"),
                        "without TLS, clients cannot send credentials: enable TLS or set "
                        "options.allow_plaintext_loopback",
                    )
                )
        return problems

    def __init__(self, connection: ConnectionConfig, gateway: Any) -> None:
        super().__init__(connection, gateway)
        self.upstream: PostgresUpstream = connection.upstream
        self.options: PostgresOptions = connection.options  # type: ignore[assignment]
        self._server: asyncio.Server | None = None
        self._keys: dict[tuple[int, int], ClientConnection] = {}
        self.row_descriptions: dict[bytes, tuple[Any, Any, float]] = {}
        """RowDescription bytes -> (columns, masking plan, valid until): shared by
        sessions (per database instead when the catalog is asked)."""
        from ._catalog import Catalog
        from ._masking import StreamMasking
        from ._parse_worker import ParseWorker
        from ._scoring import Scorer

        self.scorer = Scorer(connection.risk, self.options.max_parsed_sql)
        failures = gateway.metrics.scorer_failures
        self.parse_worker = ParseWorker(
            lambda reason: failures.labels(self.name, connection.name, reason).inc()
        )
        """Parses long statements off the event loop (started on first use)."""
        masker = None
        try:
            masker = gateway.masker(connection)
        except ImportError as exc:  # masking engine missing: only if nothing asked for it
            if connection.masking is not None:
                raise
            log.warning("masking engine unavailable: %s", exc)
        self.masking = StreamMasking(masker, getattr(masker, "config", connection.masking))
        lookups = gateway.metrics.catalog_lookups
        self.catalog: Catalog | None = (
            Catalog(self.upstream, lambda result: lookups.labels(self.name, connection.name, result).inc())
            if self.masking.by_name and self.options.column_origins
            else None
        )
        """Names of result columns' tables and columns, for column rules that
        hold whatever a query labels the column (see ``_catalog``)."""

    async def start(self) -> None:
        from ._client import ClientConnection

        conn = self.connection
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ClientConnection(self), conn.listen.host, conn.listen.port, reuse_address=True
        )

    async def stop(self) -> None:
        await super().stop()
        if self.catalog is not None:
            self.catalog.close()
        await self.parse_worker.close()

    # -- cancel keys ---------------------------------------------------------------
    def register_key(self, client: ClientConnection) -> tuple[int, int]:
        while True:
            key = (secrets.randbits(31) or 1, secrets.randbits(32) - 2**31)
            if key not in self._keys:
                self._keys[key] = client
                return key

    def unregister_key(self, key: tuple[int, int] | None) -> None:
        if key is not None:
            self._keys.pop(key, None)

    def find_key(self, pid: int, secret: int) -> ClientConnection | None:
        for (kpid, ksecret), client in self._keys.items():
            if kpid == pid and hmac.compare_digest(
                ksecret.to_bytes(4, "big", signed=True), secret.to_bytes(4, "big", signed=True)
            ):
                return client
        return None


__all__ = ["PostgresHandler", "PostgresOptions", "PostgresUpstream"]
