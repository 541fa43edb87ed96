from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from hoopd.approvals import Approval, ApprovalState
from hoopd.approvals.webhook import WebhookNotifier


class Hook:
    def __init__(self) -> None:
        self.fail_first = 0
        self.received: list[tuple[dict[str, Any], dict[str, str], bytes]] = []
        self.calls = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls <= self.fail_first:
            return web.Response(status=503)
        body = await request.read()
        self.received.append((json.loads(body), dict(request.headers), body))
        return web.Response(status=204)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    app = web.Application()
    app.router.add_post("/hook", h.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    h.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    yield h
    await runner.cleanup()


def approval(state: ApprovalState = ApprovalState.PENDING) -> Approval:
    now = time.time()
    return Approval(
        id="apr_1",
        requester="alice",
        requester_groups=frozenset({"dev"}),
        connection="prod-db",
        session_id="s1",
        command_text="DROP TABLE users",
        command_hash="ab" * 32,
        reasons=("ddl",),
        created_at=now,
        expires_at=now + 60,
        state=state,
        reviewer="bob" if state is not ApprovalState.PENDING else "",
    )


async def test_json_with_retry_and_signature(hook: Hook) -> None:
    hook.fail_first = 2
    n = WebhookNotifier(hook.url, "json", retries=3, backoff=0.01, secret="s3cret")
    n.notify("approval.created", approval())
    assert hook.calls == 0  # fire-and-forget: nothing was sent while notify() ran
    assert await n.drain(5)
    await n.close()
    assert hook.calls == 3 and n.sent == 1
    payload, headers, body = hook.received[0]
    assert payload["event"] == "approval.created"
    assert payload["approval"]["command_text"] == "DROP TABLE users"
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Hoopd-Signature"] == f"sha256={expected}"


async def test_slack_format(hook: Hook) -> None:
    n = WebhookNotifier(hook.url, "slack", retries=0)
    n.notify("approval.created", approval())
    n.notify("approval.decided", approval(ApprovalState.APPROVED))
    assert await n.drain(5)
    await n.close()
    texts = [p["text"] for p, _, _ in hook.received]
    assert "DROP TABLE users" in texts[0] and "hoopd approvals approve apr_1" in texts[0]
    assert "approved by *bob*" in texts[1]


async def test_gives_up_and_bounded_queue() -> None:
    n = WebhookNotifier("http://127.0.0.1:9/nothing", retries=1, backoff=0.01, queue_size=2)
    for _ in range(5):
        n.notify("approval.created", approval())
    assert n.dropped >= 2
    assert await n.drain(10)
    assert n.failed >= 1 and n.sent == 0
    await n.close()
    await asyncio.sleep(0)
