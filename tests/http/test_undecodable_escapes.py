"""A path escape that is not UTF-8 (``/files/caf%E9``, a Latin-1 name) on a
connection with ``risk.rules`` patterns: the fully decoded reading of the
path held a surrogate escape, RE2 (UTF-8 only) raised UnicodeEncodeError
while the request was judged, and the client got no answer at all (curl:
"Empty reply from server"), on a fresh or a kept-alive connection. Now such
bytes are matched as their escapes and the request is judged as any other."""

from __future__ import annotations

import subprocess

from tests.http.conftest import KEYS, Env


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = ["curl", "-sS", "--max-time", "10", "-H", f"Authorization: Bearer {KEYS['alice'][0]}"]
    return subprocess.run([*cmd, *args], capture_output=True, timeout=15)


def test_undecodable_path_escape_is_answered(env: Env) -> None:
    before = len(env.upstream.requests)
    # fresh connection (general path), then a kept-alive one (fast path)
    out = curl(
        "-i",
        env.url("api", "/echo/caf%E9"),
        env.url("api", "/echo/ok"),
        env.url("api", "/echo/x%FF%2Fy"),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(b"HTTP/1.1 200") == 3, out.stdout
    paths = [r["raw_path"] for r in env.upstream.requests[before:]]
    assert paths == ["/echo/caf%E9", "/echo/ok", "/echo/x%FF%2Fy"]


def test_rules_still_apply_to_such_paths(env: Env) -> None:
    before = len(env.upstream.requests)
    out = curl(
        "-i",
        "--path-as-is",
        env.url("api", "/api/forbidden/caf%E9"),
        env.url("api", "/api/%E9/..%2Fforbidden"),
    )
    assert out.stdout.count(b"HTTP/1.1 403") == 2, out.stdout
    assert len(env.upstream.requests) == before
