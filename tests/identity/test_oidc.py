from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hoopd.identity import AuthError, OIDCConfig, OIDCValidator
from hoopd.model import AuthMethod

from .issuer import AUDIENCE, LocalIssuer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


MakeValidator = Callable[..., OIDCValidator]


@pytest.fixture
async def make_validator(issuer: LocalIssuer) -> AsyncIterator[MakeValidator]:
    made: list[OIDCValidator] = []

    def make(clock: Any = None, **over: Any) -> OIDCValidator:
        cfg = {"issuer": issuer.url, "audience": AUDIENCE, **over}
        v = OIDCValidator(OIDCConfig(**cfg), clock=clock or time.monotonic)
        made.append(v)
        return v

    yield make
    for v in made:
        await v.close()


async def reject(v: OIDCValidator, token: str, reason: str) -> AuthError:
    with pytest.raises(AuthError) as ei:
        await v.validate(token)
    assert ei.value.reason == reason, ei.value
    return ei.value


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_valid_token_each_algorithm(
    issuer: LocalIssuer, make_validator: MakeValidator, alg: str
) -> None:
    v = make_validator()
    exp = int(time.time()) + 120
    ident = await v.validate(issuer.sign(issuer.key(alg), exp=exp))
    assert ident.subject == "alice"
    assert ident.groups == {"dev", "sre"}
    assert ident.method is AuthMethod.OIDC
    assert ident.issuer == issuer.url
    assert ident.email == "alice@example.com"
    assert ident.expires_at == exp
    assert issuer.discovery_hits == 1 and issuer.jwks_hits == 1


async def test_alg_none_rejected(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator()
    await reject(v, issuer.forge_none(), "alg_not_allowed")
    assert issuer.jwks_hits == 0  # refused before any key was looked up


async def test_hs256_signed_with_public_key_rejected(
    issuer: LocalIssuer, make_validator: MakeValidator
) -> None:
    v = make_validator()
    await reject(v, issuer.forge_hs256_with_public_key(), "alg_not_allowed")
    assert issuer.jwks_hits == 0


async def test_alg_outside_configured_allow_list(
    issuer: LocalIssuer, make_validator: MakeValidator
) -> None:
    v = make_validator(algorithms=["ES256"])
    await reject(v, issuer.sign(issuer.key("RS256")), "alg_not_allowed")


async def test_key_type_must_match_alg(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    # An ES256 token that claims the kid of the RSA key: the kid is known, the key does not fit.
    v = make_validator()
    await reject(v, issuer.sign(issuer.key("ES256"), headers={"kid": "rsa-1"}), "alg_not_allowed")


async def test_expired(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator(leeway_seconds=5)
    now = int(time.time())
    await reject(v, issuer.sign(iat=now - 600, exp=now - 60), "expired")
    # within the leeway: still accepted
    await v.validate(issuer.sign(iat=now - 600, exp=now - 2))


async def test_not_yet_valid(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator(leeway_seconds=5)
    now = int(time.time())
    await reject(v, issuer.sign(nbf=now + 120), "not_yet_valid")
    await v.validate(issuer.sign(nbf=now + 2))


async def test_wrong_audience(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator()
    await reject(v, issuer.sign(aud="someone-else"), "wrong_audience")
    # list audience containing ours is fine
    await v.validate(issuer.sign(aud=["someone-else", AUDIENCE]))


async def test_audience_list_in_config(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator(audience=["other", AUDIENCE])
    await v.validate(issuer.sign())


async def test_wrong_issuer(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator()
    await reject(v, issuer.sign(iss="https://evil.example.com"), "wrong_issuer")


async def test_missing_exp(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator()
    c = issuer.claims()
    del c["exp"]
    import jwt

    token = jwt.encode(c, issuer.key("RS256").private, algorithm="RS256", headers={"kid": "rsa-1"})
    await reject(v, token, "missing_claim")


async def test_tampered_payload(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator()
    token = issuer.sign()
    await v.validate(token)
    await reject(v, issuer.tamper(token, groups=["admin"]), "bad_signature")
    await reject(v, issuer.tamper(token, sub="mallory"), "bad_signature")


async def test_malformed(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator()
    await reject(v, "eyJ.not.jwt", "malformed")
    await reject(v, "garbage", "malformed")


async def test_unknown_kid(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator()
    await v.validate(issuer.sign())
    stranger = issuer.rotate("RS256")
    issuer.keys.remove(stranger)  # signed by a key the issuer does not publish
    err = await reject(v, issuer.sign(stranger), "unknown_key")
    assert "unknown" in str(err)


async def test_kid_rotation_refreshes_and_is_rate_limited(
    issuer: LocalIssuer, make_validator: MakeValidator
) -> None:
    clock = FakeClock()
    v = make_validator(clock=clock, jwks_min_refresh_seconds=60)
    await v.validate(issuer.sign())
    assert issuer.jwks_hits == 1
    clock.now += 61
    new = issuer.rotate("ES256")
    # unknown kid -> one refresh, then accepted
    ident = await v.validate(issuer.sign(new))
    assert ident.subject == "alice"
    assert issuer.jwks_hits == 2
    # another unknown kid right away: no refetch (rate limit), rejected
    newer = issuer.rotate("EdDSA")
    for _ in range(5):
        await reject(v, issuer.sign(newer), "unknown_key")
    assert issuer.jwks_hits == 2
    # after the interval, the refresh happens and the token passes
    clock.now += 61
    await v.validate(issuer.sign(newer))
    assert issuer.jwks_hits == 3


async def test_concurrent_unknown_kid_single_fetch(
    issuer: LocalIssuer, make_validator: MakeValidator
) -> None:
    import asyncio

    clock = FakeClock()
    v = make_validator(clock=clock)
    await v.validate(issuer.sign())
    clock.now += 120
    new = issuer.rotate("RS256")
    token = issuer.sign(new)
    results = await asyncio.gather(*(v.validate(token) for _ in range(10)))
    assert all(r.subject == "alice" for r in results)
    assert issuer.jwks_hits == 2


async def test_nested_groups_claim(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator(groups_claim="realm_access.roles")
    ident = await v.validate(
        issuer.sign(groups=None, realm_access={"roles": ["db-admins", "viewers", 3]})
    )
    assert ident.groups == {"db-admins", "viewers"}


async def test_namespaced_groups_claim_with_dots(
    issuer: LocalIssuer, make_validator: MakeValidator
) -> None:
    v = make_validator(groups_claim="https://hoop.example.com/groups")
    ident = await v.validate(issuer.sign(**{"https://hoop.example.com/groups": "ops"}))
    assert ident.groups == {"ops"}


async def test_missing_groups_claim_means_no_groups(
    issuer: LocalIssuer, make_validator: MakeValidator
) -> None:
    v = make_validator(groups_claim="nope.nothing")
    assert (await v.validate(issuer.sign())).groups == frozenset()


async def test_custom_subject_claim(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    v = make_validator(subject_claim="preferred_username")
    assert (await v.validate(issuer.sign(preferred_username="al"))).subject == "al"
    await reject(v, issuer.sign(), "missing_claim")


async def test_issuer_unavailable(issuer: LocalIssuer, make_validator: MakeValidator) -> None:
    issuer.down = True
    v = make_validator()
    err = await reject(v, issuer.sign(), "unavailable")
    assert "unavailable" in str(err)


async def test_cached_keys_survive_issuer_outage(
    issuer: LocalIssuer, make_validator: MakeValidator
) -> None:
    clock = FakeClock()
    v = make_validator(clock=clock, jwks_max_age_seconds=100)
    await v.validate(issuer.sign())
    issuer.down = True
    clock.now += 1000  # cache is stale, refresh fails, cached keys still used
    await v.validate(issuer.sign())


async def test_discovery_issuer_mismatch(issuer: LocalIssuer) -> None:
    # configured issuer differs from what discovery says -> unavailable (not trusted)
    cfg = OIDCConfig(
        issuer=issuer.url + "/other",
        audience=AUDIENCE,
        discovery_url=issuer.url + "/.well-known/openid-configuration",
    )
    v = OIDCValidator(cfg)
    try:
        await reject(v, issuer.sign(iss=issuer.url + "/other"), "unavailable")
    finally:
        await v.close()
