"""An upstream that echoes the request hands back the credential the gateway
injected: the client and the recording see ``[REDACTED]`` instead, masking on
or off (``masking.literals``)."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

import pytest

from tests.http.conftest import ECHO_HEADER_KEY, ECHO_PASSWORD, ECHO_QUERY_KEY, Env
from tests.http.recordings import session_events, sessions_with
from tests.http.test_proxy import curl


def _forbidden() -> list[bytes]:
    """Every form of the injected secrets a client could read them in."""
    blob = base64.b64encode(f"svc:{ECHO_PASSWORD}".encode()).decode()
    out = {blob}
    for secret in (ECHO_PASSWORD, ECHO_HEADER_KEY, ECHO_QUERY_KEY):
        encoded = quote(secret, safe="")
        lower_hex = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)
        out.update((secret, encoded, lower_hex, quote(secret), quote_plus(secret)))
    return [s.encode() for s in sorted(out)]


@pytest.mark.parametrize("conn", ["echo", "echomask"])
def test_echoed_credentials_reach_neither_client_nor_recording(env: Env, conn: str) -> None:
    before = len(env.upstream.requests)
    out = curl("-i", env.url(conn, "/mirror?page=2"))
    assert out.returncode == 0, out.stderr
    # the upstream did get the credentials (else nothing would be echoed)
    seen = env.upstream.requests[before]
    assert seen["headers"]["X-Api-Key"] == ECHO_HEADER_KEY
    assert seen["query"]["sig"] == ECHO_QUERY_KEY
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    for secret in _forbidden():
        assert secret not in out.stdout, secret
    # the body: the echoed headers and decoded query, the URL
    doc = json.loads(body)
    # (with masking on, a value under a key named like a secret is replaced
    # whole by secret_key_value first: a placeholder either way)
    placeholder = {"[REDACTED]"} if conn == "echo" else {"[REDACTED]", "[SECRET]"}
    assert doc["headers"]["Authorization"] == "Basic [REDACTED]"
    assert doc["headers"]["X-Api-Key"] in placeholder
    assert doc["query"]["page"] == "2" and doc["query"]["sig"] in placeholder
    assert "sig=[REDACTED]" in doc["url"]
    # the head: a mirrored header, a redirect and a cookie (passed unmasked otherwise)
    assert b"X-Echo-Authorization: Basic [REDACTED]\r\n" in head
    assert b"X-Echo-Api-Key: [REDACTED]\r\n" in head
    assert b"Location: /login?next=/mirror?page=2&sig=[REDACTED]\r\n" in head
    assert b"Set-Cookie: last_query=page=2&sig=[REDACTED]; Path=/\r\n" in head

    sid = sessions_with(env.recordings, "GET /mirror?page=2")[-1]
    outputs = session_events(env.recordings, sid, "output")
    raw = b"".join(p.read_bytes() for p in (env.recordings / sid).rglob("*") if p.is_file())
    for secret in _forbidden():
        assert secret not in raw, secret
    assert b"[REDACTED]" in b"".join(o.data for o in outputs)
    # counted under the rule's id, like any masking rule's values: the head's
    # four fields, the body's header, query and URL values
    # counted under the rule's id, like any masking rule's values
    assert sum(o.masked.get("injected_credential", 0) for o in outputs) >= 4, outputs
    assert _masked_metric(env, conn) >= 8  # + the head's four fields (metrics only)


def _masked_metric(env: Env, conn: str) -> float:
    prefix = f'hoopd_masked_values_total{{connection="{conn}",protocol="http",rule="injected_credential"}} '
    for line in env.daemon.metrics().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


@pytest.mark.parametrize("conn", ["echo", "echomask"])
def test_echoed_credentials_in_a_streamed_text_body(env: Env, conn: str) -> None:
    """An error page quoting the raw target and every request header (a
    text body, streamed through the stream masker)."""
    out = curl(env.url(conn, "/mirror?as=text"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"404 Not Found: /mirror?as=text&sig=[REDACTED]\n"), out.stdout
    assert b"\nAuthorization: Basic [REDACTED]\n" in out.stdout
    assert b"\nX-Api-Key: [REDACTED]\n" in out.stdout
    for secret in _forbidden():
        assert secret not in out.stdout, secret


def test_a_short_password_echoed_alone_is_masked(env: Env) -> None:
    """The basic-auth password by itself (six characters, no recognizer
    would take it), wherever it shows up in a response."""
    out = curl(env.url("echo", f"/mirror?as=text&note={quote(ECHO_PASSWORD, safe='')}"))
    assert out.returncode == 0, out.stderr
    assert b"note=[REDACTED]" in out.stdout
    assert ECHO_PASSWORD.encode() not in out.stdout


def _readable(blob: str) -> bytes:
    """Everything a client decoding ``blob`` as base64 reads, at each of the
    four character offsets (masking may have cut it anywhere)."""
    chars = "".join(c for c in blob if c.isalnum() or c in "+/")
    out = []
    for off in range(4):
        part = chars[off:]
        out.append(base64.b64decode(part[: len(part) - len(part) % 4]))
    return b"\n".join(out)


@pytest.mark.parametrize("conn", ["echo", "echomask"])
def test_echoed_credentials_inside_base64_blobs(env: Env, conn: str) -> None:
    """The request's headers and URL returned base64-encoded inside a JSON
    field, at each base64 alignment: the header key and query key the
    gateway adds (12 bytes and more) cannot be decoded from what the client
    gets. (The 6-byte basic password is too short for its base64 to be told
    from any blob's: it is masked where it appears as text.)"""
    out = curl(env.url(conn, "/mirror?as=b64"))
    assert out.returncode == 0, out.stderr
    dumps = json.loads(out.stdout)["dumps"]
    assert len(dumps) == 3
    seen = env.upstream.requests[-1]
    assert seen["headers"]["X-Api-Key"] == ECHO_HEADER_KEY  # what was echoed
    for blob in dumps:
        assert "[REDACTED]" in blob, blob
        readable = _readable(blob)
        assert b"X-Api-Key: " in readable or b"X-Api-Key" in readable  # the rest is intact
        for secret in (ECHO_HEADER_KEY, ECHO_QUERY_KEY, quote(ECHO_QUERY_KEY, safe="")):
            assert secret.encode() not in readable, (secret, blob)


@pytest.mark.parametrize("conn", ["echo", "echomask"])
def test_echoed_credentials_blanked_in_a_passed_binary_body(env: Env, conn: str) -> None:
    """A binary body no rule can read is relayed as it is (``unmaskable:
    pass``) -- but not the injected credential in it: each match becomes as
    many ``*``, so the body keeps its length (and Content-Length)."""
    out = curl("-sS", "-D", "-", env.url(conn, "/mirror?as=binary"))
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert b"application/octet-stream" in head, head
    length = re.search(rb"(?i)content-length: (\d+)", head)
    assert length is not None and int(length.group(1)) == len(body), head
    assert body.startswith(b"\x89DUMP\x00") and b"\x00\xff" in body
    for secret in _forbidden():
        assert secret not in body, secret
    assert b"X-Api-Key: " + b"*" * len(ECHO_HEADER_KEY) + b"\x00\xff" in body, body
