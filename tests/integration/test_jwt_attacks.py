"""Forged, altered and malformed access tokens, against the app with localauth's real keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.authz import bearer, forge, signed_in, signing_key, unverified
from tests.support.localauth import LocalAuth

pytestmark = pytest.mark.anyio

ME = "/api/v1/auth/me"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """HS256 by hand: PyJWT itself refuses a PEM public key as an HMAC secret."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _alg_none(token: str, auth: LocalAuth) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": signing_key(auth.db_path)[0]}
    return f"{_b64(json.dumps(header).encode())}.{token.split('.')[1]}."


def _hs256_with_public_key(token: str, auth: LocalAuth) -> str:
    kid, private = signing_key(auth.db_path)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _raw_hs256({"alg": "HS256", "typ": "JWT", "kid": kid}, unverified(token), pem)


def _wrong_kid(token: str, auth: LocalAuth) -> str:
    """Signed by an attacker's key, but naming the project's real kid."""
    attacker = ec.generate_private_key(ec.SECP256R1())
    return forge(unverified(token), attacker, kid=signing_key(auth.db_path)[0])


def _unknown_kid(token: str, auth: LocalAuth) -> str:
    attacker = ec.generate_private_key(ec.SECP256R1())
    return forge(unverified(token), attacker, kid=str(uuid.uuid4()))


def _resigned(**changes: Any) -> Callable[[str, LocalAuth], str]:
    """The real claims with ``changes``, validly signed with localauth's own key."""

    def make(token: str, auth: LocalAuth) -> str:
        kid, key = signing_key(auth.db_path)
        return forge({**unverified(token), **changes}, key, kid=kid)

    return make


def _tampered(token: str, auth: LocalAuth) -> str:
    header, _, signature = token.split(".")
    claims = {**unverified(token), "app_metadata": {"roles": ["admin"]}}
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _truncated(token: str, auth: LocalAuth) -> str:
    return token[:-12]


def _oversized(token: str, auth: LocalAuth) -> str:
    return _resigned(padding="x" * 9000)(token, auth)


def _non_json_header(token: str, auth: LocalAuth) -> str:
    return _b64(b"{not json") + token[token.index(".") :]


NOW = int(time.time())
ATTACKS: dict[str, tuple[Callable[[str, LocalAuth], str], str]] = {
    "alg_none": (_alg_none, "invalid_token"),
    "hs256_signed_with_public_key": (_hs256_with_public_key, "invalid_token"),
    "wrong_kid": (_wrong_kid, "invalid_token"),
    "unknown_kid": (_unknown_kid, "invalid_token"),
    "expired": (_resigned(iat=NOW - 7200, exp=NOW - 3600), "token_expired"),
    "not_yet_valid_nbf": (_resigned(nbf=NOW + 3600), "invalid_token"),
    "issued_in_the_future": (_resigned(iat=NOW + 3600, exp=NOW + 7200), "invalid_token"),
    "wrong_aud": (_resigned(aud="someone-else"), "invalid_token"),
    "wrong_iss": (_resigned(iss="https://evil.example/auth/v1"), "invalid_token"),
    "missing_exp": (_resigned(exp=None), "invalid_token"),
    "tampered_payload": (_tampered, "invalid_token"),
    "truncated": (_truncated, "invalid_token"),
    "oversized": (_oversized, "invalid_token"),
    "non_json_header": (_non_json_header, "invalid_token"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
async def test_forged_token_is_refused(
    attack: str, client: httpx.AsyncClient, localauth: LocalAuth
) -> None:
    """Every forged, altered or malformed token gets 401 with a stable code, never a 200."""
    tokens = await signed_in(client)
    good = str(tokens["access_token"])
    make, code = ATTACKS[attack]
    forged = make(good, localauth)

    response = await client.get(ME, headers=bearer(forged))

    assert response.status_code == 401, response.text
    assert response.json()["code"] == code
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get(ME, headers=bearer(good))).status_code == 200


async def test_validly_resigned_token_still_works(
    client: httpx.AsyncClient, localauth: LocalAuth
) -> None:
    """The forging helper itself is sound: a re-signed, unchanged token is accepted."""
    tokens = await signed_in(client)
    resigned = _resigned()(str(tokens["access_token"]), localauth)
    response = await client.get(ME, headers=bearer(resigned))
    assert response.status_code == 200, response.text


async def test_missing_or_non_bearer_authorization_is_401(client: httpx.AsyncClient) -> None:
    """No token, or another scheme, is a 401 missing_token with a Bearer challenge."""
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}):
        response = await client.get(ME, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == "missing_token"
        assert response.headers["www-authenticate"] == 'Bearer realm="api"'
