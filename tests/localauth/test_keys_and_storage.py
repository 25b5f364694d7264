"""Signing keys, JWKS, rotation, HS256 mode, persistence and sharing one database."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from supabase_auth.errors import AuthApiError

from tests.localauth.conftest import (
    PASSWORD,
    admin_api,
    assert_clean_log,
    unique_email,
    user_client,
)
from tests.support.localauth import LocalAuth, log_path, read_env_file, run_localauth


def _jwks_kids(la: LocalAuth, http: httpx.Client) -> list[str]:
    return [k["kid"] for k in http.get(la.url + "/.well-known/jwks.json").json()["keys"]]


def _sign_in(la: LocalAuth, http: httpx.Client, email: str) -> tuple[str, str]:
    session = (
        user_client(la, http).sign_in_with_password({"email": email, "password": PASSWORD}).session
    )
    assert session is not None
    return session.access_token, session.refresh_token


def _new_user(la: LocalAuth, http: httpx.Client) -> str:
    email = unique_email()
    admin_api(la, http).create_user({"email": email, "password": PASSWORD, "email_confirm": True})
    return email


def test_jwks_publishes_only_public_keys(server: LocalAuth, http: httpx.Client) -> None:
    response = http.get(server.url + "/auth/v1/.well-known/jwks.json")
    assert response.headers["cache-control"] == "public, max-age=600"
    (key,) = response.json()["keys"]
    assert key["kty"] == "EC"
    assert key["crv"] == "P-256"
    assert "d" not in key
    assert (key["alg"], key["key_ops"], key["use"]) == ("ES256", ["verify"], "sig")


def test_issued_token_verifies_with_pyjwkclient(server: LocalAuth, http: httpx.Client) -> None:
    token, _ = _sign_in(server, http, _new_user(server, http))
    client = jwt.PyJWKClient(server.url + "/auth/v1/.well-known/jwks.json")
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience="authenticated",
        issuer=server.url + "/auth/v1",
    )
    assert list(claims) == [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "email",
        "phone",
        "app_metadata",
        "user_metadata",
        "role",
        "aal",
        "amr",
        "session_id",
        "is_anonymous",
    ]
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["aal"] == "aal1"
    assert claims["is_anonymous"] is False


def test_env_file_and_key_file(tmp_path: Path) -> None:
    with run_localauth(tmp_path) as la:
        env_file = tmp_path / f"localauth-{la.port}.env"
        values = read_env_file(env_file)
        assert set(values) == {
            "SUPABASE_URL",
            "SUPABASE_PUBLISHABLE_KEY",
            "SUPABASE_SECRET_KEY",
            "SUPABASE_ANON_KEY",
            "SUPABASE_SERVICE_ROLE_KEY",
        }
        assert values["SUPABASE_PUBLISHABLE_KEY"].startswith("sb_publishable_")
        assert values["SUPABASE_SECRET_KEY"].startswith("sb_secret_")
        assert values["SUPABASE_URL"] == la.url
        for name, role in (
            ("SUPABASE_ANON_KEY", "anon"),
            ("SUPABASE_SERVICE_ROLE_KEY", "service_role"),
        ):
            claims = jwt.decode(values[name], la.jwt_secret, algorithms=["HS256"])
            assert claims["role"] == role
            assert claims["iss"] == "supabase-demo"
        for path in (env_file, Path(str(la.db_path) + ".keys.json")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        log = log_path(tmp_path, la.port).read_text()
        assert la.jwt_secret not in log
        assert la.service_role_key not in log


def test_rotate_keys_is_picked_up_without_restart(tmp_path: Path) -> None:
    with run_localauth(tmp_path) as la, httpx.Client() as http:
        email = _new_user(la, http)
        old_token, _ = _sign_in(la, http, email)
        (old_kid,) = _jwks_kids(la, http)
        subprocess.run(
            [sys.executable, "-m", "localauth", "rotate-keys", "--db", str(la.db_path)],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while len(kids := _jwks_kids(la, http)) < 2:
            assert time.monotonic() < deadline, "rotated key never showed up"
            time.sleep(0.1)
        assert kids[1] == old_kid
        new_token, _ = _sign_in(la, http, email)
        assert jwt.get_unverified_header(new_token)["kid"] == kids[0]
        jwks = jwt.PyJWKSet.from_dict(http.get(la.url + "/.well-known/jwks.json").json())
        for token in (old_token, new_token):
            kid = jwt.get_unverified_header(token)["kid"]
            key = next(k for k in jwks.keys if k.key_id == kid)
            jwt.decode(token, key.key, algorithms=["ES256"], audience="authenticated")
            user = user_client(la, http).get_user(token)  # the server still accepts both
            assert user is not None
    assert_clean_log(tmp_path, la.port)


def test_hs256_mode(tmp_path: Path) -> None:
    secret = "s" * 48
    env = {"GOTRUE_JWT_SECRET": secret, "GOTRUE_JWT_EXP": "120"}
    with run_localauth(tmp_path, jwt_alg="HS256", env=env) as la, httpx.Client() as http:
        assert la.jwt_secret == secret
        assert read_env_file(tmp_path / f"localauth-{la.port}.env")["SUPABASE_JWT_SECRET"] == secret
        assert http.get(la.url + "/.well-known/jwks.json").json() == {"keys": []}
        token, _ = _sign_in(la, http, _new_user(la, http))
        assert "kid" not in jwt.get_unverified_header(token)
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience="authenticated")
        assert claims["exp"] - claims["iat"] == 120
        client = user_client(la, http)
        got = client.get_claims(token)  # HS256: the SDK asks /user instead of the JWKS
        assert got is not None
        assert got["claims"]["sub"] == claims["sub"]


def test_persistence_across_restart(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite3"
    with run_localauth(tmp_path / "one", db_path=db) as first, httpx.Client() as http:
        email = _new_user(first, http)
        access, refresh = _sign_in(first, http, email)
    with run_localauth(tmp_path / "two", db_path=db) as second, httpx.Client() as http:
        assert second.anon_key == first.anon_key
        assert second.service_role_key == first.service_role_key
        user = user_client(second, http).get_user(access)
        assert user is not None
        assert user.user.email == email
        refreshed = user_client(second, http).refresh_session(refresh).session
        assert refreshed is not None
        assert _sign_in(second, http, email)


def test_two_processes_with_different_settings_share_one_db(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite3"
    with (
        run_localauth(tmp_path / "a", db_path=db) as strict,
        run_localauth(
            tmp_path / "b",
            db_path=db,
            env={"GOTRUE_MAILER_AUTOCONFIRM": "true", "GOTRUE_JWT_EXP": "300"},
        ) as lenient,
        httpx.Client() as http,
    ):
        email = unique_email()
        pending = user_client(strict, http).sign_up({"email": email, "password": PASSWORD})
        assert pending.session is None
        assert pending.user is not None
        with pytest.raises(AuthApiError) as info:
            _sign_in(lenient, http, email)
        assert info.value.code == "email_not_confirmed"
        admin_api(lenient, http).update_user_by_id(pending.user.id, {"email_confirm": True})
        access, refresh = _sign_in(strict, http, email)
        session = user_client(lenient, http).refresh_session(refresh).session
        assert session is not None
        assert session.expires_in == 300
        assert user_client(strict, http).get_user(session.access_token) is not None
        other = user_client(lenient, http).sign_up({"email": unique_email(), "password": PASSWORD})
        assert other.session is not None
        assert user_client(strict, http).get_user(access) is not None
