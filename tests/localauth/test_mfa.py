"""MFA TOTP: enrollment, challenge, verify and step-up to aal2, unenroll, admin factors."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pyotp
import pytest
from supabase_auth import SyncGoTrueAdminAPI, SyncGoTrueClient
from supabase_auth.errors import AuthApiError

from tests.localauth.conftest import (
    PASSWORD,
    async_admin_api,
    async_user_client,
    user_client,
)
from tests.support.localauth import LocalAuth


def _signed_in(server: LocalAuth, http: httpx.Client, email: str) -> SyncGoTrueClient:
    client = user_client(server, http)
    client.sign_in_with_password({"email": email, "password": PASSWORD})
    return client


def _claims(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _enrolled(client: SyncGoTrueClient, name: str = "phone app") -> tuple[str, pyotp.TOTP]:
    enrolled = client.mfa.enroll(
        {"factor_type": "totp", "friendly_name": name, "issuer": "supaguard"}
    )
    assert enrolled.totp is not None
    return enrolled.id, pyotp.TOTP(enrolled.totp.secret)


def _wrong_code(totp: pyotp.TOTP) -> str:
    """A code outside the accepted window (the previous, current and next step)."""
    now = time.time()
    accepted = {totp.at(now + step) for step in (-30, 0, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in accepted)


def test_enroll_returns_secret_uri_and_svg_qr_code(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    client = _signed_in(server, http, confirmed_user[1])
    enrolled = client.mfa.enroll(
        {"factor_type": "totp", "friendly_name": "laptop", "issuer": "supaguard"}
    )
    assert enrolled.type == "totp"
    assert enrolled.friendly_name == "laptop"
    assert enrolled.totp is not None
    assert len(enrolled.totp.secret) == 32
    assert enrolled.totp.uri == (
        f"otpauth://totp/supaguard:{confirmed_user[1]}?algorithm=SHA1&digits=6"
        f"&issuer=supaguard&period=30&secret={enrolled.totp.secret}"
    )
    # GoTrue sends raw SVG; the SDK turns it into a data URI
    assert enrolled.totp.qr_code.startswith("data:image/svg+xml;utf-8,<svg")
    factors = client.mfa.list_factors()
    assert [f.id for f in factors.all] == [enrolled.id]
    assert factors.all[0].status == "unverified"
    assert factors.totp == []
    with pytest.raises(AuthApiError) as conflict:
        client.mfa.enroll({"factor_type": "totp", "friendly_name": "laptop"})
    assert (conflict.value.status, conflict.value.code) == (422, "mfa_factor_name_conflict")
    with pytest.raises(AuthApiError) as phone:
        client.mfa.enroll({"factor_type": "phone", "phone": "+15555550100"})
    assert phone.value.code == "mfa_phone_enroll_not_enabled"


def test_totp_step_up_to_aal2(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    client = _signed_in(server, http, confirmed_user[1])
    other = _signed_in(server, http, confirmed_user[1])
    before = client.mfa.get_authenticator_assurance_level()
    assert (before.current_level, before.next_level) == ("aal1", "aal1")
    factor_id, totp = _enrolled(client)
    challenge = client.mfa.challenge({"factor_id": factor_id})
    assert challenge.factor_type == "totp"
    bad = _wrong_code(totp)
    with pytest.raises(AuthApiError) as wrong:
        client.mfa.verify({"factor_id": factor_id, "challenge_id": challenge.id, "code": bad})
    assert (wrong.value.status, wrong.value.code) == (422, "mfa_verification_failed")
    verified = client.mfa.verify(
        {"factor_id": factor_id, "challenge_id": challenge.id, "code": totp.now()}
    )
    claims = _claims(verified.access_token)
    assert claims["aal"] == "aal2"
    amr = claims["amr"]
    assert isinstance(amr, list)
    assert [e["method"] for e in amr] == ["totp", "password"]
    level = client.mfa.get_authenticator_assurance_level()
    assert (level.current_level, level.next_level) == ("aal2", "aal2")
    assert [m.method for m in level.current_authentication_methods] == ["totp", "password"]
    # a used challenge cannot be replayed
    with pytest.raises(AuthApiError) as replay:
        client.mfa.verify(
            {"factor_id": factor_id, "challenge_id": challenge.id, "code": totp.now()}
        )
    assert replay.value.code == "mfa_ip_address_mismatch"
    # other aal1 sessions of the user end
    with pytest.raises(AuthApiError) as ended:
        other.get_user()
    assert ended.value.code == "session_not_found"
    # the refreshed session keeps aal2
    refreshed = client.refresh_session().session
    assert refreshed is not None
    assert _claims(refreshed.access_token)["aal"] == "aal2"
    # a fresh password login is aal1 with aal2 as its next level
    fresh = _signed_in(server, http, confirmed_user[1])
    level = fresh.mfa.get_authenticator_assurance_level()
    assert (level.current_level, level.next_level) == ("aal1", "aal2")
    assert [f.id for f in fresh.mfa.list_factors().totp] == [factor_id]
    with pytest.raises(AuthApiError) as needs_aal2:
        fresh.update_user({"password": "a-new-password-9"})
    assert (needs_aal2.value.status, needs_aal2.value.code) == (401, "insufficient_aal")
    with pytest.raises(AuthApiError) as unenroll_aal1:
        fresh.mfa.unenroll({"factor_id": factor_id})
    assert (unenroll_aal1.value.status, unenroll_aal1.value.code) == (422, "insufficient_aal")
    with pytest.raises(AuthApiError) as enroll_aal1:
        fresh.mfa.enroll({"factor_type": "totp", "friendly_name": "second"})
    assert enroll_aal1.value.code == "insufficient_aal"
    # challenge_and_verify steps the fresh session up; then it may unenroll
    stepped = fresh.mfa.challenge_and_verify({"factor_id": factor_id, "code": totp.now()})
    assert _claims(stepped.access_token)["aal"] == "aal2"
    assert fresh.mfa.unenroll({"factor_id": factor_id}).id == factor_id
    assert fresh.mfa.list_factors().all == []
    # the session falls back to aal1 (seen in the next token) and the user has no factors
    after = fresh.refresh_session().session
    assert after is not None
    assert _claims(after.access_token)["aal"] == "aal1"
    assert after.user.factors is None


def test_factor_errors(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    client = _signed_in(server, http, confirmed_user[1])
    with pytest.raises(AuthApiError) as missing:
        client.mfa.challenge({"factor_id": str(uuid.uuid4())})
    assert (missing.value.status, missing.value.code) == (404, "mfa_factor_not_found")
    factor_id, totp = _enrolled(client)
    with pytest.raises(AuthApiError) as no_challenge:
        client.mfa.verify(
            {"factor_id": factor_id, "challenge_id": str(uuid.uuid4()), "code": totp.now()}
        )
    assert (no_challenge.value.status, no_challenge.value.code) == (422, "mfa_factor_not_found")
    with pytest.raises(AuthApiError) as bad_type:
        client.mfa.enroll({"factor_type": "sms"})  # type: ignore[typeddict-item]
    assert bad_type.value.code == "validation_failed"
    # an unverified factor may be removed at aal1
    assert client.mfa.unenroll({"factor_id": factor_id}).id == factor_id


def test_admin_lists_and_deletes_factors(
    server: LocalAuth,
    http: httpx.Client,
    admin: SyncGoTrueAdminAPI,
    confirmed_user: tuple[str, str],
) -> None:
    uid, email = confirmed_user
    client = _signed_in(server, http, email)
    factor_id, totp = _enrolled(client)
    client.mfa.challenge_and_verify({"factor_id": factor_id, "code": totp.now()})
    (listed,) = admin.mfa.list_factors({"user_id": uid})
    assert (listed.id, listed.status, listed.factor_type) == (factor_id, "verified", "totp")
    assert admin.mfa.delete_factor({"user_id": uid, "id": factor_id}).id == factor_id
    assert admin.mfa.list_factors({"user_id": uid}) == []
    # the session the factor had raised falls back to aal1
    session = client.refresh_session().session
    assert session is not None
    assert _claims(session.access_token)["aal"] == "aal1"
    with pytest.raises(AuthApiError) as gone:
        admin.mfa.delete_factor({"user_id": uid, "id": factor_id})
    assert gone.value.code == "mfa_factor_not_found"
    with pytest.raises(AuthApiError) as no_user:
        admin.mfa.list_factors({"user_id": str(uuid.uuid4())})
    assert (no_user.value.status, no_user.value.code) == (404, "user_not_found")


@pytest.mark.anyio
async def test_async_client_enrolls_and_steps_up(
    server: LocalAuth, confirmed_user: tuple[str, str]
) -> None:
    uid, email = confirmed_user
    async with httpx.AsyncClient(timeout=10.0) as http:
        client = async_user_client(server, http)
        await client.sign_in_with_password({"email": email, "password": PASSWORD})
        enrolled = await client.mfa.enroll({"factor_type": "totp", "friendly_name": "async"})
        assert enrolled.totp is not None
        totp = pyotp.TOTP(enrolled.totp.secret)
        challenge = await client.mfa.challenge({"factor_id": enrolled.id})
        verified = await client.mfa.verify(
            {"factor_id": enrolled.id, "challenge_id": challenge.id, "code": totp.now()}
        )
        assert _claims(verified.access_token)["aal"] == "aal2"
        level = await client.mfa.get_authenticator_assurance_level()
        assert level.current_level == "aal2"
        factors = await client.mfa.list_factors()
        assert [f.id for f in factors.totp] == [enrolled.id]
        stepped = await client.mfa.challenge_and_verify(
            {"factor_id": enrolled.id, "code": totp.now()}
        )
        assert _claims(stepped.access_token)["aal"] == "aal2"
        admin = async_admin_api(server, http)
        (listed,) = await admin.mfa.list_factors({"user_id": uid})
        assert listed.id == enrolled.id
        assert (await client.mfa.unenroll({"factor_id": enrolled.id})).id == enrolled.id
        assert await admin.mfa.list_factors({"user_id": uid}) == []
