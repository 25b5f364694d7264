"""Gross regressions of the hot path's cost: an authenticated request seen before is answered
without a Redis round trip, and the verified-token cache stays within its bound."""

from __future__ import annotations

import gc
import time

import anyio
import httpx
import jwt
import pytest
import redis

from app.settings import Settings
from services.tokens import TokenVerifier
from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.localauth import LocalAuth
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio
# Not per request: connection set-up, and the invalidation subscription's heartbeats (a
# PUBLISH a second that proves the subscription alive, services/invalidation.py).
BACKGROUND = {"ping", "info", "hello", "select", "client|setinfo", "publish"}


def commands(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


async def test_repeated_me_sends_no_redis_commands(
    running_apps: object, localauth: LocalAuth, redis_prefix: str, own_redis: RedisServer
) -> None:
    """200 ``/me`` calls with a token already seen cost (almost) no Redis command: counted
    on a private redis-server, so nothing else's commands mix in. One per request would be
    200; the margin leaves room for a cache distrusted for a moment on a loaded machine."""
    env = app_env(localauth, own_redis.url, redis_prefix, rate_limit_enabled="false")
    settings = Settings.from_environ(env)
    client: httpx.AsyncClient = await running_apps(settings)  # type: ignore[operator]
    body = {"email": new_email(), "password": TEST_PASSWORD}
    assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
    login = await client.post("/api/v1/auth/login", json=body)
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    # The cache is trusted once this instance's heartbeat came back through its
    # subscription (readiness says so); until then every check reads Redis, by design.
    with anyio.fail_after(5):
        while (
            not (await client.get("/health/ready")).json()["checks"]["redis"].get("cache_trusted")
        ):
            await anyio.sleep(0.02)
    assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
    before = commands(own_redis.url)
    for _ in range(200):
        assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
    after = commands(own_redis.url)
    sent = {
        name: calls - before.get(name, 0)
        for name, calls in after.items()
        if name not in BACKGROUND and calls != before.get(name, 0)
    }
    assert sum(sent.values()) <= 20, sent


async def test_verified_token_cache_stays_bounded() -> None:
    """2,000 distinct valid tokens through a verifier bounded at 100 entries: never more
    than 100 kept, and the newest token is still answered from the cache."""
    secret = "s" * 32
    async with httpx.AsyncClient() as http:
        verifier = TokenVerifier(
            jwks_url="http://127.0.0.1:9/jwks",
            http_client=http,
            audience="authenticated",
            issuer="http://issuer",
            hs256_secret=secret,
            cache_size=100,
        )
        now = int(time.time())
        last = ""
        for i in range(2_000):
            claims = {"sub": f"user-{i}", "session_id": f"s-{i}", "aud": "authenticated",
                      "iss": "http://issuer", "iat": now, "exp": now + 600}  # fmt: skip
            last = jwt.encode(claims, secret, algorithm="HS256")
            await verifier.verify(last)
            assert len(verifier._cache) <= 100
        first = await verifier.verify(last)
        assert await verifier.verify(last) is first


async def test_requests_leave_nothing_for_the_cycle_collector(client: httpx.AsyncClient) -> None:
    """A request's objects are freed by reference counting as it ends: 100 ``/me`` calls,
    answered and refused, leave (almost) no reference cycles. Each cycle per request is
    work for the collector on every later pass, a pause that grows with traffic (the
    authorization context once held the scope that held it: 7 objects a request)."""
    body = {"email": new_email(), "password": TEST_PASSWORD}
    assert (await client.post("/api/v1/auth/register", json=body)).status_code == 201
    token = (await client.post("/api/v1/auth/login", json=body)).json()["access_token"]
    app = client._transport.app  # type: ignore[attr-defined]
    answers: list[int] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            answers.append(int(message["status"]))  # type: ignore[call-overload]

    async def me(authorization: bytes) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/api/v1/auth/me",
            "raw_path": b"/api/v1/auth/me",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), (b"authorization", authorization)],
            "client": ("203.0.113.7", 50000),
            "server": ("testserver", 80),
            "app": app,
        }
        await app(scope, receive, send)

    for _ in range(20):  # warm: caches filled, first-use objects made
        await me(f"Bearer {token}".encode())
        await me(b"Bearer forged.token.here")
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(50):
            await me(f"Bearer {token}".encode())
            await me(b"Bearer forged.token.here")
        gc.collect()
        garbage = len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert answers.count(200) == 70, answers
    assert answers.count(401) == 70, answers
    # Background tasks (the invalidation subscription's heartbeat) may leave a few.
    assert garbage < 50, f"{garbage} objects in reference cycles after 100 requests"
