"""The admin API through SyncGoTrueAdminAPI."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import httpx
import pytest
from supabase_auth import SyncGoTrueAdminAPI
from supabase_auth.errors import AuthApiError, AuthWeakPasswordError

from tests.localauth.conftest import PASSWORD, ClientFactory, unique_email
from tests.support.localauth import LocalAuth


def test_create_user_shapes_and_defaults(admin: SyncGoTrueAdminAPI) -> None:
    email = unique_email()
    user = admin.create_user(
        {
            "email": email,
            "password": "1",  # admin create runs no strength check
            "email_confirm": True,
            "user_metadata": {"name": "Ada"},
            "app_metadata": {"tier": "gold"},
        }
    ).user
    assert user.email == email
    assert user.role == "authenticated"
    assert user.app_metadata == {"provider": "email", "providers": ["email"], "tier": "gold"}
    assert user.user_metadata == {"name": "Ada"}
    assert user.identities is not None
    assert len(user.identities) == 1
    identity = user.identities[0]
    assert identity.user_id == user.id
    assert identity.identity_data["email_verified"] is True


def test_create_user_without_email_or_with_bad_email(admin: SyncGoTrueAdminAPI) -> None:
    for attrs in ({"password": PASSWORD}, {"email": "not-an-email"}):
        with pytest.raises(AuthApiError) as info:
            admin.create_user(attrs)  # type: ignore[arg-type]
        assert (info.value.status, info.value.code) == (400, "validation_failed")


def test_list_users_newest_first_with_empty_page_params(
    server: LocalAuth, http: httpx.Client, admin: SyncGoTrueAdminAPI
) -> None:
    email = unique_email()
    created = admin.create_user({"email": email}).user
    users = admin.list_users()  # sends ?page=&per_page=
    assert users[0].id == created.id
    assert len(admin.list_users(page=1, per_page=1)) == 1
    raw = http.get(
        server.url + "/admin/users?page=abc",
        headers={"Authorization": f"Bearer {server.service_role_key}"},
    )
    assert (raw.status_code, raw.json()["error_code"]) == (400, "validation_failed")
    ok = http.get(
        server.url + "/admin/users?per_page=2",
        headers={"Authorization": f"Bearer {server.service_role_key}"},
    )
    assert int(ok.headers["x-total-count"]) >= 1
    assert 'rel="last"' in ok.headers["link"]
    assert ok.json()["aud"] == "authenticated"


def test_get_update_delete_by_id(admin: SyncGoTrueAdminAPI, new_client: ClientFactory) -> None:
    email = unique_email()
    created = admin.create_user({"email": email, "password": PASSWORD}).user
    assert admin.get_user_by_id(created.id).user.email == email
    updated = admin.update_user_by_id(
        created.id,
        {"email_confirm": True, "user_metadata": {"a": 1}, "app_metadata": {"x": 1}},
    ).user
    assert updated.email_confirmed_at is not None
    assert updated.app_metadata["x"] == 1
    assert updated.user_metadata == {"a": 1}
    updated = admin.update_user_by_id(
        created.id, {"user_metadata": {"a": None, "b": 2}, "app_metadata": {"x": None}}
    ).user
    assert updated.user_metadata == {"b": 2}
    assert "x" not in updated.app_metadata
    session = new_client().sign_in_with_password({"email": email, "password": PASSWORD}).session
    assert session is not None
    with pytest.raises(AuthWeakPasswordError):
        admin.update_user_by_id(created.id, {"password": "abc"})
    admin.update_user_by_id(created.id, {"password": "brand-new-pass"})
    with pytest.raises(AuthApiError) as ended:
        new_client().get_user(session.access_token)
    assert ended.value.code == "session_not_found"  # admin password change ends all sessions
    admin.delete_user(created.id)
    with pytest.raises(AuthApiError) as gone:
        admin.get_user_by_id(created.id)
    assert (gone.value.status, gone.value.code) == (404, "user_not_found")
    with pytest.raises(AuthApiError) as again:
        admin.delete_user(created.id)
    assert (again.value.status, again.value.code) == (404, "user_not_found")
    with pytest.raises(AuthApiError) as update_gone:
        admin.update_user_by_id(created.id, {"user_metadata": {}})
    assert update_gone.value.code == "user_not_found"


def test_soft_delete_keeps_a_tombstone(
    admin: SyncGoTrueAdminAPI, new_client: ClientFactory
) -> None:
    email = unique_email()
    created = admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True}).user
    admin.delete_user(created.id, should_soft_delete=True)
    assert admin.get_user_by_id(created.id).user.deleted_at is not None
    with pytest.raises(AuthApiError) as info:
        new_client().sign_in_with_password({"email": email, "password": PASSWORD})
    assert info.value.code == "invalid_credentials"


def test_non_uuid_ids_are_refused_by_client_and_server(
    server: LocalAuth, http: httpx.Client, admin: SyncGoTrueAdminAPI
) -> None:
    with pytest.raises(ValueError, match="not a valid uuid"):
        admin.get_user_by_id("not-a-uuid")
    for method in ("GET", "PUT", "DELETE"):
        raw = http.request(
            method,
            server.url + "/auth/v1/admin/users/not-a-uuid",
            headers={"Authorization": f"Bearer {server.service_role_key}"},
            json={},
        )
        assert (raw.status_code, raw.json()["error_code"]) == (404, "validation_failed")
    with pytest.raises(AuthApiError) as missing:
        admin.get_user_by_id(str(uuid.uuid4()))
    assert (missing.value.status, missing.value.code) == (404, "user_not_found")


def test_generate_link_types(admin: SyncGoTrueAdminAPI, confirmed_user: tuple[str, str]) -> None:
    email = unique_email()
    signup = admin.generate_link({"type": "signup", "email": email, "password": PASSWORD})
    props = signup.properties
    assert props.verification_type == "signup"
    assert len(props.email_otp) == 6
    assert props.hashed_token == hashlib.sha224((email + props.email_otp).encode()).hexdigest()
    assert f"token={props.hashed_token}" in props.action_link
    assert signup.user.email == email
    assert signup.user.email_confirmed_at is None
    recovery = admin.generate_link({"type": "recovery", "email": confirmed_user[1]})
    assert recovery.properties.verification_type == "recovery"
    assert recovery.user.id == confirmed_user[0]
    magic = admin.generate_link({"type": "magiclink", "email": unique_email()})
    assert magic.properties.verification_type == "signup"
    change = admin.generate_link(
        {"type": "email_change_new", "email": confirmed_user[1], "new_email": unique_email()}
    )
    assert change.user.new_email is not None
    with pytest.raises(AuthApiError) as dup:
        admin.generate_link({"type": "signup", "email": confirmed_user[1], "password": PASSWORD})
    assert (dup.value.status, dup.value.code) == (422, "email_exists")
    with pytest.raises(AuthApiError) as unknown:
        admin.generate_link({"type": "recovery", "email": unique_email()})
    assert (unknown.value.status, unknown.value.code) == (404, "user_not_found")
    bogus: Any = {"type": "bogus", "email": unique_email()}
    with pytest.raises(AuthApiError) as bad_type:
        admin.generate_link(bogus)
    assert (bad_type.value.status, bad_type.value.code) == (400, "validation_failed")


def test_kidless_hs256_admin_token_works(server: LocalAuth, http: httpx.Client) -> None:
    import jwt

    token = jwt.encode({"role": "service_role"}, server.jwt_secret, algorithm="HS256")
    api = SyncGoTrueAdminAPI(
        url=server.url + "/auth/v1", headers={"Authorization": f"Bearer {token}"}, http_client=http
    )
    assert isinstance(api.list_users(), list)
    forged = jwt.encode({"role": "service_role"}, "x" * 64, algorithm="HS256")
    bad = SyncGoTrueAdminAPI(
        url=server.url + "/auth/v1", headers={"Authorization": f"Bearer {forged}"}, http_client=http
    )
    with pytest.raises(AuthApiError) as info:
        bad.list_users()
    assert (info.value.status, info.value.code) == (403, "bad_jwt")
