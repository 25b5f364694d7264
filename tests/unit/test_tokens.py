"""TokenVerifier: JWKS refetch discipline, key/algorithm pinning, and the claims cache."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, tzinfo
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from services import errors
from services.tokens import TokenVerifier

pytestmark = pytest.mark.anyio

ISS = "http://auth.test/auth/v1"
SECRET = "a-legacy-hs256-secret-of-enough-length"


class Jwks:
    """A JWKS endpoint whose keys the test controls, counting fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.fetches = 0

    def add(self) -> str:
        kid = str(uuid.uuid4())
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        return kid

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        entries = []
        for kid, key in self.keys.items():
            jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            entries.append({**jwk, "kid": kid, "alg": "ES256"})
        return httpx.Response(200, json={"keys": entries})


@pytest.fixture
def jwks() -> Jwks:
    return Jwks()


@pytest.fixture
async def verifier(jwks: Jwks) -> AsyncIterator[TokenVerifier]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(jwks.handler)) as http:
        yield TokenVerifier(
            jwks_url="http://auth.test/auth/v1/.well-known/jwks.json",
            http_client=http,
            audience="authenticated",
            issuer=ISS,
            hs256_secret=SECRET,
            leeway=5,
            refresh_interval=60,
        )


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "u1", "session_id": "s1", "aud": "authenticated", "iss": ISS}
    return {**base, "iat": now, "exp": now + 3600, **changes}


def es256(jwks: Jwks, kid: str, **changes: Any) -> str:
    return jwt.encode(claims(**changes), jwks.keys[kid], algorithm="ES256", headers={"kid": kid})


async def test_unknown_kid_refetches_at_most_once_per_interval(
    verifier: TokenVerifier, jwks: Jwks
) -> None:
    """A new kid is fetched once; a flood of unknown kids costs no further fetches."""
    await verifier.refresh_keys(force=True)
    assert jwks.fetches == 1
    verifier._fetched_at = -float("inf")  # as if the interval had passed
    new_kid = jwks.add()
    assert (await verifier.verify(es256(jwks, new_kid))).sub == "u1"
    assert jwks.fetches == 2
    for _ in range(20):
        bogus = jwt.encode(
            claims(), ec.generate_private_key(ec.SECP256R1()), "ES256", {"kid": str(uuid.uuid4())}
        )
        with pytest.raises(errors.InvalidToken, match="unknown key"):
            await verifier.verify(bogus)
    assert jwks.fetches == 2


async def test_kid_less_hs256_uses_the_secret_and_never_a_public_key(
    verifier: TokenVerifier, jwks: Jwks
) -> None:
    """Legacy HS256 verifies with the secret; HS256 naming an ES256 kid is refused."""
    kid = jwks.add()
    await verifier.refresh_keys(force=True)
    assert (await verifier.verify(jwt.encode(claims(), SECRET, "HS256"))).sub == "u1"
    confused = jwt.encode(claims(), SECRET, "HS256", headers={"kid": kid})
    with pytest.raises(errors.InvalidToken, match="algorithm"):
        await verifier.verify(confused)


async def test_cached_claims_never_outlive_exp(
    verifier: TokenVerifier, jwks: Jwks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached token is refused once its exp passes (beyond the leeway), cache or not."""
    kid = jwks.add()
    await verifier.refresh_keys(force=True)
    now = int(time.time())
    token = es256(jwks, kid, exp=now + 60)
    await verifier.verify(token)
    later = datetime.fromtimestamp(now + 60 + 10, tz=UTC)

    class Clock(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Clock:
            return cls.fromtimestamp(later.timestamp(), tz=tz)

    # Both clocks move: ours (the cache) and PyJWT's (the claims check).
    monkeypatch.setattr("services.tokens.time.time", later.timestamp)
    monkeypatch.setattr("jwt.api_jwt.datetime", Clock)
    with pytest.raises(errors.TokenExpired):
        await verifier.verify(token)
