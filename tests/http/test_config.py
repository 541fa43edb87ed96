"""Config validation of http connections: every problem with its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hoopd.config import ConfigError, parse_config
from hoopd.registry import Registry


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_entry_points()


def problems(conn: dict[str, Any], registry: Registry, base: Path) -> list[str]:
    raw = {"connections": [{"name": "web", "protocol": "http", "listen": "127.0.0.1:18080", **conn}]}
    try:
        parse_config(raw, registry, base_dir=base)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_valid_config(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("secret\n")
    conn = {
        "upstream": {"url": "https://api.internal:8443/v1", "auth": {"bearer": "file:tok", "query": {"k": "file:tok"}}},
        "options": {"rules": [{"method": ["put", "PATCH"], "path": "/cfg/**", "action": "review"}]},
        "risk": {"rules": [{"match": "delete", "action": "deny"}]},
        "masking": {"recognizers": {"personal": True}},
    }
    assert problems(conn, registry, tmp_path) == []


def test_problems_have_key_paths(registry: Registry, tmp_path: Path) -> None:
    found = problems(
        {
            "upstream": {
                "url": "ftp://x",
                "auth": {"bearer": "literal-secret", "headers": {"Bad Name": "env:NOPE_NOT_SET"}},
                "verfy": False,
            },
            "options": {"rules": [{"path": "admin/**", "action": "deny"}], "unmaskable": "maybe"},
        },
        registry,
        tmp_path,
    )
    text = "\n".join(found)
    assert "connections[0].upstream.url: must be an http:// or https:// URL" in text
    assert "connections[0].upstream.auth.bearer" in text
    assert "connections[0].upstream.verfy: unknown key" in text
    assert "connections[0].options.rules[0].path: must start with /" in text
    assert "connections[0].options.unmaskable" in text


def test_tls_client_cert_needs_a_client_ca(registry: Registry, tmp_path: Path) -> None:
    found = problems(
        {"upstream": {"url": "http://127.0.0.1:1"}, "auth": "tls-client-cert"}, registry, tmp_path
    )
    assert found == ["connections[0].tls.client_ca: required when auth is tls-client-cert"]
