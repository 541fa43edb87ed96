"""Held statements: a DELETE without WHERE waits for a reviewer; approved
from another process (``hoopd approvals approve``) it runs; denied or timed
out, the client gets a clean 42501 and the same psql session goes on."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from protocols.postgres import _wire as w
from tests.postgres.conftest import Gateway
from tests.support.pgserver import PgServer

SCRIPT = "delete from victims;\nselect 'still here' as s, count(*) from victims;\n"


class Psql:
    """psql running a script; collects stderr lines as they come."""

    def __init__(self, env: dict[str, str], script: str) -> None:
        self.proc = subprocess.Popen(
            ["psql", "-X", "-At", "-f", "-"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(script)
        self.proc.stdin.close()
        self.proc.stdin = None
        self.lines: list[str] = []
        self.approval = threading.Event()
        self.approval_id = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"approval \(id (apr_[0-9a-z]+)\)", line)
            if found and not self.approval_id:
                self.approval_id = found.group(1)
                self.approval.set()

    def finish(self) -> tuple[str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)  # psql exited; let the reader take its last lines
        return out, "".join(self.lines)


def _reset(pg: PgServer) -> None:
    pg.execute("truncate victims; insert into victims select generate_series(1, 10)")


def test_held_delete_approved_from_another_process(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    psql = Psql(gateway.env("db"), SCRIPT)
    assert psql.approval.wait(20), psql.lines
    # still waiting: nothing deleted yet
    assert pg.execute("select count(*) from victims").strip() == "10"
    r = gateway.approvals("approve", psql.approval_id, "--comment", "ok")
    assert r.returncode == 0, r.stdout + r.stderr
    out, err = psql.finish()
    assert psql.proc.returncode == 0, err
    assert "still here|0" in out
    assert pg.execute("select count(*) from victims").strip() == "0"


def test_held_delete_denied_session_goes_on(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    psql = Psql(gateway.env("db"), SCRIPT)
    assert psql.approval.wait(20), psql.lines
    r = gateway.approvals("deny", psql.approval_id, "--comment", "not today")
    assert r.returncode == 0, r.stdout + r.stderr
    out, err = psql.finish()
    assert "42501" in err or "refused" in err
    assert "denied by bob" in err
    assert "still here|10" in out
    assert pg.execute("select count(*) from victims").strip() == "10"


def test_held_delete_times_out(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    psql = Psql(gateway.env("quick"), SCRIPT)
    out, err = psql.finish()
    assert "no reviewer decided in time" in err
    assert "still here|10" in out


def test_approval_is_single_use_and_bound_to_text(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    # the same statement again needs a new approval (times out on "quick")
    psql = Psql(gateway.env("quick"), "delete from victims;\n")
    _, err = psql.finish()
    assert "no reviewer decided in time" in err


def test_extended_pipeline_held_together(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    with psycopg.connect(gateway.dsn("quick"), sslmode="require") as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.pipeline():
            conn.execute("insert into victims values (%s)", (100,))
            conn.execute("delete from victims")
            conn.execute("insert into victims values (%s)", (101,))
        conn.rollback()
        # nothing of the batch ran, and the session is usable
        assert conn.execute("select count(*) from victims").fetchone() == (10,)


def test_denied_category_and_sql_prepare_execute(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    with psycopg.connect(gateway.dsn("quick"), sslmode="require", autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("drop database postgres")
        conn.execute("prepare wipe as delete from victims")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("execute wipe")
        assert conn.execute("select count(*) from victims").fetchone() == (10,)


def _raw_session(gateway: Gateway, conn: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gateway.ports[conn]), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    s.sendall(w.startup_message({"user": "x", "database": "postgres"}))
    assert s.recv(9)[:1] == b"R"  # cleartext password request
    s.sendall(w.password_message(gateway.token))
    _read_until(s, w.ready_for_query(b"I"))
    return s


def _read_until(s: socket.socket, end: bytes) -> bytes:
    buf = b""
    while not buf.endswith(end):
        chunk = s.recv(65536)
        assert chunk, buf[-200:]
        buf += chunk
    return buf


def test_held_batch_without_sync_is_bounded(gateway: Gateway, pg: PgServer) -> None:
    """A statement held for review, then a pipeline that never sends Sync:
    the batch is decided once it is long (the reviewer is asked before any
    Sync) and later bytes wait -- the gateway stops reading from the client
    instead of collecting the pipeline in memory. Deny it and the session
    goes on."""
    _reset(pg)
    s = _raw_session(gateway, "db")
    s.sendall(w.parse("", "delete from victims") + w.bind("", "") + w.execute(""))
    # Binds with a 64 KiB parameter: cheap for the gateway to take, skipped
    # by the server once the held statement is refused
    value = b"x" * 65000
    bind = w.message(w.B, b"\0\0" + struct.pack("!hhi", 0, 1, len(value)) + value + b"\0\0")
    chunk = bind * 16
    total = 64 * 1024 * 1024
    sent = [0]

    # one blocking socket: the writer thread sends, this thread waits for
    # answers with select (a timeout on the socket would make the writer's
    # sends non-blocking too)
    s.settimeout(None)

    def pipeline() -> None:
        with contextlib.suppress(OSError):
            while sent[0] < total:
                s.sendall(chunk)
                sent[0] += len(chunk)

    writer = threading.Thread(target=pipeline, daemon=True)
    writer.start()
    # the reviewer is asked before any Sync
    notice = b""
    while b"apr_" not in notice:
        assert select.select([s], [], [], 20)[0], notice
        got = s.recv(4096)
        assert got, notice
        notice += got
    approval = re.search(rb"\(id (apr_[0-9a-z]+)\)", notice)
    assert approval is not None
    # the client is held back: what it could send stops growing, well below the total
    stalled = 0
    last = -1
    while stalled < 3 and sent[0] < total:
        time.sleep(1)
        stalled = stalled + 1 if sent[0] == last else 0
        last = sent[0]
    accepted = sent[0]
    assert accepted < 32 * 1024 * 1024, f"the gateway took {accepted >> 20} MiB of a held pipeline"
    r = gateway.approvals("deny", approval.group(1).decode(), "--comment", "no")
    assert r.returncode == 0, r.stdout + r.stderr
    writer.join(120)
    assert not writer.is_alive()
    s.settimeout(20)
    s.sendall(w.sync())
    answer = _read_until(s, w.ready_for_query(b"I"))
    denied = b"42501" in answer and b"statement refused" in answer
    assert denied, answer[-300:]
    s.sendall(w.query("select 'still here'"))
    assert b"still here" in _read_until(s, w.ready_for_query(b"I"))
    s.close()
    assert pg.execute("select count(*) from victims").strip() == "10"


def test_held_query_then_part_of_the_next_in_one_read(gateway: Gateway) -> None:
    """A held Query and the first bytes of the next message in one read:
    once approved, the next message reaches the server whole, once."""
    s = _raw_session(gateway, "db")
    nxt = w.query("select 'next'")
    s.sendall(w.query("select 'hoopd-review-marker' as held") + nxt[:7])
    notice = b""
    while b"apr_" not in notice:
        got = s.recv(4096)
        assert got, notice
        notice += got
    time.sleep(0.2)
    s.sendall(nxt[7:])
    approval = re.search(rb"\(id (apr_[0-9a-z]+)\)", notice)
    assert approval is not None
    r = gateway.approvals("approve", approval.group(1).decode())
    assert r.returncode == 0, r.stdout + r.stderr
    answer = _read_until(s, w.ready_for_query(b"I"))
    if b"next" not in answer:
        answer += _read_until(s, w.ready_for_query(b"I"))
    both = b"SELECT 1" in answer and b"next" in answer and b"08P01" not in answer
    assert both, answer[-300:]
    s.close()
