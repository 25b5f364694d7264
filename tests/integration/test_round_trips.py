"""What a login and a refresh wait on Redis for: the round trips on their way, counted by
putting Redis behind a proxy that holds every chunk a client sends for a fixed time. Each
round trip then costs that time, whatever else the machine does, so the count is the
answer's duration over it (the rest of the work takes milliseconds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.settings import Settings
from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.authz import login
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.localauth import LocalAuth

pytestmark = pytest.mark.anyio


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[tuple[FaultProxy, str]]:
    """A fault proxy in front of the test Redis, and the URL through it. Requested before
    ``running_apps``, it outlives the app's connections."""
    url = urlsplit(redis_url)
    with FaultProxy(url.hostname or "127.0.0.1", url.port or 6379) as proxy:
        yield proxy, f"redis://127.0.0.1:{proxy.port}{url.path}"


async def app_through(
    proxied: str,
    running_apps: Callable[[Settings], Any],
    localauth: LocalAuth,
    redis_prefix: str,
    **settings: str,
) -> tuple[httpx.AsyncClient, str]:
    """An app whose Redis is behind the proxy, and a user registered and signed in
    (connections opened, scripts loaded)."""
    env = app_env(
        localauth, proxied, redis_prefix, rate_limits="login=100/60,refresh=100/60", **settings
    )
    client: httpx.AsyncClient = await running_apps(Settings.from_environ(env))
    email = new_email()
    registered = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": TEST_PASSWORD}
    )
    assert registered.status_code == 201
    # Logins at once leave the pool a few connections open, so no timed write waits for
    # a new one (a connection's set-up costs round trips of its own).
    warm = await asyncio.gather(*(login(client, email) for _ in range(4)))
    assert {response.status_code for response in warm} == {200}
    return client, email


async def timed(proxy: FaultProxy, latency: float, request: Any) -> tuple[httpx.Response, float]:
    proxy.set_mode(Mode.LATENCY, latency=latency)
    try:
        started = time.monotonic()
        response: httpx.Response = await request
        return response, time.monotonic() - started
    finally:
        proxy.set_mode(Mode.PASS)


@pytest.mark.parametrize("lockout", ["true", "false"])
async def test_a_login_pays_one_redis_round_trip_before_the_upstream_and_one_after(
    redis_proxy: tuple[FaultProxy, str],
    running_apps: Callable[[Settings], Any],
    localauth: LocalAuth,
    redis_prefix: str,
    lockout: str,
) -> None:
    """0.4 s a round trip: a login's rate limit and lockout check go out together (one
    wait), its session writes together (another), so it takes 0.8 s and some; one round
    trip each would be 1.2 s. With the lockout off the rate limit goes out alone, in the
    same one round trip."""
    proxy, proxied = redis_proxy
    client, email = await app_through(
        proxied, running_apps, localauth, redis_prefix, lockout_enabled=lockout
    )
    response, took = await timed(proxy, 0.4, login(client, email))
    assert response.status_code == 200, response.text
    assert response.headers["ratelimit-remaining"] == "95"
    assert 0.8 <= took < 1.15, took


async def test_a_refresh_pays_two_redis_round_trips_before_the_upstream_and_three_after(
    redis_proxy: tuple[FaultProxy, str],
    running_apps: Callable[[Settings], Any],
    localauth: LocalAuth,
    redis_prefix: str,
) -> None:
    """0.25 s a round trip: before the upstream call, the rate limit with the rotation's
    start (the shared answer, else the lock and the token's record, one script), then the
    session's check; after it, the session marked used with the new token's record (at
    once), the old token retired, the lock released. 1.25 s and some, where a round trip
    per step was 2.5 s."""
    proxy, proxied = redis_proxy
    client, email = await app_through(proxied, running_apps, localauth, redis_prefix)
    signed_in = await login(client, email)
    assert signed_in.status_code == 200
    body = {"refresh_token": signed_in.json()["refresh_token"]}
    response, took = await timed(proxy, 0.25, client.post("/api/v1/auth/refresh", json=body))
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"] != body["refresh_token"]
    assert response.headers["ratelimit-remaining"] == "99"
    assert 1.25 <= took < 1.7, took
