"""Real clients through ``hoopd serve`` against a real PostgreSQL 15:
psql, pgbench, asyncpg (binary results), psycopg 3 (pipeline, COPY, cursors,
LISTEN/NOTIFY, cancel). Unmasked results must equal a direct connection."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest

from protocols.postgres import _wire as w
from tests.postgres.conftest import Gateway
from tests.support.pgserver import PgServer

PSQL = ["psql", "-X", "-q"]

SCRIPT = """
select 1 as one, 'two' as two;
select n, t from numbers where n <= 5 order by n;
begin;
create temp table tmp_x(a int, b text);
insert into tmp_x values (1, 'a'), (2, null);
update tmp_x set b = 'z' where a = 1;
select * from tmp_x order by a;
commit;
select 1/0;
select 'after error', now() is not null;
select array[1,2,3] as arr, '{"a": 1}'::jsonb as j, 1.5::numeric as num;
"""


def run_psql(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PSQL, *args], env=env, capture_output=True, text=True, timeout=60, input=input
    )


def test_psql_script_identical_to_direct(gateway: Gateway, pg: PgServer, tmp_path: Path) -> None:
    script = tmp_path / "s.sql"
    script.write_text(SCRIPT)
    direct = run_psql(pg.env(), "-f", str(script))
    through = run_psql(gateway.env("plain"), "-f", str(script))
    assert direct.stdout == through.stdout
    assert "division by zero" in through.stderr
    assert "after error" in through.stdout


def test_psql_tls_verify_full(gateway: Gateway) -> None:
    env = gateway.env("strict", PGSSLMODE="verify-full", PGSSLROOTCERT=str(gateway.ca))
    r = run_psql(env, "-Atc", "select 42")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"


def test_plaintext_refused_without_tls(gateway: Gateway) -> None:
    r = run_psql(gateway.env("strict", PGSSLMODE="disable"), "-Atc", "select 1")
    assert r.returncode != 0
    assert "requires TLS" in r.stderr


def test_bad_credential(gateway: Gateway) -> None:
    r = run_psql(gateway.env("db", PGPASSWORD="not-a-token"), "-Atc", "select 1")
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr
    assert "token" not in r.stderr.split("HINT")[0].lower() or "gateway token" in r.stderr


def test_psql_copy_both_ways(gateway: Gateway, pg: PgServer, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("".join(f"{i},row {i}\n" for i in range(1000)))
    out = tmp_path / "out.csv"
    env = gateway.env("plain")
    pg.execute("drop table if exists copy_t; create table copy_t(a int, b text)")
    r = run_psql(env, "-c", f"\\copy copy_t from '{src}' with (format csv)")
    assert r.returncode == 0, r.stderr
    r = run_psql(env, "-c", f"\\copy (select * from copy_t order by a) to '{out}' with (format csv)")
    assert r.returncode == 0, r.stderr
    assert out.read_text() == src.read_text()
    assert pg.execute("select count(*) from copy_t").strip() == "1000"


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench(gateway: Gateway, pg: PgServer, mode: str) -> None:
    if mode == "simple":
        init = subprocess.run(
            ["pgbench", "-i", "-q", "-s", "1"], env=pg.env(), capture_output=True, text=True
        )
        assert init.returncode == 0, init.stderr
    r = subprocess.run(
        ["pgbench", "-M", mode, "-c", "2", "-j", "1", "-t", "200", "-n"],
        env=gateway.env("plain"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "number of failed transactions: 0" in r.stdout or "failed" not in r.stdout


async def test_asyncpg_binary_identical(gateway: Gateway, pg: PgServer) -> None:
    query = """select n, t, n::float8 / 3 as f, n::numeric / 7 as num, now()::date as d,
               (n % 2 = 0) as even, array[n, n+1] as arr, jsonb_build_object('n', n) as j,
               gen_random_uuid() is not null as u
               from numbers where n < 300 order by n"""
    direct = await asyncpg.connect(pg.dsn)
    through = await asyncpg.connect(gateway.dsn("plain"), ssl="require")
    try:
        a = [tuple(r) for r in await direct.fetch(query)]
        b = [tuple(r) for r in await through.fetch(query)]
        assert a == b
        # prepared statement reused, parameters, executemany, errors keep the session usable
        stmt = await through.prepare("select t from numbers where n = $1")
        assert await stmt.fetchval(7) == await direct.fetchval("select t from numbers where n = 7")
        await through.execute("create temp table am(a int, b text)")
        await through.executemany("insert into am values ($1, $2)", [(i, str(i)) for i in range(50)])
        assert await through.fetchval("select count(*) from am") == 50
        with pytest.raises(asyncpg.DivisionByZeroError):
            await through.fetchval("select 1/0")
        assert await through.fetchval("select 5") == 5
        types = await through.fetchrow(
            "select 1::int2, 2::int8, 'x'::varchar, '2024-01-02'::timestamptz, 1.25::numeric"
        )
        assert types[4] == decimal.Decimal("1.25")
        assert isinstance(types[3], dt.datetime)
    finally:
        await direct.close()
        await through.close()


async def test_asyncpg_masks_binary_results(gateway: Gateway) -> None:
    conn = await asyncpg.connect(gateway.dsn("db"), ssl="require")
    try:
        row = await conn.fetchrow("select name, email, ssn, card, note from people where id = 1")
        assert row["name"] == "Ann"
        assert row["email"] == "[EMAIL]"
        assert row["ssn"] == "[SSN_COL]"
        assert row["card"] is None  # a bigint holding a card number: NULL, never the value
        assert "ann@example.com" not in str(row["note"])
        plain = await conn.fetchval("select 's3cr3t-42 and more'")
        assert plain == "[SECRET_WORD] and more"
    finally:
        await conn.close()


def test_psql_masks_text_results(gateway: Gateway) -> None:
    r = run_psql(gateway.env("db"), "-Atc", "select name, email, ssn, card from people order by id")
    assert r.returncode == 0, r.stderr
    assert "ann@example.com" not in r.stdout and "987-65-4321" not in r.stdout
    assert r.stdout.splitlines()[1].startswith("Bob|[EMAIL]|[SSN_COL]|42")
    # errors and notices are masked too
    r = run_psql(gateway.env("db"), "-c", "select 'ann@example.com'::int")
    first = r.stderr.splitlines()[0]  # psql echoes the client's own query after it
    assert first.startswith("ERROR:") and "ann@example.com" not in first
    assert "[EMAIL]" in first


def test_psycopg_pipeline_copy_cursor(gateway: Gateway, pg: PgServer) -> None:
    with psycopg.connect(gateway.dsn("plain"), sslmode="require") as conn:
        with conn.pipeline():
            curs = [conn.execute("select %s::int * 2", (i,)) for i in range(50)]
        assert [c.fetchall()[0][0] for c in curs] == [i * 2 for i in range(50)]
        # error in the middle of a pipeline
        with pytest.raises(psycopg.errors.DivisionByZero), conn.pipeline():
            conn.execute("select 1")
            conn.execute("select 1/0")
            conn.execute("select 2")
        conn.rollback()
        assert conn.execute("select 'ok'").fetchone() == ("ok",)
        with conn.cursor() as cur:
            cur.execute("create temp table pc(a int, b text)")
            with cur.copy("copy pc from stdin") as copy:
                for i in range(500):
                    copy.write_row((i, f"v{i}"))
            cur.execute("select count(*) from pc")
            assert cur.fetchone() == (500,)
            out = []
            with cur.copy("copy (select a, b from pc order by a) to stdout") as copy:
                for row in copy.rows():
                    out.append(row)
            assert len(out) == 500 and out[3] == ("3", "v3")
        with conn.cursor(name="server_side") as ss:
            ss.itersize = 100
            ss.execute("select n from numbers order by n")
            assert sum(1 for _ in ss) == 5000
        conn.commit()


def test_psycopg_listen_notify(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn("db"), autocommit=True, sslmode="require") as listener:
        listener.execute("listen ch")
        with psycopg.connect(gateway.dsn("db"), autocommit=True, sslmode="require") as sender:
            sender.execute("select pg_notify('ch', 'hello ann@example.com')")
        gen = listener.notifies(timeout=5)
        note = next(gen)
        gen.close()
        assert note.channel == "ch"
        assert note.payload == "hello [EMAIL]"


def test_psycopg_cancel(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn("plain"), sslmode="require") as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("select pg_sleep(20)")
        assert time.monotonic() - started < 10
        conn.rollback()
        assert conn.execute("select 1").fetchone() == (1,)
        # the client never sees the backend's real key data
        info = conn.pgconn.backend_pid
        real = conn.execute("select pg_backend_pid()").fetchall()[0][0]
        assert info != real


def test_caps_cancel_statement(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn("capped"), sslmode="require", autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("select g from generate_series(1, 100000) g").fetchall()
        assert "max_rows_per_statement" in str(err.value)
        assert conn.execute("select count(*) from generate_series(1, 50)").fetchone() == (50,)


def _startup(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_garbage_gets_error_and_other_sessions_live(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn("plain"), sslmode="require") as other:
        s = _startup(gateway.ports["plain"])
        s.sendall(b"\x00\x00\x00\x03garbage-garbage")
        data = s.recv(4096)
        s.close()
        assert data[:1] == b"E" and b"08P01" in data
        # a garbage message after a good login
        s = _startup(gateway.ports["plain"])
        s.sendall(w.startup_message({"user": "x", "database": "postgres"}))
        assert s.recv(9)[:1] == b"R"  # cleartext password request
        s.sendall(w.password_message(gateway.token))
        buf = b""
        while not buf.endswith(w.ready_for_query(b"I")):
            chunk = s.recv(4096)
            assert chunk
            buf += chunk
        s.sendall(b"Q\x00\x00\x00\x02!!!")
        reply = s.recv(4096)
        assert reply[:1] == b"E" and b"08P01" in reply
        assert s.recv(4096) == b""
        s.close()
        assert other.execute("select 'alive'").fetchone() == ("alive",)


def test_gssenc_declined_and_protocol_negotiation(gateway: Gateway) -> None:
    s = _startup(gateway.ports["plain"])
    s.sendall(struct.pack("!ii", 8, w.GSSENC_REQUEST))
    assert s.recv(1) == b"N"
    s.sendall(w.startup_message({"user": "x", "_pq_.something": "1"}, version=(3 << 16) | 2))
    data = s.recv(4096)
    assert data[:1] == b"v"
    s.close()


def test_asyncpg_ssl_verify_full(gateway: Gateway) -> None:
    import ssl

    async def go() -> int:
        ctx = ssl.create_default_context(cafile=str(gateway.ca))
        conn = await asyncpg.connect(gateway.dsn("strict"), ssl=ctx)
        try:
            return int(await conn.fetchval("select 7"))
        finally:
            await conn.close()

    assert asyncio.run(go()) == 7
