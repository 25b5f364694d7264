"""Fixtures of the account-lifecycle suites: a localauth that really mails (no autoconfirm,
secure email change, the fake OAuth provider on), apps in front of it, users, the mailbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from app.settings import Settings
from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.localauth import KEY_MODES, KeyMode, LocalAuth, run_localauth
from tests.support.users import create_user

AUTH = "/api/v1/auth"
REDIRECT = "http://localhost:3000/auth/callback"
NEW_PASSWORD = "Brand-New-Pass-42"


@pytest.fixture(scope="session", params=KEY_MODES, ids=[f"{m}-keys" for m in KEY_MODES])
def mailing_auth(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalAuth]:
    """A localauth that really mails, once as a project on the legacy keys and once as one
    created today (new keys, legacy keys off): every lifecycle flow runs against both."""
    key_mode: KeyMode = request.param
    with run_localauth(
        tmp_path_factory.mktemp(f"localauth-mail-{key_mode}"),
        env={
            "GOTRUE_MAILER_AUTOCONFIRM": "false",
            "GOTRUE_EXTERNAL_FAKE_ENABLED": "true",
            # One mail of a kind per user per 2 s: the tests send at most one, except the
            # one that checks the answer stays the same when Supabase refuses to resend.
            "GOTRUE_SMTP_MAX_FREQUENCY": "2s",
            "GOTRUE_URI_ALLOW_LIST": "http://localhost:3000/**",
        },
        key_mode=key_mode,
    ) as server:
        yield server


LifecycleSettings = Callable[..., Settings]


@pytest.fixture
def lifecycle_settings(
    mailing_auth: LocalAuth, redis_url: str, redis_prefix: str
) -> LifecycleSettings:
    def build(**extra: Any) -> Settings:
        values: dict[str, Any] = {
            "oauth_providers": "fake",
            "oauth_redirect_urls": "http://localhost:3000/",
            **extra,
        }
        return Settings.from_environ(app_env(mailing_auth, redis_url, redis_prefix, **values))

    return build


@pytest.fixture
async def app(running_apps: Any, lifecycle_settings: LifecycleSettings) -> httpx.AsyncClient:
    client: httpx.AsyncClient = await running_apps(lifecycle_settings())
    return client


@pytest.fixture
async def second(running_apps: Any, lifecycle_settings: LifecycleSettings) -> httpx.AsyncClient:
    """Another instance on the same Redis and upstream."""
    client: httpx.AsyncClient = await running_apps(lifecycle_settings())
    return client


async def seed(auth: LocalAuth, *, roles: list[str] | None = None) -> tuple[str, str]:
    """A confirmed user with TEST_PASSWORD, made through the real SDK's Admin API."""
    email = new_email()
    metadata = {"roles": roles} if roles else None
    uid = await anyio.to_thread.run_sync(
        lambda: create_user(auth, email, TEST_PASSWORD, app_metadata=metadata)
    )
    return uid, email


async def login(
    client: httpx.AsyncClient, email: str, password: str = TEST_PASSWORD
) -> dict[str, Any]:
    response = await client.post(f"{AUTH}/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(tokens: dict[str, Any] | str) -> dict[str, str]:
    token = tokens if isinstance(tokens, str) else tokens["access_token"]
    return {"Authorization": f"Bearer {token}"}


def problem(response: httpx.Response) -> tuple[int, str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.status_code, str(response.json()["code"])
