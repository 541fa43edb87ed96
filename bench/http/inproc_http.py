#!/usr/bin/env python3
"""CPU per request of the http handler, in-process and without sockets.

The real daemon (gateway, recorder thread, masking, metrics) runs in this
process; one client connection and its upstream connection get in-memory
transports, and a canned upstream response answers every request. The
result is the process CPU time (all threads: the recorder's too) per
request, which on a shared machine is far steadier than wrk's requests per
second. ``--profile`` prints the top functions (cProfile).

    python bench/http/inproc_http.py [--requests 20000] [--no-masking] [--vary] [--profile] [--split]

``--vary``: every response body is different (a counter in it), so the
masked-document cache never hits: the cost of masking each body afresh.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from hoopd.config import parse_config  # noqa: E402
from hoopd.identity.apikeys import hash_api_key  # noqa: E402
from hoopd.registry import Registry  # noqa: E402
from hoopd.server import Daemon  # noqa: E402
from protocols.http.exchange import UpstreamConnection  # noqa: E402
from protocols.http.proxy import ClientConnection  # noqa: E402
from tests.support.transports import MemoryTransport  # noqa: E402

KEY = "hak_bench_0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
BODY = json.dumps(
    {"id": 42, "name": "widget", "owner": "ops@example.com", "tags": ["a", "b"], "price": 12.5}
).encode()
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 16:20:08 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n"
    % len(BODY)
) + BODY
REQUEST = (
    f"GET /item HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\n"
    f"Authorization: Bearer {KEY}\r\n\r\n"
).encode()


def response(i: int) -> bytes:
    body = json.dumps(
        {"id": i, "name": "widget", "owner": "ops@example.com", "tags": ["a", "b"], "price": 12.5}
    ).encode()
    return (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 16:20:08 GMT\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n"
        % len(body)
    ) + body


async def run(n: int, masking: bool, vary: bool = False, split: bool = False) -> float:
    work = Path(tempfile.mkdtemp(prefix="hoopd-inproc-"))
    raw = {
        "gateway": {"data_dir": str(work / "var"), "log_level": "warning"},
        "identity": {"api_keys": [{"name": "bench", "sha256": hash_api_key(KEY), "groups": ["dev"]}]},
        "connections": [
            {
                "name": "bench",
                "protocol": "http",
                "listen": f"127.0.0.1:{free_port()}",
                "upstream": {"url": "http://127.0.0.1:9"},
                "allow_groups": ["dev"],
                "masking": {"recognizers": {"personal": True}} if masking else {"enabled": False},
                # the rule bench_http.py configures (policy is judged per request)
                "options": {"rules": [{"method": "POST", "path": "/admin/**", "action": "deny"}]},
            }
        ],
    }
    config = parse_config(raw, Registry.from_entry_points())
    daemon = Daemon(config, Registry.from_entry_points())
    await daemon.start()
    proxy = daemon.handlers["bench"].proxy  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    count = 0
    client = ClientConnection(proxy)
    upstream = UpstreamConnection(client)

    def to_client(data: bytes) -> None:
        nonlocal count
        if data.startswith(b"HTTP/1.1 200"):
            count += 1
            if count >= n:
                if not done.done():
                    done.set_result(None)
                return
            # like a real client, answer after the gateway is idle again
            loop.call_soon(loop.call_soon, loop.call_soon, client.data_received, REQUEST)

    def to_upstream(data: bytes) -> None:
        loop.call_soon(upstream.data_received, response(count) if vary else RESPONSE)

    async def connect() -> UpstreamConnection:
        client.upstream = upstream
        return upstream

    client._connect = connect  # type: ignore[method-assign]
    handler_ns = [0, 0]
    if split:
        # thread CPU inside the two data_received callbacks (the handler),
        # apart from the harness and the event loop around them
        def timed(fn: Any, slot: int) -> Any:
            def call(data: bytes) -> None:
                t0 = time.thread_time_ns()
                fn(data)
                handler_ns[slot] += time.thread_time_ns() - t0

            return call

        client.data_received = timed(client.data_received, 0)  # type: ignore[method-assign]
        upstream.data_received = timed(upstream.data_received, 1)  # type: ignore[method-assign]
    upstream.connection_made(MemoryTransport(to_upstream))
    client.connection_made(MemoryTransport(to_client))
    client.data_received(REQUEST)
    await asyncio.sleep(0.05)
    started = time.process_time()
    main_started = time.thread_time()
    await done
    cpu = time.process_time() - started
    main_cpu = time.thread_time() - main_started
    print(
        f"main thread: {main_cpu / max(1, n - 1) * 1e6:.1f} us per request,"
        f" other threads (recorder) {(cpu - main_cpu) / max(1, n - 1) * 1e6:.1f} us"
    )
    if split:
        per = max(1, n - 1) * 1000
        print(
            f"handler: client side {handler_ns[0] / per:.1f} us, upstream side {handler_ns[1] / per:.1f} us"
            " per request (thread CPU in data_received)"
        )
    await daemon.stop()
    return cpu / max(1, n - 1) * 1e6


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--no-masking", action="store_true")
    ap.add_argument("--vary", action="store_true", help="a different response body every time")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--split", action="store_true", help="also time the two data_received callbacks")
    args = ap.parse_args()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
    us = uvloop.run(run(args.requests, not args.no_masking, args.vary, args.split))
    if args.profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    print(
        f"{us:.1f} us CPU per request (all threads), masking {'off' if args.no_masking else 'on'}"
        + (", varying bodies" if args.vary else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
