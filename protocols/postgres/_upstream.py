"""The gateway's own connection to the database: TLS per ``sslmode``, login
with the connection's stored credentials (SCRAM-SHA-256, md5, cleartext),
and CancelRequest forwarding.

During login the protocol object buffers what it reads and the login
coroutine consumes it; afterwards ``data_received`` hands every chunk to the
relay (``on_data``) synchronously.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hoopd.aio import ReadTime

from . import _messages as m
from . import _wire as w

HANDSHAKE_LIMIT = 1024 * 1024


class UpstreamError(Exception):
    """Could not connect or log in. ``sqlstate`` and ``fields`` carry the
    server's error when there was one (logged, not shown to the client)."""

    def __init__(self, message: str, sqlstate: str = "08006", fields: dict[str, str] | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.fields = fields or {}


@dataclass(slots=True)
class LoginResult:
    parameters: list[tuple[str, str]] = field(default_factory=list)
    notices: list[bytes] = field(default_factory=list)
    backend_pid: int = 0
    backend_key: int = 0
    status: bytes = b"I"
    tls: bool = False


def client_ssl_context(sslmode: str, ca: Any, host: str) -> ssl.SSLContext:
    if sslmode == "verify-full":
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        ctx.check_hostname = True
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if ca is not None:
        # like libpq: with a root certificate, "require" verifies the chain
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None
        self.closed = False
        self.on_data: Callable[[bytes], None] | None = None
        self.on_lost: Callable[[Exception | None], None] | None = None
        self.on_pause: Callable[[bool], None] | None = None
        self._pauses: set[str] = set()
        self._reads = ReadTime()

    # -- asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.on_data is not None:
            started = time.perf_counter()
            self.on_data(data)
            if self._reads.spent(time.perf_counter() - started):
                self._give_way()
            return
        self._buf += data
        if len(self._buf) > HANDSHAKE_LIMIT:
            self._lost = UpstreamError("the server sent too much data during login")
            if self.transport is not None:
                self.transport.abort()
        self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._lost is None:
            self._lost = exc or ConnectionResetError("the server closed the connection")
        self._wake()
        if self.on_lost is not None:
            self.on_lost(exc)

    def pause_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(True)

    def resume_writing(self) -> None:
        if self.on_pause is not None:
            self.on_pause(False)

    def pause(self, why: str) -> None:
        if not self._pauses and self.transport is not None:
            self.transport.pause_reading()
        self._pauses.add(why)

    def resume(self, why: str) -> None:
        self._pauses.discard(why)
        if not self._pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _give_way(self) -> None:
        """Stop reading until the loop has run what else is ready: the
        bytes are relayed in the same order, the other sessions get a turn."""
        transport = self.transport
        if transport is None or transport.is_closing() or "slice" in self._pauses:
            return
        self.pause("slice")
        asyncio.get_running_loop().call_soon(self.resume, "slice")

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- handshake reads ------------------------------------------------------------
    async def _more(self) -> None:
        if self._lost is not None:
            raise UpstreamError(f"connection to the server lost: {self._lost}")
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter
        self._waiter = None

    async def read_byte(self) -> int:
        while not self._buf:
            await self._more()
        b = self._buf[0]
        del self._buf[0]
        return b

    async def read_message(self) -> tuple[int, bytes]:
        while True:
            if len(self._buf) >= 5:
                t = self._buf[0]
                (length,) = struct.unpack_from("!i", self._buf, 1)
                if t not in w.BACKEND_TYPES or length < 4 or length > HANDSHAKE_LIMIT:
                    raise UpstreamError("the server does not speak the PostgreSQL protocol")
                if len(self._buf) >= 1 + length:
                    msg = bytes(self._buf[: 1 + length])
                    del self._buf[: 1 + length]
                    return t, msg
            await self._more()

    def take_buffer(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data


async def connect(
    upstream: Any,
    startup: dict[str, str],
) -> tuple[UpstreamProtocol, LoginResult]:
    """Open and log in. Raises UpstreamError (or TimeoutError/OSError)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_connection(UpstreamProtocol, upstream.host, upstream.port)
    try:
        result = await _login(proto, upstream, startup)
    except BaseException:
        transport.abort()
        raise
    return proto, result


async def _login(proto: UpstreamProtocol, upstream: Any, startup: dict[str, str]) -> LoginResult:
    loop = asyncio.get_running_loop()
    result = LoginResult()
    assert proto.transport is not None
    if upstream.sslmode != "disable":
        proto.transport.write(w.ssl_request())
        answer = await proto.read_byte()
        if answer == ord("S"):
            if proto._buf:
                raise UpstreamError("the server sent unencrypted data after accepting TLS")
            ctx = client_ssl_context(upstream.sslmode, upstream.ca, upstream.host)
            server_hostname = upstream.host if upstream.sslmode == "verify-full" else None
            try:
                new = await loop.start_tls(
                    proto.transport, proto, ctx, server_hostname=server_hostname
                )
            except ssl.SSLError as exc:
                raise UpstreamError(f"TLS with the server failed: {exc}") from None
            assert new is not None
            proto.transport = new
            result.tls = True
        elif answer == ord("N"):
            if upstream.sslmode in ("require", "verify-full"):
                raise UpstreamError(f"the server does not support TLS (sslmode={upstream.sslmode})")
        else:
            raise UpstreamError("unexpected answer to SSLRequest")
    assert proto.transport is not None
    proto.transport.write(w.startup_message(startup))
    password = upstream.password.reveal() if upstream.password is not None else ""
    scram: Any = None
    while True:
        t, msg = await proto.read_message()
        if t == w.AUTH:
            code = m.auth_code(msg, 0, len(msg))
            if code == 0:
                continue
            if code == 3:
                proto.transport.write(w.password_message(password))
            elif code == 5:
                salt = msg[9:13]
                inner = hashlib.md5((password + upstream.user).encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + salt).hexdigest()
                proto.transport.write(w.password_message("md5" + outer))
            elif code == 10:
                mechs = [x.decode() for x in msg[9:].split(b"\0") if x]
                if "SCRAM-SHA-256" not in mechs:
                    raise UpstreamError(f"no supported SASL mechanism in {mechs}")
                from scramp import ScramClient

                scram = ScramClient(["SCRAM-SHA-256"], upstream.user, password)
                first = scram.get_client_first().encode()
                proto.transport.write(w.sasl_initial_response("SCRAM-SHA-256", first))
            elif code == 11:
                if scram is None:
                    raise UpstreamError("unexpected SASL continue")
                try:
                    scram.set_server_first(msg[9:].decode())
                    final = scram.get_client_final().encode()
                except Exception as exc:
                    raise UpstreamError(f"SCRAM exchange failed: {exc}") from None
                proto.transport.write(w.sasl_response(final))
            elif code == 12:
                if scram is None:
                    raise UpstreamError("unexpected SASL final")
                try:
                    scram.set_server_final(msg[9:].decode())
                except Exception as exc:
                    raise UpstreamError(f"the server failed SCRAM verification: {exc}") from None
            else:
                raise UpstreamError(f"unsupported authentication method {code}")
        elif t == w.PARAMETER_STATUS:
            result.parameters.append(m.parameter_status(msg, 0, len(msg)))
        elif t == w.BACKEND_KEY:
            result.backend_pid, result.backend_key = m.backend_key(msg, 0, len(msg))
        elif t == w.NOTICE:
            result.notices.append(msg)
        elif t == w.READY:
            result.status = m.ready_status(msg, 0, len(msg))
            return result
        elif t == w.ERROR:
            fields = m.error_fields(msg, 0, len(msg))
            raise UpstreamError(
                fields.get("M", "login failed"), fields.get("C", "08006"), fields
            )
        elif t == w.NEGOTIATE_VERSION:
            continue
        else:
            raise UpstreamError(f"unexpected message {chr(t)!r} during login")


async def send_cancel(upstream: Any, pid: int, key: int, timeout: float = 5.0) -> None:
    """Forward a CancelRequest with the backend's real key data."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(upstream.host, upstream.port), timeout
    )
    try:
        writer.write(w.cancel_request(pid, key))
        await writer.drain()
        await asyncio.wait_for(reader.read(1), timeout)
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
