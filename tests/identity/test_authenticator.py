from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from hoopd.identity import (
    ApiKeyConfig,
    Authenticator,
    AuthError,
    IdentityConfig,
    OIDCConfig,
    generate_api_key,
    hash_api_key,
)
from hoopd.model import AuthMethod

from .issuer import AUDIENCE, LocalIssuer

KEY, KEY_SHA = generate_api_key()
OLD_KEY, OLD_SHA = generate_api_key()


def config(oidc: OIDCConfig | None = None, **over: object) -> IdentityConfig:
    return IdentityConfig.model_validate(
        {
            "oidc": oidc,
            "api_keys": [
                {"name": "deploy-bot", "sha256": KEY_SHA, "groups": ["agents"]},
                {
                    "name": "old-bot",
                    "sha256": OLD_SHA.upper(),
                    "groups": ["agents"],
                    "revoked": True,
                },
            ],
            **over,
        }
    )


async def test_api_key_ok_unknown_revoked() -> None:
    auth = Authenticator(config(), Ed25519PrivateKey.generate())
    ident = await auth.authenticate(KEY)
    assert ident.subject == "deploy-bot"
    assert ident.groups == {"agents"}
    assert ident.method is AuthMethod.API_KEY
    assert ident.expires_at is None
    with pytest.raises(AuthError) as ei:
        await auth.authenticate(OLD_KEY)
    assert ei.value.reason == "revoked_api_key"
    with pytest.raises(AuthError) as ei:
        await auth.authenticate("hak_not-a-configured-key")
    assert ei.value.reason == "unknown_api_key"
    assert "hak_" not in str(ei.value)  # never echoes the credential


async def test_missing_and_bearer_prefix() -> None:
    auth = Authenticator(config(), Ed25519PrivateKey.generate())
    with pytest.raises(AuthError) as ei:
        await auth.authenticate("  ")
    assert ei.value.reason == "missing"
    assert (await auth.authenticate(f"Bearer {KEY}")).subject == "deploy-bot"


async def test_gateway_token_dispatch(tmp_path: Path) -> None:
    auth = Authenticator.from_data_dir(config(), tmp_path, gateway_id="gw-1")
    token = auth.tokens.issue("bob", ["dev"], "10m")
    ident = await auth.authenticate(token)
    assert (ident.subject, ident.method, ident.issuer) == ("bob", AuthMethod.GATEWAY_TOKEN, "gw-1")
    # another gateway with the same data_dir key accepts it
    other = Authenticator.from_data_dir(config(), tmp_path, gateway_id="gw-2")
    assert (await other.authenticate(token)).subject == "bob"


async def test_jwt_without_oidc_config(issuer: LocalIssuer) -> None:
    auth = Authenticator(config(), Ed25519PrivateKey.generate())
    with pytest.raises(AuthError) as ei:
        await auth.authenticate(issuer.sign())
    assert ei.value.reason == "oidc_not_configured"


async def test_oidc_dispatch_exchange_and_deadline(issuer: LocalIssuer) -> None:
    oidc = OIDCConfig(issuer=issuer.url, audience=AUDIENCE)
    auth = Authenticator(config(oidc, expiry_grace_seconds=30), Ed25519PrivateKey.generate())
    try:
        exp = int(time.time()) + 200
        ident = await auth.authenticate(issuer.sign(exp=exp))
        assert ident.method is AuthMethod.OIDC
        assert auth.session_deadline(ident) == exp + 30
        token, src = await auth.exchange(issuer.sign(), "30m")
        assert src.subject == "alice"
        gw = await auth.authenticate(token)
        assert (gw.subject, gw.groups, gw.method) == (
            "alice",
            {"dev", "sre"},
            AuthMethod.GATEWAY_TOKEN,
        )
        with pytest.raises(AuthError):
            await auth.exchange(token)  # a gateway token cannot be exchanged
        with pytest.raises(AuthError) as ei:
            await auth.authenticate(issuer.forge_none())
        assert ei.value.reason == "alg_not_allowed"
    finally:
        await auth.close()


def test_hash_api_key() -> None:
    assert (
        hash_api_key("test") == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )


def test_config_validation_messages() -> None:
    with pytest.raises(ValidationError) as ei:
        ApiKeyConfig(name="x", sha256="not-hex", groups=[])
    assert "64 hexadecimal" in str(ei.value)
    with pytest.raises(ValidationError) as ei:
        OIDCConfig(issuer="http://idp.example.com", audience="a")
    assert "https://" in str(ei.value)
    with pytest.raises(ValidationError):
        OIDCConfig.model_validate(
            {"issuer": "https://idp", "audience": "a", "algorithms": ["HS256"]}
        )
    with pytest.raises(ValidationError):
        OIDCConfig.model_validate(
            {"issuer": "https://idp", "audience": "a", "algorithms": ["none"]}
        )
    with pytest.raises(ValidationError) as ei:
        IdentityConfig.model_validate(
            {"oidc": {"issuer": "https://idp", "audiance": "x", "audience": "y"}}
        )
    assert ("oidc", "audiance") in [e["loc"] for e in ei.value.errors()]
    with pytest.raises(ValidationError, match="duplicate"):
        IdentityConfig.model_validate(
            {"api_keys": [{"name": "a", "sha256": KEY_SHA}, {"name": "a", "sha256": OLD_SHA}]}
        )
    cfg = IdentityConfig()
    with pytest.raises(ValidationError):
        cfg.expiry_grace_seconds = 5  # type: ignore[misc]
    ok = OIDCConfig(issuer="https://idp.example.com/realms/x", audience="a")
    assert ok.algorithms == ["RS256", "ES256", "EdDSA"]
    assert (
        ok.resolved_discovery_url
        == "https://idp.example.com/realms/x/.well-known/openid-configuration"
    )


def test_jwt_shape_detection() -> None:
    import base64

    from hoopd.identity import looks_like_jwt

    spaced = base64.urlsafe_b64encode(b'{ "alg": "none"}').rstrip(b"=").decode()
    assert looks_like_jwt(spaced + ".e30.")
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    assert not looks_like_jwt(KEY)
    assert not looks_like_jwt("abcd.efgh.ijkl")
    assert not looks_like_jwt("hgt1.abc.def")
