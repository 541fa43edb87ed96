"""The upstream URL's path is a base (``url: https://billing/v2``: request
paths are appended to ``/v2``). Normalization keeps a path from climbing
above the root, but backends read more: ``/..;/admin`` reaches the upstream
as ``/v2/..;/admin``, which Tomcat and other servlet containers read as
``/admin``, outside the base; ``/..%2Fadmin`` likewise for backends that
decode ``%2F`` first, ``..%5C`` for those that take ``\\`` for ``/``.
Such a request is now refused with 400 on a connection with a base path;
before, it was sent on as is."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.http.conftest import Env


def curl(env: Env, path: str) -> bytes:
    out = subprocess.run(
        ["curl", "-sS", "-i", "--path-as-is", "--max-time", "10", env.url("prefix", path)],
        capture_output=True, timeout=15,
    )  # fmt: skip
    return out.stdout


@pytest.mark.parametrize(
    "path",
    ["/..;/admin", "/a/..;/..;/admin", "/..%2Fadmin", "/a%2F..%2F..%2Fadmin", "/..%5Cadmin",
     "/%252e%252e/admin", "/x/..;jsessionid=1/..;/admin"],
)  # fmt: skip
def test_path_leaving_the_base_is_refused(env: Env, path: str) -> None:
    before = len(env.upstream.requests)
    data = curl(env, path)
    assert data.startswith(b"HTTP/1.1 400"), (path, data)
    assert b"base path" in data
    assert len(env.upstream.requests) == before


@pytest.mark.parametrize("path", ["/a/..;/b", "/a/b%2F..%2Fc", "/a;x/b", "/../a"])
def test_paths_within_the_base_pass(env: Env, path: str) -> None:
    data = curl(env, path)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), (path, data)
    assert json.loads(body)["raw_path"].startswith("/echo/base/")


@pytest.mark.parametrize(
    ("field", "status"),
    [
        ("X-Original-URL: /admin/users", b"400"),  # the backend's whole path: outside /echo/base
        ("X-Rewrite-URL: /echo/basement", b"400"),
        ("X-Original-URL: /echo/base/..;/..;/x", b"400"),
        ("X-Original-URL: /echo/base/x?y=1", b"200"),
    ],
)
def test_target_override_outside_the_base_is_refused(env: Env, field: str, status: bytes) -> None:
    out = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "10", "-H", field, env.url("prefix", "/a")],
        capture_output=True, timeout=15,
    )  # fmt: skip
    assert out.stdout.startswith(b"HTTP/1.1 " + status), (field, out.stdout)
