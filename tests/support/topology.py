"""Apps on a given Redis deployment, the user flow they must pass, and a failover load."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette

from app.main import create_app
from app.settings import Settings
from app.state import Services
from tests.conftest import TEST_PASSWORD, app_env, new_email
from tests.support.authz import bearer, unverified
from tests.support.localauth import LocalAuth

AUTH = "/api/v1/auth"


@dataclass
class Instance:
    client: httpx.AsyncClient
    app: Starlette

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services


def topology_settings(auth: LocalAuth, redis_url: str, prefix: str, **extra: Any) -> Settings:
    env = app_env(auth, redis_url, prefix, **{"rate_limit_enabled": "false", **extra})
    return Settings.from_environ(env)


@asynccontextmanager
async def instances(settings: Settings, count: int = 2) -> AsyncIterator[list[Instance]]:
    async with AsyncExitStack() as stack:
        started = []
        for _ in range(count):
            app = create_app(settings, configure_logs=False)
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 50000)),
                base_url="http://testserver",
            )
            await stack.enter_async_context(client)
            started.append(Instance(client, app))
        yield started


async def wait_trusted(*items: Instance) -> None:
    """Until every instance's invalidation cache is proven (own heartbeat came back)."""
    with anyio.fail_after(10):
        while not all(i.services.sessions.cache_trusted for i in items):
            await anyio.sleep(0.02)


async def run_flow(a: Instance, b: Instance) -> dict[str, Any]:
    """register, login, me, refresh, sessions, logout on A; B refuses at once (cache path)."""
    await wait_trusted(a, b)
    email = new_email()
    created = await a.client.post(
        f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD}
    )
    assert created.status_code == 201, created.text
    login = await a.client.post(f"{AUTH}/login", json={"email": email, "password": TEST_PASSWORD})
    assert login.status_code == 200, login.text
    tokens = login.json()
    me = await b.client.get(f"{AUTH}/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200, me.text
    assert me.json()["email"] == email
    refreshed = await b.client.post(
        f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    again = await a.client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert again.json()["refresh_token"] == refreshed.json()["refresh_token"]
    access = refreshed.json()["access_token"]
    listed = await a.client.get(f"{AUTH}/sessions", headers=bearer(access))
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["sessions"]) == 2
    # B serves /me from its cache now; A's logout must reach it through the subscription.
    for _ in range(2):
        assert (await b.client.get(f"{AUTH}/me", headers=bearer(access))).status_code == 200
    claims = unverified(access)
    cached_owner = b.services.sessions._alive.get(claims["session_id"])
    assert cached_owner == claims["sub"], (
        "B did not cache the session: the cache path is not exercised"
    )
    assert (await a.client.post(f"{AUTH}/logout", headers=bearer(access))).status_code == 204
    started = time.monotonic()
    with anyio.fail_after(2):
        while True:
            refused = await b.client.get(f"{AUTH}/me", headers=bearer(access))
            if refused.status_code == 401:
                break
            await anyio.sleep(0.002)
    assert refused.json()["code"] == "session_revoked"
    return {"email": email, "propagation_s": time.monotonic() - started, "tokens": tokens}


@dataclass
class LoadResult:
    acknowledged: list[tuple[str, str]] = field(default_factory=list)  # (uid, sid)
    statuses: dict[int, int] = field(default_factory=dict)
    refused_at: list[float] = field(default_factory=list)
    bad_503: list[str] = field(default_factory=list)

    failed_over_at: int = 0  # how many were acknowledged when the failover began

    def seconds_without_writes(self) -> float:
        if not self.refused_at:
            return 0.0
        return max(self.refused_at) - min(self.refused_at)

    def summary(self) -> str:
        """The figures a failed assertion needs to be understood after the fact."""
        return (
            f"{len(self.acknowledged)} acknowledged ({self.failed_over_at} before the "
            f"failover), statuses {self.statuses}, {self.seconds_without_writes():.1f}s "
            f"without writes, unexpected 503s {self.bad_503[:3]}"
        )


async def seed_users(client: httpx.AsyncClient, count: int) -> list[str]:
    """Accounts for the load (setup, not the property under test: a write a busy replica
    did not confirm in time is a 503 with Retry-After, and is asked again)."""
    emails = [new_email() for _ in range(count)]
    for email in emails:
        with anyio.fail_after(15):
            while True:
                response = await client.post(
                    f"{AUTH}/register", json={"email": email, "password": TEST_PASSWORD}
                )
                if response.status_code != 503 or "retry-after" not in response.headers:
                    break
                await anyio.sleep(0.1)
        assert response.status_code == 201, response.text
    return emails


async def login_load(
    targets: list[Instance], emails: list[str], stop: anyio.Event, result: LoadResult
) -> None:
    """One client per email logging in over and over (alternating instances) until ``stop``."""

    async def worker(index: int, email: str) -> None:
        instance = targets[index % len(targets)]
        while not stop.is_set():
            try:
                response = await instance.client.post(
                    f"{AUTH}/login",
                    json={"email": email, "password": TEST_PASSWORD},
                    headers={"X-Request-ID": uuid.uuid4().hex},
                )
            except httpx.HTTPError:
                continue
            result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                claims = unverified(response.json()["access_token"])
                result.acknowledged.append((claims["sub"], claims["session_id"]))
            else:
                result.refused_at.append(time.monotonic())
                well_formed = (
                    response.status_code == 503
                    and response.headers.get("content-type", "").startswith(
                        "application/problem+json"
                    )
                    and int(response.headers.get("retry-after", "0")) >= 1
                )
                if not well_formed:
                    result.bad_503.append(f"{response.status_code} {response.text[:120]}")
                await anyio.sleep(0.05)

    async with anyio.create_task_group() as tg:
        for index, email in enumerate(emails):
            tg.start_soon(worker, index, email)
