"""Rate limits in Redis: GCRA per client IP, headers, and windows judged by Redis's clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.settings import Settings
from services.ratelimit import RateLimiter, parse_rules
from tests.conftest import SettingsFactory
from tests.support.authz import bearer, redis_now_ms, signed_in

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
