"""OAuth 2.1 server client administration through the SDK's admin.oauth API."""

from __future__ import annotations

import uuid

import httpx
import pytest
from supabase_auth import SyncGoTrueAdminAPI
from supabase_auth.errors import AuthApiError
from supabase_auth.types import CreateOAuthClientParams, PageParams, UpdateOAuthClientParams

from tests.localauth.conftest import PASSWORD, async_admin_api, user_client
from tests.support.localauth import LocalAuth


def test_client_lifecycle(admin: SyncGoTrueAdminAPI) -> None:
    created = admin.oauth.create_client(
        CreateOAuthClientParams(
            client_name="Dashboard",
            redirect_uris=["https://app.example/callback", "http://localhost:3000/cb"],
            client_uri="https://app.example",
        )
    ).client
    assert created is not None
    assert created.client_type == "confidential"
    assert created.token_endpoint_auth_method == "client_secret_basic"
    assert created.registration_type == "manual"
    assert created.grant_types == ["authorization_code", "refresh_token"]
    assert created.response_types == ["code"]
    assert created.client_secret
    fetched = admin.oauth.get_client(created.client_id).client
    assert fetched is not None
    assert fetched.client_secret is None  # only on create and regenerate
    assert fetched.client_name == "Dashboard"

    listed = admin.oauth.list_clients(PageParams(page=1, per_page=50))
    assert created.client_id in [c.client_id for c in listed.clients]
    assert listed.clients[0].client_id == created.client_id  # newest first

    updated = admin.oauth.update_client(
        created.client_id,
        UpdateOAuthClientParams(client_name="Dashboard 2", grant_types=["authorization_code"]),
    ).client
    assert updated is not None
    assert updated.client_name == "Dashboard 2"
    assert updated.grant_types == ["authorization_code"]
    assert updated.redirect_uris == fetched.redirect_uris

    regenerated = admin.oauth.regenerate_client_secret(created.client_id).client
    assert regenerated is not None
    assert regenerated.client_secret
    assert regenerated.client_secret != created.client_secret

    admin.oauth.delete_client(created.client_id)
    with pytest.raises(AuthApiError) as gone:
        admin.oauth.get_client(created.client_id)
    assert (gone.value.status, str(gone.value.code)) == (404, "oauth_client_not_found")
    assert created.client_id not in [c.client_id for c in admin.oauth.list_clients().clients]


def test_public_clients_have_no_secret(admin: SyncGoTrueAdminAPI, http: httpx.Client) -> None:
    created = admin.oauth.create_client(
        CreateOAuthClientParams(client_name="CLI", redirect_uris=["http://127.0.0.1:8765/cb"])
    ).client
    assert created is not None
    public = http.post(
        admin._url + "/admin/oauth/clients",
        headers=admin._headers,
        json={"redirect_uris": ["https://x.example/cb"], "client_type": "public"},
    )
    assert public.status_code == 201
    body = public.json()
    assert "client_secret" not in body
    assert body["token_endpoint_auth_method"] == "none"
    with pytest.raises(AuthApiError) as refused:
        admin.oauth.regenerate_client_secret(body["client_id"])
    assert refused.value.message == "Cannot regenerate secret for public client"


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        ([], "redirect_uris is required"),
        (["http://example.com/cb"], "HTTP scheme only allowed for localhost"),
        (["https://example.com/cb#frag"], "fragment not allowed in redirect URI"),
        (["ftp://example.com/cb"], "scheme must be HTTPS or HTTP (localhost only)"),
    ],
)
def test_redirect_uris_are_validated(
    admin: SyncGoTrueAdminAPI, uris: list[str], message: str
) -> None:
    with pytest.raises(AuthApiError) as bad:
        admin.oauth.create_client(CreateOAuthClientParams(client_name="x", redirect_uris=uris))
    assert (bad.value.status, bad.value.code) == (400, "validation_failed")
    assert message in bad.value.message


def test_update_needs_a_field_and_unknown_clients_are_404(admin: SyncGoTrueAdminAPI) -> None:
    created = admin.oauth.create_client(
        CreateOAuthClientParams(client_name="y", redirect_uris=["https://y.example/cb"])
    ).client
    assert created is not None
    with pytest.raises(AuthApiError) as empty:
        admin.oauth.update_client(created.client_id, UpdateOAuthClientParams())
    assert empty.value.message == "No fields provided for update"
    with pytest.raises(AuthApiError) as unknown:
        admin.oauth.update_client(str(uuid.uuid4()), UpdateOAuthClientParams(client_name="z"))
    assert str(unknown.value.code) == "oauth_client_not_found"


def test_oauth_admin_needs_an_admin(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    client = user_client(server, http)
    session = client.sign_in_with_password(
        {"email": confirmed_user[1], "password": PASSWORD}
    ).session
    assert session is not None
    response = http.get(
        server.url + "/auth/v1/admin/oauth/clients",
        headers={"Authorization": f"Bearer {session.access_token}"},
    )
    assert (response.status_code, response.json()["error_code"]) == (403, "not_admin")


@pytest.mark.anyio
async def test_async_admin_oauth(server: LocalAuth) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        admin = async_admin_api(server, http)
        created = (
            await admin.oauth.create_client(
                CreateOAuthClientParams(client_name="async", redirect_uris=["https://a.example/cb"])
            )
        ).client
        assert created is not None
        got = (await admin.oauth.get_client(created.client_id)).client
        assert got is not None
        assert got.client_name == "async"
        assert (await admin.oauth.regenerate_client_secret(created.client_id)).client
        updated = (
            await admin.oauth.update_client(
                created.client_id, UpdateOAuthClientParams(logo_uri="https://a.example/logo.png")
            )
        ).client
        assert updated is not None
        assert updated.logo_uri == "https://a.example/logo.png"
        listed = await admin.oauth.list_clients()
        assert created.client_id in [c.client_id for c in listed.clients]
        await admin.oauth.delete_client(created.client_id)
        with pytest.raises(AuthApiError):
            await admin.oauth.get_client(created.client_id)
