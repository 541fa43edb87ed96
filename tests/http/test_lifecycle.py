"""Sessions ended from outside: a shutdown answers a held request with 503
and closes the connection; the recording says why."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp

from hoopd.identity.apikeys import hash_api_key
from tests.helpers import Daemon, free_port
from tests.http.conftest import KEYS, RULES, Env, auth
from tests.http.recordings import session_events, sessions_with


async def test_shutdown_ends_a_held_request_with_503(env: Env, tmp_path: Path) -> None:
    port = free_port()
    config = {
        "gateway": {"drain_timeout": "1s"},
        "identity": {
            "api_keys": [{"name": "alice", "sha256": hash_api_key(KEYS["alice"][0]), "groups": ["dev"]}]
        },
        "connections": [
            {
                "name": "held",
                "protocol": "http",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"url": f"http://127.0.0.1:{env.upstream.port}"},
                "allow_groups": ["dev"],
                "risk": {"reviewers": ["reviewers"]},
                "options": {"rules": RULES},
            }
        ],
    }
    daemon = await asyncio.to_thread(lambda: Daemon(tmp_path, config).start())
    try:
        async with aiohttp.ClientSession(headers=auth("alice")) as s:
            async with s.get(f"http://127.0.0.1:{port}/echo/before") as resp:
                assert resp.status == 200
            held = asyncio.ensure_future(s.delete(f"http://127.0.0.1:{port}/api/x"))
            await asyncio.sleep(0.5)
            assert not held.done()
            daemon.signal(signal.SIGTERM)
            resp = await asyncio.wait_for(held, 15)
            assert resp.status == 503
            body = await resp.json()
            assert body["error"] == "shutdown"
            resp.release()
    finally:
        await asyncio.to_thread(daemon.stop)
    sid = sessions_with(daemon.recordings, "DELETE /api/x")[0]
    ends = session_events(daemon.recordings, sid, "session_end")
    assert ends and ends[0].reason == "shutdown"


async def test_idle_timeout_counts_fast_path_requests(env: Env, tmp_path: Path) -> None:
    port = free_port()
    config = {
        "identity": {
            "api_keys": [{"name": "alice", "sha256": hash_api_key(KEYS["alice"][0]), "groups": ["dev"]}]
        },
        "connections": [
            {
                "name": "idle",
                "protocol": "http",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"url": f"http://127.0.0.1:{env.upstream.port}"},
                "allow_groups": ["dev"],
                "options": {"idle_timeout": "1s"},
            }
        ],
    }
    daemon = await asyncio.to_thread(lambda: Daemon(tmp_path, config).start())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            f"GET /echo/idle HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['alice'][0]}\r\n\r\n"
        ).encode()
        # busy for 2.5 s (longer than the idle timeout): the connection stays open
        for _ in range(12):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(0.2)
        # then idle: closed by the gateway
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await asyncio.to_thread(daemon.stop)


async def test_response_timeout_after_kept_alive_requests(env: Env, tmp_path: Path) -> None:
    """The response timer of a kept-alive upstream connection serves its
    exchanges one after the other: requests answered before it would fire do
    not trip it, and a request whose answer is late gets 504 once its own
    response_timeout is up (not earlier: a deadline an earlier request set)."""
    port = free_port()
    config = {
        "identity": {
            "api_keys": [{"name": "alice", "sha256": hash_api_key(KEYS["alice"][0]), "groups": ["dev"]}]
        },
        "connections": [
            {
                "name": "timed",
                "protocol": "http",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"url": f"http://127.0.0.1:{env.upstream.port}", "response_timeout": "1s"},
                "allow_groups": ["dev"],
            }
        ],
    }
    daemon = await asyncio.to_thread(lambda: Daemon(tmp_path, config).start())
    loop = asyncio.get_running_loop()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def get(path: str) -> tuple[bytes, bytes]:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['alice'][0]}\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            return head, await reader.readexactly(length)

        # 1.6 s of quick requests on one upstream connection: past the first deadline
        started = loop.time()
        while loop.time() - started < 1.6:
            head, _ = await get("/echo/quick")
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.1)
        # the timer last armed for a quick request fires meanwhile, and must wait on
        await asyncio.sleep(0.3)
        sent = loop.time()
        head, body = await get("/slow?s=3")
        waited = loop.time() - sent
        assert head.startswith(b"HTTP/1.1 504"), head
        assert b"upstream_timeout" in body
        assert 0.9 <= waited < 2.5, waited
        writer.close()
    finally:
        await asyncio.to_thread(daemon.stop)
    sid = sessions_with(daemon.recordings, "GET /slow?s=3")[0]
    results = [r for r in session_events(daemon.recordings, sid, "result") if r.status == "504"]
    assert len(results) == 1
