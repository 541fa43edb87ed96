"""Slow and stalled clients on an http listener (``options.header_timeout``,
``options.body_timeout``), with real sockets through ``hoopd serve``: a
client that trickles or stalls its request head or body is answered 408 and
closed, one that never finishes its TLS handshake is closed, and neither
holds the gateway (or the upstream) longer than the timeout."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoopd.identity.apikeys import hash_api_key
from tests.helpers import Daemon, free_port, read_until_closed_async
from tests.http.conftest import KEYS, Env
from tests.http.recordings import session_events, sessions_with

TOKEN = KEYS["alice"][0]


@pytest.fixture(scope="module")
def slow(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int, int]]:
    plain, tls = free_port(), free_port()
    options = {
        "header_timeout": "1s",
        "body_timeout": "1s",
        "idle_timeout": "5s",
        "inspect_body_bytes": 1024,
    }
    config = {
        "identity": {
            "api_keys": [{"name": "alice", "sha256": hash_api_key(TOKEN), "groups": ["dev"]}]
        },
        "connections": [
            {
                "name": name,
                "protocol": "http",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"url": f"http://127.0.0.1:{env.upstream.port}"},
                "allow_groups": ["dev"],
                "options": options,
                **({"tls": {"enabled": True}} if name == "slowtls" else {}),
            }
            for name, port in (("slow", plain), ("slowtls", tls))
        ],
    }
    daemon = Daemon(tmp_path_factory.mktemp("http-slow"), config).start()
    try:
        yield daemon, plain, tls
    finally:
        daemon.stop()


def _head(method: str = "GET", path: str = "/echo/slow", extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{extra}\r\n"
    ).encode()


def _metric(daemon: Daemon, family: str, reason: str) -> float:
    lines = [
        ln for ln in daemon.metrics().splitlines()
        if ln.startswith(family) and f'reason="{reason}"' in ln and 'connection="slow"' in ln
    ]  # fmt: skip
    return sum(float(ln.split()[-1]) for ln in lines)


async def test_a_stalled_or_trickled_head_is_answered_408(slow: tuple[Daemon, int, int]) -> None:
    """header_timeout (1 s here, 60 s by default) bounds the whole head, not
    the pause between its bytes: a head trickled a byte every 0.2 s gets 408
    Request Timeout after 1 s, as a head that stops halfway; a connection
    that sends nothing is closed without a word. Each counts as
    hoopd_auth_failures_total{reason="header_timeout"} (no one logged in)."""
    daemon, port, _ = slow
    before = _metric(daemon, "hoopd_auth_failures_total", "header_timeout")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data, took = await read_until_closed_async(reader)
    assert data == b"" and took < 3  # idle_timeout (5 s) is not what closed it
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def trickle() -> None:
        for byte in _head():
            writer.write(bytes([byte]))
            await asyncio.sleep(0.2)

    feeding = asyncio.ensure_future(trickle())
    data, took = await read_until_closed_async(reader)
    feeding.cancel()
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and took < 3
    assert b"Connection: close" in data and b'"error":"header_timeout"' in data
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_head()[:20])
    data, took = await read_until_closed_async(reader)
    assert data.startswith(b"HTTP/1.1 408 ") and took < 3
    writer.close()
    assert _metric(daemon, "hoopd_auth_failures_total", "header_timeout") >= before + 3
    assert "sent no complete request head within 1 s" in daemon.log()


async def test_the_next_head_on_a_kept_alive_connection(slow: tuple[Daemon, int, int]) -> None:
    """Between requests idle_timeout applies; from the first byte of the next
    head, header_timeout. The session ends with reason header_timeout."""
    daemon, port, _ = slow
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_head(path="/echo/kept-then-stalled"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    await asyncio.sleep(1.5)  # idle, longer than header_timeout: still open
    writer.write(b"GET /echo/never-fini")
    data, took = await read_until_closed_async(reader)
    assert data.startswith(b"HTTP/1.1 408 ") and took < 3
    writer.close()
    sid = sessions_with(daemon.recordings, "GET /echo/kept-then-stalled")[0]
    ends = session_events(daemon.recordings, sid, "session_end")
    assert ends and ends[0].reason == "header_timeout"


async def test_a_stalled_body_is_answered_408(slow: tuple[Daemon, int, int]) -> None:
    """body_timeout bounds the pause between body reads: a body that arrives
    slowly but steadily (a byte every 0.3 s for 3 s) goes through; one that
    stops before the decision (within inspect_body_bytes) gets 408."""
    daemon, port, _ = slow
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = b"x" * 10
    writer.write(_head("POST", "/echo/steady", f"Content-Length: {len(body)}\r\n"))
    for byte in body:
        await asyncio.sleep(0.3)
        writer.write(bytes([byte]))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")

    writer.write(_head("POST", "/echo/stalled", "Content-Length: 100\r\n") + b"half")
    data, took = await read_until_closed_async(reader)
    assert b"HTTP/1.1 408 Request Timeout\r\n" in data and took < 3
    assert b'"error":"body_timeout"' in data
    writer.close()
    sid = sessions_with(daemon.recordings, "POST /echo/steady")[
        0
    ]  # (the stalled one is never decided)
    ends = session_events(daemon.recordings, sid, "session_end")
    assert ends and ends[0].reason == "body_timeout"
    assert _metric(daemon, "hoopd_sessions_ended_total", "body_timeout") >= 1


async def test_a_body_stalled_while_streamed_upstream(
    slow: tuple[Daemon, int, int], env: Env
) -> None:
    """A body larger than inspect_body_bytes is streamed to the upstream as it
    comes: when the client stalls, the client gets 408 and the upstream
    connection is closed (the upstream sees its request cut short), not held."""
    daemon, port, _ = slow
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_head("POST", "/echo/streamed", "Content-Length: 100000\r\n") + b"y" * 5000)
    data, took = await read_until_closed_async(reader)
    assert data.startswith(b"HTTP/1.1 408 ") and took < 3
    writer.close()
    sid = sessions_with(daemon.recordings, "POST /echo/streamed")[0]
    ends = session_events(daemon.recordings, sid, "session_end")
    assert ends and ends[0].reason == "body_timeout"


async def test_a_stalled_tls_handshake_is_closed(slow: tuple[Daemon, int, int]) -> None:
    """On a TLS listener the handshake has header_timeout too (asyncio's
    default is 60 s whatever the options); then the first head does."""
    _, _, port = slow
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data, took = await read_until_closed_async(reader)
    assert data == b"" and took < 3
    writer.close()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(_head()[:10])
    data, took = await read_until_closed_async(reader)
    assert data.startswith(b"HTTP/1.1 408 ") and took < 3
    writer.close()


def test_header_and_body_timeouts_are_validated(tmp_path: Path) -> None:
    from tests.helpers import hoopd

    config = tmp_path / "hoopd.yaml"
    config.write_text(
        "connections:\n"
        "  - name: web\n    protocol: http\n    listen: 127.0.0.1:1\n    auth: none\n"
        "    upstream: {url: 'http://127.0.0.1:2'}\n"
        "    options: {header_timeout: 0s, body_timeout: soon}\n"
    )
    res = hoopd("check", "-c", str(config))
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "connections[0].options.header_timeout" in out or "options.header_timeout" in out
    assert "body_timeout" in out
