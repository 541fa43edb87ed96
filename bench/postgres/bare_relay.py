#!/usr/bin/env python3
"""The floor of a Python proxy: a uvloop TCP relay that copies bytes both
ways and does nothing else (no parsing, no session, no recording).

    python bench/postgres/bare_relay.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.client.transport is not None
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    upstream_port = 0

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.up: _Upstream | None = None
        self.pending: list[bytes] = []  # until the upstream is connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        _, up = await loop.create_connection(
            lambda: _Upstream(self), "127.0.0.1", self.upstream_port
        )
        self.up = up
        for data in self.pending:
            assert up.transport is not None
            up.transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Client, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    _Client.upstream_port = int(sys.argv[2])
    uvloop.run(_serve(int(sys.argv[1])))
