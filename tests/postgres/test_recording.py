"""What a Postgres session leaves behind, read back with ``hoopd replay``:
commands, decisions, results and masked counts; and an md5 database login."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import Daemon, free_port, hoopd, wait_for
from tests.postgres.conftest import Gateway
from tests.support.pgserver import PgServer


def _session_of(recordings: Path, user: str) -> dict[str, Any] | None:
    r = hoopd("replay", "list", str(recordings), "--json")
    for line in r.stdout.splitlines():
        s = json.loads(line)
        if s["user"] == user and s["end_reason"]:
            return s
    return None


def test_replay_shows_commands_decisions_and_masking(gateway: Gateway) -> None:
    user = f"replayer-{secrets.token_hex(4)}"
    token = hoopd(
        "token", "issue", "-c", str(gateway.daemon.config_path), "--sub", user, "--groups", "dba"
    ).stdout.strip()
    env = {**gateway.env("db"), "PGPASSWORD": token}
    r = subprocess.run(
        ["psql", "-X", "-At",
         "-c", "select id, email from people order by id",
         "-c", "select 1/0"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "division by zero" in r.stderr
    assert r.stdout.splitlines()[:2] == ["1|[EMAIL]", "2|[EMAIL]"], r.stdout

    recordings = gateway.daemon.recordings
    summary = wait_for(lambda: _session_of(recordings, user), timeout=15)
    assert summary["protocol"] == "postgres" and summary["connection"] == "db"
    assert summary["commands"] == 2 and summary["decisions"] >= 3  # session + one per statement
    assert summary["masked"] >= 2
    sid = summary["session_id"]

    show = hoopd("replay", "show", str(recordings), sid)
    assert show.returncode == 0, show.stderr
    assert "select id, email from people order by id" in show.stdout
    assert "ALLOW" in show.stdout

    export = hoopd("replay", "export", str(recordings), sid, "--format", "jsonl")
    assert export.returncode == 0, export.stderr
    events = [json.loads(line) for line in export.stdout.splitlines()]
    commands = {e["seq"]: e for e in events if e["type"] == "command"}
    assert [c["text"] for c in commands.values()] == [
        "select id, email from people order by id",
        "select 1/0",
    ]
    assert all(c["kind"] == "sql" and c["attrs"]["protocol"] == "simple" for c in commands.values())
    decisions = {e["command_seq"]: e for e in events if e["type"] == "decision" and e["command_seq"]}
    assert set(decisions) == set(commands)
    assert all(d["verdict"] == "allow" and d["reasons"] for d in decisions.values())
    results = {e["command_seq"]: e for e in events if e["type"] == "result"}
    first, second = sorted(commands)
    assert results[first]["status"] == "SELECT 2" and results[first]["rows"] == 2
    assert results[second]["status"] == "error" and results[second]["error"].startswith("22012")
    outputs = [e for e in events if e["type"] == "output" and e.get("command_seq") == first]
    masked: dict[str, int] = {}
    for o in outputs:
        for k, n in o.get("masked", {}).items():
            masked[k] = masked.get(k, 0) + n
    assert sum(n for k, n in masked.items() if "email" in k) == 2, masked
    # what was recorded is what the client saw: masked values only
    seen = b"".join(base64.b64decode(o["data"]["base64"]) for o in outputs)
    assert b"[EMAIL]" in seen and b"@example.com" not in seen and b"@corp.io" not in seen

    verify = hoopd("replay", "verify", str(recordings / sid))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_md5_upstream_login(pg: PgServer, tmp_path: Path) -> None:
    """The gateway logs in with md5 when the server asks for it."""
    role, password = f"md5_{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    pg.create_user(role, password)
    pg.set_password_encryption_md5(role, password)
    hba = pg.data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 md5\n" + original)
    pg.execute("select pg_reload_conf()")
    try:
        port = free_port()
        config = {
            "connections": [
                {
                    "name": "md5db",
                    "protocol": "postgres",
                    "listen": f"127.0.0.1:{port}",
                    "upstream": {
                        "host": "127.0.0.1", "port": pg.port, "user": role,
                        "password": f"file:{tmp_path / 'pw'}", "sslmode": "disable",
                    },
                    "allow_groups": ["dba"],
                    "options": {"allow_plaintext_loopback": True},
                }
            ]
        }  # fmt: skip
        (tmp_path / "pw").write_text(password)
        daemon = Daemon(tmp_path, config).start()
        try:
            token = hoopd(
                "token", "issue", "-c", str(daemon.config_path), "--sub", "md5user", "--groups", "dba"
            ).stdout.strip()
            env = {**pg.env(PGPORT=str(port), PGPASSWORD=token, PGUSER="x", PGSSLMODE="disable")}
            r = subprocess.run(
                ["psql", "-X", "-At", "-c", "select current_user, 1 + 1"],
                env=env, capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr + daemon.log()
            assert r.stdout.strip() == f"{role}|2"
            # md5 in pg_hba and an md5 password: the server asks for md5 (method 5)
            stored = pg.execute(f"select left(rolpassword, 3) from pg_authid where rolname = '{role}'")
            assert stored.strip() == "md5"
        finally:
            daemon.stop()
    finally:
        hba.write_text(original)
        pg.execute("select pg_reload_conf()")
