"""OpenID Connect token validation.

:class:`OIDCValidator` discovers the issuer (``/.well-known/openid-configuration``),
fetches its JWKS, caches it, and validates bearer JWTs:

1. The header is parsed without trusting anything in it. Its ``alg`` must be
   in the configured allow-list *before* any key is looked at; ``none`` and
   every HMAC algorithm (``HS*``) are refused whatever the configuration says,
   so a token "signed" with the issuer's public key as an HMAC secret never
   reaches a verifier.
2. The key is selected by ``kid``. An unknown ``kid`` triggers one JWKS refresh
   (key rotation), at most once per ``jwks_min_refresh_seconds``; concurrent
   validations share the same fetch. A token without ``kid`` is accepted only
   when exactly one usable key matches its algorithm.
3. The key type must fit the algorithm (RSA for RS*/PS*, EC P-256 for ES256,
   P-384 for ES384, OKP Ed25519/Ed448 for EdDSA); a JWK that declares its own
   ``alg`` must declare the same one. Symmetric (``oct``) keys and JWKs
   carrying private parts are ignored.
4. Signature, ``iss``, ``aud``, ``exp`` (required), ``nbf`` and ``iat`` are
   checked with ``leeway_seconds``.

Failures raise :class:`~hoopd.identity.errors.AuthError` with a fixed reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from hoopd.identity.config import OIDCConfig, _check_url
from hoopd.identity.errors import AuthError
from hoopd.model import AuthMethod, Identity

log = logging.getLogger(__name__)

FORBIDDEN_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})

SessionFactory = Callable[[], aiohttp.ClientSession]


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """Value of ``path`` in ``claims``: the top-level key ``path`` if present
    (namespaced claims like ``https://example.com/groups`` contain dots),
    else a walk of dot-separated names through nested objects. None if absent."""
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def groups_from(value: Any) -> frozenset[str]:
    """A claim value → groups: a list of strings (non-strings ignored) or a
    single string (one group); anything else → no groups."""
    if isinstance(value, str):
        return frozenset({value}) if value else frozenset()
    if isinstance(value, list | tuple):
        return frozenset(v for v in value if isinstance(v, str) and v)
    return frozenset()


def _key_fits(alg: str, key: Any) -> bool:
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    if alg == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    if alg == "ES384":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


class OIDCValidator:
    """Validate OIDC bearer tokens for one issuer.

    ``session_factory`` builds the aiohttp session used for discovery and JWKS
    (created lazily on first use, closed by :meth:`close`). ``clock`` is the
    time source for the JWKS refresh rate limit (token times use the real clock
    through PyJWT).
    """

    def __init__(
        self,
        config: OIDCConfig,
        session_factory: SessionFactory | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None
        self._clock = clock
        self._lock = asyncio.Lock()
        self._jwks_uri: str | None = None
        self._keys: dict[str, list[dict[str, Any]]] = {}  # kid ("" if none) -> JWKs
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt
        self.fetch_count = 0
        """Number of JWKS fetches performed (for tests and metrics)."""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- fetching ---------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if self._session_factory is not None:
                self._session = self._session_factory()
            else:
                timeout = aiohttp.ClientTimeout(total=self.config.http_timeout_seconds)
                self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _get_json(self, url: str) -> dict[str, Any]:
        async with self._http().get(url, headers={"Accept": "application/json"}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {url}: HTTP {resp.status}")
            data = await resp.json(content_type=None)
        if not isinstance(data, dict):
            raise RuntimeError(f"GET {url}: not a JSON object")
        return data

    async def _discover(self) -> str:
        if self._jwks_uri is None:
            doc = await self._get_json(self.config.resolved_discovery_url)
            if doc.get("issuer") != self.config.issuer:
                raise RuntimeError(
                    f"discovery document issuer {doc.get('issuer')!r} does not match configured issuer"
                )
            uri = doc.get("jwks_uri")
            if not isinstance(uri, str):
                raise RuntimeError("discovery document has no jwks_uri")
            self._jwks_uri = _check_url(uri, "jwks_uri")
        return self._jwks_uri

    async def _fetch_jwks(self) -> None:
        self._attempted_at = self._clock()
        self.fetch_count += 1
        try:
            jwks = await self._get_json(await self._discover())
        except Exception:
            self._jwks_uri = None  # rediscover next time
            raise
        keys: dict[str, list[dict[str, Any]]] = {}
        for jwk in jwks.get("keys", []):
            if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC", "OKP"):
                continue
            if "d" in jwk or jwk.get("use", "sig") != "sig":
                continue
            keys.setdefault(str(jwk.get("kid", "")), []).append(jwk)
        self._keys = keys
        self._fetched_at = self._attempted_at
        log.info(
            "oidc: fetched %d signing keys from %s", sum(map(len, keys.values())), self._jwks_uri
        )

    async def refresh(self, *, force: bool = False) -> bool:
        """Refetch the JWKS unless one was attempted within
        ``jwks_min_refresh_seconds`` (``force`` ignores that). Returns whether
        a fetch happened. Raises on fetch failure."""
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted:
                return True  # someone else fetched while we waited for the lock
            if (
                not force
                and self._attempted_at is not None
                and self._clock() - self._attempted_at < self.config.jwks_min_refresh_seconds
            ):
                return False
            await self._fetch_jwks()
            return True

    async def _ensure_keys(self) -> None:
        now = self._clock()
        stale = (
            self._fetched_at is None or now - self._fetched_at > self.config.jwks_max_age_seconds
        )
        if not stale:
            return
        try:
            await self.refresh(force=self._fetched_at is None and self._attempted_at is None)
        except Exception as e:
            if self._fetched_at is None:
                log.warning("oidc: identity provider unavailable: %s", e)
                raise AuthError("unavailable", f"identity provider keys unavailable: {e}") from None
            log.warning("oidc: JWKS refresh failed, keeping cached keys: %s", e)
        if self._fetched_at is None:
            raise AuthError("unavailable", "identity provider keys unavailable (retry later)")

    def _candidates(self, kid: str | None, alg: str) -> list[Any]:
        if kid is not None:
            jwks = self._keys.get(kid, [])
        else:
            jwks = [k for ks in self._keys.values() for k in ks]
        out = []
        for jwk in jwks:
            if jwk.get("alg") not in (None, alg):
                continue
            try:
                key = jwt.PyJWK(jwk, algorithm=alg).key
            except Exception:
                continue
            if _key_fits(alg, key):
                out.append(key)
        return out

    async def _select_key(self, kid: str | None, alg: str) -> Any:
        await self._ensure_keys()
        keys = self._candidates(kid, alg)
        if not keys and kid is not None and kid not in self._keys:
            try:
                await self.refresh()
            except Exception as e:
                log.warning("oidc: JWKS refresh for unknown kid failed: %s", e)
            # recompute even when rate-limited: a concurrent refresh may have run
            keys = self._candidates(kid, alg)
        if not keys:
            if kid is not None and kid in self._keys:
                raise AuthError("alg_not_allowed", f"key {kid!r} does not fit algorithm {alg}")
            raise AuthError("unknown_key", "token signed by an unknown key")
        if kid is None and len(keys) != 1:
            raise AuthError("unknown_key", "token has no kid and the key set is ambiguous")
        return keys[0]

    # -- validation -------------------------------------------------------

    async def validate(self, token: str) -> Identity:
        """Validate ``token`` and return the caller's :class:`Identity`
        (``method=OIDC``, groups from ``groups_claim``, ``expires_at=exp``)."""
        cfg = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed", "not a valid JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg in FORBIDDEN_ALGORITHMS or alg not in cfg.algorithms:
            raise AuthError(
                "alg_not_allowed", f"signature algorithm {str(alg)[:16]!r} is not allowed"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed", "kid must be a string")
        key = await self._select_key(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=cfg.audiences,
                issuer=cfg.issuer,
                leeway=cfg.leeway_seconds,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid", "token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong_audience", "token audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong_issuer", "token issuer is not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "token signature does not verify") from None
        except jwt.MissingRequiredClaimError as e:
            raise AuthError("missing_claim", f"token lacks the {e.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("alg_not_allowed", "signature algorithm is not allowed") from None
        except jwt.DecodeError:
            raise AuthError("malformed", "token could not be decoded") from None
        except jwt.PyJWTError as e:
            raise AuthError("invalid", f"token rejected: {type(e).__name__}") from None
        subject = claim_at(claims, cfg.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthError("missing_claim", f"token lacks the {cfg.subject_claim!r} claim")
        email = claim_at(claims, cfg.email_claim)
        exp = claims["exp"]
        return Identity(
            subject=subject,
            groups=groups_from(claim_at(claims, cfg.groups_claim)),
            method=AuthMethod.OIDC,
            issuer=cfg.issuer,
            email=email if isinstance(email, str) else "",
            expires_at=float(exp),
        )
