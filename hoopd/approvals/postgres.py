"""PostgreSQL approval store, for several gateways sharing state.

* Tables ``hoopd_approvals`` and ``hoopd_grants`` are created on first use
  (under an advisory lock, so gateways starting together do not race).
* Every state change runs in a transaction that also does
  ``pg_notify('hoopd_approvals', 'a:<id>')``; each store keeps one dedicated
  ``LISTEN`` connection, so a decision taken through gateway A wakes a
  :meth:`PostgresStore.wait` on gateway B as soon as A commits. Waiters also
  poll (every ``poll_interval`` while listening, every 0.25 s while the
  listener is reconnecting) so a notification lost in a reconnect costs at
  most one poll.
* The listener reconnects with exponential backoff (0.1 s → 5 s). The query
  pool connects lazily: constructing the store never touches the network.
* Fail closed: while the server is unreachable every call raises
  :class:`~hoopd.approvals.store.StoreUnavailable`
  (``"state store unreachable: ..."``), including waits in progress. When the
  server is back, the next call reconnects.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from hoopd.approvals.models import Approval, ApprovalState, Grant, GrantState
from hoopd.approvals.store import (
    ApprovalError,
    ApprovalStore,
    NotFoundError,
    StoreUnavailable,
    check_decidable,
    check_grant_decidable,
    check_grant_revocable,
)
from hoopd.identity.tokens import TokenRevocation
from hoopd.model import Identity

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANNEL = "hoopd_approvals"
_SCHEMA_LOCK = 0x686F6F70  # "hoop"

_REVOCATION_COLS = "kind, value, revoked_at, keep_until, issued_up_to, revoked_by, reason"

SCHEMA = """
CREATE TABLE IF NOT EXISTS hoopd_approvals (
    id text PRIMARY KEY,
    requester text NOT NULL,
    requester_groups text[] NOT NULL,
    connection text NOT NULL,
    session_id text NOT NULL,
    command_text text NOT NULL,
    command_hash text NOT NULL,
    reasons text[] NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    state text NOT NULL,
    reviewer text NOT NULL DEFAULT '',
    comment text NOT NULL DEFAULT '',
    decided_at double precision
);
CREATE INDEX IF NOT EXISTS hoopd_approvals_created ON hoopd_approvals (created_at DESC);
CREATE TABLE IF NOT EXISTS hoopd_grants (
    id text PRIMARY KEY,
    requester text NOT NULL,
    subject text NOT NULL,
    grp text NOT NULL,
    connection text NOT NULL,
    minutes integer NOT NULL,
    reason text NOT NULL,
    state text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    reviewer text NOT NULL DEFAULT '',
    comment text NOT NULL DEFAULT '',
    decided_at double precision,
    starts_at double precision,
    ends_at double precision
);
CREATE INDEX IF NOT EXISTS hoopd_grants_active ON hoopd_grants (connection, state, ends_at);
CREATE TABLE IF NOT EXISTS hoopd_token_revocations (
    kind text NOT NULL,
    value text NOT NULL,
    revoked_at double precision NOT NULL,
    keep_until double precision NOT NULL,
    issued_up_to double precision NOT NULL DEFAULT 0,
    revoked_by text NOT NULL DEFAULT '',
    reason text NOT NULL DEFAULT '',
    PRIMARY KEY (kind, value, issued_up_to)
);
"""

A_COLS = (
    "id, requester, requester_groups, connection, session_id, command_text, command_hash, "
    "reasons, created_at, expires_at, state, reviewer, comment, decided_at"
)
G_COLS = (
    "id, requester, subject, grp, connection, minutes, reason, state, created_at, expires_at, "
    "reviewer, comment, decided_at, starts_at, ends_at"
)

# Errors meaning "the server (or our connection to it) is gone".
_CONN_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
)


def _approval(r: asyncpg.Record) -> Approval:
    return Approval(
        id=r["id"],
        requester=r["requester"],
        requester_groups=frozenset(r["requester_groups"]),
        connection=r["connection"],
        session_id=r["session_id"],
        command_text=r["command_text"],
        command_hash=r["command_hash"],
        reasons=tuple(r["reasons"]),
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        state=ApprovalState(r["state"]),
        reviewer=r["reviewer"],
        comment=r["comment"],
        decided_at=r["decided_at"],
    )


def _grant(r: asyncpg.Record) -> Grant:
    return Grant(
        id=r["id"],
        requester=r["requester"],
        subject=r["subject"],
        group=r["grp"],
        connection=r["connection"],
        minutes=r["minutes"],
        reason=r["reason"],
        state=GrantState(r["state"]),
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        reviewer=r["reviewer"],
        comment=r["comment"],
        decided_at=r["decided_at"],
        starts_at=r["starts_at"],
        ends_at=r["ends_at"],
    )


async def _row(
    conn: asyncpg.Connection, table: str, cols: str, row_id: str, lock: bool, what: str
) -> asyncpg.Record:
    """The row with ``id`` ``row_id`` (``FOR UPDATE`` when ``lock``), else
    :class:`NotFoundError` ("no approval ...")."""
    row = await conn.fetchrow(
        f"SELECT {cols} FROM {table} WHERE id = $1" + (" FOR UPDATE" if lock else ""), row_id
    )
    if row is None:
        raise NotFoundError(f"no {what} {row_id!r}")
    return row


async def _newest(
    conn: asyncpg.Connection, table: str, cols: str, connection: str | None
) -> builtins.list[asyncpg.Record]:
    """The newest 1000 rows (all, or of one connection), newest first."""
    rows: builtins.list[asyncpg.Record] = await conn.fetch(
        f"SELECT {cols} FROM {table} WHERE ($1::text IS NULL OR connection = $1) "
        "ORDER BY created_at DESC LIMIT 1000",
        connection,
    )
    return rows


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return dsn


class PostgresStore(ApprovalStore):
    """Approval store on PostgreSQL (asyncpg). See the module docstring."""

    def __init__(
        self,
        dsn: str,
        *,
        clock: Callable[[], float] = time.time,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        poll_interval: float = 2.0,
        pool_max_size: int = 5,
    ) -> None:
        super().__init__(clock=clock, poll_interval=poll_interval)
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.pool_max_size = pool_max_size
        self._pool: asyncpg.Pool | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._schema_ready = False
        self._listener_task: asyncio.Task[None] | None = None
        self._is_listening = False
        self._closed = False
        self.notifications = 0
        """Notifications received (for tests and metrics)."""

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is currently up."""
        return self._is_listening

    # -- plumbing ------------------------------------------------------------

    def _unavailable(self, e: BaseException) -> StoreUnavailable:
        detail = str(e) or type(e).__name__
        return StoreUnavailable(f"state store unreachable: {_redact(self.dsn)}: {detail}")

    async def _ensure_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise StoreUnavailable("state store is closed")
        if self._listener_task is None:
            self._listener_task = asyncio.get_running_loop().create_task(
                self._listen_loop(), name="hoopd-approvals-listen"
            )
        if self._pool is None:
            if self._pool_lock is None:
                self._pool_lock = asyncio.Lock()
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=0,
                        max_size=self.pool_max_size,
                        timeout=self.connect_timeout,
                        command_timeout=self.command_timeout,
                        max_inactive_connection_lifetime=60,
                    )
        return self._pool

    async def _call(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        try:
            pool = await self._ensure_pool()
        except ApprovalError:
            raise
        except Exception as e:
            raise self._unavailable(e) from e
        for attempt in range(2):
            try:
                async with pool.acquire(timeout=self.connect_timeout) as conn:
                    if not self._schema_ready:
                        async with conn.transaction():
                            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                            await conn.execute(SCHEMA)
                        self._schema_ready = True
                    return await fn(conn)
            except ApprovalError:
                raise
            except (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.InterfaceError) as e:
                # a pooled connection that died while idle: retry once on a fresh one
                if attempt == 0:
                    continue
                raise self._unavailable(e) from e
            except _CONN_ERRORS as e:
                raise self._unavailable(e) from e
            except asyncpg.PostgresError as e:
                raise StoreUnavailable(f"state store error: {type(e).__name__}: {e}") from e
            except Exception as e:
                # e.g. asyncpg.InternalClientError when the server vanishes mid-query:
                # whatever it is, the store could not be evaluated -> fail closed.
                raise self._unavailable(e) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def _insert(self, table: str, cols: str, row: Sequence[Any], notice: str) -> None:
        """INSERT ``row`` and notify every gateway, in one transaction."""
        marks = ",".join(f"${i}" for i in range(1, len(row) + 1))

        async def q(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", *row)
                await self._notify(conn, notice)

        await self._call(q)

    @staticmethod
    async def _notify(conn: asyncpg.Connection, notice: str) -> None:
        """``a:<approval id>`` or ``g:<grant id>``; sent when the transaction commits."""
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, notice)

    def _current_poll_interval(self) -> float:
        # while the listener reconnects, notifications may be lost: poll often
        return self.poll_interval if self._is_listening else 0.25

    def _wake_all(self) -> None:
        for evs in self._waiters.values():
            for ev in evs:
                ev.set()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.notifications += 1
        if payload.startswith("a:"):
            self._wake(payload[2:])

    async def _listen_loop(self) -> None:
        backoff = 0.1
        while not self._closed:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                self._is_listening = True
                backoff = 0.1
                log.info("approvals: listening for decisions on %s", _redact(self.dsn))
                self._wake_all()  # re-check anything decided while we were away
                while not self._closed and not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), 5.0)
                    except TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=5.0)  # liveness probe
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self._is_listening:
                    log.warning("approvals: lost the state store listener: %s", e)
            finally:
                was = self._is_listening
                self._is_listening = False
                if conn is not None:
                    conn.terminate()
                if was:
                    self._wake_all()
            if self._closed:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    # -- approvals ----------------------------------------------------------

    async def _insert_approval(self, approval: Approval) -> None:
        a = approval
        row = (
            a.id, a.requester, sorted(a.requester_groups), a.connection, a.session_id,
            a.command_text, a.command_hash, list(a.reasons), a.created_at, a.expires_at,
            a.state.value, a.reviewer, a.comment, a.decided_at,
        )  # fmt: skip
        await self._insert("hoopd_approvals", A_COLS, row, "a:" + a.id)

    @staticmethod
    async def _get(conn: asyncpg.Connection, approval_id: str, lock: bool = False) -> Approval:
        return _approval(await _row(conn, "hoopd_approvals", A_COLS, approval_id, lock, "approval"))

    async def _fetch_approval(self, approval_id: str) -> Approval:
        return await self._call(lambda conn: self._get(conn, approval_id))

    async def _fetch_approvals(self, connection: str | None) -> builtins.list[Approval]:
        rows = await self._call(lambda conn: _newest(conn, "hoopd_approvals", A_COLS, connection))
        return [_approval(r) for r in rows]

    async def _decide(
        self, approval_id: str, reviewer: Identity, approve: bool, comment: str, now: float
    ) -> Approval:
        async def q(conn: asyncpg.Connection) -> Approval:
            async with conn.transaction():
                a = await self._get(conn, approval_id, lock=True)
                check_decidable(reviewer, a, now)
                new_state = ApprovalState.APPROVED if approve else ApprovalState.DENIED
                await conn.execute(
                    "UPDATE hoopd_approvals SET state = $1, reviewer = $2, comment = $3, decided_at = $4 "
                    "WHERE id = $5",
                    new_state.value, reviewer.subject, comment, now, a.id,
                )  # fmt: skip
                await self._notify(conn, "a:" + a.id)
                return await self._get(conn, approval_id)

        return await self._call(q)

    async def consume(self, approval_id: str, session_id: str, command_hash: str) -> bool:
        now = self.clock()

        async def q(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    "UPDATE hoopd_approvals SET state = 'used' WHERE id = $1 AND state = 'approved' "
                    "AND session_id = $2 AND command_hash = $3 AND expires_at > $4",
                    approval_id, session_id, command_hash, now,
                )  # fmt: skip
                if status != "UPDATE 1":
                    return False
                await self._notify(conn, "a:" + approval_id)
                return True

        return await self._call(q)

    # -- grants ---------------------------------------------------------------

    async def _insert_grant(self, grant: Grant) -> None:
        g = grant
        row = (
            g.id, g.requester, g.subject, g.group, g.connection, g.minutes, g.reason,
            g.state.value, g.created_at, g.expires_at, g.reviewer, g.comment,
            g.decided_at, g.starts_at, g.ends_at,
        )  # fmt: skip
        await self._insert("hoopd_grants", G_COLS, row, "g:" + g.id)

    @staticmethod
    async def _get_grant(conn: asyncpg.Connection, grant_id: str, lock: bool = False) -> Grant:
        return _grant(await _row(conn, "hoopd_grants", G_COLS, grant_id, lock, "grant"))

    async def _fetch_grant(self, grant_id: str) -> Grant:
        return await self._call(lambda conn: self._get_grant(conn, grant_id))

    async def decide_grant(
        self, grant_id: str, reviewer: Identity, approve: bool, comment: str = ""
    ) -> Grant:
        now = self.clock()

        async def q(conn: asyncpg.Connection) -> Grant:
            async with conn.transaction():
                g = await self._get_grant(conn, grant_id, lock=True)
                check_grant_decidable(reviewer, g, now)
                if approve:
                    await conn.execute(
                        "UPDATE hoopd_grants SET state = 'approved', reviewer = $1, comment = $2, "
                        "decided_at = $3, starts_at = $3, ends_at = $4 WHERE id = $5",
                        reviewer.subject, comment, now, now + g.minutes * 60, g.id,
                    )  # fmt: skip
                else:
                    await conn.execute(
                        "UPDATE hoopd_grants SET state = 'denied', reviewer = $1, comment = $2, "
                        "decided_at = $3 WHERE id = $4",
                        reviewer.subject, comment, now, g.id,
                    )  # fmt: skip
                await self._notify(conn, "g:" + g.id)
                return await self._get_grant(conn, grant_id)

        return await self._call(q)

    async def revoke_grant(self, grant_id: str, by: Identity, comment: str = "") -> Grant:
        now = self.clock()

        async def q(conn: asyncpg.Connection) -> Grant:
            async with conn.transaction():
                g = await self._get_grant(conn, grant_id, lock=True)
                check_grant_revocable(g, now)
                await conn.execute(
                    "UPDATE hoopd_grants SET state = 'revoked', reviewer = $1, comment = $2, "
                    "decided_at = $3, ends_at = CASE WHEN starts_at IS NULL THEN NULL ELSE $3::double precision END "
                    "WHERE id = $4",
                    by.subject, comment, now, g.id,
                )  # fmt: skip
                await self._notify(conn, "g:" + g.id)
                return await self._get_grant(conn, grant_id)

        return await self._call(q)

    async def _fetch_grants(self, connection: str | None) -> builtins.list[Grant]:
        rows = await self._call(lambda conn: _newest(conn, "hoopd_grants", G_COLS, connection))
        return [_grant(r) for r in rows]

    async def active_grant(
        self, subject: str, groups: Iterable[str], connection: str
    ) -> Grant | None:
        now = self.clock()
        group_list = builtins.list(groups)

        async def q(conn: asyncpg.Connection) -> builtins.list[Grant]:
            rows = await conn.fetch(
                f"SELECT {G_COLS} FROM hoopd_grants WHERE connection = $1 AND state = 'approved' "
                "AND starts_at <= $2 AND ends_at > $2 "
                "AND (lower(subject) = lower($3) OR (grp <> '' AND grp = ANY($4::text[]))) "
                "ORDER BY ends_at DESC LIMIT 1",
                connection, now, subject, group_list,
            )  # fmt: skip
            return [_grant(r) for r in rows]

        found = await self._call(q)
        return found[0] if found else None

    # -- lifecycle -------------------------------------------------------------

    async def revoke_token(self, revocation: TokenRevocation) -> None:
        r = revocation

        async def q(conn: asyncpg.Connection) -> None:
            await conn.execute(
                f"INSERT INTO hoopd_token_revocations ({_REVOCATION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                " ON CONFLICT (kind, value, issued_up_to) DO NOTHING",
                r.kind, r.value, r.revoked_at, r.keep_until, r.issued_up_to, r.revoked_by, r.reason,
            )

        await self._call(q)

    async def token_revocations(self, now: float) -> builtins.list[TokenRevocation]:
        async def q(conn: asyncpg.Connection) -> list[Any]:
            return list(await conn.fetch(
                f"SELECT {_REVOCATION_COLS} FROM hoopd_token_revocations"
                " WHERE keep_until > $1 ORDER BY revoked_at",
                now,
            ))

        return [TokenRevocation(*row) for row in await self._call(q)]

    async def health(self) -> None:
        async def q(conn: asyncpg.Connection) -> None:
            await conn.fetchval("SELECT count(*) FROM hoopd_approvals WHERE false")

        await self._call(q)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_all()
        if self._listener_task is not None:
            self._listener_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener_task
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5.0)
            except Exception:
                self._pool.terminate()
