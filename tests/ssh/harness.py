"""A real OpenSSH server for tests (own config, host key and loopback port,
root login with a key the gateway holds) and helpers to run real OpenSSH
clients through ``hoopd serve``."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import free_port, wait_port

SSHD = "/usr/sbin/sshd"


def have_openssh() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh") is not None and os.geteuid() == 0


def keygen(path: Path, comment: str = "test") -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return Path(str(path) + ".pub").read_text().strip()


@dataclass
class Sshd:
    port: int
    host_pub: str
    client_key: Path
    dir: Path
    proc: subprocess.Popen[bytes]
    no_x11_port: int
    """The same server on a second port, with X11 forwarding off."""


@contextlib.contextmanager
def sshd(
    workdir: Path, *, name: str = "sshd", log_level: str = "ERROR",
    ciphers: str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr",
    rekey_limit: str = "default none",
) -> Iterator[Sshd]:
    """``log_level`` DEBUG3 logs every packet type received to ``sshd.log``;
    ``ciphers`` (its ``Ciphers``) picks the cipher a gateway gets;
    ``rekey_limit`` (its ``RekeyLimit``, e.g. ``1M``) makes it renegotiate keys often."""
    d = workdir / name
    d.mkdir()
    Path("/run/sshd").mkdir(exist_ok=True)
    host_pub = keygen(d / "host_key", "target-host")
    client_pub = keygen(d / "gateway_key", "gateway")
    (d / "authorized_keys").write_text(client_pub + "\n")
    port, no_x11_port = free_port(), free_port()
    cfg = d / "sshd_config"
    # X11: sshd writes the fake cookie with xauth to $XAUTHORITY (SetEnv),
    # not to root's ~/.Xauthority.
    cfg.write_text(
        f"""Port {port}
Port {no_x11_port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
AllowTcpForwarding yes
X11Forwarding yes
SetEnv XAUTHORITY={d}/xauthority
PrintMotd no
PrintLastLog no
AcceptEnv LANG LC_* HOOPD_TEST
LogLevel {log_level}
MaxSessions 50
MaxStartups 50
Ciphers {ciphers}
RekeyLimit {rekey_limit}
Match LocalPort {no_x11_port}
    X11Forwarding no
"""
    )
    log = open(d / "sshd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc=proc)
        yield Sshd(port, host_pub, d / "gateway_key", d, proc, no_x11_port)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def ssh_conn(
    name: str, listen: int, target: Sshd, *, options: dict[str, Any] | None = None,
    target_port: int | None = None, **extra: Any,
) -> dict[str, Any]:
    conn: dict[str, Any] = {
        "name": name,
        "protocol": "ssh",
        "listen": f"127.0.0.1:{listen}",
        "upstream": {
            "host": "127.0.0.1",
            "port": target_port or target.port,
            "user": "root",
            "key": str(target.client_key),
            "host_key": target.host_pub,
        },
        "allow_groups": ["ops"],
        "options": options or {},
    }
    conn.update(extra)
    return conn


SSH_OPTS = [
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "BatchMode=no",
    "-o", "ConnectTimeout=10",
]


def token_env(token: str) -> dict[str, str]:
    return {**os.environ, "SSHPASS": token}


def ssh_argv(port: int, command: str, *extra: str, user: str = "alice") -> list[str]:
    """The real ssh client, logging in to the gateway with a token (SSHPASS)."""
    return ["sshpass", "-e", "ssh", *SSH_OPTS, "-p", str(port),
            "-o", "PreferredAuthentications=keyboard-interactive,password",
            "-o", "PubkeyAuthentication=no", *extra, f"{user}@127.0.0.1", command]  # fmt: skip


def popen_ssh(
    port: int, token: str, command: str, *, user: str = "alice", stdin: int = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """``ssh`` running in the background, stdout and stderr piped."""
    return subprocess.Popen(
        ssh_argv(port, command, user=user),
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=token_env(token),
    )  # fmt: skip


def run_ssh(
    port: int, token: str, command: str, *extra: str, input: bytes | None = None,
    timeout: float = 60, user: str = "alice",
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ssh_argv(port, command, *extra, user=user),
        input=input if input is not None else b"",
        capture_output=True,
        timeout=timeout,
        env=token_env(token),
    )
