"""A response in a transfer coding other than ``chunked`` (``Transfer-Encoding:
gzip, chunked``, or ``gzip`` alone), which the gateway never asks for: the
parser took only the chunked framing and dropped the field as hop-by-hop,
so the stream masker saw compressed bytes, matched nothing, and the client
got the gzip stream of a text body with its e-mail address and badge number
(``gunzip`` shows them). Such a body cannot be masked: with masking on it
is refused with 502, whatever ``options.unmaskable`` says, as an unknown
``Content-Encoding`` is."""

from __future__ import annotations

import contextlib
import zlib

import pytest

from tests.http.conftest import Env, raw_request

SECRETS = (b"alice@example.com", b"EMP-123456")


def _get(env: Env, conn: str, path: str) -> bytes:
    return raw_request(env, "GET", path, conn=conn)


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2 :]
    return out


def _plain(data: bytes) -> bytes:
    """What a client that undoes every coding it can sees in the body."""
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    with_gzip = body
    with contextlib.suppress(zlib.error):
        with_gzip = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
    return head + b"\r\n\r\n" + body + with_gzip


@pytest.mark.parametrize("te", ["gzip,%20chunked", "gzip"])
def test_transfer_coded_body_is_refused_when_masking(env: Env, te: str) -> None:
    data = _get(env, "api", f"/te-gzip?te={te}")
    seen = _plain(data)
    assert not any(s in seen for s in SECRETS), data
    assert data.startswith(b"HTTP/1.1 502"), data
    assert b"unmaskable" in data
