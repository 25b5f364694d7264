"""OAuth sign-in with PKCE through localauth's fake provider, as "Sign in with Google" runs:
authorize URL, the provider's consent, the redirect with ?code=, the callback exchange."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import new_email
from tests.integration.lifecycle.conftest import (
    AUTH,
    REDIRECT,
    LifecycleSettings,
    bearer,
    problem,
    seed,
)
from tests.support.localauth import LocalAuth

pytestmark = pytest.mark.anyio


async def provider_round_trip(url: str, email: str, decision: str = "approve") -> dict[str, str]:
    """What the browser does: open the URL, approve at the provider, land on redirect_to."""
    async with httpx.AsyncClient(timeout=5) as browser:
        first = await browser.get(url)
        assert first.status_code == 302, first.text
        consent_url = first.headers["location"]
        page = await browser.get(consent_url)
        assert page.status_code == 200
        assert "<form" in page.text
        state = parse_qs(urlsplit(consent_url).query)["state"][0]
        landed = await browser.post(
            consent_url,
            data={"state": state, "email": email, "name": "Ann Example", "decision": decision},
        )
    assert landed.status_code == 302, landed.text
    target = urlsplit(landed.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(target.query).items()}


async def test_sign_in_with_the_provider_creates_the_user_and_a_session(
    app: httpx.AsyncClient, second: httpx.AsyncClient
) -> None:
    email = new_email()
    started = await app.get(f"{AUTH}/oauth/fake/authorize", params={"redirect_to": REDIRECT})
    assert started.status_code == 200, started.text
    flow = started.json()
    query = parse_qs(urlsplit(flow["url"]).query)
    assert query["provider"] == ["fake"]
    assert query["code_challenge_method"] == ["s256"]
    assert "code_verifier" not in flow["url"]  # the verifier stays in this service

    landed = await provider_round_trip(flow["url"], email)
    session = await second.post(
        f"{AUTH}/oauth/callback", json={"flow_id": flow["flow_id"], "code": landed["code"]}
    )
    assert session.status_code == 200, session.text
    tokens = session.json()
    assert tokens["user"]["email"] == email
    assert "fake" in tokens["user"]["app_metadata"]["providers"]
    me = await app.get(f"{AUTH}/me", headers=bearer(tokens))
    assert me.json()["email"] == email
    replay = await app.post(
        f"{AUTH}/oauth/callback", json={"flow_id": flow["flow_id"], "code": landed["code"]}
    )
    assert problem(replay) == (401, "invalid_auth_code")


async def test_an_existing_account_signs_in_with_the_provider(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    uid, email = await seed(mailing_auth)
    flow = (await app.get(f"{AUTH}/oauth/fake/authorize")).json()
    # Without redirect_to Supabase sends the browser to its SITE_URL.
    async with httpx.AsyncClient(timeout=5) as browser:
        first = await browser.get(flow["url"])
        consent = first.headers["location"]
        state = parse_qs(urlsplit(consent).query)["state"][0]
        landed = await browser.post(consent, data={"state": state, "email": email})
    code = parse_qs(urlsplit(landed.headers["location"]).query)["code"][0]
    session = await app.post(
        f"{AUTH}/oauth/callback", json={"flow_id": flow["flow_id"], "code": code}
    )
    assert session.status_code == 200, session.text
    assert session.json()["user"]["id"] == uid


async def test_oauth_refusals(app: httpx.AsyncClient) -> None:
    assert problem(await app.get(f"{AUTH}/oauth/google/authorize")) == (
        404,
        "provider_not_enabled",
    )
    foreign = await app.get(
        f"{AUTH}/oauth/fake/authorize", params={"redirect_to": "https://evil.example/"}
    )
    assert problem(foreign) == (422, "validation_failed")
    unknown = await app.post(
        f"{AUTH}/oauth/callback", json={"flow_id": "x" * 32, "code": "whatever"}
    )
    assert problem(unknown) == (401, "invalid_auth_code")
    flow = (await app.get(f"{AUTH}/oauth/fake/authorize", params={"redirect_to": REDIRECT})).json()
    wrong = await app.post(
        f"{AUTH}/oauth/callback",
        json={"flow_id": flow["flow_id"], "code": "00000000-0000-4000-8000-000000000000"},
    )
    assert problem(wrong) == (401, "invalid_auth_code")
    assert problem(await app.post(f"{AUTH}/oauth/callback", json={"code": "x"})) == (
        422,
        "validation_failed",
    )


async def test_a_denied_consent_lands_with_an_error_and_no_code(app: httpx.AsyncClient) -> None:
    flow = (await app.get(f"{AUTH}/oauth/fake/authorize", params={"redirect_to": REDIRECT})).json()
    landed = await provider_round_trip(flow["url"], new_email(), decision="deny")
    assert landed["error"] == "access_denied"
    assert "code" not in landed


async def test_authorize_is_rate_limited(
    running_apps: object, lifecycle_settings: LifecycleSettings
) -> None:
    app = await running_apps(lifecycle_settings(rate_limits="oauth=2/60"))  # type: ignore[operator]
    codes = [(await app.get(f"{AUTH}/oauth/fake/authorize")).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
