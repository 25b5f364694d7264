"""Readiness and liveness, against real Redis and real localauth, app in process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from app.settings import Settings
from app.version import __version__
from tests.conftest import TEST_PASSWORD, SettingsFactory, app_env, both_key_modes, new_email
from tests.support.appserver import run_app
from tests.support.faultproxy import FaultProxy, Mode
from tests.support.localauth import LocalAuth, free_port
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, both_key_modes]

CHECKS = {"redis", "supabase_auth", "jwks", "breaker", "thread_pool", "clock"}


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
    assert abs(body["checks"]["clock"]["skew_s"]) < 1
    assert response.headers["cache-control"] == "no-store"


async def test_ready_is_degraded_not_503_when_redis_is_down(
    running_apps: Callable[[Settings], Any],
    localauth: LocalAuth,
    redis_prefix: str,
    own_redis: RedisServer,
) -> None:
    """Redis is shared by every instance: its outage makes readiness 200 "degraded" naming
    redis (quickly), never 503, so no gateway ejects every instance at once; "ready" again
    once it is back."""
    settings = Settings.from_environ(app_env(localauth, own_redis.url, redis_prefix))
    client = await running_apps(settings)
    assert (await client.get("/health/ready")).json()["status"] == "ready"
    own_redis.stop()
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["clock"]["state"] == "unknown"
    assert body["checks"]["supabase_auth"]["ok"] is True
    assert response.elapsed.total_seconds() < 2.5
    own_redis.start()
    # Ready again once the write probe passes and the invalidation subscription is back.
    with anyio.fail_after(5):
        while (await client.get("/health/ready")).json()["status"] != "ready":
            await anyio.sleep(0.05)


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
    assert settings.server_api_key.value not in text
    assert settings.public_api_key.value not in text


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
    assert (await client.get("/health/live")).json() == {"status": "ok", "version": __version__}
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


FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


@pytest.mark.timeout(90)
def test_ready_is_503_when_this_instance_clock_is_off(
    localauth: LocalAuth, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """A real app process whose clock runs 120 s slow (libfaketime; Redis and localauth keep
    true time) rejects every fresh token, and readiness says so: 503 "clock" skewed, so
    Kong takes this instance, and only this one, out of rotation."""
    if not FAKETIME.exists():
        pytest.fail("libfaketime is not installed (scripts/test installs faketime)")
    slow = {
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME": "-120s",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    env = {**app_env(localauth, redis_url, redis_prefix), **slow}
    body = {"email": new_email(), "password": TEST_PASSWORD}
    with run_app(env, tmp_path) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        session = client.post("/api/v1/auth/register", json=body).json()["session"]
        me = client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {session['access_token']}"}
        )
        assert me.status_code == 401
        ready = client.get("/health/ready")
        assert ready.status_code == 503, ready.text
        clock = ready.json()["checks"]["clock"]
        assert clock["state"] == "skewed"
        assert clock["skew_s"] < -90
