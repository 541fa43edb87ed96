"""No empty MSG_IGNORE in front of every packet (protocols/ssh/packets.py).

What the peers see: a real OpenSSH client and a real OpenSSH target, at debug
level 3, log every MSG_IGNORE they receive. Through the gateway, with the
ciphers it offers, they receive none, and the session carries its bytes both
ways. With a CBC cipher (which hoopd does not offer; asyncssh on both ends
here) the padding is still sent."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from protocols.ssh.packets import skip_ignore_padding
from tests.helpers import free_port, running
from tests.ssh.harness import SSH_OPTS, Sshd, have_openssh, keygen, ssh_conn, sshd

CIPHERS = ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"]
IGNORED = b"Received SSH2_MSG_IGNORE"  # OpenSSH's debug3 line for each one received
DOWNLOAD = 3_000_000


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, tuple[int, Sshd]]]]:
    """One target per cipher (its only one, so the gateway's upstream uses it
    too), each behind its own connection of one gateway. The targets (and the
    clients below) renegotiate keys every megabyte: the padding stays off
    across key exchanges started from either side."""
    if not have_openssh():
        pytest.skip("needs root, sshd and ssh")
    tmp = tmp_path_factory.mktemp("packets")
    user_key = tmp / "user_key"
    user_pub = keygen(user_key, "user")
    keys = [{"key": user_pub, "subject": "user", "groups": ["ops"]}]
    with contextlib.ExitStack() as stack:
        ports: dict[str, tuple[int, Sshd]] = {}
        conns = []
        for i, cipher in enumerate(CIPHERS):
            target = stack.enter_context(
                sshd(tmp, name=f"sshd{i}", log_level="DEBUG3", ciphers=cipher, rekey_limit="1M")
            )
            ports[cipher] = (free_port(), target)
            conns.append(ssh_conn(f"c{i}", ports[cipher][0], target, options={"authorized_keys": keys}))
        stack.enter_context(running(tmp, {"connections": conns}))
        yield user_key, ports


@pytest.mark.parametrize("cipher", CIPHERS)
def test_openssh_client_and_target_receive_no_ignore_padding(
    gateway: tuple[Path, dict[str, tuple[int, Sshd]]], cipher: str
) -> None:
    user_key, ports = gateway
    port, target = ports[cipher]
    upload = os.urandom(1_000_000)
    # LogLevel before SSH_OPTS: ssh keeps the first value it is given.
    argv = ["ssh", "-o", "LogLevel=DEBUG3", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "RekeyLimit=1M", "-i", str(user_key), "-c", cipher, "-p", str(port), "user@127.0.0.1",
            f"sha256sum; head -c {DOWNLOAD} /dev/zero | tr '\\0' x"]  # fmt: skip
    r = subprocess.run(argv, input=upload, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == f"{hashlib.sha256(upload).hexdigest()}  -\n".encode() + b"x" * DOWNLOAD
    assert f"cipher: {cipher}".encode() in r.stderr  # the cipher asked for is the one in use
    assert r.stderr.count(IGNORED) == 0
    assert (target.dir / "sshd.log").read_bytes().count(IGNORED) == 0
    assert r.stderr.count(b"SSH2_MSG_KEXINIT sent") >= 3  # rekeyed along the way


class _Server(asyncssh.SSHServer):
    def connection_made(self, conn: Any) -> None:
        skip_ignore_padding(conn)

    def begin_auth(self, username: str) -> bool:
        return False


class _Client(asyncssh.SSHClient):
    def connection_made(self, conn: Any) -> None:
        skip_ignore_padding(conn)


def _write_and_exit(process: asyncssh.SSHServerProcess[str]) -> None:
    process.stdout.write("y" * 100_000)
    process.exit(0)


async def _ignores_received(cipher: str, caplog: pytest.LogCaptureFixture) -> int:
    """MSG_IGNOREs received by an asyncssh client and server, both with
    skip_ignore_padding, over one exec with 100 KB of output."""
    port = free_port()
    server = await asyncssh.create_server(
        _Server, "127.0.0.1", port, server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        encryption_algs=[cipher], process_factory=_write_and_exit,
    )
    asyncssh.set_debug_level(3)
    try:
        with caplog.at_level(logging.DEBUG, logger="asyncssh"):
            async with asyncssh.connect(
                "127.0.0.1", port, known_hosts=None, encryption_algs=[cipher], config=None,
                client_factory=_Client,
            ) as conn:
                result = await conn.run("anything")
                assert result.stdout == "y" * 100_000
        return sum("Received MSG_IGNORE" in r.getMessage() for r in caplog.records)
    finally:
        asyncssh.set_debug_level(1)
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("cipher", "padded"), [("aes128-gcm@openssh.com", False), ("aes128-cbc", True)])
async def test_cbc_keeps_the_padding(cipher: str, padded: bool, caplog: pytest.LogCaptureFixture) -> None:
    received = await _ignores_received(cipher, caplog)
    assert (received > 0) is padded, received
