"""A real upstream HTTP server for the http tests: an aiohttp app on
loopback, in its own thread and event loop (so blocking clients such as curl
can run in the test thread)."""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import hashlib
import json
import ssl
import struct
import threading
import zlib
from typing import Any

from aiohttp import WSMsgType, web

SECRET_JSON = {
    "user": "alice",
    "email": "alice@example.com",
    "password": "hunter2",
    "profile": {"home_ssn": "123-45-6789", "note": "badge EMP-123456 issued"},
    "items": [1, 2, 3],
}


def _echo_payload(request: web.Request, body: bytes = b"") -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "query": dict(request.query),
        "headers": {k: v for k, v in request.headers.items()},
        "body_len": len(body),
    }


@functools.lru_cache(maxsize=4)
def _gzip_bomb(first: bytes, block: bytes, count: int) -> bytes:
    """gzip of ``first + block * count`` (see ``Upstream.bomb``)."""

    def segment(data: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

    crc = zlib.crc32(first)
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    size = (len(first) + len(block) * count) & 0xFFFFFFFF
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        + segment(first)
        + segment(block) * count
        + b"\x03\x00"  # an empty final block
        + struct.pack("<II", crc, size)
    )


class Upstream:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.ssl_context = ssl_context
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.ws_extensions: str | None = None
        self.gates: dict[str, asyncio.Event] = {}
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    # -- lifecycle ---------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        r = app.router
        r.add_route("*", "/echo{tail:.*}", self.echo)
        r.add_get("/json", self.json_doc)
        r.add_get("/reason-json", self.reason_json)
        r.add_get("/reason-text", self.reason_text)
        r.add_get("/header-leak", self.header_leak)
        r.add_get("/mirror", self.mirror)
        r.add_get("/range-text", self.range_text)
        r.add_get("/utf16-text", self.utf16_text)
        r.add_get("/gzip-json", self.gzip_json)
        r.add_get("/br-json", self.br_json)
        r.add_get("/deflate-text", self.deflate_text)
        r.add_get("/corrupt", self.corrupt)
        r.add_get("/split-text", self.split_text)
        r.add_get("/split-json", self.split_json)
        r.add_get("/ndjson-as-json", self.ndjson_as_json)
        r.add_get("/concat-json", self.concat_json)
        r.add_get("/deep-json", self.deep_json)
        r.add_get("/truncated", self.truncated)
        r.add_get("/zstd-text", self.zstd_text)
        r.add_get("/te-gzip", self.te_gzip)
        r.add_get("/lone-surrogate", self.lone_surrogate)
        r.add_get("/charset-text", self.charset_text)
        r.add_route("TRACE", "/trace", self.trace)
        r.add_get("/batch", self.batch)
        r.add_get("/ndjson-stream", self.ndjson_stream)
        r.add_get("/early-eof", self.early_eof)
        r.add_get("/sse", self.sse)
        r.add_get("/big", self.big)
        r.add_get("/bomb", self.bomb)
        r.add_get("/binary", self.binary)
        r.add_post("/upload", self.upload)
        r.add_get("/ws", self.ws)
        r.add_get("/slow", self.slow)
        r.add_route("*", "/api/{tail:.*}", self.echo)
        r.add_route("*", "/admin/{tail:.*}", self.echo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def open_gate(self, name: str) -> None:
        def go() -> None:
            self.gates.setdefault(name, asyncio.Event()).set()

        self.loop.call_soon_threadsafe(go)

    async def _gate(self, name: str) -> None:
        await asyncio.wait_for(self.gates.setdefault(name, asyncio.Event()).wait(), 10)

    # -- handlers --------------------------------------------------------------
    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = _echo_payload(request, body)
        self.requests.append(payload)
        return web.json_response(payload)

    async def json_doc(self, request: web.Request) -> web.Response:
        return web.json_response(SECRET_JSON)

    async def reason_json(self, request: web.Request) -> web.Response:
        return web.json_response(SECRET_JSON, status=203, reason="Served From Mirror")

    async def reason_text(self, request: web.Request) -> web.Response:
        return web.Response(text="no secrets here\n", status=203, reason="Served From Mirror")

    HEADER_LEAK = {
        "X-User-Email": "alice@example.com",
        "X-Employee": "EMP-123456",
        "Location": "/users/alice@example.com",
        "Set-Cookie": "remember=alice@example.com; Path=/; HttpOnly",
        "ETag": '"4111111111111111"',  # looks like a card number: must pass untouched
        "Access-Control-Allow-Origin": "http://10.0.0.1:8080",  # looks like an IP address
    }

    async def header_leak(self, request: web.Request) -> web.Response:
        """User data in response header values and in the reason phrase."""
        if request.query.get("type") == "json":
            body, ctype = json.dumps({"ok": True}).encode(), "application/json"
        else:
            body, ctype = b"ok\n", "text/plain"
        return web.Response(
            body=body, status=200, reason="OK for alice@example.com", content_type=ctype,
            headers=self.HEADER_LEAK,
        )

    async def mirror(self, request: web.Request) -> web.Response:
        """Echoes the request back as careless servers do: httpbin-like JSON
        (headers, decoded query, the URL) or, with ``as=text``, an error page
        quoting the raw target and every header; and in response header
        fields (a mirrored header, a redirect and a cookie carrying the query)."""
        self.requests.append(_echo_payload(request))
        raw_query = request.rel_url.raw_query_string
        headers = {
            "X-Echo-Authorization": request.headers.get("Authorization", ""),
            "X-Echo-Api-Key": request.headers.get("X-Api-Key", ""),
            "Location": f"/login?next={request.raw_path}",
            "Set-Cookie": f"last_query={raw_query}; Path=/",
        }
        if request.query.get("as") == "text":
            lines = [f"404 Not Found: {request.raw_path}"]
            lines += [f"{k}: {v}" for k, v in request.headers.items()]
            return web.Response(text="\n".join(lines) + "\n", status=404, headers=headers)
        if request.query.get("as") == "binary":
            # a binary debug dump (no type masking reads: passed as it is
            # under unmaskable: pass), the headers among non-text bytes
            blob = b"".join(f"{k}: {v}".encode() + b"\x00\xff" for k, v in request.headers.items())
            return web.Response(body=b"\x89DUMP\x00" + blob, content_type="application/octet-stream", headers=headers)
        if request.query.get("as") == "b64":
            # a debug dump of the request kept base64-encoded (as a Secret's
            # data or a JSON field holds it), after 0, 1 and 2 bytes of
            # preamble: the headers start at each base64 alignment
            dump = "".join(f"{k}: {v}\n" for k, v in request.headers.items())
            dump += f"url: {request.url}\n"
            blobs = [base64.b64encode(b"#" * i + dump.encode()).decode() for i in range(3)]
            return web.json_response({"dumps": blobs}, headers=headers)
        payload = _echo_payload(request)
        payload["url"] = str(request.url)
        return web.json_response(payload, headers=headers)

    async def utf16_text(self, request: web.Request) -> web.Response:
        body = "contact alice@example.com or 123-45-6789\n".encode("utf-16")
        return web.Response(body=body, headers={"Content-Type": "text/plain; charset=utf-16"})

    RANGE_TEXT = b"card on file: 4111 1111 1111 1111, renewal due\n"

    async def range_text(self, request: web.Request) -> web.Response:
        """Honours a single ``Range: bytes=a-b`` as a file server does, and,
        as Apache httpd does, ``Request-Range`` (Netscape 2-3's spelling)
        when there is no ``Range``."""
        self.requests.append(_echo_payload(request))
        body = self.RANGE_TEXT
        rng = request.headers.get("Range") or request.headers.get("Request-Range", "")
        if rng.startswith("bytes=") and "," not in rng:
            first, _, last = rng[6:].partition("-")
            a, b = int(first), min(int(last), len(body) - 1)
            return web.Response(
                body=body[a:b + 1], status=206, content_type="text/plain",
                headers={"Content-Range": f"bytes {a}-{b}/{len(body)}", "Accept-Ranges": "bytes"},
            )
        return web.Response(body=body, content_type="text/plain", headers={"Accept-Ranges": "bytes"})

    async def gzip_json(self, request: web.Request) -> web.Response:
        body = gzip.compress(json.dumps(SECRET_JSON).encode())
        return web.Response(
            body=body, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    async def br_json(self, request: web.Request) -> web.Response:
        import brotli

        # in two pieces: the masker must see values across decoded chunks
        body = brotli.compress(json.dumps(SECRET_JSON).encode())
        resp = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Encoding": "br",
                     "X-Accept-Encoding-Seen": request.headers.get("Accept-Encoding", "")}
        )
        await resp.prepare(request)
        half = len(body) // 2
        await resp.write(body[:half])
        await resp.write(body[half:])
        await resp.write_eof()
        return resp

    async def corrupt(self, request: web.Request) -> web.StreamResponse:
        """A compressed body that breaks in its second half (``?enc=gzip|br``,
        ``?type=json|text``): the first piece decodes, the second does not."""
        import brotli

        enc = request.query.get("enc", "br")
        ctype = "application/json" if request.query.get("type") == "json" else "text/plain"
        plain = json.dumps(SECRET_JSON).encode() * 20
        good = gzip.compress(plain) if enc == "gzip" else brotli.compress(plain)
        half = len(good) // 2
        resp = web.StreamResponse(headers={"Content-Type": ctype, "Content-Encoding": enc})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(good[:half])
        await asyncio.sleep(0.05)
        await resp.write(b"\xff" * 64 + good[half:])
        await resp.write_eof()
        return resp

    async def deflate_text(self, request: web.Request) -> web.Response:
        body = zlib.compress(b"mail bob@example.com for access\n")
        return web.Response(
            body=body, headers={"Content-Type": "text/plain", "Content-Encoding": "deflate"}
        )

    async def split_text(self, request: web.Request) -> web.StreamResponse:
        """An email and an AWS key split across chunks, each chunk flushed separately."""
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"contact: ali", b"ce@exam", b"ple.com and key AKIA", b"IOSFODNN7EXAMPLE done\n"):
            await resp.write(part)
            await asyncio.sleep(0.02)
        await resp.write_eof()
        return resp

    async def split_json(self, request: web.Request) -> web.StreamResponse:
        body = json.dumps(SECRET_JSON).encode()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 7):
            await resp.write(body[i : i + 7])
        await resp.write_eof()
        return resp

    async def ndjson_as_json(self, request: web.Request) -> web.Response:
        """Newline-delimited documents labelled application/json (as many log
        and export endpoints do)."""
        line = json.dumps({**SECRET_JSON, "badge_ssn": "opaque-7731"}).encode()
        return web.Response(body=line + b"\n" + line + b"\n", content_type="application/json")

    CONCAT_SECOND = {"user": "bob", "password": "opaque-pw-3318", "profile": {"badge_ssn": "opaque-5521"}}

    async def deep_json(self, request: web.Request) -> web.Response:
        """``CONCAT_SECOND`` inside ``?depth=N`` nested arrays (a thousand
        levels and more: deeper than Python's parser goes)."""
        depth = int(request.query.get("depth", "3000"))
        inner = json.dumps(self.CONCAT_SECOND).encode()
        return web.Response(body=b"[" * depth + inner + b"]" * depth, content_type="application/json")

    async def concat_json(self, request: web.Request) -> web.Response:
        """Two documents back to back (``?garbage=1``: garbage after the first,
        and the second cut short), labelled application/json."""
        first = json.dumps({"user": "alice", "n": 1}).encode()
        second = json.dumps(self.CONCAT_SECOND).encode()
        if request.query.get("garbage"):
            body = first + b" <!-- proxy note --> " + second[:-2]
        else:
            body = first + second
        return web.Response(body=body, content_type="application/json")

    async def truncated(self, request: web.Request) -> web.StreamResponse:
        """A compressed body (``?enc=gzip|deflate|br``, ``?type=json|text``)
        whose stream stops in the middle, in a response framed as complete
        (right Content-Length): every byte sent decodes, no end marker."""
        import brotli

        enc = request.query.get("enc", "gzip")
        ctype = "application/json" if request.query.get("type") == "json" else "text/plain"
        # a hash per line: enough compressed bytes that each half decodes to text
        plain = b"".join(
            json.dumps({**SECRET_JSON, "n": hashlib.sha256(b"%d" % i).hexdigest()}).encode() + b"\n"
            for i in range(200)
        )
        packed = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[enc](plain)
        body = packed[: len(packed) * 2 // 3]
        headers = {"Content-Type": ctype, "Content-Encoding": enc}
        if not request.query.get("stream"):
            return web.Response(body=body, headers=headers)
        # ?stream=1: in two writes, so the head and the first half go out first
        resp = web.StreamResponse(headers={**headers, "Content-Length": str(len(body))})
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        await asyncio.sleep(0.1)
        await resp.write(body[len(body) // 2 :])
        await resp.write_eof()
        return resp

    async def early_eof(self, request: web.Request) -> web.StreamResponse:
        """A gzip body (``?type=json|text``) whose connection closes halfway
        through the Content-Length it announced (written raw: aiohttp would
        not send a short body)."""
        ctype = "application/json" if request.query.get("type") == "json" else "text/plain"
        plain = b"".join(
            json.dumps({**SECRET_JSON, "n": hashlib.sha256(b"%d" % i).hexdigest()}).encode() + b"\n"
            for i in range(200)
        )
        body = gzip.compress(plain)
        transport = request.transport
        assert transport is not None
        transport.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[: len(body) // 2]
        )
        await asyncio.sleep(0.1)
        transport.close()
        return web.StreamResponse()  # never sent: the connection is gone

    async def trace(self, request: web.Request) -> web.Response:
        """TRACE as Apache httpd answers it by default (TraceEnable on): the
        request as received, headers and all, as ``message/http``."""
        self.requests.append(_echo_payload(request))
        lines = [f"TRACE {request.raw_path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in request.headers.items()]
        return web.Response(
            body=("\r\n".join(lines) + "\r\n\r\n").encode(),
            headers={"Content-Type": request.query.get("type", "message/http")},
        )

    async def batch(self, request: web.Request) -> web.Response:
        """A batch API's answer (OData ``$batch``, Google's batch endpoints):
        ``multipart/mixed`` parts, each an HTTP response with a JSON body;
        ``?type=`` overrides the multipart subtype."""
        self.requests.append(_echo_payload(request))
        parts = [
            'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"id": 1, "email": "alice@example.com"}',
            'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"id": 2, "card": "4111 1111 1111 1111"}',
        ]
        body = "".join(f"--b0undary\r\nContent-Type: application/http\r\n\r\n{p}\r\n" for p in parts)
        subtype = request.query.get("type", "mixed")
        return web.Response(
            body=(body + "--b0undary--\r\n").encode(),
            headers={"Content-Type": f"multipart/{subtype}; boundary=b0undary"},
        )

    async def charset_text(self, request: web.Request) -> web.Response:
        """A text body labelled with ``?cs=`` and, when that names a text
        encoding, encoded in it (raw bytes otherwise)."""
        import codecs

        cs = request.query.get("cs", "utf-7")
        text = "mail alice@example.com\n"
        try:
            body = text.encode(cs) if codecs.lookup(cs)._is_text_encoding else text.encode()
        except LookupError:
            body = text.encode()
        if cs == "utf-7":  # '@' as a strict encoder writes it (Python's writes it direct)
            body = body.replace(b"@", b"+AEA-")
        return web.Response(body=body, headers={"Content-Type": f"text/plain; charset={cs}"})

    async def lone_surrogate(self, request: web.Request) -> web.Response:
        """JSON with a lone surrogate escape (valid JSON text, not valid
        Unicode: a user can store one) next to values masking changes."""
        body = b'{"nick": "x\\ud83d", "email": "alice@example.com", "home_ssn": "\\udc00 123"}'
        return web.Response(body=body, content_type="application/json")

    async def te_gzip(self, request: web.Request) -> web.StreamResponse:
        """A text body in a gzip *transfer* coding (``?te=gzip, chunked`` or
        ``?te=gzip``: then delimited by the close), which the gateway never
        asked for (it sends no ``TE``); written raw, aiohttp would not."""
        te = request.query.get("te", "gzip, chunked")
        body = gzip.compress(b"mail alice@example.com, badge EMP-123456\n")
        if te.endswith("chunked"):
            body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
        transport = request.transport
        assert transport is not None
        transport.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: {te}\r\n"
            "Connection: close\r\n\r\n".encode() + body
        )
        await asyncio.sleep(0.1)
        transport.close()
        return web.StreamResponse()  # never sent: the connection is gone

    async def zstd_text(self, request: web.Request) -> web.Response:
        """A coding the gateway cannot decode, sent although not asked for."""
        self.requests.append(_echo_payload(request))
        return web.Response(
            body=b"\x28\xb5\x2f\xfd" + b"mail alice@example.com",
            headers={"Content-Type": "text/plain", "Content-Encoding": "zstd"},
        )

    NDJSON_STREAM = (
        b'{"user":"ann","password":"opaque-n1"}{"x_ssn":"opaque-n2"}\n'
        b"log: key follows\n-----BEGIN RSA PRIVATE KEY-----\n"
        b"MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
        b"-----END RSA PRIVATE KEY-----\n"
        b'{\n  "kind": "pretty",\n  "password": "opaque-n4",\n  "badge_ssn": "opaque-n5"\n}\n'
        b'{"user":"bob","profile":{"home_ssn":"opaque-n3"},"email":"bob@example.com"}\n'
    )

    async def ndjson_stream(self, request: web.Request) -> web.StreamResponse:
        """application/x-ndjson in chunks cut anywhere (``?step=N`` bytes,
        ``?enc=gzip``: compressed first): a line holding two documents, a
        PEM key over several non-JSON lines, a pretty-printed document, a
        document with keyed values."""
        step = int(request.query.get("step", "7"))
        body = self.NDJSON_STREAM
        headers = {"Content-Type": "application/x-ndjson"}
        if request.query.get("enc") == "gzip":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        resp = web.StreamResponse(headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), step):
            await resp.write(body[i : i + step])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    async def sse(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(b"event: hello\ndata: first carol@example.com\n\n")
        await self._gate("sse")  # the test reads the first event before this opens
        await resp.write(b"data: second da")
        await asyncio.sleep(0.02)
        await resp.write(b"ve@example.com\n\n")
        await resp.write_eof()
        return resp

    async def big(self, request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "1000000"))
        ctype = request.query.get("type", "application/octet-stream")
        resp = web.StreamResponse(headers={"Content-Type": ctype})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        block = (b"0123456789abcdef" * 4096)[:65536]
        h = hashlib.sha256()
        sent = 0
        while sent < n:
            part = block[: min(len(block), n - sent)]
            h.update(part)
            await resp.write(part)
            sent += len(part)
        await resp.write_eof()
        return resp

    BOMB_FIRST = b"first line: mail alice@example.com\n"
    BOMB_LINE = b"x" * 1023 + b"\n"
    BOMB_BLOCK = BOMB_LINE * ((1 << 20) // len(BOMB_LINE))

    async def bomb(self, request: web.Request) -> web.StreamResponse:
        """A gzip bomb: ``BOMB_FIRST`` then ``?blocks=N`` times ``BOMB_BLOCK``
        (1 MiB) in one gzip stream of ~2 KiB per block (``?type=``: the
        Content-Type; ``?delay=S``: a pause after the first bytes). Built
        from one compressed block repeated, each after a full flush (so
        independent of the bytes before it)."""
        blocks = int(request.query.get("blocks", "1024"))
        ctype = request.query.get("type", "text/plain")
        body = _gzip_bomb(self.BOMB_FIRST, self.BOMB_BLOCK, blocks)
        resp = web.StreamResponse(
            headers={"Content-Type": ctype, "Content-Encoding": "gzip", "Content-Length": str(len(body))}
        )
        await resp.prepare(request)
        await resp.write(body[:16])
        # ?delay=S: the rest is all there when the gateway reads it
        await asyncio.sleep(float(request.query.get("delay", "0")))
        await resp.write(body[16:])
        await resp.write_eof()
        return resp

    async def binary(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x01 alice@example.com", content_type="application/octet-stream")

    async def upload(self, request: web.Request) -> web.Response:
        h = hashlib.sha256()
        n = 0
        async for part in request.content.iter_any():
            h.update(part)
            n += len(part)
        return web.json_response(
            {"sha256": h.hexdigest(), "size": n, "chunked": request.headers.get("Transfer-Encoding")}
        )

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws_extensions = request.headers.get("Sec-WebSocket-Extensions")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT and msg.data == "split":
                # one message in three frames, an e-mail address split across them
                # (raw frames: aiohttp's writer does not fragment)
                assert request.transport is not None
                request.transport.write(
                    b"\x01\x0dmail alice@ex"  # text, not final
                    + b"\x00\x0dample.com and"  # continuation
                    + b"\x89\x02hi"  # a ping in between
                    + b"\x80\x0c EMP-123456."  # final continuation
                )
            elif msg.type == WSMsgType.TEXT and msg.data.startswith("ping:"):
                await ws.ping(msg.data[5:].encode())
            elif msg.type == WSMsgType.TEXT and msg.data.startswith("close:"):
                # a close reason that quotes user data (or the upstream credential)
                await ws.close(code=4001, message=msg.data[6:].encode())
            elif msg.type == WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.json_response({"ok": True})
