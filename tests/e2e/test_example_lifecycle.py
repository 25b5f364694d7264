"""A real headless Chromium drives the example frontend's account-lifecycle pages in both
session transports: MFA enrolment (the QR code), verification and step-up to aal2, removal;
password reset and sign-in with emailed codes; address confirmation after registration.
Codes come from localauth's mailbox over HTTP, TOTP codes from pyotp. Fixtures in
conftest.py, helpers in test_example_frontend.py; screenshots go to docs/img/ with
``UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from playwright.sync_api import BrowserContext, Page

from tests.conftest import TEST_PASSWORD, new_email
from tests.e2e.test_example_frontend import (
    AUTH,
    SPY,
    WAIT_MS,
    api,
    open_app,
    refresh_cookie,
    register_and_sign_in,
    shot,
    text,
)
from tests.support.localauth import LocalAuth

pytestmark = [pytest.mark.browser]


def mail(localauth: LocalAuth, to: str, kind: str) -> dict[str, Any]:
    """The newest mail of ``kind`` to ``to`` in localauth's mailbox, over HTTP (waits 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        found = httpx.get(f"{localauth.url}/mailbox/messages", params={"to": to}).json()
        of_kind: list[dict[str, Any]] = [m for m in found["messages"] if m["type"] == kind]
        if of_kind:
            return of_kind[0]
        assert time.monotonic() < deadline, f"no {kind} mail to {to}"
        time.sleep(0.05)


def sign_out(page: Page) -> None:
    page.goto(page.url.split("#")[0] + "#/account")
    page.click("#signout")
    page.wait_for_selector("body[data-view=signin] #notice", timeout=WAIT_MS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["cookie", "bearer"])
def test_mfa_password_reset_and_email_code_pages(
    mode: str,
    context: BrowserContext,
    page_port: int,
    localauth: LocalAuth,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """MFA: enrol (the QR code renders), verify with a TOTP code (the session becomes aal2
    with new tokens); a new sign-in asks for a code before the factor can be removed;
    unenrol (back to aal1). Password reset with the code read from the
    mailbox (a wrong code first). Sign-in with an emailed code. In cookie mode, no
    response the page's scripts see, and no storage, ever holds a refresh token."""
    bodies: list[str] = []

    def record(body: str) -> None:
        bodies.append(body)

    context.expose_function("__record", record)
    context.add_init_script(SPY)
    cookies: set[str] = set()

    def keep_cookie() -> None:
        cookie = refresh_cookie(context)
        assert (cookie is not None) is (mode == "cookie")
        if cookie is not None:
            assert cookie["httpOnly"] is True
            assert cookie["path"] == f"{AUTH}/refresh"
            assert cookie["value"] not in cookies, "the flow did not replace the cookie"
            cookies.add(cookie["value"])
        assert page.evaluate("document.cookie") == ""

    with api(localauth, redis_url, redis_prefix, tmp_path / "app", page_port) as server:
        # The mailbox link is for development: the bearer run leaves it out.
        page = open_app(
            context, page_port, server, mode, mailbox=localauth.url if mode == "cookie" else ""
        )
        email = new_email()
        register_and_sign_in(page, email, tmp_path, "")
        keep_cookie()

        # MFA: enrol, scan (here: read the secret), verify, unenrol.
        page.click("nav a[href='#/mfa']")
        page.wait_for_function(
            "document.querySelector('#mfa-aal')?.textContent === 'aal1'", timeout=WAIT_MS
        )
        page.click("#mfa-enrol-submit")
        page.wait_for_selector("#mfa-qr", timeout=WAIT_MS)
        page.wait_for_function(
            "document.querySelector('#mfa-qr').complete && "
            "document.querySelector('#mfa-qr').naturalWidth > 0",
            timeout=WAIT_MS,
        )
        assert str(page.locator("#mfa-qr").get_attribute("src")).startswith("data:image/svg+xml")
        page.wait_for_selector("#factors tr[data-status=unverified]", timeout=WAIT_MS)
        totp = pyotp.TOTP(text(page, "#mfa-secret"))
        if mode == "cookie":
            shot(page, tmp_path, "mfa-enrol")
        page.fill("#mfa-code", "000000" if totp.now() != "000000" else "111111")
        page.click("#mfa-verify-submit")
        error = page.locator("#mfa-verify-status .error")
        assert error.get_attribute("data-code", timeout=WAIT_MS) == "invalid_mfa_code"
        before = page.evaluate("window.supaguard.session.access_token")
        page.fill("#mfa-code", totp.now())
        page.click("#mfa-verify-submit")
        page.wait_for_selector("#mfa-verified", timeout=WAIT_MS)
        page.wait_for_selector("#factors tr[data-status=verified]", timeout=WAIT_MS)
        assert text(page, "#mfa-aal") == "aal2"
        assert text(page, "#mfa-stepup-box") == ""
        assert page.evaluate("window.supaguard.session.access_token") != before
        keep_cookie()
        if mode == "cookie":
            shot(page, tmp_path, "mfa-verified")
        # The aal2 session survives a reload: the refresh (cookie or stored token) is aal2.
        page.reload()
        page.wait_for_selector("body[data-view=mfa]", timeout=WAIT_MS)
        page.wait_for_function(
            "document.querySelector('#mfa-aal')?.textContent === 'aal2'", timeout=WAIT_MS
        )
        keep_cookie()
        # A new sign-in is aal1: the page goes to the MFA page and asks for a code; until
        # then removing the verified factor is refused.
        sign_out(page)
        page.fill("#signin-email", email)
        page.fill("#signin-password", TEST_PASSWORD)
        page.click("#signin-submit")
        page.wait_for_selector("body[data-view=mfa] #mfa-stepup", timeout=WAIT_MS)
        assert text(page, "#mfa-aal") == "aal1"
        keep_cookie()
        page.click("#factors [data-unenroll]")
        error = page.locator("#mfa-status .error")
        assert error.get_attribute("data-code", timeout=WAIT_MS) == "insufficient_aal"
        page.fill("#mfa-stepup-code", totp.now())
        page.click("#mfa-stepup-submit")
        page.wait_for_function(
            "document.querySelector('#mfa-aal')?.textContent === 'aal2' && "
            "!document.querySelector('#mfa-stepup')",
            timeout=WAIT_MS,
        )
        keep_cookie()
        page.click("#factors [data-unenroll]")
        page.wait_for_function(
            "document.querySelector('#mfa-aal')?.textContent === 'aal1' && "
            "!document.querySelector('#factors tr[data-factor]')",
            timeout=WAIT_MS,
        )
        keep_cookie()
        sign_out(page)

        # Password reset with the mailed code.
        page.click("#to-reset")
        page.fill("#reset-email", email)
        page.click("#reset-request-submit")
        page.wait_for_selector("#reset-sent", timeout=WAIT_MS)
        if mode == "cookie":
            link = str(page.locator("#mailbox-link").get_attribute("href"))
            assert link == f"{localauth.url}/mailbox/messages?to={email.replace('@', '%40')}"
        else:
            assert page.locator("#mailbox-link").count() == 0
            assert "null" not in text(page, "#reset-next")
        code = mail(localauth, email, "recovery")["otp"]
        page.fill("#reset-code", "000000" if code != "000000" else "111111")
        page.fill("#reset-password", "Another-Horse-77")
        page.click("#reset-submit")
        error = page.locator("#reset-status .error")
        assert error.get_attribute("data-code", timeout=WAIT_MS) == "invalid_code"
        if mode == "cookie":
            shot(page, tmp_path, "reset-code")
        page.fill("#reset-code", code)
        page.click("#reset-submit")
        page.wait_for_selector("#me-email", timeout=WAIT_MS)
        assert text(page, "#me-email") == email
        keep_cookie()
        old = httpx.post(
            server.url + f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD}
        )
        assert old.json()["code"] == "invalid_credentials"
        sign_out(page)

        # Sign in with an emailed code.
        page.click("#to-code")
        page.fill("#otp-email", email)
        page.click("#otp-request-submit")
        page.wait_for_selector("#otp-sent", timeout=WAIT_MS)
        page.fill("#otp-code", mail(localauth, email, "magiclink")["otp"])
        if mode == "cookie":
            shot(page, tmp_path, "email-code")
        page.click("#otp-submit")
        page.wait_for_selector("#me-email", timeout=WAIT_MS)
        assert text(page, "#me-email") == email
        keep_cookie()
        done = page.evaluate("window.supaguard.refreshes")
        page.click("#refresh-now")
        page.wait_for_function(f"window.supaguard.refreshes === {done + 1}", timeout=WAIT_MS)
        keep_cookie()

        storage = page.evaluate("JSON.stringify({...localStorage, ...sessionStorage})")
        if mode == "cookie":
            assert len(cookies) == 9
            assert not [c for c in cookies if c in storage]
            assert len(bodies) >= 15
            assert not [b for b in bodies if '"refresh_token":' in b]
            assert not [b for b in bodies if any(c in b for c in cookies)]
        else:
            assert page.evaluate("window.supaguard.visibleRefreshToken") in storage
            assert sum('"refresh_token":' in b for b in bodies) >= 5
        page.close()


@pytest.mark.timeout(45)
@pytest.mark.parametrize("mode", ["cookie", "bearer"])
def test_registration_with_email_confirmation(
    mode: str,
    context: BrowserContext,
    page_port: int,
    localauth: LocalAuth,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    """REGISTER_EMAIL_CONFIRM=false: registering asks for the mailed code (sign-in is
    refused until then); a wrong code is shown, the right one signs in. A user who comes
    back later confirms on the "Confirm email" page. No readable response holds a refresh
    token in cookie mode."""
    bodies: list[str] = []

    def record(body: str) -> None:
        bodies.append(body)

    context.expose_function("__record", record)
    context.add_init_script(SPY)
    with api(
        localauth,
        redis_url,
        redis_prefix,
        tmp_path / "app",
        page_port,
        register_email_confirm="false",
    ) as server:
        page = open_app(context, page_port, server, mode)
        email = new_email()
        page.click("#to-register")
        page.fill("#register-email", email)
        page.fill("#register-password", TEST_PASSWORD)
        page.click("#register-submit")
        page.wait_for_selector("#confirm-sent", timeout=WAIT_MS)
        assert refresh_cookie(context) is None
        early = httpx.post(
            server.url + f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD}
        )
        assert early.json()["code"] == "email_not_confirmed"
        code = mail(localauth, email, "signup")["otp"]
        page.fill("#confirm-code", "000000" if code != "000000" else "111111")
        page.click("#confirm-submit")
        error = page.locator("#confirm-status .error")
        assert error.get_attribute("data-code", timeout=WAIT_MS) == "invalid_code"
        page.fill("#confirm-code", code)
        page.click("#confirm-submit")
        page.wait_for_selector("#me-email", timeout=WAIT_MS)
        assert text(page, "#me-email") == email
        cookie = refresh_cookie(context)
        if mode == "bearer":
            assert cookie is None
            assert page.evaluate("window.supaguard.visibleRefreshToken")
            return
        assert cookie["httpOnly"] is True
        sign_out(page)

        # Registered elsewhere, confirmed later: the "Confirm email" page.
        later = new_email()
        created = httpx.post(
            server.url + f"{AUTH}/register", json={"email": later, "password": TEST_PASSWORD}
        )
        assert created.json()["session"] is None
        page.click("nav a[href='#/confirm']")
        page.fill("#confirm-email", later)
        page.click("#confirm-request-submit")
        page.wait_for_selector("#confirm-sent", timeout=WAIT_MS)
        page.fill("#confirm-code", mail(localauth, later, "signup")["otp"])
        page.click("#confirm-submit")
        page.wait_for_selector("#me-email", timeout=WAIT_MS)
        assert text(page, "#me-email") == later
        second = refresh_cookie(context)
        assert second["value"] != cookie["value"]
        assert not [b for b in bodies if '"refresh_token":' in b]
        assert not [b for b in bodies if cookie["value"] in b or second["value"] in b]
        page.close()
