"""GET/PUT /user and requireAuthentication."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
from supabase_auth import SyncGoTrueAdminAPI, SyncGoTrueClient
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from tests.localauth.conftest import PASSWORD, ClientFactory, unique_email
from tests.support.localauth import LocalAuth


def _signed_in(server: LocalAuth, http: httpx.Client, email: str) -> SyncGoTrueClient:
    client = SyncGoTrueClient(
        url=server.url + "/auth/v1", headers={}, http_client=http, auto_refresh_token=False
    )
    client.sign_in_with_password({"email": email, "password": PASSWORD})
    return client


def test_get_user_returns_full_user(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    client = _signed_in(server, http, confirmed_user[1])
    response = client.get_user()
    assert response is not None
    user = response.user
    assert user.id == confirmed_user[0]
    assert user.aud == "authenticated"
    assert user.role == "authenticated"
    assert user.app_metadata == {"provider": "email", "providers": ["email"]}
    assert user.user_metadata == {}
    assert user.identities is not None
    assert user.identities[0].provider == "email"
    assert user.last_sign_in_at is not None
    assert user.is_anonymous is False


def test_signup_with_autoconfirm_returns_a_session_with_metadata(
    new_client: ClientFactory,
) -> None:
    email = unique_email()
    response = new_client().sign_up(
        {"email": email, "password": PASSWORD, "options": {"data": {"plan": "free"}}}
    )
    assert response.session is not None
    assert response.user is not None
    assert response.user.user_metadata == {"plan": "free"}
    assert response.user.email_confirmed_at is not None
    claims = jwt.decode(response.session.access_token, options={"verify_signature": False})
    assert claims["amr"][0]["method"] == "password"
    assert claims["user_metadata"] == {"plan": "free"}


def test_update_user_merges_metadata_and_null_deletes(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    client = _signed_in(server, http, confirmed_user[1])
    client.update_user({"data": {"a": 1, "b": 2}})
    user = client.update_user({"data": {"b": None, "c": 3}}).user
    assert user.user_metadata == {"a": 1, "c": 3}


def test_password_change_ends_other_sessions_and_same_password_is_refused(
    server: LocalAuth,
    http: httpx.Client,
    new_client: ClientFactory,
    confirmed_user: tuple[str, str],
) -> None:
    other = (
        new_client()
        .sign_in_with_password({"email": confirmed_user[1], "password": PASSWORD})
        .session
    )
    assert other is not None
    client = _signed_in(server, http, confirmed_user[1])
    with pytest.raises(AuthApiError) as same:
        client.update_user({"password": PASSWORD})
    assert (same.value.status, same.value.code) == (422, "same_password")
    with pytest.raises(AuthWeakPasswordError) as weak:
        client.update_user({"password": "123"})
    assert weak.value.reasons == ["length"]
    client.update_user({"password": "another-secret-9"})
    assert client.get_user() is not None  # the current session survives
    with pytest.raises(AuthApiError) as ended:
        new_client().get_user(other.access_token)
    assert ended.value.code == "session_not_found"
    session = (
        new_client()
        .sign_in_with_password({"email": confirmed_user[1], "password": "another-secret-9"})
        .session
    )
    assert session is not None


def test_email_change_to_taken_address_is_email_exists(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    client = _signed_in(server, http, confirmed_user[1])
    other = unique_email()
    SyncGoTrueAdminAPI(
        url=server.url + "/auth/v1",
        headers={"Authorization": f"Bearer {server.service_role_key}"},
        http_client=http,
    ).create_user({"email": other, "password": PASSWORD})
    with pytest.raises(AuthApiError) as taken:
        client.update_user({"email": other})
    assert (taken.value.status, taken.value.code) == (422, "email_exists")
    # With autoconfirm on (this server), an email change applies at once.
    fresh = unique_email()
    assert client.update_user({"email": fresh}).user.email == fresh


def test_app_metadata_needs_admin(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    client = _signed_in(server, http, confirmed_user[1])
    session = client.get_session()
    assert session is not None
    with pytest.raises(AuthApiError) as info:
        client._request("PUT", "user", jwt=session.access_token, body={"app_metadata": {"x": 1}})
    assert (info.value.status, info.value.code) == (403, "not_admin")


def _token(server: LocalAuth, claims: dict[str, object], *, secret: str | None = None) -> str:
    return jwt.encode(claims, secret or server.jwt_secret, algorithm="HS256")


def test_require_authentication_failures(
    server: LocalAuth,
    admin: SyncGoTrueAdminAPI,
    new_client: ClientFactory,
    confirmed_user: tuple[str, str],
) -> None:
    uid = confirmed_user[0]
    now = int(time.time())
    cases = {
        "forged": (_token(server, {"sub": uid}, secret="not-the-secret-" * 4), 403, "bad_jwt"),
        "expired": (_token(server, {"sub": uid, "exp": now - 10}), 403, "bad_jwt"),
        "garbage": ("not.a.jwt", 403, "bad_jwt"),
        "no_sub": (_token(server, {"role": "authenticated"}), 403, "bad_jwt"),
        "sub_not_uuid": (_token(server, {"sub": "nope"}), 400, "bad_jwt"),
        "unknown_user": (_token(server, {"sub": str(uuid.uuid4())}), 403, "user_not_found"),
        "unknown_session": (
            _token(server, {"sub": uid, "session_id": str(uuid.uuid4()), "aud": "authenticated"}),
            403,
            "session_not_found",
        ),
        "wrong_aud": (_token(server, {"sub": uid, "aud": "elsewhere"}), 400, "validation_failed"),
    }
    for name, (token, status, code) in cases.items():
        with pytest.raises(AuthApiError) as info:
            new_client().get_user(token)
        assert (info.value.status, info.value.code) == (status, code), name
    expired = cases["expired"][0]
    with pytest.raises(AuthApiError) as exp_info:
        new_client().get_user(expired)
    assert exp_info.value.message.endswith("token has invalid claims: token is expired")
    # A kid-less HS256 token without a session is a valid user token.
    ok = new_client().get_user(_token(server, {"sub": uid, "aud": "authenticated"}))
    assert ok is not None
    assert ok.user.id == uid


def test_banned_user_is_refused(
    admin: SyncGoTrueAdminAPI, new_client: ClientFactory, confirmed_user: tuple[str, str]
) -> None:
    session = (
        new_client()
        .sign_in_with_password({"email": confirmed_user[1], "password": PASSWORD})
        .session
    )
    assert session is not None
    banned = admin.update_user_by_id(confirmed_user[0], {"ban_duration": "876000h"}).user
    assert banned.banned_until is not None
    with pytest.raises(AuthApiError) as on_user:
        new_client().get_user(session.access_token)
    assert (on_user.value.status, on_user.value.code) == (403, "user_banned")
    with pytest.raises(AuthApiError) as on_login:
        new_client().sign_in_with_password({"email": confirmed_user[1], "password": PASSWORD})
    assert (on_login.value.status, on_login.value.code) == (400, "user_banned")
    admin.update_user_by_id(confirmed_user[0], {"ban_duration": "none"})
    assert new_client().get_user(session.access_token) is not None


def test_deleted_user_token_is_user_not_found(
    admin: SyncGoTrueAdminAPI, new_client: ClientFactory, confirmed_user: tuple[str, str]
) -> None:
    session = (
        new_client()
        .sign_in_with_password({"email": confirmed_user[1], "password": PASSWORD})
        .session
    )
    assert session is not None
    admin.delete_user(confirmed_user[0])
    with pytest.raises(AuthApiError) as info:
        new_client().get_user(session.access_token)
    # The session went with the user, and GoTrue looks the user up first.
    assert (info.value.status, info.value.code) == (403, "user_not_found")
