"""Trust boundaries: allowed hosts and no Host reflection, a token's session bound to its
user, privileged routes re-checked against Supabase, and what sign-in and registration
reveal about accounts."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
import pytest

from tests.conftest import TEST_PASSWORD, SettingsFactory, new_email
from tests.security.conftest import Target, hardened
from tests.support.authz import (
    admin_token,
    bearer,
    forge,
    login,
    poll,
    signed_in,
    signing_key,
    unverified,
)
from tests.support.localauth import LocalAuth
from tests.support.users import admin_api, ban_user, create_user

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ME = "/api/v1/auth/me"


async def test_only_allowed_hosts_are_answered(
    start_target: Any, make_settings: SettingsFactory
) -> None:
    """ALLOWED_HOSTS: listed names (any port) and wildcard subdomains are served; any other
    Host is a 400 problem; probes on /health and /metrics answer whatever the Host."""
    target: Target = await start_target(
        hardened(make_settings, allowed_hosts="api.example.com,*.example.org")
    )
    for host in ("api.example.com", "API.example.com:8443", "eu.example.org"):
        response = await target.client.get("/openapi.json", headers={"host": host})
        assert response.status_code == 200, host
    for host in ("evil.example", "example.org", "api.example.com.evil.example", ""):
        response = await target.client.get(ME, headers={"host": host})
        assert (response.status_code, response.json()["code"]) == (400, "invalid_host"), host
        assert response.headers["content-type"] == "application/problem+json"
    for path in ("/health/live", "/metrics"):
        assert (await target.client.get(path, headers={"host": "10.1.2.3"})).status_code == 200


async def test_host_is_never_reflected(target: Target) -> None:
    """A forged Host appears neither in /openapi.json's servers nor in a redirect."""
    evil = {"host": "evil.example"}
    spec = await target.client.get("/openapi.json", headers=evil)
    assert "evil.example" not in spec.text
    assert spec.json()["servers"] == [{"url": "/"}]
    for path in ("/api/v1/auth/me/", "/api/v1/admin/users/", "/health/live/"):
        response = await target.client.get(path, headers=evil, follow_redirects=False)
        assert response.status_code == 404, path
        assert "location" not in response.headers


async def test_a_token_naming_another_users_session_is_refused(
    target: Target, localauth: LocalAuth
) -> None:
    """A validly signed token whose session_id belongs to someone else is refused, whether
    or not that session is in the instance's cache."""
    victim = await signed_in(target.client)
    attacker = await signed_in(target.client)
    victim_claims = unverified(victim["access_token"])
    claims = {**unverified(attacker["access_token"]), "session_id": victim_claims["session_id"]}
    kid, key = signing_key(localauth.db_path)
    forged = forge(claims, key, kid=kid)
    # Cold: the session is not cached yet on this instance.
    first = await target.client.get(ME, headers=bearer(forged))
    assert (first.status_code, first.json()["code"]) == (401, "session_revoked")
    # Warm: the victim's own token caches the session as alive.
    assert (await target.client.get(ME, headers=bearer(victim["access_token"]))).status_code == 200
    claims["iat"] = claims["iat"] + 1  # another token, past the verified-token cache
    second = await target.client.get(ME, headers=bearer(forge(claims, key, kid=kid)))
    assert (second.status_code, second.json()["code"]) == (401, "session_revoked")
    logout = await target.client.post("/api/v1/auth/logout", headers=bearer(forged))
    assert logout.status_code == 401
    assert (await target.client.get(ME, headers=bearer(victim["access_token"]))).status_code == 200


def _set_roles(auth: LocalAuth, user_id: str, roles: list[str]) -> None:
    with admin_api(auth) as api:
        api.update_user_by_id(user_id, {"app_metadata": {"roles": roles}})


def _delete(auth: LocalAuth, user_id: str) -> None:
    with admin_api(auth) as api:
        api.delete_user(user_id)


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ("demote", 403, "insufficient_role"),
        ("ban", 403, "user_banned"),
        ("delete", 401, "session_revoked"),
    ],
)
async def test_an_admin_changed_in_supabase_loses_the_admin_api(
    start_target: Any,
    make_settings: SettingsFactory,
    localauth: LocalAuth,
    change: str,
    status: int,
    code: str,
) -> None:
    """An admin demoted, banned or deleted in Supabase directly (no event sent) keeps a
    valid-looking token, yet the admin API refuses it within ADMIN_REVERIFY_SECONDS."""
    target: Target = await start_target(hardened(make_settings, admin_reverify_seconds=1))
    token = await admin_token(localauth, target.client)
    admin_id = unverified(token)["sub"]
    users = "/api/v1/admin/users?per_page=1"
    assert (await target.client.get(users, headers=bearer(token))).status_code == 200
    if change == "demote":
        await anyio.to_thread.run_sync(_set_roles, localauth, admin_id, [])
    elif change == "ban":
        await anyio.to_thread.run_sync(ban_user, localauth, admin_id)
    else:
        await anyio.to_thread.run_sync(_delete, localauth, admin_id)

    async def refused() -> bool:
        response = await target.client.get(users, headers=bearer(token))
        return (response.status_code, response.json().get("code")) == (status, code)

    took = await poll(3.0, refused, interval=0.05)
    assert took < 2.5
    # The owner-or-admin route does not grant another user's data on the stale role either.
    other = str(uuid.uuid4())
    response = await target.client.get(f"/api/v1/users/{other}/sessions", headers=bearer(token))
    assert response.status_code in (401, 403)


async def test_a_ban_is_told_only_as_invalid_credentials(
    target: Target, localauth: LocalAuth
) -> None:
    """A banned account's sign-in, with the right password or a wrong one, answers exactly
    what an unknown address gets (Supabase reports the ban before the password)."""
    email = new_email()
    user_id = await anyio.to_thread.run_sync(create_user, localauth, email, TEST_PASSWORD)
    await anyio.to_thread.run_sync(ban_user, localauth, user_id)
    answers = []
    for address, password in (
        (email, TEST_PASSWORD),
        (email, "Wrong-password-1"),
        (new_email(), TEST_PASSWORD),
    ):
        response = await login(target.client, address, password)
        body = response.json()
        answers.append((response.status_code, body["code"], body["detail"]))
    assert len(set(answers)) == 1, answers
    assert answers[0][:2] == (401, "invalid_credentials")


async def test_registration_409_and_its_concealment(
    start_target: Any, make_settings: SettingsFactory
) -> None:
    """By default a taken address is 409 email_exists (it tells that the account exists).
    With REGISTER_CONCEAL_EXISTING=true a taken address and a fresh one get the same 201
    answer without tokens, and the fresh account signs in normally."""
    plain: Target = await start_target(hardened(make_settings))
    taken = new_email()
    body = {"email": taken, "password": TEST_PASSWORD}
    assert (await plain.client.post("/api/v1/auth/register", json=body)).status_code == 201
    again = {"email": taken, "password": "Other-password-2"}
    conflict = await plain.client.post("/api/v1/auth/register", json=again)
    assert (conflict.status_code, conflict.json()["code"]) == (409, "email_exists")

    concealing: Target = await start_target(
        hardened(make_settings, register_conceal_existing="true")
    )
    fresh = new_email()
    answers = {}
    for address in (taken, fresh):
        started = time.monotonic()
        response = await concealing.client.post(
            "/api/v1/auth/register", json={"email": address, "password": "Other-password-2"}
        )
        answers[address] = (response.status_code, response.json(), time.monotonic() - started)
    assert answers[taken][0] == answers[fresh][0] == 201
    assert answers[taken][1] == {"user": {"email": taken}, "session": None}
    assert answers[fresh][1] == {"user": {"email": fresh}, "session": None}
    signed = await login(concealing.client, fresh, "Other-password-2")
    assert signed.status_code == 200, signed.text
    # The taken account kept its own password.
    assert (await login(concealing.client, taken, TEST_PASSWORD)).status_code == 200
