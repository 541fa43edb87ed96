"""Identity configuration (the ``identity:`` section of the gateway config).

All models are frozen and reject unknown keys, so a typo in the YAML is an
error with a key path (``identity.oidc.audiance: Extra inputs are not
permitted``) rather than a silently ignored setting.

Example::

    identity:
      oidc:
        issuer: https://login.example.com/realms/prod
        audience: hoopd
        groups_claim: realm_access.roles
      api_keys:
        - name: deploy-bot
          sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
          groups: [agents]
      gateway_tokens:
        max_ttl_seconds: 43200
      expiry_grace_seconds: 60
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Algorithm = Literal["RS256", "ES256", "EdDSA", "RS384", "RS512", "ES384", "PS256"]

DEFAULT_ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256", "EdDSA")

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
        return value  # local test issuers only
    raise ValueError(
        f"{what} must be an https:// URL (plain http:// is only accepted for 127.0.0.1/localhost), got {value!r}"
    )


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OIDCConfig(_Frozen):
    """An OpenID Connect identity provider whose ID/access tokens are accepted."""

    issuer: str
    """Exact ``iss`` value; discovery is fetched from ``<issuer>/.well-known/openid-configuration``."""
    audience: str | list[str]
    """Accepted ``aud`` value(s); a token must carry at least one of them."""
    algorithms: list[Algorithm] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    """Signature algorithm allow-list. ``none`` and HMAC (HS*) can never be enabled."""
    groups_claim: str = "groups"
    """Claim holding the groups: a top-level name (may itself contain dots, e.g.
    ``https://example.com/groups``) or a dotted path into nested objects
    (``realm_access.roles``). A list of strings or a single string."""
    subject_claim: str = "sub"
    email_claim: str = "email"
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_min_refresh_seconds: float = Field(default=60, ge=0)
    """Minimum time between two JWKS fetches triggered by an unknown ``kid``."""
    jwks_max_age_seconds: float = Field(default=3600, gt=0)
    """Cached keys are refetched (in the background of a validation) after this long."""
    discovery_url: str | None = None
    """Override for the discovery document URL."""
    http_timeout_seconds: float = Field(default=10, gt=0)

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, v: str) -> str:
        return _check_url(v, "issuer")

    @field_validator("discovery_url")
    @classmethod
    def _discovery_url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, "discovery_url")

    @field_validator("audience")
    @classmethod
    def _audience(cls, v: str | list[str]) -> str | list[str]:
        values = [v] if isinstance(v, str) else v
        if not values or any(not a.strip() for a in values):
            raise ValueError(
                "audience must be a non-empty string or a non-empty list of non-empty strings"
            )
        return v

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, v: list[Algorithm]) -> list[Algorithm]:
        if not v:
            raise ValueError(
                "algorithms must list at least one of RS256, ES256, EdDSA, RS384, RS512, ES384, PS256"
            )
        if len(set(v)) != len(v):
            raise ValueError("algorithms contains duplicates")
        return v

    @field_validator("groups_claim", "subject_claim", "email_claim")
    @classmethod
    def _claim(cls, v: str) -> str:
        if not v or any(not part for part in v.split(".")):
            raise ValueError(f"claim path must be non-empty dot-separated names, got {v!r}")
        return v

    @property
    def audiences(self) -> list[str]:
        return [self.audience] if isinstance(self.audience, str) else list(self.audience)

    @property
    def resolved_discovery_url(self) -> str:
        return self.discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"


class ApiKeyConfig(_Frozen):
    """An agent API key, configured by the SHA-256 (hex) of the key itself.

    Generate one with ``hoopd.identity.apikeys.generate_api_key()``; only the
    hash goes into the configuration.
    """

    name: str = Field(min_length=1, max_length=128)
    sha256: str
    groups: list[str] = Field(default_factory=list)
    revoked: bool = False

    @field_validator("sha256", mode="before")
    @classmethod
    def _sha256(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip().lower()
            if v.startswith("sha256:"):
                v = v[len("sha256:") :]
            if not _HEX64.match(v):
                raise ValueError(
                    "sha256 must be 64 hexadecimal characters (the SHA-256 of the API key, not the key)"
                )
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        if any(not g.strip() for g in v):
            raise ValueError("group names must be non-empty")
        return v


class GatewayTokenConfig(_Frozen):
    """Short gateway tokens (``hgt1.…``). The ed25519 signing key is kept in
    ``data_dir/token_key.ed25519``; gateways that must accept each other's
    tokens share that file."""

    max_ttl_seconds: int = Field(default=86400, gt=0, le=30 * 86400)
    leeway_seconds: int = Field(default=5, ge=0, le=300)


class IdentityConfig(_Frozen):
    oidc: OIDCConfig | None = None
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    gateway_tokens: GatewayTokenConfig = Field(default_factory=GatewayTokenConfig)
    expiry_grace_seconds: float = Field(default=0, ge=0)
    """A session ends this long after its credential's ``expires_at``."""

    @model_validator(mode="after")
    def _unique_keys(self) -> IdentityConfig:
        names: set[str] = set()
        hashes: set[str] = set()
        for i, key in enumerate(self.api_keys):
            if key.name in names:
                raise ValueError(f"api_keys[{i}]: duplicate API key name {key.name!r}")
            if key.sha256 in hashes:
                raise ValueError(f"api_keys[{i}] ({key.name}): the same sha256 is configured twice")
            names.add(key.name)
            hashes.add(key.sha256)
        return self
