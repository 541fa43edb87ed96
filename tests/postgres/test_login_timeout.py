"""The login timeout of the Postgres front end, end to end through ``hoopd serve``."""

from __future__ import annotations

import socket

import psycopg

from protocols.postgres import _wire as w
from tests.helpers import read_until_closed
from tests.postgres.conftest import Gateway


def test_a_client_that_stalls_before_logging_in_is_closed(gateway: Gateway) -> None:
    """``options.login_timeout`` (1 s on ``hurry``; 60 s by default), as
    PostgreSQL's authentication_timeout: a connection that sends nothing is
    closed without a word (there is no protocol yet); one that sent its
    startup message but no password gets FATAL 57014 first. Each is counted
    as an authentication failure with reason login_timeout; a client that
    logs in in time is not affected."""
    port = gateway.ports["hurry"]
    with socket.create_connection(("127.0.0.1", port)) as silent:
        data, took = read_until_closed(silent, 30)
    assert data == b"" and took < 20
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(w.startup_message({"user": "someone", "database": "postgres"}))
        data, took = read_until_closed(sock, 30)
    assert data.startswith(w.auth_cleartext()) and took < 20
    error = data[len(w.auth_cleartext()) :]
    assert error[:1] == b"E" and b"S" + b"FATAL\0" in error and b"C57014\0" in error
    assert b"canceling authentication due to timeout" in error
    metrics = gateway.daemon.metrics()
    line = next(
        ln for ln in metrics.splitlines() if "auth_failures" in ln and "login_timeout" in ln
    )
    assert 'connection="hurry"' in line and float(line.split()[-1]) >= 2
    with psycopg.connect(gateway.dsn("hurry"), sslmode="disable") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
