"""Identity: OIDC tokens, gateway tokens and agent API keys.

Public API::

    from hoopd.identity import (
        IdentityConfig, OIDCConfig, ApiKeyConfig, GatewayTokenConfig,
        AuthError, OIDCValidator, GatewayTokens, load_or_create_token_key,
        ApiKeys, hash_api_key, generate_api_key, Authenticator,
    )

See docs/identity.md.
"""

from hoopd.identity.apikeys import ApiKeys, generate_api_key, hash_api_key
from hoopd.identity.authenticator import Authenticator, looks_like_jwt
from hoopd.identity.config import ApiKeyConfig, GatewayTokenConfig, IdentityConfig, OIDCConfig
from hoopd.identity.errors import AUTH_REASONS, AuthError
from hoopd.identity.oidc import OIDCValidator
from hoopd.identity.tokens import (
    KEY_FILE_NAME,
    TOKEN_PREFIX,
    GatewayTokens,
    TokenTooLarge,
    load_or_create_token_key,
    parse_ttl,
)

__all__ = [
    "AUTH_REASONS",
    "KEY_FILE_NAME",
    "TOKEN_PREFIX",
    "ApiKeyConfig",
    "ApiKeys",
    "AuthError",
    "Authenticator",
    "GatewayTokenConfig",
    "GatewayTokens",
    "IdentityConfig",
    "OIDCConfig",
    "OIDCValidator",
    "TokenTooLarge",
    "generate_api_key",
    "hash_api_key",
    "load_or_create_token_key",
    "looks_like_jwt",
    "parse_ttl",
]
