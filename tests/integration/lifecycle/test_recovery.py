"""Password recovery end to end: request, the mailed code or link, reset, revocation."""

from __future__ import annotations

import anyio
import httpx
import pytest
import structlog
import structlog.testing

from tests.conftest import TEST_PASSWORD, new_email
from tests.integration.lifecycle.conftest import (
    AUTH,
    NEW_PASSWORD,
    LifecycleSettings,
    bearer,
    login,
    problem,
    seed,
)
from tests.support.localauth import LocalAuth, free_port
from tests.support.mailbox import latest, messages

pytestmark = pytest.mark.anyio


async def test_reset_with_the_mailed_code_ends_every_other_session_on_every_instance(
    app: httpx.AsyncClient, second: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    laptop, phone = await login(app, email), await login(app, email)
    sent = await app.post(f"{AUTH}/password/recover", json={"email": email})
    assert sent.status_code == 202
    mail = await latest(mailing_auth, email, "recovery")

    reset = await second.post(
        f"{AUTH}/password/reset",
        json={"email": email, "code": mail["otp"], "password": NEW_PASSWORD},
    )
    assert reset.status_code == 200, reset.text
    fresh = reset.json()
    assert fresh["user"]["email"] == email
    # The old sessions end at once, on the instance that did not do the reset too.
    for old in (laptop, phone):
        assert problem(await app.get(f"{AUTH}/me", headers=bearer(old))) == (
            401,
            "session_revoked",
        )
        refused = await app.post(f"{AUTH}/refresh", json={"refresh_token": old["refresh_token"]})
        assert refused.status_code == 401
    assert (await app.get(f"{AUTH}/me", headers=bearer(fresh))).status_code == 200
    old_password = await app.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    assert problem(old_password) == (401, "invalid_credentials")
    await login(app, email, NEW_PASSWORD)
    # The code is single use.
    again = await app.post(
        f"{AUTH}/password/reset",
        json={"email": email, "code": mail["otp"], "password": "Another-Pass-77"},
    )
    assert problem(again) == (401, "invalid_code")


async def test_reset_with_the_links_token_hash(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    assert (await app.post(f"{AUTH}/password/recover", json={"email": email})).status_code == 202
    mail = await latest(mailing_auth, email, "recovery")
    reset = await app.post(
        f"{AUTH}/password/reset",
        json={"token_hash": mail["token_hash"], "password": NEW_PASSWORD},
    )
    assert reset.status_code == 200, reset.text
    await login(app, email, NEW_PASSWORD)


async def test_request_answers_the_same_for_unknown_and_just_mailed_addresses(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    """No enumeration: an unknown address, a known one, and a known one Supabase refuses to
    mail again so soon (its per-user send interval) all get the same 202 body."""
    _, email = await seed(mailing_auth)
    unknown = new_email()
    answers = [
        await app.post(f"{AUTH}/password/recover", json={"email": address})
        for address in (unknown, email, email)
    ]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert len({a.content for a in answers}) == 1
    assert await messages(mailing_auth, unknown) == []
    assert len(await messages(mailing_auth, email, "recovery")) == 1


async def test_reset_errors(app: httpx.AsyncClient, mailing_auth: LocalAuth) -> None:
    _, email = await seed(mailing_auth)
    await app.post(f"{AUTH}/password/recover", json={"email": email})
    mail = await latest(mailing_auth, email, "recovery")
    wrong = "000000" if mail["otp"] != "000000" else "111111"
    cases = [
        ({"email": email, "code": wrong, "password": NEW_PASSWORD}, (401, "invalid_code")),
        ({"email": email, "code": mail["otp"], "password": "weak"}, (422, "weak_password")),
        ({"email": email, "password": NEW_PASSWORD}, (422, "validation_failed")),
        (
            {
                "email": email,
                "code": mail["otp"],
                "token_hash": mail["token_hash"],
                "password": "x",
            },
            (422, "validation_failed"),
        ),
        ({"email": email, "code": "12ab56", "password": NEW_PASSWORD}, (422, "validation_failed")),
        ({"token_hash": "0" * 56, "password": NEW_PASSWORD}, (401, "invalid_code")),
    ]
    for body, expected in cases:
        assert problem(await app.post(f"{AUTH}/password/reset", json=body)) == expected, body
    # The weak password was refused before the code was spent.
    ok = await app.post(
        f"{AUTH}/password/reset",
        json={"email": email, "code": mail["otp"], "password": NEW_PASSWORD},
    )
    assert ok.status_code == 200, ok.text
    bad = await app.post(f"{AUTH}/password/recover", json={"email": "not-an-address"})
    assert problem(bad) == (422, "validation_failed")
    wrong_type = await app.post(
        f"{AUTH}/password/recover", content=b"email=x", headers={"content-type": "text/plain"}
    )
    assert problem(wrong_type) == (415, "unsupported_media_type")


async def test_guessing_the_code_locks_out_even_the_right_code(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    await app.post(f"{AUTH}/password/recover", json={"email": email})
    mail = await latest(mailing_auth, email, "recovery")
    guesses = [f"{n:06d}" for n in range(100000, 100006) if f"{n:06d}" != mail["otp"]][:5]
    for guess in guesses:
        body = {"email": email, "code": guess, "password": NEW_PASSWORD}
        assert problem(await app.post(f"{AUTH}/password/reset", json=body)) == (
            401,
            "invalid_code",
        )
    right = {"email": email, "code": mail["otp"], "password": NEW_PASSWORD}
    locked = await app.post(f"{AUTH}/password/reset", json=right)
    assert problem(locked) == (429, "locked_out")
    assert int(locked.headers["retry-after"]) >= 1


async def test_recovery_mails_are_rate_limited_per_client(
    running_apps: object, lifecycle_settings: LifecycleSettings
) -> None:
    app = await running_apps(lifecycle_settings(rate_limits="mail=3/60"))  # type: ignore[operator]
    statuses = [
        (await app.post(f"{AUTH}/password/recover", json={"email": new_email()})).status_code
        for _ in range(4)
    ]
    assert statuses == [202, 202, 202, 429]


async def test_recovery_mails_to_one_address_are_rate_limited(
    running_apps: object, lifecycle_settings: LifecycleSettings
) -> None:
    """However many client addresses ask, one recipient gets a bounded number of mails."""
    per_address = await running_apps(lifecycle_settings(rate_limits="mail_address=2/300"))  # type: ignore[operator]
    target = new_email()
    answers = [
        await per_address.post(f"{AUTH}/password/recover", json={"email": target}) for _ in range(3)
    ]
    assert [a.status_code for a in answers[:2]] == [202, 202]
    assert problem(answers[2]) == (429, "rate_limited")
    assert "retry-after" in answers[2].headers


async def test_two_tabs_spending_one_code_at_once_get_one_session(
    app: httpx.AsyncClient, second: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    await app.post(f"{AUTH}/password/recover", json={"email": email})
    mail = await latest(mailing_auth, email, "recovery")
    body = {"email": email, "code": mail["otp"], "password": NEW_PASSWORD}
    answers: list[httpx.Response] = []

    async def reset(client: httpx.AsyncClient) -> None:
        answers.append(await client.post(f"{AUTH}/password/reset", json=body))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for client in (app, second, app, second):
                tg.start_soon(reset, client)
    assert sorted(a.status_code for a in answers) == [200, 401, 401, 401]
    assert {problem(a) for a in answers if a.status_code != 200} == {(401, "invalid_code")}


async def test_hostile_redirects_are_refused(app: httpx.AsyncClient) -> None:
    for target in ("javascript:alert(1)", "//evil.example/", "http://a b", "x" * 3000):
        answer = await app.post(
            f"{AUTH}/password/recover", json={"email": new_email(), "redirect_to": target}
        )
        assert problem(answer) == (422, "validation_failed"), target


async def test_an_upstream_outage_is_reported_the_same_for_every_address(
    running_apps: object, lifecycle_settings: LifecycleSettings
) -> None:
    dead = await running_apps(  # type: ignore[operator]
        lifecycle_settings(supabase_url=f"http://127.0.0.1:{free_port()}")
    )
    answers = [
        await dead.post(f"{AUTH}/password/recover", json={"email": new_email()}) for _ in range(2)
    ]
    assert {problem(a) for a in answers} == {(503, "upstream_unavailable")}
    assert all("retry-after" in a.headers for a in answers)


async def test_a_reset_is_an_audit_event_without_secrets(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    uid, email = await seed(mailing_auth)
    await login(app, email)
    await app.post(f"{AUTH}/password/recover", json={"email": email})
    mail = await latest(mailing_auth, email, "recovery")
    with structlog.testing.capture_logs() as logs:
        reset = await app.post(
            f"{AUTH}/password/reset",
            json={"email": email, "code": mail["otp"], "password": NEW_PASSWORD},
        )
    assert reset.status_code == 200
    events = [e for e in logs if e.get("audit") and e["event"] == "password.reset"]
    assert [(e["event"], e["user_id"], e["sessions_ended"]) for e in events] == [
        ("password.reset", uid, 1)
    ]
    assert mail["otp"] not in repr(logs)
    assert NEW_PASSWORD not in repr(logs)
