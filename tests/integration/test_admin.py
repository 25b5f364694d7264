"""/api/v1/admin, the owner-or-admin route and the service-to-service route."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import SettingsFactory, both_key_modes
from tests.support.authz import (
    admin_token,
    bearer,
    login,
    poll,
    seeded_user,
    signed_in,
    unverified,
)
from tests.support.localauth import LocalAuth

pytestmark = [pytest.mark.anyio, both_key_modes]

ADMIN = "/api/v1/admin"
ME = "/api/v1/auth/me"


async def test_admin_routes_refuse_strangers_and_plain_users(
    client: httpx.AsyncClient, localauth: LocalAuth
) -> None:
    """No token is 401; a signed-in user without the admin role is 403 on every admin route."""
    user = await signed_in(client)
    uid = unverified(user["access_token"])["sub"]
    routes = [
        ("GET", "/users"),
        ("GET", f"/users/{uid}"),
        ("POST", f"/users/{uid}/ban"),
        ("POST", f"/users/{uid}/unban"),
        ("PUT", f"/users/{uid}/roles"),
        ("POST", f"/users/{uid}/sessions/revoke"),
        ("POST", f"/users/{uid}/unlock"),
    ]
    for method, path in routes:
        anonymous = await client.request(method, ADMIN + path)
        assert anonymous.status_code == 401, path
        plain = await client.request(method, ADMIN + path, headers=bearer(user["access_token"]))
        assert (plain.status_code, plain.json()["code"]) == (403, "insufficient_role"), path


async def test_list_and_get_users(client: httpx.AsyncClient, localauth: LocalAuth) -> None:
    """An admin pages through users and reads one; bad paging is 422, an unknown id 404."""
    admin = await admin_token(localauth, client)
    user_id, email = await seeded_user(localauth)

    page = await client.get(f"{ADMIN}/users?page=1&per_page=1", headers=bearer(admin))
    assert page.status_code == 200, page.text
    assert (page.json()["page"], page.json()["per_page"], len(page.json()["users"])) == (1, 1, 1)
    assert page.headers["ratelimit-limit"]

    one = await client.get(f"{ADMIN}/users/{user_id}", headers=bearer(admin))
    assert (one.status_code, one.json()["email"]) == (200, email)

    bad = await client.get(f"{ADMIN}/users?per_page=0", headers=bearer(admin))
    assert (bad.status_code, bad.json()["code"]) == (422, "validation_failed")
    for missing in (str(uuid.uuid4()), "not-a-uuid"):
        gone = await client.get(f"{ADMIN}/users/{missing}", headers=bearer(admin))
        assert gone.status_code == 404, gone.text


async def test_ban_and_unban(client: httpx.AsyncClient, localauth: LocalAuth) -> None:
    """A ban refuses the user's token and their sign-in; unbanning lets them sign in again."""
    admin = await admin_token(localauth, client)
    user = await signed_in(client)
    uid, email = unverified(user["access_token"])["sub"], user["user"]["email"]

    banned = await client.post(f"{ADMIN}/users/{uid}/ban", headers=bearer(admin))
    assert banned.status_code == 200, banned.text
    refused = await client.get(ME, headers=bearer(user["access_token"]))
    assert (refused.status_code, refused.json()["code"]) == (403, "user_banned")
    # Sign-in says only "invalid credentials": a ban is never told without the password.
    assert (await login(client, email)).json()["code"] == "invalid_credentials"

    unbanned = await client.post(f"{ADMIN}/users/{uid}/unban", headers=bearer(admin))
    assert unbanned.status_code == 200, unbanned.text

    # The ban's "not before" has one-second resolution (token iat): a sign-in within that
    # second is refused, so poll (bounded) for the next one.
    async def signs_in() -> bool:
        again = await login(client, email)
        assert again.status_code == 200, again.text
        me = await client.get(ME, headers=bearer(again.json()["access_token"]))
        return me.status_code == 200

    await poll(3.0, signs_in, interval=0.3)
    # The sessions ended by the ban stay ended.
    assert (await client.get(ME, headers=bearer(user["access_token"]))).status_code == 401


async def test_set_roles_grants_on_next_sign_in_and_revokes_at_once(
    client: httpx.AsyncClient, localauth: LocalAuth
) -> None:
    """Granting admin takes effect on the next token; taking it away ends the sessions now."""
    admin = await admin_token(localauth, client)
    user_id, email = await seeded_user(localauth)

    granted = await client.put(
        f"{ADMIN}/users/{user_id}/roles", headers=bearer(admin), json={"roles": ["admin"]}
    )
    assert granted.status_code == 200, granted.text
    assert granted.json()["app_metadata"]["roles"] == ["admin"]
    promoted = (await login(client, email)).json()["access_token"]
    assert (await client.get(f"{ADMIN}/users", headers=bearer(promoted))).status_code == 200

    taken = await client.put(
        f"{ADMIN}/users/{user_id}/roles", headers=bearer(admin), json={"roles": []}
    )
    assert taken.status_code == 200
    assert (await client.get(f"{ADMIN}/users", headers=bearer(promoted))).status_code == 401
    invalid = await client.put(
        f"{ADMIN}/users/{user_id}/roles", headers=bearer(admin), json={"roles": ["Bad Role!"]}
    )
    assert invalid.status_code == 422


async def test_revoke_all_sessions(client: httpx.AsyncClient, localauth: LocalAuth) -> None:
    """Revoking a user's sessions ends every one of their tokens (sign-up opened one too)."""
    admin = await admin_token(localauth, client)
    first = await signed_in(client)
    second = (await login(client, first["user"]["email"])).json()
    uid = unverified(first["access_token"])["sub"]

    revoked = await client.post(f"{ADMIN}/users/{uid}/sessions/revoke", headers=bearer(admin))
    assert (revoked.status_code, revoked.json()) == (200, {"revoked": 3})
    for tokens in (first, second):
        response = await client.get(ME, headers=bearer(tokens["access_token"]))
        assert (response.status_code, response.json()["code"]) == (401, "session_revoked")


async def test_admin_aal2_and_ip_allow_list_when_configured(
    running_apps: Callable[[Settings], Any],
    make_settings: SettingsFactory,
    localauth: LocalAuth,
) -> None:
    """ADMIN_REQUIRE_AAL2 refuses an aal1 admin; ADMIN_IP_ALLOWLIST refuses other networks."""
    strict = await running_apps(make_settings(admin_require_aal2="true"))
    admin = await admin_token(localauth, strict)
    response = await strict.get(f"{ADMIN}/users", headers=bearer(admin))
    assert (response.status_code, response.json()["code"]) == (403, "insufficient_aal")

    fenced = await running_apps(make_settings(admin_ip_allowlist="10.0.0.0/8"))
    response = await fenced.get(f"{ADMIN}/users", headers=bearer(admin))
    assert (response.status_code, response.json()["code"]) == (403, "ip_not_allowed")
    inside = await running_apps(make_settings(admin_ip_allowlist="203.0.113.0/24"))
    assert (await inside.get(f"{ADMIN}/users", headers=bearer(admin))).status_code == 200


async def test_owner_or_admin_reads_a_users_sessions(
    client: httpx.AsyncClient, localauth: LocalAuth
) -> None:
    """A user reads their own sessions, an admin anyone's; another user gets 403 not_owner."""
    owner = await signed_in(client)
    other = await signed_in(client)
    uid = unverified(owner["access_token"])["sub"]
    path = f"/api/v1/users/{uid}/sessions"

    mine = await client.get(path, headers=bearer(owner["access_token"]))
    assert mine.status_code == 200
    assert sorted(s["current"] for s in mine.json()["sessions"]) == [False, True]
    theirs = await client.get(path, headers=bearer(other["access_token"]))
    assert (theirs.status_code, theirs.json()["code"]) == (403, "not_owner")
    admin = await admin_token(localauth, client)
    assert (await client.get(path, headers=bearer(admin))).status_code == 200


async def test_service_credentials_route(
    running_apps: Callable[[Settings], Any], make_settings: SettingsFactory
) -> None:
    """Another service with its id and secret reads a user's status; a wrong secret is 401."""
    client = await running_apps(make_settings(service_credentials="billing:b1ll1ng-s3cret,x:y"))
    uid = unverified((await signed_in(client))["access_token"])["sub"]
    path = f"/api/v1/internal/users/{uid}/status"

    good = {"X-Service-ID": "billing", "X-Service-Secret": "b1ll1ng-s3cret"}
    response = await client.get(path, headers=good)
    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": uid, "banned": False, "not_before": 0}
    wrong = {"X-Service-ID": "billing", "X-Service-Secret": "guess"}
    refused = await client.get(path, headers=wrong)
    assert (refused.status_code, refused.json()["code"]) == (401, "invalid_service_credentials")
