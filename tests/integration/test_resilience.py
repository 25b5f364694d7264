"""Dependencies failing: Redis gone, upstream gone, bad keys. Clear 503s, then recovery."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

from app.settings import Settings
from tests.conftest import TEST_PASSWORD, SettingsFactory, app_env, new_email
from tests.support.localauth import LocalAuth, forged_service_role_key, free_port
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

AUTH = "/api/v1/auth"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def eventually(check: Any, *, within: float = 10.0) -> None:
    """Poll ``check`` (an async predicate) until it holds, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await anyio.sleep(0.05)


@pytest.mark.timeout(60)
async def test_redis_down_is_503_and_recovers(
    running_apps: Any, localauth: LocalAuth, own_redis: RedisServer, redis_prefix: str
) -> None:
    """With Redis stopped, sessions cannot be checked: 503 with Retry-After, never 500;
    when it returns, everything works again."""
    settings = Settings.from_environ(app_env(localauth, own_redis.url, redis_prefix))
    client: httpx.AsyncClient = await running_apps(settings)
    email = new_email()
    created = await client.post(
        f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD}
    )
    assert created.status_code == 201
    access = created.json()["session"]["access_token"]
    assert (await client.get(f"{AUTH}/me", headers=bearer(access))).status_code == 200

    own_redis.stop()

    async def me_refused() -> bool:
        response = await client.get(f"{AUTH}/me", headers=bearer(access))
        assert response.status_code in (200, 503), response.text
        return response.status_code == 503

    # The listener notices the lost connection at once; until then the cached answer
    # stands (nothing can be revoked while Redis is down anyway).
    await eventually(me_refused, within=2.0)
    for request in (
        client.build_request("GET", f"{AUTH}/me", headers=bearer(access)),
        client.build_request(
            "POST", f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD}
        ),
        client.build_request("POST", f"{AUTH}/refresh", json={"refresh_token": "abcdefghijkl"}),
    ):
        response = await client.send(request)
        assert response.status_code == 503, (request.url, response.text)
        assert response.json()["code"] == "session_store_unavailable"
        assert int(response.headers["retry-after"]) >= 1

    own_redis.start()

    async def healthy() -> bool:
        login = await client.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
        return login.status_code == 200

    await eventually(healthy)
    # Redis kept nothing on disk: the old session is gone, so its token is refused (fail closed).
    assert (await client.get(f"{AUTH}/me", headers=bearer(access))).status_code == 401


async def test_upstream_down_is_503_with_a_useful_debug(
    running_apps: Any, make_settings: SettingsFactory
) -> None:
    """An unreachable Supabase gives 503 and, outside production, says what to check."""
    dead = f"http://127.0.0.1:{free_port()}"
    client = await running_apps(make_settings(supabase_url=dead))
    response = await client.post(
        f"{AUTH}/login", json={"email": new_email(), "password": TEST_PASSWORD}
    )
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "upstream_unavailable"
    assert "SUPABASE_URL" in body["debug"]
    assert response.headers["retry-after"]


async def test_production_hides_internals(
    running_apps: Any, make_settings: SettingsFactory
) -> None:
    """In production the same failure carries no `debug` member."""
    dead = f"http://127.0.0.1:{free_port()}"
    client = await running_apps(make_settings(supabase_url=dead, environment="production"))
    response = await client.post(
        f"{AUTH}/login", json={"email": new_email(), "password": TEST_PASSWORD}
    )
    assert response.status_code == 503
    assert "debug" not in response.json()
    assert "127.0.0.1" not in response.text


async def test_bad_service_key_is_a_clear_503(
    running_apps: Any, make_settings: SettingsFactory, localauth: LocalAuth
) -> None:
    """Registration with a service key Supabase refuses says the key is wrong, not "500"."""
    client = await running_apps(make_settings(supabase_service_role_key=forged_service_role_key()))
    response = await client.post(
        f"{AUTH}/register", json={"email": new_email(), "password": TEST_PASSWORD}
    )
    assert response.status_code == 503
    assert response.json()["code"] == "upstream_misconfigured"
    assert "SUPABASE_SERVICE_ROLE_KEY" in response.json()["debug"]


async def test_breaker_opens_on_a_dead_upstream(
    running_apps: Any, make_settings: SettingsFactory
) -> None:
    """After a run of failures, calls fail at once with 503 and Retry-After."""
    dead = f"http://127.0.0.1:{free_port()}"
    client = await running_apps(
        make_settings(supabase_url=dead, breaker_failure_threshold="2", breaker_open_seconds="30")
    )
    codes = []
    for _ in range(4):
        response = await client.post(
            f"{AUTH}/login", json={"email": new_email(), "password": TEST_PASSWORD}
        )
        codes.append(response.json()["code"])
    assert codes[:2] == ["upstream_unavailable"] * 2
    assert codes[2:] == ["upstream_circuit_open"] * 2
    started = time.perf_counter()
    response = await client.post(
        f"{AUTH}/login", json={"email": new_email(), "password": TEST_PASSWORD}
    )
    assert time.perf_counter() - started < 0.1
    assert int(response.headers["retry-after"]) >= 20
