"""server.FastConn's own parsing and serialisation (the raw fast path), without sockets."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from protocols.kubernetes.server import FastConn, RawStream
from tests.support.transports import MemoryTransport


def conn() -> FastConn:
    proxy: Any = SimpleNamespace(options=SimpleNamespace(max_body=1000))
    c = FastConn(proxy, lambda: None)
    c.transport = MemoryTransport()
    return c


def parse(head: str) -> Any:
    data = head.replace("\n", "\r\n").encode() + b"\r\n\r\n"
    return conn()._parse(data, data.find(b"\r\n\r\n"))


def test_plain_heads_take_the_fast_path() -> None:
    got = parse("GET /api/v1/pods?limit=5 HTTP/1.1\nHost: x\nAccept:  application/json \nContent-Length: 12")
    assert got is not None
    method, target, headers, _, length = got
    assert (method, target, length) == ("GET", "/api/v1/pods?limit=5", 12)
    assert headers["accept"] == "application/json"


@pytest.mark.parametrize(
    "head",
    [
        "HEAD /version HTTP/1.1\nHost: x",
        "GET /version HTTP/1.0\nHost: x",
        "GET http://x/version HTTP/1.1\nHost: x",
        "GET /api/v1/pods/web-0/exec HTTP/1.1\nUpgrade: websocket\nConnection: Upgrade",
        "POST /api/v1/pods HTTP/1.1\nTransfer-Encoding: chunked",
        "POST /api/v1/pods HTTP/1.1\nExpect: 100-continue\nContent-Length: 3",
        "GET /version HTTP/1.1\nConnection: close",
        "GET /version HTTP/1.1\nContent-Length: 1\nContent-Length: 1",
        "GET /version HTTP/1.1\nContent-Length: ²",
        "POST /api/v1/pods HTTP/1.1\nContent-Length: 1001",
        "GET /version HTTP/1.1\nX-A:\tb",
        "GET /version HTTP/1.1\nX A: b",
        "GET /version HTTP/1.1\n folded",
        "GET /vérsion HTTP/1.1\nHost: x",
    ],
)
def test_anything_else_is_left_to_aiohttp(head: str) -> None:
    assert parse(head) is None


def test_response_serialised_like_aiohttp() -> None:
    c = conn()
    assert c._write(web.Response(status=200, body=b"{}", headers={"Content-Type": "application/json"}))
    head, _, body = bytes(c.transport.data).partition(b"\r\n\r\n")  # type: ignore[union-attr]
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK" and body == b"{}"
    assert {"Content-Type: application/json", "Content-Length: 2"} <= set(lines)
    assert any(ln.startswith("Date: ") for ln in lines) and any(ln.startswith("Server: ") for ln in lines)
    c = conn()
    c._write(web.Response(status=304, headers={"Content-Length": "5"}))
    assert b"Content-Length" not in bytes(c.transport.data)  # type: ignore[union-attr]


def test_raw_stream_is_chunked() -> None:
    async def go() -> bytes:
        c = conn()
        stream = RawStream(c, 200, None, CIMultiDict({"Content-Type": "text/plain", "Content-Length": "9"}))
        await stream.write(b"hello ")
        await stream.write(b"")
        await stream.write(b"world")
        await stream.write_eof()
        assert stream.complete
        return bytes(c.transport.data)  # type: ignore[union-attr]

    data = asyncio.run(go())
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head
    assert b"Content-Length" not in head
    assert body == b"6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
