"""One upstream server (plain and TLS) and one ``hoopd serve`` with several
http connections, shared by the tests of this directory."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from hoopd.identity.apikeys import hash_api_key
from hoopd.tls import cert_pem, generate_ca, issue_certificate
from tests.helpers import Daemon, WebhookReceiver, free_port
from tests.http.upstream import Upstream

KEYS = {
    "alice": ("hak_alice_0123456789abcdefghijklmnopqrstuvwxyzABCD", ["dev"]),
    "bob": ("hak_bob_0123456789abcdefghijklmnopqrstuvwxyzABCDEF", ["dev", "reviewers"]),
    "mallory": ("hak_mallory_0123456789abcdefghijklmnopqrstuvwxyzAB", ["guests"]),
}
UPSTREAM_TOKEN = "upstream-secret-token-7f3a9c"
UPSTREAM_PASSWORD = "upstream-basic-pw-41d2"
UPSTREAM_HEADER_KEY = "upstream-header-key-88e1"
UPSTREAM_QUERY_KEY = "upstream-query-key-5c0b"
# the "echo" connection's credentials: characters an echo encodes (percent,
# JSON, base64), and a short password no recognizer would ever match
ECHO_PASSWORD = "pw/9+x"
ECHO_HEADER_KEY = "Hdr/Key+v=1 &z"
ECHO_QUERY_KEY = "sig/Q+w=2&y z"

MASKING = {
    "recognizers": {"personal": True},
    "rules": [
        {"id": "secret-fields", "fields": ["password", "*_ssn"]},
        {"id": "employee-id", "pattern": "EMP-[0-9]{6}"},
    ],
}
RULES = [
    {"method": "DELETE", "path": "/api/**", "action": "review"},
    {"method": "POST", "path": "/admin/**", "action": "deny"},
]


def exchange(env: Env, request: bytes, conn: str = "api", timeout: float = 10) -> bytes:
    """``request`` (raw bytes) sent on a plain socket: everything read until
    the gateway closes the connection."""
    with socket.create_connection(("127.0.0.1", env.ports[conn]), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while part := s.recv(65536):
            data += part
    return data


def raw_request(
    env: Env, method: str, target: str, *, headers: str = "", body: bytes | None = None,
    conn: str = "api", timeout: float = 10,
) -> bytes:
    """One request as alice, exactly as written (what curl would not send):
    ``headers`` are extra header lines, ``body`` comes with its
    ``Content-Length``; ``Connection: close``, and the whole answer read."""
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['alice'][0]}\r\n"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    request = f"{head}Connection: close\r\n{headers}\r\n".encode() + (body or b"")
    return exchange(env, request, conn, timeout)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[user][0]}"}


@dataclass
class Env:
    daemon: Daemon
    upstream: Upstream
    tls_upstream: Upstream
    ports: dict[str, int]
    ca_path: Path
    gateway_ca: Path
    work: Path
    webhook: WebhookReceiver = field(default_factory=WebhookReceiver)

    def url(self, conn: str, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.ports[conn]}{path}"

    @property
    def recordings(self) -> Path:
        return self.daemon.recordings

    def admin(self, path: str) -> str:
        return self.daemon.url(path)


def _tls_material(directory: Path) -> tuple[Path, ssl.SSLContext]:
    ca_cert, ca_key = generate_ca("http test upstream CA")
    leaf, leaf_key = issue_certificate(ca_cert, ca_key, "localhost", hostnames=("127.0.0.1", "localhost"))
    ca_path = directory / "upstream-ca.pem"
    ca_path.write_bytes(cert_pem(ca_cert))
    cert_path = directory / "upstream.pem"
    key_path = directory / "upstream-key.pem"
    cert_path.write_bytes(cert_pem(leaf))
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ca_path, ctx


def _client_certs(directory: Path) -> Path:
    """A client CA and a certificate for alice (OU dev) signed by it."""
    ca_cert, ca_key = generate_ca("http test client CA")
    leaf, key = issue_certificate(ca_cert, ca_key, "alice", client=True, organizational_units=("dev",))
    (directory / "client-ca.pem").write_bytes(cert_pem(ca_cert))
    (directory / "alice.pem").write_bytes(cert_pem(leaf))
    (directory / "alice-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return directory / "client-ca.pem"


def _conn(name: str, port: int, upstream: dict[str, Any], **extra: Any) -> dict[str, Any]:
    conn: dict[str, Any] = {
        "name": name,
        "protocol": "http",
        "listen": f"127.0.0.1:{port}",
        "upstream": upstream,
        "allow_groups": ["dev"],
        "masking": MASKING,
        "risk": {
            "reviewers": ["reviewers"],
            "rules": [
                {"pattern": "^GET /api/forbidden", "action": "deny"},
                {"pattern": r"^POST /api/refunds\?(?:.*&)?force=true(?:&|$)", "action": "deny"},
            ],
        },
        "options": {"rules": RULES},
    }
    conn.update(extra)
    return conn


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("http")
    ca_path, server_ctx = _tls_material(work)
    upstream = Upstream()
    tls_upstream = Upstream(server_ctx)
    secrets = work / "secrets"
    secrets.mkdir()
    for name, value in {
        "token": UPSTREAM_TOKEN,
        "password": UPSTREAM_PASSWORD,
        "header": UPSTREAM_HEADER_KEY,
        "query": UPSTREAM_QUERY_KEY,
        "echo-password": ECHO_PASSWORD,
        "echo-header": ECHO_HEADER_KEY,
        "echo-query": ECHO_QUERY_KEY,
    }.items():
        (secrets / name).write_text(value + "\n")
    ports = {
        n: free_port()
        for n in (
            "api", "retry", "strict", "tlsup", "badca", "open", "prefix", "down", "dead", "mtls",
            "echo", "echomask",
        )
    }  # fmt: skip
    echo_auth = {
        "basic": {"user": "svc", "password": f"file:{secrets / 'echo-password'}"},
        "headers": {"X-Api-Key": f"file:{secrets / 'echo-header'}"},
        "query": {"sig": f"file:{secrets / 'echo-query'}"},
    }
    client_ca = _client_certs(work)
    plain = f"http://127.0.0.1:{upstream.port}"
    webhook = WebhookReceiver()
    config: dict[str, Any] = {
        "gateway": {"webhook": {"url": webhook.url, "retries": 0}},
        "identity": {
            "api_keys": [
                {"name": user, "sha256": hash_api_key(key), "groups": groups}
                for user, (key, groups) in KEYS.items()
            ]
        },
        "connections": [
            _conn(
                "api",
                ports["api"],
                {"url": plain, "auth": {"bearer": f"file:{secrets / 'token'}"}},
                approval={"mode": "hold", "timeout": "20s"},
            ),
            _conn(
                "retry",
                ports["retry"],
                {
                    "url": plain,
                    "auth": {
                        "basic": {"user": "svc", "password": f"file:{secrets / 'password'}"},
                        "headers": {"X-Api-Key": f"file:{secrets / 'header'}"},
                        "query": {"api_key": f"file:{secrets / 'query'}"},
                    },
                },
                approval={"mode": "retry", "timeout": "60s"},
            ),
            _conn(
                "strict",
                ports["strict"],
                {"url": plain},
                options={"rules": RULES, "unmaskable": "refuse", "record_body_bytes": 1024},
            ),
            _conn(
                "tlsup",
                ports["tlsup"],
                {
                    "url": f"https://localhost:{tls_upstream.port}",
                    "ca": str(ca_path),
                    "auth": {"bearer": f"file:{secrets / 'token'}"},
                },
                tls={"enabled": True},
            ),
            _conn("badca", ports["badca"], {"url": f"https://localhost:{tls_upstream.port}"}),
            _conn("open", ports["open"], {"url": plain}, auth="none", masking=None, risk=None,
                  options={}),
            _conn(
                "mtls",
                ports["mtls"],
                {"url": plain},
                auth="tls-client-cert",
                tls={"enabled": True, "client_ca": str(client_ca)},
            ),
            _conn("down", ports["down"], {"url": f"http://127.0.0.1:{ports['dead']}"}),
            _conn("prefix", ports["prefix"], {"url": plain + "/echo/base/"}, auth="none",
                  masking=None, risk=None, options={}),
            # injected credentials an upstream echoes back: with masking off
            # (only they are masked) and on
            _conn("echo", ports["echo"], {"url": plain, "auth": echo_auth},
                  masking={"enabled": False}, risk=None, options={}),
            _conn("echomask", ports["echomask"], {"url": plain, "auth": echo_auth}, risk=None,
                  options={}),
        ],
    }
    daemon = Daemon(work, config).start()
    try:
        yield Env(
            daemon,
            upstream,
            tls_upstream,
            ports,
            ca_path,
            Path(config["gateway"]["data_dir"]) / "tls" / "ca.pem",
            work,
            webhook,
        )
    finally:
        daemon.stop()
        webhook.close()
        upstream.close()
        tls_upstream.close()
