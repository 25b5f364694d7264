"""The account-lifecycle routes that answer a session honour the cookie transport: in
cookie mode the refresh token goes into the HttpOnly cookie, never the body, and a request
from a page that is not allowed is refused before any code is spent.

In process against real localauth (its mailbox) and Redis; helpers of
``test_cookie_transport``."""

from __future__ import annotations

from typing import Any

import httpx
import pyotp
import pytest

from tests.conftest import TEST_PASSWORD, SettingsFactory, new_email
from tests.integration.test_cookie_transport import (
    AUTH,
    FROM_APP,
    Start,
    cookie_app,
    cookie_of,
    sends,
)
from tests.support.localauth import LocalAuth
from tests.support.mailbox import latest

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "Another-Horse-77"
EVIL = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


async def register(client: httpx.AsyncClient) -> tuple[str, Any]:
    email = new_email()
    created = await client.post(
        f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD}, headers=FROM_APP
    )
    assert created.status_code == 201, created.text
    return email, created.json()["session"]


def assert_cookie_session(response: httpx.Response) -> Any:
    """A session answer in cookie mode: tokens for the page, the refresh token only in the
    scoped HttpOnly cookie."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["access_token"]
    assert "refresh_token" not in body
    assert response.headers["cache-control"] == "no-store"
    cookie = cookie_of(response)
    assert cookie is not None
    assert cookie["httponly"] is True
    assert cookie["secure"] is True
    assert cookie["path"] == f"{AUTH}/refresh"
    assert cookie.value not in response.text
    return cookie


async def refreshes(client: httpx.AsyncClient, cookie: Any) -> dict[str, Any]:
    refreshed = await client.post(f"{AUTH}/refresh", headers=sends(cookie.value))
    assert refreshed.status_code == 200, refreshed.text
    body: dict[str, Any] = refreshed.json()
    return body


async def test_password_reset_answers_a_cookie_session(
    running_apps: Start, make_settings: SettingsFactory, localauth: LocalAuth
) -> None:
    """A forged reset (another site) is 403 and spends nothing; the real page's reset with
    the same code sets the cookie, keeps the refresh token out of the body, and the cookie
    refreshes; the new password signs in."""
    client = await cookie_app(running_apps, make_settings)
    email, _ = await register(client)
    sent = await client.post(f"{AUTH}/password/recover", json={"email": email}, headers=FROM_APP)
    assert sent.status_code == 202
    mail = await latest(localauth, email, "recovery")
    body = {"email": email, "code": mail["otp"], "password": NEW_PASSWORD}
    forged = await client.post(
        f"{AUTH}/password/reset", json=body, headers={"X-Session-Transport": "cookie", **EVIL}
    )
    assert forged.status_code == 403, forged.text
    assert forged.json()["code"] == "csrf_rejected"
    assert "set-cookie" not in forged.headers
    reset = await client.post(f"{AUTH}/password/reset", json=body, headers=FROM_APP)
    cookie = assert_cookie_session(reset)
    assert (await refreshes(client, cookie))["user"]["email"] == email
    login = await client.post(f"{AUTH}/login", json={"email": email, "password": NEW_PASSWORD})
    assert login.status_code == 200, login.text


async def test_email_code_sign_in_answers_a_cookie_session(
    running_apps: Start, make_settings: SettingsFactory, localauth: LocalAuth
) -> None:
    client = await cookie_app(running_apps, make_settings)
    email, _ = await register(client)
    assert (await client.post(f"{AUTH}/otp", json={"email": email})).status_code == 202
    mail = await latest(localauth, email, "magiclink")
    signed = await client.post(
        f"{AUTH}/otp/verify", json={"email": email, "code": mail["otp"]}, headers=FROM_APP
    )
    cookie = assert_cookie_session(signed)
    assert (await refreshes(client, cookie))["user"]["email"] == email


async def test_mfa_verify_puts_the_aal2_session_in_the_cookie(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    """The aal2 session of an MFA verification replaces the cookie; refreshing with the new
    cookie stays aal2; bearer mode (no header) still answers the token in the body."""
    client = await cookie_app(running_apps, make_settings)
    _, session = await register(client)
    auth = {"Authorization": f"Bearer {session['access_token']}"}
    enrolled = await client.post(f"{AUTH}/mfa/factors", headers=auth, json={})
    assert enrolled.status_code == 201, enrolled.text
    factor = enrolled.json()
    totp = pyotp.TOTP(factor["totp"]["secret"])
    verify = f"{AUTH}/mfa/factors/{factor['id']}/verify"
    forged = await client.post(
        verify,
        json={"code": totp.now()},
        headers={**auth, "X-Session-Transport": "cookie", **EVIL},
    )
    assert forged.json()["code"] == "csrf_rejected"
    verified = await client.post(verify, json={"code": totp.now()}, headers={**auth, **FROM_APP})
    cookie = assert_cookie_session(verified)
    fresh = await refreshes(client, cookie)
    me = await client.get(
        f"{AUTH}/me", headers={"Authorization": f"Bearer {fresh['access_token']}"}
    )
    assert me.json()["aal"] == "aal2"

    # The same route without the transport header: bearer, the token in the body.
    _, other = await register(client)
    other_auth = {"Authorization": f"Bearer {other['access_token']}"}
    second = (await client.post(f"{AUTH}/mfa/factors", headers=other_auth, json={})).json()
    plain = await client.post(
        f"{AUTH}/mfa/factors/{second['id']}/verify",
        json={"code": pyotp.TOTP(second["totp"]["secret"]).now()},
        headers=other_auth,
    )
    assert plain.status_code == 200, plain.text
    assert plain.json()["refresh_token"]
    assert "set-cookie" not in plain.headers


SESSION_ROUTES = [
    ("password/reset", {"email": "a@example.com", "code": "123456", "password": NEW_PASSWORD}),
    ("email/confirm", {"email": "a@example.com", "code": "123456"}),
    ("otp/verify", {"email": "a@example.com", "code": "123456"}),
    ("oauth/callback", {"flow_id": "f" * 32, "code": "c" * 32}),
    ("email/change/confirm", {"email": "a@example.com", "code": "123456"}),
]


async def test_every_session_route_refuses_forged_cookie_requests(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    """Every lifecycle route that answers a session checks the page's origin in cookie
    mode (before reading the body), documents the transport header, and a cookie-only
    service refuses a bearer request there with a clear 400."""
    client = await cookie_app(running_apps, make_settings)
    for path, body in SESSION_ROUTES:
        forged = await client.post(
            f"{AUTH}/{path}", json=body, headers={"X-Session-Transport": "cookie", **EVIL}
        )
        assert forged.status_code == 403, (path, forged.text)
        assert forged.json()["code"] == "csrf_rejected", path
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in [p for p, _ in SESSION_ROUTES] + ["mfa/factors/{factor_id}/verify"]:
        names = [p["name"] for p in paths[f"{AUTH}/{path}"]["post"].get("parameters", [])]
        assert "X-Session-Transport" in names, path
    cookie_only = await cookie_app(running_apps, make_settings, session_transport="cookie")
    asked = await cookie_only.post(
        f"{AUTH}/otp/verify",
        json={"email": "a@example.com", "code": "123456"},
        headers={"X-Session-Transport": "bearer"},
    )
    assert asked.status_code == 400
    assert asked.json()["code"] == "transport_not_allowed"
