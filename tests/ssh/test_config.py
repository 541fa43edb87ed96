"""Config validation for ssh connections: every problem with its key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hoopd.config import ConfigError, parse_config
from hoopd.model import AuthMethod, Identity
from hoopd.registry import Registry
from protocols.ssh import SshHandler
from protocols.ssh.keys import host_key, identity_from_cert, issue_user_cert, user_ca

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x"


def conn(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": "box",
        "protocol": "ssh",
        "listen": "127.0.0.1:2222",
        "upstream": {"host": "10.0.0.1", "user": "deploy", "password": "env:HOME", "host_key": PUB},
    }
    c.update(over)
    return c


def problems(*conns: dict[str, Any]) -> list[str]:
    try:
        parse_config({"connections": list(conns)}, Registry([SshHandler]))
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_valid_config() -> None:
    assert problems(conn()) == []
    known_hosts_line = "[10.0.0.1]:22,web " + PUB
    assert problems(conn(upstream={**conn()["upstream"], "host_key": known_hosts_line})) == []
    forwarding = {"allow_agent_forwarding": True, "allow_x11_forwarding": True, "allow_port_forwarding": True}
    assert problems(conn(options=forwarding)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"upstream": {"host": "h", "user": "u", "password": "env:HOME"}}, "connections[0].upstream.host_key: Field required"),
        ({"upstream": {"host": "h", "user": "u", "host_key": PUB}}, "connections[0].upstream: give key"),
        ({"upstream": {"host": "h", "user": "u", "password": "env:HOME", "host_key": "nope"}}, "connections[0].upstream.host_key: must be a public key"),
        ({"upstream": {"host": "h", "user": "u", "key": "/nonexistent", "host_key": PUB}}, "connections[0].upstream: cannot read upstream key"),
        ({"options": {"authorized_keys": [{"key": "junk", "subject": "a"}]}}, "connections[0].options.authorized_keys[0].key"),
        ({"options": {"bogus": 1}}, "connections[0].options.bogus: unknown key"),
        ({"tls": {"enabled": True}}, "connections[0].tls: ssh has its own encryption"),
    ],
)
def test_problems_have_key_paths(change: dict[str, Any], expected: str) -> None:
    found = problems(conn(**change))
    assert any(p.startswith(expected) for p in found), found


def test_route_by_login_names_ssh_connections() -> None:
    entry = conn(name="entry", options={"route_by_login": ["web", "entry", "nope", "web", "relay"]})
    web = conn(name="web", listen="127.0.0.1:2223")
    relay = conn(name="relay", listen="127.0.0.1:2224", options={"route_by_login": ["web"]})
    found = problems(entry, web, relay)
    assert sorted(found) == sorted([
        "connections[0].options.route_by_login[1]: a connection cannot route to itself",
        "connections[0].options.route_by_login[2]: no connection named 'nope'",
        "connections[0].options.route_by_login[3]: 'web' is listed twice",
        "connections[0].options.route_by_login[4]: connection 'relay' routes itself; routes are one level deep",
    ]), found
    assert problems(conn(name="entry", options={"route_by_login": ["web"]}), web) == []


def test_duplicate_authorized_keys() -> None:
    keys = [{"key": PUB, "subject": "a"}, {"key": PUB, "subject": "b"}]
    assert any("same key as authorized_keys[0]" in p for p in problems(conn(options={"authorized_keys": keys})))


def test_keys_are_stable_and_certs_carry_identity(tmp_path: Path) -> None:
    assert host_key(tmp_path).public_data == host_key(tmp_path).public_data
    assert oct((tmp_path / "ssh" / "host_key").stat().st_mode & 0o777) == "0o600"
    import asyncssh

    user = asyncssh.generate_private_key("ssh-ed25519")
    ident = Identity("alice", frozenset({"ops", "dev"}), AuthMethod.GATEWAY_TOKEN, email="a@x", expires_at=4_000_000_000.0)
    cert = issue_user_cert(user_ca(tmp_path), user, ident, ["alice"], 600)
    from asyncssh.public_key import SSHOpenSSHCertificate

    imported = asyncssh.import_certificate(cert.export_certificate())
    assert isinstance(imported, SSHOpenSSHCertificate)
    # forwarding is left to the connection's options; user rc is never run
    assert imported.options == {"permit-X11-forwarding": True, "permit-agent-forwarding": True,
                                "permit-port-forwarding": True, "permit-pty": True}  # fmt: skip
    back = identity_from_cert(imported)
    assert back is not None
    assert (back.subject, back.groups, back.email, back.method) == ("alice", ident.groups, "a@x", AuthMethod.SSH_CERT)
    assert back.expires_at is not None and back.expires_at <= __import__("time").time() + 600
    expired = Identity("bob", expires_at=1.0)
    with pytest.raises(ValueError):
        issue_user_cert(user_ca(tmp_path), user, expired, ["bob"], 600)
