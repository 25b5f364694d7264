"""Every mail flow finished through the local mailbox, with the real SDK over HTTP."""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from supabase_auth import SyncGoTrueAdminAPI
from supabase_auth.errors import AuthApiError

from tests.localauth.conftest import (
    PASSWORD,
    admin_api,
    last_mail,
    mails,
    unique_email,
    user_client,
)
from tests.support.localauth import LocalAuth


def _amr(access_token: str) -> list[str]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return [entry["method"] for entry in claims["amr"]]


def _follow(http: httpx.Client, link: str) -> str:
    """Open an email link as a browser would; return where it redirects."""
    response = http.get(link, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"]


@pytest.fixture
def mail_admin(mail_server: LocalAuth, http: httpx.Client) -> SyncGoTrueAdminAPI:
    return admin_api(mail_server, http)


def test_signup_confirmation_by_code_is_single_use(
    mail_server: LocalAuth, http: httpx.Client
) -> None:
    email = unique_email()
    client = user_client(mail_server, http)
    signed_up = client.sign_up({"email": email, "password": PASSWORD})
    assert signed_up.session is None
    assert signed_up.user is not None
    assert signed_up.user.confirmation_sent_at is not None
    mail = last_mail(mail_server, http, email, "signup")
    assert len(mail["otp"]) == 6
    assert mail["otp"].isdigit()
    # GoTrue's token hash: hex SHA-224 of the address followed by the code
    assert mail["token_hash"] == hashlib.sha224((email + mail["otp"]).encode()).hexdigest()
    assert mail["otp"] in mail["body"]
    assert mail["link"] in mail["body"]
    with pytest.raises(AuthApiError) as unconfirmed:
        client.sign_in_with_password({"email": email, "password": PASSWORD})
    assert unconfirmed.value.code == "email_not_confirmed"

    verified = client.verify_otp({"email": email, "token": mail["otp"], "type": "signup"})
    assert verified.session is not None
    assert verified.user is not None
    assert verified.user.email_confirmed_at is not None
    assert _amr(verified.session.access_token) == ["otp"]
    assert client.sign_in_with_password({"email": email, "password": PASSWORD}).session
    with pytest.raises(AuthApiError) as reused:
        client.verify_otp({"email": email, "token": mail["otp"], "type": "signup"})
    assert (reused.value.status, reused.value.code) == (403, "otp_expired")
    assert reused.value.message == "Token has expired or is invalid"


def test_signup_link_signs_in_through_the_redirect(
    mail_server: LocalAuth, http: httpx.Client
) -> None:
    email = unique_email()
    client = user_client(mail_server, http)
    client.sign_up(
        {
            "email": email,
            "password": PASSWORD,
            "options": {"email_redirect_to": "http://localhost:3000/welcome"},
        }
    )
    mail = last_mail(mail_server, http, email, "signup")
    assert mail["link"].startswith(mail_server.url + "/auth/v1/verify?token=")
    location = _follow(http, mail["link"])
    assert location.startswith("http://localhost:3000/welcome#")
    fragment = parse_qs(urlsplit(location).fragment)
    assert fragment["type"] == ["signup"]
    assert fragment["token_type"] == ["bearer"]
    # the SDK finishes an implicit-flow redirect itself
    browser = user_client(mail_server, http)
    browser.initialize_from_url(location)
    session = browser.get_session()
    assert session is not None
    assert session.user.email == email
    assert session.user.email_confirmed_at is not None
    # the link is single use: a second click lands with an error in the fragment
    again = parse_qs(urlsplit(_follow(http, mail["link"])).fragment)
    assert again["error_code"] == ["otp_expired"]
    assert again["error_description"] == ["Email link is invalid or has expired"]


def test_token_hash_verification_and_an_unlisted_redirect_falls_back_to_the_site(
    mail_server: LocalAuth, http: httpx.Client
) -> None:
    email = unique_email()
    client = user_client(mail_server, http)
    client.sign_up(
        {
            "email": email,
            "password": PASSWORD,
            "options": {"email_redirect_to": "https://evil.example/steal"},
        }
    )
    mail = last_mail(mail_server, http, email, "signup")
    assert mail["redirect_to"] == "http://localhost:3000"
    verified = client.verify_otp({"token_hash": mail["token_hash"], "type": "email"})
    assert verified.session is not None
    assert verified.user is not None
    assert verified.user.email == email


def test_otp_sign_in_creates_the_user_then_sends_magic_links(
    mail_server: LocalAuth, http: httpx.Client, mail_admin: SyncGoTrueAdminAPI
) -> None:
    email = unique_email()
    client = user_client(mail_server, http)
    client.sign_in_with_otp(
        {"email": email, "options": {"data": {"plan": "trial"}, "should_create_user": True}}
    )
    created = [u for u in mail_admin.list_users() if u.email == email]
    assert len(created) == 1
    assert created[0].user_metadata == {"plan": "trial"}
    first = last_mail(mail_server, http, email, "signup")
    session = client.verify_otp({"email": email, "token": first["otp"], "type": "email"}).session
    assert session is not None
    assert _amr(session.access_token) == ["otp"]

    # a confirmed user gets a magic link; "email" finds it as well as "magiclink"
    client.sign_in_with_otp({"email": email})
    magic = last_mail(mail_server, http, email, "magiclink")
    verified = client.verify_otp({"email": email, "token": magic["otp"], "type": "magiclink"})
    assert verified.session is not None
    assert verified.user is not None
    assert verified.user.id == created[0].id


def test_otp_without_create_user_refuses_unknown_addresses(
    mail_server: LocalAuth, http: httpx.Client
) -> None:
    email = unique_email()
    with pytest.raises(AuthApiError) as refused:
        user_client(mail_server, http).sign_in_with_otp(
            {"email": email, "options": {"should_create_user": False}}
        )
    assert (refused.value.status, refused.value.code) == (422, "otp_disabled")
    assert mails(mail_server, http, email) == []


def test_recovery_flow_sets_a_new_password(
    mail_server: LocalAuth, http: httpx.Client, mail_admin: SyncGoTrueAdminAPI
) -> None:
    email = unique_email()
    mail_admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True})
    client = user_client(mail_server, http)
    events: list[str] = []
    client.on_auth_state_change(lambda event, _session: events.append(event))
    client.reset_password_for_email(email, {"redirect_to": "http://localhost:3000/reset"})
    mail = last_mail(mail_server, http, email, "recovery")
    assert mail["subject"] == "Reset Your Password"
    assert "redirect_to=http%3A%2F%2Flocalhost%3A3000%2Freset" in mail["link"]
    verified = client.verify_otp({"email": email, "token": mail["otp"], "type": "recovery"})
    assert verified.session is not None
    assert events[-1] == "PASSWORD_RECOVERY"
    client.update_user({"password": "brand-new-secret-2"})
    fresh = user_client(mail_server, http)
    assert fresh.sign_in_with_password({"email": email, "password": "brand-new-secret-2"}).session
    with pytest.raises(AuthApiError) as old:
        fresh.sign_in_with_password({"email": email, "password": PASSWORD})
    assert old.value.code == "invalid_credentials"


def test_recovery_of_an_unknown_address_says_nothing_and_sends_nothing(
    mail_server: LocalAuth, http: httpx.Client
) -> None:
    email = unique_email()
    user_client(mail_server, http).reset_password_for_email(email)
    assert mails(mail_server, http, email) == []


def test_resend_replaces_the_confirmation_token(mail_server: LocalAuth, http: httpx.Client) -> None:
    email = unique_email()
    client = user_client(mail_server, http)
    client.sign_up({"email": email, "password": PASSWORD})
    first = last_mail(mail_server, http, email, "signup")
    client.resend({"type": "signup", "email": email})
    second = last_mail(mail_server, http, email, "signup")
    assert second["id"] != first["id"]
    if first["otp"] != second["otp"]:
        with pytest.raises(AuthApiError) as stale:
            client.verify_otp({"email": email, "token": first["otp"], "type": "signup"})
        assert stale.value.code == "otp_expired"
    assert client.verify_otp({"email": email, "token": second["otp"], "type": "signup"}).session


def test_secure_email_change_needs_both_addresses(
    mail_server: LocalAuth, http: httpx.Client, mail_admin: SyncGoTrueAdminAPI
) -> None:
    old, new = unique_email(), unique_email()
    mail_admin.create_user({"email": old, "password": PASSWORD, "email_confirm": True})
    client = user_client(mail_server, http)
    client.sign_in_with_password({"email": old, "password": PASSWORD})
    pending = client.update_user({"email": new}).user
    assert pending.email == old
    assert pending.new_email == new
    assert pending.email_change_sent_at is not None
    to_old = last_mail(mail_server, http, old, "email_change")
    to_new = last_mail(mail_server, http, new, "email_change")
    assert to_old["otp"] != to_new["otp"] or to_old["token_hash"] != to_new["token_hash"]

    half = client.verify_otp({"email": old, "token": to_old["otp"], "type": "email_change"})
    assert half.session is None  # "Confirmation link accepted..." (code "200")
    assert client.get_user() is not None
    done = client.verify_otp({"email": new, "token": to_new["otp"], "type": "email_change"})
    assert done.user is not None
    assert done.user.email == new
    assert done.user.new_email is None
    assert (
        user_client(mail_server, http)
        .sign_in_with_password({"email": new, "password": PASSWORD})
        .session
    )


def test_email_change_confirmed_by_links(
    mail_server: LocalAuth, http: httpx.Client, mail_admin: SyncGoTrueAdminAPI
) -> None:
    old, new = unique_email(), unique_email()
    mail_admin.create_user({"email": old, "password": PASSWORD, "email_confirm": True})
    client = user_client(mail_server, http)
    client.sign_in_with_password({"email": old, "password": PASSWORD})
    client.update_user({"email": new})
    first = _follow(http, last_mail(mail_server, http, new, "email_change")["link"])
    assert "message=Confirmation+link+accepted" in first
    second = _follow(http, last_mail(mail_server, http, old, "email_change")["link"])
    assert "access_token=" in second
    user = mail_admin.list_users()
    assert any(u.email == new for u in user)


def test_reauthentication_nonce_guards_a_password_change(
    mail_server: LocalAuth, http: httpx.Client, mail_admin: SyncGoTrueAdminAPI
) -> None:
    email = unique_email()
    mail_admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True})
    client = user_client(mail_server, http)
    client.sign_in_with_password({"email": email, "password": PASSWORD})
    client.reauthenticate()
    mail = last_mail(mail_server, http, email, "reauthentication")
    assert mail["link"] == ""
    wrong = "000000" if mail["otp"] != "000000" else "111111"
    with pytest.raises(AuthApiError) as refused:
        client.update_user({"password": "another-secret-3", "nonce": wrong})
    assert (refused.value.status, refused.value.code) == (400, "reauthentication_not_valid")
    client.update_user({"password": "another-secret-3", "nonce": mail["otp"]})
    with pytest.raises(AuthApiError) as reused:
        client.update_user({"password": "another-secret-4", "nonce": mail["otp"]})
    assert reused.value.code == "reauthentication_not_valid"


def test_invite_is_mailed_and_accepting_it_signs_in(
    mail_server: LocalAuth, http: httpx.Client, mail_admin: SyncGoTrueAdminAPI
) -> None:
    email = unique_email()
    invited = mail_admin.invite_user_by_email(
        email, {"data": {"team": "blue"}, "redirect_to": "http://localhost:3000/join"}
    ).user
    assert invited.invited_at is not None
    assert invited.email_confirmed_at is None
    assert invited.user_metadata == {"team": "blue"}
    mail = last_mail(mail_server, http, email, "invite")
    assert mail["subject"] == "You have been invited"
    assert "type=invite" in mail["link"]
    client = user_client(mail_server, http)
    session = client.verify_otp({"email": email, "token": mail["otp"], "type": "invite"}).session
    assert session is not None
    assert session.user.email_confirmed_at is not None
    with pytest.raises(AuthApiError) as again:
        mail_admin.invite_user_by_email(email)
    assert (again.value.status, again.value.code) == (422, "email_exists")


def test_generate_link_tokens_really_verify(
    mail_server: LocalAuth, http: httpx.Client, mail_admin: SyncGoTrueAdminAPI
) -> None:
    email = unique_email()
    mail_admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True})
    link = mail_admin.generate_link({"type": "magiclink", "email": email}).properties
    assert link.hashed_token == hashlib.sha224((email + link.email_otp).encode()).hexdigest()
    client = user_client(mail_server, http)
    assert client.verify_otp({"token_hash": link.hashed_token, "type": "magiclink"}).session
    with pytest.raises(AuthApiError) as reused:
        client.verify_otp({"token_hash": link.hashed_token, "type": "magiclink"})
    assert reused.value.message == "Email link is invalid or has expired"


def test_mailbox_http_api(mail_server: LocalAuth, http: httpx.Client) -> None:
    email = unique_email()
    user_client(mail_server, http).sign_up({"email": email, "password": PASSWORD})
    (listed,) = mails(mail_server, http, email)
    one = http.get(f"{mail_server.url}/mailbox/messages/{listed['id']}")
    assert one.status_code == 200
    assert one.json() == listed
    assert set(listed) >= {"id", "to", "type", "subject", "body", "link", "otp", "created_at"}
    assert http.get(f"{mail_server.url}/mailbox/messages/999999999").status_code == 404
    deleted = http.request("DELETE", f"{mail_server.url}/mailbox/messages", params={"to": email})
    assert deleted.json() == {"deleted": 1}
    assert mails(mail_server, http, email) == []


def test_phone_otp_goes_to_the_mailbox_and_verifies(
    mail_server: LocalAuth, http: httpx.Client, mail_admin: SyncGoTrueAdminAPI
) -> None:
    phone = "1555" + uuid.uuid4().hex[:7].translate(str.maketrans("abcdef", "123456"))
    client = user_client(mail_server, http)
    client.sign_in_with_otp({"phone": "+" + phone})
    sms = last_mail(mail_server, http, phone, "sms")
    assert sms["link"] == ""
    session = client.verify_otp({"phone": "+" + phone, "token": sms["otp"], "type": "sms"}).session
    assert session is not None
    assert session.user.phone == phone
    assert session.user.phone_confirmed_at is not None
    # phone signup with a password: the code arrives the same way
    other = "1666" + phone[4:]
    signed_up = client.sign_up({"phone": "+" + other, "password": PASSWORD})
    assert signed_up.session is None
    code = last_mail(mail_server, http, other, "sms")["otp"]
    assert client.verify_otp({"phone": other, "token": code, "type": "sms"}).session
    assert client.sign_in_with_password({"phone": other, "password": PASSWORD}).session


def test_a_code_is_single_use_under_concurrent_verification(
    mail_server: LocalAuth, http: httpx.Client, mail_admin: SyncGoTrueAdminAPI
) -> None:
    email = unique_email()
    mail_admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True})
    user_client(mail_server, http).sign_in_with_otp({"email": email})
    code = last_mail(mail_server, http, email, "magiclink")["otp"]

    def attempt(_: int) -> str:
        try:
            user_client(mail_server, http).verify_otp(
                {"email": email, "token": code, "type": "magiclink"}
            )
        except AuthApiError as exc:
            return str(exc.code)
        return "ok"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = sorted(pool.map(attempt, range(8)))
    assert outcomes == ["ok"] + ["otp_expired"] * 7
