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
