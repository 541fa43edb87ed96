"""Which secrets of a connection's ``upstream:`` the gateway injects, and so
masks in what comes back (``hoopd.injected``, ``masking.literals``): for
every protocol that logs in to its upstream with a secret."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from hoopd.config import parse_config
from hoopd.gateway import Gateway
from hoopd.injected import injected_secrets
from hoopd.metrics import Metrics
from hoopd.registry import Registry

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x"


def _conns(secret_dir: Path) -> list[dict[str, Any]]:
    def ref(name: str, value: str) -> str:
        (secret_dir / name).write_text(value + "\n")
        return f"file:{secret_dir / name}"

    return [
        {
            "name": "web",
            "protocol": "http",
            "listen": "127.0.0.1:18080",
            "upstream": {
                "url": "http://127.0.0.1:9",
                "auth": {
                    "basic": {"user": "svc", "password": ref("basic", "b-pw")},
                    "headers": {"X-Internal-Auth": ref("hdr", "hdr-secret")},
                    "query": {"sig": ref("sig", "sig-secret")},
                },
            },
        },
        {
            "name": "kube",
            "protocol": "kubernetes",
            "listen": "127.0.0.1:18443",
            "upstream": {"url": "https://127.0.0.1:6443", "token": ref("tok", "kube-token")},
        },
        {
            "name": "db",
            "protocol": "postgres",
            "listen": "127.0.0.1:15432",
            "upstream": {"host": "127.0.0.1", "user": "app", "password": ref("pg", "pg-pw")},
        },
        {
            "name": "box",
            "protocol": "ssh",
            "listen": "127.0.0.1:12222",
            "upstream": {
                "host": "10.0.0.1", "user": "deploy", "password": ref("ssh", "ssh-pw"),
                "host_key": PUB,
            },
            "masking": {"enabled": False},
        },
    ]  # fmt: skip


EXPECTED = {
    "web": ["b-pw", base64.b64encode(b"svc:b-pw").decode(), "hdr-secret", "sig-secret"],
    "kube": ["kube-token"],
    "db": ["pg-pw"],
    "box": ["ssh-pw"],
}


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    raw = {"gateway": {"data_dir": str(tmp_path / "var")}, "connections": _conns(tmp_path)}
    config = parse_config(raw, Registry.from_entry_points())
    # masker() uses the config and the masking key only: no recorder or TLS
    return Gateway(config, Metrics(), recorder=None, tls=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_protocol_masker_carries_its_injected_secrets(gateway: Gateway, name: str) -> None:
    conn = next(c for c in gateway.config.connections if c.name == name)
    assert sorted(injected_secrets(conn.upstream)) == sorted(EXPECTED[name])
    masker = gateway.masker(conn)
    assert "injected_credential" in masker.rule_ids()
    for secret in EXPECTED[name]:
        out, counts = masker.mask_bytes(f"echo: {secret}!".encode())
        assert out == b"echo: [REDACTED]!", secret
        assert counts == {"injected_credential": 1}
