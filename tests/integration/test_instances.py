"""Nothing lives in the process: instances on one Redis serve the same users, and users
never see each other."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from tests.conftest import TEST_PASSWORD, SettingsFactory, new_email

pytestmark = pytest.mark.anyio

AUTH = "/api/v1/auth"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_fifty_concurrent_logins_each_get_their_own_identity(
    running_apps: Any, make_settings: SettingsFactory
) -> None:
    """50 users logging in at once through one app each get back only their own identity."""
    # Real users come from 50 addresses; in process they share one, so lift the per-IP limit.
    client = await running_apps(make_settings(rate_limit_enabled="false"))
    emails = [new_email() for _ in range(50)]
    created: list[int] = []

    async def register(email: str) -> None:
        response = await client.post(
            f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD}
        )
        created.append(response.status_code)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for email in emails:
                tg.start_soon(register, email)
    assert created == [201] * 50
    seen: dict[str, tuple[str, str]] = {}

    async def login_and_check(email: str) -> None:
        tokens = (
            await client.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
        ).json()
        me = (await client.get(f"{AUTH}/me", headers=bearer(tokens["access_token"]))).json()
        seen[email] = (tokens["user"]["email"], me["email"])

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for email in emails:
                tg.start_soon(login_and_check, email)
    assert seen == {email: (email, email) for email in emails}


async def test_two_instances_serve_one_user_interchangeably(
    running_apps: Any, make_settings: SettingsFactory
) -> None:
    """Log in on A, use and refresh on B, log out on A: B refuses at once."""
    a = await running_apps(make_settings())
    b = await running_apps(make_settings())
    email = new_email()
    assert (
        await a.post(f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD})
    ).status_code == 201
    tokens: dict[str, Any] = (
        await a.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    ).json()
    assert (await b.get(f"{AUTH}/me", headers=bearer(tokens["access_token"]))).status_code == 200
    refreshed = await b.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    # A second tab on A, a moment later, gets the very same pair B got.
    again = await a.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert again.json()["refresh_token"] == refreshed.json()["refresh_token"]
    sessions = (
        await a.get(f"{AUTH}/sessions", headers=bearer(refreshed.json()["access_token"]))
    ).json()
    assert len(sessions["sessions"]) == 2
    access = refreshed.json()["access_token"]
    assert (await b.get(f"{AUTH}/me", headers=bearer(access))).status_code == 200
    assert (await a.post(f"{AUTH}/logout", headers=bearer(access))).status_code == 204
    refused = await b.get(f"{AUTH}/me", headers=bearer(access))
    assert refused.status_code == 401
    assert refused.json()["code"] == "session_revoked"
