"""The ``charset`` parameter names a Python codec lookup: a request body
labelled ``charset=rot13`` (or ``base64``, ``hex``: codecs, not charsets)
made the charset probe raise LookupError in the serve task, and the client
got no answer at all. And UTF-7, which writes ``@`` as ``+AEA-``, passed
the probe as ASCII-compatible: an e-mail address in a UTF-7 text response
reached the client unmasked (a client decoding by the charset, as Python's
requests does, reads it). Non-text codecs are now read as bytes, and UTF-7
is transcoded and masked like UTF-16."""

from __future__ import annotations

import subprocess

import pytest

from tests.http.conftest import KEYS, Env


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [
        "curl",
        "-sS",
        "-i",
        "--max-time",
        "10",
        "-H",
        f"Authorization: Bearer {KEYS['alice'][0]}",
    ]
    return subprocess.run([*cmd, *args], capture_output=True, timeout=15)


@pytest.mark.parametrize("cs", ["rot13", "base64", "hex", "zlib"])
def test_request_body_labelled_with_a_codec_is_answered(env: Env, cs: str) -> None:
    out = curl(
        "-H", f"Content-Type: text/plain; charset={cs}", "--data-binary", "mail alice@example.com",
        env.url("api", f"/echo/cs-{cs}"),
    )  # fmt: skip
    assert out.stdout.startswith(b"HTTP/1.1 200"), (out.stdout, out.stderr)


@pytest.mark.parametrize("cs", ["utf-7", "rot13", "base64"])
def test_response_in_such_charsets_is_masked(env: Env, cs: str) -> None:
    out = curl(env.url("api", f"/charset-text?cs={cs}"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out.stdout
    text = body.decode(cs) if cs == "utf-7" else body.decode()
    assert "alice@example.com" not in text and "[EMAIL]" in text, text
