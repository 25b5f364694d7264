"""The REST API against real localauth and real Redis, app in process."""

from __future__ import annotations

import anyio
import httpx
import pytest

from tests.conftest import TEST_PASSWORD, new_email

pytestmark = pytest.mark.anyio


async def register(client: httpx.AsyncClient, email: str | None = None, password: str = TEST_PASSWORD) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/register",
        json={"email": email or new_email(), "password": password, "data": {"name": "Ada"}},
    )


async def login(client: httpx.AsyncClient, email: str, password: str = TEST_PASSWORD) -> dict[str, object]:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_register_login_me_refresh_logout(client: httpx.AsyncClient) -> None:
    """The whole happy path a frontend walks, end to end."""
    email = new_email()
    created = await register(client, email)
    assert created.status_code == 201, created.text
    assert created.json()["user"]["email"] == email
    assert created.json()["session"]["token_type"] == "bearer"

    tokens = await login(client, email)
    assert set(tokens) >= {"access_token", "token_type", "expires_in", "expires_at", "refresh_token", "user"}
    me = await client.get("/api/v1/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email
    assert me.json()["user_metadata"] == {"name": "Ada"}
    assert me.json()["aal"] == "aal1"

    refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    new_access = refreshed.json()["access_token"]
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]

    out = await client.post("/api/v1/auth/logout", headers=bearer(new_access))
    assert out.status_code == 204
    after = await client.get("/api/v1/auth/me", headers=bearer(new_access))
    assert after.status_code == 401
    assert after.json()["code"] == "session_revoked"


async def test_concurrent_refresh_gets_one_pair(client: httpx.AsyncClient) -> None:
    """Two tabs refreshing the same token at once both succeed with the same new pair."""
    email = new_email()
    assert (await register(client, email)).status_code == 201
    tokens = await login(client, email)
    results: list[httpx.Response] = []

    async def refresh() -> None:
        results.append(await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(refresh)
    assert [r.status_code for r in results] == [200] * 5
    assert len({r.json()["refresh_token"] for r in results}) == 1
    assert len({r.json()["access_token"] for r in results}) == 1
