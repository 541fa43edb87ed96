"""A JSON response over ``mask_json_max_bytes`` is streamed, head first.

The gateway defers a JSON response's head while it buffers the body to mask
it as a document. Past the cap the body falls back to content masking and
is streamed, but the masked bytes went out before the deferred head, which
followed them at the end with the Content-Length of the last piece only:
curl said "Received HTTP/0.9", aiohttp failed to parse the response. Found
with ``bench/http/stall_http.py`` (8 MiB of JSON e-mails).
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hoopd.identity.apikeys import hash_api_key
from tests.helpers import Daemon, free_port
from tests.http.upstream import Upstream

KEY = "hak_capped_0123456789abcdefghijklmnopqrstuvwxyzABCD"
BLOCK = (b"0123456789abcdef" * 4096)[:65536]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    upstream = Upstream()
    port = free_port()
    config = {
        "identity": {"api_keys": [{"name": "cap", "sha256": hash_api_key(KEY), "groups": ["dev"]}]},
        "connections": [
            {
                "name": "capped",
                "protocol": "http",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"url": f"http://127.0.0.1:{upstream.port}"},
                "allow_groups": ["dev"],
                "masking": {"recognizers": {"personal": True}},
                "options": {"mask_json_max_bytes": "64KiB"},
            }
        ],
    }
    daemon = Daemon(Path(tmp_path_factory.mktemp("capped")), config).start()
    try:
        yield port
    finally:
        daemon.stop()


def _get(port: int, path: str, version: str = "1.1") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            f"GET {path} HTTP/{version}\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    return data


def _dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, body = body.split(b"\r\n", 1)
        n = int(size_line, 16)
        if n == 0:
            return out
        out += body[:n]
        body = body[n + 2 :]


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_json_over_the_cap_is_streamed_head_first(gateway: int, version: str) -> None:
    n = 1024 * 1024
    data = _get(gateway, f"/big?n={n}&type=application/json", version)
    assert data.startswith(b"HTTP/1.1 200"), data[:80]
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"HTTP/1." not in body
    if version == "1.1":
        assert b"transfer-encoding: chunked" in head.lower()
        body = _dechunk(body)
    else:  # ends with the connection
        assert b"transfer-encoding" not in head.lower()
        assert b"content-length" not in head.lower()
    assert len(body) == n
    assert hashlib.sha256(body).digest() == hashlib.sha256(BLOCK * (n // len(BLOCK))).digest()


def test_json_under_the_cap_keeps_its_length(gateway: int) -> None:
    data = _get(gateway, "/big?n=4096&type=application/json")
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"content-length: 4096" in head.lower()
    assert body == BLOCK[:4096]
