"""The rest of the SDK's surface: SSO with SAML off, ID tokens, identity linking, OAuth URLs,
session plumbing, strict JSON, and the async client's mail flows."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from supabase_auth import AsyncGoTrueClient, SyncGoTrueClient
from supabase_auth.errors import AuthApiError

from tests.localauth.conftest import (
    PASSWORD,
    admin_api,
    async_admin_api,
    async_user_client,
    last_mail,
    unique_email,
    user_client,
)
from tests.support.localauth import LocalAuth


def _signed_in(la: LocalAuth, http: httpx.Client, email: str) -> SyncGoTrueClient:
    client = user_client(la, http)
    client.sign_in_with_password({"email": email, "password": PASSWORD})
    return client


def test_sso_with_saml_off(server: LocalAuth, http: httpx.Client) -> None:
    client = user_client(server, http)
    for credentials in (
        {"domain": "example.com"},
        {"provider_id": "8a3b5a2c-0000-4000-8000-000000000000"},
    ):
        with pytest.raises(AuthApiError) as off:
            client.sign_in_with_sso(credentials)  # type: ignore[arg-type]
        assert (off.value.status, off.value.code) == (404, "saml_provider_disabled")
        assert off.value.message == "SAML 2.0 is disabled"


def test_id_token_sign_in_with_no_provider_enabled(server: LocalAuth, http: httpx.Client) -> None:
    client = user_client(server, http)
    with pytest.raises(AuthApiError) as google:
        client.sign_in_with_id_token({"provider": "google", "token": "eyJ.x.y"})
    assert (google.value.status, google.value.code) == (400, "provider_disabled")
    assert google.value.message == 'Provider (issuer "https://accounts.google.com") is not enabled'
    with pytest.raises(AuthApiError) as other:
        client.sign_in_with_id_token({"provider": "myidp", "token": "eyJ.x.y"})  # type: ignore[typeddict-item]
    assert other.value.code == "validation_failed"


def test_identity_linking_is_off_and_identities_are_listed(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    client = _signed_in(server, http, confirmed_user[1])
    identities = client.get_user_identities().identities
    assert [i.provider for i in identities] == ["email"]
    with pytest.raises(AuthApiError) as link:
        client.link_identity({"provider": "github"})
    assert (link.value.status, link.value.code) == (404, "manual_linking_disabled")
    with pytest.raises(AuthApiError) as unlink:
        client.unlink_identity(identities[0])
    assert unlink.value.code == "manual_linking_disabled"
    assert client.get_user() is not None  # still signed in


def test_oauth_url_is_built_client_side(server: LocalAuth, http: httpx.Client) -> None:
    response = user_client(server, http).sign_in_with_oauth(
        {"provider": "github", "options": {"redirect_to": "http://localhost:3000/cb"}}
    )
    parts = urlsplit(response.url)
    assert parts.path.endswith("/auth/v1/authorize")
    assert parse_qs(parts.query)["provider"] == ["github"]
    # following it: no provider is enabled here
    followed = http.get(response.url)
    assert (followed.status_code, followed.json()["error_code"]) == (400, "validation_failed")
    assert followed.json()["msg"] == "Unsupported provider: provider is not enabled"


def test_set_session_and_initialize_from_storage(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    session = _signed_in(server, http, confirmed_user[1]).get_session()
    assert session is not None
    other = user_client(server, http)
    restored = other.set_session(session.access_token, session.refresh_token)
    assert restored.user is not None
    assert restored.user.id == confirmed_user[0]
    # a persisted client picks its session up from storage on initialize()
    persisted = SyncGoTrueClient(
        url=server.url + "/auth/v1", http_client=http, auto_refresh_token=False
    )
    persisted._storage.set_item(persisted._storage_key, session.model_dump_json())
    persisted.initialize()
    again = persisted.get_session()
    assert again is not None
    assert again.user.id == confirmed_user[0]
    persisted.initialize_from_storage()
    assert persisted.get_user() is not None


def test_reset_password_email_alias(mail_server: LocalAuth, http: httpx.Client) -> None:
    email = unique_email()
    admin_api(mail_server, http).create_user(
        {"email": email, "password": PASSWORD, "email_confirm": True}
    )
    user_client(mail_server, http).reset_password_email(email)
    assert last_mail(mail_server, http, email, "recovery")["otp"]


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_bad_json_and_never_stored(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str], bad: str
) -> None:
    client = _signed_in(server, http, confirmed_user[1])
    session = client.get_session()
    assert session is not None
    response = http.put(
        server.url + "/auth/v1/user",
        content=f'{{"data": {{"score": {bad}}}}}',
        headers={
            "Authorization": f"Bearer {session.access_token}",
            "Content-Type": "application/json",
            "X-Supabase-Api-Version": "2024-01-01",
        },
    )
    assert response.status_code == 400
    assert response.json()["code"] == "bad_json"
    user = client.get_user()
    assert user is not None
    assert "score" not in user.user.user_metadata
    signup = http.post(server.url + "/signup", content=f'{{"email": "x@example.com", "n": {bad}}}')
    assert (signup.status_code, signup.json()["error_code"]) == (400, "bad_json")


@pytest.mark.anyio
async def test_async_client_mail_flows(mail_server: LocalAuth, http: httpx.Client) -> None:
    sync_http = http  # reads the mailbox
    async with httpx.AsyncClient(timeout=10.0) as ahttp:
        email = unique_email()
        client = async_user_client(mail_server, ahttp)
        signed_up = await client.sign_up({"email": email, "password": PASSWORD})
        assert signed_up.session is None
        code = last_mail(mail_server, sync_http, email, "signup")["otp"]
        verified = await client.verify_otp({"email": email, "token": code, "type": "signup"})
        assert verified.session is not None
        await client.resend({"type": "signup", "email": email})  # confirmed: nothing to resend
        await client.sign_in_with_otp({"email": email})
        magic = last_mail(mail_server, sync_http, email, "magiclink")["otp"]
        assert (await client.verify_otp({"email": email, "token": magic, "type": "email"})).session
        await client.reauthenticate()
        nonce = last_mail(mail_server, sync_http, email, "reauthentication")["otp"]
        await client.update_user({"password": "async-new-pass-1", "nonce": nonce})
        await client.reset_password_for_email(email)
        recovery = last_mail(mail_server, sync_http, email, "recovery")["otp"]
        assert (
            await client.verify_otp({"email": email, "token": recovery, "type": "recovery"})
        ).session
        assert (await client.get_user_identities()).identities
        with pytest.raises(AuthApiError) as sso:
            await client.sign_in_with_sso({"domain": "example.com"})
        assert sso.value.code == "saml_provider_disabled"
        with pytest.raises(AuthApiError) as link:
            await client.link_identity({"provider": "github"})
        assert link.value.code == "manual_linking_disabled"
        with pytest.raises(AuthApiError) as id_token:
            await client.sign_in_with_id_token({"provider": "google", "token": "x"})
        assert id_token.value.code == "provider_disabled"
        await client.sign_out()

        # PKCE with the async client
        pkce = AsyncGoTrueClient(
            url=mail_server.url + "/auth/v1",
            http_client=ahttp,
            flow_type="pkce",
            auto_refresh_token=False,
        )
        other = unique_email()
        await pkce.sign_up({"email": other, "password": PASSWORD})
        link_url = last_mail(mail_server, sync_http, other, "signup")["link"]
        redirect = sync_http.get(link_url, follow_redirects=False).headers["location"]
        (auth_code,) = parse_qs(urlsplit(redirect).query)["code"]
        exchanged = await pkce.exchange_code_for_session({"auth_code": auth_code})
        assert exchanged.session is not None

        # an implicit-flow link finished by the async client, and the alias for recovery
        third = unique_email()
        await client.sign_up({"email": third, "password": PASSWORD})
        location = sync_http.get(
            last_mail(mail_server, sync_http, third, "signup")["link"], follow_redirects=False
        ).headers["location"]
        browser = async_user_client(mail_server, ahttp)
        await browser.initialize_from_url(location)
        restored = await browser.get_session()
        assert restored is not None
        assert restored.user.email == third
        await browser.reset_password_email(third)
        assert last_mail(mail_server, sync_http, third, "recovery")["otp"]
        persisted = AsyncGoTrueClient(
            url=mail_server.url + "/auth/v1", http_client=ahttp, auto_refresh_token=False
        )
        await persisted._storage.set_item(persisted._storage_key, restored.model_dump_json())
        await persisted.initialize()
        assert await persisted.get_user() is not None

        admin = async_admin_api(mail_server, ahttp)
        invited_email = unique_email()
        invited = await admin.invite_user_by_email(invited_email)
        assert invited.user.invited_at is not None
        invite_code = last_mail(mail_server, sync_http, invited_email, "invite")["otp"]
        assert (
            await client.verify_otp(
                {"email": invited_email, "token": invite_code, "type": "invite"}
            )
        ).session
        generated = await admin.generate_link({"type": "recovery", "email": invited_email})
        done = await client.verify_otp(
            {"token_hash": generated.properties.hashed_token, "type": "recovery"}
        )
        assert done.session is not None


@pytest.mark.anyio
async def test_async_client_and_admin_core_surface(server: LocalAuth) -> None:
    async with httpx.AsyncClient(timeout=10.0) as ahttp:
        admin = async_admin_api(server, ahttp)
        email = unique_email()
        created = await admin.create_user(
            {"email": email, "password": PASSWORD, "email_confirm": True}
        )
        uid = created.user.id
        assert (await admin.get_user_by_id(uid)).user.email == email
        assert uid in [u.id for u in await admin.list_users(page=1, per_page=50)]
        updated = await admin.update_user_by_id(uid, {"user_metadata": {"tier": "gold"}})
        assert updated.user.user_metadata == {"tier": "gold"}

        client = async_user_client(server, ahttp)
        events: list[str] = []
        client.on_auth_state_change(lambda event, _s: events.append(event))
        signed_in = await client.sign_in_with_password({"email": email, "password": PASSWORD})
        assert signed_in.session is not None
        assert events == ["SIGNED_IN"]
        user = await client.get_user()
        assert user is not None
        assert user.user.id == uid
        session = await client.get_session()
        assert session is not None
        claims = await client.get_claims()  # ES256: verified against the JWKS
        assert claims is not None
        assert claims["claims"]["sub"] == uid
        refreshed = await client.refresh_session()
        assert refreshed.session is not None
        assert refreshed.session.refresh_token != session.refresh_token
        other = async_user_client(server, ahttp)
        restored = await other.set_session(
            refreshed.session.access_token, refreshed.session.refresh_token
        )
        assert restored.user is not None
        identities = (await client.get_user_identities()).identities
        with pytest.raises(AuthApiError) as unlink:
            await client.unlink_identity(identities[0])
        assert unlink.value.code == "manual_linking_disabled"
        oauth = await client.sign_in_with_oauth({"provider": "github"})
        assert "provider=github" in oauth.url
        with pytest.raises(AuthApiError) as anonymous:
            await client.sign_in_anonymously()
        assert anonymous.value.code == "anonymous_provider_disabled"

        await admin.sign_out(refreshed.session.access_token, "global")
        with pytest.raises(AuthApiError) as gone:
            await client.get_user(refreshed.session.access_token)
        assert gone.value.code == "session_not_found"
        await admin.delete_user(uid)
        with pytest.raises(AuthApiError) as deleted:
            await admin.get_user_by_id(uid)
        assert deleted.value.code == "user_not_found"


@pytest.mark.anyio
async def test_async_admin_deletes_a_factor(server: LocalAuth) -> None:
    async with httpx.AsyncClient(timeout=10.0) as ahttp:
        admin = async_admin_api(server, ahttp)
        email = unique_email()
        uid = (
            await admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True})
        ).user.id
        client = async_user_client(server, ahttp)
        await client.sign_in_with_password({"email": email, "password": PASSWORD})
        enrolled = await client.mfa.enroll({"factor_type": "totp"})
        deleted = await admin.mfa.delete_factor({"user_id": uid, "id": enrolled.id})
        assert deleted.id == enrolled.id
        assert await admin.mfa.list_factors({"user_id": uid}) == []
