"""The approval state store interface.

Every gateway that holds commands for review talks to one
:class:`ApprovalStore`. Two implementations exist:

* :class:`~hoopd.approvals.sqlite.SQLiteStore` — one file in ``data_dir``,
  for a single gateway (a second process on the same host may share it);
* :class:`~hoopd.approvals.postgres.PostgresStore` — for several gateways
  sharing state; decisions wake waiters on every gateway through
  ``LISTEN``/``NOTIFY``.

Fail closed: whenever the store cannot be evaluated, every method raises
:class:`StoreUnavailable` with a message saying why; callers must then refuse
the held command (never run it).
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hoopd.approvals.models import (
    Approval,
    ApprovalState,
    Grant,
    GrantState,
    command_hash,
    new_id,
)
from hoopd.identity.tokens import TokenRevocation
from hoopd.model import Identity

DEFAULT_APPROVAL_TTL = 900.0
"""Seconds a held command waits for a decision (and an approval stays usable)."""
DEFAULT_GRANT_REQUEST_TTL = 86400.0
"""Seconds a grant request stays pending."""
MAX_GRANT_MINUTES = 7 * 24 * 60


class ApprovalError(Exception):
    """Base of approval store errors."""


class StoreUnavailable(ApprovalError):
    """The state store cannot be reached or evaluated; fail closed."""


class NotFoundError(ApprovalError):
    pass


class NotPendingError(ApprovalError):
    """The approval or grant was already decided, used, revoked or has expired.
    ``state`` is its current state."""

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message)
        self.state = state


class SelfApprovalError(ApprovalError):
    """Nobody approves their own request (or access for themselves)."""


def same_person(a: str, b: str) -> bool:
    """Subjects compare case-insensitively (``Alice`` and ``alice`` are one person)."""
    return a.casefold() == b.casefold()


def check_not_self_approval(reviewer: Identity, approval: Approval) -> None:
    if same_person(reviewer.subject, approval.requester):
        raise SelfApprovalError(
            f"{reviewer.subject} cannot approve their own request {approval.id}"
        )


def check_not_self_grant(reviewer: Identity, grant: Grant) -> None:
    if same_person(reviewer.subject, grant.requester):
        raise SelfApprovalError(
            f"{reviewer.subject} cannot decide their own grant request {grant.id}"
        )
    if grant.subject and same_person(reviewer.subject, grant.subject):
        raise SelfApprovalError(
            f"{reviewer.subject} cannot grant access to themselves ({grant.id})"
        )
    if grant.group and grant.group in reviewer.groups:
        raise SelfApprovalError(
            f"{reviewer.subject} is a member of group {grant.group!r} and cannot grant it access ({grant.id})"
        )


def effective_approval(a: Approval, now: float) -> Approval:
    """Pending or approved past ``expires_at`` reads as expired."""
    if a.state in (ApprovalState.PENDING, ApprovalState.APPROVED) and now >= a.expires_at:
        return replace(a, state=ApprovalState.EXPIRED)
    return a


def effective_grant(g: Grant, now: float) -> Grant:
    """A pending request past ``expires_at``, or an approved grant past
    ``ends_at``, reads as expired."""
    if (g.state is GrantState.PENDING and now >= g.expires_at) or (
        g.state is GrantState.APPROVED and g.ends_at is not None and now >= g.ends_at
    ):
        return replace(g, state=GrantState.EXPIRED)
    return g


def check_decidable(reviewer: Identity, approval: Approval, now: float) -> None:
    """Before a decision on ``approval`` (as stored): not the reviewer's own
    request, and still pending at ``now``, else :class:`SelfApprovalError` /
    :class:`NotPendingError`."""
    check_not_self_approval(reviewer, approval)
    eff = effective_approval(approval, now)
    if eff.state is not ApprovalState.PENDING:
        raise NotPendingError(f"approval {approval.id} is {eff.state.value}", eff.state.value)


def check_grant_decidable(reviewer: Identity, grant: Grant, now: float) -> None:
    """Before a decision on ``grant`` (as stored): see :func:`check_not_self_grant`,
    and still pending at ``now``."""
    check_not_self_grant(reviewer, grant)
    eff = effective_grant(grant, now)
    if eff.state is not GrantState.PENDING:
        raise NotPendingError(f"grant {grant.id} is {eff.state.value}", eff.state.value)


def check_grant_revocable(grant: Grant, now: float) -> None:
    """Only a pending or active grant can be revoked, else :class:`NotPendingError`."""
    eff = effective_grant(grant, now)
    if eff.state not in (GrantState.PENDING, GrantState.APPROVED):
        raise NotPendingError(f"grant {eff.id} is {eff.state.value}", eff.state.value)


class ApprovalStore(abc.ABC):
    """Abstract approval and grant store. All methods may raise
    :class:`StoreUnavailable`. ``clock`` (unix seconds) is injectable for tests.

    The base class holds what every backend shares: validation and ids of new
    records, expiry on read, state filters, and :meth:`wait` (local waiters
    woken by :meth:`decide`, and polling every ``poll_interval``). A backend
    supplies the storage through the ``_insert_*``, ``_fetch_*`` and
    :meth:`_decide` hooks and the remaining abstract methods."""

    clock: Callable[[], float]

    def __init__(self, *, clock: Callable[[], float], poll_interval: float) -> None:
        self.clock = clock
        self.poll_interval = poll_interval
        self._waiters: dict[str, set[asyncio.Event]] = {}

    # -- storage hooks -------------------------------------------------------

    @abc.abstractmethod
    async def _insert_approval(self, approval: Approval) -> None:
        """Store a new (pending) approval."""

    @abc.abstractmethod
    async def _fetch_approval(self, approval_id: str) -> Approval:
        """The approval as stored. Raises :class:`NotFoundError`."""

    @abc.abstractmethod
    async def _fetch_approvals(self, connection: str | None) -> builtins.list[Approval]:
        """Approvals as stored (all, or of one connection), newest first."""

    @abc.abstractmethod
    async def _decide(
        self, approval_id: str, reviewer: Identity, approve: bool, comment: str, now: float
    ) -> Approval:
        """Atomically check (:func:`check_decidable`) and record a decision."""

    @abc.abstractmethod
    async def _insert_grant(self, grant: Grant) -> None:
        """Store a new (pending) grant request."""

    @abc.abstractmethod
    async def _fetch_grant(self, grant_id: str) -> Grant:
        """The grant as stored. Raises :class:`NotFoundError`."""

    @abc.abstractmethod
    async def _fetch_grants(self, connection: str | None) -> builtins.list[Grant]:
        """Grants as stored (all, or of one connection), newest first."""

    def _current_poll_interval(self) -> float:
        """Seconds :meth:`wait` sleeps between reads when nothing wakes it."""
        return self.poll_interval

    def _wake(self, approval_id: str) -> None:
        for ev in self._waiters.get(approval_id, ()):
            ev.set()

    # -- approvals ---------------------------------------------------------

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
        """Record a pending approval for a held command. ``command_hash``
        defaults to :func:`~hoopd.approvals.models.command_hash` of
        ``command_text`` and ``params``."""
        a = prepare_approval(
            requester, connection, session_id, command_text, params, command_hash, reasons, ttl,
            self.clock(), new_id("apr"),
        )  # fmt: skip
        await self._insert_approval(a)
        return a

    async def get(self, approval_id: str) -> Approval:
        """Raises :class:`NotFoundError`. Pending past ``expires_at`` reads as expired."""
        a = await self._fetch_approval(approval_id)
        return effective_approval(a, self.clock())

    async def list(
        self, state: ApprovalState | str | None = None, connection: str | None = None
    ) -> builtins.list[Approval]:
        """Newest first."""
        want = None if state is None else ApprovalState(state)
        found = await self._fetch_approvals(connection)
        now = self.clock()
        items = [effective_approval(a, now) for a in found]
        return [a for a in items if want is None or a.state is want]

    async def decide(
        self, approval_id: str, reviewer: Identity, approve: bool, comment: str = ""
    ) -> Approval:
        """Approve or deny a pending approval. Raises :class:`SelfApprovalError`
        when the reviewer is the requester, :class:`NotPendingError` when it is
        no longer pending (including expired), :class:`NotFoundError`.
        Whether the reviewer *may* review the connection is the caller's check."""
        now = self.clock()
        try:
            return await self._decide(approval_id, reviewer, approve, comment, now)
        finally:
            self._wake(approval_id)

    async def wait(self, approval_id: str, timeout: float) -> Approval:
        """Return as soon as the approval is no longer pending (decided in this
        or any other process, or expired), or after ``timeout`` seconds with the
        still-pending approval. Raises :class:`StoreUnavailable` if the store
        goes away while waiting."""
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
                if remaining <= 0:
                    return a
                poll = self._current_poll_interval()
                until_expiry = a.expires_at - self.clock()
                step = min(poll, remaining, max(until_expiry, 0.0) + 0.01)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), step)
        finally:
            waiters = self._waiters.get(approval_id)
            if waiters is not None:
                waiters.discard(ev)
                if not waiters:
                    del self._waiters[approval_id]

    @abc.abstractmethod
    async def consume(self, approval_id: str, session_id: str, command_hash: str) -> bool:
        """Atomically mark an approval ``used``. True only if it was
        ``approved``, for this ``session_id`` and ``command_hash``, and not
        expired; False otherwise (and nothing changes)."""

    # -- just-in-time grants ----------------------------------------------

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
        """Ask for ``connection`` for ``minutes`` for ``subject`` or ``group``
        (default: the requester themselves)."""
        g = prepare_grant(
            requester, connection, minutes, subject, group, reason, ttl, self.clock(), new_id("grt")
        )
        await self._insert_grant(g)
        return g

    async def get_grant(self, grant_id: str) -> Grant:
        """Raises :class:`NotFoundError`. Reads as expired past its time."""
        g = await self._fetch_grant(grant_id)
        return effective_grant(g, self.clock())

    @abc.abstractmethod
    async def decide_grant(
        self, grant_id: str, reviewer: Identity, approve: bool, comment: str = ""
    ) -> Grant:
        """Approving starts the grant now for its ``minutes``. Raises
        :class:`SelfApprovalError` when the reviewer is the requester, the
        subject, or a member of the granted group."""

    @abc.abstractmethod
    async def revoke_grant(self, grant_id: str, by: Identity, comment: str = "") -> Grant:
        """End a pending or active grant now."""

    async def list_grants(
        self, state: GrantState | str | None = None, connection: str | None = None
    ) -> builtins.list[Grant]:
        """Newest first."""
        want = None if state is None else GrantState(state)
        found = await self._fetch_grants(connection)
        now = self.clock()
        items = [effective_grant(g, now) for g in found]
        return [g for g in items if want is None or g.state is want]

    @abc.abstractmethod
    async def active_grant(
        self, subject: str, groups: Iterable[str], connection: str
    ) -> Grant | None:
        """An approved grant of ``connection`` currently active for ``subject``
        or one of ``groups`` (the one ending last), or None."""

    # -- gateway token revocations ----------------------------------------

    @abc.abstractmethod
    async def revoke_token(self, revocation: TokenRevocation) -> None:
        """Store a revocation (every gateway sharing the store applies it)."""

    @abc.abstractmethod
    async def token_revocations(self, now: float) -> builtins.list[TokenRevocation]:
        """Revocations still needed at ``now`` (``keep_until`` in the future),
        oldest first; older rows may be dropped on the way."""

    # -- lifecycle ---------------------------------------------------------

    @abc.abstractmethod
    async def health(self) -> None:
        """Return if the store is usable, else raise :class:`StoreUnavailable`."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> ApprovalStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def prepare_approval(
    requester: Identity,
    connection: str,
    session_id: str,
    command_text: str,
    params: Sequence[Any] | Mapping[str, Any] | None,
    cmd_hash: str | None,
    reasons: Iterable[str],
    ttl: float,
    now: float,
    approval_id: str,
) -> Approval:
    """Validate and build a new approval for :meth:`ApprovalStore.create`."""
    if not requester.subject:
        raise ValueError("requester must have a subject")
    if not connection or not session_id:
        raise ValueError("connection and session_id are required")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    return Approval(
        id=approval_id,
        requester=requester.subject,
        requester_groups=frozenset(requester.groups),
        connection=connection,
        session_id=session_id,
        command_text=command_text,
        command_hash=cmd_hash or command_hash(command_text, params),
        reasons=tuple(reasons),
        created_at=now,
        expires_at=now + ttl,
        state=ApprovalState.PENDING,
    )


def prepare_grant(
    requester: Identity,
    connection: str,
    minutes: int,
    subject: str | None,
    group: str | None,
    reason: str,
    ttl: float,
    now: float,
    grant_id: str,
) -> Grant:
    """Validate and build a new grant request for :meth:`ApprovalStore.request_grant`."""
    if subject and group:
        raise ValueError("a grant is for a subject or a group, not both")
    if not subject and not group:
        subject = requester.subject
    if not connection:
        raise ValueError("connection is required")
    if not isinstance(minutes, int) or not 0 < minutes <= MAX_GRANT_MINUTES:
        raise ValueError(f"minutes must be an integer between 1 and {MAX_GRANT_MINUTES}")
    return Grant(
        id=grant_id,
        requester=requester.subject,
        subject=subject or "",
        group=group or "",
        connection=connection,
        minutes=minutes,
        reason=reason,
        state=GrantState.PENDING,
        created_at=now,
        expires_at=now + ttl,
    )


def open_store(url: str, data_dir: Path) -> ApprovalStore:
    """Open the configured store.

    * ``"sqlite"`` (or empty) → ``data_dir/state.sqlite3``
    * ``"sqlite:///abs/path.db"`` or ``"sqlite:relative.db"`` (relative to ``data_dir``)
    * ``"postgresql://user:pw@host:5432/db"`` (or ``postgres://``) → PostgreSQL

    Opening never blocks on the network: a PostgreSQL store connects on first
    use and reports :class:`StoreUnavailable` until it can.
    """
    from hoopd.approvals.postgres import PostgresStore
    from hoopd.approvals.sqlite import SQLiteStore

    url = (url or "sqlite").strip()
    if url == "sqlite":
        return SQLiteStore(Path(data_dir) / "state.sqlite3")
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if not path.startswith("/"):
            raise ValueError(
                f"sqlite URL needs an absolute path (sqlite:///var/lib/...), got {url!r}"
            )
        return SQLiteStore(Path(path))
    if url.startswith("sqlite:"):
        return SQLiteStore(Path(data_dir) / url[len("sqlite:") :])
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ValueError(
        f"unknown state store {url!r}: use 'sqlite', 'sqlite:///path' or 'postgresql://...'"
    )
