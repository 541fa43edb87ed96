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
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from hoopd.approvals.models import Approval, ApprovalState, Grant, GrantState
from hoopd.approvals.store import (
    ApprovalStore,
    NotFoundError,
    NotPendingError,
    StoreUnavailable,
    check_decidable,
    check_grant_decidable,
    check_grant_revocable,
)
from hoopd.identity.tokens import TokenRevocation
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
CREATE TABLE IF NOT EXISTS token_revocations (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    revoked_at REAL NOT NULL,
    keep_until REAL NOT NULL,
    issued_up_to REAL NOT NULL DEFAULT 0,
    revoked_by TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, value, issued_up_to)
);
"""

REVOCATION_COLS = "kind, value, revoked_at, keep_until, issued_up_to, revoked_by, reason"

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


def _row(conn: sqlite3.Connection, table: str, cols: str, row_id: str, what: str) -> Sequence[Any]:
    """The row with ``id`` ``row_id``, else :class:`NotFoundError` ("no approval ...")."""
    row: Sequence[Any] | None = conn.execute(
        f"SELECT {cols} FROM {table} WHERE id = ?", (row_id,)
    ).fetchone()
    if row is None:
        raise NotFoundError(f"no {what} {row_id!r}")
    return row


def _newest(
    conn: sqlite3.Connection, table: str, cols: str, connection: str | None
) -> builtins.list[Sequence[Any]]:
    """The newest 1000 rows (all, or of one connection), newest first."""
    rows: builtins.list[Sequence[Any]] = conn.execute(
        f"SELECT {cols} FROM {table} WHERE (? IS NULL OR connection = ?) "
        "ORDER BY created_at DESC LIMIT 1000",
        (connection, connection),
    ).fetchall()
    return rows


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
        super().__init__(clock=clock, poll_interval=poll_interval)
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hoopd-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
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

    # -- approvals ----------------------------------------------------------

    async def _insert_approval(self, approval: Approval) -> None:
        def q(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO approvals ({APPROVAL_COLS}) VALUES ({','.join('?' * 14)})",
                approval_row(approval),
            )

        await self._run(q)

    @staticmethod
    def _get(conn: sqlite3.Connection, approval_id: str) -> Approval:
        return approval_from_row(_row(conn, "approvals", APPROVAL_COLS, approval_id, "approval"))

    async def _fetch_approval(self, approval_id: str) -> Approval:
        return await self._run(lambda conn: self._get(conn, approval_id))

    async def _fetch_approvals(self, connection: str | None) -> builtins.list[Approval]:
        rows = await self._run(lambda conn: _newest(conn, "approvals", APPROVAL_COLS, connection))
        return [approval_from_row(r) for r in rows]

    async def _decide(
        self, approval_id: str, reviewer: Identity, approve: bool, comment: str, now: float
    ) -> Approval:
        def q(conn: sqlite3.Connection) -> Approval:
            def body() -> Approval:
                a = self._get(conn, approval_id)
                try:
                    check_decidable(reviewer, a, now)
                except NotPendingError as e:
                    if e.state == ApprovalState.EXPIRED.value and a.state is not ApprovalState.EXPIRED:
                        conn.execute("UPDATE approvals SET state = 'expired' WHERE id = ?", (a.id,))
                    raise
                new_state = ApprovalState.APPROVED if approve else ApprovalState.DENIED
                conn.execute(
                    "UPDATE approvals SET state = ?, reviewer = ?, comment = ?, decided_at = ? WHERE id = ?",
                    (new_state.value, reviewer.subject, comment, now, a.id),
                )
                return self._get(conn, approval_id)

            return self._tx(conn, body)

        return await self._run(q)

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

    async def _insert_grant(self, grant: Grant) -> None:
        def q(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO grants ({GRANT_COLS}) VALUES ({','.join('?' * 15)})", grant_row(grant)
            )

        await self._run(q)

    @staticmethod
    def _get_grant(conn: sqlite3.Connection, grant_id: str) -> Grant:
        return grant_from_row(_row(conn, "grants", GRANT_COLS, grant_id, "grant"))

    async def _fetch_grant(self, grant_id: str) -> Grant:
        return await self._run(lambda conn: self._get_grant(conn, grant_id))

    async def decide_grant(
        self, grant_id: str, reviewer: Identity, approve: bool, comment: str = ""
    ) -> Grant:
        now = self.clock()

        def q(conn: sqlite3.Connection) -> Grant:
            def body() -> Grant:
                g = self._get_grant(conn, grant_id)
                check_grant_decidable(reviewer, g, now)
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
                g = self._get_grant(conn, grant_id)
                check_grant_revocable(g, now)
                conn.execute(
                    "UPDATE grants SET state = 'revoked', reviewer = ?, comment = ?, decided_at = ?, "
                    "ends_at = CASE WHEN starts_at IS NULL THEN NULL ELSE ? END WHERE id = ?",
                    (by.subject, comment, now, now, g.id),
                )
                return self._get_grant(conn, grant_id)

            return self._tx(conn, body)

        return await self._run(q)

    async def _fetch_grants(self, connection: str | None) -> builtins.list[Grant]:
        rows = await self._run(lambda conn: _newest(conn, "grants", GRANT_COLS, connection))
        return [grant_from_row(r) for r in rows]

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

    # -- gateway token revocations -------------------------------------------

    async def revoke_token(self, revocation: TokenRevocation) -> None:
        r = revocation
        row = (r.kind, r.value, r.revoked_at, r.keep_until, r.issued_up_to, r.revoked_by, r.reason)

        def q(conn: sqlite3.Connection) -> None:
            self._tx(conn, lambda: conn.execute(
                f"INSERT OR REPLACE INTO token_revocations ({REVOCATION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            ))

        await self._run(q)

    async def token_revocations(self, now: float) -> builtins.list[TokenRevocation]:
        def q(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(
                f"SELECT {REVOCATION_COLS} FROM token_revocations WHERE keep_until > ? ORDER BY revoked_at",
                (now,),
            ).fetchall()

        return [TokenRevocation(*row) for row in await self._run(q)]

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
