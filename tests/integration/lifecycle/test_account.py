"""The signed-in user's account: password change, reauthentication, email change, profile,
deletion; revocation checked on a second instance."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import TEST_PASSWORD, new_email
from tests.integration.lifecycle.conftest import (
    AUTH,
    NEW_PASSWORD,
    bearer,
    login,
    problem,
    seed,
)
from tests.support.localauth import LocalAuth
from tests.support.mailbox import latest
from tests.support.users import admin_api

pytestmark = pytest.mark.anyio


async def test_change_password_with_the_current_one_ends_the_other_sessions(
    app: httpx.AsyncClient, second: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    here, elsewhere = await login(app, email), await login(app, email)
    changed = await app.post(
        f"{AUTH}/password/change",
        headers=bearer(here),
        json={"current_password": TEST_PASSWORD, "password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["user"]["email"] == email
    assert (await second.get(f"{AUTH}/me", headers=bearer(here))).status_code == 200
    assert problem(await second.get(f"{AUTH}/me", headers=bearer(elsewhere))) == (
        401,
        "session_revoked",
    )
    listed = await second.get(f"{AUTH}/sessions", headers=bearer(here))
    assert [s["current"] for s in listed.json()["sessions"]] == [True]
    await login(second, email, NEW_PASSWORD)


async def test_change_password_refusals_and_lockout(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    tokens = await login(app, email)
    path, auth = f"{AUTH}/password/change", bearer(tokens)
    assert problem(await app.post(path, json={"password": NEW_PASSWORD})) == (401, "missing_token")
    neither = await app.post(path, headers=auth, json={"password": NEW_PASSWORD})
    assert problem(neither) == (422, "validation_failed")
    both = {"password": NEW_PASSWORD, "current_password": TEST_PASSWORD, "nonce": "123456"}
    assert problem(await app.post(path, headers=auth, json=both)) == (422, "validation_failed")
    weak = {"password": "short", "current_password": TEST_PASSWORD}
    assert problem(await app.post(path, headers=auth, json=weak)) == (422, "weak_password")
    same = {"password": TEST_PASSWORD, "current_password": TEST_PASSWORD}
    assert problem(await app.post(path, headers=auth, json=same)) == (422, "validation_failed")
    for n in range(5):
        wrong = {"password": NEW_PASSWORD, "current_password": f"Wrong-pass-{n}"}
        assert problem(await app.post(path, headers=auth, json=wrong)) == (
            401,
            "invalid_credentials",
        )
    right = {"password": NEW_PASSWORD, "current_password": TEST_PASSWORD}
    assert problem(await app.post(path, headers=auth, json=right)) == (429, "locked_out")
    # The same secret as at login: the login is locked for this address too.
    locked_login = await app.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    assert problem(locked_login) == (429, "locked_out")


async def test_change_password_with_the_mailed_nonce(
    app: httpx.AsyncClient, second: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    here, elsewhere = await login(app, email), await login(app, email)
    sent = await app.post(f"{AUTH}/reauthenticate", headers=bearer(here))
    assert sent.status_code == 202
    mail = await latest(mailing_auth, email, "reauthentication")
    wrong_nonce = "000000" if mail["otp"] != "000000" else "111111"
    wrong = await app.post(
        f"{AUTH}/password/change",
        headers=bearer(here),
        json={"nonce": wrong_nonce, "password": NEW_PASSWORD},
    )
    assert problem(wrong) == (401, "invalid_nonce")
    changed = await app.post(
        f"{AUTH}/password/change",
        headers=bearer(here),
        json={"nonce": mail["otp"], "password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    assert problem(await second.get(f"{AUTH}/me", headers=bearer(elsewhere))) == (
        401,
        "session_revoked",
    )
    await login(app, email, NEW_PASSWORD)
    spent = await app.post(
        f"{AUTH}/password/change",
        headers=bearer(here),
        json={"nonce": mail["otp"], "password": "Third-Pass-303"},
    )
    assert problem(spent) == (401, "invalid_nonce")


async def test_nonce_guessing_locks_out(app: httpx.AsyncClient, mailing_auth: LocalAuth) -> None:
    _, email = await seed(mailing_auth)
    tokens = await login(app, email)
    await app.post(f"{AUTH}/reauthenticate", headers=bearer(tokens))
    mail = await latest(mailing_auth, email, "reauthentication")
    guesses = [f"{n:06d}" for n in range(400000, 400006) if f"{n:06d}" != mail["otp"]][:5]
    for guess in guesses:
        wrong = await app.post(
            f"{AUTH}/password/change",
            headers=bearer(tokens),
            json={"nonce": guess, "password": NEW_PASSWORD},
        )
        assert problem(wrong) == (401, "invalid_nonce")
    locked = await app.post(
        f"{AUTH}/password/change",
        headers=bearer(tokens),
        json={"nonce": mail["otp"], "password": NEW_PASSWORD},
    )
    assert problem(locked) == (429, "locked_out")


async def test_secure_email_change_needs_both_addresses(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    tokens = await login(app, email)
    target = new_email()
    started = await app.post(f"{AUTH}/email/change", headers=bearer(tokens), json={"email": target})
    assert started.status_code == 202, started.text
    assert started.json()["user"]["new_email"] == target
    to_new = await latest(mailing_auth, target, "email_change")
    to_current = await latest(mailing_auth, email, "email_change")

    half = await app.post(
        f"{AUTH}/email/change/confirm", json={"email": target, "code": to_new["otp"]}
    )
    assert half.status_code == 200, half.text
    assert half.json() == {"status": "pending", "session": None}
    # Not changed yet: the old address still signs in.
    await login(app, email)
    done = await app.post(
        f"{AUTH}/email/change/confirm", json={"token_hash": to_current["token_hash"]}
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["status"] == "changed"
    assert body["session"]["user"]["email"] == target
    assert (await app.get(f"{AUTH}/me", headers=bearer(body["session"]))).json()["email"] == target
    await login(app, target)
    old = await app.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    assert problem(old) == (401, "invalid_credentials")


async def test_email_change_refusals(app: httpx.AsyncClient, mailing_auth: LocalAuth) -> None:
    _, email = await seed(mailing_auth)
    _, taken = await seed(mailing_auth)
    tokens = await login(app, email)
    clash = await app.post(f"{AUTH}/email/change", headers=bearer(tokens), json={"email": taken})
    assert problem(clash) == (409, "email_exists")
    bad = await app.post(f"{AUTH}/email/change", headers=bearer(tokens), json={"email": "nope"})
    assert problem(bad) == (422, "validation_failed")
    wrong = await app.post(
        f"{AUTH}/email/change/confirm", json={"email": new_email(), "code": "123456"}
    )
    assert problem(wrong) == (401, "invalid_code")


async def test_profile_update_merges_user_metadata_within_limits(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    tokens = await login(app, email)
    path, auth = f"{AUTH}/profile", bearer(tokens)
    first = await app.patch(path, headers=auth, json={"data": {"theme": "dark", "lang": "fr"}})
    assert first.status_code == 200, first.text
    second = await app.patch(path, headers=auth, json={"data": {"lang": None, "tz": "UTC"}})
    assert second.json()["user"]["user_metadata"] == {"theme": "dark", "tz": "UTC"}
    refreshed = await app.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    me = await app.get(f"{AUTH}/me", headers=bearer(refreshed.json()))
    assert me.json()["user_metadata"] == {"theme": "dark", "tz": "UTC"}

    deep: dict[str, Any] = {"a": {"b": {"c": {"d": {"e": 1}}}}}
    too_many = {f"k{i}": i for i in range(51)}
    cases: list[Any] = [
        {"data": {"bio": "x" * 5000}},
        {"data": deep},
        {"data": too_many},
        {"data": {"k" * 65: 1}},
        {"data": ["not", "an", "object"]},
        {"data": {}, "role": "admin"},
        {"user_metadata": {"a": 1}},
    ]
    for body in cases:
        assert problem(await app.patch(path, headers=auth, json=body)) == (
            422,
            "validation_failed",
        ), body
    assert problem(await app.patch(path, json={"data": {}})) == (401, "missing_token")
    # Numbers and strings Supabase would not read back: refused here, never a 5xx upstream.
    for raw in (
        b'{"data": {"x": NaN}}',
        b'{"data": {"x": 1e999}}',
        b'{"data": {"x": -Infinity}}',
        b'{"data": {"x": "\\ud800"}}',
        b'{"data": {"\\udfff": 1}}',
    ):
        answer = await app.patch(
            path, headers={**auth, "content-type": "application/json"}, content=raw
        )
        assert answer.status_code in (400, 422), (raw, answer.text)
    # Beyond 2^53 is refused by the strict JSON edge, before any model sees it.
    huge = await app.patch(path, headers=auth, json={"data": {"x": 10**20}})
    assert problem(huge) == (400, "malformed_json")


async def test_profile_cannot_grow_past_the_limit_in_small_steps(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    tokens = await login(app, email)
    path = f"{AUTH}/profile"
    for step in range(3):
        chunk = {f"s{step}k{i}": "x" * 100 for i in range(10)}
        assert (
            await app.patch(path, headers=bearer(tokens), json={"data": chunk})
        ).status_code == 200
        refreshed = await app.post(
            f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        tokens = refreshed.json()
    # 30 keys of ~110 bytes: 3.3 KiB; another 10 would pass alone but not merged.
    more = {f"s9k{i}": "x" * 100 for i in range(10)}
    assert problem(await app.patch(path, headers=bearer(tokens), json={"data": more})) == (
        422,
        "validation_failed",
    )


async def test_delete_account_with_the_password_ends_every_session(
    app: httpx.AsyncClient, second: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    uid, email = await seed(mailing_auth)
    here, elsewhere = await login(app, email), await login(second, email)
    wrong = await app.request(
        "DELETE", f"{AUTH}/account", headers=bearer(here), json={"current_password": "Nope-123a"}
    )
    assert problem(wrong) == (401, "invalid_credentials")
    neither = await app.request("DELETE", f"{AUTH}/account", headers=bearer(here), json={})
    assert problem(neither) == (422, "validation_failed")
    gone = await app.request(
        "DELETE",
        f"{AUTH}/account",
        headers=bearer(here),
        json={"current_password": TEST_PASSWORD},
    )
    assert gone.status_code == 204, gone.text
    for tokens in (here, elsewhere):
        assert problem(await second.get(f"{AUTH}/me", headers=bearer(tokens))) == (
            401,
            "session_revoked",
        )
    again = await app.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    assert problem(again) == (401, "invalid_credentials")

    def upstream_user() -> Any:
        with admin_api(mailing_auth) as api:
            return api.get_user_by_id(uid)

    with pytest.raises(Exception, match=r"(?i)not found"):
        await anyio.to_thread.run_sync(upstream_user)


async def test_delete_account_with_the_mailed_nonce(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    tokens = await login(app, email)
    await app.post(f"{AUTH}/reauthenticate", headers=bearer(tokens))
    mail = await latest(mailing_auth, email, "reauthentication")
    gone = await app.request(
        "DELETE", f"{AUTH}/account", headers=bearer(tokens), json={"nonce": mail["otp"]}
    )
    assert gone.status_code == 204, gone.text
    assert problem(await app.get(f"{AUTH}/me", headers=bearer(tokens))) == (
        401,
        "session_revoked",
    )


async def test_reauthentication_mails_are_rate_limited_per_account(
    running_apps: Any, lifecycle_settings: Any, mailing_auth: LocalAuth
) -> None:
    app = await running_apps(lifecycle_settings(rate_limits="mail=1/60"))
    _, email = await seed(mailing_auth)
    tokens = await login(app, email)
    assert (await app.post(f"{AUTH}/reauthenticate", headers=bearer(tokens))).status_code == 202
    again = await app.post(f"{AUTH}/reauthenticate", headers=bearer(tokens))
    assert problem(again) == (429, "rate_limited")
