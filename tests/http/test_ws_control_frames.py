"""WebSocket control frames from the upstream carry text too: a close
frame's reason (shown to the client as ``CloseEvent.reason``) and a ping's
payload. They passed unchanged while text messages were masked, so an
upstream closing with "session of alice@example.com expired" or echoing the
credential the gateway injects in a close reason handed them to the client.
Now their payloads are content-masked (and the injected credential
redacted) as text messages are, the close code kept."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.http.conftest import UPSTREAM_TOKEN, Env, auth


async def test_close_reason_is_masked(env: Env) -> None:
    async with (
        aiohttp.ClientSession(headers=auth("alice")) as s,
        s.ws_connect(env.url("api", "/ws?control=close")) as ws,
    ):
        await ws.send_str(f"close:session of alice@example.com expired (key {UPSTREAM_TOKEN})")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE, msg
        assert msg.data == 4001
        assert "alice@example.com" not in msg.extra and UPSTREAM_TOKEN not in msg.extra, msg.extra
        assert msg.extra.startswith("session of [EMAIL] expired"), msg.extra


async def test_ping_payload_is_masked(env: Env) -> None:
    async with (
        aiohttp.ClientSession(headers=auth("alice")) as s,
        s.ws_connect(env.url("api", "/ws?control=ping"), autoping=False) as ws,
    ):
        await ws.send_str("ping:EMP-123456")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.PING, msg
        assert msg.data == b"[EMPLOYEE_ID]"
        await ws.send_str("after")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == "echo:after"
