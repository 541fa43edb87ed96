#!/usr/bin/env python3
"""How long one large response (or request) holds the http listener's event
loop: the worst delay a concurrent "ping" session sees.

One upstream (aiohttp, in its own process), one ``hoopd serve`` with an http
connection (personal-data recognizers on; ``--key-rule`` adds a ``fields``
rule, so JSON bodies are walked by key). A ping client on its own keep-alive
connection does ``GET /ping`` every 10 ms and records each round trip; the
bulk client (curl, another process) fetches one body of the given shape.
Reported per shape and size: the bulk request's wall time, the CPU time of
hoopd's main (event loop) thread over it (/proc/PID/task/PID/stat), and the
ping's worst round trip while it ran.

    python bench/http/stall_http.py [--shapes json-emails,text-emails,...]
                                    [--sizes 2M,8M] [--key-rule]

Shapes: ``json-emails`` (a JSON array of e-mail strings), ``json-plain``
(objects of plain words; with ``--key-rule`` their ``note`` key is a field
rule), ``text-emails`` (text/plain, one address per line), ``gzip-text``
(the same, gzip-encoded: the size is the decoded size), ``gzip-json``,
``gzip-same`` (one address repeated, gzip-encoded: ~1000:1, so one upstream
read decodes to megabytes),
``sse`` (``text/event-stream``, ``data: <email>`` events), ``ws-text``
(one WebSocket text message of that size, dense with e-mails),
``ws-send`` (the same message sent by the client: masked for the recording),
``post-json`` (a request body of that size, upstream answers ``ok``).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

API_KEY = "hak_bench_0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
TICK = os.sysconf("SC_CLK_TCK")


def size_of(text: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20}
    if text[-1].upper() in mult:
        return int(float(text[:-1]) * mult[text[-1].upper()])
    return int(text)


def emails_text(size: int) -> bytes:
    line = b"user%d@example.com\n"
    out, n, total = [], 0, 0
    while total < size:
        piece = line % n
        out.append(piece)
        total += len(piece)
        n += 1
    return b"".join(out)[:size]


def json_emails(size: int) -> bytes:
    items, total, n = [], 2, 0
    while total < size:
        s = f"user{n}@example.com"
        items.append(s)
        total += len(s) + 3
        n += 1
    return json.dumps(items, separators=(",", ":")).encode()


def json_plain(size: int) -> bytes:
    items, total, n = [], 2, 0
    while total < size:
        items.append({"id": n, "note": f"plain words number {n}", "name": "widget"})
        total += 60
        n += 1
    return json.dumps({"items": items}, separators=(",", ":")).encode()


# -- upstream (its own process) ------------------------------------------------


def serve_upstream(port: int) -> None:
    from aiohttp import web

    cache: dict[tuple[str, int], bytes] = {}

    def body(shape: str, size: int) -> bytes:
        key = (shape, size)
        if key not in cache:
            if shape in ("json-emails", "gzip-json"):
                data = json_emails(size)
            elif shape == "json-plain":
                data = json_plain(size)
            elif shape == "gzip-same":
                line = b"ann@example.com\n"
                data = line * (size // len(line))
            elif shape == "sse":
                data = b"".join(b"data: " + line + b"\n" for line in emails_text(size).splitlines(True))
            else:
                data = emails_text(size)
            if shape.startswith("gzip"):
                data = gzip.compress(data, 6)
            cache[key] = data
        return cache[key]

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def bulk(request: web.Request) -> web.StreamResponse:
        shape = request.match_info["shape"]
        size = int(request.match_info["size"])
        data = body(shape, size)
        ctype = {
            "json-emails": "application/json",
            "gzip-json": "application/json",
            "json-plain": "application/json",
            "sse": "text/event-stream",
        }.get(shape, "text/plain")
        headers = {"Content-Type": ctype}
        if shape.startswith("gzip"):
            headers["Content-Encoding"] = "gzip"
        if shape == "sse":
            resp = web.StreamResponse(headers=headers)
            await resp.prepare(request)
            for i in range(0, len(data), 65536):
                await resp.write(data[i : i + 65536])
            await resp.write_eof()
            return resp
        return web.Response(body=data, headers=headers)

    async def post(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        size = int(request.match_info["size"])
        sock = web.WebSocketResponse(max_msg_size=0)
        await sock.prepare(request)
        if request.query.get("recv"):
            await sock.receive()
            await sock.send_str("ok")
        else:
            await sock.send_str(emails_text(size).decode())
        await sock.close()
        return sock

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/ping", ping)
    app.router.add_get("/ws/{size}", ws)
    app.router.add_get("/bulk/{shape}/{size}", bulk)
    app.router.add_post("/post", post)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- measurement ---------------------------------------------------------------


def loop_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def pinger(port: int, samples: list[float], done: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    req = f"GET /ping HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode()
    while not done.is_set():
        t0 = time.perf_counter()
        writer.write(req)
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(4)
        samples.append(time.perf_counter() - t0)
        await asyncio.sleep(0.01)
    writer.close()


async def ws_client(port: int, size: int, send: bool = False) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.ws_connect(
        f"http://127.0.0.1:{port}/ws/{size}" + ("?recv=1" if send else ""),
        headers={"Authorization": f"Bearer {API_KEY}"},
        max_msg_size=0,
    ) as sock:
        got = 0
        if send:
            await sock.send_str(emails_text(size).decode())
        async for msg in sock:
            got += len(msg.data)
        return got


async def one(port: int, pid: int, shape: str, size: int) -> dict[str, Any]:
    samples: list[float] = []
    done = asyncio.Event()
    task = asyncio.create_task(pinger(port, samples, done))
    await asyncio.sleep(0.3)
    before = len(samples)
    cpu0, t0 = loop_cpu(pid), time.perf_counter()
    if shape in ("ws-text", "ws-send"):
        got = await ws_client(port, size, send=shape == "ws-send")
    else:
        url = f"http://127.0.0.1:{port}/bulk/{shape}/{size}"
        cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "-H", f"Authorization: Bearer {API_KEY}"]
        if shape == "post-json":
            tmp = Path(tempfile.mktemp())
            tmp.write_bytes(json_emails(size))
            cmd += ["-H", "Content-Type: application/json", "--data-binary", f"@{tmp}"]
            url = f"http://127.0.0.1:{port}/post"
        proc = await asyncio.create_subprocess_exec(*cmd, url, stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        got = int(out or 0)
    wall, cpu = time.perf_counter() - t0, loop_cpu(pid) - cpu0
    await asyncio.sleep(0.1)
    done.set()
    await task
    during = samples[before:] or [0.0]
    return {"shape": shape, "size": size, "got": got, "wall": wall, "loop_cpu": cpu, "ping_max": max(during)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="json-emails,json-plain,text-emails,gzip-text,gzip-json,sse,ws-text,post-json")
    ap.add_argument("--sizes", default="2M,8M")
    ap.add_argument("--key-rule", action="store_true")
    ap.add_argument("--serve-upstream", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    from hoopd.identity.apikeys import hash_api_key
    from tests.helpers import Daemon, free_port, wait_port

    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--serve-upstream", str(up_port)])
    masking: dict[str, Any] = {"recognizers": {"personal": True}}
    if args.key_rule:
        masking["rules"] = [{"id": "notes", "fields": ["note"]}]
    config = {
        "gateway": {"log_level": "warning"},
        "identity": {"api_keys": [{"name": "bench", "sha256": hash_api_key(API_KEY), "groups": ["dev"]}]},
        "connections": [
            {
                "name": "bench",
                "protocol": "http",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"url": f"http://127.0.0.1:{up_port}"},
                "allow_groups": ["dev"],
                "masking": masking,
                "options": {"mask_json_max_bytes": "64MiB"} if False else {},
            }
        ],
    }
    with tempfile.TemporaryDirectory() as work:
        daemon = Daemon(Path(work), config).start()
        try:
            wait_port(up_port)
            assert daemon.proc is not None
            print(f"{'shape':<12} {'size':>10} {'got':>10} {'wall s':>7} {'loop cpu s':>10} {'ping max s':>10}")
            for shape in args.shapes.split(","):
                for size in (size_of(s) for s in args.sizes.split(",")):
                    r = asyncio.run(one(port, daemon.proc.pid, shape, size))
                    print(
                        f"{r['shape']:<12} {r['size']:>10} {r['got']:>10} {r['wall']:>7.2f}"
                        f" {r['loop_cpu']:>10.2f} {r['ping_max']:>10.3f}",
                        flush=True,
                    )
        finally:
            daemon.stop()
            upstream.terminate()
            upstream.wait()


if __name__ == "__main__":
    main()
