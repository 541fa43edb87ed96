"""Gateway tokens: short, signed credentials that fit in an OpenSSH password.

Format (version 1)::

    hgt1.<payload>.<signature>

* ``payload`` is base64url (no padding) of a msgpack map with the keys
  ``sub`` (str), ``groups`` (list of str), ``iat`` and ``exp`` (int unix
  seconds), ``jti`` (random 16-character id) and ``iss`` (the issuing gateway
  id). Email is carried as ``email`` when set.
* ``signature`` is base64url (no padding) of the ed25519 signature over the
  ASCII bytes ``hgt1.<payload>`` (header and payload as sent, like JWS).

Base64 is decoded strictly (the re-encoding must match byte for byte), so a
token has exactly one valid spelling. A token carrying ~20 groups of ~20
characters is about 700 characters; :meth:`GatewayTokens.issue` refuses to
produce one of 1000 characters or more.

The signing key is a raw 32-byte ed25519 seed in ``data_dir`` (see
:func:`load_or_create_token_key`); every gateway that must accept the tokens of
another shares that file. The ``iss`` is informational (which gateway issued
it): any token signed by the key is accepted.

Revocation: ``hoopd token revoke`` writes a :class:`TokenRevocation` (one
token by ``jti``, or every token of a subject issued up to a moment) to the
state store shared by the gateways; each gateway loads them at start and
polls for new ones (:meth:`GatewayTokens.apply_revocations`), refuses revoked
tokens and ends live sessions that used one. Rotating the key file revokes
all tokens at once.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from hoopd.identity.config import GatewayTokenConfig
from hoopd.identity.errors import AuthError
from hoopd.model import AuthMethod, Identity

TOKEN_PREFIX = "hgt1."
MAX_TOKEN_LENGTH = 999
"""Tokens are always shorter than 1000 characters (OpenSSH passwords)."""
KEY_FILE_NAME = "token_key.ed25519"

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class TokenTooLarge(ValueError):
    """The token would not fit in 1000 characters (too many or too long groups)."""


def parse_ttl(value: str | float | int) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` or a number of seconds → seconds."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _TTL.match(value)
        if not m:
            raise ValueError(f"invalid duration {value!r} (use e.g. 90s, 15m, 1h, 2d)")
        seconds = float(m.group(1)) * _TTL_UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return seconds


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("bad base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError("bad base64url") from e
    if _b64e(data) != text:  # non-canonical spelling (stray low bits)
        raise ValueError("non-canonical base64url")
    return data


def load_or_create_token_key(path: Path) -> Ed25519PrivateKey:
    """Load the ed25519 token signing key from ``path`` (raw 32-byte seed), or
    create it atomically with mode 0600 when it does not exist.

    Two processes racing to create it end up with the same key (``O_EXCL``;
    the loser reads the winner's file). A file of the wrong size is an error,
    never silently replaced.
    """
    path = Path(path)
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, seed)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if someone else created it meanwhile
        except FileExistsError:
            seed = path.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
    if len(seed) != 32:
        raise ValueError(f"{path}: expected a 32-byte ed25519 seed, found {len(seed)} bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True, slots=True)
class TokenRevocation:
    """A row of the state store's token revocations.

    ``kind="token"``: the token whose jti is ``value``. ``kind="subject"``:
    every token of subject ``value`` issued at or before ``issued_up_to``.
    ``keep_until``: after it no revoked token can still be valid (its exp, or
    the cutoff plus the longest token lifetime), so the row may be dropped.
    """

    kind: Literal["token", "subject"]
    value: str
    revoked_at: float
    keep_until: float
    issued_up_to: float = 0.0
    revoked_by: str = ""
    reason: str = ""


class GatewayTokens:
    """Issue and verify gateway tokens.

    ``key`` signs (and its public half verifies); ``extra_public_keys`` are
    also accepted for verification (key rotation). ``gateway_id`` becomes the
    ``iss`` of issued tokens and the ``issuer`` of verified identities is the
    token's ``iss``.
    """

    def __init__(
        self,
        key: Ed25519PrivateKey,
        config: GatewayTokenConfig | None = None,
        *,
        gateway_id: str = "hoopd",
        extra_public_keys: Sequence[Ed25519PublicKey] = (),
        revoked_jtis: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self._public = [key.public_key(), *extra_public_keys]
        self.config = config or GatewayTokenConfig()
        self.gateway_id = gateway_id
        self._revoked: set[str] = set(revoked_jtis)
        self._revoked_subjects: dict[str, float] = {}
        """subject -> tokens issued at or before this time are revoked."""
        self.revocations_unavailable: str | None = None
        """Why revocations are not known (fail closed: every token is refused)."""
        self._clock = clock

    @property
    def max_ttl_seconds(self) -> int:
        return self.config.max_ttl_seconds

    def issue(
        self,
        sub: str,
        groups: Iterable[str] = (),
        ttl: float | str = 3600,
        *,
        email: str = "",
    ) -> str:
        """Return a signed token for ``sub`` with ``groups`` valid for ``ttl``
        seconds (or ``"15m"``/``"1h"``...). Raises ``ValueError`` when ttl is
        not positive or exceeds ``max_ttl_seconds``, and :class:`TokenTooLarge`
        when the token would be 1000 characters or more."""
        if not sub:
            raise ValueError("subject must not be empty")
        seconds = parse_ttl(ttl)
        if seconds > self.config.max_ttl_seconds:
            raise ValueError(
                f"ttl {seconds:g}s exceeds gateway_tokens.max_ttl_seconds ({self.config.max_ttl_seconds})"
            )
        now = int(self._clock())
        claims: dict[str, Any] = {
            "sub": sub,
            "groups": sorted(set(groups)),
            "iat": now,
            "exp": now + max(1, round(seconds)),
            "jti": secrets.token_urlsafe(12),
            "iss": self.gateway_id,
        }
        if email:
            claims["email"] = email
        signing_input = TOKEN_PREFIX + _b64e(msgpack.packb(claims, use_bin_type=True))
        token = signing_input + "." + _b64e(self._key.sign(signing_input.encode("ascii")))
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenTooLarge(
                f"gateway token would be {len(token)} characters (limit {MAX_TOKEN_LENGTH}); use fewer or shorter groups"
            )
        return token

    def revoke(self, jti: str) -> None:
        self._revoked.add(jti)

    def apply_revocations(self, revocations: Iterable[TokenRevocation]) -> None:
        """Add revocations read from the state store (idempotent)."""
        for r in revocations:
            if r.kind == "token":
                self._revoked.add(r.value)
            elif r.value not in self._revoked_subjects or r.issued_up_to > self._revoked_subjects[r.value]:
                self._revoked_subjects[r.value] = r.issued_up_to

    def is_revoked(self, jti: str, subject: str, issued_at: float) -> bool:
        cutoff = self._revoked_subjects.get(subject)
        return jti in self._revoked or (cutoff is not None and issued_at <= cutoff)

    def claims(self, token: str) -> dict[str, Any]:
        """Verify ``token`` and return its claims (raises :class:`AuthError`)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 4096:
            raise AuthError("malformed", "not a gateway token")
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthError("malformed", "gateway token must have 3 dot-separated parts")
        try:
            payload = _b64d(parts[1])
            sig = _b64d(parts[2])
        except ValueError:
            raise AuthError("malformed", "gateway token is not valid base64url") from None
        signing_input = (parts[0] + "." + parts[1]).encode("ascii")
        for pub in self._public:
            try:
                pub.verify(sig, signing_input)
                break
            except InvalidSignature:
                continue
        else:
            raise AuthError("bad_signature", "gateway token signature does not verify")
        try:
            claims = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except Exception:
            raise AuthError("malformed", "gateway token payload is not valid") from None
        if not isinstance(claims, dict):
            raise AuthError("malformed", "gateway token payload is not a map")
        sub, groups, iat, exp, jti = (claims.get(k) for k in ("sub", "groups", "iat", "exp", "jti"))
        if (
            not isinstance(sub, str)
            or not sub
            or not isinstance(groups, list)
            or not all(isinstance(g, str) for g in groups)
            or not isinstance(iat, int)
            or not isinstance(exp, int)
            or not isinstance(jti, str)
            or not isinstance(claims.get("iss", ""), str)
        ):
            raise AuthError("malformed", "gateway token payload has missing or mistyped claims")
        now = self._clock()
        leeway = self.config.leeway_seconds
        if now >= exp + leeway:
            raise AuthError("expired", "gateway token has expired")
        if iat > now + leeway:
            raise AuthError("not_yet_valid", "gateway token is not valid yet")
        if self.revocations_unavailable is not None:
            raise AuthError("unavailable", self.revocations_unavailable)
        if self.is_revoked(jti, sub, iat):
            raise AuthError("revoked", "gateway token has been revoked")
        return claims

    def verify(self, token: str) -> Identity:
        """Verify ``token`` and return its :class:`Identity`
        (``method=GATEWAY_TOKEN``, ``expires_at=exp``). Raises :class:`AuthError`
        with reason ``malformed``, ``bad_signature``, ``expired``,
        ``not_yet_valid`` or ``revoked``."""
        c = self.claims(token)
        email = c.get("email", "")
        return Identity(
            subject=c["sub"],
            groups=frozenset(c["groups"]),
            method=AuthMethod.GATEWAY_TOKEN,
            issuer=c.get("iss", ""),
            email=email if isinstance(email, str) else "",
            expires_at=float(c["exp"]),
            credential_id=c["jti"],
            issued_at=float(c["iat"]),
        )
