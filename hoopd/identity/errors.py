"""Authentication errors.

Every failure to authenticate raises :class:`AuthError`. Its ``reason`` is a
short fixed label meant for metrics and logs (a bounded set, never built from
the credential); its message is safe to log: it never contains the credential
or any part of it.
"""

from __future__ import annotations

AUTH_REASONS: frozenset[str] = frozenset(
    {
        "missing",  # no credential at all
        "malformed",  # not parseable as any known credential shape
        "bad_signature",  # signature does not verify
        "expired",  # exp in the past (beyond leeway)
        "not_yet_valid",  # nbf / iat in the future (beyond leeway)
        "wrong_audience",
        "wrong_issuer",
        "unknown_key",  # no JWKS key with that kid (after a rate-limited refresh)
        "alg_not_allowed",  # alg outside the allow-list (none, HS*, ...) or key/alg mismatch
        "missing_claim",  # a required claim (exp, iss, aud, subject) is absent
        "invalid",  # any other token validation failure
        "unavailable",  # identity provider discovery / JWKS could not be fetched
        "unknown_api_key",
        "revoked_api_key",
        "revoked",  # gateway token revoked by jti
        "oidc_not_configured",  # a JWT was presented but OIDC is not configured
    }
)


class AuthError(Exception):
    """A credential was rejected.

    ``reason`` is one of :data:`AUTH_REASONS`; ``str(err)`` is a human message
    that is safe to log (it never includes the credential).
    """

    def __init__(self, reason: str, message: str = "") -> None:
        if reason not in AUTH_REASONS:  # pragma: no cover - programming error
            raise ValueError(f"unknown auth failure reason {reason!r}")
        self.reason = reason
        self.message = message or reason.replace("_", " ")
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"AuthError({self.reason!r}, {self.message!r})"
