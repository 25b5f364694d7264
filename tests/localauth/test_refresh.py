"""Refresh-token rotation, the parent rule, the reuse interval and reuse detection."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jwt
import pytest
from supabase_auth import SyncGoTrueAdminAPI
from supabase_auth.errors import AuthApiError
from supabase_auth.types import Session

from tests.localauth.conftest import PASSWORD, ClientFactory, admin_api, unique_email, user_client
from tests.support.localauth import LocalAuth, run_localauth


def _sign_in(new_client: ClientFactory, email: str) -> Session:
    session = new_client().sign_in_with_password({"email": email, "password": PASSWORD}).session
    assert session is not None
    return session


def _sid(session: Session) -> str:
    sid: str = jwt.decode(session.access_token, options={"verify_signature": False})["session_id"]
    return sid


def test_rotation_keeps_session_and_issues_lowercase_12_char_tokens(
    new_client: ClientFactory, confirmed_user: tuple[str, str]
) -> None:
    first = _sign_in(new_client, confirmed_user[1])
    second = new_client().refresh_session(first.refresh_token).session
    assert second is not None
    assert second.refresh_token != first.refresh_token
    for token in (first.refresh_token, second.refresh_token):
        assert len(token) == 12
        assert token.isalnum()
        assert token == token.lower()
    assert _sid(second) == _sid(first)
    assert second.user.id == confirmed_user[0]
    assert second.expires_in == 3600
    assert second.token_type == "bearer"


def test_parent_of_active_token_returns_the_active_token(
    new_client: ClientFactory, confirmed_user: tuple[str, str]
) -> None:
    first = _sign_in(new_client, confirmed_user[1])
    second = new_client().refresh_session(first.refresh_token).session
    assert second is not None
    again = new_client().refresh_session(first.refresh_token).session
    assert again is not None
    assert again.refresh_token == second.refresh_token
    third = new_client().refresh_session(second.refresh_token).session
    assert third is not None
    assert third.refresh_token != second.refresh_token


def test_reuse_of_older_token_is_already_used_and_revokes_the_family(
    new_client: ClientFactory, confirmed_user: tuple[str, str]
) -> None:
    first = _sign_in(new_client, confirmed_user[1])
    other = _sign_in(new_client, confirmed_user[1])
    second = new_client().refresh_session(first.refresh_token).session
    assert second is not None
    third = new_client().refresh_session(second.refresh_token).session
    assert third is not None
    with pytest.raises(AuthApiError) as info:
        new_client().refresh_session(first.refresh_token)
    assert (info.value.status, info.value.code) == (400, "refresh_token_already_used")
    assert info.value.message == "Invalid Refresh Token: Already Used"
    # The whole family of that session is revoked, including the token that was active ...
    with pytest.raises(AuthApiError) as family:
        new_client().refresh_session(third.refresh_token)
    assert str(family.value.code) == "refresh_token_already_used"
    # ... but another session of the same user is untouched.
    assert new_client().refresh_session(other.refresh_token).session is not None


def test_token_format_is_checked_first(new_client: ClientFactory) -> None:
    for bad in ("short", "ABCDEFGHIJKL", "x" * 40, ""):
        with pytest.raises(AuthApiError) as info:
            new_client()._refresh_access_token(bad)
        assert (info.value.status, info.value.code) == (400, "validation_failed")
    with pytest.raises(AuthApiError) as missing:
        new_client().refresh_session("abcdefghijkl")
    assert (missing.value.status, missing.value.code) == (400, "refresh_token_not_found")


def test_concurrent_refreshes_of_one_token_never_fail(
    server: LocalAuth, new_client: ClientFactory, confirmed_user: tuple[str, str]
) -> None:
    first = _sign_in(new_client, confirmed_user[1])
    with httpx.Client(timeout=10.0) as http:

        def refresh(_: int) -> httpx.Response:
            return http.post(
                server.url + "/auth/v1/token?grant_type=refresh_token",
                json={"refresh_token": first.refresh_token},
            )

        with ThreadPoolExecutor(max_workers=16) as pool:
            responses = list(pool.map(refresh, range(32)))
    assert {r.status_code for r in responses} == {200}
    # Every caller got the one child of the presented token (the parent rule).
    assert len({r.json()["refresh_token"] for r in responses}) == 1


def test_banned_user_cannot_refresh(
    admin: SyncGoTrueAdminAPI, new_client: ClientFactory, confirmed_user: tuple[str, str]
) -> None:
    session = _sign_in(new_client, confirmed_user[1])
    admin.update_user_by_id(confirmed_user[0], {"ban_duration": "1h"})
    with pytest.raises(AuthApiError) as info:
        new_client().refresh_session(session.refresh_token)
    assert (info.value.status, info.value.code) == (400, "user_banned")


def test_reuse_interval_is_honoured(tmp_path: Path) -> None:
    env = {"GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL": "60"}
    with run_localauth(tmp_path, env=env) as la, httpx.Client() as http:
        email = unique_email()
        admin_api(la, http).create_user(
            {"email": email, "password": PASSWORD, "email_confirm": True}
        )
        client = user_client(la, http)
        first = client.sign_in_with_password({"email": email, "password": PASSWORD}).session
        assert first is not None
        second = client.refresh_session(first.refresh_token).session
        assert second is not None
        third = client.refresh_session(second.refresh_token).session
        assert third is not None
        # Two rotations behind, but within the interval: honoured with a fresh token.
        late = client.refresh_session(first.refresh_token).session
        assert late is not None
        assert late.refresh_token not in {second.refresh_token, third.refresh_token}
        assert _sid(late) == _sid(first)
