"""An upstream connection gives the loop back after costly reads.

libuv reads a readable socket up to 32 times in one loop iteration and each
read's body is masked there, so one response dense with masked values held
every other session of the listener (``bench/http/stall_http.py``: 4 MiB of
text/plain e-mails, ~1 s of ping stall on a loaded 2-core machine before,
~0.15 s after). ``UpstreamConnection`` stops reading once its reads took
``SLICE_SECONDS`` and starts again when the loop has gone round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop

from protocols.http import exchange
from protocols.http.exchange import UpstreamConnection
from tests.support.transports import ReadingSwitches as FakeTransport


def _connection(cost: float | Callable[[], None]) -> tuple[UpstreamConnection, FakeTransport, list[bytes]]:
    """``cost``: seconds each read takes (a busy wait), or what it does."""
    got: list[bytes] = []

    def tunnel_out(data: bytes) -> None:
        got.append(data)
        if callable(cost):
            cost()
            return
        end = time.perf_counter() + cost
        while time.perf_counter() < end:
            pass

    proxy = SimpleNamespace(
        loop=asyncio.get_running_loop(),
        options=SimpleNamespace(max_header_bytes=65536),
        response_heads={},
    )
    client: Any = SimpleNamespace(proxy=proxy, tunnel_out=tunnel_out)
    conn = UpstreamConnection(client)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.tunnel = True  # the simplest path through data_received
    return conn, transport, got


def _run(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_costly_read_pauses_until_the_loop_went_round() -> None:
    async def main() -> tuple[list[str], list[str], list[bytes]]:
        conn, transport, got = _connection(exchange.SLICE_SECONDS * 1.5)
        conn.data_received(b"abc")
        paused = list(transport.calls)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return paused, transport.calls, got

    paused, calls, got = _run(main())
    assert paused == ["pause"]
    assert calls == ["pause", "resume"]
    assert got == [b"abc"]


def test_cheap_reads_pause_once_their_time_adds_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that only the reads move: a busy machine that pre-empts the
    # test between reads must not count (it made this test flaky).
    clock = [0.0]
    monkeypatch.setattr(exchange, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    async def main() -> tuple[list[str], int]:
        def costly_read() -> None:
            clock[0] += exchange.SLICE_SECONDS / 4.5

        conn, transport, _ = _connection(costly_read)
        n = 0
        while not transport.calls and n < 100:
            conn.data_received(b"x")
            n += 1
        return list(transport.calls), n

    calls, n = _run(main())
    assert calls == ["pause"]
    assert n == 5


def test_other_pauses_are_kept() -> None:
    async def main() -> tuple[list[str], list[str]]:
        conn, transport, _ = _connection(exchange.SLICE_SECONDS * 1.5)
        conn.data_received(b"x")
        conn.pause("tunnel")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        before = list(transport.calls)
        conn.resume("tunnel")
        return before, transport.calls

    before, after = _run(main())
    assert before == ["pause"]
    assert after == ["pause", "resume"]
