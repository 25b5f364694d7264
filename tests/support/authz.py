"""Helpers shared by the authorization suites: users, admins, forged tokens, Redis time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests.conftest import TEST_PASSWORD, new_email
from tests.support.localauth import LocalAuth
from tests.support.users import create_user

Tokens = dict[str, Any]


def bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(
    client: httpx.AsyncClient, email: str, password: str = TEST_PASSWORD
) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def signed_in(client: httpx.AsyncClient, email: str | None = None) -> Tokens:
    """Register a fresh user through the app and sign in; the login response body."""
    email = email or new_email()
    created = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": TEST_PASSWORD}
    )
    assert created.status_code == 201, created.text
    response = await login(client, email)
    assert response.status_code == 200, response.text
    body: Tokens = response.json()
    return body


async def seeded_user(
    auth: LocalAuth, *, roles: list[str] | None = None, email: str | None = None
) -> tuple[str, str]:
    """A confirmed user created upstream (with ``app_metadata.roles``); (id, email)."""
    email = email or new_email()
    metadata = {"roles": roles} if roles else None
    user_id = await anyio.to_thread.run_sync(
        lambda: create_user(auth, email, TEST_PASSWORD, app_metadata=metadata)
    )
    return user_id, email


async def admin_token(auth: LocalAuth, client: httpx.AsyncClient) -> str:
    _, email = await seeded_user(auth, roles=["admin"])
    response = await login(client, email)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def signing_key(db_path: Path) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """localauth's current ES256 signing key (kid, private key), read from its key file."""
    raw = json.loads(db_path.with_name(db_path.name + ".keys.json").read_text())
    jwk = raw["es256_keys"][0]
    key = ECAlgorithm(ECAlgorithm.SHA256).from_jwk(jwk)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return str(jwk["kid"]), key


def unverified(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def forge(claims: dict[str, Any], key: Any, *, alg: str = "ES256", kid: str | None) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


async def redis_now_ms(redis_url: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        seconds, micros = await client.time()
    finally:
        await client.aclose()
    return int(seconds) * 1000 + int(micros) // 1000


async def poll(deadline: float, check: Any, *, interval: float = 0.005) -> float:
    """Await ``check()`` until it returns True or ``deadline`` seconds pass; the time taken."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > deadline:
            raise AssertionError(f"condition not met within {deadline} s")
        await anyio.sleep(interval)
    return time.monotonic() - started
