"""``options.login_timeout`` of an ssh listener, with real sockets, asyncssh
and OpenSSH's ssh through ``hoopd serve``: a client that stalls anywhere
before it is logged in (no version string, no key exchange, an
authentication that never answers) is disconnected, logged and counted; a
logged-in session outlives the timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from hoopd.identity.tokens import GatewayTokens, load_or_create_token_key
from tests.helpers import Daemon, free_port, hoopd, read_until_closed_async, running
from tests.ssh.harness import have_openssh, run_ssh, ssh_conn, sshd

pytestmark = pytest.mark.skipif(not have_openssh(), reason="needs root, sshd and ssh")


@dataclass
class Env:
    daemon: Daemon
    port: int
    token: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ssh-login")
    with sshd(tmp) as target:
        port = free_port()
        config = {"connections": [ssh_conn("hurry", port, target, options={"login_timeout": "1s"})]}
        key = load_or_create_token_key(tmp / "var" / "token_key.ed25519")
        token = GatewayTokens(key).issue("alice", ["ops"], "1h")
        with running(tmp, config) as daemon:
            yield Env(daemon, port, token)


class _StalledPassword(asyncssh.SSHClient):
    """Asks for password authentication, then never gives the password."""

    async def password_auth_requested(self) -> str | None:  # type: ignore[override]
        await asyncio.sleep(30)
        return None


def _login_timeouts(daemon: Daemon) -> float:
    lines = [
        ln for ln in daemon.metrics().splitlines()
        if ln.startswith("hoopd_auth_failures_total") and 'reason="login_timeout"' in ln
    ]  # fmt: skip
    return sum(float(ln.split()[-1]) for ln in lines)


async def test_a_client_that_stalls_before_logging_in_is_disconnected(env: Env) -> None:
    """1 s here (60 s by default, as before, but now configurable): silent
    after connecting, after its version string (the gateway's key exchange
    offer unanswered), and in the middle of password authentication. Once
    keys are exchanged the client is told why (SSH_MSG_DISCONNECT)."""
    before = _login_timeouts(env.daemon)
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    data, took = await read_until_closed_async(reader)
    assert data.startswith(b"SSH-2.0-") and took < 3
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
    data, took = await read_until_closed_async(reader)
    assert took < 3
    assert b"not logged in within 1 s" in data  # the disconnect, in clear before keys
    writer.close()

    started = time.monotonic()
    connecting = asyncssh.connect(
        "127.0.0.1", env.port, username="alice", known_hosts=None, client_keys=None,
        agent_path=None, preferred_auth="password", client_factory=_StalledPassword,
    )  # fmt: skip
    with pytest.raises(asyncssh.DisconnectError) as info:
        await asyncio.wait_for(connecting, 10)
    assert time.monotonic() - started < 3
    assert "not logged in within 1 s" in info.value.reason
    assert _login_timeouts(env.daemon) >= before + 3
    assert "not logged in after 1 s (authenticating as 'alice')" in env.daemon.log()


def test_a_logged_in_session_outlives_the_login_timeout(env: Env) -> None:
    r = run_ssh(env.port, env.token, "sleep 2; echo still-here")
    assert (r.returncode, r.stdout) == (0, b"still-here\n"), r.stderr


def test_login_timeout_is_validated(tmp_path: Path) -> None:
    config = tmp_path / "hoopd.yaml"
    config.write_text(
        "connections:\n"
        "  - name: box\n    protocol: ssh\n    listen: 127.0.0.1:1\n    auth: none\n"
        "    upstream: {host: h, user: u, password: 'env:X', host_key: 'ssh-ed25519 AAAA'}\n"
        "    options: {login_timeout: -1s}\n"
    )
    res = hoopd("check", "-c", str(config))
    out: Any = res.stdout + res.stderr
    assert res.returncode != 0 and "options.login_timeout" in out, out
