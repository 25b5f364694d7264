"""Email confirmation: registration with REGISTER_EMAIL_CONFIRM=false completes by mail."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import TEST_PASSWORD, new_email
from tests.integration.lifecycle.conftest import AUTH, LifecycleSettings, bearer, problem
from tests.support.localauth import LocalAuth
from tests.support.mailbox import latest, messages

pytestmark = pytest.mark.anyio


@pytest.fixture
async def confirming(running_apps: Any, lifecycle_settings: LifecycleSettings) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await running_apps(
        lifecycle_settings(register_email_confirm="false")
    )
    return client


async def register(client: httpx.AsyncClient, email: str) -> None:
    created = await client.post(
        f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD}
    )
    assert created.status_code == 201, created.text
    assert created.json()["session"] is None


async def test_registration_completes_through_the_mailed_code(
    confirming: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    email = new_email()
    await register(confirming, email)
    mail = await latest(mailing_auth, email, "signup")
    blocked = await confirming.post(
        f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD}
    )
    assert problem(blocked) == (403, "email_not_confirmed")

    confirmed = await confirming.post(
        f"{AUTH}/email/confirm", json={"email": email, "code": mail["otp"]}
    )
    assert confirmed.status_code == 200, confirmed.text
    session = confirmed.json()
    assert session["user"]["email_confirmed_at"]
    me = await confirming.get(f"{AUTH}/me", headers=bearer(session))
    assert me.status_code == 200
    assert me.json()["email"] == email
    listed = await confirming.get(f"{AUTH}/sessions", headers=bearer(session))
    assert [s["current"] for s in listed.json()["sessions"]] == [True]
    login = await confirming.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    assert login.status_code == 200
    again = await confirming.post(
        f"{AUTH}/email/confirm", json={"email": email, "code": mail["otp"]}
    )
    assert problem(again) == (401, "invalid_code")


async def test_resend_then_confirm_with_the_links_token_hash(
    confirming: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    email = new_email()
    await register(confirming, email)
    first = await latest(mailing_auth, email, "signup")
    # Supabase allows one mail of a kind per user per interval; the answer is the same.
    quick = await confirming.post(f"{AUTH}/email/confirm/resend", json={"email": email})
    assert quick.status_code == 202
    assert len(await messages(mailing_auth, email, "signup")) == 1
    # Once Supabase's send interval (2 s here) has passed since the first mail, a resend
    # mails again.
    sent_at = datetime.fromisoformat(first["created_at"].replace("Z", "+00:00")).timestamp()
    with anyio.fail_after(5):
        while time.time() < sent_at + 2.05:
            await anyio.sleep(0.05)
    resent = await confirming.post(f"{AUTH}/email/confirm/resend", json={"email": email})
    assert resent.status_code == 202
    assert resent.content == quick.content
    mail = await latest(mailing_auth, email, "signup")
    assert mail["id"] != first["id"]
    confirmed = await confirming.post(
        f"{AUTH}/email/confirm", json={"token_hash": mail["token_hash"]}
    )
    assert confirmed.status_code == 200, confirmed.text


async def test_resend_to_an_unknown_address_looks_the_same(
    confirming: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    unknown = new_email()
    answer = await confirming.post(f"{AUTH}/email/confirm/resend", json={"email": unknown})
    assert answer.status_code == 202
    assert await messages(mailing_auth, unknown) == []


async def test_confirm_errors_and_lockout(
    confirming: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    email = new_email()
    await register(confirming, email)
    mail = await latest(mailing_auth, email, "signup")
    assert problem(await confirming.post(f"{AUTH}/email/confirm", json={"email": email})) == (
        422,
        "validation_failed",
    )
    assert problem(await confirming.post(f"{AUTH}/email/confirm", json={"token_hash": "zz"})) == (
        422,
        "validation_failed",
    )
    guesses = [f"{n:06d}" for n in range(200000, 200006) if f"{n:06d}" != mail["otp"]][:5]
    for guess in guesses:
        wrong = await confirming.post(f"{AUTH}/email/confirm", json={"email": email, "code": guess})
        assert problem(wrong) == (401, "invalid_code")
    locked = await confirming.post(
        f"{AUTH}/email/confirm", json={"email": email, "code": mail["otp"]}
    )
    assert problem(locked) == (429, "locked_out")
