"""``options.idle_timeout`` of the tcp relay, with real sockets through
``hoopd serve``: a relay that carries nothing either way for that long is
closed on both sides (the upstream connection is not held), one that keeps
talking is not, and the session ends with reason idle_timeout."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.core.test_daemon_tcp import ended_sessions, tcp_conn
from tests.core.upstreams import echo_server
from tests.helpers import free_port, hoopd, read_until_closed, running


def test_an_idle_relay_is_closed(tmp_path: Path) -> None:
    port = free_port()
    with (
        echo_server() as upstream,
        running(
            tmp_path,
            {"connections": [tcp_conn("t", port, upstream.port, options={"idle_timeout": "1s"})]},
        ) as daemon,
    ):
        # talking every 0.4 s for 2 s (longer than the timeout): kept
        with socket.create_connection(("127.0.0.1", port), timeout=5) as busy:
            for i in range(5):
                busy.sendall(b"ping %d\n" % i)
                assert busy.recv(100) == b"ping %d\n" % i
                time.sleep(0.4)
            # then silent: closed after about a second
            data, took = read_until_closed(busy)
            assert data == b"" and took < 3
        with socket.create_connection(("127.0.0.1", port), timeout=5) as silent:
            data, took = read_until_closed(silent)
            assert data == b"" and took < 3
        rows = ended_sessions(daemon.recordings, 2)
        assert {r["end_reason"] for r in rows} == {"idle_timeout"}
        metrics = daemon.metrics()
        line = next(
            ln for ln in metrics.splitlines()
            if ln.startswith("hoopd_sessions_ended_total") and 'reason="idle_timeout"' in ln
        )  # fmt: skip
        assert float(line.split()[-1]) == 2
        assert "idle (no data either way for 1 s): closing" in daemon.log()


def test_idle_timeout_is_validated(tmp_path: Path) -> None:
    config = tmp_path / "hoopd.yaml"
    config.write_text(
        "connections:\n"
        "  - name: t\n    protocol: tcp\n    listen: 127.0.0.1:1\n    auth: none\n"
        "    upstream: {host: 127.0.0.1, port: 2}\n"
        "    options: {idle_timeout: 0s}\n"
    )
    res = hoopd("check", "-c", str(config))
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "connections[0].options.idle_timeout" in out, out
