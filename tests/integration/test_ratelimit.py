"""Rate limits in Redis: GCRA per client IP, headers, and windows judged by Redis's clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.settings import Settings
from services import session_keys
from services.ratelimit import RateLimiter, parse_rules
from tests.conftest import TEST_PASSWORD, SettingsFactory, new_email
from tests.support.authz import bearer, login, redis_now_ms, signed_in

pytestmark = pytest.mark.anyio

LOGIN = "/api/v1/auth/login"
# An unreadable body: the limit is counted before the body is read, and nothing goes upstream.
JUNK = {"email": "not-an-address"}


async def test_login_limit_counts_down_then_429_with_retry_after(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """Three logins per minute: headers count down, the fourth is 429 with Retry-After."""
    client = await running_apps(make_settings(rate_limits="login=3/60"))
    remaining = []
    for _ in range(3):
        response = await client.post(LOGIN, json=JUNK)
        assert response.status_code == 422
        assert response.headers["ratelimit-limit"] == "3"
        remaining.append(response.headers["ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]

    refused = await client.post(LOGIN, json=JUNK)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 19 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["ratelimit-remaining"] == "0"
    assert 59 <= int(refused.headers["ratelimit-reset"]) <= 60


async def test_window_follows_redis_time(
    running_apps: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """The bucket is one Redis key whose TTL is the refill time; moving its arrival time to
    Redis's "now" (what waiting would do) lets requests through again."""
    client = await running_apps(make_settings(rate_limits="login=2/60"))
    for _ in range(2):
        await client.post(LOGIN, json=JUNK)
    assert (await client.post(LOGIN, json=JUNK)).status_code == 429

    redis = aioredis.Redis.from_url(redis_url)
    try:
        limiter = RateLimiter(redis, prefix=redis_prefix, rules=parse_rules([]))
        key = limiter.key("login", "ip:203.0.113.7")
        ttl = await redis.pttl(key)
        assert 59_000 <= ttl <= 60_000
        now = await redis_now_ms(redis_url)
        await redis.set(key, now + 30_000, px=30_000)  # half the window has passed
    finally:
        await redis.aclose()

    allowed = await client.post(LOGIN, json=JUNK)
    assert allowed.status_code == 422
    assert allowed.headers["ratelimit-remaining"] == "0"
    assert (await client.post(LOGIN, json=JUNK)).status_code == 429


async def test_limits_are_per_client_ip_from_trusted_proxies_only(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """X-Forwarded-For picks the bucket only when the peer is a trusted proxy."""
    trusting = await running_apps(
        make_settings(rate_limits="login=1/60", trusted_proxies="203.0.113.0/24")
    )
    for ip in ("198.51.100.1", "198.51.100.2"):
        response = await trusting.post(LOGIN, json=JUNK, headers={"X-Forwarded-For": ip})
        assert response.status_code == 422, ip
    again = await trusting.post(LOGIN, json=JUNK, headers={"X-Forwarded-For": "198.51.100.1"})
    assert again.status_code == 429

    untrusting = await running_apps(make_settings(rate_limits="register=1/60"))
    first = await untrusting.post("/api/v1/auth/register", json=JUNK)
    assert first.status_code == 422
    spoofed = await untrusting.post(
        "/api/v1/auth/register", json=JUNK, headers={"X-Forwarded-For": "198.51.100.77"}
    )
    assert spoofed.status_code == 429


async def test_authenticated_hot_path_has_no_limit_headers(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """/me is not rate limited (no Redis round trip), and limits can be switched off."""
    client = await running_apps(make_settings(rate_limit_enabled="false"))
    tokens = await signed_in(client)
    me = await client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert "ratelimit-limit" not in me.headers
    for _ in range(25):
        assert (await client.post(LOGIN, json=JUNK)).status_code == 422


def test_rule_parsing() -> None:
    """Rules override the defaults by name; malformed ones are refused."""
    rules = parse_rules(["login=3/1.5"])
    assert (rules["login"].limit, rules["login"].period) == (3, 1.5)
    assert rules["register"].limit >= 1
    for bad in ("login", "login=0/60", "login=3/0", "login=a/b"):
        with pytest.raises(ValueError, match="rate limit"):
            parse_rules([bad])


async def test_a_readable_login_is_limited_in_the_lockout_checks_round_trip(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """A login with a readable body is counted with its lockout check: the headers count
    down on successful logins, and the next attempt is refused 429 even with the right
    password (nothing goes upstream)."""
    client = await running_apps(make_settings(rate_limits="login=3/60"))
    email = new_email()
    registered = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": TEST_PASSWORD}
    )
    assert registered.status_code == 201
    remaining = []
    for _ in range(3):
        response = await login(client, email)
        assert response.status_code == 200, response.text
        assert response.headers["ratelimit-limit"] == "3"
        remaining.append(response.headers["ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]
    refused = await login(client, email)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 19


async def test_refreshes_are_limited_with_or_without_a_readable_token(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """A refresh with no token is still counted, and one over the limit is refused 429
    (its token sent with the rotation's start, in the same round trip)."""
    client = await running_apps(make_settings(rate_limits="refresh=2/60"))
    tokens = await signed_in(client)
    missing = await client.post("/api/v1/auth/refresh", json={})
    assert missing.status_code in (400, 401, 422), missing.text
    assert missing.headers["ratelimit-remaining"] == "1"
    body = {"refresh_token": tokens["refresh_token"]}
    rotated = await client.post("/api/v1/auth/refresh", json=body)
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["ratelimit-remaining"] == "0"
    again = {"refresh_token": rotated.json()["refresh_token"]}
    refused = await client.post("/api/v1/auth/refresh", json=again)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 29


async def test_a_refused_refresh_leaves_its_token_free_to_rotate(
    running_apps: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    redis_url: str,
    redis_prefix: str,
) -> None:
    """The rate limit and the rotation's start share a round trip, so the start may take the
    token's lock before the limit's verdict is read: a refused refresh gives it back (else
    the token's next refresh, from an address under the limit, would wait for it)."""
    client = await running_apps(make_settings(rate_limits="refresh=1/60"))
    tokens = await signed_in(client)
    rotated = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert rotated.status_code == 200, rotated.text
    token = rotated.json()["refresh_token"]
    refused = await client.post("/api/v1/auth/refresh", json={"refresh_token": token})
    assert refused.status_code == 429
    redis = aioredis.Redis.from_url(redis_url)
    try:
        record = session_keys.refresh_key(redis_prefix, token)
        assert await redis.exists(record) == 1
        assert await redis.exists(record + ":lock") == 0
    finally:
        await redis.aclose()
