"""PKCE code exchange, /verify's validation order, OTP expiry and the send interval."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from supabase_auth.errors import AuthApiError

from tests.localauth.conftest import (
    PASSWORD,
    admin_api,
    assert_clean_log,
    last_mail,
    pkce_client,
    unique_email,
    user_client,
)
from tests.support.localauth import LocalAuth, run_localauth


def _code_from(http: httpx.Client, link: str) -> str:
    response = http.get(link, follow_redirects=False)
    assert response.status_code == 303
    (code,) = parse_qs(urlsplit(response.headers["location"]).query)["code"]
    return code


def test_pkce_signup_confirmation_exchanges_a_code_for_a_session(
    mail_server: LocalAuth, http: httpx.Client
) -> None:
    email = unique_email()
    client = pkce_client(mail_server, http)
    client.sign_up({"email": email, "password": PASSWORD})
    mail = last_mail(mail_server, http, email, "signup")
    assert "token=pkce_" in mail["link"]
    code = _code_from(http, mail["link"])
    session = client.exchange_code_for_session({"auth_code": code}).session
    assert session is not None
    assert session.user.email_confirmed_at is not None
    claims = jwt.decode(session.access_token, options={"verify_signature": False})
    assert claims["amr"][0]["method"] == "email/signup"
    with pytest.raises(AuthApiError) as reused:
        client.exchange_code_for_session({"auth_code": code, "code_verifier": "x" * 43})
    assert (reused.value.status, reused.value.code) == (404, "flow_state_not_found")


def test_pkce_recovery_and_a_wrong_verifier(mail_server: LocalAuth, http: httpx.Client) -> None:
    email = unique_email()
    admin_api(mail_server, http).create_user(
        {"email": email, "password": PASSWORD, "email_confirm": True}
    )
    client = pkce_client(mail_server, http)
    events: list[str] = []
    client.on_auth_state_change(lambda event, _s: events.append(event))
    client.reset_password_for_email(email)
    code = _code_from(http, last_mail(mail_server, http, email, "recovery")["link"])
    with pytest.raises(AuthApiError) as wrong:
        client.exchange_code_for_session({"auth_code": code, "code_verifier": "y" * 50})
    assert (wrong.value.status, wrong.value.code) == (400, "bad_code_verifier")
    client.reset_password_for_email(email)
    code = _code_from(http, last_mail(mail_server, http, email, "recovery")["link"])
    assert client.exchange_code_for_session({"auth_code": code}).session is not None
    assert events[-1] == "PASSWORD_RECOVERY"


def test_pkce_magic_link_and_missing_fields(mail_server: LocalAuth, http: httpx.Client) -> None:
    email = unique_email()
    admin_api(mail_server, http).create_user({"email": email, "email_confirm": True})
    client = pkce_client(mail_server, http)
    client.sign_in_with_otp({"email": email})
    mail = last_mail(mail_server, http, email, "magiclink")
    # a PKCE mail's code still works directly with POST /verify
    assert client.verify_otp({"email": email, "token": mail["otp"], "type": "magiclink"}).session
    with pytest.raises(AuthApiError) as empty:
        client.exchange_code_for_session({"auth_code": "", "code_verifier": ""})
    assert empty.value.code == "validation_failed"
    bad = http.post(
        mail_server.url + "/signup",
        json={"email": unique_email(), "password": PASSWORD, "code_challenge": "abc"},
    )
    assert bad.status_code == 400
    assert bad.json()["msg"] == "PKCE flow requires code_challenge_method and code_challenge"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"token": "123456", "email": "a@example.com"}, 400, "Verify requires a verification type"),
        ({"type": "signup"}, 400, "Verify requires either a token or a token hash"),
        (
            {"type": "signup", "token": "1", "token_hash": "2", "email": "a@example.com"},
            400,
            "Verify requires either a token or a token hash",
        ),
        (
            {"type": "sms", "token": "123456", "phone": "not-a-phone"},
            400,
            "Invalid phone number format (E.164 required)",
        ),
        ({"type": "signup", "token": "123456", "email": "nope"}, 422, "Invalid email format"),
        (
            {"type": "signup", "token": "123456"},
            400,
            "Only an email address or phone number should be provided on verify",
        ),
        (
            {"type": "signup", "token_hash": "abc", "email": "a@example.com"},
            400,
            "Only the token_hash and type should be provided",
        ),
        ({"type": "bogus", "token_hash": "abc"}, 400, "Invalid email verification type"),
        ({"type": "signup", "token_hash": "abc"}, 403, "Email link is invalid or has expired"),
        (
            {"type": "signup", "token": "123456", "email": "nobody@example.com"},
            403,
            "Token has expired or is invalid",
        ),
    ],
)
def test_verify_validates_before_it_looks(
    mail_server: LocalAuth,
    http: httpx.Client,
    body: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = http.post(
        mail_server.url + "/auth/v1/verify",
        json=body,
        headers={"X-Supabase-Api-Version": "2024-01-01"},
    )
    assert response.status_code == status
    payload = response.json()
    assert payload["message"] == message
    expected = "otp_expired" if status == 403 else "validation_failed"
    assert payload["code"] == expected


def test_sdk_verify_with_a_malformed_phone(mail_server: LocalAuth, http: httpx.Client) -> None:
    with pytest.raises(AuthApiError) as bad:
        user_client(mail_server, http).verify_otp(
            {"phone": "12ab", "token": "123456", "type": "sms"}
        )
    assert (bad.value.status, bad.value.code) == (400, "validation_failed")
    assert bad.value.message == "Invalid phone number format (E.164 required)"


def test_get_verify_without_a_type_is_a_json_error(
    mail_server: LocalAuth, http: httpx.Client
) -> None:
    response = http.get(mail_server.url + "/verify", params={"token": "abc"})
    assert response.status_code == 400
    assert response.json()["msg"] == "Verify requires a verification type"


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAuth]:
    """Codes expire at once (GOTRUE_MAILER_OTP_EXP=0) and the default 60 s send interval."""
    tmp = tmp_path_factory.mktemp("localauth-strict")
    with run_localauth(tmp, env={"GOTRUE_MAILER_OTP_EXP": "0"}) as la:
        yield la
    assert_clean_log(tmp, la.port)


def test_expired_codes_and_links_are_refused(strict_server: LocalAuth, http: httpx.Client) -> None:
    email = unique_email()
    client = user_client(strict_server, http)
    client.sign_up({"email": email, "password": PASSWORD})
    mail = last_mail(strict_server, http, email, "signup")
    with pytest.raises(AuthApiError) as by_code:
        client.verify_otp({"email": email, "token": mail["otp"], "type": "signup"})
    assert (by_code.value.status, by_code.value.code) == (403, "otp_expired")
    with pytest.raises(AuthApiError) as by_hash:
        client.verify_otp({"token_hash": mail["token_hash"], "type": "signup"})
    assert by_hash.value.message == "Email link is invalid or has expired"


def test_mail_send_interval_is_enforced(strict_server: LocalAuth, http: httpx.Client) -> None:
    email = unique_email()
    admin_api(strict_server, http).create_user(
        {"email": email, "password": PASSWORD, "email_confirm": True}
    )
    client = user_client(strict_server, http)
    client.reset_password_for_email(email)
    with pytest.raises(AuthApiError) as limited:
        client.reset_password_for_email(email)
    assert (limited.value.status, limited.value.code) == (429, "over_email_send_rate_limit")
    assert "For security purposes, you can only request this after" in limited.value.message


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "message"),
    [
        ("/otp", {}, 400, "validation_failed", "One of email or phone must be set"),
        (
            "/otp",
            {"email": "a@example.com", "phone": "15555550100"},
            400,
            "validation_failed",
            "Only an email address or phone number should be provided",
        ),
        (
            "/otp",
            {"email": "a@example.com", "channel": "sms"},
            400,
            "validation_failed",
            "Channel should only be specified with Phone OTP",
        ),
        (
            "/otp",
            {"email": "not-an-address"},
            400,
            "validation_failed",
            "Unable to validate email address: invalid format",
        ),
        ("/recover", {}, 400, "validation_failed", "Password recovery requires an email"),
        (
            "/resend",
            {"type": "magiclink", "email": "a@example.com"},
            400,
            "validation_failed",
            "Missing one of these types: signup, email_change, sms, phone_change",
        ),
        (
            "/resend",
            {"type": "signup"},
            400,
            "validation_failed",
            "Type provided requires an email address",
        ),
    ],
)
def test_mail_endpoint_errors(
    mail_server: LocalAuth,
    http: httpx.Client,
    path: str,
    body: dict[str, str],
    status: int,
    code: str,
    message: str,
) -> None:
    response = http.post(mail_server.url + "/auth/v1" + path, json=body)
    assert response.status_code == status
    assert response.headers["x-sb-error-code"] == code
    assert response.json() == {"code": status, "error_code": code, "msg": message}


def test_phone_otp_is_refused_while_phone_is_off(server: LocalAuth, http: httpx.Client) -> None:
    with pytest.raises(AuthApiError) as off:
        user_client(server, http).sign_in_with_otp({"phone": "+15555550100"})
    assert (off.value.status, off.value.code) == (400, "phone_provider_disabled")


def test_invite_needs_an_admin_and_a_valid_address(
    mail_server: LocalAuth, http: httpx.Client
) -> None:
    email = unique_email()
    signed_up = user_client(mail_server, http).sign_up({"email": email, "password": PASSWORD})
    assert signed_up.user is not None
    link = admin_api(mail_server, http).generate_link({"type": "magiclink", "email": email})
    session = (
        user_client(mail_server, http)
        .verify_otp({"token_hash": link.properties.hashed_token, "type": "magiclink"})
        .session
    )
    assert session is not None
    response = http.post(
        mail_server.url + "/invite",
        json={"email": unique_email()},
        headers={"Authorization": f"Bearer {session.access_token}"},
    )
    assert (response.status_code, response.json()["error_code"]) == (403, "not_admin")
    with pytest.raises(AuthApiError) as bad_email:
        admin_api(mail_server, http).invite_user_by_email("nope")
    assert bad_email.value.code == "validation_failed"
