"""Fail closed when recordings cannot be written: a real full disk (a small
tmpfs), a live session through `hoopd serve`, then recovery."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.core.upstreams import echo_server
from tests.helpers import Daemon, free_port, http_get, wait_for


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(fh: BinaryIO) -> None:
    """Write into an already open file until the disk is full."""
    with contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
            os.fsync(fh.fileno())


def metric(daemon: Daemon, prefix: str) -> float:
    total = 0.0
    for line in daemon.metrics().splitlines():
        if line.startswith(prefix):
            total += float(line.split()[-1])
    return total


def connection_is_refused(port: int) -> bool:
    """The gateway accepts the TCP connection, then closes it without relaying."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"hello\n")
        try:
            return s.recv(100) == b""
        except ConnectionResetError:
            return True


def test_disk_full_ends_sessions_refuses_new_ones_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    with small_disk(tmp_path / "disk", "512k") as disk, echo_server() as upstream:
        # Opened up front: creating a file on an almost full disk can fail.
        filler = disk / "filler"
        # unbuffered: a buffered file could still hold bytes the full disk
        # refused, and close() would fail trying to flush them again
        filler_fh = open(filler, "wb", buffering=0)  # noqa: SIM115 - closed below
        daemon = Daemon(
            tmp_path,
            {
                "recording": {"dir": str(disk / "recordings"), "fsync": "always"},
                "connections": [
                    {
                        "name": "a",
                        "protocol": "tcp",
                        "listen": f"127.0.0.1:{port}",
                        "upstream": {"host": "127.0.0.1", "port": upstream.port},
                        "auth": "none",
                    }
                ],
            },
        ).start()
        try:
            live = socket.create_connection(("127.0.0.1", port), timeout=5)
            live.sendall(b"before\n")
            assert live.recv(100) == b"before\n"

            fill(filler_fh)
            # Keep talking: the recorder cannot write, so the gateway ends the
            # session rather than carry unrecorded traffic.
            def session_closed() -> bool:
                try:
                    live.sendall(os.urandom(32768))
                    return live.recv(65536) == b""
                except OSError:
                    return True

            wait_for(session_closed, timeout=20, interval=0.1)
            live.close()
            assert metric(daemon, "hoopd_recording_errors_total") >= 1
            assert "hoopd_recorder_healthy 0.0" in daemon.metrics()
            assert http_get(daemon.url("/readyz"))[0] == 503
            assert connection_is_refused(port)
            assert metric(daemon, 'hoopd_sessions_refused_total{connection="a",protocol="tcp",reason="recorder_unavailable"}') >= 1
            assert "record" in daemon.log().lower()

            # Space comes back: new sessions work again without a restart.
            filler_fh.close()
            filler.unlink()
            wait_for(lambda: http_get(daemon.url("/readyz"))[0] == 200, timeout=20, interval=0.2)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"after\n")
                assert s.recv(100) == b"after\n"
            assert "hoopd_recorder_healthy 1.0" in daemon.metrics()
        finally:
            filler_fh.close()
            assert daemon.stop() == 0
