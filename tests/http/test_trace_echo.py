"""TRACE, answered as Apache httpd answers it by default: the request
echoed as ``message/http``, the credential the gateway injects included.
``message/*`` was no type masking reads, so under ``unmaskable: pass`` the
client got the injected ``Authorization`` and ``X-Api-Key`` in clear (the
service credential the gateway exists to keep from it), and the user data
in the request. Now ``message/*`` bodies are text: masked, the injected
credential redacted, with masking on or off."""

from __future__ import annotations

import pytest

from tests.http.conftest import ECHO_HEADER_KEY, UPSTREAM_TOKEN, Env
from tests.http.test_proxy import curl


@pytest.mark.parametrize(
    ("conn", "secret"),
    [("api", UPSTREAM_TOKEN), ("echo", ECHO_HEADER_KEY), ("echomask", ECHO_HEADER_KEY)],
)
def test_trace_echo_never_hands_the_injected_credential_over(
    env: Env, conn: str, secret: str
) -> None:
    before = len(env.upstream.requests)
    out = curl("-i", "-X", "TRACE", "-H", "X-Note: mail alice@example.com", env.url(conn, "/trace"))
    assert out.returncode == 0, out.stderr
    assert len(env.upstream.requests) == before + 1  # the upstream did get (and echo) it
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out.stdout
    assert body.startswith(b"TRACE /trace"), body
    assert secret.encode() not in out.stdout, body
    assert b"[REDACTED]" in body
    if conn != "echo":  # masking on: the user's data too
        assert b"alice@example.com" not in body


def test_application_http_is_masked_as_message_http(env: Env) -> None:
    """``application/http`` (an HTTP message, as batch APIs send them)."""
    out = curl("-i", "-X", "TRACE", env.url("api", "/trace?type=application/http"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out.stdout
    assert UPSTREAM_TOKEN.encode() not in out.stdout and b"[REDACTED]" in body
