"""In-process checks: settings parsing, and that no request blocks the event loop."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from blockbuster import blockbuster_ctx

from localauth.app import build_app
from localauth.config import ConfigError, Settings, parse_go_duration
from localauth.keys import KeyRing
from localauth.store import Database
from localauth.tokens import api_key


def test_settings_from_env_defaults_and_overrides(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    defaults = Settings.from_env({"LOCALAUTH_DB": db, "PORT": "9999"})
    assert defaults.jwt_issuer == "http://127.0.0.1:9999/auth/v1"
    assert defaults.jwt_admin_roles == ("service_role", "supabase_admin")
    assert defaults.bcrypt_cost == 10
    assert defaults.refresh_token_reuse_interval == 0
    custom = Settings.from_env(
        {
            "LOCALAUTH_DB": db,
            "GOTRUE_PASSWORD_MIN_LENGTH": "3",  # GoTrue never goes below 6
            "GOTRUE_MAILER_AUTOCONFIRM": "T",
            "GOTRUE_SMTP_MAX_FREQUENCY": "1m30s",
            "GOTRUE_JWT_ADMIN_ROLES": "admin, ops",
        }
    )
    assert custom.password_min_length == 6
    assert custom.mailer_autoconfirm is True
    assert custom.smtp_max_frequency == 90.0
    assert custom.jwt_admin_roles == ("admin", "ops")
    for bad in ({"GOTRUE_JWT_EXP": "soon"}, {"GOTRUE_DISABLE_SIGNUP": "yes"}, {}):
        env = {"LOCALAUTH_DB": db, **bad} if bad else {}
        with pytest.raises(ConfigError):
            Settings.from_env(env)


def test_go_durations() -> None:
    assert parse_go_duration("24h") == 86400
    assert parse_go_duration("876000h") == 876000 * 3600
    assert parse_go_duration("1h30m15.5s") == 5415.5
    assert parse_go_duration("-2m") == -120
    for bad in ("", "5", "h", "1d"):
        with pytest.raises(ValueError, match="invalid duration"):
            parse_go_duration(bad)


@pytest.mark.anyio
async def test_requests_never_block_the_event_loop(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"LOCALAUTH_DB": str(tmp_path / "db"), "LOCALAUTH_BCRYPT_COST": "4"}
    )
    db = Database(settings.db_path)
    db.initialise()
    keyring = KeyRing(settings.db_path)
    service = api_key(keyring.current, keyring.current.jwt_secret, "service_role")
    app = build_app(settings, db, keyring)
    admin = {"Authorization": f"Bearer {service}"}
    transport = httpx.ASGITransport(app=app)
    # blockbuster raises if SQLite, file or socket I/O runs on the loop thread.
    with blockbuster_ctx():
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            created = await client.post(
                "/auth/v1/admin/users",
                json={"email": "loop@example.com", "password": "pw-123456", "email_confirm": True},
                headers=admin,
            )
            assert created.status_code == 200
            login = await client.post(
                "/token?grant_type=password",
                json={"email": "loop@example.com", "password": "pw-123456"},
            )
            assert login.status_code == 200
            session = login.json()
            refreshed = await client.post(
                "/token?grant_type=refresh_token",
                json={"refresh_token": session["refresh_token"]},
            )
            assert refreshed.status_code == 200
            me = await client.get(
                "/user", headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"}
            )
            assert me.json()["email"] == "loop@example.com"
            listed = await client.get("/admin/users", headers=admin)
            assert listed.status_code == 200
            # the mail flows, the mailbox, /verify and MFA run off the loop as well
            bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
            assert (await client.post("/otp", json={"email": "loop@example.com"})).json() == {}
            mail = (await client.get("/mailbox/messages?to=loop@example.com")).json()["messages"]
            verified = await client.post(
                "/verify",
                json={"email": "loop@example.com", "token": mail[0]["otp"], "type": "magiclink"},
            )
            assert verified.status_code == 200
            enrolled = await client.post("/factors", json={"factor_type": "totp"}, headers=bearer)
            assert enrolled.status_code == 200
            challenge = await client.post(
                f"/factors/{enrolled.json()['id']}/challenge", headers=bearer
            )
            assert challenge.status_code == 200
            clients = await client.get("/admin/oauth/clients", headers=admin)
            assert clients.json() == {"clients": []}
    db.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
