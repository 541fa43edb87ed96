"""Reference floor for the benchmark: a TLS-terminating byte relay (no HTTP,
no policy, no masking, no recording) in front of the fake API server, on
uvloop. It shows what two TLS legs and one extra Python process cost on this
machine, whatever the gateway does on top.

    python bench/kubernetes/tls_relay.py PORT UPSTREAM_PORT CA CERT KEY
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from typing import Any


class _Up(asyncio.Protocol):
    def __init__(self, down: _Down) -> None:
        self.down = down
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.down.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.down.transport.close()


class _Down(asyncio.Protocol):
    upstream: tuple[int, ssl.SSLContext]

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.pending: list[bytes] = []
        self.up: _Up | None = None
        self.task = asyncio.ensure_future(self.connect())

    async def connect(self) -> None:
        port, ctx = self.upstream
        _, self.up = await asyncio.get_running_loop().create_connection(
            lambda: _Up(self), "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
        )
        for data in self.pending:
            self.up.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.up is None:
            self.pending.append(data)
        else:
            self.up.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.up is not None:
            self.up.transport.close()


async def main(argv: list[str]) -> None:
    port, up_port, ca, cert, key = int(argv[0]), int(argv[1]), argv[2], argv[3], argv[4]
    _Down.upstream = (up_port, ssl.create_default_context(cafile=ca))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    await asyncio.get_running_loop().create_server(_Down, "127.0.0.1", port, ssl=server_ctx)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    asyncio.run(main(sys.argv[1:]))
