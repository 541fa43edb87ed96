"""The X11 connection-setup cookie swap (sans-IO part of X11 forwarding)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from protocols.ssh.server import X11Request, _x11_refusal, swap_x11_cookie

PROTO = b"MIT-MAGIC-COOKIE-1"
OURS = bytes(range(16))
CLIENTS = bytes(range(100, 116))


def setup(order: bytes, proto: bytes, cookie: bytes, rest: bytes = b"") -> bytes:
    fmt = ">" if order == b"B" else "<"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return order + b"\0" + struct.pack(f"{fmt}HHHHH", 11, 0, len(proto), len(cookie), 0) + pad(proto) + pad(cookie) + rest


COOKIES = {OURS: X11Request(PROTO, CLIENTS, 0)}


@pytest.mark.parametrize("order", [b"l", b"B"])
def test_swaps_the_gateway_cookie_for_the_clients(order: bytes) -> None:
    data = setup(order, PROTO, OURS, b"first-request")
    assert swap_x11_cookie(data, COOKIES) == setup(order, PROTO, CLIENTS, b"first-request")
    for cut in (0, 1, 11, 12, 30, len(setup(order, PROTO, OURS)) - 1):
        assert swap_x11_cookie(data[:cut], COOKIES) is None  # not complete yet


def test_odd_lengths_keep_their_padding() -> None:
    proto, ours, theirs = b"XYZ", b"12345", b"abcde"
    data = setup(b"l", proto, ours, b"R")
    assert swap_x11_cookie(data, {ours: X11Request(proto, theirs, 0)}) == setup(b"l", proto, theirs, b"R")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (setup(b"l", PROTO, CLIENTS), "does not match"),  # the client's own cookie: never handed to the target
        (setup(b"l", PROTO, bytes(16)), "does not match"),
        (setup(b"l", b"XDM-AUTHORIZATION-1", OURS), "does not match"),
        (setup(b"l", PROTO, OURS[:8]), "does not match"),
        (setup(b"l", b"", b""), "does not match"),
        (b"GET / HTTP/1.1\r\n", "not an X11"),
        (b"l\0\x0b\0\0\0\xff\xff\0\0\0\0", "too long"),
    ],
)
def test_anything_else_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        swap_x11_cookie(data, COOKIES)


def test_refusal_is_an_x11_failed_reply() -> None:
    reply = _x11_refusal(b"l", b"no\n")
    assert reply[0] == 0 and reply[1] == 3 and struct.unpack("<HHH", reply[2:8]) == (11, 0, 1)
    assert reply[8:] == b"no\n\0"
    assert struct.unpack(">HHH", _x11_refusal(b"B", b"no\n")[2:8]) == (11, 0, 1)


class _Chan:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


class _Session:
    def __init__(self) -> None:
        self.results: list[tuple[str, str]] = []

    def result(self, cmd: object, status: str, error: str = "", **_: object) -> None:
        self.results.append((status, error))

    def client_data(self, data: bytes, record: bool = True) -> None:
        pass

    def upstream_data(self, data: bytes, *args: object, **kwargs: object) -> None:
        pass


def _relay() -> tuple[Any, _Session]:
    from types import SimpleNamespace

    from protocols.ssh.server import _X11Forwarding, _X11Relay

    session = _Session()
    server: Any = SimpleNamespace(session=session)
    x11 = _X11Forwarding(server)
    x11.cookies[OURS] = X11Request(PROTO, CLIENTS, 0)
    relay = _X11Relay(x11)
    relay.cmd = SimpleNamespace(seq=7)  # type: ignore[assignment]
    relay.open = True
    relay.client.chan, relay.upstream.chan = _Chan(), _Chan()
    return relay, session


def test_relay_passes_the_setup_on_with_the_clients_cookie_once_complete() -> None:
    relay, session = _relay()
    data = setup(b"l", PROTO, OURS, b"req")
    relay.data(1, data[:20])
    assert relay.client.chan.written == b""  # held until the cookie is complete
    relay.data(1, data[20:])
    relay.data(1, b"more")
    relay.data(0, b"reply")
    assert relay.client.chan.written == setup(b"l", PROTO, CLIENTS, b"req") + b"more"
    assert relay.upstream.chan.written == b"reply"
    relay.close()
    assert session.results == [(f"closed in=5 out={len(data) + 4}", "")]


def test_relay_refuses_a_wrong_cookie_with_an_x11_reply() -> None:
    relay, session = _relay()
    relay.data(1, setup(b"B", PROTO, bytes(16), b"req"))
    assert relay.client.chan.written == b""
    assert relay.upstream.chan.written[:1] == b"\0" and b"does not match" in relay.upstream.chan.written
    assert relay.client.chan.closed and relay.upstream.chan.closed
    relay.data(1, b"late")
    assert relay.client.chan.written == b""
    assert session.results == [("refused", "X11 authorization does not match")]
