"""The ApprovalStore contract, run against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hoopd.approvals import (
    ApprovalState,
    ApprovalStore,
    GrantState,
    NotFoundError,
    NotPendingError,
    PostgresStore,
    SelfApprovalError,
    SQLiteStore,
    command_hash,
)
from hoopd.model import AuthMethod, Identity
from tests.support.pgserver import PgServer

ALICE = Identity("alice", frozenset({"dev"}), AuthMethod.OIDC)
BOB = Identity("bob", frozenset({"dba"}), AuthMethod.OIDC)
CAROL = Identity("carol", frozenset({"dba", "dev"}), AuthMethod.OIDC)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApprovalStore]:
    s: ApprovalStore
    if request.param == "sqlite":
        s = SQLiteStore(tmp_path / "state.sqlite3")
    else:
        pg: PgServer = request.getfixturevalue("pg_server")
        s = PostgresStore(pg.dsn)
    s.clock = Clock()
    try:
        yield s
    finally:
        await s.close()


def conn_name() -> str:
    return "db-" + uuid.uuid4().hex[:8]


async def held(
    store: ApprovalStore, text: str = "DROP TABLE users", **kw: object
) -> tuple[str, str]:
    conn = str(kw.pop("connection", conn_name()))
    a = await store.create(ALICE, conn, "sess-1", text, reasons=["ddl"], **kw)  # type: ignore[arg-type]
    return a.id, conn


async def test_create_get_list(store: ApprovalStore) -> None:
    conn = conn_name()
    a = await store.create(ALICE, conn, "sess-1", "DELETE FROM t", params=[1], reasons=["delete"])
    assert a.state is ApprovalState.PENDING
    assert a.requester == "alice" and a.requester_groups == {"dev"}
    assert a.command_hash == command_hash("DELETE FROM t", [1])
    assert a.expires_at > a.created_at
    got = await store.get(a.id)
    assert got == a
    assert [x.id for x in await store.list(connection=conn)] == [a.id]
    assert [x.id for x in await store.list(state="pending", connection=conn)] == [a.id]
    assert await store.list(state=ApprovalState.APPROVED, connection=conn) == []
    with pytest.raises(NotFoundError):
        await store.get("apr_nope")


async def test_approve_then_single_use(store: ApprovalStore) -> None:
    aid, _ = await held(store)
    a = await store.get(aid)
    assert not await store.consume(aid, "sess-1", a.command_hash)  # still pending
    d = await store.decide(aid, BOB, True, "ok once")
    assert (d.state, d.reviewer, d.comment) == (ApprovalState.APPROVED, "bob", "ok once")
    assert d.decided_at is not None
    assert await store.consume(aid, "sess-1", a.command_hash)
    assert not await store.consume(aid, "sess-1", a.command_hash)  # single use
    assert (await store.get(aid)).state is ApprovalState.USED


async def test_bound_to_session_and_hash(store: ApprovalStore) -> None:
    aid, _ = await held(store)
    a = await store.decide(aid, BOB, True)
    assert not await store.consume(aid, "sess-2", a.command_hash)
    assert not await store.consume(aid, "sess-1", command_hash("DROP TABLE accounts"))
    assert (await store.get(aid)).state is ApprovalState.APPROVED
    assert await store.consume(aid, "sess-1", a.command_hash)


async def test_denied_cannot_be_used_or_redecided(store: ApprovalStore) -> None:
    aid, _ = await held(store)
    a = await store.decide(aid, BOB, False, "no")
    assert a.state is ApprovalState.DENIED
    assert not await store.consume(aid, "sess-1", a.command_hash)
    with pytest.raises(NotPendingError) as ei:
        await store.decide(aid, CAROL, True)
    assert ei.value.state == "denied"


async def test_self_approval_refused(store: ApprovalStore) -> None:
    aid, _ = await held(store)
    with pytest.raises(SelfApprovalError, match="own request"):
        await store.decide(aid, ALICE, True)
    with pytest.raises(SelfApprovalError):
        await store.decide(aid, Identity("ALICE", frozenset({"dba"})), True)
    assert (await store.get(aid)).state is ApprovalState.PENDING


async def test_expiry(store: ApprovalStore) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    aid, _ = await held(store, ttl=60)
    aid2, _ = await held(store, ttl=60)
    a2 = await store.decide(aid2, BOB, True)
    clock.offset += 61
    assert (await store.get(aid)).state is ApprovalState.EXPIRED
    with pytest.raises(NotPendingError) as ei:
        await store.decide(aid, BOB, True)
    assert ei.value.state == "expired"
    # approved but not used in time: expired, unusable
    assert not await store.consume(aid2, "sess-1", a2.command_hash)
    assert (await store.get(aid2)).state is ApprovalState.EXPIRED
    # wait returns at once with the expired state
    assert (await store.wait(aid, 5)).state is ApprovalState.EXPIRED


async def test_wait_expires_in_real_time(store: ApprovalStore) -> None:
    aid, _ = await held(store, ttl=0.3)
    t = time.monotonic()
    a = await store.wait(aid, 5)
    assert a.state is ApprovalState.EXPIRED
    assert time.monotonic() - t < 1.5


async def test_wait_timeout_returns_pending(store: ApprovalStore) -> None:
    aid, _ = await held(store)
    t = time.monotonic()
    a = await store.wait(aid, 0.3)
    assert a.state is ApprovalState.PENDING
    assert 0.25 < time.monotonic() - t < 1.5


async def test_wait_wakes_on_decision_in_process(store: ApprovalStore) -> None:
    aid, _ = await held(store)
    waiter = asyncio.create_task(store.wait(aid, 10))
    await asyncio.sleep(0.1)
    t = time.monotonic()
    await store.decide(aid, BOB, True)
    a = await asyncio.wait_for(waiter, 2)
    assert a.state is ApprovalState.APPROVED
    assert time.monotonic() - t < 0.5


async def test_command_hash_is_exact() -> None:
    assert command_hash("SELECT 1") != command_hash("SELECT 1 ")
    assert command_hash("SELECT $1", [1]) != command_hash("SELECT $1", ["1"])
    assert command_hash("a", None) != command_hash("a", [])
    assert command_hash("x", {"b": 1, "a": 2}) == command_hash("x", {"a": 2, "b": 1})
    assert len(command_hash("x")) == 64


# -- grants ------------------------------------------------------------------


async def test_grant_flow_for_subject(store: ApprovalStore) -> None:
    conn = conn_name()
    g = await store.request_grant(ALICE, conn, 30, reason="incident 42")
    assert (g.subject, g.group, g.state) == ("alice", "", GrantState.PENDING)
    assert await store.active_grant("alice", ["dev"], conn) is None
    with pytest.raises(SelfApprovalError):
        await store.decide_grant(g.id, ALICE, True)
    d = await store.decide_grant(g.id, BOB, True, "go")
    assert d.state is GrantState.APPROVED
    assert d.starts_at is not None and d.ends_at == pytest.approx(d.starts_at + 1800)
    active = await store.active_grant("alice", [], conn)
    assert active is not None and active.id == g.id
    assert await store.active_grant("alice", [], "other-conn") is None
    assert await store.active_grant("bob", ["dba"], conn) is None
    assert [x.id for x in await store.list_grants(state="approved", connection=conn)] == [g.id]
    with pytest.raises(NotPendingError):
        await store.decide_grant(g.id, CAROL, False)
    r = await store.revoke_grant(g.id, BOB, "done")
    assert r.state is GrantState.REVOKED
    assert await store.active_grant("alice", [], conn) is None


async def test_grant_for_group_and_expiry(store: ApprovalStore) -> None:
    clock = store.clock
    assert isinstance(clock, Clock)
    conn = conn_name()
    g = await store.request_grant(ALICE, conn, 10, group="oncall")
    # a member of the granted group cannot approve it
    with pytest.raises(SelfApprovalError, match="member"):
        await store.decide_grant(g.id, Identity("dave", frozenset({"oncall"})), True)
    await store.decide_grant(g.id, BOB, True)
    assert (await store.active_grant("erin", ["oncall"], conn)) is not None
    assert (await store.active_grant("erin", ["dev"], conn)) is None
    clock.offset += 601
    assert (await store.active_grant("erin", ["oncall"], conn)) is None
    assert (await store.get_grant(g.id)).state is GrantState.EXPIRED


async def test_grant_for_someone_else_cannot_be_approved_by_them(store: ApprovalStore) -> None:
    conn = conn_name()
    g = await store.request_grant(BOB, conn, 10, subject="carol")
    with pytest.raises(SelfApprovalError, match="themselves"):
        await store.decide_grant(g.id, CAROL, True)
    d = await store.decide_grant(g.id, ALICE, False, "not now")
    assert d.state is GrantState.DENIED


async def test_grant_validation(store: ApprovalStore) -> None:
    with pytest.raises(ValueError):
        await store.request_grant(ALICE, "db", 0)
    with pytest.raises(ValueError):
        await store.request_grant(ALICE, "db", 5, subject="x", group="y")


async def test_health(store: ApprovalStore) -> None:
    await store.health()


MakeStore = Callable[[], ApprovalStore]


async def test_token_revocations_are_shared_and_pruned(store: ApprovalStore) -> None:
    from hoopd.identity.tokens import TokenRevocation

    now = time.time()
    jti, subject = "jti-" + uuid.uuid4().hex, "sub-" + uuid.uuid4().hex
    kept = [
        TokenRevocation("token", jti, now, now + 3600, revoked_by="ops", reason="leaked"),
        TokenRevocation("subject", subject, now + 1, now + 3600, issued_up_to=now, revoked_by="ops"),
    ]
    gone = TokenRevocation("token", "old-" + uuid.uuid4().hex, now - 7200, now - 3600)
    for r in (*kept, gone):
        await store.revoke_token(r)
    await store.revoke_token(kept[0])  # the same revocation twice is one row
    found = [r for r in await store.token_revocations(now) if r.value in (jti, subject, gone.value)]
    assert found == kept  # oldest first, the expired one left out
