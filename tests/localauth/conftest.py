from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from supabase_auth import (
    AsyncGoTrueAdminAPI,
    AsyncGoTrueClient,
    SyncGoTrueAdminAPI,
    SyncGoTrueClient,
)

from tests.support.localauth import LocalAuth, log_path, run_localauth

ClientFactory = Callable[[], SyncGoTrueClient]


def assert_clean_log(tmp_dir: Path, port: int) -> None:
    """No request may have reached the last-resort handler or produced a traceback."""
    text = log_path(tmp_dir, port).read_text()
    assert "Traceback" not in text
    assert "unexpected failure" not in text


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAuth]:
    tmp = tmp_path_factory.mktemp("localauth-main")
    with run_localauth(tmp, env={"GOTRUE_MAILER_AUTOCONFIRM": "true"}) as la:
        yield la
    assert_clean_log(tmp, la.port)


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


@pytest.fixture(scope="session")
def admin(server: LocalAuth, http: httpx.Client) -> SyncGoTrueAdminAPI:
    return admin_api(server, http)


def admin_api(la: LocalAuth, http: httpx.Client) -> SyncGoTrueAdminAPI:
    key = la.service_role_key
    return SyncGoTrueAdminAPI(
        url=la.url + "/auth/v1",
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
        http_client=http,
    )


def user_client(la: LocalAuth, http: httpx.Client) -> SyncGoTrueClient:
    key = la.anon_key
    return SyncGoTrueClient(
        url=la.url + "/auth/v1",
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
        auto_refresh_token=False,
        persist_session=False,
        http_client=http,
    )


@pytest.fixture
def new_client(server: LocalAuth, http: httpx.Client) -> ClientFactory:
    return lambda: user_client(server, http)


def unique_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


PASSWORD = "correct-horse-1"


@pytest.fixture
def confirmed_user(admin: SyncGoTrueAdminAPI) -> tuple[str, str]:
    """(user id, email) of a confirmed user whose password is PASSWORD."""
    email = unique_email()
    user = admin.create_user({"email": email, "password": PASSWORD, "email_confirm": True}).user
    return user.id, email


@pytest.fixture(scope="session")
def mail_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAuth]:
    """Mail confirmation on (no autoconfirm) and no send interval, so flows can repeat."""
    tmp = tmp_path_factory.mktemp("localauth-mail")
    env = {
        "GOTRUE_SMTP_MAX_FREQUENCY": "0",
        "GOTRUE_EXTERNAL_PHONE_ENABLED": "true",
        "GOTRUE_URI_ALLOW_LIST": "http://localhost:3000/**",
    }
    with run_localauth(tmp, env=env) as la:
        yield la
    assert_clean_log(tmp, la.port)


def mails(la: LocalAuth, http: httpx.Client, to: str) -> list[dict[str, Any]]:
    """The mailbox's messages to ``to``, newest first."""
    response = http.get(la.url + "/mailbox/messages", params={"to": to})
    assert response.status_code == 200
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def last_mail(la: LocalAuth, http: httpx.Client, to: str, kind: str) -> dict[str, Any]:
    found = [m for m in mails(la, http, to) if m["type"] == kind]
    assert found, f"no {kind} mail to {to}"
    return found[0]


def pkce_client(la: LocalAuth, http: httpx.Client) -> SyncGoTrueClient:
    key = la.anon_key
    return SyncGoTrueClient(
        url=la.url + "/auth/v1",
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
        auto_refresh_token=False,
        flow_type="pkce",
        http_client=http,
    )


def async_user_client(la: LocalAuth, http: httpx.AsyncClient) -> AsyncGoTrueClient:
    key = la.anon_key
    return AsyncGoTrueClient(
        url=la.url + "/auth/v1",
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
        auto_refresh_token=False,
        persist_session=False,
        http_client=http,
    )


def async_admin_api(la: LocalAuth, http: httpx.AsyncClient) -> AsyncGoTrueAdminAPI:
    key = la.service_role_key
    return AsyncGoTrueAdminAPI(
        url=la.url + "/auth/v1",
        headers={"apikey": key, "Authorization": f"Bearer {key}"},
        http_client=http,
    )
