"""MFA TOTP end to end: enrol, list, challenge, verify to aal2 (recorded in Redis), the
admin aal2 requirement, unenrol lowering sessions on every instance, lockout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import anyio
import httpx
import jwt
import pyotp
import pytest

from app.settings import Settings
from tests.conftest import TEST_PASSWORD, app_env
from tests.integration.lifecycle.conftest import (
    AUTH,
    NEW_PASSWORD,
    LifecycleSettings,
    bearer,
    login,
    problem,
    seed,
)
from tests.support.localauth import LocalAuth, run_localauth
from tests.support.mailbox import latest

pytestmark = pytest.mark.anyio
MFA = f"{AUTH}/mfa/factors"


def claims(tokens: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(
        tokens["access_token"], options={"verify_signature": False}
    )
    return decoded


async def enrol_and_verify(
    client: httpx.AsyncClient, tokens: dict[str, Any]
) -> tuple[str, pyotp.TOTP, dict[str, Any]]:
    enrolled = await client.post(MFA, headers=bearer(tokens), json={"friendly_name": "phone"})
    assert enrolled.status_code == 201, enrolled.text
    factor = enrolled.json()
    totp = pyotp.TOTP(factor["totp"]["secret"])
    challenge = await client.post(f"{MFA}/{factor['id']}/challenge", headers=bearer(tokens))
    assert challenge.status_code == 201, challenge.text
    verified = await client.post(
        f"{MFA}/{factor['id']}/verify",
        headers=bearer(tokens),
        json={"challenge_id": challenge.json()["id"], "code": totp.now()},
    )
    assert verified.status_code == 200, verified.text
    return factor["id"], totp, verified.json()


async def test_enrol_verify_and_the_admin_aal2_requirement(
    running_apps: Any, lifecycle_settings: LifecycleSettings, mailing_auth: LocalAuth
) -> None:
    a = await running_apps(lifecycle_settings(admin_require_aal2="true"))
    b = await running_apps(lifecycle_settings(admin_require_aal2="true"))
    _, email = await seed(mailing_auth, roles=["admin"])
    tokens, other = await login(a, email), await login(a, email)
    assert problem(await a.get("/api/v1/admin/users", headers=bearer(tokens))) == (
        403,
        "insufficient_aal",
    )
    enrolled = await a.post(MFA, headers=bearer(tokens), json={"friendly_name": "laptop"})
    factor = enrolled.json()
    assert factor["totp"]["qr_code"].startswith("data:image/svg+xml")
    # An <img> shows it only if nothing in it ends the URI early (a raw "#").
    _, _, svg = factor["totp"]["qr_code"].partition(",")
    assert "#" not in svg
    assert "<" not in svg
    assert unquote(svg).startswith("<svg")
    assert factor["totp"]["uri"].startswith("otpauth://totp/")
    listed = await b.get(MFA, headers=bearer(tokens))
    assert [(f["id"], f["status"]) for f in listed.json()["factors"]] == [
        (factor["id"], "unverified")
    ]
    challenge = await a.post(f"{MFA}/{factor['id']}/challenge", headers=bearer(tokens))
    code = pyotp.TOTP(factor["totp"]["secret"]).now()
    verified = await b.post(
        f"{MFA}/{factor['id']}/verify",
        headers=bearer(tokens),
        json={"challenge_id": challenge.json()["id"], "code": code},
    )
    assert verified.status_code == 200, verified.text
    stepped = verified.json()
    assert claims(stepped)["aal"] == "aal2"
    assert claims(stepped)["session_id"] == claims(tokens)["session_id"]
    assert (await a.get(f"{AUTH}/me", headers=bearer(stepped))).json()["aal"] == "aal2"
    # The admin routes open to the aal2 session on both instances.
    assert (await a.get("/api/v1/admin/users", headers=bearer(stepped))).status_code == 200
    assert (await b.get("/api/v1/admin/users", headers=bearer(stepped))).status_code == 200
    # As Supabase: the user's other aal1 session ended, here on every instance too.
    assert problem(await b.get(f"{AUTH}/me", headers=bearer(other))) == (401, "session_revoked")
    # The swapped refresh token keeps the session at aal2.
    refreshed = await b.post(f"{AUTH}/refresh", json={"refresh_token": stepped["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    assert claims(refreshed.json())["aal"] == "aal2"
    after = (await a.get(MFA, headers=bearer(stepped))).json()["factors"]
    assert [f["status"] for f in after] == ["verified"]


async def test_unenrol_needs_aal2_and_lowers_the_session_on_every_instance(
    running_apps: Any, lifecycle_settings: LifecycleSettings, mailing_auth: LocalAuth
) -> None:
    a = await running_apps(lifecycle_settings(admin_require_aal2="true"))
    b = await running_apps(lifecycle_settings(admin_require_aal2="true"))
    _, email = await seed(mailing_auth, roles=["admin"])
    first = await login(a, email)
    factor_id, totp, stepped = await enrol_and_verify(a, first)
    # A new sign-in is aal1 until it answers a challenge: it may not remove the factor.
    fresh = await login(b, email)
    refused = await b.delete(f"{MFA}/{factor_id}", headers=bearer(fresh))
    assert problem(refused) == (403, "insufficient_aal")
    # Challenge and answer in one request also raises a session to aal2.
    one_step = await b.post(
        f"{MFA}/{factor_id}/verify", headers=bearer(fresh), json={"code": totp.now()}
    )
    assert one_step.status_code == 200, one_step.text
    assert claims(one_step.json())["aal"] == "aal2"
    removed = await a.delete(f"{MFA}/{factor_id}", headers=bearer(stepped))
    assert removed.status_code == 204, removed.text
    # The token still says aal2 until it expires, but the session is aal1 everywhere now.
    assert claims(stepped)["aal"] == "aal2"
    lowered = await b.get("/api/v1/admin/users", headers=bearer(stepped))
    assert problem(lowered) == (403, "insufficient_aal")
    refreshed = await b.post(f"{AUTH}/refresh", json={"refresh_token": stepped["refresh_token"]})
    assert claims(refreshed.json())["aal"] == "aal1"
    assert (await a.get(MFA, headers=bearer(refreshed.json()))).json()["factors"] == []


async def test_mfa_errors_and_code_lockout(app: httpx.AsyncClient, mailing_auth: LocalAuth) -> None:
    _, email = await seed(mailing_auth)
    tokens = await login(app, email)
    assert problem(await app.get(MFA)) == (401, "missing_token")
    assert problem(await app.post(f"{MFA}/not-a-uuid/challenge", headers=bearer(tokens))) == (
        404,
        "not_found",
    )
    missing = "00000000-0000-4000-8000-000000000000"
    assert problem(await app.post(f"{MFA}/{missing}/challenge", headers=bearer(tokens))) == (
        404,
        "not_found",
    )
    abandoned = (await app.post(MFA, headers=bearer(tokens), json={})).json()
    retry = await app.post(MFA, headers=bearer(tokens), json={})
    assert problem(retry) == (409, "factor_exists")
    # An abandoned enrolment can be removed at aal1, so the user can start again.
    removed = await app.delete(f"{MFA}/{abandoned['id']}", headers=bearer(tokens))
    assert removed.status_code == 204, removed.text
    assert problem(await app.delete(f"{MFA}/{abandoned['id']}", headers=bearer(tokens))) == (
        404,
        "not_found",
    )
    factor = (await app.post(MFA, headers=bearer(tokens), json={"friendly_name": "a"})).json()
    dup = await app.post(MFA, headers=bearer(tokens), json={"friendly_name": "a"})
    assert problem(dup) == (409, "factor_exists")
    totp = pyotp.TOTP(factor["totp"]["secret"])
    challenge = (await app.post(f"{MFA}/{factor['id']}/challenge", headers=bearer(tokens))).json()
    verify = f"{MFA}/{factor['id']}/verify"
    bad_shape = await app.post(
        verify, headers=bearer(tokens), json={"challenge_id": challenge["id"], "code": "12"}
    )
    assert problem(bad_shape) == (422, "validation_failed")
    unknown = await app.post(
        verify, headers=bearer(tokens), json={"challenge_id": missing, "code": totp.now()}
    )
    assert problem(unknown) == (404, "not_found")
    now = time.time()
    live = {totp.at(now + step) for step in (-60, -30, 0, 30, 60)}  # the accepted window
    wrong = [f"{n:06d}" for n in range(500000, 500010) if f"{n:06d}" not in live][:5]
    for guess in wrong:
        answer = await app.post(
            verify, headers=bearer(tokens), json={"challenge_id": challenge["id"], "code": guess}
        )
        assert problem(answer) == (401, "invalid_mfa_code")
    locked = await app.post(
        verify, headers=bearer(tokens), json={"challenge_id": challenge["id"], "code": totp.now()}
    )
    assert problem(locked) == (429, "locked_out")


async def test_deleting_an_mfa_account_needs_aal2(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    _, email = await seed(mailing_auth)
    first = await login(app, email)
    _, _, stepped = await enrol_and_verify(app, first)
    weak = await login(app, email)
    body = {"current_password": TEST_PASSWORD}
    refused = await app.request("DELETE", f"{AUTH}/account", headers=bearer(weak), json=body)
    assert problem(refused) == (403, "insufficient_aal")
    changed = await app.post(
        f"{AUTH}/password/change",
        headers=bearer(weak),
        json={"current_password": TEST_PASSWORD, "password": NEW_PASSWORD},
    )
    assert problem(changed) == (403, "insufficient_aal")
    gone = await app.request("DELETE", f"{AUTH}/account", headers=bearer(stepped), json=body)
    assert gone.status_code == 204, gone.text


async def test_with_mfa_on_reset_and_email_change_need_aal2(
    app: httpx.AsyncClient, mailing_auth: LocalAuth
) -> None:
    """As in Supabase: a mailed code alone is one factor, so it cannot change the password of
    an MFA account; the half-open recovery session is not handed out."""
    _, email = await seed(mailing_auth)
    first = await login(app, email)
    await enrol_and_verify(app, first)
    weak = await login(app, email)
    moved = await app.post(
        f"{AUTH}/email/change", headers=bearer(weak), json={"email": "elsewhere@example.com"}
    )
    assert problem(moved) == (403, "insufficient_aal")
    await app.post(f"{AUTH}/password/recover", json={"email": email})
    mail = await latest(mailing_auth, email, "recovery")
    reset = await app.post(
        f"{AUTH}/password/reset",
        json={"email": email, "code": mail["otp"], "password": NEW_PASSWORD},
    )
    assert problem(reset) == (403, "insufficient_aal")
    await login(app, email)  # the password did not change


@pytest.fixture(scope="module")
def quick_expiry_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAuth]:
    """A localauth whose MFA challenges expire after one second."""
    with run_localauth(
        tmp_path_factory.mktemp("localauth-mfa-expiry"),
        env={"GOTRUE_MFA_CHALLENGE_EXPIRY_DURATION": "1s"},
    ) as server:
        yield server


async def test_an_expired_challenge_is_refused_and_a_fresh_one_works(
    running_apps: Any, quick_expiry_auth: LocalAuth, redis_url: str, redis_prefix: str
) -> None:
    settings = Settings.from_environ(app_env(quick_expiry_auth, redis_url, redis_prefix))
    app = await running_apps(settings)
    _, email = await seed(quick_expiry_auth)
    tokens = await login(app, email)
    factor = (await app.post(MFA, headers=bearer(tokens), json={})).json()
    totp = pyotp.TOTP(factor["totp"]["secret"])
    challenge = (await app.post(f"{MFA}/{factor['id']}/challenge", headers=bearer(tokens))).json()
    # Wait for the upstream's clock to pass the expiry it announced, whole seconds (bounded).
    with anyio.fail_after(5):
        while time.time() <= challenge["expires_at"] + 1.1:
            await anyio.sleep(0.1)
    late = await app.post(
        f"{MFA}/{factor['id']}/verify",
        headers=bearer(tokens),
        json={"challenge_id": challenge["id"], "code": totp.now()},
    )
    assert problem(late) == (422, "mfa_challenge_invalid")
    fresh = await app.post(
        f"{MFA}/{factor['id']}/verify", headers=bearer(tokens), json={"code": totp.now()}
    )
    assert fresh.status_code == 200, fresh.text
