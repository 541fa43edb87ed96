"""Long statements are parsed in the gateway's parse worker, not on the
event loop every session shares: while one session's bulk INSERT is being
scored, the others go on. A statement over ``max_parsed_sql`` is not parsed
at all and counts as unparseable (reviewed by default)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import asyncpg
import pytest

from tests.postgres.conftest import Gateway
from tests.support.pgserver import PgServer

ROWS = 30000  # ~1.5 MB of SQL: a second or two of parsing


def _children(pid: int) -> list[str]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                found.append(
                    Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
            except OSError:
                continue
    return found


def test_other_sessions_go_on_while_a_long_insert_is_parsed(gateway: Gateway, pg: PgServer) -> None:
    pg.execute("create table bulk_load(id int, email text, noted timestamptz)")
    values = ",".join(f"({i}, 'user{i}@example.com', now())" for i in range(ROWS))
    sql = "INSERT INTO bulk_load (id, email, noted) VALUES " + values

    async def run() -> tuple[float, list[float]]:
        ping = await asyncpg.connect(gateway.dsn("db"), ssl="require")
        bulk = await asyncpg.connect(gateway.dsn("db"), ssl="require")
        waits: list[float] = []
        done = asyncio.Event()

        async def pinger() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                assert await ping.fetchval("SELECT 1") == 1
                waits.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)

        task = asyncio.create_task(pinger())
        await asyncio.sleep(0.1)
        t0 = time.perf_counter()
        assert await bulk.execute(sql) == f"INSERT 0 {ROWS}"
        took = time.perf_counter() - t0
        done.set()
        await task
        assert await bulk.fetchval("SELECT count(*) FROM bulk_load") == ROWS
        await ping.close()
        await bulk.close()
        return took, waits

    took, waits = asyncio.run(run())
    # Parsed on the loop, the INSERT would hold every session for most of
    # its own time (the parse is most of it); in the worker, a ping waits
    # for a scheduling quantum or two.
    assert len(waits) >= 5
    assert max(waits) < 0.4 * took, (max(waits), took)
    daemon = gateway.daemon.proc
    assert daemon is not None
    assert any("protocols.postgres._parse_worker" in cmd for cmd in _children(daemon.pid))


def test_a_statement_over_max_parsed_sql_is_reviewed_not_parsed(gateway: Gateway) -> None:
    """``quick`` parses at most 64 KiB; its reviewers have 1 s."""
    sql = "SELECT 1 AS one /* " + "a long comment " * 5000 + "*/"

    async def run() -> str:
        conn = await asyncpg.connect(gateway.dsn("quick"), ssl="require")
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                await conn.execute(sql)
            assert await conn.fetchval("SELECT 2") == 2  # the session goes on
        finally:
            await conn.close()
        return str(refused.value)

    message = asyncio.run(run())
    found = re.search(r"approval (\S+)\)", message)
    assert found, message
    shown = json.loads(gateway.approvals("show", found.group(1), "--json").stdout)
    assert "max_parsed_sql" in json.dumps(shown)


def test_a_long_parameter_is_recorded_by_length_and_digest(gateway: Gateway, pg: PgServer) -> None:
    """Bind parameters are recorded masked -- asyncpg's, all binary, too --
    and one over 64 KiB only by its length and SHA-256 (masking megabytes
    of values dense with personal data would hold every session; the
    recording needs no bulk values)."""
    import hashlib
    import secrets

    from tests.helpers import hoopd, wait_for

    pg.execute("create table if not exists long_params(id int, body text)")
    body = "ann@example.com " * 10000  # 160,000 characters
    user = f"params-{secrets.token_hex(4)}"
    token = hoopd(
        "token", "issue", "-c", str(gateway.daemon.config_path), "--sub", user, "--groups", "dba"
    ).stdout.strip()

    async def run() -> None:
        conn = await asyncpg.connect(gateway.dsn("db").replace(gateway.token, token), ssl="require")
        await conn.execute("INSERT INTO long_params VALUES ($1, $2)", 1, body)
        await conn.execute("INSERT INTO long_params VALUES ($1, $2)", 2, "bob@corp.io")
        assert await conn.fetchval("SELECT length(body) FROM long_params WHERE id = 1") == len(body)
        await conn.close()

    asyncio.run(run())

    def recorded() -> list[list[str | None]] | None:
        listed = hoopd("replay", "list", str(gateway.daemon.recordings), "--json").stdout
        for line in listed.splitlines():
            s = json.loads(line)
            if s["user"] == user and s["end_reason"]:
                export = hoopd(
                    "replay", "export", str(gateway.daemon.recordings), s["session_id"],
                    "--format", "jsonl",
                ).stdout  # fmt: skip
                events = [json.loads(e) for e in export.splitlines()]
                return [
                    e["attrs"]["params"]
                    for e in events
                    if e["type"] == "command" and "params" in e.get("attrs", {})
                ]
        return None

    params = wait_for(recorded, timeout=15)
    digest = hashlib.sha256(body.encode()).hexdigest()
    assert [
        ["\\x00000001", f"[parameter of {len(body)} bytes, not recorded; sha256 {digest}]"],
        ["\\x00000002", "[EMAIL]"],  # a binary text value a rule hits: masked text
    ] == params[-2:], params
