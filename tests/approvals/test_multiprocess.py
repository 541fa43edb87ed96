"""Decisions taken by another process (or another gateway) wake held commands;
a stopped state store fails closed and recovers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hoopd.approvals import (
    ApprovalState,
    PostgresStore,
    SQLiteStore,
    StoreUnavailable,
    open_store,
)
from hoopd.model import AuthMethod, Identity
from tests.support.pgserver import PgServer

ALICE = Identity("alice", frozenset({"dev"}), AuthMethod.OIDC)
BOB = Identity("bob", frozenset({"dba"}), AuthMethod.OIDC)

ROOT = Path(__file__).resolve().parents[2]

DECIDER = textwrap.dedent(
    """
    import asyncio, sys, time
    from hoopd.approvals import SQLiteStore
    from hoopd.model import Identity

    async def main() -> None:
        store = SQLiteStore(sys.argv[1])
        await store.health()
        print("ready", flush=True)
        sys.stdin.readline()
        await store.decide(sys.argv[2], Identity("bob"), True, "from another process")
        print(time.time(), flush=True)
        await store.close()

    asyncio.run(main())
    """
)


async def test_sqlite_cross_process_wake(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SQLiteStore(path)
    try:
        a = await store.create(ALICE, "db", "s1", "DROP TABLE t")
        proc = subprocess.Popen(
            [sys.executable, "-c", DECIDER, str(path), a.id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert proc.stdout is not None and proc.stdin is not None
        assert (await asyncio.to_thread(proc.stdout.readline)).strip() == "ready"
        waiter = asyncio.create_task(store.wait(a.id, 10))
        await asyncio.sleep(0.1)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        decided_at = float(await asyncio.to_thread(proc.stdout.readline))
        got = await asyncio.wait_for(waiter, 5)
        woke_at = time.time()
        assert got.state is ApprovalState.APPROVED and got.reviewer == "bob"
        assert woke_at - decided_at < 1.0
        assert await store.consume(a.id, "s1", a.command_hash)
        assert proc.wait(10) == 0
    finally:
        await store.close()


async def test_sqlite_unusable_path_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite3").mkdir()
    store = SQLiteStore(tmp_path / "dir.sqlite3")
    try:
        with pytest.raises(StoreUnavailable, match="state store unavailable"):
            await store.health()
        with pytest.raises(StoreUnavailable):
            await store.create(ALICE, "db", "s1", "DROP TABLE t")
    finally:
        await store.close()


async def test_open_store(tmp_path: Path) -> None:
    s = open_store("sqlite", tmp_path)
    assert isinstance(s, SQLiteStore) and s.path == tmp_path / "state.sqlite3"
    await s.close()
    s = open_store(f"sqlite://{tmp_path}/x.db", tmp_path)
    assert isinstance(s, SQLiteStore) and s.path == tmp_path / "x.db"
    await s.close()
    p = open_store("postgresql://u:p@127.0.0.1:1/db", tmp_path)
    assert isinstance(p, PostgresStore)
    await p.close()
    with pytest.raises(ValueError):
        open_store("mysql://x", tmp_path)


async def _until(pred: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(pred) and pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def test_postgres_two_gateways_notify(pg_server: PgServer) -> None:
    # Gateway B polls only every 30 s: waking within a second proves LISTEN/NOTIFY.
    gw_a = PostgresStore(pg_server.dsn)
    gw_b = PostgresStore(pg_server.dsn, poll_interval=30)
    try:
        a = await gw_b.create(ALICE, "prod-db", "sess-b", "DELETE FROM orders")
        await _until(lambda: gw_b.listening)
        waiter = asyncio.create_task(gw_b.wait(a.id, 20))
        await asyncio.sleep(0.2)
        t = time.monotonic()
        decided = await gw_a.decide(a.id, BOB, True, "via gateway A")
        assert decided.state is ApprovalState.APPROVED
        got = await asyncio.wait_for(waiter, 5)
        assert time.monotonic() - t < 1.0
        assert got.state is ApprovalState.APPROVED and got.comment == "via gateway A"
        assert await gw_b.consume(a.id, "sess-b", a.command_hash)
        assert not await gw_a.consume(a.id, "sess-b", a.command_hash)
    finally:
        await gw_a.close()
        await gw_b.close()


async def test_postgres_outage_fails_closed_and_recovers(pg_server: PgServer) -> None:
    gw_a = PostgresStore(pg_server.dsn, connect_timeout=2)
    gw_b = PostgresStore(pg_server.dsn, connect_timeout=2, poll_interval=30)
    try:
        await gw_a.health()  # first call starts the listener
        pending = await gw_b.create(ALICE, "prod-db", "sess-b", "DROP TABLE x")
        await _until(lambda: gw_a.listening and gw_b.listening)
        in_flight = asyncio.create_task(gw_b.wait(pending.id, 60))
        await asyncio.sleep(0.2)

        await asyncio.to_thread(pg_server.stop)
        try:
            # a wait in progress fails closed
            with pytest.raises(StoreUnavailable, match="state store unreachable"):
                await asyncio.wait_for(in_flight, 10)
            # new held commands fail closed with a clear message
            with pytest.raises(StoreUnavailable, match="state store unreachable") as ei:
                await gw_b.create(ALICE, "prod-db", "sess-b", "DROP TABLE y")
            assert pg_server.password not in str(ei.value)
            with pytest.raises(StoreUnavailable):
                await gw_a.health()
            with pytest.raises(StoreUnavailable):
                await gw_a.decide(pending.id, BOB, True)
            with pytest.raises(StoreUnavailable):
                await gw_b.consume(pending.id, "sess-b", pending.command_hash)
        finally:
            await asyncio.to_thread(pg_server.start)

        # recovered: the next calls work, and the listener is back
        await gw_a.health()
        await gw_b.health()
        await _until(lambda: gw_a.listening and gw_b.listening, 15)
        a = await gw_b.create(ALICE, "prod-db", "sess-b", "DROP TABLE z")
        waiter = asyncio.create_task(gw_b.wait(a.id, 20))
        await asyncio.sleep(0.2)
        t = time.monotonic()
        await gw_a.decide(a.id, BOB, False, "no")
        got = await asyncio.wait_for(waiter, 5)
        assert got.state is ApprovalState.DENIED
        assert time.monotonic() - t < 1.0
        # the approval held before the outage is still there, still pending
        assert (await gw_a.get(pending.id)).state is ApprovalState.PENDING
    finally:
        await gw_a.close()
        await gw_b.close()


async def test_postgres_unreachable_from_start() -> None:
    from tests.support.pgserver import free_port

    store = PostgresStore(f"postgresql://u:secret@127.0.0.1:{free_port()}/db", connect_timeout=1)
    try:
        with pytest.raises(StoreUnavailable, match="state store unreachable") as ei:
            await store.create(ALICE, "db", "s", "DROP TABLE t")
        assert "secret" not in str(ei.value)
    finally:
        await store.close()
