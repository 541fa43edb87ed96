"""A client that pipelines statements and never reads their results is held
back by the gateway (at most INFLIGHT_MAX answers awaited), not only by the
socket buffers with every pipelined statement tracked in the daemon's
memory. Its own daemon: peak memory is measured from a fresh process."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.postgres import _wire as w
from tests.helpers import Daemon, free_port, hoopd
from tests.support.pgserver import PgServer


@pytest.fixture(scope="module")
def daemon(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int, str]]:
    work = tmp_path_factory.mktemp("pg-pipeline")
    port = free_port()
    conn = {
        "name": "plain",
        "protocol": "postgres",
        "listen": f"127.0.0.1:{port}",
        "upstream": {
            "host": "127.0.0.1",
            "port": pg.port,
            "user": pg.user,
            "password": "env:HOOPD_TEST_PGPW",
            "sslmode": "disable",
        },
        "allow_groups": ["dba"],
        "risk": {"review_at": "never"},
        "options": {"allow_plaintext_loopback": True},
    }
    os.environ["HOOPD_TEST_PGPW"] = pg.password
    d = Daemon(work, {"connections": [conn]}).start()
    try:
        token = hoopd("token", "issue", "-c", str(d.config_path), "--sub", "alice",
                      "--groups", "dba").stdout.strip()  # fmt: skip
        yield d, port, token
    finally:
        d.stop()


def _rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


def test_pipeline_without_reading_is_held_back(daemon: tuple[Daemon, int, str]) -> None:
    d, port, token = daemon
    assert d.proc is not None
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(w.startup_message({"user": "x", "database": "postgres"}))
    assert s.recv(9)[:1] == b"R"
    s.sendall(w.password_message(token))
    buf = b""
    while not buf.endswith(w.ready_for_query(b"I")):
        chunk = s.recv(65536)
        assert chunk
        buf += chunk
    before = _rss_mib(d.proc.pid)
    batch = (w.parse("", "select 1") + w.bind("", "") + w.execute("")) * 2000
    sent = [0]
    total = 64 * 1024 * 1024

    def pipeline() -> None:
        s.settimeout(None)
        with contextlib.suppress(OSError):
            while sent[0] < total:
                s.sendall(batch)
                sent[0] += len(batch)

    threading.Thread(target=pipeline, daemon=True).start()
    stalled, last = 0, -1
    deadline = time.monotonic() + 120
    while stalled < 3 and sent[0] < total and time.monotonic() < deadline:
        time.sleep(1)
        stalled = stalled + 1 if sent[0] == last else 0
        last = sent[0]
    grown = _rss_mib(d.proc.pid) - before
    s.close()
    assert stalled >= 3, f"the client pipelined {sent[0] >> 20} MiB without being held back"
    assert grown < 60, f"{sent[0] >> 20} MiB pipelined, unread: the daemon grew by {grown} MiB"
    # the daemon is fine afterwards
    assert d.proc.poll() is None
