from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopd.identity import (
    AuthError,
    GatewayTokenConfig,
    GatewayTokens,
    TokenTooLarge,
    load_or_create_token_key,
    parse_ttl,
)
from hoopd.model import AuthMethod


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None, **cfg: int) -> GatewayTokens:
    return GatewayTokens(
        Ed25519PrivateKey.generate(),
        GatewayTokenConfig(**cfg),
        gateway_id="gw-a",
        clock=clock or Clock(),
    )


def test_issue_verify_roundtrip() -> None:
    clock = Clock()
    t = make(clock)
    token = t.issue("alice", ["sre", "dev"], "1h", email="a@example.com")
    assert token.startswith("hgt1.") and token.count(".") == 2
    ident = t.verify(token)
    assert ident.subject == "alice"
    assert ident.groups == {"sre", "dev"}
    assert ident.method is AuthMethod.GATEWAY_TOKEN
    assert ident.issuer == "gw-a"
    assert ident.email == "a@example.com"
    assert ident.expires_at == clock.now + 3600


def test_size_with_twenty_groups_fits_ssh_password() -> None:
    t = make()
    groups = [f"team-{i:02d}-database-admins" for i in range(20)]  # ~24 chars each
    token = t.issue("some.engineer@example.com", groups, 86400)
    assert len(token) < 1000, len(token)
    assert t.verify(token).groups == set(groups)


def test_too_large_refused() -> None:
    t = make()
    with pytest.raises(TokenTooLarge):
        t.issue("alice", [f"g{i}-" + "x" * 40 for i in range(40)], 60)


def test_ttl_capped() -> None:
    t = make(max_ttl_seconds=3600)
    t.issue("alice", [], 3600)
    with pytest.raises(ValueError, match="max_ttl_seconds"):
        t.issue("alice", [], "2h")
    with pytest.raises(ValueError):
        t.issue("alice", [], 0)


def test_parse_ttl() -> None:
    assert parse_ttl("90") == 90
    assert parse_ttl("15m") == 900
    assert parse_ttl("1h") == 3600
    assert parse_ttl("2d") == 172800
    with pytest.raises(ValueError):
        parse_ttl("soon")


def test_expiry() -> None:
    clock = Clock()
    t = make(clock, leeway_seconds=5)
    token = t.issue("alice", [], 60)
    clock.now += 64
    t.verify(token)  # within leeway
    clock.now += 2
    with pytest.raises(AuthError) as ei:
        t.verify(token)
    assert ei.value.reason == "expired"


def test_not_yet_valid() -> None:
    clock = Clock()
    t = make(clock, leeway_seconds=5)
    token = t.issue("alice", [], 60)
    clock.now -= 100
    with pytest.raises(AuthError) as ei:
        t.verify(token)
    assert ei.value.reason == "not_yet_valid"


def _reason(t: GatewayTokens, token: str) -> str:
    with pytest.raises(AuthError) as ei:
        t.verify(token)
    return ei.value.reason


def test_tampered_payload() -> None:
    t = make()
    token = t.issue("alice", ["dev"], 60)
    prefix, payload, sig = token.split(".")
    claims = msgpack.unpackb(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = ["admin"]
    forged = base64.urlsafe_b64encode(msgpack.packb(claims)).rstrip(b"=").decode()
    assert _reason(t, f"{prefix}.{forged}.{sig}") == "bad_signature"
    # flipping one character of the signature
    bad_sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert _reason(t, f"{prefix}.{payload}.{bad_sig}") == "bad_signature"


def test_other_key_rejected_and_rotation_accepted() -> None:
    a, b = make(), make()
    token = b.issue("alice", [], 60)
    assert _reason(a, token) == "bad_signature"
    rotated = GatewayTokens(
        Ed25519PrivateKey.generate(), extra_public_keys=[b._key.public_key()], clock=Clock()
    )
    assert rotated.verify(token).subject == "alice"


def test_malformed() -> None:
    t = make()
    for bad in ["hgt1.", "hgt1.a.b.c", "hgt1.!!!.abc", "hgt2.abc.def", "hgt1.abc"]:
        assert _reason(t, bad) == "malformed", bad


def test_noncanonical_base64_rejected() -> None:
    t = make()
    token = t.issue("alice", [], 60)
    prefix, payload, sig = token.split(".")
    # signature is 64 bytes -> 86 chars, the last char carries 2 unused bits
    last = sig[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(last) ^ 1]
    assert _reason(t, f"{prefix}.{payload}.{sig[:-1]}{twin}") == "malformed"


def test_revocation_by_jti() -> None:
    t = make()
    token = t.issue("alice", [], 60)
    jti = t.claims(token)["jti"]
    t.revoke(jti)
    assert _reason(t, token) == "revoked"


def test_revocations_from_the_store() -> None:
    from hoopd.identity.tokens import TokenRevocation

    clock = Clock()
    t = make(clock)
    leaked, other = t.issue("alice", [], 600), t.issue("bob", [], 600)
    ident = t.verify(leaked)
    assert ident.credential_id == t.claims(leaked)["jti"] and ident.issued_at == clock.now
    t.apply_revocations([TokenRevocation("token", ident.credential_id, clock.now, clock.now + 600)])
    assert _reason(t, leaked) == "revoked" and t.verify(other).subject == "bob"
    # every token of bob issued until now; one issued later is fine
    t.apply_revocations([TokenRevocation("subject", "bob", clock.now, clock.now + 600, issued_up_to=clock.now)])
    assert _reason(t, other) == "revoked"
    clock.now += 5
    assert t.verify(t.issue("bob", [], 600)).subject == "bob"
    # fail closed while revocations are unknown
    t.revocations_unavailable = "store down"
    assert _reason(t, t.issue("carol", [], 600)) == "unavailable"


def test_key_file_created_once_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "token_key.ed25519"
    k1 = load_or_create_token_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    k2 = load_or_create_token_key(path)
    t1, t2 = GatewayTokens(k1), GatewayTokens(k2)
    assert t2.verify(t1.issue("alice", [], 60)).subject == "alice"
    assert [p.name for p in path.parent.iterdir()] == ["token_key.ed25519"]


def test_key_file_wrong_size(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="32-byte"):
        load_or_create_token_key(path)


_KEY = Ed25519PrivateKey.generate()
_TOKENS = GatewayTokens(_KEY, clock=Clock())
_TOKEN = _TOKENS.issue("alice", ["dev", "sre"], 600)


@settings(max_examples=300, deadline=None)
@given(
    pos=st.integers(min_value=0, max_value=len(_TOKEN) - 1),
    ch=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "),
)
def test_any_single_character_change_is_rejected(pos: int, ch: str) -> None:
    forged = _TOKEN[:pos] + ch + _TOKEN[pos + 1 :]
    if forged == _TOKEN:
        return
    with pytest.raises(AuthError):
        _TOKENS.verify(forged)


@settings(max_examples=50, deadline=None)
@given(
    sub=st.text(min_size=1, max_size=64),
    groups=st.lists(st.text(min_size=1, max_size=24), max_size=20),
)
def test_roundtrip_property(sub: str, groups: list[str]) -> None:
    try:
        token = _TOKENS.issue(sub, groups, 60)
    except TokenTooLarge:
        return  # e.g. 20 groups of 24 four-byte characters
    assert len(token) < 1000
    ident = _TOKENS.verify(token)
    assert ident.subject == sub and ident.groups == set(groups)
