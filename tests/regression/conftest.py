"""Fixtures of the deadlock and fault scenarios: users, the fault proxy, the app under it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.regression.harness import Limits
from tests.support.appserver import AppServer, run_app
from tests.support.faultproxy import FaultProxy
from tests.support.localauth import LocalAuth

USERS = 40


@pytest.fixture(scope="session")
def users(localauth: LocalAuth) -> list[tuple[str, str]]:
    """Confirmed users, created through localauth's admin API (not through the app)."""
    created: list[tuple[str, str]] = []
    headers = localauth.admin_headers()
    with httpx.Client(base_url=localauth.url, headers=headers, timeout=10) as client:
        for _ in range(USERS):
            email = new_email()
            response = client.post(
                "/auth/v1/admin/users",
                json={"email": email, "password": TEST_PASSWORD, "email_confirm": True},
            )
            assert response.status_code == 200, response.text
            created.append((email, TEST_PASSWORD))
    return created


@pytest.fixture
def limits() -> Limits:
    return Limits()


@pytest.fixture
def proxy(localauth: LocalAuth) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", localauth.port) as fault:
        yield fault


@pytest.fixture
def fault_app(
    localauth: LocalAuth,
    proxy: FaultProxy,
    redis_url: str,
    redis_prefix: str,
    limits: Limits,
    tmp_path: Path,
) -> Iterator[AppServer]:
    """The real app (``python -m app`` under uvicorn) talking to localauth through the proxy."""
    env = app_env(localauth, redis_url, redis_prefix, **limits.env())
    env["SUPABASE_URL"] = proxy.url
    with run_app(env, tmp_path / "logs") as server:
        yield server
