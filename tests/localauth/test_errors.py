"""Every row of the wire spec's error-mapping table, as the real SDK raises it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from supabase_auth import SyncGoTrueAdminAPI, SyncGoTrueClient
from supabase_auth.errors import (
    AuthApiError,
    AuthInvalidCredentialsError,
    AuthRetryableError,
    AuthSessionMissingError,
    AuthUnknownError,
    AuthWeakPasswordError,
)

from tests.localauth.conftest import PASSWORD, ClientFactory, unique_email, user_client
from tests.support.localauth import LocalAuth, free_port, run_localauth


def test_wrong_password_is_api_error_invalid_credentials(
    new_client: ClientFactory, confirmed_user: tuple[str, str]
) -> None:
    _, email = confirmed_user
    with pytest.raises(AuthApiError) as info:
        new_client().sign_in_with_password({"email": email, "password": "wrong-password"})
    assert (info.value.status, info.value.code) == (400, "invalid_credentials")
    assert info.value.message == "Invalid login credentials"


def test_unknown_user_is_invalid_credentials(new_client: ClientFactory) -> None:
    with pytest.raises(AuthApiError) as info:
        new_client().sign_in_with_password({"email": unique_email(), "password": PASSWORD})
    assert (info.value.status, info.value.code) == (400, "invalid_credentials")


def test_unconfirmed_user_gets_email_not_confirmed(
    admin: SyncGoTrueAdminAPI, new_client: ClientFactory
) -> None:
    email = unique_email()
    admin.create_user({"email": email, "password": PASSWORD})
    with pytest.raises(AuthApiError) as info:
        new_client().sign_in_with_password({"email": email, "password": PASSWORD})
    assert (info.value.status, info.value.code) == (400, "email_not_confirmed")
    # The password is checked before confirmation, as in GoTrue.
    with pytest.raises(AuthApiError) as wrong:
        new_client().sign_in_with_password({"email": email, "password": "nope-nope-1"})
    assert wrong.value.code == "invalid_credentials"


def test_weak_password_on_signup_carries_reasons(new_client: ClientFactory) -> None:
    with pytest.raises(AuthWeakPasswordError) as info:
        new_client().sign_up({"email": unique_email(), "password": "abc"})
    assert (info.value.status, info.value.code) == (422, "weak_password")
    assert info.value.reasons == ["length"]
    assert info.value.message == "Password should be at least 6 characters."


def test_empty_and_overlong_passwords_are_validation_failed(new_client: ClientFactory) -> None:
    for password in ("", "x" * 73):
        with pytest.raises(AuthApiError) as info:
            new_client()._request(
                "POST", "signup", body={"email": unique_email(), "password": password}
            )
        assert (info.value.status, info.value.code) == (400, "validation_failed")


def test_client_side_errors_need_no_server(new_client: ClientFactory) -> None:
    client = new_client()
    with pytest.raises(AuthInvalidCredentialsError):
        client.sign_in_with_password({"email": "", "password": ""})
    with pytest.raises(AuthSessionMissingError):
        client.update_user({"data": {"a": 1}})
    with pytest.raises(AuthSessionMissingError):
        client.refresh_session()


def test_signup_of_registered_address_with_autoconfirm_is_user_already_exists(
    new_client: ClientFactory, confirmed_user: tuple[str, str]
) -> None:
    _, email = confirmed_user
    with pytest.raises(AuthApiError) as info:
        new_client().sign_up({"email": email, "password": PASSWORD})
    assert (info.value.status, info.value.code) == (422, "user_already_exists")
    assert info.value.message == "User already registered"


def test_admin_create_duplicate_is_email_exists(
    admin: SyncGoTrueAdminAPI, confirmed_user: tuple[str, str]
) -> None:
    _, email = confirmed_user
    with pytest.raises(AuthApiError) as info:
        admin.create_user({"email": email.upper(), "password": PASSWORD})
    assert (info.value.status, info.value.code) == (422, "email_exists")


def test_non_admin_token_is_not_admin(server: LocalAuth, http: httpx.Client) -> None:
    anon = SyncGoTrueAdminAPI(
        url=server.url + "/auth/v1",
        headers={"Authorization": f"Bearer {server.anon_key}"},
        http_client=http,
    )
    with pytest.raises(AuthApiError) as info:
        anon.list_users()
    assert (info.value.status, info.value.code) == (403, "not_admin")
    assert info.value.message == "User not allowed"


def test_missing_bearer_is_no_authorization(server: LocalAuth, http: httpx.Client) -> None:
    bare = SyncGoTrueAdminAPI(url=server.url + "/auth/v1", headers={}, http_client=http)
    with pytest.raises(AuthApiError) as info:
        bare.list_users()
    assert (info.value.status, info.value.code) == (401, "no_authorization")
    with pytest.raises(AuthApiError) as user_info:
        bare._request("GET", "user")
    assert (user_info.value.status, user_info.value.code) == (401, "no_authorization")


def test_server_down_is_retryable(tmp_path: Path) -> None:
    with httpx.Client(timeout=2.0) as http:
        dead = LocalAuth(
            url=f"http://127.0.0.1:{free_port()}",
            anon_key="x",
            service_role_key="x",
            jwt_secret="x",
            db_path=tmp_path / "none",
            pid=0,
            port=0,
        )
        with pytest.raises(AuthRetryableError) as info:
            user_client(dead, http).sign_in_with_password(
                {"email": unique_email(), "password": PASSWORD}
            )
    assert (info.value.status, info.value.code) == (0, None)


def test_plain_text_404_is_unknown_error(server: LocalAuth, http: httpx.Client) -> None:
    wrong_base = SyncGoTrueClient(
        url=server.url + "/no-such-prefix", headers={}, http_client=http, persist_session=False
    )
    with pytest.raises(AuthUnknownError) as info:
        wrong_base.sign_in_with_password({"email": unique_email(), "password": PASSWORD})
    assert isinstance(info.value.original_error, ValueError)  # the body is not JSON
    raw = http.post(server.url + "/no-such-prefix/token")
    assert (raw.status_code, raw.text) == (404, "404 page not found\n")
    assert raw.headers["content-type"].startswith("text/plain")


def test_legacy_envelope_without_version_header(server: LocalAuth, http: httpx.Client) -> None:
    response = http.post(
        server.url + "/token?grant_type=password",
        json={"email": unique_email(), "password": PASSWORD},
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": 400,
        "error_code": "invalid_credentials",
        "msg": "Invalid login credentials",
    }
    assert response.headers["x-sb-error-code"] == "invalid_credentials"
    assert "x-supabase-api-version" not in response.headers


def test_2024_envelope_echoes_the_version_header(server: LocalAuth, http: httpx.Client) -> None:
    response = http.post(
        server.url + "/auth/v1/token?grant_type=password",
        json={"email": unique_email(), "password": PASSWORD},
        headers={"X-Supabase-Api-Version": "2024-01-01"},
    )
    assert response.json() == {
        "code": "invalid_credentials",
        "message": "Invalid login credentials",
    }
    assert response.headers["x-supabase-api-version"] == "2024-01-01"
    assert response.headers["x-sb-error-code"] == "invalid_credentials"


def test_legacy_weak_password_envelope(server: LocalAuth, http: httpx.Client) -> None:
    response = http.post(server.url + "/signup", json={"email": unique_email(), "password": "a"})
    body = response.json()
    assert response.status_code == 422
    assert body["error_code"] == "weak_password"
    assert body["weak_password"] == {"reasons": ["length"]}
    modern = http.post(
        server.url + "/signup",
        json={"email": unique_email(), "password": "a"},
        headers={"X-Supabase-Api-Version": "2024-01-01"},
    )
    assert modern.json()["weak_password"] == {"reasons": ["length"]}
    assert "x-sb-error-code" not in modern.headers


def test_sdk_with_an_older_api_version_reads_error_code(
    server: LocalAuth, http: httpx.Client
) -> None:
    old = SyncGoTrueClient(
        url=server.url + "/auth/v1",
        headers={"X-Supabase-Api-Version": "2023-06-01"},
        http_client=http,
        persist_session=False,
        auto_refresh_token=False,
    )
    with pytest.raises(AuthApiError) as info:
        old.sign_in_with_password({"email": unique_email(), "password": PASSWORD})
    assert (info.value.status, info.value.code) == (400, "invalid_credentials")


def test_unsupported_grant_type(new_client: ClientFactory) -> None:
    with pytest.raises(AuthApiError) as info:
        new_client()._request("POST", "token", query=httpx.QueryParams(grant_type="magic"))
    assert (info.value.status, info.value.code) == (400, "invalid_credentials")
    assert info.value.message == "unsupported_grant_type"


def test_verify_is_otp_expired(new_client: ClientFactory) -> None:
    with pytest.raises(AuthApiError) as info:
        new_client().verify_otp({"email": unique_email(), "token": "123456", "type": "email"})
    assert (info.value.status, info.value.code) == (403, "otp_expired")


def test_anonymous_signup_disabled(new_client: ClientFactory) -> None:
    with pytest.raises(AuthApiError) as info:
        new_client().sign_in_anonymously()
    assert (info.value.status, info.value.code) == (422, "anonymous_provider_disabled")


def test_instance_settings_errors(tmp_path: Path) -> None:
    """signup_disabled, over_email_send_rate_limit and the anti-enumeration fake user."""
    env = {"GOTRUE_DISABLE_SIGNUP": "true"}
    with run_localauth(tmp_path / "a", env=env) as la, httpx.Client() as http:
        with pytest.raises(AuthApiError) as info:
            user_client(la, http).sign_up({"email": unique_email(), "password": PASSWORD})
        assert (info.value.status, info.value.code) == (422, "signup_disabled")
    with run_localauth(tmp_path / "b") as la, httpx.Client() as http:
        client = user_client(la, http)
        email = unique_email()
        first = client.sign_up({"email": email, "password": PASSWORD})
        assert first.session is None
        assert first.user is not None
        assert first.user.confirmation_sent_at is not None
        with pytest.raises(AuthApiError) as limited:
            client.sign_up({"email": email, "password": PASSWORD})
        assert (limited.value.status, limited.value.code) == (429, "over_email_send_rate_limit")
        admin = SyncGoTrueAdminAPI(
            url=la.url + "/auth/v1",
            headers={"Authorization": f"Bearer {la.service_role_key}"},
            http_client=http,
        )
        admin.update_user_by_id(first.user.id, {"email_confirm": True})
        fake = client.sign_up({"email": email, "password": PASSWORD})
        assert fake.session is None
        assert fake.user is not None
        assert fake.user.id != first.user.id
        assert fake.user.identities == []
