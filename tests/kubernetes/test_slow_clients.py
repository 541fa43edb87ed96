"""Slow and stalled clients on a kubernetes listener (``options.header_timeout``,
``options.body_timeout``), with real TLS sockets through ``hoopd serve`` and
the fake API server: a client that never finishes its TLS handshake, its
request head or its body is closed (408 once part of a request came), and a
body that arrives in several reads reaches the API server whole."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hoopd.identity.tokens import KEY_FILE_NAME, GatewayTokens, load_or_create_token_key
from tests.helpers import Daemon, free_port, hoopd, read_until_closed_async, wait_for
from tests.kubernetes.fakeapi import FakeApiServer

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


CLOSED = (ConnectionResetError, ssl.SSLError)
"""How the gateway's close may look to a TLS client."""


@dataclass
class Env:
    daemon: Daemon
    fake: FakeApiServer
    port: int
    token: str


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("kube-slow")
    (work / "sa-token").write_text("upstream-sa-token\n")
    with FakeApiServer(tmp_path_factory.mktemp("fake-tls")) as fake:
        port = free_port()
        conn = {
            "name": "kube",
            "protocol": "kubernetes",
            "listen": f"127.0.0.1:{port}",
            "allow_groups": ["dev"],
            "upstream": {"url": fake.url, "ca": str(fake.ca), "token": f"file:{work / 'sa-token'}"},
            "options": {"header_timeout": "1s", "body_timeout": "1s"},
        }
        daemon = Daemon(work, {"connections": [conn]}).start()
        try:
            data_dir = Path(daemon.config["gateway"]["data_dir"])
            token = GatewayTokens(load_or_create_token_key(data_dir / KEY_FILE_NAME)).issue(
                "alice", ["dev"], 3600
            )
            yield Env(daemon, fake, port, token)
        finally:
            daemon.stop()


def _tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _status(data: bytes) -> dict[str, object]:
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:200]
    assert b"Connection: close" in data
    return dict(json.loads(data.split(b"\r\n\r\n", 1)[1]))


def _metric(env: Env, family: str, reason: str) -> float:
    lines = [
        ln for ln in env.daemon.metrics().splitlines()
        if ln.startswith(family) and f'reason="{reason}"' in ln
    ]  # fmt: skip
    return sum(float(ln.split()[-1]) for ln in lines)


def _post(env: Env, framing: str) -> bytes:
    return (
        f"POST {CONFIGMAPS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {env.token}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n"
    ).encode()


async def test_a_stalled_handshake_or_head_is_closed(env: Env) -> None:
    """The TLS handshake and the first head are due within header_timeout
    (1 s here, 60 s by default; before, 60 s and 120 s whatever the
    options): silent connections are closed without a word, a trickled head
    gets 408 with a Status, counted as a failed login (no one logged in)."""
    before = _metric(env, "hoopd_auth_failures_total", "header_timeout")
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
    data, took = await read_until_closed_async(reader, tolerate=CLOSED)
    assert data == b"" and took < 3
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=_tls())
    data, took = await read_until_closed_async(reader, tolerate=CLOSED)
    assert data == b"" and took < 3
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=_tls())
    head = (
        f"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {env.token}\r\n\r\n"
    )

    async def trickle() -> None:
        for byte in head.encode():
            writer.write(bytes([byte]))
            await asyncio.sleep(0.2)

    feeding = asyncio.ensure_future(trickle())
    data, took = await read_until_closed_async(reader, tolerate=CLOSED)
    feeding.cancel()
    status = _status(data)
    assert took < 3 and status["kind"] == "Status" and status["code"] == 408
    assert "no complete request head within 1 s" in str(status["message"])
    writer.close()
    assert _metric(env, "hoopd_auth_failures_total", "header_timeout") >= before + 2
    assert "no complete request head within 1 s: closing" in env.daemon.log()


async def test_a_stalled_body_is_answered_408(env: Env) -> None:
    """A Content-Length body (the fast path) and a chunked one (aiohttp's
    path) that stop coming: 408 within body_timeout of the last byte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=_tls())
    writer.write(_post(env, "Content-Length: 100\r\n") + b'{"kind": ')
    data, took = await read_until_closed_async(reader, tolerate=CLOSED)
    assert took < 3 and "no request body bytes for 1 s" in str(_status(data)["message"])
    writer.close()

    reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=_tls())
    writer.write(_post(env, "Transfer-Encoding: chunked\r\n") + b'9\r\n{"kind": \r\n')
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 408 ")
    writer.close()
    wait_for(lambda: "session ended: body_timeout" in env.daemon.log())


async def test_a_body_in_several_reads_arrives_whole(env: Env) -> None:
    """A chunked body whose chunks come apart (pauses under body_timeout)
    is read to its end before the decision: the API server gets all of it,
    not the first read (which is what the gateway used to forward)."""
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "slow-cm"},
        "data": {"a": "1", "b": "2"},
    }
    body = json.dumps(obj).encode()
    parts = [body[:10], body[10:30], body[30:]]
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=_tls())
    writer.write(_post(env, "Transfer-Encoding: chunked\r\n"))
    for part in parts:
        await asyncio.sleep(0.3)
        writer.write(b"%x\r\n%b\r\n" % (len(part), part))
    writer.write(b"0\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 201"), head
    writer.close()
    from tests.kubernetes.fakeapi import BY_PATH

    kind = next(k for k in BY_PATH.values() if k.resource == "configmaps")
    stored = env.fake.call(env.fake.api.store.get, kind, "default", "slow-cm")
    assert stored["data"] == {"a": "1", "b": "2"}


def test_timeouts_are_validated(tmp_path: Path) -> None:
    config = tmp_path / "hoopd.yaml"
    config.write_text(
        "connections:\n"
        "  - name: kube\n    protocol: kubernetes\n    listen: 127.0.0.1:1\n"
        "    upstream: {url: 'https://127.0.0.1:2', insecure_skip_verify: true}\n"
        "    options: {header_timeout: 0s, body_timeout: later}\n"
    )
    res = hoopd("check", "-c", str(config))
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "options.header_timeout" in out and "body_timeout" in out, out


@pytest.mark.parametrize("pieces", [1, 40])
async def test_a_head_over_64_kib_is_refused(env: Env, pieces: int) -> None:
    """A head over 64 KiB gets 431 and the connection is closed, sent at
    once or in pieces. (It used to be handed to aiohttp's parser, which
    bounds each line but took 128 headers of 64 KiB: an 8 MiB head.)"""
    head = (
        b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 60_000) for i in range(20))
        + f"Authorization: Bearer {env.token}\r\n\r\n".encode()
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=_tls())
    step = len(head) // pieces + 1
    try:
        for i in range(0, len(head), step):
            writer.write(head[i : i + step])
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass
    data, took = await read_until_closed_async(reader, tolerate=CLOSED)
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    assert took < 3
    writer.close()


async def test_aiohttp_path_closes_after_401(env: Env) -> None:
    """A request aiohttp's server takes (here HEAD) without a credential gets
    401 and the connection is closed: aiohttp bounds neither a whole head
    nor how long it takes, so an unknown client gets no second head there.
    (The fast path keeps its connection: its heads are bounded.)"""
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=_tls())
    writer.write(b"HEAD /api HTTP/1.1\r\nHost: x\r\n\r\n")
    data, took = await read_until_closed_async(reader, tolerate=CLOSED)
    assert data.startswith(b"HTTP/1.1 401 ") and took < 3
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", env.port, ssl=_tls())
    writer.write(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 401 ") and b"close" not in head.lower()
    writer.write(
        f"GET /api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {env.token}\r\n\r\n".encode()
    )
    rest = await asyncio.wait_for(reader.readuntil(b"HTTP/1.1 200 "), 5)
    assert rest
    writer.close()
