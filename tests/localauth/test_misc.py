"""Health, settings, both path prefixes and the cheap extra endpoints."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.localauth.conftest import ClientFactory, unique_email, user_client
from tests.support.localauth import LocalAuth, run_localauth


@pytest.mark.parametrize("prefix", ["", "/auth/v1"])
def test_health_and_settings_on_both_prefixes(
    server: LocalAuth, http: httpx.Client, prefix: str
) -> None:
    health = http.get(server.url + prefix + "/health")
    assert health.status_code == 200
    assert set(health.json()) == {"version", "name", "description"}
    assert health.json()["name"] == "GoTrue"
    settings = http.get(server.url + prefix + "/settings", headers={"apikey": server.anon_key})
    body = settings.json()
    assert body["external"]["email"] is True
    assert body["external"]["phone"] is False
    assert body["mailer_autoconfirm"] is True
    assert body["disable_signup"] is False


def test_mail_endpoints_answer_empty_objects(
    server: LocalAuth, http: httpx.Client, new_client: ClientFactory
) -> None:
    client = new_client()
    client.reset_password_for_email(unique_email())
    client.sign_in_with_otp({"email": unique_email()})
    client.resend({"type": "signup", "email": unique_email()})
    response = http.post(server.url + "/magiclink", json={"email": unique_email()})
    assert (response.status_code, response.json()) == (200, {})


def test_reauthenticate_needs_a_user(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    denied = http.get(server.url + "/reauthenticate")
    assert denied.status_code == 401
    session = (
        user_client(server, http)
        .sign_in_with_password({"email": confirmed_user[1], "password": "correct-horse-1"})
        .session
    )
    assert session is not None
    ok = http.get(
        server.url + "/reauthenticate", headers={"Authorization": f"Bearer {session.access_token}"}
    )
    assert (ok.status_code, ok.json()) == (200, {})


def test_anonymous_sign_in_when_enabled(tmp_path: Path) -> None:
    env = {"GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED": "true", "GOTRUE_PASSWORD_MIN_LENGTH": "10"}
    with run_localauth(tmp_path, env=env) as la, httpx.Client() as http:
        client = user_client(la, http)
        response = client.sign_in_anonymously()
        assert response.session is not None
        assert response.user is not None
        assert response.user.is_anonymous is True
        assert response.user.email == ""
        from supabase_auth.errors import AuthWeakPasswordError

        with pytest.raises(AuthWeakPasswordError) as info:
            client.sign_up({"email": unique_email(), "password": "nine-char"})
        assert info.value.message == "Password should be at least 10 characters."
