"""SESSIONS_PER_USER: one account cannot grow its session record without bound.

Every session write reads the user's whole record in Redis (to prune expired sessions),
so an account signed in from a script thousands of times would make each of its writes,
and Redis for everyone, slower. A sign-in beyond the limit ends the least recently used
session instead, and that session's tokens are refused like any revoked one.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app.settings import Settings
from services import session_keys as keys
from services.sessions import SessionStore
from tests.conftest import TEST_PASSWORD, SettingsFactory, new_email
from tests.support.authz import bearer, login, unverified

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ME = "/api/v1/auth/me"


@pytest.fixture
async def store(redis_url: str, redis_prefix: str) -> AsyncIterator[SessionStore]:
    client = aioredis.Redis.from_url(redis_url)
    yield SessionStore(client, prefix=redis_prefix, session_ttl=3600, sessions_per_user=3)
    await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(last_seen: int) -> str:
    now = int(time.time())
    return f"{now + 3600}|{now - 7200}|{last_seen}|198.51.100.1|agent"


async def test_the_least_recently_used_session_is_the_one_ended(store: SessionStore) -> None:
    uid = "u-limit"
    now = int(time.time())
    key = keys.user_key(store.prefix, uid)
    # Three live sessions, "b" used longest ago; "a" has an MFA mark that must go with it
    # only if "a" is ended.
    await store.redis.hset(
        key,
        mapping={
            "a": _field(now - 10),
            "b": _field(now - 3000),
            "c": _field(now - 20),
            keys.ASSURANCE + "b": "aal2|factor",
            keys.NOT_BEFORE: "0",
        },
    )
    assert await store.create("d", uid, ip="203.0.113.9", user_agent="ua") == ["b"]
    fields = {_text(f) for f in await store.redis.hkeys(key)}
    assert fields == {"a", "c", "d", keys.NOT_BEFORE}
    assert (await store.lookup("b", uid))[0] is False
    assert (await store.lookup("a", uid))[0] is True


async def test_a_limit_lowered_later_ends_the_surplus_in_one_write(store: SessionStore) -> None:
    uid = "u-many"
    now = int(time.time())
    key = keys.user_key(store.prefix, uid)
    await store.redis.hset(key, mapping={f"s{i:02d}": _field(now - i) for i in range(20)})
    ended = await store.create("new", uid, ip="203.0.113.9", user_agent="ua")
    # The two most recently used stay with the new one; the rest go oldest first.
    assert ended == [f"s{i:02d}" for i in range(19, 1, -1)]
    assert {_text(f) for f in await store.redis.hkeys(key)} == {"s00", "s01", "new"}


async def test_signing_in_again_with_the_same_session_id_ends_nothing(store: SessionStore) -> None:
    uid = "u-same"
    for sid in ("a", "b", "c"):
        assert await store.create(sid, uid, ip="203.0.113.9", user_agent="ua") == []
    assert await store.create("c", uid, ip="203.0.113.9", user_agent="ua") == []
    assert await store.redis.hlen(keys.user_key(store.prefix, uid)) == 3


async def test_sign_ins_beyond_the_limit_end_old_sessions_through_the_api(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory, redis_url: str
) -> None:
    client: httpx.AsyncClient = await running_apps(make_settings(SESSIONS_PER_USER=2))
    email = new_email()
    # Registration signs in too: its session is the first of the five.
    created = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": TEST_PASSWORD}
    )
    assert created.status_code == 201, created.text
    first = created.json()["session"]
    tokens = [first]
    for _ in range(4):
        response = await login(client, email)
        assert response.status_code == 200, response.text
        tokens.append(response.json())
    answers = [(await client.get(ME, headers=bearer(t["access_token"]))) for t in tokens]
    alive = [r.status_code == 200 for r in answers]
    # The newest sign-in always survives; exactly the limit stays alive.
    assert alive[-1], [r.json() for r in answers]
    assert alive.count(True) == 2, [r.json() for r in answers]
    for token, answer in zip(tokens, answers, strict=True):
        if answer.status_code != 200:
            assert (answer.status_code, answer.json()["code"]) == (401, "session_revoked")
            refreshed = await client.post(
                "/api/v1/auth/refresh", json={"refresh_token": token["refresh_token"]}
            )
            assert refreshed.status_code == 401, refreshed.text
    uid = unverified(first["access_token"])["sub"]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        prefix = make_settings().redis_key_prefix
        record = await redis.hkeys(keys.user_key(prefix, uid))
        assert len([f for f in record if not _text(f).startswith("!")]) == 2
    finally:
        await redis.aclose()
