"""A local OIDC issuer for tests: discovery + JWKS on 127.0.0.1, random port.

Holds RSA, EC P-256 and Ed25519 keys; ``rotate()`` adds a new key under a new
kid; ``jwks_hits`` counts JWKS fetches. ``sign()`` makes real tokens and the
``forge_*`` helpers make the hostile ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

AUDIENCE = "hoopd-test"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        pub = self.private.public_key()
        if self.alg.startswith(("RS", "PS")):
            d = RSAAlgorithm.to_jwk(pub, as_dict=True)
        elif self.alg.startswith("ES"):
            d = ECAlgorithm.to_jwk(pub, as_dict=True)
        else:
            d = OKPAlgorithm.to_jwk(pub, as_dict=True)
        d.update(kid=self.kid, use="sig", alg=self.alg)
        return d

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def make_key(kid: str, alg: str) -> SigningKey:
    if alg.startswith(("RS", "PS")):
        priv: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        priv = ec.generate_private_key(ec.SECP256R1())
    else:
        priv = ed25519.Ed25519PrivateKey.generate()
    return SigningKey(kid, alg, priv)


@dataclass
class LocalIssuer:
    keys: list[SigningKey] = field(default_factory=list)
    url: str = ""
    jwks_hits: int = 0
    discovery_hits: int = 0
    down: bool = False
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        if not self.keys:
            self.keys = [
                make_key("rsa-1", "RS256"),
                make_key("ec-1", "ES256"),
                make_key("ed-1", "EdDSA"),
            ]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _discovery(self, request: web.Request) -> web.Response:
        self.discovery_hits += 1
        if self.down:
            return web.Response(status=503)
        return web.json_response({"issuer": self.url, "jwks_uri": self.url + "/jwks"})

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_hits += 1
        if self.down:
            return web.Response(status=503)
        return web.json_response({"keys": [k.jwk() for k in self.keys]})

    def key(self, alg: str) -> SigningKey:
        return next(k for k in self.keys if k.alg == alg)

    def rotate(self, alg: str = "RS256") -> SigningKey:
        k = make_key(f"{alg.lower()}-{len(self.keys) + 1}", alg)
        self.keys.append(k)
        return k

    def claims(self, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        c: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "alice",
            "email": "alice@example.com",
            "groups": ["dev", "sre"],
            "iat": now,
            "exp": now + 300,
        }
        c.update(over)
        return {k: v for k, v in c.items() if v is not None}

    def sign(
        self, key: SigningKey | None = None, headers: dict[str, Any] | None = None, **over: Any
    ) -> str:
        key = key or self.key("RS256")
        h = {"kid": key.kid}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        return jwt.encode(self.claims(**over), key.private, algorithm=key.alg, headers=h)

    def forge_none(self, **over: Any) -> str:
        header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
        return f"{header}.{b64(json.dumps(self.claims(**over)).encode())}."

    def forge_hs256_with_public_key(self, **over: Any) -> str:
        key = self.key("RS256")
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
        payload = b64(json.dumps(self.claims(**over)).encode())
        sig = hmac.new(key.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{b64(sig)}"

    @staticmethod
    def tamper(token: str, **over: Any) -> str:
        header, payload, sig = token.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims.update(over)
        return f"{header}.{b64(json.dumps(claims).encode())}.{sig}"
