"""The cookie session transport and its CSRF rules, in process against real localauth and Redis.

Cookies are sent by hand (a ``Cookie`` header) rather than through httpx's jar: the jar,
like a browser, keeps a ``Secure`` cookie away from ``http://testserver``, and these tests
want to control exactly what each request carries.
"""

from __future__ import annotations

from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import anyio
import httpx
import pytest

from app.settings import Settings
from app.transport import CsrfRejected, check_origin
from tests.conftest import TEST_PASSWORD, SettingsFactory, new_email

pytestmark = pytest.mark.anyio

AUTH = "/api/v1/auth"
APP = "https://app.example.com"
COOKIE = "__Secure-sg-refresh"
FROM_APP = {"Origin": APP, "Sec-Fetch-Site": "same-site", "X-Session-Transport": "cookie"}

Start = Callable[[Settings], Any]


def cookie_of(response: httpx.Response) -> Any:
    """The refresh cookie the response sets (a ``Morsel``), or None."""
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if COOKIE in jar:
            return jar[COOKIE]
    return None


def sends(token: str, **headers: str) -> dict[str, str]:
    return {**FROM_APP, "Cookie": f"{COOKIE}={token}", **headers}


async def cookie_app(start: Start, make_settings: SettingsFactory, **extra: Any) -> Any:
    options: dict[str, Any] = {
        "session_transport": "both",
        "cors_origins": APP,
        "rate_limit_enabled": "false",
        **extra,
    }
    return await start(make_settings(**options))


async def sign_in(client: httpx.AsyncClient, headers: dict[str, str] = FROM_APP) -> Any:
    email = new_email()
    created = await client.post(
        f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD}, headers=headers
    )
    assert created.status_code == 201, created.text
    response = await client.post(
        f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response


async def test_bearer_stays_the_default_and_refuses_cookie_requests(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    """Without SESSION_TRANSPORT, tokens are in the body, no cookie is set, and asking for
    the cookie transport is a clear 400, not a silent switch."""
    client = await running_apps(make_settings(rate_limit_enabled="false"))
    email = new_email()
    await client.post(f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD})
    plain = await client.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    assert plain.status_code == 200
    assert plain.json()["refresh_token"]
    assert "set-cookie" not in plain.headers
    asked = await client.post(
        f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD}, headers=FROM_APP
    )
    assert asked.status_code == 400
    assert asked.json()["code"] == "transport_not_allowed"
    assert "set-cookie" not in asked.headers


async def test_cookie_login_sets_a_scoped_httponly_cookie_and_keeps_it_out_of_the_body(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    client = await cookie_app(running_apps, make_settings)
    response = await sign_in(client)
    body = response.json()
    assert "refresh_token" not in body
    assert body["access_token"]
    assert body["token_type"] == "bearer"
    assert response.headers["cache-control"] == "no-store"
    cookie = cookie_of(response)
    assert cookie is not None
    assert cookie.value
    assert cookie["httponly"] is True
    assert cookie["secure"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/api/v1/auth/refresh"
    assert int(cookie["max-age"]) == 30 * 24 * 3600
    assert not cookie["domain"]  # host-only
    assert cookie.value not in response.text
    me = await client.get(f"{AUTH}/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200


async def test_cookie_register_puts_the_new_session_in_the_cookie(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    client = await cookie_app(running_apps, make_settings)
    created = await client.post(
        f"{AUTH}/register", json={"email": new_email(), "password": TEST_PASSWORD}, headers=FROM_APP
    )
    assert created.status_code == 201
    assert "refresh_token" not in created.json()["session"]
    cookie = cookie_of(created)
    assert cookie is not None
    refreshed = await client.post(f"{AUTH}/refresh", headers=sends(cookie.value))
    assert refreshed.status_code == 200, refreshed.text


async def test_refresh_reads_only_the_cookie_and_rotates_it(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    client = await cookie_app(running_apps, make_settings)
    first = cookie_of(await sign_in(client)).value
    refreshed = await client.post(f"{AUTH}/refresh", headers=sends(first))
    assert refreshed.status_code == 200, refreshed.text
    assert "refresh_token" not in refreshed.json()
    second = cookie_of(refreshed)
    assert second is not None
    assert second.value != first
    assert second["path"] == "/api/v1/auth/refresh"
    assert second["httponly"] is True

    missing = await client.post(f"{AUTH}/refresh", headers=FROM_APP)
    assert missing.status_code == 401
    assert missing.json()["code"] == "missing_refresh_token"
    in_body = await client.post(
        f"{AUTH}/refresh", json={"refresh_token": second.value}, headers=sends(second.value)
    )
    assert in_body.status_code == 422
    assert in_body.json()["errors"][0]["field"] == "refresh_token"
    garbage = await client.post(f"{AUTH}/refresh", headers=sends("not-a-token"))
    assert garbage.status_code == 422, garbage.text  # Supabase Auth: not a token at all
    cleared = cookie_of(garbage)
    assert cleared is not None
    assert int(cleared["max-age"]) == 0
    assert cleared["path"] == "/api/v1/auth/refresh"


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example.com", "Sec-Fetch-Site": "same-site"},
        {"Origin": "https://evil.test", "Sec-Fetch-Site": "cross-site"},
        {"Origin": APP, "Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "null"},
        {"Origin": "https://app.example.com.evil.test"},
        {},
    ],
    ids=[
        "sibling-origin",
        "cross-site",
        "allowed-origin-but-cross-site",
        "fetch-site-only",
        "fetch-site-none",
        "null-origin",
        "suffix-origin",
        "no-browser-headers",
    ],
)
async def test_forged_cookie_refresh_is_refused_and_rotates_nothing(
    running_apps: Start, make_settings: SettingsFactory, headers: dict[str, str]
) -> None:
    """A refresh carrying a valid cookie from anywhere but an allowed page is 403
    csrf_rejected, and the token is untouched: with no grace window, the real page's next
    refresh with the same cookie still succeeds (a rotated token would be a reuse)."""
    client = await cookie_app(running_apps, make_settings, refresh_grace_seconds="0")
    token = cookie_of(await sign_in(client)).value
    forged = await client.post(
        f"{AUTH}/refresh",
        headers={"X-Session-Transport": "cookie", "Cookie": f"{COOKIE}={token}", **headers},
    )
    assert forged.status_code == 403, forged.text
    assert forged.json()["code"] == "csrf_rejected"
    assert "set-cookie" not in forged.headers
    real = await client.post(f"{AUTH}/refresh", headers=sends(token))
    assert real.status_code == 200, real.text


async def test_same_origin_pages_pass_the_check(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    """The service's own origin, or Sec-Fetch-Site: same-origin alone, is a real page."""
    client = await cookie_app(running_apps, make_settings)
    token = cookie_of(await sign_in(client)).value
    own = await client.post(
        f"{AUTH}/refresh",
        headers=sends(token, Origin="http://testserver", **{"Sec-Fetch-Site": "same-origin"}),
    )
    assert own.status_code == 200, own.text
    token = cookie_of(own).value
    bare = {"X-Session-Transport": "cookie", "Sec-Fetch-Site": "same-origin"}
    alone = await client.post(f"{AUTH}/refresh", headers={**bare, "Cookie": f"{COOKIE}={token}"})
    assert alone.status_code == 200, alone.text


async def test_forged_cookie_login_sets_no_cookie(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    """Login CSRF (signing the victim in as the attacker) is refused the same way."""
    client = await cookie_app(running_apps, make_settings)
    email = new_email()
    await client.post(f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD})
    forged = await client.post(
        f"{AUTH}/login",
        json={"email": email, "password": TEST_PASSWORD},
        headers={**FROM_APP, "Origin": "https://evil.test", "Sec-Fetch-Site": "cross-site"},
    )
    assert forged.status_code == 403
    assert forged.json()["code"] == "csrf_rejected"
    assert cookie_of(forged) is None


async def test_parallel_cookie_refreshes_from_many_tabs_share_one_rotation(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    """Eight tabs refreshing with the same cookie at once all succeed with the same new
    cookie and access token; the session is not treated as stolen."""
    client = await cookie_app(running_apps, make_settings)
    token = cookie_of(await sign_in(client)).value
    answers: list[httpx.Response] = []

    async def tab() -> None:
        answers.append(await client.post(f"{AUTH}/refresh", headers=sends(token)))

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(tab)
    assert [r.status_code for r in answers] == [200] * 8, [r.text for r in answers]
    assert len({cookie_of(r).value for r in answers}) == 1
    assert len({r.json()["access_token"] for r in answers}) == 1
    assert cookie_of(answers[0]).value != token
    nxt = await client.post(f"{AUTH}/refresh", headers=sends(cookie_of(answers[0]).value))
    assert nxt.status_code == 200, nxt.text


async def test_logout_clears_the_cookie_but_scope_others_keeps_it(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    client = await cookie_app(running_apps, make_settings)
    login = await sign_in(client)
    token = cookie_of(login).value
    access = login.json()["access_token"]
    others = await client.post(
        f"{AUTH}/logout",
        json={"scope": "others"},
        headers={**FROM_APP, "Authorization": f"Bearer {access}"},
    )
    assert others.status_code == 204
    assert cookie_of(others) is None
    out = await client.post(
        f"{AUTH}/logout", headers={**FROM_APP, "Authorization": f"Bearer {access}"}
    )
    assert out.status_code == 204
    cleared = cookie_of(out)
    assert cleared is not None
    assert cleared.value == ""
    assert int(cleared["max-age"]) == 0
    assert cleared["path"] == "/api/v1/auth/refresh"
    assert cleared["httponly"] is True
    assert cleared["secure"] is True
    after = await client.post(f"{AUTH}/refresh", headers=sends(token))
    assert after.status_code == 401
    assert after.json()["code"] == "invalid_refresh_token"
    dropped = cookie_of(after)
    assert dropped is not None
    assert int(dropped["max-age"]) == 0


async def test_cookie_only_service(running_apps: Start, make_settings: SettingsFactory) -> None:
    """SESSION_TRANSPORT=cookie: the cookie without asking, and no way back to bearer."""
    client = await cookie_app(running_apps, make_settings, session_transport="cookie")
    page = {"Origin": APP, "Sec-Fetch-Site": "same-site"}
    login = await sign_in(client, headers=page)
    assert "refresh_token" not in login.json()
    token = cookie_of(login).value
    refreshed = await client.post(
        f"{AUTH}/refresh", headers={**page, "Cookie": f"{COOKIE}={token}"}
    )
    assert refreshed.status_code == 200
    bearer = await client.post(
        f"{AUTH}/refresh",
        json={"refresh_token": cookie_of(refreshed).value},
        headers={**page, "X-Session-Transport": "bearer"},
    )
    assert bearer.status_code == 400
    assert bearer.json()["code"] == "transport_not_allowed"
    curl = await client.post(
        f"{AUTH}/login", json={"email": new_email(), "password": TEST_PASSWORD}
    )
    assert curl.status_code == 403  # no Origin: cookie sessions are for browsers
    assert curl.json()["code"] == "csrf_rejected"


async def test_cookie_path_follows_the_proxy_prefix(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    """Behind Kong with a stripped prefix, the cookie is scoped to the path the browser uses."""
    client = await cookie_app(
        running_apps, make_settings, trusted_proxies="203.0.113.0/24", forwarded_prefixes="/auth"
    )
    login = await sign_in(client, headers={**FROM_APP, "X-Forwarded-Prefix": "/auth"})
    assert cookie_of(login)["path"] == "/auth/api/v1/auth/refresh"


async def test_preflight_allows_the_transport_header(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    client = await cookie_app(running_apps, make_settings)
    response = await client.options(
        f"{AUTH}/refresh",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-session-transport",
        },
    )
    assert response.status_code == 200
    assert "x-session-transport" in response.headers["access-control-allow-headers"].lower()
    assert response.headers["access-control-allow-credentials"] == "true"


async def test_unknown_transport_is_a_clear_400(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    client = await cookie_app(running_apps, make_settings)
    response = await client.post(
        f"{AUTH}/login",
        json={"email": new_email(), "password": TEST_PASSWORD},
        headers={**FROM_APP, "X-Session-Transport": "carrier-pigeon"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "transport_not_allowed"


def test_origin_rule_is_exact() -> None:
    """Pure rule: exact origins (case and a trailing slash aside), nothing by prefix."""
    allowed = frozenset({"https://app.example.com"})
    own = "https://api.example.com"
    for ok in (
        {"origin": "https://APP.example.com/", "sec-fetch-site": "same-site"},
        {"origin": own},
        {"sec-fetch-site": "same-origin"},
        # Behind a proxy that rewrites Host the own origin looks different; the browser's
        # same-origin verdict still holds.
        {"origin": "https://public.example.com", "sec-fetch-site": "same-origin"},
    ):
        check_origin(ok, allowed=allowed, own=own)
    for bad in (
        {"origin": "https://app.example.com:444"},
        {"origin": "http://app.example.com"},
        {"origin": "https://app.example.co"},
        {"sec-fetch-site": "same-site"},
        {"origin": own, "sec-fetch-site": "none"},
        {"origin": own, "sec-fetch-site": "cross-site"},
        {"origin": "https://evil.test", "sec-fetch-site": "same-site"},
    ):
        with pytest.raises(CsrfRejected):
            check_origin(bad, allowed=allowed, own=own)


def test_a_bad_transport_setting_stops_start_up() -> None:
    from app.settings import ConfigurationError

    base = {
        "SUPABASE_URL": "http://127.0.0.1:1",
        "SUPABASE_ANON_KEY": "anon",
        "SUPABASE_SERVICE_ROLE_KEY": "service",
    }
    for name, value in (
        ("SESSION_TRANSPORT", "cookies"),
        ("SESSION_COOKIE_SAMESITE", "none"),
        ("SESSION_COOKIE_NAME", "bad name;"),
    ):
        with pytest.raises(ConfigurationError, match=name):
            Settings.from_environ({**base, name: value})


async def test_openapi_documents_the_transport_header(
    running_apps: Start, make_settings: SettingsFactory
) -> None:
    client = await running_apps(make_settings())
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("register", "login", "refresh", "logout"):
        operation = paths[f"{AUTH}/{path}"]["post"]
        names = [p["name"] for p in operation.get("parameters", [])]
        assert "X-Session-Transport" in names, path
        assert "403" in operation["responses"], path
    assert "X-Session-Transport" not in str(paths[f"{AUTH}/me"])


def test_kong_lets_the_transport_header_through() -> None:
    """Kong answers CORS preflights itself: without the header in its list, a browser behind
    Kong could never ask for the cookie transport."""
    from tests.support.kong import kong_config

    cors = {p["name"]: p["config"] for p in kong_config()["plugins"]}["cors"]
    assert "X-Session-Transport" in cors["headers"]
    assert cors["credentials"] is True
