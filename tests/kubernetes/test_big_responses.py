"""Responses masked as one document are held whole: their size is capped
(``options.max_response_bytes``, after decompression), so an API server --
or whatever answers in its place -- cannot make the gateway hold gigabytes:
a gzip bomb (512 MiB of one letter in well under 1 MiB) is refused with a
502 Status, never passed unmasked, and the daemon's memory stays small."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.kubernetes import _http1, upstream
from tests.helpers import Daemon, free_port
from tests.support.transports import MemoryTransport

SECRET = b'{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s"},"data":{"password":"aHVudGVyMg=="}}'


def _gzip(parts: Iterator[bytes]) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(p) for p in parts]
    out.append(z.flush())
    return b"".join(out)


def _bomb(mib: int) -> bytes:
    block = b"A" * (1 << 20)
    head = b'{"kind":"SecretList","items":[{"kind":"Secret","data":{"a":"'
    return _gzip(iter([head, *(block for _ in range(mib)), b'"}}]}']))


class Upstream:
    """A plain-HTTP stand-in for the API server: any GET under /bomb gets
    the bomb, anything else one small gzipped Secret."""

    def __init__(self, bomb: bytes) -> None:
        self.bomb = bomb
        self.small = _gzip(iter([SECRET]))
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = self.bomb if b"/bomb" in head.split(b"\r\n", 1)[0] else self.small
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
                )
                writer.write(body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def _hwm_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def _get(port: int, token: str, path: str) -> tuple[int, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60)) as s:
        s.sendall(
            f"GET {path} HTTP/1.1\r\nHost: kube\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    from hoopd.identity.tokens import KEY_FILE_NAME, GatewayTokens, load_or_create_token_key

    work = tmp_path_factory.mktemp("kube-big")
    upstream = Upstream(_bomb(512))
    assert len(upstream.bomb) < 1 << 20
    (work / "sa-token").write_text("upstream-sa-token\n")
    port = free_port()
    conn = {
        "name": "kube",
        "protocol": "kubernetes",
        "listen": f"127.0.0.1:{port}",
        "allow_groups": ["dev"],
        "upstream": {"url": f"http://127.0.0.1:{upstream.port}", "token": f"file:{work / 'sa-token'}"},
        "masking": {"recognizers": {"personal": True}},
        "options": {"max_response_bytes": "8MiB"},
    }
    daemon = Daemon(work, {"connections": [conn]}).start()
    try:
        key = load_or_create_token_key(Path(daemon.config["gateway"]["data_dir"]) / KEY_FILE_NAME)
        token = GatewayTokens(key).issue("alice", ["dev"], 3600)
        daemon.port = port  # type: ignore[attr-defined]
        yield daemon, token
    finally:
        daemon.stop()
        upstream.close()


def test_gzip_bomb_refused_with_bounded_memory(kube: tuple[Daemon, str]) -> None:
    daemon, token = kube
    assert daemon.proc is not None
    port = daemon.port  # type: ignore[attr-defined]
    before = _hwm_mib(daemon.proc.pid)
    status, body = _get(port, token, "/api/v1/namespaces/bomb/secrets")
    grown = _hwm_mib(daemon.proc.pid) - before
    assert status == 502, body[:300]
    assert b"max_response_bytes" in body
    assert b"AAAAAAAAAAAAAAAA" not in body
    assert grown < 200, f"the daemon's peak memory grew by {grown} MiB for a refused response"
    assert "over max_response_bytes" in daemon.log()
    # the connection goes on serving; a small gzipped Secret is masked
    status, body = _get(port, token, "/api/v1/namespaces/default/secrets")
    assert status == 200, body[:300]
    doc = json.loads(body)
    assert doc["data"]["password"] != "aHVudGVyMg=="


def test_parser_decodes_in_pieces_and_stops_at_the_limit() -> None:
    """A read of compressed bytes is decoded a piece at a time; past the
    limit the parser stops (BodyTooLarge) instead of decoding the rest."""
    bomb = _bomb(64)
    parser = _http1.ResponseParser()
    parser.start("GET")
    parser.limit = 4 << 20
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    with pytest.raises(_http1.BodyTooLarge):
        parser.feed(head + bomb)
    parser = _http1.ResponseParser()
    parser.start("GET")
    events = parser.feed(head + bomb)
    pieces = [e for e in events if isinstance(e, bytes)]
    fits = all(len(p) <= _http1.PIECE for p in pieces)
    assert fits
    assert sum(map(len, pieces)) == (64 << 20) + 65


def test_a_streamed_compressed_body_is_decoded_as_it_is_read() -> None:
    """A watch (no size limit) whose API server sends a gzip bomb: one read
    of it does not decode whole; the gateway decodes a slice at a time while
    the reader keeps up, and holds the compressed rest while it does not."""

    async def go() -> None:
        conn = upstream.UpstreamConn()
        conn.connection_made(MemoryTransport())
        bomb = _bomb(256)
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
        task = asyncio.ensure_future(conn.request("GET", b"GET /watch HTTP/1.1\r\n\r\n", b""))
        await asyncio.sleep(0)
        conn.data_received(head + bomb)  # the whole bomb in one read
        resp = await task
        resp.unlimit()
        held = resp._size
        bounded = held <= upstream.HIGH_WATER + (8 << 20)
        assert bounded, f"{held >> 20} MiB decoded from one read"
        total = 0
        while chunk := await resp.readany():
            total += len(chunk)
            most = resp._size <= upstream.HIGH_WATER + (8 << 20)
            assert most
        assert total == (256 << 20) + 65
        conn.connection_lost(None)

    asyncio.run(go())
