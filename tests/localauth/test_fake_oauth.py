"""The fake OAuth provider (GOTRUE_EXTERNAL_FAKE_ENABLED): the real SDK's PKCE and implicit
OAuth flows end as GoTrue's external provider flow ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from supabase_auth import SyncGoTrueClient
from supabase_auth.errors import AuthApiError

from tests.localauth.conftest import assert_clean_log, unique_email, user_client
from tests.support.localauth import LocalAuth, run_localauth

CALLBACK = "http://localhost:3000/cb"


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalAuth, Path]]:
    tmp = tmp_path_factory.mktemp("localauth-fake-oauth")
    with run_localauth(tmp, env={"GOTRUE_EXTERNAL_FAKE_ENABLED": "true"}) as la:
        yield la, tmp
    assert_clean_log(tmp, la.port)


def approve(http: httpx.Client, url: str, email: str) -> str:
    """Open the authorize URL, approve on the consent page; the final redirect target."""
    first = http.get(url)
    assert first.status_code == 302
    consent = first.headers["location"]
    assert "/fake-oauth/consent" in consent
    page = http.get(consent)
    assert page.status_code == 200
    assert 'name="state"' in page.text
    state = parse_qs(urlsplit(consent).query)["state"][0]
    landed = http.post(consent, data={"state": state, "email": email, "name": "Ann"})
    assert landed.status_code == 302
    return landed.headers["location"]


def authorize_url(client: SyncGoTrueClient) -> str:
    """What ``sign_in_with_oauth`` builds (its PKCE verifier kept in the client's storage);
    its response model only admits GoTrue's provider names, so the builder is called."""
    url, _ = client._get_url_for_provider(
        f"{client._url}/authorize",
        "fake",  # type: ignore[arg-type]
        {"redirect_to": CALLBACK},
    )
    return url


def pkce_client(la: LocalAuth, http: httpx.Client) -> SyncGoTrueClient:
    return SyncGoTrueClient(
        url=la.url + "/auth/v1",
        headers={"apikey": la.anon_key, "Authorization": f"Bearer {la.anon_key}"},
        auto_refresh_token=False,
        http_client=http,
        flow_type="pkce",
    )


def test_pkce_sign_in_through_the_sdk(
    fake_server: tuple[LocalAuth, Path], http: httpx.Client
) -> None:
    la, _ = fake_server
    client = pkce_client(la, http)
    email = unique_email()
    target = approve(http, authorize_url(client), email)
    assert target.startswith(CALLBACK + "?code=")
    code = parse_qs(urlsplit(target).query)["code"][0]
    session = client.exchange_code_for_session({"auth_code": code})
    assert session.user is not None
    assert session.user.email == email
    assert session.user.app_metadata["providers"] == ["email", "fake"]
    assert {i.provider for i in session.user.identities or []} == {"email", "fake"}
    # The code is single use.
    with pytest.raises(AuthApiError) as again:
        pkce_client(la, http).exchange_code_for_session(
            {"auth_code": code, "code_verifier": "x" * 50}
        )
    assert again.value.code == "flow_state_not_found"


def test_implicit_sign_in_lands_with_the_session_in_the_fragment(
    fake_server: tuple[LocalAuth, Path], http: httpx.Client
) -> None:
    la, _ = fake_server
    target = urlsplit(approve(http, authorize_url(user_client(la, http)), unique_email()))
    fragment = parse_qs(target.fragment)
    assert fragment["token_type"] == ["bearer"]
    user = user_client(la, http).get_user(fragment["access_token"][0])
    assert user is not None


def test_deny_unknown_state_and_disabled_by_default(
    fake_server: tuple[LocalAuth, Path], server: LocalAuth, http: httpx.Client
) -> None:
    la, _ = fake_server
    consent = http.get(authorize_url(pkce_client(la, http))).headers["location"]
    state = parse_qs(urlsplit(consent).query)["state"][0]
    denied = http.post(consent, data={"state": state, "decision": "deny"})
    assert parse_qs(urlsplit(denied.headers["location"]).query)["error"] == ["access_denied"]
    replay = http.post(consent, data={"state": state, "email": unique_email()})
    assert (replay.status_code, replay.json()["error_code"]) == (400, "validation_failed")
    # Without the flag the provider does not exist, as in GoTrue.
    off = http.get(f"{server.url}/auth/v1/authorize", params={"provider": "fake"})
    assert off.status_code == 400
    assert off.json()["msg"] == "Unsupported provider: Provider fake could not be found"
