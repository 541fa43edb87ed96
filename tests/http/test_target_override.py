"""``X-Original-URL`` and ``X-Rewrite-URL`` name the target some backends
route by instead of the request line's (Symfony and Zend Framework before
2018, IIS URL Rewrite setups): ``POST /api/x`` with ``X-Original-URL:
/admin/users`` runs the admin handler there. Rules now also see those
targets (failing closed: deny/review on any, allow only on all); before,
the request passed as a POST to /api/x."""

from __future__ import annotations

import pytest

from tests.http.conftest import Env
from tests.http.test_method_readings import _raw


def _post(env: Env, path: str, extra: str) -> bytes:
    return _raw(env, "POST", path, extra)


@pytest.mark.parametrize(
    "field",
    [
        "X-Original-URL: /admin/users",
        "X-Rewrite-URL: /admin/users?x=1",
        "x-original-url: /api/../%61dmin/users",
        "X-Original-URL: http://backend/admin/users",
    ],
)
def test_target_override_is_judged(env: Env, field: str) -> None:
    before = len(env.upstream.requests)
    data = _post(env, "/api/x", field + "\r\n")
    assert data.startswith(b"HTTP/1.1 403"), data
    assert b"may act as POST /admin/users" in data
    assert len(env.upstream.requests) == before


def test_other_target_overrides_pass(env: Env) -> None:
    before = len(env.upstream.requests)
    data = _post(env, "/api/x", "X-Original-URL: /api/y\r\n")
    assert data.startswith(b"HTTP/1.1 200"), data
    assert env.upstream.requests[before]["headers"]["X-Original-URL"] == "/api/y"
