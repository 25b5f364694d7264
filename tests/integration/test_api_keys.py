"""The new API keys end to end: what travels where, what localauth (playing the platform)
refuses and how, and what the service answers when its own key is refused.

Through the real SDK and the real app over real HTTP, for a project on legacy keys and one
created today (sb_publishable_/sb_secret_ keys, legacy keys disabled, an apikey required).
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
import structlog
import supabase
from supabase import ClientOptions
from supabase_auth import SyncGoTrueAdminAPI
from supabase_auth.errors import AuthApiError

from tests.conftest import TEST_PASSWORD, SettingsFactory, both_key_modes, new_email
from tests.support.authz import bearer, login, seeded_user, unverified
from tests.support.localauth import LocalAuth, forged_service_role_key
from tests.support.recording_proxy import RecordingProxy

pytestmark = [pytest.mark.anyio, both_key_modes]
NEW = pytest.mark.parametrize("localauth", ["new"], indirect=True)

AUTH = "/api/v1/auth"
ADMIN = "/api/v1/admin"
# GoTrue's answer to a bearer that is not a JWT (golang-jwt's wording), as Supabase gives it
# for an sb_ key sent as `Authorization: Bearer` (supabase/auth#2204, supabase-js#1568).
NOT_A_JWT = (
    "invalid JWT: unable to parse or verify signature, "
    "token is malformed: token contains an invalid number of segments"
)
OPEN_PATHS = ("/auth/v1/health", "/auth/v1/.well-known/jwks.json")


async def test_every_route_sends_each_key_as_the_platform_expects(
    running_apps: Any, make_settings: SettingsFactory, localauth: LocalAuth
) -> None:
    """Every route of the service, through a recording proxy in front of localauth: every
    upstream call carries the right key in `apikey`, and `Authorization` only ever carries a
    JWT (a user's token, or a legacy key), never an sb_ key."""
    with RecordingProxy(localauth.url) as proxy:
        client = await running_apps(
            # Tokens name localauth itself as their issuer, not the proxy.
            make_settings(supabase_url=proxy.url, jwt_issuer=localauth.url + "/auth/v1")
        )
        email = new_email()
        created = await client.post(
            f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD}
        )
        assert created.status_code == 201, created.text
        signed = await login(client, email)
        assert signed.status_code == 200, signed.text
        tokens = signed.json()
        user_id = unverified(tokens["access_token"])["sub"]
        refreshed = await client.post(
            f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 200, refreshed.text
        access = refreshed.json()["access_token"]
        assert (await client.get(f"{AUTH}/me", headers=bearer(access))).status_code == 200
        sessions = await client.get(f"{AUTH}/sessions", headers=bearer(access))
        assert sessions.status_code == 200, sessions.text

        other = (await login(client, email)).json()["access_token"]
        other_session = unverified(other)["session_id"]
        ended = await client.delete(f"{AUTH}/sessions/{other_session}", headers=bearer(access))
        assert ended.status_code == 204, ended.text
        logout = await client.post(f"{AUTH}/logout", headers=bearer(access))
        assert logout.status_code == 204, logout.text
        access = (await login(client, email)).json()["access_token"]

        _, admin_email = await seeded_user(localauth, roles=["admin"])
        admin = (await login(client, admin_email)).json()["access_token"]
        calls = [
            ("GET", f"{ADMIN}/users?page=1&per_page=2", None, 200),
            ("GET", f"{ADMIN}/users/{user_id}", None, 200),
            ("PUT", f"{ADMIN}/users/{user_id}/roles", {"roles": ["editor"]}, 200),
            ("POST", f"{ADMIN}/users/{user_id}/unlock", None, 204),
            ("GET", f"/api/v1/users/{user_id}/sessions", None, 200),
            ("POST", f"{ADMIN}/users/{user_id}/sessions/revoke", None, 200),
            ("POST", f"{ADMIN}/users/{user_id}/ban", None, 200),
            ("POST", f"{ADMIN}/users/{user_id}/unban", None, 200),
        ]
        for method, path, body, status in calls:
            response = await client.request(method, path, json=body, headers=bearer(admin))
            assert response.status_code == status, (path, response.text)

        recorded = proxy.snapshot()

    public, server = localauth.public_key, localauth.server_key
    upstream = [r for r in recorded if not r.path.startswith(OPEN_PATHS)]
    paths = {r.path.split("?")[0] for r in upstream}
    assert {"/auth/v1/token", "/auth/v1/admin/users", "/auth/v1/logout"} <= paths
    for request in upstream:
        user_call = request.path.startswith("/auth/v1/token")
        assert request.headers.get("apikey") == (public if user_call else server), request.path
        authorization = request.headers.get("authorization", "")
        token = authorization.removeprefix("Bearer ")
        assert not token.startswith("sb_"), request.path
        if authorization:
            assert token.count(".") == 2, request.path  # a JWT
        if localauth.key_mode == "new" and request.path.startswith("/auth/v1/admin"):
            assert not authorization, "the gateway turns the secret key into the role"


@NEW
def test_a_secret_key_as_bearer_is_refused_as_supabase_refuses_it(localauth: LocalAuth) -> None:
    """`Authorization: Bearer sb_secret_…` (what `create_client(url, SECRET_KEY)` sends) is
    refused by Supabase Auth's JWT parser: 403 bad_jwt, in both error envelopes."""
    url = localauth.url + "/auth/v1"
    secret = localauth.secret_key
    with httpx.Client(timeout=10) as http:
        api = SyncGoTrueAdminAPI(
            url=url,
            headers={"apikey": secret, "Authorization": f"Bearer {secret}"},
            http_client=http,
        )
        for call in (
            lambda: api.create_user({"email": new_email(), "password": TEST_PASSWORD}),
            lambda: api.list_users(page=1, per_page=1),
        ):
            with pytest.raises(AuthApiError) as refused:
                call()
            assert (refused.value.status, refused.value.code) == (403, "bad_jwt")
            assert refused.value.message == NOT_A_JWT

        legacy = http.get(
            url + "/admin/users", headers={"apikey": secret, "Authorization": f"Bearer {secret}"}
        )
        assert legacy.status_code == 403
        assert legacy.headers["x-sb-error-code"] == "bad_jwt"
        assert legacy.json() == {"code": 403, "error_code": "bad_jwt", "msg": NOT_A_JWT}

        # The same key in `apikey` alone is the service role.
        fine = http.get(url + "/admin/users", headers={"apikey": secret})
        assert fine.status_code == 200, fine.text

        # supabase.create_client sends its key as the bearer too: refused the same way.
        client = supabase.create_client(localauth.url, secret, ClientOptions(httpx_client=http))
        with pytest.raises(AuthApiError) as refused:
            client.auth.admin.list_users()
        assert (refused.value.status, refused.value.code) == (403, "bad_jwt")


@NEW
def test_the_gateway_checks_the_apikey_and_maps_it_to_its_role(localauth: LocalAuth) -> None:
    url = localauth.url + "/auth/v1"
    with httpx.Client(timeout=10) as http:
        unknown = http.get(url + "/admin/users", headers={"apikey": "sb_secret_" + "0" * 32})
        assert (unknown.status_code, unknown.json()["message"]) == (401, "Invalid API key")
        assert unknown.headers["sb-error-code"] == "UNAUTHORIZED_INVALID_API_KEY"

        for legacy_key in (localauth.anon_key, localauth.service_role_key):
            disabled = http.get(url + "/admin/users", headers={"apikey": legacy_key})
            assert disabled.status_code == 401
            assert disabled.json()["message"] == "Legacy API keys are disabled"

        missing = http.post(url + "/token?grant_type=password", json={})
        assert (missing.status_code, missing.json()["message"]) == (
            401,
            "No API key found in request",
        )
        assert missing.headers["sb-error-code"] == "UNAUTHORIZED_MISSING_API_KEY"

        # The publishable key stands for anon: no admin rights, but sign-in works.
        anon = http.get(url + "/admin/users", headers={"apikey": localauth.publishable_key})
        assert (anon.status_code, anon.json()["error_code"]) == (403, "not_admin")
        bogus = http.post(
            url + "/token?grant_type=password",
            headers={"apikey": localauth.publishable_key},
            json={"email": new_email(), "password": TEST_PASSWORD},
        )
        assert (bogus.status_code, bogus.json()["error_code"]) == (400, "invalid_credentials")

        # Open routes need no key, as on the platform.
        assert http.get(url + "/health").status_code == 200
        assert http.get(url + "/.well-known/jwks.json").status_code == 200


def _wrong_server_key(localauth: LocalAuth) -> dict[str, str]:
    if localauth.key_mode == "new":
        return {"supabase_secret_key": "sb_secret_" + "1" * 32}
    return {"supabase_service_role_key": forged_service_role_key()}


async def test_a_refused_server_key_is_a_clear_503_logged_once_never_a_breaker_failure(
    running_apps: Any, make_settings: SettingsFactory, localauth: LocalAuth
) -> None:
    settings = make_settings(**_wrong_server_key(localauth), breaker_failure_threshold=2)
    client = await running_apps(settings)
    family = settings.server_api_key.label
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):  # well past the breaker's threshold
            response = await client.post(
                f"{AUTH}/register", json={"email": new_email(), "password": TEST_PASSWORD}
            )
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["code"] == "upstream_misconfigured"
            assert family in body["debug"]
            assert "apikey header" in body["debug"]
            assert "SUPABASE_SECRET_KEY" in body["debug"]
            assert settings.server_api_key.value not in response.text
    refusals = [e for e in logs if e["event"] == "upstream_rejected_service_key"]
    assert len(refusals) == 1, refusals
    assert (refusals[0]["key"], refusals[0]["header"]) == (family, "apikey")

    # The breaker never opened: the user-facing key still works.
    email = new_email()
    await anyio.to_thread.run_sync(lambda: _seed(localauth, email))
    signed = await login(client, email)
    assert signed.status_code == 200, signed.text


def _seed(localauth: LocalAuth, email: str) -> None:
    from tests.support.users import create_user

    create_user(localauth, email, TEST_PASSWORD)


async def test_a_refused_public_key_names_the_publishable_key(
    running_apps: Any, make_settings: SettingsFactory, localauth: LocalAuth
) -> None:
    client = await running_apps(
        make_settings(supabase_publishable_key="sb_publishable_" + "2" * 22)
    )
    response = await login(client, new_email())
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "upstream_misconfigured"
    debug = response.json()["debug"]
    assert "publishable key (sb_publishable_…) sent in the apikey header on sign_in" in debug
    assert "401 Invalid API key" in debug


async def test_no_debug_in_production(
    running_apps: Any, make_settings: SettingsFactory, localauth: LocalAuth
) -> None:
    client = await running_apps(
        make_settings(**_wrong_server_key(localauth), environment="production")
    )
    response = await client.post(
        f"{AUTH}/register", json={"email": new_email(), "password": TEST_PASSWORD}
    )
    assert (response.status_code, response.json()["code"]) == (503, "upstream_misconfigured")
    assert "debug" not in response.json()
