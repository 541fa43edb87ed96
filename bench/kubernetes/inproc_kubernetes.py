#!/usr/bin/env python3
"""CPU per request of the kubernetes handler, in-process and without sockets.

The real daemon (gateway, recorder thread, masking, metrics) runs in this
process; one client connection (the handler's server protocol) and its
upstream connection get in-memory transports, so neither TLS nor the kernel
is in the numbers. The upstream answers with responses captured once from the
fake API server (``tests/kubernetes/fakeapi.py``) for the request loop of
``bench_kubernetes.py``: a Table of 20 pods, one pod with env values to mask,
the configmap list and ``/version``. The result is the process CPU time (all
threads: the recorder's too) per request; ``--split`` also times the two
``data_received`` callbacks (the handler apart from the harness and the
loop), ``--profile`` prints the top functions (cProfile).

    python bench/kubernetes/inproc_kubernetes.py [--requests 20000] [--profile] [--split]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import json
import pstats
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import uvloop  # noqa: E402

from hoopd.config import parse_config  # noqa: E402
from hoopd.identity.tokens import KEY_FILE_NAME, GatewayTokens, load_or_create_token_key  # noqa: E402
from hoopd.registry import Registry  # noqa: E402
from hoopd.server import Daemon  # noqa: E402
from protocols.kubernetes.upstream import UpstreamConn  # noqa: E402
from tests.kubernetes.fakeapi import FakeApiServer  # noqa: E402
from tests.support.transports import MemoryTransport  # noqa: E402

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
LOOP = [
    ("/api/v1/namespaces/default/pods?limit=500", TABLE),
    ("/api/v1/namespaces/default/pods/web-0", "application/json"),
    ("/api/v1/namespaces/default/configmaps", "application/json"),
    ("/version?timeout=32s", "application/json"),
]
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "spec": {"containers": [{"name": "main", "image": "busybox", "env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}]},
}


def capture(tls_dir: Path) -> dict[str, bytes]:
    """Raw HTTP/1.1 responses (Content-Length framed) of the fake API server
    for each request of the loop, keyed by request target."""
    out: dict[str, bytes] = {}
    with FakeApiServer(tls_dir) as api:
        ctx = ssl.create_default_context(cafile=str(api.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", api.port, context=ctx)
        for i in range(20):
            body = json.dumps({**POD, "metadata": {"name": f"web-{i}"}})
            conn.request("POST", "/api/v1/namespaces/default/pods", body, {"Content-Type": "application/json"})
            conn.getresponse().read()
        for target, accept in LOOP:
            conn.request("GET", target, headers={"Accept": accept})
            resp = conn.getresponse()
            data = resp.read()
            head = [f"HTTP/1.1 {resp.status} {resp.reason}"]
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                    head.append(f"{k}: {v}")
            head.append(f"Content-Length: {len(data)}")
            out[target] = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data
        conn.close()
    return out


def request_bytes(token: str) -> list[bytes]:
    return [
        (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:6443\r\nUser-Agent: kubectl/v1.32 (bench)\r\n"
            f"Accept: {accept}\r\nAuthorization: Bearer {token}\r\nAccept-Encoding: gzip\r\n\r\n"
        ).encode()
        for target, accept in LOOP
    ]


class _Client:
    """Reads the gateway's responses (Content-Length framed or chunked) and
    sends the next request once one is complete, like a keep-alive client."""

    def __init__(self, loop: asyncio.AbstractEventLoop, requests: list[bytes], n: int) -> None:
        self.loop = loop
        self.requests = requests
        self.n = n
        self.count = 0
        self.buf = b""
        self.done = loop.create_future()
        self.send: Any = None
        self.statuses: dict[bytes, int] = {}

    def received(self, data: bytes) -> None:
        self.buf += data
        while self._complete():
            pass

    def _complete(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buf[:end].lower()
        status = head[9:12]
        pos = head.find(b"content-length:")
        if pos >= 0:
            length = int(head[pos + 15 : head.find(b"\r\n", pos) if head.find(b"\r\n", pos) > 0 else None])
            total = end + 4 + length
            if len(self.buf) < total:
                return False
        else:  # chunked
            term = self.buf.find(b"\r\n0\r\n\r\n", end)
            if term < 0:
                return False
            total = term + 7
        self.buf = self.buf[total:]
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.count += 1
        if self.count >= self.n:
            if not self.done.done():
                self.done.set_result(None)
            return False
        # like a real client, answer after the gateway is idle again
        req = self.requests[self.count % len(self.requests)]
        self.loop.call_soon(self.loop.call_soon, self.loop.call_soon, self.send, req)
        return bool(self.buf)


async def run(n: int, responses: dict[str, bytes], ca: Path, split: bool) -> float:
    work = Path(tempfile.mkdtemp(prefix="hoopd-inproc-kube-"))
    (work / "sa-token").write_text("bench-sa-token")
    raw = {
        "gateway": {"data_dir": str(work / "var"), "log_level": "warning"},
        "connections": [
            {
                "name": "kube",
                "protocol": "kubernetes",
                "listen": f"127.0.0.1:{free_port()}",
                "allow_groups": ["dev"],
                "upstream": {"url": "https://127.0.0.1:9", "ca": str(ca), "token": f"file:{work / 'sa-token'}"},
            }
        ],
    }
    registry = Registry.from_entry_points()
    daemon = Daemon(parse_config(raw, registry), registry)
    await daemon.start()
    token = GatewayTokens(load_or_create_token_key(work / "var" / KEY_FILE_NAME)).issue("bench", ["dev"], 3600)
    handler: Any = daemon.handlers["kube"]
    loop = asyncio.get_running_loop()
    client = _Client(loop, request_bytes(token), n)
    upstream = UpstreamConn()

    def to_upstream(data: bytes) -> None:
        target = data[4 : data.index(b" ", 4)].decode()
        loop.call_soon(upstream.data_received, responses[target])

    async def connect() -> UpstreamConn:
        return upstream

    handler.proxy.target.connect = connect
    upstream.connection_made(MemoryTransport(to_upstream))
    proto = handler.protocol() if hasattr(handler, "protocol") else handler._web()
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

        proto.data_received = timed(proto.data_received, 0)
        upstream.data_received = timed(upstream.data_received, 1)  # type: ignore[method-assign]
    client.send = proto.data_received
    proto.connection_made(MemoryTransport(client.received))
    proto.data_received(client.requests[0])
    await asyncio.sleep(0.1)
    started = time.process_time()
    main_started = time.thread_time()
    wall = time.perf_counter()
    await client.done
    wall = time.perf_counter() - wall
    cpu = time.process_time() - started
    main_cpu = time.thread_time() - main_started
    per = max(1, n - 1)
    print(f"responses by status: { {k.decode(): v for k, v in client.statuses.items()} }, wall {wall / per * 1e6:.1f} us per request")
    print(
        f"main thread: {main_cpu / per * 1e6:.1f} us per request,"
        f" other threads (recorder) {(cpu - main_cpu) / per * 1e6:.1f} us"
    )
    if split:
        print(
            f"handler: client side {handler_ns[0] / per / 1000:.1f} us, upstream side"
            f" {handler_ns[1] / per / 1000:.1f} us per request (thread CPU in data_received)"
        )
    await daemon.stop()
    return cpu / per * 1e6


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--split", action="store_true", help="also time the two data_received callbacks")
    args = ap.parse_args()
    tls_dir = Path(tempfile.mkdtemp(prefix="hoopd-inproc-kube-tls-"))
    responses = capture(tls_dir)
    if args.profile:
        prof = cProfile.Profile(time.thread_time)  # CPU of the main thread, not waits
        prof.enable()
    us = uvloop.run(run(args.requests, responses, tls_dir / "ca.pem", args.split))
    if args.profile:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
    print(f"{us:.1f} us CPU per request (all threads); load average {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
