"""Review rules end to end: hold-and-wait and 403-then-retry, approved by a
reviewer through the admin API."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import aiohttp

from tests.http.conftest import KEYS, Env, auth
from tests.http.recordings import session_events, sessions_with


def admin(env: Env, method: str, path: str, user: str = "bob") -> tuple[int, Any]:
    req = urllib.request.Request(env.admin(path), method=method, headers=auth(user))
    if method == "POST":
        req.data = b"{}"
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


async def pending_for(env: Env, connection: str, text: str) -> dict[str, Any]:
    for _ in range(100):
        status, body = await asyncio.to_thread(
            admin, env, "GET", f"/api/v1/approvals?state=pending&connection={connection}"
        )
        assert status == 200, body
        items = body if isinstance(body, list) else body.get("approvals", [])
        for a in items:
            if a["command_text"] == text:
                return a
        await asyncio.sleep(0.1)
    raise AssertionError(f"no pending approval for {text!r}")


async def test_hold_mode_waits_for_the_reviewer(env: Env) -> None:
    async with aiohttp.ClientSession(headers=auth("alice")) as s:
        request = asyncio.ensure_future(s.delete(env.url("api", "/api/items/7")))
        approval = await pending_for(env, "api", "DELETE /api/items/7")
        assert not request.done()  # held at the gateway
        assert approval["requester"] == "alice"
        # nobody approves their own request
        status, _ = await asyncio.to_thread(
            admin, env, "POST", f"/api/v1/approvals/{approval['id']}/approve", "alice"
        )
        assert status == 403
        status, _ = await asyncio.to_thread(
            admin, env, "POST", f"/api/v1/approvals/{approval['id']}/approve"
        )
        assert status == 200
        resp = await asyncio.wait_for(request, 10)
        assert resp.status == 200
        assert (await resp.json())["method"] == "DELETE"
        resp.release()

        # denied by the reviewer: 403 naming the approval
        request = asyncio.ensure_future(s.delete(env.url("api", "/api/items/8")))
        approval = await pending_for(env, "api", "DELETE /api/items/8")
        await asyncio.to_thread(admin, env, "POST", f"/api/v1/approvals/{approval['id']}/deny")
        resp = await asyncio.wait_for(request, 10)
        assert resp.status == 403
        body = await resp.json()
        assert body["error"] == "denied" and body["approval_id"] == approval["id"]
        resp.release()
    sid = sessions_with(env.recordings, "DELETE /api/items/7")[-1]
    states = [e.state for e in session_events(env.recordings, sid, "approval")]
    assert states[:3] == ["pending", "approved", "used"]


async def test_retry_mode_refuses_then_lets_one_retry_through(env: Env) -> None:
    url = env.url("retry", "/api/items/9?force=1")
    text = "DELETE /api/items/9?force=1"
    async with aiohttp.ClientSession(headers=auth("alice")) as s:
        async with s.delete(url) as resp:
            assert resp.status == 403
            first = await resp.json()
        assert first["error"] == "approval_required" and first["retry"] is True
        approval_id = first["approval_id"]
        assert resp.headers["X-Hoopd-Approval"] == approval_id
        # reviewers are told, as in hold mode
        for _ in range(100):
            if any(p["approval"]["id"] == approval_id for p in env.webhook.received):
                break
            await asyncio.sleep(0.05)
        announced = [p for p in env.webhook.received if p["approval"]["id"] == approval_id]
        assert [p["event"] for p in announced] == ["approval.created"]
        # retrying before a decision names the same pending approval
        async with s.delete(url) as resp:
            assert resp.status == 403
            assert (await resp.json())["approval_id"] == approval_id
        status, _ = await asyncio.to_thread(
            admin, env, "POST", f"/api/v1/approvals/{approval_id}/approve"
        )
        assert status == 200
        # a different request (other query) is not covered by the approval
        async with s.delete(env.url("retry", "/api/items/9")) as resp:
            assert resp.status == 403
            assert (await resp.json())["approval_id"] != approval_id
    # the retry goes through once, even on a new connection
    async with aiohttp.ClientSession(headers=auth("alice")) as s:
        async with s.delete(url) as resp:
            assert resp.status == 200, await resp.text()
        async with s.delete(url) as resp:
            assert resp.status == 403
            again = await resp.json()
        assert again["approval_id"] != approval_id
    # another user cannot ride on alice's approval
    async with aiohttp.ClientSession(headers=auth("bob")) as s:
        status, _ = await asyncio.to_thread(
            admin, env, "POST", f"/api/v1/approvals/{again['approval_id']}/approve"
        )
        async with s.delete(url) as resp:
            assert resp.status == 403
            assert (await resp.json())["approval_id"] not in (approval_id, again["approval_id"])
    assert text


async def test_retry_mode_binds_the_body(env: Env) -> None:
    url = env.url("retry", "/api/bulk")
    async with aiohttp.ClientSession(headers=auth("alice")) as s:
        async with s.delete(url, json={"ids": [1, 2]}) as resp:
            assert resp.status == 403
            approval_id = (await resp.json())["approval_id"]
        await asyncio.to_thread(admin, env, "POST", f"/api/v1/approvals/{approval_id}/approve")
        async with s.delete(url, json={"ids": [1, 2, 3]}) as resp:
            assert resp.status == 403  # other body: not approved
        async with s.delete(url, json={"ids": [1, 2]}, headers={"X-Hoopd-Approval": approval_id}) as resp:
            assert resp.status == 200
            assert (await resp.json())["body_len"] == len(json.dumps({"ids": [1, 2]}))
    assert KEYS
