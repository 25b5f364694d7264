"""Brute-force lockout on login, with every window judged and moved in Redis time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from app.settings import Settings
from services.lockout import LockoutPolicy, LoginLockout
from tests.conftest import TEST_PASSWORD, SettingsFactory
from tests.support.authz import (
    admin_token,
    bearer,
    login,
    redis_now_ms,
    seeded_user,
)
from tests.support.localauth import LocalAuth

pytestmark = pytest.mark.anyio

PEER = "203.0.113.7"
WRONG = "Wrong-Password-1"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def state_key(redis: aioredis.Redis, prefix: str, email: str) -> str:
    return LoginLockout(redis, prefix=prefix, policy=LockoutPolicy()).state_key(email)


async def lock_left_ms(redis: aioredis.Redis, redis_url: str, key: str, field: str) -> int:
    return int(float(await redis.hget(key, field) or 0)) - await redis_now_ms(redis_url)


async def expire_lock(redis: aioredis.Redis, redis_url: str, key: str, field: str) -> None:
    """What waiting out the lock would do: its deadline becomes Redis's "now"."""
    await redis.hset(key, field, await redis_now_ms(redis_url))


async def test_ip_lockout_grows_exponentially_and_clears_on_success(
    running_apps: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    localauth: LocalAuth,
    redis: aioredis.Redis,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """Three failures lock this address out for 30 s (even with the right password); the
    next failure doubles it; a success clears the state."""
    client = await running_apps(make_settings(lockout_ip_threshold=3, lockout_base_seconds=30))
    _, email = await seeded_user(localauth)
    key = state_key(redis, redis_prefix, email)
    for _ in range(3):
        assert (await login(client, email, WRONG)).status_code == 401

    locked = await login(client, email)
    assert locked.status_code == 429
    assert locked.json()["code"] == "locked_out"
    assert 29 <= int(locked.headers["retry-after"]) <= 30
    assert 29_000 <= await lock_left_ms(redis, redis_url, key, f"l:{PEER}") <= 30_000
    assert 29_000 <= await redis.pttl(key) <= 900_000

    await expire_lock(redis, redis_url, key, f"l:{PEER}")
    assert (await login(client, email, WRONG)).status_code == 401
    again = await login(client, email)
    assert again.status_code == 429
    assert 59 <= int(again.headers["retry-after"]) <= 60

    await expire_lock(redis, redis_url, key, f"l:{PEER}")
    assert (await login(client, email)).status_code == 200
    assert await redis.exists(key) == 0


async def test_failures_outside_the_window_start_over(
    running_apps: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    localauth: LocalAuth,
    redis: aioredis.Redis,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """Failures older than the window (by Redis time) no longer count toward a lock."""
    client = await running_apps(make_settings(lockout_ip_threshold=3, lockout_window_seconds=60))
    _, email = await seeded_user(localauth)
    key = state_key(redis, redis_prefix, email)
    for _ in range(2):
        await login(client, email, WRONG)
    await redis.hset(key, f"t:{PEER}", await redis_now_ms(redis_url) - 61_000)

    assert (await login(client, email, WRONG)).status_code == 401
    assert await redis.hget(key, f"f:{PEER}") == "1"
    assert (await login(client, email)).status_code == 200


async def test_account_lock_spares_the_owners_known_address(
    running_apps: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    localauth: LocalAuth,
    redis: aioredis.Redis,
    redis_prefix: str,
) -> None:
    """Guesses spread over many addresses lock the account for unknown addresses only: the
    owner still signs in from where they signed in before."""
    client = await running_apps(
        make_settings(
            trusted_proxies="203.0.113.0/24",
            lockout_account_threshold=4,
            lockout_account_seconds=120,
        )
    )
    _, email = await seeded_user(localauth)
    home = {"X-Forwarded-For": "192.0.2.10"}
    ok = await client.post(LOGIN, json=creds(email), headers=home)
    assert ok.status_code == 200

    for n in range(4):
        botnet = {"X-Forwarded-For": f"198.51.100.{n + 1}"}
        assert (
            await client.post(LOGIN, json=creds(email, WRONG), headers=botnet)
        ).status_code == 401

    stranger = await client.post(
        LOGIN, json=creds(email), headers={"X-Forwarded-For": "198.51.100.200"}
    )
    assert stranger.status_code == 429
    assert stranger.json()["code"] == "locked_out"
    assert 119 <= int(stranger.headers["retry-after"]) <= 120
    assert (await client.post(LOGIN, json=creds(email), headers=home)).status_code == 200
    key = state_key(redis, redis_prefix, email)
    assert await redis.sismember(f"{key}:known", "192.0.2.10")


async def test_admin_unlock(
    running_apps: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    localauth: LocalAuth,
) -> None:
    """An admin's unlock lets a locked-out user straight back in."""
    client = await running_apps(make_settings(lockout_ip_threshold=2))
    user_id, email = await seeded_user(localauth)
    for _ in range(2):
        await login(client, email, WRONG)
    assert (await login(client, email)).status_code == 429

    admin = await admin_token(localauth, client)
    unlocked = await client.post(f"/api/v1/admin/users/{user_id}/unlock", headers=bearer(admin))
    assert unlocked.status_code == 204
    assert (await login(client, email)).status_code == 200


LOGIN = "/api/v1/auth/login"


def creds(email: str, password: str = TEST_PASSWORD) -> dict[str, str]:
    return {"email": email, "password": password}


async def test_lockout_can_be_disabled(
    running_apps: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    localauth: LocalAuth,
) -> None:
    """With LOCKOUT_ENABLED=false, failures never lock (the rate limit still applies)."""
    client: httpx.AsyncClient = await running_apps(
        make_settings(lockout_enabled="false", lockout_ip_threshold=1)
    )
    _, email = await seeded_user(localauth)
    for _ in range(3):
        assert (await login(client, email, WRONG)).status_code == 401
    assert (await login(client, email)).status_code == 200


async def test_a_success_writes_only_when_it_changes_something(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    """A login from a known address with no failures costs one lockout command (the check
    says there is nothing to clear); failures, a new address or a known set due for renewal
    make the success write again, and that write still clears the failures."""
    lockout = LoginLockout(redis, prefix=redis_prefix, policy=LockoutPolicy(ip_threshold=3))
    email = "writes-only-when-needed@example.com"
    key = lockout.state_key(email)
    assert await lockout.before_attempt(email, PEER) is True  # a new address: remember it
    await lockout.record_success(email, PEER)
    assert await lockout.before_attempt(email, PEER) is False  # nothing to change
    assert await lockout.before_attempt(email, "198.51.100.9") is True  # another address

    await lockout.record_failure(email, PEER)
    assert await lockout.before_attempt(email, PEER) is True  # a failure to clear
    await lockout.record_success(email, PEER)
    assert not await redis.exists(key)
    assert await lockout.before_attempt(email, PEER) is False

    # The known set's TTL is renewed by a success once a day (the default policy).
    await redis.expire(f"{key}:known", lockout.policy.known_ttl - 2 * 24 * 3600)
    assert await lockout.before_attempt(email, PEER) is True
    await lockout.record_success(email, PEER)
    assert await redis.ttl(f"{key}:known") > lockout.policy.known_ttl - 60
    await redis.delete(key, f"{key}:known")
