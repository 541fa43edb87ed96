"""An Execute is judged as what the *server* will run.

The server keeps its own prepared statements and portals: a Parse or Bind
that fails (the name is taken) or is skipped (an earlier message of its
batch failed) leaves the older one in place, and SQL ``PREPARE`` creates
statements that protocol Bind can use. Each of these used to let a
``DELETE FROM victims`` run while the gateway judged a harmless ``select 1``
(or an empty text) in its place -- without approval."""

from __future__ import annotations

import socket
import time

import psycopg
import pytest

from protocols.postgres import _wire as w
from tests.postgres.conftest import Gateway
from tests.postgres.test_held import _raw_session
from tests.support.pgserver import PgServer

READY = b"Z\x00\x00\x00\x05"


def _reset(pg: PgServer) -> None:
    pg.execute("truncate victims; insert into victims select generate_series(1, 10)")


def _victims(pg: PgServer) -> str:
    return pg.execute("select count(*) from victims").strip()


def _answer(s: socket.socket, n_ready: int = 1, timeout: float = 15.0) -> bytes:
    """What the client gets up to its n-th ReadyForQuery."""
    buf = b""
    s.settimeout(timeout)
    end = time.monotonic() + timeout
    while buf.count(READY) < n_ready and time.monotonic() < end:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    assert buf.count(READY) >= n_ready, buf
    return buf


def _refused(out: bytes) -> bool:
    return b"42501" in out and b"hoopd: statement refused" in out


def test_named_statement_parsed_again_in_vain(gateway: Gateway, pg: PgServer) -> None:
    """Parse of a name that exists fails on the server: the DELETE stays."""
    _reset(pg)
    s = _raw_session(gateway, "quick")
    s.sendall(w.parse("s1", "delete from victims") + w.sync())
    _answer(s)
    s.sendall(w.parse("s1", "select 1") + w.sync())
    assert b"42P05" in _answer(s)  # prepared statement "s1" already exists
    s.sendall(w.bind("", "s1") + w.execute("") + w.sync())
    out = _answer(s)  # held; "quick" times out after 1 s
    s.close()
    assert _refused(out), out
    assert b"DELETE" not in out
    assert _victims(pg) == "10"


def test_unnamed_statement_parse_skipped_after_an_error(gateway: Gateway, pg: PgServer) -> None:
    """A Parse after an error in its batch is skipped: the old unnamed
    statement is what a later batch's Bind uses."""
    _reset(pg)
    s = _raw_session(gateway, "quick")
    s.sendall(w.parse("", "delete from victims") + w.sync())
    _answer(s)
    s.sendall(w.parse("bad", "selec 1") + w.parse("", "select 1") + w.sync())
    assert b"42601" in _answer(s)
    s.sendall(w.bind("", "") + w.execute("") + w.sync())
    out = _answer(s)
    s.close()
    assert _refused(out), out
    assert _victims(pg) == "10"


def test_sql_prepare_used_by_protocol_bind(gateway: Gateway, pg: PgServer) -> None:
    """SQL PREPARE and protocol Parse share one namespace on the server."""
    _reset(pg)
    s = _raw_session(gateway, "quick")
    s.sendall(w.query("prepare wipe as delete from victims"))
    _answer(s)
    s.sendall(w.bind("", "wipe") + w.execute("") + w.sync())
    out = _answer(s)
    s.close()
    assert _refused(out), out
    assert _victims(pg) == "10"


def test_statement_unknown_to_the_gateway_is_reviewed(gateway: Gateway, pg: PgServer) -> None:
    """A name the gateway never saw prepared (one made inside a function,
    say) is judged as an unknown prepared statement, not as empty text."""
    _reset(pg)
    s = _raw_session(gateway, "quick")
    s.sendall(w.bind("", "never_seen") + w.execute("") + w.sync())
    out = _answer(s)
    s.close()
    assert _refused(out), out


def test_portal_bound_again_in_vain(gateway: Gateway, pg: PgServer) -> None:
    """Bind of a portal name that exists fails, and the old portal lives on
    (ROLLBACK TO SAVEPOINT keeps portals made before the savepoint)."""
    _reset(pg)
    s = _raw_session(gateway, "quick")
    s.sendall(w.query("begin"))
    _answer(s)
    s.sendall(w.parse("", "delete from victims") + w.bind("p1", "") + w.sync())
    _answer(s)
    s.sendall(w.query("savepoint sp"))
    _answer(s)
    s.sendall(w.parse("", "select 1") + w.bind("p1", "") + w.sync())
    assert b"42P03" in _answer(s)  # cursor "p1" already exists
    s.sendall(w.query("rollback to savepoint sp"))
    _answer(s)
    s.sendall(w.execute("p1") + w.sync())
    out = _answer(s)
    s.sendall(w.query("commit"))
    _answer(s)
    s.close()
    assert _refused(out), out
    assert _victims(pg) == "10"


def test_prepare_laundered_by_many_failed_prepares(gateway: Gateway, pg: PgServer) -> None:
    """Each PREPARE of a taken name fails on the server; the gateway keeps
    up to 8 bodies per name and used to forget the oldest -- the DELETE."""
    _reset(pg)
    with psycopg.connect(gateway.dsn("quick"), sslmode="require", autocommit=True) as conn:
        conn.execute("prepare p as delete from victims")
        for i in range(9):
            with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
                conn.execute(f"prepare p as select {i}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("execute p")
        assert conn.execute("select count(*) from victims").fetchone() == (10,)


def test_ordinary_prepared_statements_still_run(gateway: Gateway, pg: PgServer) -> None:
    """Named statements used across batches (asyncpg, JDBC, psycopg's
    prepare) and the unnamed one described first: run without review."""
    _reset(pg)
    s = _raw_session(gateway, "quick")
    s.sendall(w.parse("st", "select count(*) from victims") + w.sync())
    _answer(s)
    s.sendall(w.parse("", "select 2") + w.sync())
    _answer(s)
    for _ in range(2):
        s.sendall(w.bind("", "st") + w.execute("") + w.sync())
        out = _answer(s)
        assert b"SELECT 1" in out and b"10" in out, out
    s.sendall(w.bind("", "") + w.execute("") + w.sync())
    out = _answer(s)
    assert b"SELECT 1" in out and b"NOTICE" not in out, out
    s.close()
    with psycopg.connect(gateway.dsn("quick"), sslmode="require", autocommit=True) as conn:
        for _ in range(8):
            assert conn.execute("select count(*) from victims", prepare=True).fetchone() == (10,)


@pytest.mark.parametrize(
    "where", ["not false", "true or false", "1 = 1 or id = 3", "null is null", "1 in (1, 2)"]
)
def test_constant_where_of_other_shapes(gateway: Gateway, pg: PgServer, where: str) -> None:
    """WHERE true and WHERE 1=1 were held; NOT false, an OR with a constant
    operand, IS NULL of a constant... deleted every row without review."""
    _reset(pg)
    with psycopg.connect(gateway.dsn("quick"), sslmode="require", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"delete from victims where {where}")
        assert conn.execute("select count(*) from victims").fetchone() == (10,)


def test_merge_on_true_deleting_everything(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    with psycopg.connect(gateway.dsn("quick"), sslmode="require", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("merge into victims using (select 1) s on true when matched then delete")
        assert conn.execute("select count(*) from victims").fetchone() == (10,)
