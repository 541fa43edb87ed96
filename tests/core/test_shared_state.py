"""Two gateway processes sharing one PostgreSQL state store: an approval
given through one releases the command held on the other; when the store
goes away, held commands fail closed with a clear message, and the gateways
recover when it returns."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_plugin_approvals import ENV, LineClient
from tests.core.upstreams import echo_server
from tests.helpers import Daemon, free_port, hoopd, http_get, wait_for
from tests.support.pgserver import PgServer, available

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL server binaries not installed")

KEYS = {"alice": secrets.token_urlsafe(24), "bob": secrets.token_urlsafe(24)}


def gateway_config(dsn: str, port: int, upstream: int) -> dict[str, Any]:
    return {
        "gateway": {"state": dsn},
        "identity": {
            "api_keys": [
                {"name": "alice", "sha256": hashlib.sha256(KEYS["alice"].encode()).hexdigest(), "groups": ["dev"]},
                {"name": "bob", "sha256": hashlib.sha256(KEYS["bob"].encode()).hexdigest(), "groups": ["dba"]},
            ]
        },
        "connections": [
            {
                "name": "ops",
                "protocol": "line",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"host": "127.0.0.1", "port": upstream},
                "allow_groups": ["dev"],
                "risk": {"reviewers": ["dba"]},
                "approval": {"timeout": "30s"},
            }
        ],
    }


def test_two_gateways_share_approvals_and_fail_closed_without_the_store(tmp_path: Path) -> None:
    with PgServer() as pg, echo_server() as upstream:
        port_a, port_b = free_port(), free_port()
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        gw_a = Daemon(tmp_path / "a", gateway_config(pg.dsn, port_a, upstream.port), ENV).start()
        gw_b = Daemon(tmp_path / "b", gateway_config(pg.dsn, port_b, upstream.port), ENV).start()
        try:
            client = LineClient(port_a, KEYS["alice"])
            assert client.hello == "ok"
            client.send("rm -rf /var/tmp/x")
            held = client.recv()
            assert held.startswith("held ")
            approval_id = held.split()[1]
            # Approved through gateway B; the command held on gateway A runs.
            ok = hoopd("approvals", "approve", approval_id, "--gateway", gw_b.url(""),
                       "--token", KEYS["bob"])
            assert ok.returncode == 0, ok.stderr
            assert client.recv() == "rm -rf /var/tmp/x"

            pg.stop()
            client.send("rm -rf /var/tmp/y")
            answer = client.recv()
            assert answer.startswith("denied: approval store unavailable"), answer
            client.send("ls")  # the session goes on for what needs no review
            assert client.recv() == "ls"
            assert http_get(gw_a.url("/readyz"))[0] == 503

            pg.start()
            wait_for(lambda: http_get(gw_a.url("/readyz"))[0] == 200, timeout=30, interval=0.5)
            client.send("rm -rf /var/tmp/z")
            held = client.recv()
            assert held.startswith("held "), held
            ok = hoopd("approvals", "approve", held.split()[1], "--gateway", gw_b.url(""),
                       "--token", KEYS["bob"])
            assert ok.returncode == 0, ok.stderr
            assert client.recv() == "rm -rf /var/tmp/z"
            client.close()
            metrics = gw_a.metrics()
        finally:
            gw_a.stop()
            gw_b.stop()
    assert 'outcome="store_unavailable"' in metrics
