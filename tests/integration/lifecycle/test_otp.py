"""Passwordless sign-in: the mailed code, the magic link's token hash, lockout, limits."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import new_email
from tests.integration.lifecycle.conftest import AUTH, LifecycleSettings, bearer, problem, seed
from tests.support.localauth import LocalAuth
from tests.support.mailbox import latest, messages

pytestmark = pytest.mark.anyio


async def test_sign_in_with_the_mailed_code(
    app: httpx.AsyncClient, second: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    assert (await app.post(f"{AUTH}/otp", json={"email": email})).status_code == 202
    mail = await latest(mailing_auth, email, "magiclink")
    signed = await second.post(f"{AUTH}/otp/verify", json={"email": email, "code": mail["otp"]})
    assert signed.status_code == 200, signed.text
    session = signed.json()
    me = await app.get(f"{AUTH}/me", headers=bearer(session))
    assert me.json()["email"] == email
    # A real session of this service: logout ends it everywhere.
    assert (await app.post(f"{AUTH}/logout", headers=bearer(session))).status_code == 204
    assert problem(await second.get(f"{AUTH}/me", headers=bearer(session))) == (
        401,
        "session_revoked",
    )


async def test_sign_in_with_the_magic_links_token_hash(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    await app.post(f"{AUTH}/otp", json={"email": email, "redirect_to": "http://localhost:3000/"})
    mail = await latest(mailing_auth, email, "magiclink")
    signed = await app.post(f"{AUTH}/otp/verify", json={"token_hash": mail["token_hash"]})
    assert signed.status_code == 200, signed.text
    again = await app.post(f"{AUTH}/otp/verify", json={"token_hash": mail["token_hash"]})
    assert problem(again) == (401, "invalid_code")


async def test_no_account_is_created_and_none_is_revealed(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, known = await seed(mailing_auth)
    unknown = new_email()
    answers = [await app.post(f"{AUTH}/otp", json={"email": e}) for e in (unknown, known)]
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].content == answers[1].content
    assert await messages(mailing_auth, unknown) == []
    refused = await app.post(f"{AUTH}/otp/verify", json={"email": unknown, "code": "123456"})
    assert problem(refused) == (401, "invalid_code")


async def test_code_guessing_locks_out(app: httpx.AsyncClient, mailing_auth: LocalAuth) -> None:
    _, email = await seed(mailing_auth)
    await app.post(f"{AUTH}/otp", json={"email": email})
    mail = await latest(mailing_auth, email, "magiclink")
    guesses = [f"{n:06d}" for n in range(300000, 300006) if f"{n:06d}" != mail["otp"]][:5]
    for guess in guesses:
        wrong = await app.post(f"{AUTH}/otp/verify", json={"email": email, "code": guess})
        assert problem(wrong) == (401, "invalid_code")
    locked = await app.post(f"{AUTH}/otp/verify", json={"email": email, "code": mail["otp"]})
    assert problem(locked) == (429, "locked_out")
    bad = await app.post(f"{AUTH}/otp/verify", json={"email": email, "code": mail["otp"], "x": 1})
    assert problem(bad) == (422, "validation_failed")


async def test_code_checks_are_rate_limited_per_client(
    running_apps: object, lifecycle_settings: LifecycleSettings
) -> None:
    app = await running_apps(lifecycle_settings(rate_limits="verify=3/60"))  # type: ignore[operator]
    answers = [
        await app.post(f"{AUTH}/otp/verify", json={"email": new_email(), "code": "123456"})
        for _ in range(4)
    ]
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert problem(answers[3]) == (429, "rate_limited")
