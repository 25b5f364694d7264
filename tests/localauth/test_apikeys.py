"""localauth's API keys: both families issued, configured or generated once, checked at the
edge as Supabase's API gateway does, and the project-created-today mode."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import httpx
import jwt
import pytest
from supabase_auth import SyncGoTrueAdminAPI, SyncGoTrueClient

from tests.localauth.conftest import PASSWORD, assert_clean_log, unique_email
from tests.support.localauth import read_env_file, run_localauth


def test_generated_keys_are_stable_private_and_shared_by_restarts(tmp_path: Path) -> None:
    db = tmp_path / "auth.sqlite3"
    with run_localauth(tmp_path, db_path=db) as first:
        keys = (first.publishable_key, first.secret_key)
    with run_localauth(tmp_path, db_path=db) as second:
        assert (second.publishable_key, second.secret_key) == keys
        assert_clean_log(tmp_path, second.port)
    assert keys[0].startswith("sb_publishable_")
    assert keys[1].startswith("sb_secret_")
    stored = db.with_name(db.name + ".apikeys.json")
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600


def test_configured_keys_and_a_new_project_through_the_sdk(tmp_path: Path) -> None:
    """Configured sb_ keys, legacy keys off: the SDK with the keys in `apikey` alone signs up
    a user through the Admin API and signs in; the env file lists only the new keys."""
    publishable, secret = "sb_publishable_" + "a" * 22, "sb_secret_" + "b" * 32
    env = {
        "LOCALAUTH_PUBLISHABLE_KEY": publishable,
        "LOCALAUTH_SECRET_KEY": secret,
        "GOTRUE_MAILER_AUTOCONFIRM": "true",
    }
    with (
        run_localauth(tmp_path, env=env, key_mode="new") as la,
        httpx.Client(timeout=10) as http,
    ):
        values = read_env_file(tmp_path / f"localauth-{la.port}.env")
        assert set(values) == {"SUPABASE_URL", "SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY"}
        assert (la.publishable_key, la.secret_key) == (publishable, secret)
        admin = SyncGoTrueAdminAPI(
            url=la.url + "/auth/v1", headers={"apikey": secret}, http_client=http
        )
        email = unique_email()
        admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True})
        user = SyncGoTrueClient(
            url=la.url + "/auth/v1",
            headers={"apikey": publishable},
            http_client=http,
            persist_session=False,
            auto_refresh_token=False,
        )
        session = user.sign_in_with_password({"email": email, "password": PASSWORD}).session
        assert session is not None
        header = jwt.get_unverified_header(session.access_token)
        assert header["alg"] == "ES256"
        assert header["kid"]
        assert user.get_user(session.access_token) is not None
    assert_clean_log(tmp_path, la.port)


def test_legacy_keys_keep_working_beside_the_new_ones(tmp_path: Path) -> None:
    """An older project: both families are accepted, and a forged legacy key is not."""
    with run_localauth(tmp_path) as la, httpx.Client(timeout=10) as http:
        url = la.url + "/auth/v1/admin/users"
        legacy = {"apikey": la.service_role_key, "Authorization": f"Bearer {la.service_role_key}"}
        assert http.get(url, headers=legacy).status_code == 200
        assert http.get(url, headers={"apikey": la.secret_key}).status_code == 200
        forged = jwt.encode({"role": "service_role"}, "x" * 40, algorithm="HS256")
        refused = http.get(url, headers={"apikey": forged, "Authorization": f"Bearer {forged}"})
        assert (refused.status_code, refused.json()["message"]) == (401, "Invalid API key")
        for junk in (b"sb_secret_\xff\xfe", b"\xffeyJ.x.y", b"not-a-key", b"sb_"):
            odd = http.get(url, headers=[(b"apikey", junk)])
            assert (odd.status_code, odd.json()["message"]) == (401, "Invalid API key"), junk
    assert_clean_log(tmp_path, la.port)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--secret-key", "sb_publishable_xyz"), ("--publishable-key", "pk_live_xyz")],
)
def test_a_key_of_the_wrong_family_is_refused_at_start(
    tmp_path: Path, flag: str, value: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "localauth", "--db", str(tmp_path / "x.db"), flag, value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert flag in result.stderr
    assert "must start with" in result.stderr
