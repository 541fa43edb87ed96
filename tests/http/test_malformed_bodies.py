"""Response bodies that are not what their head promises, end to end through
``hoopd serve`` with real clients against the real upstream: JSON that is
several documents or has garbage in it, line-delimited JSON in odd chunks,
compressed streams cut short, codings the gateway cannot decode. The client
gets masked content or a clear error, never an unmasked value, and the
recording holds what the client got and says why a response broke off."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest

from tests.http.conftest import KEYS, Env, raw_request
from tests.http.recordings import session_events, sessions_with
from tests.http.upstream import SECRET_JSON, Upstream

SECRETS = (b"hunter2", b"alice@example.com", b"123-45-6789", b"EMP-123456")


def curl(*args: str, timeout: float = 30, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-H", f"Authorization: Bearer {KEYS['alice'][0]}"]
    return subprocess.run([*cmd, *args], capture_output=True, timeout=timeout + 5, input=input)


def raw_get(env: Env, path: str, extra: str = "") -> bytes:
    """Everything a plain socket client reads for one request, until the gateway closes."""
    return raw_request(env, "GET", path, headers=extra, timeout=15)


def recorded(env: Env, text: str) -> tuple[bytes, list[str]]:
    """The body bytes and the error messages recorded for the last request with this text."""
    sid = sessions_with(env.recordings, text)[-1]
    body = b"".join(o.data for o in session_events(env.recordings, sid, "output"))
    errors = [e.message for e in session_events(env.recordings, sid, "error")]
    return body, errors


# -- JSON that is not one document ---------------------------------------------------


def test_concatenated_json_documents_are_each_masked_by_key(env: Env) -> None:
    """``{..}{..}`` labelled application/json: the second document's
    ``password`` and ``*_ssn`` values (which no content rule recognizes) are
    masked as in a document of their own; the first passes byte for byte."""
    out = curl("-i", env.url("api", "/concat-json"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    first = json.dumps({"user": "alice", "n": 1}).encode()
    assert body.startswith(first), body
    second = json.loads(body[len(first):])
    assert second["user"] == "bob"
    assert second["password"] != Upstream.CONCAT_SECOND["password"]
    assert second["profile"]["badge_ssn"] != "opaque-5521"
    assert b"opaque" not in body
    rec, _ = recorded(env, "GET /concat-json")
    assert rec.endswith(body) and b"opaque" not in rec


@pytest.mark.parametrize("depth", [900, 3000, 100_000])
def test_json_nested_too_deep_to_parse_keeps_key_rules(env: Env, depth: int) -> None:
    """A document nested deeper than the parser or the walk go (which a user
    can store to break every read of it) is masked by the tolerant key scan:
    a 200 with ``password`` and ``*_ssn`` values replaced, not a dropped
    connection or a value in clear."""
    out = curl("-i", env.url("api", f"/deep-json?depth={depth}"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert body.startswith(b"[" * depth) and body.endswith(b"]" * depth)
    assert b"opaque" not in body and b'"bob"' in body
    rec, errors = recorded(env, f"GET /deep-json?depth={depth}")
    assert not errors and b"opaque" not in rec
    assert body[: 64 * 1024] in rec  # (the first record_body_bytes of it)


def test_json_with_garbage_and_a_cut_document_keeps_key_rules(env: Env) -> None:
    """A document, an HTML comment a proxy added, then a document cut short:
    the keyed values of the cut one are masked all the same."""
    out = curl(env.url("api", "/concat-json?garbage=1"))
    assert b"<!-- proxy note -->" in out.stdout, out.stdout
    assert b"opaque" not in out.stdout, out.stdout
    assert b'"user": "bob"' in out.stdout
    rec, _ = recorded(env, "GET /concat-json?garbage=1")
    assert rec.endswith(out.stdout) and b"opaque" not in rec


@pytest.mark.parametrize("query", ["step=1", "step=7", "step=61", "step=7&enc=gzip"])
def test_ndjson_in_any_chunks_masks_keys_lines_and_pem(env: Env, query: str) -> None:
    """application/x-ndjson streamed in chunks cut anywhere (also inside a
    gzip stream): the line with two documents, the PEM key spread over
    lines, a pretty-printed document's lines and the keyed values arrive masked, identically for every
    chunking, and the recording holds exactly what the client read."""
    out = curl("--compressed", env.url("api", f"/ndjson-stream?{query}"))
    body = out.stdout
    for secret in (b"opaque-n", b"MIIBOgIBAAJB", b"bob@example.com"):
        assert secret not in body, (secret, body)
    lines = body.split(b"\n")
    assert lines[0].startswith(b'{"user":"ann","password":') and lines[1] == b"log: key follows", body
    assert json.loads(lines[-2])["user"] == "bob" and lines[-1] == b""
    assert body == curl("--compressed", env.url("api", "/ndjson-stream?step=100000")).stdout
    rec, _ = recorded(env, f"GET /ndjson-stream?{query}")
    assert rec.endswith(body)


# -- compressed bodies that end early, codings the gateway cannot read --------------


@pytest.mark.parametrize("enc", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("kind", ["json", "text"])
def test_truncated_compressed_body_is_a_502_that_says_why(env: Env, enc: str, kind: str) -> None:
    """The upstream's framing is complete, its compressed stream is not:
    buffered JSON, or text whose head had not gone out yet (the whole body
    came in one read), is answered with 502 and nothing of the body."""
    path = f"/truncated?enc={enc}&type={kind}"
    out = curl("-i", "-H", f"Accept-Encoding: {enc}", env.url("api", path))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502"), out.stdout[:300]
    err = json.loads(body)
    assert err["error"] == "bad_upstream" and "truncated" in err["message"], err
    assert not any(s in out.stdout for s in SECRETS)
    _, errors = recorded(env, f"GET {path}")
    assert any("truncated" in e and enc in e for e in errors), errors


@pytest.mark.parametrize("enc", ["gzip", "deflate", "br"])
def test_truncated_compressed_text_cuts_the_connection(env: Env, enc: str) -> None:
    """Streamed text: the head and masked text went out before the stream
    broke off, so the gateway cuts the connection without the last chunk
    (no client can take the rest for the whole body); what went out was
    masked, and the recording holds that text and the reason."""
    path = f"/truncated?enc={enc}&type=text&stream=1"
    raw = raw_get(env, path, f"Accept-Encoding: {enc}\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head, head
    assert not body.endswith(b"0\r\n\r\n"), body[-40:]
    assert b"[EMAIL]" in body and not any(s in raw for s in SECRETS)
    rec, errors = recorded(env, f"GET {path}")
    assert not any(s in rec for s in SECRETS)
    assert dechunk(body) in rec  # what the client got was recorded
    assert any("truncated" in e for e in errors), errors


def dechunk(data: bytes) -> bytes:
    """The payload of whole chunks (a cut stream ends wherever it was cut)."""
    out = b""
    while b"\r\n" in data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0 or len(rest) < size + 2:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def test_upstream_closing_mid_body_is_a_502_or_a_cut_connection(env: Env) -> None:
    """The upstream's connection ends halfway through its Content-Length
    (gzip): buffered JSON gets a 502 naming the failure; streamed text,
    whose head and masked first half went out, ends without its last chunk."""
    out = curl("-i", "-H", "Accept-Encoding: gzip", env.url("api", "/early-eof?type=json"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502"), out.stdout[:300]
    assert json.loads(body)["error"] == "bad_upstream"
    raw = raw_get(env, "/early-eof?type=text", "Accept-Encoding: gzip\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding: chunked" in head, head
    assert not body.endswith(b"0\r\n\r\n") and b"[EMAIL]" in body
    assert not any(s in raw for s in SECRETS)
    rec, errors = recorded(env, "GET /early-eof?type=text")
    assert dechunk(body) in rec and not any(s in rec for s in SECRETS)
    assert any("upstream" in e for e in errors), errors


def test_undecodable_coding_is_refused_even_when_unmaskable_passes(env: Env) -> None:
    """``api`` passes unmaskable (binary) bodies; a text body in a coding the
    gateway cannot decode could hold anything, so it is refused whatever
    that option says, and the message names the coding."""
    out = curl("-i", "-H", "Accept-Encoding: zstd", env.url("api", "/zstd-text"))
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502"), out.stdout[:300]
    err = json.loads(body)
    assert err["error"] == "unmaskable" and "zstd" in err["message"], err
    assert b"alice@example.com" not in out.stdout
    # the gateway asked for nothing it cannot decode
    assert env.upstream.requests[-1]["headers"].get("Accept-Encoding") == "identity"


@pytest.mark.parametrize(
    ("sent", "seen"),
    [("zstd, gzip;q=0.5", "gzip;q=0.5"), ("zstd", "identity"), (None, "identity"), ("br", "br")],
)
def test_upstream_is_asked_only_for_codings_the_gateway_decodes(
    env: Env, sent: str | None, seen: str
) -> None:
    """No Accept-Encoding allows any coding (RFC 9110), so with masking on the
    gateway always sends one: the client's decodable codings, else identity."""
    tag = f"ae-{time.monotonic_ns()}"
    args = ["-H", f"Accept-Encoding: {sent}"] if sent is not None else []
    curl(*args, env.url("api", f"/echo/{tag}"))
    req = next(r for r in reversed(env.upstream.requests) if r["path"] == f"/echo/{tag}")
    assert req["headers"].get("Accept-Encoding") == seen, req["headers"]


def test_truncated_gzip_upstream_secret_json_never_reaches_the_client_whole() -> None:
    """What the truncated endpoint sends really is a cut stream of the secret document."""
    import gzip
    import zlib

    plain = b"".join(
        json.dumps({**SECRET_JSON, "n": hashlib.sha256(b"%d" % i).hexdigest()}).encode() + b"\n"
        for i in range(200)
    )
    packed = gzip.compress(plain)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    part = d.decompress(packed[: len(packed) * 2 // 3]) + d.flush()
    assert not d.eof and b"hunter2" in part


def test_request_json_nested_too_deep_is_summarised_and_relayed(env: Env) -> None:
    """A client's JSON request body nested deeper than Python's parser goes:
    recorded as such and relayed (the echo upstream's answer comes back
    masked like any other), not a session that fails."""
    body = b"[" * 5000 + b'{"password": "pw-deep-4471"}' + b"]" * 5000
    out = curl("-i", "-H", "Content-Type: application/json", "--data-binary", "@-",
               env.url("api", "/echo/deep"), input=body)  # fmt: skip
    head, _, answer = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), (head, out.stderr)
    assert b"pw-deep-4471" not in answer
    sid = sessions_with(env.recordings, "POST /echo/deep")[-1]
    cmds = session_events(env.recordings, sid, "command")
    assert cmds[0].attrs["body"]["summary"] == {"type": "nested-too-deep"}
