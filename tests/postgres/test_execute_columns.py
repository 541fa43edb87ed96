"""Rows of an extended-protocol Execute are masked by the columns the server
really returns.

The gateway used to learn an Execute's columns only from the client's own
Describe (of the portal, or of the statement earlier). A client that does
not describe -- Parse/Bind/Execute/Sync -- or that described a statement the
server no longer runs under that name got its rows masked by content only:
a value in an ``ssn`` or ``password`` column that no content rule matches,
or a card number in a binary bigint, reached it as is."""

from __future__ import annotations

import socket
import struct
import time

import psycopg

from protocols.postgres import _wire as w
from tests.postgres.conftest import Gateway
from tests.postgres.test_held import _raw_session

READY = b"Z\x00\x00\x00\x05"


def _answer(s: socket.socket, timeout: float = 15.0) -> bytes:
    buf = b""
    s.settimeout(timeout)
    end = time.monotonic() + timeout
    while READY not in buf and time.monotonic() < end:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    return buf


def _types(out: bytes) -> bytes:
    """The message types in a backend byte stream."""
    types = b""
    p = 0
    while p < len(out):
        types += out[p : p + 1]
        p += 1 + struct.unpack_from("!i", out, p + 1)[0]
    return types


def _bind(portal: str, stmt: str, result_format: int) -> bytes:
    body = w.cstr(portal) + w.cstr(stmt) + b"\0\0" + b"\0\0" + struct.pack("!hh", 1, result_format)
    return w.message(w.B, body)


def test_execute_without_describe_masks_by_column(gateway: Gateway) -> None:
    s = _raw_session(gateway, "db")
    sql = "select 'plainvalue'::text as ssn, 'hunter2xyz'::text as password, 'ok'::text as note"
    s.sendall(w.parse("", sql) + w.bind("", "") + w.execute("") + w.sync())
    out = _answer(s)
    s.close()
    assert b"plainvalue" not in out and b"hunter2xyz" not in out, out
    assert b"ok" in out
    # the client sees the answers to what it sent, nothing more
    assert _types(out) == b"12DCZ", out


def test_binary_bigint_without_describe(gateway: Gateway) -> None:
    s = _raw_session(gateway, "db")
    s.sendall(
        w.parse("", "select 4111111111111111::bigint as card")
        + _bind("", "", 1)
        + w.execute("")
        + w.sync()
    )
    out = _answer(s)
    s.close()
    assert struct.pack("!q", 4111111111111111) not in out, out
    assert _types(out) == b"12DCZ", out


def test_statement_replaced_after_it_was_described(gateway: Gateway) -> None:
    """Describe S of a harmless statement, then DEALLOCATE/PREPARE under its
    name: the Execute's rows are those of the new statement."""
    s = _raw_session(gateway, "db")
    s.sendall(w.parse("s1", "select 'x'::text as x") + w.message(w.D, b"Ss1\0") + w.sync())
    _answer(s)
    s.sendall(w.query("deallocate s1; prepare s1 as select 'plainvalue'::text as ssn"))
    _answer(s)
    s.sendall(w.bind("", "s1") + w.execute("") + w.sync())
    out = _answer(s)
    s.close()
    assert b"plainvalue" not in out, out
    assert b"[SSN" in out, out


def test_drivers_see_their_own_answers(gateway: Gateway) -> None:
    """libpq (psycopg) describes the portal itself; prepared statements
    across batches and server-side cursors still work and are masked."""
    with psycopg.connect(gateway.dsn("db"), sslmode="require", autocommit=True) as conn:
        for _ in range(6):
            row = conn.execute(
                "select ssn, name from people where id = %s", (1,), prepare=True
            ).fetchone()
            assert row is not None and row[1] == "Ann" and "6789" not in row[0]
        with conn.transaction(), conn.cursor(name="c") as cur:
            cur.execute("select ssn, id from people order by id")
            rows = cur.fetchall()
            assert [r[1] for r in rows] == [1, 2]
            assert all("-45-" not in r[0] and "-65-" not in r[0] for r in rows)
