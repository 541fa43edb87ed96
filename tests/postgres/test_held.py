"""Held statements: a DELETE without WHERE waits for a reviewer; approved
from another process (``hoopd approvals approve``) it runs; denied or timed
out, the client gets a clean 42501 and the same psql session goes on."""

from __future__ import annotations

import re
import subprocess
import threading

import psycopg
import pytest

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
