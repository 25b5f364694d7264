"""Logout scopes end exactly the right sessions."""

from __future__ import annotations

import httpx
import pytest
from supabase_auth import SyncGoTrueAdminAPI
from supabase_auth.errors import AuthApiError
from supabase_auth.types import Session

from tests.localauth.conftest import PASSWORD, ClientFactory
from tests.support.localauth import LocalAuth


def _sessions(new_client: ClientFactory, email: str, n: int) -> list[Session]:
    out = []
    for _ in range(n):
        session = new_client().sign_in_with_password({"email": email, "password": PASSWORD}).session
        assert session is not None
        out.append(session)
    return out


def _alive(new_client: ClientFactory, session: Session) -> bool:
    try:
        new_client().get_user(session.access_token)
    except AuthApiError as exc:
        error = exc
    else:
        return True
    assert (error.status, error.code) == (403, "session_not_found")
    with pytest.raises(AuthApiError) as refresh:
        new_client().refresh_session(session.refresh_token)
    assert (refresh.value.status, refresh.value.code) == (400, "refresh_token_not_found")
    return False


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("global", [False, False, False]),
        ("local", [False, True, True]),
        ("others", [True, False, False]),
    ],
)
def test_scopes(
    scope: str,
    expected: list[bool],
    admin: SyncGoTrueAdminAPI,
    new_client: ClientFactory,
    confirmed_user: tuple[str, str],
) -> None:
    sessions = _sessions(new_client, confirmed_user[1], 3)
    admin.sign_out(sessions[0].access_token, scope)  # type: ignore[arg-type]
    assert [_alive(new_client, s) for s in sessions] == expected


def test_logout_answers_204_and_rejects_unknown_scope(
    server: LocalAuth,
    http: httpx.Client,
    new_client: ClientFactory,
    confirmed_user: tuple[str, str],
) -> None:
    (session,) = _sessions(new_client, confirmed_user[1], 1)
    auth = {"Authorization": f"Bearer {session.access_token}"}
    bad = http.post(server.url + "/logout?scope=everything", headers=auth)
    assert (bad.status_code, bad.json()["error_code"]) == (400, "validation_failed")
    ok = http.post(server.url + "/auth/v1/logout", headers=auth)
    assert (ok.status_code, ok.content) == (204, b"")
    assert not _alive(new_client, session)


def test_client_sign_out_clears_local_session(
    server: LocalAuth, http: httpx.Client, confirmed_user: tuple[str, str]
) -> None:
    from supabase_auth import SyncGoTrueClient

    client = SyncGoTrueClient(
        url=server.url + "/auth/v1", headers={}, http_client=http, auto_refresh_token=False
    )
    client.sign_in_with_password({"email": confirmed_user[1], "password": PASSWORD})
    session = client.get_session()
    assert session is not None
    client.sign_out({"scope": "local"})
    assert client.get_session() is None
    with pytest.raises(AuthApiError) as info:
        client.get_user(session.access_token)
    assert info.value.code == "session_not_found"
