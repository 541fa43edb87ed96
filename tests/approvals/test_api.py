from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hoopd.approvals import ApprovalState, SQLiteStore
from hoopd.approvals.api import add_routes
from hoopd.approvals.client import ApiError, ApprovalsClient
from hoopd.approvals.models import Approval, Grant
from hoopd.identity import (
    Authenticator,
    IdentityConfig,
    OIDCConfig,
    generate_api_key,
)
from hoopd.model import AuthMethod, Identity

from ..identity.issuer import AUDIENCE, LocalIssuer

BOT_KEY, BOT_SHA = generate_api_key()
ALICE = Identity("alice", frozenset({"dev", "dba"}), AuthMethod.OIDC)


class RecordingNotifier:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def notify(self, event: str, obj: Approval | Grant) -> None:
        self.events.append((event, obj.id))


@dataclass
class Env:
    client: TestClient[Any, Any]
    store: SQLiteStore
    auth: Authenticator
    notifier: RecordingNotifier
    issuer: LocalIssuer

    def token(self, sub: str, *groups: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.auth.tokens.issue(sub, groups, 600)}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    issuer = LocalIssuer()
    await issuer.start()
    cfg = IdentityConfig.model_validate(
        {
            "oidc": OIDCConfig(issuer=issuer.url, audience=AUDIENCE),
            "api_keys": [{"name": "bot", "sha256": BOT_SHA, "groups": ["agents"]}],
            "gateway_tokens": {"max_ttl_seconds": 3600},
        }
    )
    auth = Authenticator(cfg, Ed25519PrivateKey.generate())
    store = SQLiteStore(tmp_path / "state.sqlite3")
    notifier = RecordingNotifier()
    app = web.Application()
    add_routes(
        app,
        store,
        auth,
        lambda conn: {"dba"} if conn.startswith("prod") else {"dev"},
        auth.tokens,
        notifier,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Env(client, store, auth, notifier, issuer)
    finally:
        await client.close()
        await store.close()
        await auth.close()
        await issuer.stop()


async def test_unauthenticated(env: Env) -> None:
    r = await env.client.get("/api/v1/approvals")
    assert r.status == 401
    assert (await r.json())["reason"] == "missing"
    assert "Bearer" in r.headers["WWW-Authenticate"]
    r = await env.client.get("/api/v1/approvals", headers={"Authorization": "Bearer hgt1.x.y"})
    assert r.status == 401 and (await r.json())["reason"] == "malformed"
    r = await env.client.get("/api/v1/approvals", headers={"Authorization": "Bearer nope"})
    assert r.status == 401 and (await r.json())["reason"] == "unknown_api_key"
    r = await env.client.get(
        "/api/v1/approvals", headers={"Authorization": "Bearer " + env.issuer.forge_none()}
    )
    assert r.status == 401 and (await r.json())["reason"] == "alg_not_allowed"


async def test_approve_flow(env: Env) -> None:
    a = await env.store.create(ALICE, "prod-db", "s1", "DROP TABLE users", reasons=["ddl"])
    waiter = asyncio.create_task(env.store.wait(a.id, 10))

    # the requester sees it but cannot approve it, even being a reviewer (self-approval)
    r = await env.client.get(f"/api/v1/approvals/{a.id}", headers=env.token("alice", "dba"))
    assert r.status == 200 and (await r.json())["command_text"] == "DROP TABLE users"
    r = await env.client.post(
        f"/api/v1/approvals/{a.id}/approve", headers=env.token("alice", "dba")
    )
    assert r.status == 403
    body = await r.json()
    assert body["error"] == "self_approval" and "own request" in body["message"]

    # a non-reviewer: not visible (404) / cannot decide
    r = await env.client.post(
        f"/api/v1/approvals/{a.id}/approve", headers=env.token("mallory", "dev")
    )
    assert r.status == 404
    # the bot is authenticated by API key but is no reviewer
    r = await env.client.get("/api/v1/approvals", headers={"Authorization": f"Bearer {BOT_KEY}"})
    assert r.status == 200 and (await r.json())["approvals"] == []

    # a reviewer lists and approves
    r = await env.client.get("/api/v1/approvals?state=pending", headers=env.token("bob", "dba"))
    assert [x["id"] for x in (await r.json())["approvals"]] == [a.id]
    r = await env.client.post(
        f"/api/v1/approvals/{a.id}/approve", headers=env.token("bob", "dba"), json={"comment": "ok"}
    )
    assert r.status == 200
    body = await r.json()
    assert (body["state"], body["reviewer"], body["comment"]) == ("approved", "bob", "ok")
    assert (await asyncio.wait_for(waiter, 2)).state is ApprovalState.APPROVED
    assert env.notifier.events == [("approval.decided", a.id)]

    # a second decision conflicts
    r = await env.client.post(f"/api/v1/approvals/{a.id}/deny", headers=env.token("carol", "dba"))
    assert r.status == 409 and (await r.json())["state"] == "approved"
    r = await env.client.get("/api/v1/approvals?state=bogus", headers=env.token("bob", "dba"))
    assert r.status == 400


async def test_reviewer_of_other_connection_forbidden(env: Env) -> None:
    a = await env.store.create(ALICE, "prod-db", "s1", "DELETE FROM t")
    # a dev reviewer reviews staging connections only; requester-visible rule does not apply
    r = await env.client.post(f"/api/v1/approvals/{a.id}/deny", headers=env.token("dan", "dev"))
    assert r.status == 404
    # someone who can see it (the requester's peer listing?) - the requester cannot decide
    b = await env.store.create(
        Identity("erin", frozenset({"dev"})), "staging-db", "s2", "TRUNCATE t"
    )
    r = await env.client.post(f"/api/v1/approvals/{b.id}/deny", headers=env.token("erin", "ops"))
    assert r.status == 403 and (await r.json())["error"] == "forbidden"


async def test_store_down_is_503(env: Env) -> None:
    await env.store.close()
    r = await env.client.get("/api/v1/approvals", headers=env.token("bob", "dba"))
    assert r.status == 503
    assert (await r.json())["error"] == "store_unavailable"


async def test_grants_flow(env: Env) -> None:
    r = await env.client.post(
        "/api/v1/grants",
        headers=env.token("alice", "dev"),
        json={"connection": "prod-db", "minutes": 30, "reason": "INC-1"},
    )
    assert r.status == 201
    g = await r.json()
    assert (g["subject"], g["state"]) == ("alice", "pending")
    r = await env.client.post(
        "/api/v1/grants", headers=env.token("alice"), json={"connection": "x"}
    )
    assert r.status == 400
    r = await env.client.post(
        f"/api/v1/grants/{g['id']}/approve", headers=env.token("alice", "dba")
    )
    assert r.status == 403 and (await r.json())["error"] == "self_approval"
    r = await env.client.post(f"/api/v1/grants/{g['id']}/approve", headers=env.token("bob", "dba"))
    assert r.status == 200 and (await r.json())["state"] == "approved"
    assert await env.store.active_grant("alice", [], "prod-db") is not None
    r = await env.client.get("/api/v1/grants", headers=env.token("alice"))
    assert [x["id"] for x in (await r.json())["grants"]] == [g["id"]]
    # the grantee may give it up
    r = await env.client.post(f"/api/v1/grants/{g['id']}/revoke", headers=env.token("alice"))
    assert r.status == 200 and (await r.json())["state"] == "revoked"
    assert await env.store.active_grant("alice", [], "prod-db") is None
    assert [e for e, _ in env.notifier.events] == [
        "grant.requested",
        "grant.decided",
        "grant.revoked",
    ]


async def test_token_exchange(env: Env) -> None:
    oidc = env.issuer.sign()
    r = await env.client.post(
        "/api/v1/token", headers={"Authorization": f"Bearer {oidc}"}, json={"ttl": "30m"}
    )
    assert r.status == 200
    body = await r.json()
    assert body["subject"] == "alice" and body["ttl_seconds"] == 1800
    assert len(body["token"]) < 1000
    ident = await env.auth.authenticate(body["token"])
    assert ident.method is AuthMethod.GATEWAY_TOKEN and ident.groups == {"dev", "sre"}
    # capped at max_ttl_seconds
    r = await env.client.post(
        "/api/v1/token", headers={"Authorization": f"Bearer {oidc}"}, json={"ttl": "9h"}
    )
    assert (await r.json())["ttl_seconds"] == 3600
    # a gateway token or API key cannot be exchanged
    r = await env.client.post("/api/v1/token", headers=env.token("alice", "dev"))
    assert r.status == 403
    r = await env.client.post("/api/v1/token", headers={"Authorization": f"Bearer {BOT_KEY}"})
    assert r.status == 403
    r = await env.client.post(
        "/api/v1/token", headers={"Authorization": "Bearer " + env.issuer.sign(aud="x")}
    )
    assert r.status == 401 and (await r.json())["reason"] == "wrong_audience"


async def test_sync_client(env: Env) -> None:
    base = str(env.client.make_url("")).rstrip("/")
    a = await env.store.create(ALICE, "prod-db", "s1", "DROP TABLE users")
    bob = ApprovalsClient(base, env.auth.tokens.issue("bob", ["dba"], 600))
    alice = ApprovalsClient(base, env.auth.tokens.issue("alice", ["dba"], 600))

    def run() -> None:
        assert [x["id"] for x in bob.list(state="pending")] == [a.id]
        assert bob.show(a.id)["command_hash"] == a.command_hash
        with pytest.raises(ApiError) as ei:
            alice.approve(a.id)
        assert ei.value.status == 403 and ei.value.code == "self_approval"
        assert bob.deny(a.id, "no")["state"] == "denied"
        g = alice.grants.request("prod-db", 15, reason="why not")
        assert bob.grants.approve(g["id"])["state"] == "approved"
        assert [x["id"] for x in bob.grants.list(state="approved")] == [g["id"]]
        assert bob.grants.revoke(g["id"])["state"] == "revoked"
        with pytest.raises(ApiError) as ei:
            ApprovalsClient(base, "bogus").list()
        assert ei.value.status == 401
        with pytest.raises(ApiError) as ei:
            ApprovalsClient("http://127.0.0.1:9", "x", timeout=2).list()
        assert ei.value.status == 0 and "cannot reach" in str(ei.value)
        oidc = ApprovalsClient(base, env.issuer.sign())
        assert oidc.exchange_token("10m")["token"].startswith("hgt1.")

    await asyncio.to_thread(run)
