"""Agent API keys, configured by the SHA-256 of the key.

Lookup hashes the presented key once and compares the digest against *every*
configured hash with :func:`hmac.compare_digest` (no early exit), so neither
the position of a match nor how many bytes matched shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from hoopd.identity.config import ApiKeyConfig
from hoopd.identity.errors import AuthError
from hoopd.model import AuthMethod, Identity

API_KEY_PREFIX = "hak_"


def hash_api_key(key: str) -> str:
    """The lowercase hex SHA-256 of the key's UTF-8 bytes (what goes in the config)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_api_key() -> tuple[str, str]:
    """Return ``(key, sha256)`` for a new random API key (``hak_`` + 43 chars)."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_api_key(key)


class ApiKeys:
    """The configured API keys. ``lookup`` raises :class:`AuthError` with reason
    ``unknown_api_key`` or ``revoked_api_key``."""

    def __init__(self, keys: Sequence[ApiKeyConfig]) -> None:
        self._keys = [(bytes.fromhex(k.sha256), k) for k in keys]

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, key: str) -> Identity:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found: ApiKeyConfig | None = None
        for expected, cfg in self._keys:
            if hmac.compare_digest(digest, expected):
                found = cfg
        if found is None:
            raise AuthError("unknown_api_key", "unknown API key")
        if found.revoked:
            raise AuthError("revoked_api_key", f"API key {found.name!r} is revoked")
        return Identity(
            subject=found.name,
            groups=frozenset(found.groups),
            method=AuthMethod.API_KEY,
            issuer="api-key",
        )
