"""The upstream HTTP/1.1 response parser (sans-IO): split anywhere, garbage never crashes."""

from __future__ import annotations

import gzip

from hypothesis import given
from hypothesis import strategies as st

from protocols.kubernetes._http1 import END, Head, ParseError, ResponseParser
from tests.support.chunks import split


def parse(chunks: list[bytes], method: str = "GET", eof: bool = False) -> tuple[Head | None, bytes, bool]:
    p = ResponseParser()
    p.start(method)
    head = None
    body = b""
    ended = False
    events = []
    for c in chunks:
        events += p.feed(c)
    if eof:
        events += p.feed_eof()
    for ev in events:
        if isinstance(ev, Head):
            head = ev
        elif ev is END:
            ended = True
        else:
            assert isinstance(ev, bytes)
            body += ev
    return head, body, ended


LENGTH = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"kind":"X"}\n'
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n world!\r\n0\r\nX-Trailer: 1\r\n\r\n"
)
CLOSE = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nlog line 1\nlog line 2\n"
GZIP = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"


@given(st.lists(st.integers(0, 400), max_size=8))
def test_split_anywhere_same_result(cuts: list[int]) -> None:
    z = gzip.compress(b'{"a":"b"}')
    for raw, eof, body in (
        (LENGTH, False, b'{"kind":"X"}\n'),
        (CHUNKED, False, b"hello world!"),
        (CLOSE, True, b"log line 1\nlog line 2\n"),
        ((GZIP % len(z)) + z, False, b'{"a":"b"}'),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + LENGTH, False, b'{"kind":"X"}\n'),
    ):
        head, got, ended = parse(split(raw, cuts), eof=eof)
        assert head is not None and head.status == 200
        assert got == body and ended


def test_head_fields_and_keep_alive() -> None:
    head, body, ended = parse([LENGTH])
    assert head is not None and head.get("content-type") == "application/json" and head.keep_alive
    assert head.length == 13 and not head.chunked
    head, _, ended = parse([b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"])
    assert head is not None and not head.keep_alive and ended
    head, body, ended = parse([b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"], method="HEAD")
    assert ended and body == b""


def test_truncated_and_bad_input() -> None:
    p = ResponseParser()
    p.start("GET")
    p.feed(LENGTH[:-3])
    try:
        p.feed_eof()
    except ParseError:
        pass
    else:
        raise AssertionError("truncated body accepted")
    for bad in (
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"SSH-2.0-x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n",  # '\u00b2'.isdigit()
        b"HTTP/1.1 2\xb90 OK\r\n\r\n",
    ):
        p = ResponseParser()
        p.start("GET")
        try:
            p.feed(bad)
        except ParseError:
            continue
        raise AssertionError(f"accepted {bad!r}")


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=4))
def test_garbage_never_crashes(data: bytes, cuts: list[int]) -> None:
    p = ResponseParser()
    p.start("GET")
    try:
        for c in split(b"HTTP/1.1 200 OK\r\n" + data, cuts):
            p.feed(c)
        p.feed_eof()
    except ParseError:
        pass
