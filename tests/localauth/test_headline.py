"""The issue's headline scenario, entirely through ``supabase.create_client``."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import supabase
from supabase import ClientOptions

from tests.localauth.conftest import PASSWORD, unique_email
from tests.support.localauth import LocalAuth


def _verify(la: LocalAuth, http: httpx.Client, token: str) -> dict[str, Any]:
    jwks = jwt.PyJWKSet.from_dict(http.get(la.url + "/auth/v1/.well-known/jwks.json").json())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["ES256"], audience="authenticated"
    )
    return claims


def test_admin_created_user_signs_in_refreshes_twice_reads_user_and_signs_out(
    server: LocalAuth, http: httpx.Client
) -> None:
    # An injected httpx client, so that every socket is closed when the suite ends.
    admin_client = supabase.create_client(
        server.url, server.service_role_key, ClientOptions(httpx_client=http)
    )
    email = unique_email()
    created = admin_client.auth.admin.create_user(
        {"email": email, "password": PASSWORD, "email_confirm": True}
    ).user
    assert created.email == email
    assert created.email_confirmed_at is not None

    client = supabase.create_client(
        server.url, server.anon_key, ClientOptions(auto_refresh_token=False, httpx_client=http)
    )
    signed_in = client.auth.sign_in_with_password({"email": email, "password": PASSWORD})
    assert signed_in.session is not None
    assert signed_in.user is not None
    assert signed_in.user.id == created.id
    first = signed_in.session
    claims = _verify(server, http, first.access_token)
    assert claims["sub"] == created.id
    assert claims["email"] == email
    assert claims["role"] == "authenticated"

    second = client.auth.refresh_session().session
    assert second is not None
    third = client.auth.refresh_session().session
    assert third is not None
    tokens = {first.refresh_token, second.refresh_token, third.refresh_token}
    assert len(tokens) == 3
    for session in (second, third):
        refreshed = _verify(server, http, session.access_token)
        assert refreshed["session_id"] == claims["session_id"]
        assert refreshed["sub"] == created.id

    me = client.auth.get_user()
    assert me is not None
    assert me.user.id == created.id
    assert client.auth.get_claims() is not None  # the SDK's own JWKS verification

    client.auth.sign_out()
    assert client.auth.get_session() is None
    after = httpx.get(
        server.url + "/auth/v1/user",
        headers={"Authorization": f"Bearer {third.access_token}"},
    )
    assert after.status_code == 403
    assert after.json()["error_code"] == "session_not_found"
