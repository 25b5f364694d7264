"""The REST API against real localauth and real Redis, app in process."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import TEST_PASSWORD, SettingsFactory, both_key_modes, new_email
from tests.support.localauth import LocalAuth
from tests.support.users import ban_user, count_users_with_email, create_user

pytestmark = [pytest.mark.anyio, both_key_modes]

AUTH = "/api/v1/auth"


async def register(
    client: httpx.AsyncClient, email: str | None = None, password: str = TEST_PASSWORD
) -> httpx.Response:
    return await client.post(
        f"{AUTH}/register",
        json={"email": email or new_email(), "password": password, "data": {"name": "Ada"}},
    )


async def login(
    client: httpx.AsyncClient, email: str, password: str = TEST_PASSWORD
) -> dict[str, Any]:
    response = await client.post(f"{AUTH}/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
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
    assert set(tokens) >= {
        "access_token",
        "token_type",
        "expires_in",
        "expires_at",
        "refresh_token",
        "user",
    }
    assert tokens["token_type"] == "bearer"
    me = await client.get(f"{AUTH}/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email
    assert me.json()["id"] == tokens["user"]["id"]
    assert me.json()["user_metadata"] == {"name": "Ada"}
    assert me.json()["aal"] == "aal1"
    assert me.json()["roles"] == []

    refreshed = await client.post(
        f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    new_access = refreshed.json()["access_token"]
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]

    out = await client.post(f"{AUTH}/logout", headers=bearer(new_access))
    assert out.status_code == 204
    after = await client.get(f"{AUTH}/me", headers=bearer(new_access))
    assert after.status_code == 401
    assert after.json()["code"] == "session_revoked"


async def test_register_existing_email_is_409(
    client: httpx.AsyncClient, localauth: LocalAuth
) -> None:
    """An address registered long ago (not a retry) gets 409, not a second account."""
    email = new_email()
    create_user(localauth, email, "Other-password-1")
    response = await register(client, email)
    assert response.status_code == 409
    assert response.json()["code"] == "email_exists"
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_register_retry_is_idempotent(
    client: httpx.AsyncClient, localauth: LocalAuth
) -> None:
    """A client retrying an identical registration gets 201 for the same user, not a duplicate."""
    email = new_email()
    first = await register(client, email)
    second = await register(client, email)
    assert first.status_code == second.status_code == 201
    assert first.json()["user"]["id"] == second.json()["user"]["id"]
    assert count_users_with_email(localauth, email) == 1


async def test_register_double_click_creates_one_user(
    client: httpx.AsyncClient, localauth: LocalAuth
) -> None:
    """Identical registrations in flight at once create exactly one user."""
    email = new_email()
    answers: list[httpx.Response] = []

    async def go() -> None:
        answers.append(await register(client, email))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(go)
    assert [a.status_code for a in answers] == [201] * 4
    assert len({a.json()["user"]["id"] for a in answers}) == 1
    assert count_users_with_email(localauth, email) == 1


async def test_register_retry_with_other_password_is_409(client: httpx.AsyncClient) -> None:
    """Only the same credentials count as a retry; anything else is a conflict."""
    email = new_email()
    assert (await register(client, email)).status_code == 201
    response = await register(client, email, password="Different-pass-2")
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("Short-1", "length"),
        ("alllowercase-1", "uppercase"),
        ("ALLUPPER-1", "lowercase"),
        ("No-Digits-Here", "digit"),
    ],
)
async def test_register_weak_password_is_422(
    client: httpx.AsyncClient, password: str, reason: str
) -> None:
    """The password policy is enforced here, since the Admin API checks none."""
    response = await register(client, password=password)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "weak_password"
    assert reason in body["errors"][0]["reasons"]


async def test_register_without_auto_confirm_returns_no_session(
    running_apps: Any, make_settings: SettingsFactory
) -> None:
    """With confirmation required, registration answers 201 with a null session and login is 403."""
    client = await running_apps(make_settings(register_email_confirm="false"))
    email = new_email()
    response = await register(client, email)
    assert response.status_code == 201, response.text
    assert response.json()["session"] is None
    denied = await client.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    assert denied.status_code == 403
    assert denied.json()["code"] == "email_not_confirmed"
    again = await register(client, email)
    assert again.status_code == 201
    assert again.json()["user"]["id"] == response.json()["user"]["id"]


async def test_login_wrong_password_and_unknown_user_are_401(client: httpx.AsyncClient) -> None:
    """Wrong credentials look the same whether or not the account exists."""
    email = new_email()
    assert (await register(client, email)).status_code == 201
    wrong = await client.post(
        f"{AUTH}/login", json={"email": email, "password": "Wrong-password-1"}
    )
    unknown = await client.post(
        f"{AUTH}/login", json={"email": new_email(), "password": TEST_PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["code"] == unknown.json()["code"] == "invalid_credentials"
    assert wrong.json()["detail"] == unknown.json()["detail"]


async def test_login_banned_user_is_refused_as_invalid(
    client: httpx.AsyncClient, localauth: LocalAuth
) -> None:
    """A user banned in Supabase cannot sign in, and the answer does not say the account
    exists: Supabase reports a ban before it checks the password."""
    email = new_email()
    user_id = create_user(localauth, email, TEST_PASSWORD)
    ban_user(localauth, user_id)
    response = await client.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


async def test_login_email_is_case_insensitive(client: httpx.AsyncClient) -> None:
    """Users may type their address in any case."""
    email = new_email()
    assert (await register(client, email)).status_code == 201
    await login(client, email.upper())


async def test_concurrent_refresh_gets_one_pair(client: httpx.AsyncClient) -> None:
    """Two tabs refreshing the same token at once both succeed with the same new pair."""
    email = new_email()
    assert (await register(client, email)).status_code == 201
    tokens = await login(client, email)
    results: list[httpx.Response] = []

    async def refresh() -> None:
        results.append(
            await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
        )

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(refresh)
    assert [r.status_code for r in results] == [200] * 5
    assert len({r.json()["refresh_token"] for r in results}) == 1
    assert len({r.json()["access_token"] for r in results}) == 1
    me = await client.get(f"{AUTH}/me", headers=bearer(results[0].json()["access_token"]))
    assert me.status_code == 200


async def test_refresh_replay_after_grace_ends_session(
    running_apps: Any, make_settings: SettingsFactory
) -> None:
    """A refresh token replayed after the grace window is refused and its session ends."""
    client = await running_apps(make_settings(refresh_grace_seconds="0"))
    email = new_email()
    assert (await register(client, email)).status_code == 201
    tokens = await login(client, email)
    first = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert first.status_code == 200
    replay = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert replay.status_code == 401
    assert replay.json()["code"] == "refresh_token_reused"
    # The whole session is gone: the newest tokens no longer work either.
    me = await client.get(f"{AUTH}/me", headers=bearer(first.json()["access_token"]))
    assert me.status_code == 401
    newest = await client.post(
        f"{AUTH}/refresh", json={"refresh_token": first.json()["refresh_token"]}
    )
    assert newest.status_code == 401


async def test_refresh_inside_the_grace_window_after_logout_is_refused(
    client: httpx.AsyncClient,
) -> None:
    """The grace window shares a rotation between tabs; it never revives a session that has
    since been signed out."""
    email = new_email()
    assert (await register(client, email)).status_code == 201
    tokens = await login(client, email)
    first = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert first.status_code == 200
    logout = await client.post(f"{AUTH}/logout", headers=bearer(first.json()["access_token"]))
    assert logout.status_code == 204
    replay = await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert replay.status_code == 401, replay.text


async def test_refresh_with_unknown_token_is_401(client: httpx.AsyncClient) -> None:
    """Garbage or unknown refresh tokens get 401, never 400 or 500."""
    for token in ("x", "abcdefghijkl", "not-a-real-refresh-token-at-all"):
        response = await client.post(f"{AUTH}/refresh", json={"refresh_token": token})
        assert response.status_code in (401, 422), response.text
        assert response.status_code != 500


async def test_logout_scopes(client: httpx.AsyncClient) -> None:
    """local ends one session, others all but this one, global every one."""
    email = new_email()
    assert (await register(client, email)).status_code == 201
    a, b, c = [await login(client, email) for _ in range(3)]

    async def alive(tokens: dict[str, Any]) -> bool:
        response = await client.get(f"{AUTH}/me", headers=bearer(tokens["access_token"]))
        return response.status_code == 200

    assert (
        await client.post(
            f"{AUTH}/logout", headers=bearer(a["access_token"]), json={"scope": "others"}
        )
    ).status_code == 204
    assert [await alive(t) for t in (a, b, c)] == [True, False, False]
    d = await login(client, email)
    assert (
        await client.post(
            f"{AUTH}/logout", headers=bearer(d["access_token"]), json={"scope": "local"}
        )
    ).status_code == 204
    assert [await alive(t) for t in (a, d)] == [True, False]
    e = await login(client, email)
    assert (
        await client.post(
            f"{AUTH}/logout", headers=bearer(e["access_token"]), json={"scope": "global"}
        )
    ).status_code == 204
    assert [await alive(t) for t in (a, e)] == [False, False]
    refused = await client.post(f"{AUTH}/refresh", json={"refresh_token": a["refresh_token"]})
    assert refused.status_code == 401


async def test_logout_rejects_unknown_scope(client: httpx.AsyncClient) -> None:
    """A scope other than local/others/global is a 422 naming the field."""
    email = new_email()
    assert (await register(client, email)).status_code == 201
    tokens = await login(client, email)
    response = await client.post(
        f"{AUTH}/logout", headers=bearer(tokens["access_token"]), json={"scope": "all"}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "scope"


async def test_me_requires_a_valid_bearer(client: httpx.AsyncClient) -> None:
    """No token, a non-bearer scheme and a garbage token are 401s with stable codes."""
    missing = await client.get(f"{AUTH}/me")
    assert missing.status_code == 401
    assert missing.json()["code"] == "missing_token"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    basic = await client.get(f"{AUTH}/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.json()["code"] == "missing_token"
    garbage = await client.get(f"{AUTH}/me", headers=bearer("not.a.jwt"))
    assert garbage.status_code == 401
    assert garbage.json()["code"] == "invalid_token"


async def test_sessions_list_and_delete(client: httpx.AsyncClient) -> None:
    """Users see their live sessions, can end their own, and cannot touch anyone else's."""
    email = new_email()
    assert (await register(client, email)).status_code == 201
    first = await login(client, email)
    second = await login(client, email)
    listed = await client.get(f"{AUTH}/sessions", headers=bearer(second["access_token"]))
    assert listed.status_code == 200
    sessions = listed.json()["sessions"]
    assert len(sessions) == 3  # registration signed in too
    assert sum(s["current"] for s in sessions) == 1
    assert set(sessions[0]) == {"id", "created_at", "last_seen_at", "ip", "user_agent", "current"}
    assert all(s["ip"] == "203.0.113.7" for s in sessions)

    me_first = (await client.get(f"{AUTH}/me", headers=bearer(first["access_token"]))).json()
    deleted = await client.delete(
        f"{AUTH}/sessions/{me_first['session_id']}", headers=bearer(second["access_token"])
    )
    assert deleted.status_code == 204
    assert (
        await client.get(f"{AUTH}/me", headers=bearer(first["access_token"]))
    ).status_code == 401

    other = await register(client)
    other_tokens = other.json()["session"]
    other_sid = (
        await client.get(f"{AUTH}/me", headers=bearer(other_tokens["access_token"]))
    ).json()["session_id"]
    stolen = await client.delete(
        f"{AUTH}/sessions/{other_sid}", headers=bearer(second["access_token"])
    )
    assert stolen.status_code == 404
    assert (
        await client.get(f"{AUTH}/me", headers=bearer(other_tokens["access_token"]))
    ).status_code == 200
    unknown = await client.delete(
        f"{AUTH}/sessions/no-such-session", headers=bearer(second["access_token"])
    )
    assert unknown.status_code == 404
