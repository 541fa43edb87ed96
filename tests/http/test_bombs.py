"""An upstream's gzip bomb does not blow up the gateway's memory.

Each read of a compressed body (up to 256 KiB, and libuv does up to 32 per
loop turn) was decoded whole in one callback and then masked: one read of a
~1000:1 bomb is ~256 MiB decoded, and a 2 MB body decoding to 2 GiB took the
daemon to 852 MB peak RSS (336 MB with a client that did not read). The
decoder now gives ``DECODE_STEP`` at a time and the compressed rest waits
until the client took what went before (``UpstreamConnection._pump``).

The bomb here (``Upstream.bomb``): one e-mail line, then 1 GiB of one
repeated line, ~2.2 MB of gzip (~480:1). On the old code the daemon's peak
RSS grew by 391 MiB (client reading), 116 MiB (client stopped) and 172 MiB
(a 64 MiB JSON bomb); now by ~5 MiB.
"""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoopd.identity.apikeys import hash_api_key
from tests.helpers import Daemon, free_port
from tests.http.upstream import Upstream

KEY = "hak_bombed_0123456789abcdefghijklmnopqrstuvwxyzABCD"
BLOCKS = 1024  # of ~1 MiB
GROWTH = 64 << 20
"""Peak RSS the daemon may gain serving a bomb."""


class Gateway:
    def __init__(self, port: int, daemon: Daemon) -> None:
        self.port = port
        self.daemon = daemon
        self.base = 0

    def peak(self) -> int:
        """The daemon's peak RSS (VmHWM), in bytes."""
        assert self.daemon.proc is not None
        status = Path(f"/proc/{self.daemon.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    upstream = Upstream()
    port = free_port()
    config = {
        "identity": {"api_keys": [{"name": "bomb", "sha256": hash_api_key(KEY), "groups": ["dev"]}]},
        "connections": [
            {
                "name": "bombed",
                "protocol": "http",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"url": f"http://127.0.0.1:{upstream.port}"},
                "allow_groups": ["dev"],
                "masking": {"recognizers": {"personal": True}},
            }
        ],
    }
    daemon = Daemon(Path(tmp_path_factory.mktemp("bombed")), config).start()
    gw = Gateway(port, daemon)
    try:
        _read_all(_request(port, "/bomb?blocks=1"))  # warm up: the masker's first use
        gw.base = gw.peak()
        yield gw
    finally:
        daemon.stop()
        upstream.close()


def _request(port: int, path: str, version: str = "1.0") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    s.sendall(
        f"GET {path} HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    return s


def _head(s: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        got = s.recv(1 << 16)
        assert got, data
        data += got
    head, rest = data.split(b"\r\n\r\n", 1)
    return head, rest


def _read_all(s: socket.socket) -> tuple[bytes, bytes, int, int]:
    """(head, the body's first 4 KiB, its length, crc32 of the rest)."""
    with s:
        head, first = _head(s)
        while len(first) < 4096:
            got = s.recv(1 << 16)
            if not got:
                break
            first += got
        first, rest = first[:4096], first[4096:]
        crc = zlib.crc32(rest)
        size = len(first) + len(rest)
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := s.recv_into(view):
            crc = zlib.crc32(view[:n], crc)
            size += n
    return head, first, size, crc


def test_a_client_reads_a_bomb_whole(gateway: Gateway) -> None:
    head, first, size, crc = _read_all(_request(gateway.port, f"/bomb?blocks={BLOCKS}"))
    grown = gateway.peak() - gateway.base
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"content-encoding" not in head.lower()  # decoded to be masked
    # the e-mail masked, the rest as it was
    line, _, after = first.partition(b"\n")
    assert line.startswith(b"first line: mail ") and b"alice@example.com" not in line, line
    plain = Upstream.BOMB_BLOCK * BLOCKS
    assert size == len(line) + 1 + len(plain)
    expected = zlib.crc32(plain[len(after) :])
    assert (after, crc) == (plain[: len(after)], expected)
    assert grown < GROWTH, f"peak RSS grew by {grown >> 20} MiB"


def test_a_client_that_stops_reading(gateway: Gateway) -> None:
    with _request(gateway.port, f"/bomb?blocks={BLOCKS}&delay=0.3") as s:
        head, _ = _head(s)
        assert head.startswith(b"HTTP/1.1 200"), head
        time.sleep(1.5)  # the upstream sent everything; the gateway must not decode it all
        grown = gateway.peak() - gateway.base
    assert grown < GROWTH, f"peak RSS grew by {grown >> 20} MiB"


def test_a_json_bomb_falls_back_to_streaming(gateway: Gateway) -> None:
    """Buffered to be masked whole up to ``mask_json_max_bytes`` (8 MiB) of
    *decoded* bytes, then content-masked and streamed, head first."""
    blocks = 64
    with _request(gateway.port, f"/bomb?blocks={blocks}&type=application/json", "1.1") as s:
        head, data = _head(s)
        parts = [data]
        while got := s.recv(1 << 20):
            parts.append(got)
    assert gateway.peak() - gateway.base < GROWTH
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    body = _dechunk(b"".join(parts))
    line, _, after = body.partition(b"\n")
    assert line.startswith(b"first line: mail ") and b"alice@example.com" not in line, line
    assert after == Upstream.BOMB_BLOCK * blocks


def _dechunk(data: bytes) -> bytes:
    out, at = [], 0
    while True:
        end = data.index(b"\r\n", at)
        n = int(data[at:end], 16)
        if n == 0:
            return b"".join(out)
        out.append(data[end + 2 : end + 2 + n])
        at = end + 4 + n
