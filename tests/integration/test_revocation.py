"""Revocation on one instance is honoured by another within 100 ms; a dead Redis fails closed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest

from app.settings import Settings
from tests.conftest import TEST_PASSWORD, SettingsFactory, app_env, both_key_modes, new_email
from tests.support.authz import (
    admin_token,
    bearer,
    login,
    poll,
    signed_in,
    unverified,
)
from tests.support.localauth import LocalAuth, run_localauth
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.anyio, both_key_modes]

ME = "/api/v1/auth/me"
PROPAGATION_BUDGET = 0.1


async def _two_instances(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    settings = make_settings()
    a: httpx.AsyncClient = await running_apps(settings)
    b: httpx.AsyncClient = await running_apps(settings)
    return a, b


async def _refused_on(client: httpx.AsyncClient, token: str, code: str) -> float:
    """Seconds until ``client`` answers ``code`` for ``token`` (bounded polling)."""

    async def refused() -> bool:
        response = await client.get(ME, headers=bearer(token))
        return response.status_code != 200 and response.json()["code"] == code

    return await poll(2.0, refused)


async def _warm(client: httpx.AsyncClient, token: str) -> None:
    """Two good answers, so the instance has the session in its local cache."""
    for _ in range(2):
        assert (await client.get(ME, headers=bearer(token))).status_code == 200


async def test_logout_on_a_is_refused_on_b_within_100ms(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """A session logged out on instance A is refused by instance B's warm cache in < 100 ms."""
    a, b = await _two_instances(running_apps, make_settings)
    token = str((await signed_in(a))["access_token"])
    await _warm(b, token)

    assert (await a.post("/api/v1/auth/logout", headers=bearer(token))).status_code == 204

    assert await _refused_on(b, token, "session_revoked") < PROPAGATION_BUDGET


async def test_logout_everywhere_on_a_refuses_other_sessions_on_b(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """A global logout (not-before) on A ends the user's other sessions on B in < 100 ms."""
    a, b = await _two_instances(running_apps, make_settings)
    first = await signed_in(a)
    email = str(first["user"]["email"])
    second = (await login(a, email)).json()
    await _warm(b, str(second["access_token"]))

    response = await a.post(
        "/api/v1/auth/logout", headers=bearer(first["access_token"]), json={"scope": "global"}
    )
    assert response.status_code == 204

    assert await _refused_on(b, str(second["access_token"]), "session_revoked") < 0.1


async def test_ban_on_a_is_refused_on_b_within_100ms(
    running_apps: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    localauth: LocalAuth,
) -> None:
    """An admin ban through A makes B refuse the user's token (403 user_banned) in < 100 ms."""
    a, b = await _two_instances(running_apps, make_settings)
    admin = await admin_token(localauth, a)
    victim = str((await signed_in(a))["access_token"])
    await _warm(b, victim)

    response = await a.post(
        f"/api/v1/admin/users/{unverified(victim)['sub']}/ban", headers=bearer(admin)
    )
    assert response.status_code == 200, response.text

    assert await _refused_on(b, victim, "user_banned") < PROPAGATION_BUDGET


async def test_redis_down_fails_closed_with_503(
    running_apps: Callable[[Settings], Any],
    localauth: LocalAuth,
    redis_prefix: str,
    own_redis: RedisServer,
) -> None:
    """With Redis stopped, a valid token gets 503 (never a cached 200), and service resumes after;
    the rate-limited login answers 503 too, never an unlimited attempt."""
    env = app_env(localauth, own_redis.url, redis_prefix)
    client = await running_apps(Settings.from_environ(env))
    token = str((await signed_in(client))["access_token"])
    await _warm(client, token)

    own_redis.stop()
    try:

        async def unavailable() -> bool:
            response = await client.get(ME, headers=bearer(token))
            return bool(response.status_code == 503)

        await poll(5.0, unavailable)
        response = await client.get(ME, headers=bearer(token))
        assert response.status_code == 503
        assert response.json()["code"] == "session_store_unavailable"
        assert "retry-after" in response.headers
        refused = await login(client, "x@example.com")
        assert refused.status_code == 503
        assert refused.json()["code"] == "session_store_unavailable"
    finally:
        own_redis.start()

    # The private Redis restarts empty, so the old session is gone (401, not a stale 200);
    # a fresh sign-in works again.
    async def back() -> bool:
        return bool((await client.get(ME, headers=bearer(token))).status_code != 503)

    await poll(10.0, back)
    assert (await client.get(ME, headers=bearer(token))).json()["code"] == "session_revoked"

    # Pooled connections from before the restart fail once each (503), then reconnect.
    async def signs_up() -> bool:
        response = await client.post(
            "/api/v1/auth/register", json={"email": new_email(), "password": TEST_PASSWORD}
        )
        return bool(response.status_code == 201)

    await poll(5.0, signs_up, interval=0.05)


async def test_rotated_signing_key_is_picked_up_without_restart(
    running_apps: Callable[[Settings], Any],
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """After `localauth rotate-keys`, tokens with the new kid verify; old ones still do."""
    with run_localauth(tmp_path / "auth", env={"GOTRUE_MAILER_AUTOCONFIRM": "true"}) as auth:
        env = app_env(auth, redis_url, redis_prefix, jwks_refresh_interval_seconds=1)
        client = await running_apps(Settings.from_environ(env))
        old = await signed_in(client)
        old_token = str(old["access_token"])
        old_kid = _kid(old_token)

        rotated = await anyio.run_process(
            ["python", "-m", "localauth", "rotate-keys", "--db", str(auth.db_path)]
        )
        new_kid = rotated.stderr.decode().strip().rsplit(" ", 1)[-1]
        assert new_kid != old_kid

        async def signing_with_new_key() -> bool:
            async with httpx.AsyncClient() as upstream:
                jwks = (await upstream.get(auth.url + "/auth/v1/.well-known/jwks.json")).json()
            return new_kid in {key["kid"] for key in jwks["keys"]}

        await poll(5.0, signing_with_new_key)
        new_token = str((await login(client, str(old["user"]["email"]))).json()["access_token"])
        assert _kid(new_token) == new_kid

        async def accepted() -> bool:
            return bool((await client.get(ME, headers=bearer(new_token))).status_code == 200)

        await poll(5.0, accepted)
        assert (await client.get(ME, headers=bearer(old_token))).status_code == 200


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])
