"""What a client sends with COPY FROM STDIN is recorded masked, as Bind
parameters are: the recording held the raw rows (e-mail addresses, card
numbers), and with them the raw parameters of any Bind that came in the
same read as the COPY data."""

from __future__ import annotations

import base64
import json
import secrets
import socket

from protocols.postgres import _wire as w
from tests.helpers import hoopd, wait_for
from tests.postgres.conftest import Gateway
from tests.postgres.test_held import _read_until
from tests.postgres.test_query_while_discarding import READY, _until
from tests.postgres.test_recording import _session_of


def _bind_text(portal: str, stmt: str, value: bytes) -> bytes:
    body = w.cstr(portal) + w.cstr(stmt) + b"\0\0" + b"\0\x01" + len(value).to_bytes(4, "big")
    return w.message(w.B, body + value + b"\0\0")


def test_copy_in_data_is_recorded_masked(gateway: Gateway) -> None:
    user = f"copier-{secrets.token_hex(4)}"
    token = hoopd(
        "token", "issue", "-c", str(gateway.daemon.config_path), "--sub", user, "--groups", "dba"
    ).stdout.strip()
    s = socket.create_connection(("127.0.0.1", gateway.ports["db"]), timeout=20)
    s.sendall(w.startup_message({"user": "x", "database": "postgres"}))
    assert s.recv(9)[:1] == b"R"
    s.sendall(w.password_message(token))
    _read_until(s, w.ready_for_query(b"I"))
    s.sendall(w.query("create temp table landing(email text, card text)"))
    _until(s, READY)
    s.sendall(w.query("copy landing from stdin"))
    _until(s, b"G\x00")  # CopyInResponse
    rows = b"zed@example.com\t4111 1111 1111 1111\nyves@example.com\t5500 0000 0000 0004\n"
    s.sendall(
        w.message(w.COPY_DATA, rows[:20])
        + w.message(w.COPY_DATA, rows[20:])
        + w.message(ord("c"))
        + w.parse("", "select $1::text as x")
        + _bind_text("", "", b"kay@example.com")
        + w.execute("")
        + w.sync()
    )
    out = _until(s, b"SELECT 1")
    s.sendall(w.terminate())
    s.close()
    assert b"COPY 2" in out, out

    recordings = gateway.daemon.recordings
    summary = wait_for(lambda: _session_of(recordings, user), timeout=15)
    export = hoopd("replay", "export", str(recordings), summary["session_id"], "--format", "jsonl")
    assert export.returncode == 0, export.stderr
    recorded = export.stdout.encode()
    for line in export.stdout.splitlines():
        event = json.loads(line)
        data = event.get("data")
        if isinstance(data, dict) and "base64" in data:
            recorded += base64.b64decode(data["base64"])
    for secret in (b"zed@example.com", b"yves@example.com", b"kay@example.com", b"4111 1111"):
        assert secret not in recorded, secret
    assert b"[EMAIL" in recorded
