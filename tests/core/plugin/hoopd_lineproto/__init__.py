"""A third-party protocol, installed only through an entry point, as an
outside package would be: every line a client sends is one command.

The first line is ``AUTH <credential>``. Each later line is scored (lines
starting with ``rm`` are high risk), judged by the gateway's policy — held
for a reviewer when policy says so — and either forwarded to the upstream
line server or answered with ``denied: <reason>``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict

from hoopd.configtypes import HostPort, Port
from hoopd.gateway import AuthFailed, SessionRefused
from hoopd.handler import ProtocolHandler
from hoopd.model import CommandKind, Stream, Verdict
from hoopd.policy import Assessment


class LineUpstream(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str
    port: Port


def assess(line: str) -> Assessment:
    if line.startswith("rm"):
        return Assessment(80, frozenset({"rm"}), ("removes files",))
    return Assessment(0, frozenset({"read"}))


class LineHandler(ProtocolHandler):
    name = "line"
    description = "test protocol: one command per line"
    supports_commands = True
    upstream_model = LineUpstream

    def __init__(self, connection: Any, gateway: Any) -> None:
        super().__init__(connection, gateway)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        listen = self.connection.listen
        self._server = await asyncio.start_server(self._serve, listen.host, listen.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def bound_address(self) -> HostPort | None:
        return self.connection.listen

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._session(reader, writer)
        finally:
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn, gateway = self.connection, self.gateway
        hello = (await reader.readline()).decode().strip()
        if not hello.startswith("AUTH "):
            writer.write(b"error: say AUTH <token> first\n")
            return
        try:
            identity = await gateway.authenticate(conn, hello[5:])
            session = await gateway.open_session(conn, identity, "test")
        except (AuthFailed, SessionRefused) as exc:
            writer.write(f"error: {exc}\n".encode())
            return
        session.set_terminator(lambda reason, message: writer.close())
        writer.write(b"ok\n")
        up_reader, up_writer = await asyncio.open_connection(
            conn.upstream.host, conn.upstream.port
        )
        try:
            while line := (await reader.readline()).decode().rstrip("\n"):
                cmd = session.command(CommandKind.EXEC, line)

                def held(approval_id: str, message: str) -> None:
                    writer.write(f"held {approval_id}\n".encode())

                decision = await session.decide(cmd, assess(line), on_held=held)
                if decision.verdict is Verdict.DENY:
                    writer.write(f"denied: {decision.reasons[-1]}\n".encode())
                    session.result(cmd, "denied")
                    continue
                up_writer.write(line.encode() + b"\n")
                reply = await up_reader.readline()
                session.upstream_data(reply, Stream.STDOUT, command_seq=cmd.seq)
                session.result(cmd, "ok")
                writer.write(reply)
                await writer.drain()
        finally:
            up_writer.close()
            session.end("client_closed")
