"""The server side of ``kubectl port-forward`` for the fake API server.

kubectl >= 1.31 opens a websocket with the subprotocol
``SPDY/3.1+portforward.k8s.io`` and runs SPDY/3.1 inside its binary messages
(the bytes are a plain stream; message boundaries mean nothing). Per
forwarded TCP connection it opens two SPDY streams with headers
``streamType: error|data``, ``port`` and ``requestID``; the server answers
each with SYN_REPLY, copies the data stream to the pod's port and back, and
ends the error stream (empty: no error) when the connection is done.

Only what that needs is here: SYN_STREAM, SYN_REPLY, data frames with FIN,
RST_STREAM, PING (echoed), SETTINGS/WINDOW_UPDATE/GOAWAY (ignored).

Header blocks are zlib streams seeded with SPDY/3's fixed dictionary. Rather
than carry that 1.4 KB constant, the server reads it from the kubectl binary
it talks to (Go's SPDY library embeds it) and checks it against the
dictionary id (Adler-32) in the client's first header block.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
_DICT_START = b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post"
_DICT_END = b"enq=0."


def _dictionary_candidates() -> list[bytes]:
    found = []
    for path in [*sorted(glob.glob("/usr/lib/google-cloud-sdk/bin/kubectl*")), "/usr/bin/kubectl"]:
        with contextlib.suppress(OSError):
            data = open(path, "rb").read()  # noqa: SIM115
            start = data.find(_DICT_START)
            end = data.find(_DICT_END, start)
            if start >= 0 and end > start:
                found.append(data[start : end + len(_DICT_END)])
                break
    return found


def header_block(pairs: dict[str, str]) -> bytes:
    out = [struct.pack(">I", len(pairs))]
    for k, v in pairs.items():
        kb, vb = k.encode(), v.encode()
        out += [struct.pack(">I", len(kb)), kb, struct.pack(">I", len(vb)), vb]
    return b"".join(out)


def parse_header_block(raw: bytes) -> dict[str, str]:
    (n,), pos, out = struct.unpack_from(">I", raw), 4, {}
    for _ in range(n):
        (kl,) = struct.unpack_from(">I", raw, pos)
        k = raw[pos + 4 : pos + 4 + kl].decode()
        pos += 4 + kl
        (vl,) = struct.unpack_from(">I", raw, pos)
        out[k] = raw[pos + 4 : pos + 4 + vl].decode()
        pos += 4 + vl
    return out


@dataclass
class _Stream:
    sid: int
    headers: dict[str, str]
    inbox: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)  # b"" = FIN


class PortForwardSession:
    """One websocket: ``feed`` the bytes of each binary message; ``send`` is
    called with bytes to put in binary messages; ``connect(port)`` opens the
    pod's port (a local TCP server in the tests)."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        connect: Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]],
    ) -> None:
        self.send = send
        self.connect = connect
        self._buf = b""
        self._inflate: zlib._Decompress | None = None
        self._dict = b""
        self._deflate: zlib._Compress | None = None
        self._streams: dict[int, _Stream] = {}
        self._by_request: dict[str, dict[str, _Stream]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.forwarded = 0

    # -- frames in ------------------------------------------------------------
    async def feed(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= 8:
            length = int.from_bytes(self._buf[5:8], "big")
            if len(self._buf) < 8 + length:
                return
            head, body = self._buf[:8], self._buf[8 : 8 + length]
            self._buf = self._buf[8 + length :]
            flags = head[4]
            if head[0] & 0x80:
                await self._control(int.from_bytes(head[2:4], "big"), flags, body)
            else:
                sid = int.from_bytes(head[:4], "big") & 0x7FFFFFFF
                stream = self._streams.get(sid)
                if stream is not None:
                    if body:
                        stream.inbox.put_nowait(body)
                    if flags & FLAG_FIN:
                        stream.inbox.put_nowait(b"")

    async def _control(self, kind: int, flags: int, body: bytes) -> None:
        if kind == SYN_STREAM:
            sid = int.from_bytes(body[:4], "big") & 0x7FFFFFFF
            stream = _Stream(sid, parse_header_block(self._inflate_block(body[10:])))
            self._streams[sid] = stream
            await self._frame(SYN_REPLY, 0, struct.pack(">I", sid) + self._deflate_block({}))
            if flags & FLAG_FIN:
                stream.inbox.put_nowait(b"")
            group = self._by_request.setdefault(stream.headers.get("requestid", ""), {})
            group[stream.headers.get("streamtype", "")] = stream
            if "data" in group and "error" in group:
                task = asyncio.get_running_loop().create_task(self._forward(group["data"], group["error"]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif kind == PING:
            await self._frame(PING, 0, body)
        elif kind == RST_STREAM:
            reset = self._streams.get(int.from_bytes(body[:4], "big") & 0x7FFFFFFF)
            if reset is not None:
                reset.inbox.put_nowait(b"")

    def _inflate_block(self, block: bytes) -> bytes:
        if self._inflate is None:
            want = int.from_bytes(block[2:6], "big")  # zlib header with FDICT: the dictionary's Adler-32
            for candidate in _dictionary_candidates():
                if zlib.adler32(candidate) == want:
                    self._dict = candidate
                    break
            else:
                raise RuntimeError("cannot find the SPDY/3 header dictionary in the kubectl binary")
            self._inflate = zlib.decompressobj(zdict=self._dict)
            self._deflate = zlib.compressobj(zdict=self._dict)
        return self._inflate.decompress(block)

    def _deflate_block(self, pairs: dict[str, str]) -> bytes:
        assert self._deflate is not None
        return self._deflate.compress(header_block(pairs)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    # -- frames out -----------------------------------------------------------
    async def _frame(self, kind: int, flags: int, body: bytes) -> None:
        await self.send(struct.pack(">HHB", 0x8003, kind, flags) + len(body).to_bytes(3, "big") + body)

    async def _data(self, sid: int, data: bytes, fin: bool = False) -> None:
        await self.send(struct.pack(">IB", sid, FLAG_FIN if fin else 0) + len(data).to_bytes(3, "big") + data)

    # -- one forwarded connection ----------------------------------------------
    async def _forward(self, data: _Stream, error: _Stream) -> None:
        port = int(data.headers.get("port", "0"))
        try:
            reader, writer = await self.connect(port)
        except OSError as exc:
            await self._data(error.sid, f"cannot connect to port {port}: {exc}".encode(), fin=True)
            await self._data(data.sid, b"", fin=True)
            return
        self.forwarded += 1

        async def to_pod() -> None:
            while chunk := await data.inbox.get():
                writer.write(chunk)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        async def from_pod() -> None:
            while chunk := await reader.read(32768):
                await self._data(data.sid, chunk)
            await self._data(data.sid, b"", fin=True)

        try:
            await asyncio.gather(to_pod(), from_pod())
        finally:
            writer.close()
            await self._data(error.sid, b"", fin=True)

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
