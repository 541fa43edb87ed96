"""The upstream connection gives the loop back after costly reads.

libuv reads a readable socket up to 32 times in one loop iteration; the
relay masks each read synchronously, so a database answering with rows dense
in masked values held every other session of the listener for seconds
(``bench/postgres/stall_results.py --shapes many-rows``: an 8 MiB result of
e-mail-dense rows, 13 s of ping stall before, ~2.8 s with this on a loaded
2-core machine, where one 256 KB read costs ~0.24 s). ``UpstreamProtocol``
pauses its transport once its reads took ``SLICE_SECONDS`` and resumes it
when the loop has gone round.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop

from hoopd.aio import SLICE_SECONDS
from protocols.postgres import _upstream
from protocols.postgres._upstream import UpstreamProtocol
from tests.support.transports import ReadingSwitches as FakeTransport


def _busy(seconds: float) -> Any:
    def on_data(data: bytes) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return on_data


def _run(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_costly_read_pauses_until_the_loop_went_round() -> None:
    async def main() -> list[str]:
        proto = UpstreamProtocol()
        transport = FakeTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        proto.on_data = _busy(SLICE_SECONDS * 1.5)
        proto.data_received(b"x")
        paused = list(transport.calls)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return [*paused, "|", *transport.calls]

    assert _run(main()) == ["pause", "|", "pause", "resume"]


def test_cheap_reads_pause_once_their_time_adds_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that only the reads move: a busy machine that pre-empts the
    # test between reads must not count (it made this test flaky).
    clock = [0.0]
    monkeypatch.setattr(_upstream, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def costly_read(data: bytes) -> None:
        clock[0] += SLICE_SECONDS / 4.5

    async def main() -> tuple[list[str], int]:
        proto = UpstreamProtocol()
        transport = FakeTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        proto.on_data = costly_read
        n = 0
        while not transport.calls and n < 100:
            proto.data_received(b"x")
            n += 1
        return list(transport.calls), n

    calls, n = _run(main())
    assert calls == ["pause"]
    assert n == 5


def test_other_pauses_are_kept() -> None:
    """A pause for another reason (client buffer full) outlives the slice's."""

    async def main() -> list[str]:
        proto = UpstreamProtocol()
        transport = FakeTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        proto.on_data = _busy(SLICE_SECONDS * 1.5)
        proto.data_received(b"x")
        proto.pause("client_buffer")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        calls = list(transport.calls)
        proto.resume("client_buffer")
        return [*calls, "|", *transport.calls[len(calls) :]]

    assert _run(main()) == ["pause", "|", "resume"]


def test_closing_transport_is_left_alone() -> None:
    async def main() -> list[str]:
        proto = UpstreamProtocol()
        transport = FakeTransport()
        transport.closing = True
        proto.connection_made(transport)  # type: ignore[arg-type]
        proto.on_data = _busy(SLICE_SECONDS * 1.5)
        proto.data_received(b"x")
        await asyncio.sleep(0)
        return transport.calls

    assert _run(main()) == []
