"""The sans-IO HTTP/1.1 parser: any split of the input gives the same events,
garbage only ever raises ProtocolError, smuggling shapes are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.http.h1 import (
    Data,
    EndOfMessage,
    Event,
    ProtocolError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    _Parser,
    chunk,
)
from tests.support.chunks import split as split_at


def normalize(events: list[object]) -> list[object]:
    """Merge adjacent Data events (splitting the input may split the data)."""
    out: list[object] = []
    for ev in events:
        if isinstance(ev, Data) and out and isinstance(out[-1], Data):
            out[-1] = Data(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def parse_all(parser: _Parser, pieces: list[bytes], *, requests: bool = True) -> list[object]:
    events: list[object] = []
    for piece in pieces:
        events += parser.feed(piece)
        while events and isinstance(events[-1], EndOfMessage) and parser.state == 7:
            if requests:
                parser.next_message()
                events += parser.feed(b"")
            else:
                break
    return normalize(events)


bodies = st.binary(max_size=300)


@st.composite
def request_stream(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
        path = "/" + draw(st.text("abc/%?=&", max_size=20))
        body = draw(bodies)
        use_chunked = draw(st.booleans())
        lf = draw(st.sampled_from(["\r\n", "\n"]))
        head = f"{method} {path} HTTP/1.1{lf}Host: x{lf}X-Any:  v a l {lf}"
        if body and use_chunked:
            sizes = draw(st.lists(st.integers(1, 50), max_size=5))
            encoded = b""
            rest = body
            for n in sizes:
                encoded += chunk(rest[:n])
                rest = rest[n:]
            encoded += chunk(rest) + b"0\r\nTrailer-X: y\r\n\r\n"
            parts.append((head + f"Transfer-Encoding: chunked{lf}{lf}").encode() + encoded)
        else:
            parts.append((head + f"Content-Length: {len(body)}{lf}{lf}").encode() + body)
    return b"".join(parts)


@given(request_stream(), st.lists(st.integers(0, 10_000), max_size=8))
def test_request_split_anywhere_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    whole = parse_all(RequestParser(), [data])
    pieces = parse_all(RequestParser(), split_at(data, cuts))
    assert pieces == whole
    assert sum(isinstance(e, RequestHead) for e in whole) == sum(
        isinstance(e, EndOfMessage) for e in whole
    )


@given(request_stream(), st.lists(st.integers(0, 10_000), max_size=8))
def test_request_head_cache_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    """A shared head cache (memoized heads, listener-wide) changes nothing:
    the stream twice through one cache, split anywhere, equals no cache."""
    cache: dict[bytes, RequestHead] = {}
    plain = parse_all(RequestParser(), [data])
    for _ in range(2):
        assert parse_all(RequestParser(cache=cache), split_at(data, cuts)) == plain


@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=5))
def test_garbage_never_crashes_the_request_parser(data: bytes, cuts: list[int]) -> None:
    parser = RequestParser(max_head=256)
    try:
        parse_all(parser, split_at(data, cuts))
        parser.feed_eof()
    except ProtocolError as exc:
        assert 400 <= exc.status < 600


@given(st.binary(max_size=400), st.sampled_from(["GET", "HEAD"]))
def test_garbage_never_crashes_the_response_parser(data: bytes, method: str) -> None:
    parser = ResponseParser(max_head=256)
    parser.expect(method)
    try:
        parser.feed(data)
        parser.feed_eof()
    except ProtocolError as exc:
        assert exc.status == 502


@st.composite
def response_stream(draw: st.DrawFn) -> tuple[bytes, str]:
    method = draw(st.sampled_from(["GET", "HEAD"]))
    body = draw(bodies)
    kind = draw(st.sampled_from(["length", "chunked", "close", "interim"]))
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
    if kind == "interim":
        head = b"HTTP/1.1 100 Continue\r\n\r\n" + head
        kind = "length"
    if kind == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + (body if method == "GET" else b""), method
    if kind == "chunked":
        data = chunk(body) + b"0\r\n\r\n" if method == "GET" else b""
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + data, method
    return head + b"\r\n" + (body if method == "GET" else b""), method


@given(response_stream(), st.lists(st.integers(0, 10_000), max_size=8))
def test_response_split_anywhere_gives_the_same_events(
    sample: tuple[bytes, str], cuts: list[int]
) -> None:
    data, method = sample

    def run(pieces: list[bytes]) -> list[object]:
        p = ResponseParser()
        p.expect(method)
        events: list[object] = []
        for piece in pieces:
            events += p.feed(piece)
        events += p.feed_eof()
        return normalize(events)

    assert run(split_at(data, cuts)) == run([data])


@given(st.lists(response_stream(), min_size=1, max_size=6), st.lists(st.integers(0, 10_000), max_size=8))
def test_response_head_cache_gives_the_same_events(
    samples: list[tuple[bytes, str]], cuts: list[int]
) -> None:
    """Responses (GET and HEAD, same head bytes) through one shared cache give
    the events an uncached parser gives."""
    cache: dict[bytes, ResponseHead] = {}

    def run(data: bytes, method: str, pieces: list[bytes], cache: dict[bytes, ResponseHead] | None) -> list[object]:
        p = ResponseParser(cache=cache)
        p.expect(method)
        events: list[object] = []
        for piece in pieces:
            events += p.feed(piece)
        events += p.feed_eof()
        return normalize(events)

    for data, method in samples:
        assert run(data, method, split_at(data, cuts), cache) == run(data, method, [data], None)


class _BufferedRequests(RequestParser):
    """Every byte through the buffer and the general loop (no ``_whole_head``)."""

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        while self._step(events):
            pass
        return events


class _BufferedResponses(ResponseParser):
    def feed(self, data: bytes) -> list[Event]:
        return _BufferedRequests.feed(self, data)  # type: ignore[arg-type]


def _trace(parser: _Parser, pieces: list[bytes], *, requests: bool) -> list[object]:
    """Events, state, buffered byte count and body bytes left after every
    piece (the parser's observable state between reads)."""
    out: list[object] = []
    for piece in pieces:
        try:
            events = parser.feed(piece)
        except ProtocolError as exc:
            out.append(("error", exc.message))
            return out
        out.append((events, parser.state, parser.buffered, parser._remaining))
        while requests and events and isinstance(events[-1], EndOfMessage) and parser.state == 7:
            parser.next_message()
            events = parser.feed(b"")
            out.append((events, parser.state, parser.buffered, parser._remaining))
    return out


@given(
    st.lists(request_stream(), min_size=1, max_size=3),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.binary(max_size=6),
)
def test_whole_head_reads_equal_the_buffered_loop(
    streams: list[bytes], cuts: list[int], junk: bytes
) -> None:
    """A read that starts a message takes the shortcut past the buffer
    (``_whole_head``): after every read, the same events and state as
    feeding everything through the buffer, cached heads or not."""
    for data in [b"".join(streams), b"".join(streams) + junk, b"\r\n" + b"".join(streams)]:
        pieces = split_at(data, cuts)
        caches: list[dict[bytes, RequestHead] | None] = [None, {}]
        for cache in caches:
            ref = _trace(_BufferedRequests(cache=None), pieces, requests=True)
            assert _trace(RequestParser(cache=cache), pieces, requests=True) == ref
            if cache is not None:  # a second pass hits the cache
                assert _trace(RequestParser(cache=cache), pieces, requests=True) == ref
    small = RequestParser(max_head=40)
    ref_small = _BufferedRequests(max_head=40)
    assert _trace(small, [streams[0]], requests=True) == _trace(ref_small, [streams[0]], requests=True)


@given(
    st.lists(response_stream(), min_size=1, max_size=4),
    st.lists(st.integers(0, 10_000), max_size=8),
    st.binary(max_size=6),
)
def test_whole_head_responses_equal_the_buffered_loop(
    samples: list[tuple[bytes, str]], cuts: list[int], extra: bytes
) -> None:
    cache: dict[bytes, ResponseHead] = {}
    for data, method in samples:
        for tail in (b"", extra):
            pieces = split_at(data + tail, cuts)
            ref = _BufferedResponses()
            ref.expect(method)
            want = _trace(ref, pieces, requests=False)
            for c in (None, cache, cache):
                p = ResponseParser(cache=c)
                p.expect(method)
                assert _trace(p, pieces, requests=False) == want


def test_response_framing() -> None:
    p = ResponseParser()
    p.expect("HEAD")
    ev = p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
    assert isinstance(ev[0], ResponseHead) and isinstance(ev[1], EndOfMessage)
    p.expect("GET")
    ev = p.feed(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n")
    assert isinstance(ev[1], EndOfMessage)
    p.expect("GET")
    ev = p.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert ev[0].framing == "close" and ev[1] == Data(b"abc")  # type: ignore[union-attr]
    assert isinstance(p.feed_eof()[0], EndOfMessage)


def test_switching_protocols_hands_over_the_rest() -> None:
    p = ResponseParser()
    p.expect("GET")
    ev = p.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi")
    assert ev[0].status == 101 and isinstance(ev[1], EndOfMessage)  # type: ignore[union-attr]
    assert p.take_buffer() == b"\x81\x02hi"


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n",  # '\u00b2'.isdigit()
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\xb9\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_smuggling_shapes_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        RequestParser().feed(raw)


@pytest.mark.parametrize("value", [b"\xb2", b"1\xb3"])
def test_unicode_digit_lengths_are_protocol_errors_in_responses(value: bytes) -> None:
    parser = ResponseParser()
    parser.expect("GET")
    with pytest.raises(ProtocolError) as info:
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: " + value + b"\r\n\r\n")
    assert info.value.status == 502


def test_header_limit() -> None:
    with pytest.raises(ProtocolError) as info:
        RequestParser(max_head=100).feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 200)
    assert info.value.status == 431


def test_http10_keep_alive_rules() -> None:
    ev = RequestParser().feed(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(ev[0], RequestHead) and not ev[0].keep_alive
    ev = RequestParser().feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert isinstance(ev[0], RequestHead) and ev[0].keep_alive
