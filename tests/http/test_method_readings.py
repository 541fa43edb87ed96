"""A request is judged as every method the backend may act on: its method
upper-cased (Werkzeug and Jetty read ``delete`` as ``DELETE``) and the
method named by an override field or a ``_method`` query parameter
(Express's method-override, Rack, Symfony, Laravel, Google APIs). Before,
rules keyed on the method saw only the request line's: ``POST`` with
``X-HTTP-Method-Override: DELETE`` or a ``delete`` request reached the
upstream at once past a ``DELETE /api/**`` review rule."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.http.conftest import Env, auth, raw_request
from tests.http.test_approvals import admin, pending_for


def _raw(env: Env, method: str, path: str, extra: str = "") -> bytes:
    return raw_request(env, method, path, headers=extra, body=b"{}")


@pytest.mark.parametrize(
    ("method", "path", "headers", "text"),
    [
        ("POST", "/api/items/31", {"X-HTTP-Method-Override": "DELETE"}, "POST /api/items/31"),
        ("POST", "/api/items/32", {"X-HTTP-Method": "delete"}, "POST /api/items/32"),
        ("POST", "/api/items/33", {"X-Method-Override": "DELETE"}, "POST /api/items/33"),
        ("POST", "/api/items/34?_method=DELETE", {}, "POST /api/items/34?_method=DELETE"),
        ("PUT", "/api/items/35?x=1&_method=delete", {}, "PUT /api/items/35?x=1&_method=delete"),
    ],
)
async def test_method_override_is_held_for_review(
    env: Env, method: str, path: str, headers: dict[str, str], text: str
) -> None:
    before = len(env.upstream.requests)
    async with aiohttp.ClientSession(headers=auth("alice")) as s:
        request = asyncio.ensure_future(
            s.request(method, env.url("api", path), headers=headers, json={})
        )
        approval = await pending_for(env, "api", text)
        assert not request.done()  # held at the gateway
        assert len(env.upstream.requests) == before
        await asyncio.to_thread(admin, env, "POST", f"/api/v1/approvals/{approval['id']}/deny")
        resp = await asyncio.wait_for(request, 10)
        assert resp.status == 403
        assert (await resp.json())["approval_id"] == approval["id"]
        resp.release()
    assert len(env.upstream.requests) == before


def test_method_override_is_denied(env: Env) -> None:
    """``POST /admin/**`` is denied; a GET the backend takes for a POST too."""
    before = len(env.upstream.requests)
    data = _raw(env, "GET", "/admin/users", "X-HTTP-Method-Override: POST\r\n")
    assert data.startswith(b"HTTP/1.1 403"), data
    assert b"may act as POST" in data
    assert len(env.upstream.requests) == before


@pytest.mark.parametrize("method", ["post", "Post"])
def test_lower_case_method_is_denied(env: Env, method: str) -> None:
    data = _raw(env, method, "/admin/users")
    assert data.startswith(b"HTTP/1.1 403"), data
    assert b'"error":"denied"' in data


async def test_lower_case_delete_is_held_for_review(env: Env) -> None:
    loop = asyncio.get_running_loop()
    request = loop.run_in_executor(None, _raw, env, "delete", "/api/items/36")
    approval = await pending_for(env, "api", "delete /api/items/36")
    assert not request.done()
    await asyncio.to_thread(admin, env, "POST", f"/api/v1/approvals/{approval['id']}/deny")
    data = await asyncio.wait_for(request, 10)
    assert data.startswith(b"HTTP/1.1 403"), data


def test_plain_requests_are_judged_as_before(env: Env) -> None:
    before = len(env.upstream.requests)
    data = _raw(env, "POST", "/api/items/37", "X-HTTP-Method-Override: PATCH\r\n")
    assert data.startswith(b"HTTP/1.1 200"), data
    assert env.upstream.requests[before]["headers"]["X-HTTP-Method-Override"] == "PATCH"


def test_readings_and_their_merge() -> None:
    from hoopd.config import RiskSection
    from hoopd.model import Verdict
    from protocols.http.config import PathRule
    from protocols.http.risk import HttpRiskScorer, method_readings

    assert method_readings("GET", [], "a=1") == ("GET",)
    assert method_readings("HEAD", [], "") == ("HEAD", "GET")
    assert method_readings("delete", [], "") == ("delete", "DELETE")
    assert method_readings("POST", ["put, Delete"], "_method=patch&_METHOD=%47ET&%5Fmethod=put;_method=HEAD") == (
        "POST", "PUT", "DELETE", "PATCH", "GET", "HEAD",
    )  # fmt: skip
    scorer = HttpRiskScorer(
        (
            PathRule(method="POST", path="/scratch/**", action=Verdict.ALLOW, id="scratch"),
            PathRule(method="*", path="/open/**", action=Verdict.ALLOW, id="open"),
        ),
        RiskSection.model_validate({"rules": [{"match": "delete", "action": "review"}]}),
    )
    a = scorer.assess_readings(("POST", "DELETE"), "/scratch/a", "POST /scratch/a")
    # the allow for POST does not stand for the DELETE the backend may do
    assert a.rule_verdicts == {"delete": Verdict.REVIEW} and "delete" in a.categories
    a = scorer.assess_readings(("POST", "DELETE"), "/open/a", "POST /open/a")
    assert a.rule_verdicts == {"open": Verdict.ALLOW, "delete": Verdict.REVIEW}


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/x-www-form-urlencoded", "name=x&_method=delete"),  # Rails' default
        ("multipart/form-data; boundary=XyZ",
         '--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n'),
        ("application/json", '{"name": "x", "_method": "DELETE"}'),  # Laravel
    ],
)  # fmt: skip
async def test_method_field_in_the_body_is_held_for_review(env: Env, ctype: str, body: str) -> None:
    before = len(env.upstream.requests)
    path = f"/api/items/4{len(ctype)}"
    async with aiohttp.ClientSession(headers=auth("alice")) as s:
        request = asyncio.ensure_future(
            s.post(env.url("api", path), data=body.encode(), headers={"Content-Type": ctype})
        )
        approval = await pending_for(env, "api", f"POST {path}")
        assert not request.done()
        assert len(env.upstream.requests) == before
        await asyncio.to_thread(admin, env, "POST", f"/api/v1/approvals/{approval['id']}/deny")
        resp = await asyncio.wait_for(request, 10)
        assert resp.status == 403
        resp.release()
    assert len(env.upstream.requests) == before


def test_body_without_a_method_field_passes(env: Env) -> None:
    before = len(env.upstream.requests)
    data = _raw(env, "POST", "/api/items/49", "Content-Type: application/json\r\n")
    assert data.startswith(b"HTTP/1.1 200"), data
    assert len(env.upstream.requests) == before + 1


def test_head_is_judged_as_the_get_it_runs(env: Env) -> None:
    """``risk.rules`` deny ``^GET /api/forbidden``: HEAD runs the same GET
    handler on nearly every backend (aiohttp's add_get included), so it is
    denied too; before, it reached the upstream."""
    before = len(env.upstream.requests)
    data = raw_request(env, "HEAD", "/api/forbidden/x")
    assert data.startswith(b"HTTP/1.1 403"), data
    assert len(env.upstream.requests) == before
