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
