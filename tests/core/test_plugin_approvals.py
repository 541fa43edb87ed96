"""A third-party protocol installed only through the ``hoopd.protocols``
entry point, and the approval flow end to end through it: a command held by
policy in the daemon completes after ``hoopd approvals approve ID`` run from
another process; deny, timeout and self-approval behave as a user expects."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.core.upstreams import echo_server
from tests.helpers import Daemon, free_port, hoopd

PLUGIN_PATH = str(Path(__file__).parent / "plugin")
ENV = {"PYTHONPATH": os.pathsep.join([PLUGIN_PATH, os.environ.get("PYTHONPATH", "")])}


class LineClient:
    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rwb")
        self.send(f"AUTH {token}")
        self.hello = self.recv()

    def send(self, line: str) -> None:
        self.file.write(line.encode() + b"\n")
        self.file.flush()

    def recv(self) -> str:
        return self.file.readline().decode().rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_hoopd_protocols_lists_a_third_party_handler() -> None:
    result = hoopd("protocols", env={**os.environ, **ENV})
    assert "line" in result.stdout
    assert "from hoopd_lineproto:LineHandler" in result.stdout
    assert "tcp" in result.stdout


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[Daemon, int, dict[str, str]]]:
    port = free_port()
    with echo_server() as upstream:
        config: dict[str, Any] = {
            "connections": [
                {
                    "name": "ops",
                    "protocol": "line",
                    "listen": f"127.0.0.1:{port}",
                    "upstream": {"host": "127.0.0.1", "port": upstream.port},
                    "allow_groups": ["dev", "dba"],
                    "risk": {"review_at": "high", "reviewers": ["dba"]},
                    "approval": {"timeout": "20s"},
                }
            ]
        }
        daemon = Daemon(tmp_path, config, ENV)
        tokens = {}
        for user, groups in (("alice", "dev"), ("bob", "dba"), ("carol", "dev")):
            issued = hoopd("token", "issue", "-c", str(daemon.config_path), "--sub", user,
                           "--groups", groups, "--ttl", "10m", env={**os.environ, **ENV})
            assert issued.returncode == 0, issued.stderr
            tokens[user] = issued.stdout.strip()
            assert len(tokens[user]) < 1000  # fits an OpenSSH password
        daemon.start()
        try:
            yield daemon, port, tokens
        finally:
            daemon.stop()


def approvals(daemon: Daemon, token: str, *args: str) -> Any:
    return hoopd("approvals", *args, "--gateway", daemon.url(""), "--token", token)


def test_held_command_runs_after_approval_from_another_process(gateway: Any) -> None:
    daemon, port, tokens = gateway
    client = LineClient(port, tokens["alice"])
    assert client.hello == "ok"
    client.send("ls /tmp")
    assert client.recv() == "ls /tmp"  # low risk: straight through

    client.send("rm -rf /srv/cache")
    held = client.recv()
    assert held.startswith("held ")
    approval_id = held.split()[1]

    listed = approvals(daemon, tokens["bob"], "list", "--state", "pending")
    assert approval_id in listed.stdout and "rm -rf /srv/cache" in listed.stdout

    # Nobody approves their own request.
    own = approvals(daemon, tokens["alice"], "approve", approval_id)
    assert own.returncode != 0
    assert "HTTP 403" in own.stderr
    # Someone who is not a reviewer of this connection cannot decide.
    other = approvals(daemon, tokens["carol"], "approve", approval_id)
    assert other.returncode != 0 and ("HTTP 403" in other.stderr or "HTTP 404" in other.stderr)
    # Without a credential: 401.
    anon = approvals(daemon, "not-a-token", "approve", approval_id)
    assert anon.returncode != 0 and "HTTP 401" in anon.stderr

    ok = approvals(daemon, tokens["bob"], "approve", approval_id, "--comment", "cache only")
    assert ok.returncode == 0, ok.stderr
    assert client.recv() == "rm -rf /srv/cache"  # it ran, exactly once

    # The approval is used up: the same command is held again.
    client.send("rm -rf /srv/cache")
    again = client.recv()
    assert again.startswith("held ") and again.split()[1] != approval_id
    denied = approvals(daemon, tokens["bob"], "deny", again.split()[1], "--comment", "not twice")
    assert denied.returncode == 0, denied.stderr
    assert client.recv() == "denied: denied by bob: not twice"

    client.send("echo still usable")
    assert client.recv() == "echo still usable"
    client.close()

    shown = approvals(daemon, tokens["bob"], "show", approval_id, "--json")
    assert '"state": "used"' in shown.stdout


def test_held_command_times_out_cleanly(tmp_path: Path) -> None:
    port = free_port()
    with echo_server() as upstream:
        daemon = Daemon(tmp_path, {
            "connections": [{
                "name": "ops", "protocol": "line", "listen": f"127.0.0.1:{port}",
                "upstream": {"host": "127.0.0.1", "port": upstream.port},
                "allow_groups": ["dev"], "risk": {"reviewers": ["dba"]},
                "approval": {"timeout": "1s"},
            }]
        }, ENV)
        token = hoopd("token", "issue", "-c", str(daemon.config_path), "--sub", "alice",
                      "--groups", "dev", env={**os.environ, **ENV}).stdout.strip()
        daemon.start()
        try:
            client = LineClient(port, token)
            client.send("rm -rf /")
            assert client.recv().startswith("held ")
            assert client.recv() == "denied: no reviewer decided in time"
            client.send("pwd")
            assert client.recv() == "pwd"
            client.close()
            metrics = daemon.metrics()
        finally:
            daemon.stop()
    assert 'hoopd_approvals_total{connection="ops",outcome="expired",protocol="line"} 1.0' in metrics
    assert 'hoopd_commands_total{connection="ops",kind="exec",protocol="line"} 2.0' in metrics
    assert 'hoopd_decisions_total{connection="ops",protocol="line",verdict="review"} 1.0' in metrics


def test_session_ends_when_its_credential_expires(tmp_path: Path) -> None:
    port = free_port()
    with echo_server() as upstream:
        daemon = Daemon(tmp_path, {
            "identity": {"expiry_grace_seconds": 1},
            "connections": [{
                "name": "ops", "protocol": "line", "listen": f"127.0.0.1:{port}",
                "upstream": {"host": "127.0.0.1", "port": upstream.port},
                "allow_groups": ["dev"],
            }],
        }, ENV)
        daemon.start()
        issued = time.time()
        token = hoopd("token", "issue", "-c", str(daemon.config_path), "--sub", "alice",
                      "--groups", "dev", "--ttl", "3s", env={**os.environ, **ENV}).stdout.strip()
        try:
            client = LineClient(port, token)
            assert client.hello == "ok"
            client.send("date")
            assert client.recv() == "date"
            assert client.recv() == ""  # the gateway closes the session ...
            assert 2.9 < time.time() - issued < 10  # ... at expiry (3s, whole seconds) plus grace (1s)
            client.close()
            metrics = daemon.metrics()
        finally:
            daemon.stop()
    assert 'hoopd_sessions_ended_total{connection="ops",protocol="line",reason="credential_expired"} 1.0' in metrics


def test_reload_revokes_an_api_key_for_new_logins(tmp_path: Path) -> None:
    import hashlib
    import signal

    from tests.helpers import wait_for

    key = "agent-key-0123456789abcdef"
    entry = {"name": "agent", "sha256": hashlib.sha256(key.encode()).hexdigest(), "groups": ["dev"]}
    port = free_port()
    with echo_server() as upstream:
        config: dict[str, Any] = {
            "identity": {"api_keys": [entry]},
            "connections": [{
                "name": "ops", "protocol": "line", "listen": f"127.0.0.1:{port}",
                "upstream": {"host": "127.0.0.1", "port": upstream.port},
                "allow_groups": ["dev"],
            }],
        }
        daemon = Daemon(tmp_path, config, ENV).start()
        try:
            live = LineClient(port, key)
            assert live.hello == "ok"
            config["identity"]["api_keys"] = [{**entry, "revoked": True}]
            daemon.write_config(config)
            daemon.signal(signal.SIGHUP)
            wait_for(lambda: "identity settings replaced" in daemon.log(), 10)
            refused = LineClient(port, key)
            assert refused.hello.startswith("error:")
            refused.close()
            live.send("still open")  # a session that already proved itself goes on
            assert live.recv() == "still open"
            live.close()
        finally:
            daemon.stop()
