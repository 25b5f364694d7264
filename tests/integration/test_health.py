"""Readiness and liveness, against real Redis and real localauth, app in process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import TEST_PASSWORD, SettingsFactory, app_env, new_email
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.localauth import LocalAuth, free_port
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

CHECKS = {"redis", "supabase_auth", "jwks", "breaker", "thread_pool"}


async def test_ready_names_every_check_and_is_200(client: httpx.AsyncClient) -> None:
    """With Redis and Supabase up, readiness is 200 and names each check with its latency."""
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == CHECKS
    for name, check in body["checks"].items():
        assert check["ok"] is True, name
        assert check["latency_ms"] >= 0
    assert body["checks"]["breaker"]["state"] == "closed"
    assert body["checks"]["jwks"]["keys"] >= 1
    assert body["checks"]["thread_pool"]["size"] == 128
    assert response.headers["cache-control"] == "no-store"


async def test_ready_is_503_when_redis_is_down(
    running_apps: Callable[[Settings], Any],
    localauth: LocalAuth,
    redis_prefix: str,
    own_redis: RedisServer,
) -> None:
    """Redis stopping turns readiness into 503 naming redis, quickly, and back to 200 after."""
    settings = Settings.from_environ(app_env(localauth, own_redis.url, redis_prefix))
    client = await running_apps(settings)
    assert (await client.get("/health/ready")).status_code == 200
    own_redis.stop()
    response = await client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["supabase_auth"]["ok"] is True
    assert response.elapsed.total_seconds() < 2.5
    own_redis.start()
    assert (await client.get("/health/ready")).status_code == 200


async def test_ready_is_503_without_leaking_secrets_when_upstream_is_dead(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """A dead Supabase URL gives 503 naming supabase_auth and jwks, with no URL or key."""
    settings = make_settings(supabase_url=f"http://127.0.0.1:{free_port()}")
    client = await running_apps(settings)
    response = await client.get("/health/ready")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["supabase_auth"]["ok"] is False
    assert checks["jwks"]["state"] == "not_loaded"
    assert checks["redis"]["ok"] is True
    assert response.elapsed.total_seconds() < 3.0
    text = response.text
    assert "127.0.0.1" not in text
    assert settings.supabase_service_role_key.get_secret_value() not in text
    assert settings.supabase_anon_key.get_secret_value() not in text


async def test_ready_reports_open_breaker(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """After enough upstream failures the breaker check reads open, with a retry hint."""
    client = await running_apps(
        make_settings(
            supabase_url=f"http://127.0.0.1:{free_port()}",
            breaker_failure_threshold=1,
            breaker_open_seconds=30,
        )
    )
    await client.get("/health/ready")
    response = await client.get("/health/ready")
    assert response.status_code == 503
    breaker = response.json()["checks"]["breaker"]
    assert breaker["state"] == "open"
    assert breaker["ok"] is False
    assert 0 < breaker["retry_after_s"] <= 30


async def test_live_answers_without_dependencies(
    running_apps: Callable[[Settings], Any], localauth: LocalAuth, redis_prefix: str
) -> None:
    """Liveness stays 200 while every dependency is down: it only proves the loop runs."""
    env = app_env(
        localauth,
        f"redis://127.0.0.1:{free_port()}/0",
        redis_prefix,
        supabase_url=f"http://127.0.0.1:{free_port()}",
    )
    client = await running_apps(Settings.from_environ(env))
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    assert (await client.get("/health/ready")).status_code == 503


async def test_ready_is_degraded_not_503_when_supabase_goes_down(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory, localauth: LocalAuth
) -> None:
    """With keys loaded and Redis up, a Supabase outage keeps the instance in rotation:
    readiness is 200 "degraded", /me keeps working, and login answers a clear 503."""
    with FaultProxy("127.0.0.1", localauth.port) as proxy:
        client = await running_apps(
            make_settings(supabase_url=proxy.url, jwt_issuer=localauth.url + "/auth/v1")
        )
        body = {"email": new_email(), "password": TEST_PASSWORD}
        created = await client.post("/api/v1/auth/register", json=body)
        access = created.json()["session"]["access_token"]
        proxy.set_mode(Mode.REFUSE)
        response = await client.get("/health/ready")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "degraded"
        assert response.json()["checks"]["supabase_auth"]["ok"] is False
        me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {access}"})
        assert me.status_code == 200
        login = await client.post("/api/v1/auth/login", json=body)
        assert login.status_code == 503
        assert login.headers["retry-after"]
