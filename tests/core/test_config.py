"""Config validation as an operator sees it: `hoopd check` output, key paths,
secret references, examples that pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from hoopd.config import ConfigError, load_config, parse_config
from hoopd.configtypes import Secret
from hoopd.registry import Registry
from tests.helpers import hoopd

EXAMPLES = sorted((Path(__file__).parents[2] / "deploy" / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_entry_points()


def problems(raw: dict, registry: Registry, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, registry, **kw)
    return [str(p) for p in info.value.problems]


def tcp(**over) -> dict:
    conn = {
        "name": "t",
        "protocol": "tcp",
        "listen": "127.0.0.1:15000",
        "upstream": {"host": "127.0.0.1", "port": 5000},
        "auth": "none",
    }
    conn.update(over)
    return conn


# The secrets the examples reference (env:NAME), as an operator would export them.
EXAMPLE_SECRETS = {name: "example-secret" for name in ("ORDERS_DB_PW", "WEB1_PW", "DB1_PW", "KUBE_TOKEN", "BILLING_TOKEN")}


def test_examples_exist_and_pass_check() -> None:
    protocols = {line.split(":", 1)[1].strip() for f in EXAMPLES for line in f.read_text().splitlines()
                 if line.strip().startswith("protocol:")}
    assert {"tcp", "postgres", "ssh", "kubernetes", "http"} <= protocols
    result = hoopd("check", *[arg for f in EXAMPLES for arg in ("-c", str(f))],
                   env={**os.environ, **EXAMPLE_SECRETS})
    assert result.returncode == 0, result.stdout + result.stderr
    for f in EXAMPLES:
        assert f"{f}: ok" in result.stdout
    # without the secret in the environment: refused, with the key path
    env = {k: v for k, v in {**os.environ, **EXAMPLE_SECRETS}.items() if k != "ORDERS_DB_PW"}
    result = hoopd("check", "-c", str(EXAMPLES[0].with_name("postgres.yaml")), env=env)
    assert result.returncode != 0
    assert "connections[0].upstream.password: environment variable ORDERS_DB_PW is not set" in result.stdout + result.stderr


def test_check_reports_every_problem_with_key_path(tmp_path: Path) -> None:
    bad = {
        "gateway": {"admin_listen": "localhost", "colour": "blue"},
        "recording": {"rotate_bytes": "lots"},
        "connections": [
            tcp(),
            tcp(name="t2", listen="127.0.0.1:15001"),
            tcp(name="t3", listen="127.0.0.1:15002", upstream={"host": "db", "port": 70000}),
        ],
    }
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = hoopd("check", "-c", str(path))
    assert result.returncode != 0
    out = result.stdout
    assert f"{path}: connections[2].upstream.port: must be 1..65535" in out
    assert "gateway.admin_listen: must be host:port" in out
    assert "gateway.colour: unknown key" in out
    assert "recording.rotate_bytes: must be a size" in out


def test_serve_refuses_the_same_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"connections": [tcp(upstream={"host": "x", "port": 0})]}))
    result = hoopd("serve", "-c", str(path))
    assert result.returncode != 0
    assert "connections[0].upstream.port: must be 1..65535" in result.stdout


def test_unknown_protocol_lists_available(registry: Registry) -> None:
    found = problems({"connections": [tcp(protocol="carrier-pigeon")]}, registry)
    assert found == ["connections[0].protocol: unknown protocol 'carrier-pigeon'; available: " + ", ".join(registry.names())]


def test_tcp_refuses_masking_and_command_rules(registry: Registry) -> None:
    found = problems(
        {"connections": [tcp(masking={"recognizers": {}}, risk={"review_at": "high"})]}, registry
    )
    assert any(p.startswith("connections[0].masking: protocol tcp cannot inspect") for p in found)
    assert any(p.startswith("connections[0].risk: protocol tcp does not see commands") for p in found)


def test_tcp_needs_explicit_auth_choice(registry: Registry) -> None:
    found = problems({"connections": [tcp(auth="default")]}, registry)
    assert found == [
        "connections[0].auth: tcp carries no credential: set tls.client_ca to identify "
        "clients by certificate, or auth: none to accept anonymous clients"
    ]
    found = problems({"connections": [tcp(auth="tls-client-cert")]}, registry)
    assert "connections[0].tls.client_ca: required when auth is tls-client-cert" in found


def test_duplicate_names_and_listeners(registry: Registry) -> None:
    found = problems({"connections": [tcp(), tcp()]}, registry)
    assert "connections[1].name: duplicate name 't' (also connections[0])" in found
    assert "connections[1].listen: 127.0.0.1:15000 is already used by connections[0]" in found


def test_secret_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry) -> None:
    monkeypatch.setenv("HOOPD_TEST_MASK_KEY", "s3cret-value-0123456789")
    cfg = parse_config({"gateway": {"masking_key": "env:HOOPD_TEST_MASK_KEY"}}, registry)
    key = cfg.gateway.masking_key
    assert isinstance(key, Secret) and key.reveal() == "s3cret-value-0123456789"
    # Never shown when the config is printed or logged.
    assert "s3cret-value-0123456789" not in repr(cfg) and "s3cret-value-0123456789" not in str(key)

    (tmp_path / "mask.key").write_text("from-a-file-0123456789\n")
    cfg = parse_config(
        {"gateway": {"masking_key": "file:mask.key"}}, registry, base_dir=tmp_path
    )
    assert cfg.gateway.masking_key is not None
    assert cfg.gateway.masking_key.reveal() == "from-a-file-0123456789"

    monkeypatch.setenv("HOOPD_TEST_MASK_KEY", "short")
    assert problems({"gateway": {"masking_key": "env:HOOPD_TEST_MASK_KEY"}}, registry) == [
        "gateway.masking_key: must be at least 16 bytes"
    ]
    monkeypatch.delenv("HOOPD_TEST_MASK_KEY")
    assert problems({"gateway": {"masking_key": "env:HOOPD_TEST_MASK_KEY"}}, registry) == [
        "gateway.masking_key: environment variable HOOPD_TEST_MASK_KEY is not set"
    ]
    literal = problems({"gateway": {"masking_key": "hunter2"}}, registry)
    assert literal == [
        "gateway.masking_key: must be a secret reference (env:NAME or file:PATH), not a literal value"
    ]
    assert "hunter2" not in literal[0].split(":", 1)[1].replace("not a literal value", "")


def test_relative_paths_follow_the_config_file(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "conf" / "hoopd.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"gateway": {"data_dir": "state"}, "connections": [tcp()]}))
    cfg = load_config(path, registry)
    assert cfg.gateway.data_dir == path.parent / "state"
    assert cfg.recording_dir == path.parent / "state" / "recordings"


def test_sizes_and_durations(registry: Registry) -> None:
    cfg = parse_config(
        {"recording": {"rotate_bytes": "64MiB", "rotate_seconds": "1h", "fsync_interval": "250ms"}},
        registry,
    )
    assert cfg.recording.rotate_bytes == 64 * 1024 * 1024
    assert cfg.recording.rotate_seconds == 3600
    assert cfg.recording.fsync_interval == 0.25


def test_identity_section_is_validated_with_key_paths(registry: Registry) -> None:
    found = problems(
        {"identity": {"api_keys": [{"name": "agent", "sha256": "not-a-hash", "groups": ["a"]}]}},
        registry,
    )
    assert len(found) == 1 and found[0].startswith("identity.api_keys[0].sha256: sha256 must be 64")


def test_ipv6_listen(registry: Registry) -> None:
    cfg = parse_config({"connections": [tcp(listen="[::1]:15000")]}, registry)
    assert cfg.connections[0].listen.host == "::1"
    assert str(cfg.connections[0].listen) == "[::1]:15000"


def kube(upstream: dict) -> dict:
    return {"name": "k", "protocol": "kubernetes", "listen": "127.0.0.1:16443", "upstream": upstream}


def test_kubernetes_token_file_is_checked_at_load(registry: Registry, tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("a-token\n")
    (tmp_path / "empty").write_text("\n")
    os.environ["HOOPD_TEST_KUBE_TOKEN"] = "x"
    url = "https://10.0.0.1:6443"
    found = problems(
        {"connections": [
            kube({"url": url, "token_file": str(tmp_path / "missing")}),
            kube({"url": url, "token_file": str(tmp_path / "empty")}),
            kube({"url": url, "token_file": str(tmp_path / "tok"), "token": "env:HOOPD_TEST_KUBE_TOKEN"}),
        ]},
        registry,
    )  # fmt: skip
    assert any(p.startswith("connections[0].upstream: ") and "cannot read token_file" in p for p in found), found
    assert any(p.startswith("connections[1].upstream: ") and "is empty" in p for p in found), found
    assert any(p.startswith("connections[2].upstream: ") and "exclusive" in p for p in found), found
