"""SQLite approval store (the default: ``data_dir/state.sqlite3``).

All SQL runs on one dedicated worker thread with one connection (WAL mode,
5 s busy timeout), so the event loop never blocks on the file. State changes
use ``BEGIN IMMEDIATE`` transactions, which makes ``decide`` and ``consume``
atomic even against another process using the same file.

:meth:`SQLiteStore.wait` wakes immediately on decisions made through this
store object and polls the file every ``poll_interval`` (0.25 s) to notice
decisions made by another process.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from hoopd.approvals.models import Approval, ApprovalState, Grant, GrantState, new_id
from hoopd.approvals.store import (
    DEFAULT_APPROVAL_TTL,
    DEFAULT_GRANT_REQUEST_TTL,
    ApprovalStore,
    NotFoundError,
    NotPendingError,
    StoreUnavailable,
    check_not_self_approval,
    check_not_self_grant,
    prepare_approval,
    prepare_grant,
)
from hoopd.model import Identity

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    requester_groups TEXT NOT NULL,
    connection TEXT NOT NULL,
    session_id TEXT NOT NULL,
    command_text TEXT NOT NULL,
    command_hash TEXT NOT NULL,
    reasons TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    state TEXT NOT NULL,
    reviewer TEXT NOT NULL DEFAULT '',
    comment TEXT NOT NULL DEFAULT '',
    decided_at REAL
);
CREATE INDEX IF NOT EXISTS approvals_state ON approvals (state, expires_at);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    subject TEXT NOT NULL,
    grp TEXT NOT NULL,
    connection TEXT NOT NULL,
    minutes INTEGER NOT NULL,
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    reviewer TEXT NOT NULL DEFAULT '',
    comment TEXT NOT NULL DEFAULT '',
    decided_at REAL,
    starts_at REAL,
    ends_at REAL
);
CREATE INDEX IF NOT EXISTS grants_active ON grants (connection, state, ends_at);
"""

APPROVAL_COLS = (
    "id, requester, requester_groups, connection, session_id, command_text, command_hash, "
    "reasons, created_at, expires_at, state, reviewer, comment, decided_at"
)
GRANT_COLS = (
    "id, requester, subject, grp, connection, minutes, reason, state, created_at, expires_at, "
    "reviewer, comment, decided_at, starts_at, ends_at"
)


def approval_from_row(r: Sequence[Any]) -> Approval:
    return Approval(
        id=r[0],
        requester=r[1],
        requester_groups=frozenset(json.loads(r[2])),
        connection=r[3],
        session_id=r[4],
        command_text=r[5],
        command_hash=r[6],
        reasons=tuple(json.loads(r[7])),
        created_at=float(r[8]),
        expires_at=float(r[9]),
        state=ApprovalState(r[10]),
        reviewer=r[11],
        comment=r[12],
        decided_at=None if r[13] is None else float(r[13]),
    )


def approval_row(a: Approval) -> tuple[Any, ...]:
    return (
        a.id,
        a.requester,
        json.dumps(sorted(a.requester_groups)),
        a.connection,
        a.session_id,
        a.command_text,
        a.command_hash,
        json.dumps(list(a.reasons)),
        a.created_at,
        a.expires_at,
        a.state.value,
        a.reviewer,
        a.comment,
        a.decided_at,
    )


def grant_from_row(r: Sequence[Any]) -> Grant:
    return Grant(
        id=r[0],
        requester=r[1],
        subject=r[2],
        group=r[3],
        connection=r[4],
        minutes=int(r[5]),
        reason=r[6],
        state=GrantState(r[7]),
        created_at=float(r[8]),
        expires_at=float(r[9]),
        reviewer=r[10],
        comment=r[11],
        decided_at=None if r[12] is None else float(r[12]),
        starts_at=None if r[13] is None else float(r[13]),
        ends_at=None if r[14] is None else float(r[14]),
    )


def grant_row(g: Grant) -> tuple[Any, ...]:
    return (
        g.id,
        g.requester,
        g.subject,
        g.group,
        g.connection,
        g.minutes,
        g.reason,
        g.state.value,
        g.created_at,
        g.expires_at,
        g.reviewer,
        g.comment,
        g.decided_at,
        g.starts_at,
        g.ends_at,
    )


def effective_approval(a: Approval, now: float) -> Approval:
    """Pending or approved past ``expires_at`` reads as expired."""
    if a.state in (ApprovalState.PENDING, ApprovalState.APPROVED) and now >= a.expires_at:
        return _replace_state(a, ApprovalState.EXPIRED)
    return a


def effective_grant(g: Grant, now: float) -> Grant:
    if (g.state is GrantState.PENDING and now >= g.expires_at) or (
        g.state is GrantState.APPROVED and g.ends_at is not None and now >= g.ends_at
    ):
        return _replace_grant_state(g, GrantState.EXPIRED)
    return g


def _replace_state(a: Approval, state: ApprovalState) -> Approval:
    from dataclasses import replace

    return replace(a, state=state)


def _replace_grant_state(g: Grant, state: GrantState) -> Grant:
    from dataclasses import replace

    return replace(g, state=state)


class SQLiteStore(ApprovalStore):
    """Approval store in one SQLite file. See the module docstring."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.25,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.poll_interval = poll_interval
        self.busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hoopd-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._thread_lock = threading.Lock()

    # -- plumbing ------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
                conn.executescript(SCHEMA)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("state store is closed")

        def job() -> T:
            with self._thread_lock:
                conn = self._connect()
                return fn(conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)
        except sqlite3.Error as e:
            raise StoreUnavailable(f"state store unavailable ({self.path}): {e}") from e
        except OSError as e:
            raise StoreUnavailable(f"state store unavailable ({self.path}): {e}") from e
        except RuntimeError as e:  # executor shut down
            raise StoreUnavailable(f"state store unavailable: {e}") from e

    @staticmethod
    def _tx(conn: sqlite3.Connection, fn: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return out

    def _wake(self, approval_id: str) -> None:
        for ev in self._waiters.get(approval_id, ()):
            ev.set()

    # -- approvals ----------------------------------------------------------

    async def create(
        self,
        requester: Identity,
        connection: str,
        session_id: str,
        command_text: str,
        *,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        command_hash: str | None = None,
        reasons: Iterable[str] = (),
        ttl: float = DEFAULT_APPROVAL_TTL,
    ) -> Approval:
        a = prepare_approval(
            requester,
            connection,
            session_id,
            command_text,
            params,
            command_hash,
            reasons,
            ttl,
            self.clock(),
            new_id("apr"),
        )

        def q(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO approvals ({APPROVAL_COLS}) VALUES ({','.join('?' * 14)})",
                approval_row(a),
            )

        await self._run(q)
        return a

    @staticmethod
    def _get(conn: sqlite3.Connection, approval_id: str) -> Approval:
        row = conn.execute(
            f"SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?", (approval_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no approval {approval_id!r}")
        return approval_from_row(row)

    async def get(self, approval_id: str) -> Approval:
        a = await self._run(lambda conn: self._get(conn, approval_id))
        return effective_approval(a, self.clock())

    async def list(
        self, state: ApprovalState | str | None = None, connection: str | None = None
    ) -> builtins.list[Approval]:
        now = self.clock()
        want = None if state is None else ApprovalState(state)

        def q(conn: sqlite3.Connection) -> builtins.list[Approval]:
            rows = conn.execute(
                f"SELECT {APPROVAL_COLS} FROM approvals WHERE (? IS NULL OR connection = ?) "
                "ORDER BY created_at DESC LIMIT 1000",
                (connection, connection),
            ).fetchall()
            return [effective_approval(approval_from_row(r), now) for r in rows]

        items = await self._run(q)
        return [a for a in items if want is None or a.state is want]

    async def decide(
        self, approval_id: str, reviewer: Identity, approve: bool, comment: str = ""
    ) -> Approval:
        now = self.clock()

        def q(conn: sqlite3.Connection) -> Approval:
            def body() -> Approval:
                a = self._get(conn, approval_id)
                check_not_self_approval(reviewer, a)
                eff = effective_approval(a, now)
                if eff.state is not ApprovalState.PENDING:
                    if eff.state is ApprovalState.EXPIRED and a.state is not eff.state:
                        conn.execute("UPDATE approvals SET state = 'expired' WHERE id = ?", (a.id,))
                    raise NotPendingError(f"approval {a.id} is {eff.state.value}", eff.state.value)
                new_state = ApprovalState.APPROVED if approve else ApprovalState.DENIED
                conn.execute(
                    "UPDATE approvals SET state = ?, reviewer = ?, comment = ?, decided_at = ? WHERE id = ?",
                    (new_state.value, reviewer.subject, comment, now, a.id),
                )
                return self._get(conn, approval_id)

            return self._tx(conn, body)

        try:
            return await self._run(q)
        finally:
            self._wake(approval_id)

    async def wait(self, approval_id: str, timeout: float) -> Approval:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        ev = asyncio.Event()
        self._waiters.setdefault(approval_id, set()).add(ev)
        try:
            while True:
                ev.clear()
                a = await self.get(approval_id)
                if a.state is not ApprovalState.PENDING:
                    return a
                remaining = deadline - loop.time()
                until_expiry = a.expires_at - self.clock()
                if remaining <= 0:
                    return a
                step = min(self.poll_interval, remaining, max(until_expiry, 0.0) + 0.01)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), step)
        finally:
            waiters = self._waiters.get(approval_id)
            if waiters is not None:
                waiters.discard(ev)
                if not waiters:
                    del self._waiters[approval_id]

    async def consume(self, approval_id: str, session_id: str, command_hash: str) -> bool:
        now = self.clock()

        def q(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE approvals SET state = 'used' WHERE id = ? AND state = 'approved' "
                "AND session_id = ? AND command_hash = ? AND expires_at > ?",
                (approval_id, session_id, command_hash, now),
            )
            return cur.rowcount == 1

        return await self._run(q)

    # -- grants --------------------------------------------------------------

    async def request_grant(
        self,
        requester: Identity,
        connection: str,
        minutes: int,
        *,
        subject: str | None = None,
        group: str | None = None,
        reason: str = "",
        ttl: float = DEFAULT_GRANT_REQUEST_TTL,
    ) -> Grant:
        g = prepare_grant(
            requester, connection, minutes, subject, group, reason, ttl, self.clock(), new_id("grt")
        )

        def q(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO grants ({GRANT_COLS}) VALUES ({','.join('?' * 15)})", grant_row(g)
            )

        await self._run(q)
        return g

    @staticmethod
    def _get_grant(conn: sqlite3.Connection, grant_id: str) -> Grant:
        row = conn.execute(f"SELECT {GRANT_COLS} FROM grants WHERE id = ?", (grant_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no grant {grant_id!r}")
        return grant_from_row(row)

    async def get_grant(self, grant_id: str) -> Grant:
        g = await self._run(lambda conn: self._get_grant(conn, grant_id))
        return effective_grant(g, self.clock())

    async def decide_grant(
        self, grant_id: str, reviewer: Identity, approve: bool, comment: str = ""
    ) -> Grant:
        now = self.clock()

        def q(conn: sqlite3.Connection) -> Grant:
            def body() -> Grant:
                g = self._get_grant(conn, grant_id)
                check_not_self_grant(reviewer, g)
                eff = effective_grant(g, now)
                if eff.state is not GrantState.PENDING:
                    raise NotPendingError(f"grant {g.id} is {eff.state.value}", eff.state.value)
                if approve:
                    conn.execute(
                        "UPDATE grants SET state = 'approved', reviewer = ?, comment = ?, decided_at = ?, "
                        "starts_at = ?, ends_at = ? WHERE id = ?",
                        (reviewer.subject, comment, now, now, now + g.minutes * 60, g.id),
                    )
                else:
                    conn.execute(
                        "UPDATE grants SET state = 'denied', reviewer = ?, comment = ?, decided_at = ? WHERE id = ?",
                        (reviewer.subject, comment, now, g.id),
                    )
                return self._get_grant(conn, grant_id)

            return self._tx(conn, body)

        return await self._run(q)

    async def revoke_grant(self, grant_id: str, by: Identity, comment: str = "") -> Grant:
        now = self.clock()

        def q(conn: sqlite3.Connection) -> Grant:
            def body() -> Grant:
                g = effective_grant(self._get_grant(conn, grant_id), now)
                if g.state not in (GrantState.PENDING, GrantState.APPROVED):
                    raise NotPendingError(f"grant {g.id} is {g.state.value}", g.state.value)
                conn.execute(
                    "UPDATE grants SET state = 'revoked', reviewer = ?, comment = ?, decided_at = ?, "
                    "ends_at = CASE WHEN starts_at IS NULL THEN NULL ELSE ? END WHERE id = ?",
                    (by.subject, comment, now, now, g.id),
                )
                return self._get_grant(conn, grant_id)

            return self._tx(conn, body)

        return await self._run(q)

    async def list_grants(
        self, state: GrantState | str | None = None, connection: str | None = None
    ) -> builtins.list[Grant]:
        now = self.clock()
        want = None if state is None else GrantState(state)

        def q(conn: sqlite3.Connection) -> builtins.list[Grant]:
            rows = conn.execute(
                f"SELECT {GRANT_COLS} FROM grants WHERE (? IS NULL OR connection = ?) "
                "ORDER BY created_at DESC LIMIT 1000",
                (connection, connection),
            ).fetchall()
            return [effective_grant(grant_from_row(r), now) for r in rows]

        items = await self._run(q)
        return [g for g in items if want is None or g.state is want]

    async def active_grant(
        self, subject: str, groups: Iterable[str], connection: str
    ) -> Grant | None:
        now = self.clock()
        groups = builtins.list(groups)

        def q(conn: sqlite3.Connection) -> builtins.list[Grant]:
            rows = conn.execute(
                f"SELECT {GRANT_COLS} FROM grants WHERE connection = ? AND state = 'approved' "
                "AND starts_at <= ? AND ends_at > ? ORDER BY ends_at DESC",
                (connection, now, now),
            ).fetchall()
            return [grant_from_row(r) for r in rows]

        folded = subject.casefold()
        for g in await self._run(q):
            if (g.subject and g.subject.casefold() == folded) or (g.group and g.group in groups):
                return g
        return None

    # -- lifecycle ----------------------------------------------------------

    async def health(self) -> None:
        def q(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("SELECT count(*) FROM approvals").fetchone()
            conn.execute("ROLLBACK")

        await self._run(q)

    async def close(self) -> None:
        if self._closed:
            return

        def q() -> None:
            with self._thread_lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, q)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)
