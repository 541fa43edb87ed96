"""One entry point for every bearer credential the gateway accepts."""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hoopd.identity.apikeys import ApiKeys
from hoopd.identity.config import IdentityConfig
from hoopd.identity.errors import AuthError
from hoopd.identity.oidc import OIDCValidator
from hoopd.identity.tokens import (
    KEY_FILE_NAME,
    TOKEN_PREFIX,
    GatewayTokens,
    load_or_create_token_key,
)
from hoopd.model import AuthMethod, Identity

_JWT_SHAPE = re.compile(r"^([A-Za-z0-9_-]{4,})\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$")


def looks_like_jwt(credential: str) -> bool:
    """Three base64url segments, the first one a JSON object (usually ``eyJ`` = ``{"``)."""
    m = _JWT_SHAPE.match(credential)
    if not m:
        return False
    head = m.group(1)
    if head.startswith("eyJ"):
        return True
    try:
        return (
            base64.urlsafe_b64decode(head[:8] + "=" * (-len(head[:8]) % 4))
            .lstrip()
            .startswith(b"{")
        )
    except (binascii.Error, ValueError):
        return False


class Authenticator:
    """Turn a credential string into an :class:`Identity`.

    Dispatch is by shape, never by trying every verifier in turn:

    * ``hgt1.…`` → gateway token (:class:`GatewayTokens`);
    * a JWT (``eyJ….….…``) → OIDC (:class:`OIDCValidator`), or
      ``AuthError("oidc_not_configured")`` when there is no ``identity.oidc``;
    * anything else → API key, by SHA-256 in constant time.

    ``token_key`` is the ed25519 signing key (or a ready :class:`GatewayTokens`);
    when ``oidc_validator`` is None and ``config.oidc`` is set, a validator is
    created from the configuration. A leading ``Bearer `` is stripped.
    """

    def __init__(
        self,
        config: IdentityConfig,
        token_key: Ed25519PrivateKey | GatewayTokens,
        oidc_validator: OIDCValidator | None = None,
        *,
        gateway_id: str = "hoopd",
    ) -> None:
        self.config = config
        if isinstance(token_key, GatewayTokens):
            self.tokens = token_key
        else:
            self.tokens = GatewayTokens(token_key, config.gateway_tokens, gateway_id=gateway_id)
        if oidc_validator is None and config.oidc is not None:
            oidc_validator = OIDCValidator(config.oidc)
        self.oidc = oidc_validator
        self.api_keys = ApiKeys(config.api_keys)

    @classmethod
    def from_data_dir(
        cls, config: IdentityConfig, data_dir: Path, *, gateway_id: str = "hoopd"
    ) -> Authenticator:
        """Build with the token key at ``data_dir/token_key.ed25519`` (created if absent)."""
        key = load_or_create_token_key(Path(data_dir) / KEY_FILE_NAME)
        return cls(config, key, gateway_id=gateway_id)

    async def authenticate(self, credential: str) -> Identity:
        """Return the identity proven by ``credential`` or raise :class:`AuthError`."""
        credential = (credential or "").strip()
        if credential[:7].lower() == "bearer ":
            credential = credential[7:].strip()
        if not credential:
            raise AuthError("missing", "no credential presented")
        if credential.startswith(TOKEN_PREFIX):
            return self.tokens.verify(credential)
        if looks_like_jwt(credential):
            if self.oidc is None:
                raise AuthError(
                    "oidc_not_configured", "JWT presented but no OIDC issuer is configured"
                )
            return await self.oidc.validate(credential)
        if len(credential) > 512:
            raise AuthError("malformed", "credential too long")
        return self.api_keys.lookup(credential)

    async def exchange(
        self, oidc_token: str, ttl: float | str | None = None
    ) -> tuple[str, Identity]:
        """Validate an OIDC token and issue a gateway token for the same subject
        and groups. ``ttl`` defaults to and is capped by ``max_ttl_seconds``.
        Returns ``(gateway_token, oidc_identity)``."""
        ident = await self.authenticate(oidc_token)
        if ident.method is not AuthMethod.OIDC:
            raise AuthError("invalid", "only an OIDC token can be exchanged for a gateway token")
        token = self.tokens.issue(
            ident.subject,
            ident.groups,
            ttl if ttl is not None else self.tokens.max_ttl_seconds,
            email=ident.email,
        )
        return token, ident

    def session_deadline(self, identity: Identity) -> float | None:
        """Unix time at which a session authenticated by ``identity`` must end:
        the credential's expiry plus ``expiry_grace_seconds`` (None: never)."""
        if identity.expires_at is None:
            return None
        return identity.expires_at + self.config.expiry_grace_seconds

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()
