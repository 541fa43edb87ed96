"""The statement text in a recording is masked as Bind parameters are.

A value a content rule hits, written as a literal in the SQL (psql -c
"insert ... values ('ann@example.com')"), used to be recorded in clear while
the same value sent as a parameter was masked; a password in ``CREATE ROLE
... PASSWORD '...'`` was recorded as typed. The statement itself runs as
sent (docs/postgres.md, "Recording")."""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any

import psycopg

from tests.helpers import hoopd, wait_for
from tests.postgres.conftest import Gateway
from tests.postgres.test_recording import _session_of
from tests.support.pgserver import PgServer


def _commands(gateway: Gateway, user: str) -> list[str]:
    recordings = gateway.daemon.recordings
    summary = wait_for(lambda: _session_of(recordings, user), timeout=15)
    export = hoopd("replay", "export", str(recordings), summary["session_id"], "--format", "jsonl")
    assert export.returncode == 0, export.stderr
    events: list[dict[str, Any]] = [json.loads(line) for line in export.stdout.splitlines()]
    return [e["text"] for e in events if e["type"] == "command"]


def _psql_as_new_user(gateway: Gateway, conn: str, *commands: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    user = f"sqltext-{secrets.token_hex(4)}"
    token = hoopd(
        "token", "issue", "-c", str(gateway.daemon.config_path), "--sub", user, "--groups", "dba"
    ).stdout.strip()
    argv = ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1"]
    for c in commands:
        argv += ["-c", c]
    r = subprocess.run(argv, env={**gateway.env(conn), "PGPASSWORD": token},
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return user, r


def test_literals_masked(gateway: Gateway, pg: PgServer) -> None:
    pg.execute("create table if not exists rs_contacts(email text, note text)")
    user, _ = _psql_as_new_user(
        gateway,
        "db",
        "insert into rs_contacts values ('carol@example.com', 'code s3cr3t-77 here')",
        "select 'plain text stays' as t",
    )
    texts = _commands(gateway, user)
    assert texts == [
        "insert into rs_contacts values ('[EMAIL]', 'code [SECRET_WORD] here')",
        "select 'plain text stays' as t",
    ]
    # what ran is what was sent
    with psycopg.connect(pg.dsn) as direct:
        assert ("carol@example.com", "code s3cr3t-77 here") in direct.execute("select * from rs_contacts").fetchall()


def test_passwords_redacted(gateway: Gateway, pg: PgServer) -> None:
    # on a connection with the default masking (credentials only) and no review
    role = f"rs_{secrets.token_hex(3)}"
    user, _ = _psql_as_new_user(
        gateway,
        "plain",
        f"create role {role} login password 'Hunter2-pw'",
        f"alter role {role} with encrypted password E'it\\'s-a-pw'",
        f"alter role {role} password $tag$dollar-pw$tag$",
        f"alter role {role} password 'Final-pw9'",
    )
    texts = _commands(gateway, user)
    assert texts == [
        f"create role {role} login password '[REDACTED]'",
        f"alter role {role} with encrypted password '[REDACTED]'",
        f"alter role {role} password '[REDACTED]'",
        f"alter role {role} password '[REDACTED]'",
    ]
    # the role got the password as sent
    with psycopg.connect(pg.dsn_for("postgres", user=role, password="Final-pw9")) as as_role:
        assert as_role.execute("select current_user").fetchone() == (role,)
    with psycopg.connect(pg.dsn) as direct:
        direct.execute(f"drop role {role}")


def test_extended_protocol_text_masked(gateway: Gateway) -> None:
    user = f"sqltext-{secrets.token_hex(4)}"
    token = hoopd(
        "token", "issue", "-c", str(gateway.daemon.config_path), "--sub", user, "--groups", "dba"
    ).stdout.strip()
    dsn = gateway.dsn("db").replace(gateway.token, token).replace("someone", user)
    with psycopg.connect(dsn, sslmode="require") as conn:
        # psycopg sends this with Parse/Bind/Execute (one parameter, one literal)
        row = conn.execute("select %s::text, 'dave@example.com'::text", ("x",)).fetchone()
        assert row == ("x", "[EMAIL]")
    texts = _commands(gateway, user)
    assert any("'[EMAIL]'::text" in t for t in texts), texts
    assert not any("dave@example.com" in t for t in texts), texts


def test_long_statement_recorded_in_part(gateway: Gateway) -> None:
    user = f"sqltext-{secrets.token_hex(4)}"
    token = hoopd(
        "token", "issue", "-c", str(gateway.daemon.config_path), "--sub", user, "--groups", "dba"
    ).stdout.strip()
    values = ",".join(f"('erin{i}@example.com')" for i in range(20000))  # ~460 KB of SQL
    dsn = gateway.dsn("db").replace(gateway.token, token).replace("someone", user)
    with psycopg.connect(dsn, sslmode="require", autocommit=True) as conn:
        conn.execute("create temp table rs_bulk(email text)")
        conn.execute(f"insert into rs_bulk values {values}".encode())  # bytes: simple protocol
        assert conn.execute("select count(*) from rs_bulk").fetchone() == (20000,)
    texts = _commands(gateway, user)
    long = [t for t in texts if t.startswith("-- statement of")]
    assert len(long) == 1, texts
    assert "recorded in part (sha256 " in long[0]
    assert "insert into rs_bulk values ('[EMAIL]'" in long[0]
    assert "@example.com" not in long[0]
    assert len(long[0]) < 8192


def test_held_password_statement_shown_redacted(gateway: Gateway, pg: PgServer) -> None:
    """A held CREATE ROLE ... PASSWORD: reviewers (and the approval store)
    see the statement with the password redacted; approved, it runs as sent."""
    from tests.postgres.test_held import Psql

    role = f"rs_{secrets.token_hex(3)}"
    psql = Psql(gateway.env("db"), f"create role {role} login password 'Held-pw-1';\n")
    try:
        assert psql.approval.wait(20), psql.lines
        r = gateway.approvals("list", "--json", "--state", "pending")
        assert r.returncode == 0, r.stderr
        assert "Held-pw-1" not in r.stdout, r.stdout
        [mine] = [a for a in json.loads(r.stdout) if a["id"] == psql.approval_id]
        assert mine["command_text"].startswith(f"create role {role} login password '[REDACTED]'"), mine
        r = gateway.approvals("approve", psql.approval_id)
        assert r.returncode == 0, r.stdout + r.stderr
        _, err = psql.finish()
        assert psql.proc.returncode == 0, err
    finally:
        if psql.proc.poll() is None:
            psql.proc.kill()
    with psycopg.connect(pg.dsn_for("postgres", user=role, password="Held-pw-1")) as as_role:
        assert as_role.execute("select current_user").fetchone() == (role,)
    with psycopg.connect(pg.dsn) as direct:
        direct.execute(f"drop role {role}")
