"""End to end through ``hoopd serve``: real clients (curl, aiohttp) against a
real upstream (aiohttp on loopback)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import ssl
import subprocess
import time
from typing import Any

import aiohttp
import pytest

from tests.http.conftest import (
    KEYS,
    UPSTREAM_HEADER_KEY,
    UPSTREAM_PASSWORD,
    UPSTREAM_QUERY_KEY,
    UPSTREAM_TOKEN,
    Env,
    auth,
)
from tests.http.recordings import session_events, sessions_with


def curl(*args: str, user: str | None = "alice", timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    cmd = ["curl", "-sS", "--max-time", str(timeout)]
    if user is not None:
        cmd += ["-H", f"Authorization: Bearer {KEYS[user][0]}"]
    return subprocess.run([*cmd, *args], capture_output=True, timeout=timeout + 5)


# -- identity and credentials -----------------------------------------------------


def test_keep_alive_and_credential_injection_with_curl(env: Env) -> None:
    before = len(env.upstream.requests)
    out = curl("-v", env.url("api", "/echo/one?x=1"), env.url("api", "/echo/two"))
    assert out.returncode == 0, out.stderr
    assert b"Re-using existing connection" in out.stderr
    seen = env.upstream.requests[before:]
    assert [r["path"] for r in seen] == ["/echo/one", "/echo/two"]
    for r in seen:
        # the client's API key never reaches the upstream; the configured token does
        assert r["headers"]["Authorization"] == f"Bearer {UPSTREAM_TOKEN}"
        assert KEYS["alice"][0] not in json.dumps(r)
        assert r["headers"]["Host"] == f"127.0.0.1:{env.upstream.port}"
        assert r["headers"]["X-Forwarded-For"] == "127.0.0.1"
    # one connection = one session carrying both requests as commands
    sid = sessions_with(env.recordings, "GET /echo/two")[0]
    texts = [e.text for e in session_events(env.recordings, sid, "command")]
    assert texts == ["GET /echo/one?x=1", "GET /echo/two"]


def test_basic_header_and_query_injection(env: Env) -> None:
    before = len(env.upstream.requests)
    out = curl(env.url("retry", "/echo/q?a=b"))
    assert out.returncode == 0, out.stderr
    r = env.upstream.requests[before]
    import base64

    expected = base64.b64encode(f"svc:{UPSTREAM_PASSWORD}".encode()).decode()
    assert r["headers"]["Authorization"] == f"Basic {expected}"
    assert r["headers"]["X-Api-Key"] == UPSTREAM_HEADER_KEY
    assert r["query"] == {"a": "b", "api_key": UPSTREAM_QUERY_KEY}


def test_missing_or_bad_credential_is_401(env: Env) -> None:
    for args in ([], ["-H", "Authorization: Bearer nope"], ["-H", "Authorization: Basic Zm9vOmJhcg=="]):
        out = curl("-i", *args, env.url("api", "/echo/x"), user=None)
        head, _, body = out.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 401"), out.stdout
        assert b'WWW-Authenticate: Bearer realm="hoopd"' in head
        assert json.loads(body)["error"] == "unauthorized"


def test_user_outside_allowed_groups_is_refused(env: Env) -> None:
    out = curl("-i", env.url("api", "/echo/x"), user="mallory")
    assert out.stdout.startswith(b"HTTP/1.1 403"), out.stdout
    assert json.loads(out.stdout.partition(b"\r\n\r\n")[2])["error"] == "denied"


def test_anonymous_connection_passes_client_authorization(env: Env) -> None:
    before = len(env.upstream.requests)
    out = curl("-H", "Authorization: Bearer client-own", env.url("open", "/echo/anon"), user=None)
    assert out.returncode == 0
    assert env.upstream.requests[before]["headers"]["Authorization"] == "Bearer client-own"


# -- masking -------------------------------------------------------------------------


def test_json_masked_by_key_path_and_content(env: Env) -> None:
    out = curl(env.url("api", "/json"))
    doc = json.loads(out.stdout)
    assert doc["email"] == "[EMAIL]"
    assert doc["password"] != "hunter2" and "hunter2" not in out.stdout.decode()
    assert "123-45-6789" not in out.stdout.decode()
    assert "EMP-123456" not in doc["profile"]["note"]
    assert doc["user"] == "alice" and doc["items"] == [1, 2, 3]


def test_json_split_across_chunks_is_masked(env: Env) -> None:
    out = curl("--raw", "-i", env.url("api", "/split-json"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert b"Content-Length:" in head  # buffered JSON is sent with a length
    doc = json.loads(body)
    assert doc["email"] == "[EMAIL]" and "hunter2" not in body.decode()


def test_gzip_json_is_decoded_and_masked(env: Env) -> None:
    out = curl("-i", "-H", "Accept-Encoding: gzip", env.url("api", "/gzip-json"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert b"Content-Encoding" not in head
    doc = json.loads(body)
    assert doc["email"] == "[EMAIL]" and doc["password"] != "hunter2"


def test_brotli_json_is_decoded_and_masked(env: Env) -> None:
    out = curl("-i", "-H", "Accept-Encoding: br", env.url("api", "/br-json"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"Content-Encoding" not in head
    assert b"br" in head.split(b"X-Accept-Encoding-Seen:")[1].split(b"\r\n")[0]
    doc = json.loads(body)
    assert doc["email"] == "[EMAIL]" and doc["password"] != "hunter2"


def test_deflate_text_is_decoded_and_masked(env: Env) -> None:
    out = curl("--compressed", env.url("api", "/deflate-text"))
    assert out.stdout == b"mail [EMAIL] for access\n"


def test_unmaskable_pass_and_refuse(env: Env) -> None:
    passed = curl(env.url("api", "/binary"))
    assert passed.stdout == b"\x00\x01 alice@example.com"
    refused = curl("-i", env.url("strict", "/binary"))
    assert refused.stdout.startswith(b"HTTP/1.1 502"), refused.stdout
    assert b"unmaskable" in refused.stdout


async def test_text_values_split_across_chunks_are_masked(env: Env) -> None:
    async with (
        aiohttp.ClientSession(headers=auth("alice")) as s,
        s.get(env.url("api", "/split-text")) as resp,
    ):
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        chunks = [c async for c in resp.content.iter_any()]
    body = b"".join(chunks)
    assert b"alice@example.com" not in body and b"AKIAIOSFODNN7EXAMPLE" not in body, body
    assert body.startswith(b"contact: [EMAIL] and key ") and body.endswith(b" done\n"), body


async def test_sse_streams_events_as_they_come_and_masks_them(env: Env) -> None:
    async with (
        aiohttp.ClientSession(headers=auth("alice")) as s,
        s.get(env.url("api", "/sse")) as resp,
    ):
        assert resp.headers["Content-Type"] == "text/event-stream"
        first = b""
        while b"\n\n" not in first:
            first += await asyncio.wait_for(resp.content.readany(), 5)
        # the first event arrived while the upstream still holds the second back
        assert first == b"event: hello\ndata: first [EMAIL]\n\n"
        env.upstream.open_gate("sse")
        rest = await asyncio.wait_for(resp.content.read(), 5)
    assert rest == b"data: second [EMAIL]\n\n"


# -- bodies ----------------------------------------------------------------------------


async def test_large_streaming_upload_and_download(env: Env) -> None:
    size = 24 * 1024 * 1024
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()

    async def gen() -> Any:
        for _ in range(size // len(block)):
            digest.update(block)
            yield block

    async with aiohttp.ClientSession(headers=auth("alice")) as s:
        async with s.post(env.url("api", "/upload"), data=gen()) as resp:
            got = await resp.json()
        assert got["size"] == size and got["sha256"] == digest.hexdigest()
        assert got["chunked"] == "chunked"
        # a fixed-length body larger than the inspect size streams as well
        body = os.urandom(3 * 1024 * 1024)
        async with s.post(env.url("api", "/upload"), data=body) as resp:
            got = await resp.json()
        assert got["size"] == len(body) and got["sha256"] == hashlib.sha256(body).hexdigest()
        # a large binary download (passed) and a large text download (stream-masked)
        for ctype in ("application/octet-stream", "text/plain"):
            n = 20 * 1024 * 1024
            h = hashlib.sha256()
            total = 0
            async with s.get(env.url("api", f"/big?n={n}&type={ctype}")) as resp:
                async for part in resp.content.iter_chunked(1 << 16):
                    h.update(part)
                    total += len(part)
            assert total == n
            expected = hashlib.sha256(b"0123456789abcdef" * 4096 * (n // 65536)).hexdigest()
            assert h.hexdigest() == expected


def test_chunked_upload_with_curl(env: Env, tmp_path: Any) -> None:
    path = tmp_path / "body.bin"
    data = os.urandom(300_000)
    path.write_bytes(data)
    out = curl(
        "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}", env.url("api", "/upload")
    )
    got = json.loads(out.stdout)
    assert got["size"] == len(data) and got["sha256"] == hashlib.sha256(data).hexdigest()


async def test_websocket_echo(env: Env) -> None:
    async with (
        aiohttp.ClientSession(headers=auth("alice")) as s,
        s.ws_connect(env.url("api", "/ws")) as ws,
    ):
        for i in range(5):
            await ws.send_str(f"hello {i}")
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.data == f"echo:hello {i}"
        payload = os.urandom(200_000)
        await ws.send_bytes(payload)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == payload
    sid = sessions_with(env.recordings, "GET /ws")[-1]
    assert [e.text for e in session_events(env.recordings, sid, "command")] == ["GET /ws"]


async def test_websocket_text_is_masked_both_on_the_wire_and_in_the_recording(env: Env) -> None:
    """Upstream -> client text frames go through the stream masker (also a
    value split across frames, around a ping); client -> upstream frames are
    relayed untouched and recorded unmasked (XOR removed), content-masked."""
    async with (
        aiohttp.ClientSession(headers=auth("alice")) as s,
        s.ws_connect(env.url("api", "/ws?masked=1"), compress=15) as ws,
    ):
        await ws.send_str("my mail is bob@example.com, ok")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == "echo:my mail is [EMAIL], ok"
        await ws.send_str("split")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.TEXT
        assert msg.data == "mail [EMAIL] and [EMPLOYEE_ID]."
        payload = os.urandom(70_000)  # binary: untouched
        await ws.send_bytes(payload)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == payload
    # the gateway did not offer permessage-deflate upstream (it could not mask)
    assert env.upstream.ws_extensions is None
    sid = sessions_with(env.recordings, "GET /ws?masked=1")[-1]
    outputs = [e for e in session_events(env.recordings, sid, "output") if e.command_seq]
    sent = b"".join(e.data for e in outputs if e.stream.value == "stdin")
    got = b"".join(e.data for e in outputs if e.stream.value == "stdout")
    assert b"my mail is [EMAIL], ok" in sent and b"bob@example.com" not in sent
    assert b"split" in sent
    assert b"echo:my mail is [EMAIL], ok" in got
    assert b"alice@example.com" not in got and b"EMP-123456" not in got
    assert b"bob@example.com" not in got


async def test_websocket_binary_refused_when_unmaskable_is_refuse(env: Env) -> None:
    """unmaskable: refuse also covers binary WebSocket messages from the
    upstream: text still flows masked, a binary message ends the tunnel with
    close 1003 before any of it reaches the client."""
    async with (
        aiohttp.ClientSession(headers=auth("alice")) as s,
        s.ws_connect(env.url("strict", "/ws")) as ws,
    ):
        await ws.send_str("mail bob@example.com")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == "echo:mail [EMAIL]"
        await ws.send_bytes(b"\x00 alice@example.com")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1003, msg
        assert ws.close_code == 1003
    deadline = time.monotonic() + 10
    while True:  # the strict connection's session (the recorder writes in the background)
        strict = [sid for sid in sessions_with(env.recordings, "GET /ws")
                  if any(e.connection == "strict" for e in session_events(env.recordings, sid, "session_start", 0))]
        if strict or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(strict) == 1
    sid = strict[0]
    errors = session_events(env.recordings, sid, "error")
    assert any("binary message" in e.message for e in errors), errors
    outputs = session_events(env.recordings, sid, "output")
    assert not any(b"alice@example.com" in e.data for e in outputs if e.stream.value == "stdout")


# -- TLS -----------------------------------------------------------------------------------


def test_tls_listener_and_verified_tls_upstream(env: Env) -> None:
    before = len(env.tls_upstream.requests)
    out = curl("--cacert", str(env.gateway_ca), env.url("tlsup", "/echo/tls", scheme="https"))
    assert out.returncode == 0, out.stderr
    r = env.tls_upstream.requests[before]
    assert r["headers"]["Authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert r["headers"]["X-Forwarded-Proto"] == "https"


def test_unverifiable_upstream_certificate_is_502(env: Env) -> None:
    out = curl("-i", env.url("badca", "/echo/x"))
    assert out.stdout.startswith(b"HTTP/1.1 502"), out.stdout


def test_upstream_prefix(env: Env) -> None:
    out = curl(env.url("prefix", "/a/b?c=d"), user=None)
    doc = json.loads(out.stdout)
    assert doc["path"] == "/echo/base/a/b"


# -- rules ---------------------------------------------------------------------------------


def test_deny_rules(env: Env) -> None:
    out = curl("-i", "-X", "POST", "-d", "{}", env.url("api", "/admin/users"))
    assert out.stdout.startswith(b"HTTP/1.1 403"), out.stdout
    body = json.loads(out.stdout.partition(b"\r\n\r\n")[2])
    assert body["error"] == "denied"
    # normalization: an encoded or dotted path cannot dodge the rule
    for path in ("/%61dmin/users", "/api/../admin/users", "//admin//users"):
        out = curl("-i", "--path-as-is", "-X", "POST", "-d", "{}", env.url("api", path))
        assert out.stdout.startswith(b"HTTP/1.1 403"), (path, out.stdout)
    # risk.rules pattern
    out = curl("-i", env.url("api", "/api/forbidden/x"))
    assert out.stdout.startswith(b"HTTP/1.1 403")
    # a GET on /admin is fine
    assert curl("-i", env.url("api", "/admin/users")).stdout.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "path",
    [
        "/admin;x/users",  # servlet containers drop ;params from each segment
        "/admin;jsessionid=1/users",
        "/api/..;/admin/users",  # Tomcat: '..;' is '..'
        "/admin%3Bx/users",
        "/ADMIN/users",  # case-insensitive backends (IIS, ASP.NET, Windows file systems)
        "/%41dmin/users",
        "/admin%2Fusers",  # %2F decoded by backends that route on the decoded path
        "/api%2F..%2Fadmin/users",
        "/api/..%5Cadmin/users",  # backslash as separator
        "/api\\..\\admin\\users",
        "/%2561dmin/users",  # double decoding
        "/./admin/users",
        "/admin/../admin/users",
    ],
)
def test_deny_rules_match_the_path_the_backend_acts_on(env: Env, path: str) -> None:
    before = len(env.upstream.requests)
    out = curl("-i", "--path-as-is", "-X", "POST", "-d", "{}", env.url("api", path))
    assert out.stdout.startswith(b"HTTP/1.1 403"), (path, out.stdout)
    assert len(env.upstream.requests) == before


def test_pipelined_requests(env: Env) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", env.ports["api"]), timeout=10) as s:
        req = (
            f"GET /echo/p1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['alice'][0]}\r\n\r\n"
            f"GET /echo/p2 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['alice'][0]}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        s.sendall(req)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.index(b"/echo/p1") < data.index(b"/echo/p2")


def test_garbage_gets_400_and_other_sessions_are_fine(env: Env) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", env.ports["api"]), timeout=10) as s:
        s.sendall(b"GARBAGE\x00\x01 nonsense\r\n\r\n")
        data = s.recv(65536)
    assert data.startswith(b"HTTP/1.1 400")
    assert curl("-i", env.url("api", "/echo/ok")).stdout.startswith(b"HTTP/1.1 200")


def test_unicode_digit_content_length_gets_400(env: Env) -> None:
    """'²' passes str.isdigit() but not int(): the parser raised ValueError
    in the read callback and the client's connection was dropped without
    an answer."""
    import socket

    with socket.create_connection(("127.0.0.1", env.ports["api"]), timeout=10) as s:
        s.sendall(
            b"POST /echo/cl HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEYS["alice"][0].encode()
            + b"\r\nContent-Length: \xb2\r\n\r\nab"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400"), data
    assert b"invalid Content-Length" in data


@pytest.mark.parametrize("path", ["/reason-json", "/reason-text"])
def test_reason_phrase_passes_through_and_is_recorded_as_sent(env: Env, path: str) -> None:
    """The upstream's status line reaches the client unchanged, also when the
    body is masked as a whole (JSON) and the head waits for it; the recording
    holds the status line the client got."""
    out = curl("-i", env.url("api", path))
    status_line = out.stdout.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 203 Served From Mirror"
    if path == "/reason-json":
        assert b"alice@example.com" not in out.stdout
    sid = sessions_with(env.recordings, f"GET {path}")[-1]
    blob = b"".join(o.data for o in session_events(env.recordings, sid, "output"))
    assert b"\r\nHTTP/1.1 203 Served From Mirror\r\n" in b"\r\n" + blob


@pytest.mark.parametrize("kind", ["text", "json"])
def test_response_headers_are_masked_and_recorded_as_sent(env: Env, kind: str) -> None:
    """Content-rule hits in response header values and the reason phrase are
    masked for the client; structural fields (ETag, CORS, ...) and
    Set-Cookie pass unchanged; the recording holds the head the client got
    (Set-Cookie redacted)."""
    out = curl("-i", env.url("api", f"/header-leak?type={kind}"))
    head = out.stdout.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert head.startswith(b"HTTP/1.1 200 OK for [EMAIL]\r\n"), head
    assert b"\r\nX-User-Email: [EMAIL]\r\n" in head
    assert b"\r\nX-Employee: EMP-" not in head and b"123456" not in head
    assert b"\r\nLocation: /users/[EMAIL]\r\n" in head
    assert b"\r\nSet-Cookie: remember=alice@example.com; Path=/; HttpOnly\r\n" in head
    assert b'ETag: W/"4111111111111111"\r\n' in head or b'ETag: "4111111111111111"\r\n' in head
    assert b"\r\nAccess-Control-Allow-Origin: http://10.0.0.1:8080\r\n" in head
    sid = sessions_with(env.recordings, f"GET /header-leak?type={kind}")[-1]
    blob = b"".join(o.data for o in session_events(env.recordings, sid, "output"))
    expected = head.replace(
        b"Set-Cookie: remember=alice@example.com; Path=/; HttpOnly", b"Set-Cookie: [REDACTED]"
    )
    assert expected in blob, (expected, blob)


def test_injected_upstream_credentials_are_never_recorded(env: Env) -> None:
    out = curl("-i", env.url("retry", "/header-leak"))
    assert out.stdout.startswith(b"HTTP/1.1 200"), out.stdout
    sid = sessions_with(env.recordings, "GET /header-leak")[-1]
    session_events(env.recordings, sid, "output")  # waits for the session's end
    raw = b"".join(p.read_bytes() for p in (env.recordings / sid).rglob("*") if p.is_file())
    import base64

    basic = base64.b64encode(f"svc:{UPSTREAM_PASSWORD}".encode())
    for secret in (basic, UPSTREAM_PASSWORD.encode(), UPSTREAM_HEADER_KEY.encode(), UPSTREAM_QUERY_KEY.encode()):
        assert secret not in raw, secret


@pytest.mark.parametrize("enc", ["gzip", "br"])
@pytest.mark.parametrize("kind", ["json", "text"])
async def test_corrupt_compressed_body_is_a_clean_upstream_error(env: Env, enc: str, kind: str) -> None:
    """JSON (buffered): 502 before any head; text (streamed): the head went
    out, so the connection is cut. Either way a log line, no traceback."""
    path = f"/corrupt?enc={enc}&type={kind}"
    before = len(env.daemon.log())
    async with aiohttp.ClientSession(headers=auth("alice"), auto_decompress=False) as s:
        if kind == "json":
            async with s.get(env.url("api", path)) as r:
                assert r.status == 502
                body = await r.json()
                assert body["error"] == "bad_upstream", body
                assert "decode" in body["message"]
        else:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(env.url("api", path)) as r:
                    assert r.status == 200
                    await r.read()
        # the gateway still serves the next request
        async with s.get(env.url("api", "/echo/after-corrupt")) as r:
            assert r.status == 200
    sessions_with(env.recordings, f"GET {path}")
    deadline = time.monotonic() + 5
    while "cannot decode" not in env.daemon.log()[before:] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    log = env.daemon.log()[before:]
    assert "cannot decode" in log and enc in log, log
    assert "Traceback" not in log and "Fatal error" not in log, log


def test_ndjson_labelled_as_json_is_masked_by_key_line_by_line(env: Env) -> None:
    """``fields: [password, *_ssn]`` are key rules: content rules alone pass
    ``badge_ssn: opaque-7731`` (no pattern matches the value)."""
    out = curl(env.url("api", "/ndjson-as-json"))
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout
    for line in lines:
        doc = json.loads(line)
        assert doc["user"] == "alice" and doc["items"] == [1, 2, 3]
        assert doc["password"] != "hunter2" and doc["profile"]["home_ssn"] != "123-45-6789"
        assert doc["email"] != "alice@example.com"
        assert doc["badge_ssn"] != "opaque-7731", doc
    sid = sessions_with(env.recordings, "GET /ndjson-as-json")[-1]
    blob = b"".join(o.data for o in session_events(env.recordings, sid, "output"))
    assert b"opaque-7731" not in blob and lines[0] in blob


def test_utf16_text_is_masked_and_stays_utf16(env: Env) -> None:
    out = curl(env.url("api", "/utf16-text"))
    text = out.stdout.decode("utf-16")
    assert text.startswith("contact ") and text.endswith("\n")
    assert "alice@example.com" not in text and "123-45-6789" not in text


def test_utf16_request_body_is_not_recorded(env: Env, tmp_path: Any) -> None:
    body = tmp_path / "body"
    body.write_bytes("password=utf16-secret-4242".encode("utf-16"))
    out = curl("-H", "Content-Type: text/plain; charset=UTF-16", "--data-binary", f"@{body}",
               env.url("api", "/echo/u16"))
    assert out.returncode == 0 and json.loads(out.stdout)["body_len"] == body.stat().st_size
    sid = sessions_with(env.recordings, "POST /echo/u16")[-1]
    blob = b"".join(o.data for o in session_events(env.recordings, sid, "output"))
    assert b"[body in charset utf-16 not recorded]" in blob
    assert "utf16-secret".encode("utf-16-le") not in blob


def test_range_requests_cannot_fetch_a_secret_in_pieces(env: Env) -> None:
    """Asked eight digits at a time, no piece of a card number matches the
    card rule: with masking on, the gateway drops Range/If-Range and the
    client gets the whole body, masked."""
    from tests.http.upstream import Upstream

    text = Upstream.RANGE_TEXT
    start = text.index(b"4111")
    pieces = []
    for a in range(start, start + 19, 8):
        out = curl("-i", "-r", f"{a}-{a + 7}", env.url("api", "/range-text"))
        assert out.returncode == 0
        head, _, body = out.stdout.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        pieces.append(body)
    for body in pieces:
        assert b"1111 1111" not in body and b"4111 1111" not in body
        assert body.startswith(b"card on file: ") and body.endswith(b", renewal due\n")
    assert "Range" not in env.upstream.requests[-1]["headers"]


def test_request_range_cannot_fetch_a_secret_in_pieces(env: Env) -> None:
    """Apache httpd reads ``Request-Range`` when there is no ``Range``; the
    gateway dropped only Range/If-Range, so a card number still came back
    eight digits at a time, each piece too short for the card rule."""
    from tests.http.upstream import Upstream

    text = Upstream.RANGE_TEXT
    start = text.index(b"4111")
    out = curl("-i", "-H", f"Request-Range: bytes={start}-{start + 7}", env.url("api", "/range-text"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"4111 1111" not in body and body.startswith(b"card on file: [CARD]")
    assert "Request-Range" not in env.upstream.requests[-1]["headers"]


def test_recording_masks_credentials_and_bodies(env: Env) -> None:
    out = curl(
        "-H", "Content-Type: application/json", "-H", "Cookie: session=cookie-secret-123",
        "-d", json.dumps({"email": "erin@example.com", "password": "pw-in-body-999"}),
        env.url("api", "/echo/rec?token=x"),
    )
    assert out.returncode == 0
    # a credential-looking query value is masked in the command text too
    sid = sessions_with(env.recordings, "POST /echo/rec?token=[SECRET]")[-1]
    cmds = session_events(env.recordings, sid, "command")
    assert cmds[0].attrs["body"]["summary"] == {
        "type": "object", "keys": ["email", "password"], "key_count": 2,
    }
    outputs = session_events(env.recordings, sid, "output")
    blob = b"".join(o.data for o in outputs)
    assert b"POST /echo/rec?token=[SECRET] HTTP/1.1" in blob
    assert b"HTTP/1.1 200" in blob
    assert b"Cookie: [REDACTED]" in blob and b"Authorization: Bearer [REDACTED]" in blob
    # (the echo upstream returns the cookie in its body: that is content, not a header)
    for secret in (KEYS["alice"][0], "erin@example.com", "pw-in-body-999", UPSTREAM_TOKEN):
        assert secret.encode() not in blob, secret
    results = session_events(env.recordings, sid, "result")
    assert results[-1].status == "200"
    # nothing secret anywhere in the raw recording files either
    raw = b"".join(p.read_bytes() for p in (env.recordings / sid).rglob("*") if p.is_file())
    for secret in (KEYS["alice"][0], "pw-in-body-999", UPSTREAM_TOKEN):
        assert secret.encode() not in raw


@pytest.fixture
def tls_ctx(env: Env) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(env.gateway_ca))


async def test_aiohttp_over_tls_listener_keep_alive(env: Env, tls_ctx: ssl.SSLContext) -> None:
    conn = aiohttp.TCPConnector(ssl=tls_ctx, limit=1)
    async with aiohttp.ClientSession(connector=conn, headers=auth("alice")) as s:
        for i in range(3):
            async with s.get(env.url("tlsup", f"/echo/k{i}", scheme="https")) as resp:
                assert resp.status == 200
                await resp.read()
    sid = sessions_with(env.recordings, "GET /echo/k2")[-1]
    assert len(session_events(env.recordings, sid, "command")) == 3


def test_gzip_passthrough_when_not_masked(env: Env) -> None:
    # the open connection has masking defaults (credentials only) -> still decoded
    out = curl("-H", "Accept-Encoding: gzip", env.url("open", "/gzip-json"), user=None)
    assert json.loads(out.stdout)["email"] == "alice@example.com"
    assert gzip  # imported for readers: the upstream sends gzip here


def test_head_and_http10_clients(env: Env) -> None:
    head = curl("-sI", env.url("api", "/json"))
    assert head.stdout.startswith(b"HTTP/1.1 200")
    assert b"Content-Length:" in head.stdout  # the upstream's length for the GET
    old = curl("-0", "-i", env.url("api", "/split-text"))
    assert old.stdout.startswith(b"HTTP/1.1 200"), old.stdout
    assert b"Transfer-Encoding" not in old.stdout  # HTTP/1.0: the body ends with the connection
    assert old.stdout.endswith(b"contact: [EMAIL] and key [AWS_ACCESS_KEY] done\n") or b"[EMAIL]" in old.stdout


def test_expect_continue_large_upload(env: Env, tmp_path: Any) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(2 * 1024 * 1024)
    path.write_bytes(data)
    out = curl("-v", "--data-binary", f"@{path}", env.url("api", "/upload"))
    assert b"Expect: 100-continue" in out.stderr
    assert json.loads(out.stdout)["sha256"] == hashlib.sha256(data).hexdigest()


def test_upstream_down_is_502_and_the_connection_stays_usable(env: Env) -> None:
    out = curl("-i", env.url("down", "/x"), env.url("down", "/y"), "-v")
    assert out.stdout.count(b"HTTP/1.1 502") == 2, out.stdout
    assert b"upstream_unreachable" in out.stdout
    assert b"Re-using existing connection" in out.stderr


def test_client_certificate_identity(env: Env) -> None:
    url = env.url("mtls", "/echo/mtls", scheme="https")
    base = ["--cacert", str(env.gateway_ca)]
    with_cert = curl(
        *base, "--cert", str(env.work / "alice.pem"), "--key", str(env.work / "alice-key.pem"), url,
        user=None,
    )
    assert with_cert.returncode == 0, with_cert.stderr
    assert json.loads(with_cert.stdout)["path"] == "/echo/mtls"
    without = curl(*base, url, user=None)
    assert without.returncode != 0  # the TLS handshake requires a certificate
    sid = sessions_with(env.recordings, "GET /echo/mtls")[-1]
    assert session_events(env.recordings, sid, "command")


def _exchange(sock: Any, request: bytes, method: str = "GET") -> tuple[int, bytes]:
    from protocols.http.h1 import Data, EndOfMessage, ResponseHead, ResponseParser

    parser = ResponseParser()
    parser.expect(method)
    sock.sendall(request)
    status, body = 0, b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        for ev in parser.feed(chunk):
            if isinstance(ev, ResponseHead):
                status = ev.status
            elif isinstance(ev, Data):
                body += ev.data
            elif isinstance(ev, EndOfMessage):
                return status, body


def test_many_requests_on_one_connection(env: Env) -> None:
    """After the first request, a connection's plain requests take the
    callback fast path: allowed, denied and masked ones alike."""
    import socket

    key = KEYS["alice"][0]

    def req(method: str, path: str) -> bytes:
        return f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: 0\r\n\r\n".encode()

    with socket.create_connection(("127.0.0.1", env.ports["api"]), timeout=10) as s:
        assert _exchange(s, req("GET", "/echo/seq1"))[0] == 200
        status, body = _exchange(s, req("POST", "/admin/seq2"), "POST")
        assert status == 403 and json.loads(body)["error"] == "denied"
        status, body = _exchange(s, req("GET", "/json"))
        assert status == 200 and json.loads(body)["email"] == "[EMAIL]"
        for i in range(20):
            assert _exchange(s, req("HEAD", f"/echo/h{i}"), "HEAD")[0] == 200
        # another identity's token on the same connection is refused (general path)
        other = f"GET /echo/seq3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['bob'][0]}\r\n\r\n"
        s.sendall(other.encode())
        data = s.recv(65536)
        assert data.startswith(b"HTTP/1.1 401")  # one connection, one identity
    sid = sessions_with(env.recordings, "POST /admin/seq2")[-1]
    texts = [e.text for e in session_events(env.recordings, sid, "command")]
    assert texts[:3] == ["GET /echo/seq1", "POST /admin/seq2", "GET /json"]
    assert len(texts) == 23
    verdicts = [d.verdict.value for d in session_events(env.recordings, sid, "decision") if d.command_seq]
    assert verdicts[:3] == ["allow", "deny", "allow"]
    statuses = [r.status for r in session_events(env.recordings, sid, "result")]
    assert statuses[:3] == ["200", "403", "200"]


def test_a_body_that_begins_with_its_head_on_a_kept_alive_connection(env: Env) -> None:
    """A request whose head and the first bytes of its body come in one read,
    on a connection past its first request, is two parser events (head,
    data) like a bodyless one (head, end): it must take the general path and
    reach the upstream whole, not as a bodyless request with the rest of its
    body left in the parser."""
    import socket

    with socket.create_connection(("127.0.0.1", env.ports["open"]), timeout=10) as s:
        assert _exchange(s, b"GET /echo/first HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
        s.sendall(b"POST /echo/split-body HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
        time.sleep(0.2)
        status, body = _exchange(s, b"-rest!", "POST")
        assert status == 200
        echoed = json.loads(body)
        assert echoed["body_len"] == 10 and echoed["headers"]["Content-Length"] == "10"
        assert _exchange(s, b"GET /echo/after HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
